"""The one way the agent runs a process for a tool: the bash tool, command Capabilities and
approved script tools all come through `run_process`, which hands the process to the goal pod's
tools container (shell.sandbox) when the pod has one, and otherwise runs it here (`run_local`).

The process gets its own process group, so a timeout kills everything it started. Output is
read as it comes and only the first and last `output_limit` bytes are kept, so a chatty
command can neither block on a full pipe nor fill the agent's memory.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

KILL_GRACE = 1.0
"""Seconds to wait for output after the process exits before stopping what still holds it."""

STDOUT, STDERR = 1, 2


@dataclass
class ProcessOutcome:
    output: str
    """stdout, with stderr merged into it unless it was kept apart."""
    exit_code: int | None
    errors: str = ""
    """stderr, when kept apart."""
    timed_out: bool = False
    stopped_background: bool = False
    """Processes left in the background still held the output after the process exited, and
    were stopped."""
    replayed: bool = False
    """Not run now: the outcome recorded when an earlier pod ran the same call (shell.journal)."""


class Capture:
    """The first and last `limit` bytes of a stream, and how long it was."""

    def __init__(self, limit: int) -> None:
        self.limit = max(limit, 1)
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        room = self.limit - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data
            if len(self.tail) > self.limit:
                del self.tail[: len(self.tail) - self.limit]

    def text(self, limit: int) -> str:
        dropped = self.total - len(self.head) - len(self.tail)
        if dropped == 0:
            text = (bytes(self.head) + bytes(self.tail)).decode("utf-8", errors="replace")
            if len(text) <= limit:
                return text
            head, tail = text, text
        else:
            head = self.head.decode("utf-8", errors="replace")
            tail = self.tail.decode("utf-8", errors="replace")
        half = max(limit // 2, 1)
        return (f"{head[:half]}\n[... output truncated: {self.total} bytes in all, "
                f"showing the first and last {half} characters ...]\n{tail[-half:]}")


class _Collector(asyncio.SubprocessProtocol):
    # The low-level protocol, because Process.wait() in Python 3.11 also waits for every
    # holder of the pipe (a backgrounded child) to close it.
    def __init__(self, captures: dict[int, Capture], loop: asyncio.AbstractEventLoop) -> None:
        self.captures = captures
        self.open = set(captures)
        self.exited: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self.captures[fd].feed(data)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self.open.discard(fd)
        if not self.open and not self.closed.done():
            self.closed.set_result(None)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)


async def run_process(argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], timeout: float,
                      output_limit: int, input: bytes | None = None, merge_stderr: bool = True,
                      sandbox: Path | None = None, extra_env: Mapping[str, str] | None = None,
                      record: Path | None = None) -> ProcessOutcome:
    """Run argv in the tools container behind the `sandbox` socket, where it gets that container's
    environment plus extra_env; without a sandbox, here with env plus extra_env. With `record`
    (shell.journal), a call an earlier pod finished is not run again."""
    if sandbox is not None:
        from .sandbox import run_in_sandbox  # the server side imports this module

        return await run_in_sandbox(sandbox, argv, cwd=cwd, extra_env=extra_env or {}, timeout=timeout,
                                    output_limit=output_limit, input=input, merge_stderr=merge_stderr,
                                    record=record)
    from .journal import once  # it imports this module

    return await once(record, lambda: run_local(argv, cwd=cwd, env={**env, **(extra_env or {})}, timeout=timeout,
                                                 output_limit=output_limit, input=input, merge_stderr=merge_stderr))


async def run_local(argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], timeout: float,
                    output_limit: int, input: bytes | None = None, merge_stderr: bool = True) -> ProcessOutcome:
    """Run argv in its own process group with `input` on stdin (else none); on timeout kill the
    whole group. Background processes that keep the output open after it exits are stopped."""
    loop = asyncio.get_running_loop()
    captures = {STDOUT: Capture(output_limit)} if merge_stderr else {
        STDOUT: Capture(output_limit), STDERR: Capture(output_limit)}
    transport, protocol = await loop.subprocess_exec(
        lambda: _Collector(captures, loop), *argv,
        stdin=asyncio.subprocess.DEVNULL if input is None else asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT if merge_stderr else asyncio.subprocess.PIPE,
        cwd=str(cwd), env=dict(env), start_new_session=True,
    )
    if input is not None:
        stdin = transport.get_pipe_transport(0)
        assert isinstance(stdin, asyncio.WriteTransport)
        stdin.write(input)
        stdin.close()  # after what is buffered is written; a process that exits first just loses it
    pgid = transport.get_pid()
    timed_out = stopped = False
    try:
        try:
            await asyncio.wait_for(asyncio.shield(protocol.exited), timeout)
        except asyncio.TimeoutError:
            timed_out = True
            _kill_group(pgid)
            await asyncio.wait_for(asyncio.shield(protocol.exited), 5)
        try:
            await asyncio.wait_for(asyncio.shield(protocol.closed), KILL_GRACE)
        except asyncio.TimeoutError:
            stopped = not timed_out
            _kill_group(pgid)
            try:
                await asyncio.wait_for(asyncio.shield(protocol.closed), KILL_GRACE)
            except asyncio.TimeoutError:
                pass  # a process that left the group still holds the pipe; stop listening to it
    finally:
        if transport.get_returncode() is None:
            _kill_group(pgid)
        transport.close()
    errors = captures[STDERR].text(output_limit) if STDERR in captures else ""
    return ProcessOutcome(captures[STDOUT].text(output_limit), transport.get_returncode(), errors, timed_out,
                          stopped)


async def run_command(command: str, *, cwd: Path, env: Mapping[str, str], timeout: float,
                      output_limit: int, sandbox: Path | None = None, record: Path | None = None) -> ProcessOutcome:
    """`bash -c command`, as run_process runs it."""
    return await run_process(["bash", "-c", command], cwd=cwd, env=env, timeout=timeout, output_limit=output_limit,
                             sandbox=sandbox, record=record)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
