"""`overseer-tools`: the goal pod's second container, where every process a tool starts runs.

The agent container holds what must stay out of a tool's reach: the ServiceAccount token, the
model credentials, the knowledge-base and Redis URLs. The tools container shares only the
workspace volume and a folder holding this server's Unix socket: not the token (the pod mounts
none by default; the agent container mounts its own), not the environment, not the process
namespace. So `cat /proc/$PPID/environ` or `env` in a bash call shows the tools container's own
harmless environment. The agent sends one request per connection (a JSON line: argv, cwd,
timeout, output limit, stdin, the extra environment of that one command, e.g. a command
Capability's credential, and where its outcome is recorded, see journal.py) and reads back the
outcome (a JSON line). The outcome is recorded even when the agent is gone before it is read.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from overseer.contract import TOOLS_SOCKET, Env

from . import journal
from .runner import ProcessOutcome, run_local

logger = logging.getLogger("overseer.tools")

REQUEST_LIMIT = 64 * 1024 * 1024
"""Bytes of one request line (stdin of a command included)."""
ANSWER_GRACE = 30.0
"""Seconds the agent waits past a command's own timeout for the server's answer."""
_HIDDEN = ("ANTHROPIC_", "OVERSEER_", "KUBECONFIG", "KUBERNETES_")


class SandboxUnavailable(RuntimeError):
    """The tools container did not answer."""


async def run_in_sandbox(socket: Path, argv: Sequence[str], *, cwd: Path, extra_env: Mapping[str, str],
                         timeout: float, output_limit: int, input: bytes | None,
                         merge_stderr: bool, record: Path | None = None) -> ProcessOutcome:
    """Run argv in the tools container behind socket, as run_local would run it there."""
    request = {"argv": list(argv), "cwd": str(cwd), "env": dict(extra_env), "timeout": timeout,
               "outputLimit": output_limit, "mergeStderr": merge_stderr,
               "record": None if record is None else str(record),
               "input": None if input is None else base64.b64encode(input).decode()}
    try:
        reader, writer = await asyncio.open_unix_connection(str(socket), limit=REQUEST_LIMIT)
    except OSError as exc:
        raise SandboxUnavailable(f"the tools container is not reachable at {socket}: {exc.strerror}") from None
    try:
        writer.write(json.dumps(request).encode() + b"\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout + ANSWER_GRACE)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    if not line:
        raise SandboxUnavailable(f"the tools container at {socket} closed the connection without an answer")
    answer = json.loads(line)
    if "error" in answer:
        raise SandboxUnavailable(f"the tools container refused the request: {answer['error']}")
    return ProcessOutcome(**answer)


def tool_environment(own: Mapping[str, str], workspace: Path, extra: Mapping[str, str]) -> dict[str, str]:
    """A command's environment: this container's own, less anything of Overseer or Kubernetes,
    with HOME in the workspace and the request's extra variables (for that command only)."""
    env = {k: v for k, v in own.items() if not k.startswith(_HIDDEN)}
    env["HOME"] = str(workspace)
    env.update(extra)
    return env


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, workspace: Path) -> None:
    try:
        request: dict[str, Any] = json.loads(await reader.readline())
        extra = {str(k): str(v) for k, v in (request.get("env") or {}).items()}
        stdin = request.get("input")
        record = Path(request["record"]) if request.get("record") else None
        if record is not None and not journal.within(record, workspace):
            raise ValueError(f"record {record} is not a call record under {workspace / journal.FOLDER}")
        # Run to the end and recorded even when the agent's connection is gone by then.
        outcome = await journal.once(record, lambda: run_local(
            [str(a) for a in request["argv"]], cwd=Path(request["cwd"]),
            env=tool_environment(os.environ, workspace, extra), timeout=float(request["timeout"]),
            output_limit=int(request["outputLimit"]), input=None if stdin is None else base64.b64decode(stdin),
            merge_stderr=bool(request.get("mergeStderr", True))))
        answer: dict[str, Any] = asdict(outcome)
    except (ValueError, KeyError, TypeError, OSError) as exc:
        logger.warning("bad request: %s: %s", type(exc).__name__, exc)
        answer = {"error": f"{type(exc).__name__}: {exc}"}
    try:
        writer.write(json.dumps(answer).encode() + b"\n")
        await writer.drain()
    finally:
        writer.close()


async def serve(socket: Path, workspace: Path, ready: asyncio.Event | None = None) -> None:
    """Answer requests on socket until cancelled."""
    await asyncio.to_thread(_prepare, socket)
    server = await asyncio.start_unix_server(lambda r, w: _handle(r, w, workspace), path=str(socket),
                                             limit=REQUEST_LIMIT)
    os.chmod(socket, 0o660)
    logger.info("serving tool processes on %s (workspace %s)", socket, workspace)
    if ready is not None:
        ready.set()
    async with server:
        await server.serve_forever()


def _prepare(socket: Path) -> None:
    socket.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        socket.unlink()  # left by an earlier run of this container


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="overseer-tools", description=(
        "Run the processes of a goal's tools (bash, command Capabilities, script tools) for the agent "
        "container of the same pod, over a Unix socket; what the goal pod's tools container runs."))
    p.add_argument("--socket", type=Path, default=Path(os.environ.get(Env.TOOLS_SOCKET, TOOLS_SOCKET)))
    p.add_argument("--workspace", type=Path, default=Path(os.environ.get(Env.WORKSPACE, "/workspace")))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.socket, args.workspace))
    return 0


if __name__ == "__main__":
    sys.exit(main())
