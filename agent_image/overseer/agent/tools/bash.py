"""The bash tool: a command line run with `bash -c` in the workspace.

Its risk follows the command's classification (shell.classify): dangerous is high (waits for
approval under the default policy), runs-code is high unless the Agent allows code execution
(then medium), writes-workspace is medium, read-only is low.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import Assessment, Tool, ToolContext, ToolError, ToolResult, shorten
from .shell import classify_command, run_command
from .shell.rules import READ_ONLY, risk_of


class BashTool(Tool):
    name = "bash"
    description = (
        "Run a shell command with `bash -c` in the workspace and return its combined stdout and "
        "stderr with the exit code. Each call starts a fresh shell: chain dependent steps with && "
        "and use paths relative to the workspace. Commands time out; long output keeps its "
        "beginning and end. Prefer read_file, grep, glob and edit_file for files. Commands that "
        "reach beyond the workspace (network, package installs, sudo, files outside) or run code "
        "that cannot be read before it runs (python3 -c, eval, here-documents fed to a shell) may wait "
        "for a person's approval."
    )
    input_schema = {
        "type": "object",
        "properties": {
            "command": {"type": "string", "minLength": 1, "description": "The command line to run."},
        },
        "required": ["command"],
        "additionalProperties": False,
    }
    risk = "medium"

    def summarize(self, input: Mapping[str, Any]) -> str:
        return shorten(f"$ {input.get('command', '')}")

    def assess(self, input: Mapping[str, Any], ctx: ToolContext) -> Assessment:
        classification = classify_command(input["command"], workspace=ctx.workspace)
        return Assessment(risk_of(classification.level, ctx.code_execution), classification.reason, classification,
                          side_effects=classification.level != READ_ONLY)

    async def run(self, input: Mapping[str, Any], ctx: ToolContext) -> ToolResult:
        command = input["command"]
        if not ctx.workspace.is_dir():
            raise ToolError(f"the workspace {ctx.workspace} does not exist")
        outcome = await run_command(command, cwd=ctx.workspace, env=ctx.env, timeout=ctx.bash_timeout,
                                    output_limit=ctx.output_limit, sandbox=ctx.tools_socket, record=ctx.record)
        shown = shorten(command, 80)
        if outcome.timed_out:
            note = f"[timed out after {ctx.bash_timeout:g} s; the command and its child processes were killed]"
            return ToolResult(_join(outcome.output, note), is_error=True, summary=f"$ {shown} (timed out)")
        status = f"[exit code {outcome.exit_code}]"
        if outcome.replayed:
            status += " [this call had finished before the agent was restarted: its recorded outcome; not run again]"
        if outcome.stopped_background:
            status += (" [background processes still writing to the output were stopped; "
                       "redirect their output to a file to keep them running]")
        return ToolResult(_join(outcome.output, status), is_error=outcome.exit_code != 0,
                          summary=f"$ {shown} (exit {outcome.exit_code})")


def _join(output: str, status: str) -> str:
    if not output:
        return f"(no output)\n{status}"
    return f"{output}{'' if output.endswith(chr(10)) else chr(10)}{status}"

