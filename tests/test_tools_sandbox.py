"""The tools container, played as the harness plays it (its own process, environment and uid),
attacked from a bash tool call: the agent's environment and credential files stay out of reach."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.agent_runner import start_tools_process
from overseer.agent.tools import ToolContext, default_registry

CANARY = "canary-7f3a-agent-secret"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="another uid for the tools process needs root")


@pytest.fixture
def agent_like() -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """A process standing for the agent container: a credential in its environment from the
    start (as the kubelet sets it) and a token file only its uid may read."""
    folder = Path(tempfile.mkdtemp(prefix="overseer-agent-"))
    token = folder / "token"
    token.write_text(CANARY + "-token")
    token.chmod(0o600)
    env = {"PATH": os.environ["PATH"], "ANTHROPIC_API_KEY": CANARY, "OVERSEER_REDIS_URL": f"redis://:{CANARY}@r/0"}
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], env=env)
    yield proc, token
    proc.kill()
    proc.wait()
    shutil.rmtree(folder)


@pytest.fixture
def sandbox() -> Iterator[ToolContext]:
    base = Path(tempfile.mkdtemp(prefix="overseer-sandbox-"))
    workspace, socket = base / "workspace", base / "socket" / "tools.sock"
    workspace.mkdir()
    socket.parent.mkdir()
    env = {"PATH": os.environ["PATH"], "OVERSEER_WORKSPACE": str(workspace), "OVERSEER_TOOLS_SOCKET": str(socket)}
    exe = Path(sys.executable).parent / "overseer-tools"
    proc = start_tools_process(exe, env, workspace, socket, base / "tools.log")
    yield ToolContext(workspace=workspace, tools_socket=socket)
    proc.kill()
    proc.wait()
    shutil.rmtree(base)


def attacks(agent_pid: int, token: Path) -> list[str]:
    return ["cat /proc/$PPID/environ", "cat /proc/*/environ", f"cat /proc/{agent_pid}/environ",
            f"tr '\\0' '\\n' < /proc/{agent_pid}/environ", "env", f"cat {token}",
            "cat /var/run/secrets/kubernetes.io/serviceaccount/token", f"cat /proc/{os.getpid()}/environ"]


async def test_no_bash_trick_in_the_tools_container_reads_the_agents_secrets(
        agent_like: tuple[subprocess.Popen[bytes], Path], sandbox: ToolContext) -> None:
    proc, token = agent_like
    tools = default_registry()
    for command in attacks(proc.pid, token):
        result = await tools.run("bash", {"command": command}, sandbox)
        assert CANARY not in result.content, command
    whoami = await tools.run("bash", {"command": "id -u; echo $HOME; touch made-by-tools && ls -n made-by-tools"},
                             sandbox)
    assert whoami.content.splitlines()[:2] == ["65532", str(sandbox.workspace)]
    assert " 65532 65532 " in whoami.content


async def test_the_same_tricks_run_beside_the_agent_do_read_them(
        agent_like: tuple[subprocess.Popen[bytes], Path], tmp_path: Path) -> None:
    """The attacks above are real: without the tools container, they find the secrets."""
    proc, token = agent_like
    tools = default_registry()
    local = ToolContext(workspace=tmp_path)
    found = [command for command in attacks(proc.pid, token)
             if CANARY in (await tools.run("bash", {"command": command}, local)).content]
    assert f"cat /proc/{proc.pid}/environ" in found and f"cat {token}" in found


async def test_a_tools_container_that_is_gone_is_a_clear_tool_error(tmp_path: Path) -> None:
    ctx = ToolContext(workspace=tmp_path, tools_socket=tmp_path / "missing.sock")
    result = await default_registry().run("bash", {"command": "true"}, ctx)
    assert result.is_error and "tools container is not reachable" in result.content
