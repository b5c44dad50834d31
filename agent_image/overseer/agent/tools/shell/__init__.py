"""Shell commands for the agent's tools: how bash would read them (lexer, parser), what they
may touch (rules, commands, classify), and the one way a tool runs a process (runner)."""

from .classify import classify_command
from .runner import ProcessOutcome, run_command, run_process

__all__ = ["ProcessOutcome", "classify_command", "run_command", "run_process"]
