"""The bash tool, and the classification of shell commands by what they may touch.

`classify_command` reads a command the way the shell would split it (quotes, escapes,
pipelines, `&&`/`||`/`;`, subshells, command and process substitution, redirections,
here-documents) and judges every simple command in it; the command as a whole gets the
most severe level:

- dangerous: anything that may reach beyond the workspace. Network clients (curl, wget,
  nc, ssh, scp, rsync to a host, cloud CLIs; curl and wget to localhost only are
  exempt), git commands that talk to a remote (push, pull, fetch, clone of a URL),
  package installs (pip, npm, cargo, go get, apt and other system package managers),
  privilege (sudo, su, chown, chmod +s), the system (kill, shutdown, mount, iptables,
  docker, kubectl, ...), writes or deletions outside the workspace (absolute paths
  outside it, `..` escapes, `~`, paths that depend on a variable, anything after `cd`
  out of the workspace), downloaded content fed to an interpreter, fork bombs, and
  commands that cannot be parsed.
- writes-workspace: changes inside the workspace: file commands (rm, mv, cp, touch,
  sed -i, ...) on workspace paths, redirections into the workspace or /tmp, git
  commands that change the repository, builds and test runs (they write caches and
  artifacts), interpreters running scripts, and every command not known to be
  read-only.
- read-only: commands known only to read (ls, cat, grep, find without -delete/-exec,
  git status/diff/log, ...), with no redirection into a file.

The bash tool's risk follows: dangerous is high (waits for approval under the default
policy), writes-workspace is medium, read-only is low.
"""

from __future__ import annotations

import asyncio
import os
import posixpath
import re
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .base import (
    Assessment,
    Classification,
    Level,
    Risk,
    Tool,
    ToolContext,
    ToolError,
    ToolResult,
    shorten,
)

READ_ONLY: Level = "read-only"
WRITES: Level = "writes-workspace"
DANGEROUS: Level = "dangerous"
_SEVERITY = {READ_ONLY: 0, WRITES: 1, DANGEROUS: 2}
RISK_OF_LEVEL: dict[Level, Risk] = {READ_ONLY: "low", WRITES: "medium", DANGEROUS: "high"}

KILL_GRACE = 1.0
"""Seconds to wait for output after the shell exits before stopping what still holds it."""


# --- the bash tool ---------------------------------------------------------------------------

class BashTool(Tool):
    name = "bash"
    description = (
        "Run a shell command with `bash -c` in the workspace and return its combined stdout and "
        "stderr with the exit code. Each call starts a fresh shell: chain dependent steps with && "
        "and use paths relative to the workspace. Commands time out; long output keeps its "
        "beginning and end. Prefer read_file, grep, glob and edit_file for files. Commands that "
        "reach beyond the workspace (network, package installs, sudo, files outside) wait for a "
        "person's approval."
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
        return Assessment(RISK_OF_LEVEL[classification.level], classification.reason, classification,
                          side_effects=classification.level != READ_ONLY)

    async def run(self, input: Mapping[str, Any], ctx: ToolContext) -> ToolResult:
        command = input["command"]
        if not ctx.workspace.is_dir():
            raise ToolError(f"the workspace {ctx.workspace} does not exist")
        outcome = await run_command(command, cwd=ctx.workspace, env=ctx.env, timeout=ctx.bash_timeout,
                                    output_limit=ctx.output_limit)
        shown = shorten(command, 80)
        if outcome.timed_out:
            note = f"[timed out after {ctx.bash_timeout:g} s; the command and its child processes were killed]"
            return ToolResult(_join(outcome.output, note), is_error=True, summary=f"$ {shown} (timed out)")
        status = f"[exit code {outcome.exit_code}]"
        if outcome.stopped_background:
            status += (" [background processes still writing to the output were stopped; "
                       "redirect their output to a file to keep them running]")
        return ToolResult(_join(outcome.output, status), is_error=outcome.exit_code != 0,
                          summary=f"$ {shown} (exit {outcome.exit_code})")


def _join(output: str, status: str) -> str:
    if not output:
        return f"(no output)\n{status}"
    return f"{output}{'' if output.endswith(chr(10)) else chr(10)}{status}"


@dataclass
class CommandOutcome:
    output: str
    exit_code: int | None
    timed_out: bool = False
    stopped_background: bool = False


class _Capture:
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
    def __init__(self, capture: _Capture, loop: asyncio.AbstractEventLoop) -> None:
        self.capture = capture
        self.exited: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self.capture.feed(data)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)


async def run_command(command: str, *, cwd: Path, env: Mapping[str, str], timeout: float,
                      output_limit: int) -> CommandOutcome:
    """Run `bash -c command` in its own process group; on timeout kill the whole group."""
    loop = asyncio.get_running_loop()
    capture = _Capture(output_limit)
    transport, protocol = await loop.subprocess_exec(
        lambda: _Collector(capture, loop), "bash", "-c", command,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        cwd=str(cwd), env=dict(env), start_new_session=True,
    )
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
    return CommandOutcome(capture.text(output_limit), transport.get_returncode(), timed_out, stopped)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# --- lexing ------------------------------------------------------------------------------------

class ParseError(ValueError):
    """A command line the shell would reject (an unterminated quote or substitution)."""


@dataclass
class Word:
    """One shell word with quotes removed; expansions stay as written ($X, $(...))."""

    text: str
    dynamic: bool = False
    """Starts with an expansion or ~, so where it points is not known before it runs."""
    subs: list[str] = field(default_factory=list)
    """Bodies of command substitutions inside the word."""


@dataclass(frozen=True)
class Op:
    text: str


Token = Word | Op

_OPERATORS = sorted(["&>>", "<<<", "<<-", "&&", "||", ";;", "|&", ">>", ">|", "<>", "<<", "&>", ">&", "<&",
                     "<(", ">(", ";", "&", "|", "(", ")", "<", ">"], key=len, reverse=True)
_OP_START = set(";&|()<>")
_REDIRECTS = {"<", ">", ">>", ">|", "<>", "&>", "&>>", ">&", "<&", "<<", "<<-", "<<<"}


class _Lexer:
    def __init__(self, source: str) -> None:
        self.s = source
        self.i = 0
        self.tokens: list[Token] = []
        self.heredoc_subs: list[str] = []
        self._pending: list[tuple[str, bool, bool]] = []  # (delimiter, strip tabs, quoted)
        self._want_delimiter: str | None = None

    def run(self) -> list[Token]:
        s = self.s
        while self.i < len(s):
            c = s[self.i]
            if c in " \t\r":
                self.i += 1
            elif c == "\n":
                self.i += 1
                self.tokens.append(Op(";"))
                self._read_heredocs()
            elif c == "#":
                end = s.find("\n", self.i)
                self.i = len(s) if end < 0 else end
            elif c == "\\" and s.startswith("\\\n", self.i):
                self.i += 2
            elif c in _OP_START:
                self._op()
            else:
                self._word()
        return self.tokens

    def _op(self, prefix: str = "") -> None:
        for op in _OPERATORS:
            if self.s.startswith(op, self.i):
                self.i += len(op)
                self.tokens.append(Op(prefix + op if op in _REDIRECTS else op))
                if op in ("<<", "<<-"):
                    self._want_delimiter = op
                return
        raise AssertionError(f"no operator at {self.i}")  # pragma: no cover - _OP_START guards

    def _word(self) -> None:
        s = self.s
        text: list[str] = []
        word = Word("")
        quoted = False
        while self.i < len(s):
            c = s[self.i]
            if c in " \t\r\n" or c in _OP_START:
                break
            if c == "\\":
                if s.startswith("\\\n", self.i):
                    self.i += 2
                    continue
                text.append(s[self.i + 1: self.i + 2])
                self.i += 2
            elif c == "'":
                end = s.find("'", self.i + 1)
                if end < 0:
                    raise ParseError("unterminated single quote")
                text.append(s[self.i + 1: end])
                self.i = end + 1
                quoted = True
            elif c == '"':
                quoted = True
                self.i += 1
                self._double_quoted(text, word)
            elif c == "$" or c == "`":
                self._expansion(text, word)
            elif c == "~" and not text and not quoted:
                word.dynamic = True
                text.append(c)
                self.i += 1
            else:
                text.append(c)
                self.i += 1
        word.text = "".join(text)
        if word.text.isdigit() and not quoted and self.i < len(s) and s[self.i] in "<>":
            self._op(prefix=word.text)  # 2>file, 2>&1: a file descriptor, not a word
            return
        if self._want_delimiter:
            self._pending.append((word.text, self._want_delimiter == "<<-", quoted))
            self._want_delimiter = None
        self.tokens.append(word)

    def _double_quoted(self, text: list[str], word: Word) -> None:
        s = self.s
        while self.i < len(s):
            c = s[self.i]
            if c == '"':
                self.i += 1
                return
            if c == "\\" and self.i + 1 < len(s) and s[self.i + 1] in '$`"\\\n':
                if s[self.i + 1] != "\n":
                    text.append(s[self.i + 1])
                self.i += 2
            elif c == "$" or c == "`":
                self._expansion(text, word)
            else:
                text.append(c)
                self.i += 1
        raise ParseError("unterminated double quote")

    def _expansion(self, text: list[str], word: Word) -> None:
        s = self.s
        start = self.i
        if not text:
            word.dynamic = True
        if s[self.i] == "`":
            end = self.i + 1
            while end < len(s) and s[end] != "`":
                end += 2 if s[end] == "\\" else 1
            if end >= len(s):
                raise ParseError("unterminated backquote")
            word.subs.append(s[self.i + 1: end].replace("\\`", "`"))
            self.i = end + 1
        elif s.startswith("$((", self.i):
            self.i = _balanced(s, self.i + 2, "(", ")") + 1
            if self.i > len(s) or s[self.i - 1] != ")":
                raise ParseError("unterminated arithmetic expansion")
        elif s.startswith("$(", self.i):
            end = _balanced(s, self.i + 2, "(", ")")
            word.subs.append(s[self.i + 2: end])
            self.i = end + 1
        elif s.startswith("${", self.i):
            self.i = _balanced(s, self.i + 2, "{", "}") + 1
        elif self.i + 1 < len(s) and (s[self.i + 1].isalnum() or s[self.i + 1] in "_?@*#$!-"):
            self.i += 2
            if s[start + 1].isalpha() or s[start + 1] == "_":
                while self.i < len(s) and (s[self.i].isalnum() or s[self.i] == "_"):
                    self.i += 1
        else:
            if len(text) == 0:
                word.dynamic = False  # a lone $ is a literal dollar sign
            self.i += 1
        text.append(s[start: self.i])

    def _read_heredocs(self) -> None:
        s = self.s
        for delimiter, strip, quoted in self._pending:
            body: list[str] = []
            while self.i < len(s):
                end = s.find("\n", self.i)
                line = s[self.i: len(s) if end < 0 else end]
                self.i = len(s) if end < 0 else end + 1
                if (line.lstrip("\t") if strip else line) == delimiter:
                    break
                body.append(line)
            if not quoted:
                self.heredoc_subs.extend(_substitutions("\n".join(body)))
        self._pending.clear()


def _balanced(s: str, i: int, open_: str, close: str) -> int:
    """Index of the `close` that ends a group opened just before i; quotes inside are skipped."""
    depth = 1
    while i < len(s):
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c == "'" and open_ == "(":
            end = s.find("'", i + 1)
            if end < 0:
                raise ParseError("unterminated single quote")
            i = end + 1
            continue
        if c == '"':
            i += 1
            while i < len(s) and s[i] != '"':
                i += 2 if s[i] == "\\" else 1
            i += 1
            continue
        if c == open_:
            depth += 1
        elif c == close:
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ParseError(f"unterminated {'$(' if open_ == '(' else '${'}")


def _substitutions(text: str) -> list[str]:
    """Command substitutions in here-document text, which the shell expands."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("$((", i):
            i += 3
        elif text.startswith("$(", i):
            try:
                end = _balanced(text, i + 2, "(", ")")
            except ParseError:
                break
            out.append(text[i + 2: end])
            i = end + 1
        elif text[i] == "`":
            end = text.find("`", i + 1)
            if end < 0:
                break
            out.append(text[i + 1: end])
            i = end + 1
        else:
            i += 1
    return out


# --- parsing -----------------------------------------------------------------------------------

@dataclass
class SimpleCommand:
    words: list[Word] = field(default_factory=list)
    redirects: list[tuple[str, Word]] = field(default_factory=list)
    upstream: list[SimpleCommand] = field(default_factory=list)
    """Commands earlier in the same pipeline, whose output this one may read."""
    process_subs: list[SimpleCommand] = field(default_factory=list)
    network: bool = False


def _parse(tokens: list[Token]) -> list[SimpleCommand]:
    commands, _ = _parse_list(tokens, 0, nested=False)
    return commands


def _parse_list(tokens: list[Token], i: int, nested: bool) -> tuple[list[SimpleCommand], int]:
    out: list[SimpleCommand] = []
    pipeline: list[SimpleCommand] = []
    current = SimpleCommand()

    def finish(keep_pipeline: bool) -> None:
        nonlocal current, pipeline
        if current.words or current.redirects:
            out.append(current)
            pipeline.append(current)
        upstream = list(pipeline) if keep_pipeline else []
        if not keep_pipeline:
            pipeline = []
        current = SimpleCommand(upstream=upstream)

    while i < len(tokens):
        token = tokens[i]
        i += 1
        if isinstance(token, Word):
            current.words.append(token)
            continue
        op = token.text
        if op in ("|", "|&"):
            finish(keep_pipeline=True)
        elif op in (";", "&", "&&", "||", ";;"):
            finish(keep_pipeline=False)
        elif op == ")":
            if nested:
                finish(keep_pipeline=False)
                return out, i
            finish(keep_pipeline=False)  # a case pattern such as `a)`
        elif op == "(":
            if current.words and i < len(tokens) and tokens[i] == Op(")"):
                current.words.clear()  # `name () { ...; }` defines a function; its body is judged below
                i += 1
                continue
            inner, i = _parse_list(tokens, i, nested=True)
            out.extend(inner)
            pipeline.extend(inner)
        elif op in ("<(", ">("):
            inner, i = _parse_list(tokens, i, nested=True)
            out.extend(inner)
            current.process_subs.extend(inner)
            current.words.append(Word(op + "…)", dynamic=True))
        elif op.lstrip("0123456789") in _REDIRECTS:
            if i < len(tokens) and isinstance(tokens[i], Word):
                current.redirects.append((op, tokens[i]))  # type: ignore[arg-type]
                i += 1
    finish(keep_pipeline=False)
    return out, i


# --- classification ----------------------------------------------------------------------------

@dataclass(frozen=True)
class _Finding:
    level: Level
    reason: str
    priority: int = 0
    network: bool = False
    name: str = ""


def _read(name: str) -> _Finding:
    return _Finding(READ_ONLY, name, name=name)


def _writes(reason: str) -> _Finding:
    return _Finding(WRITES, reason)


def _danger(reason: str, priority: int = 0, network: bool = False) -> _Finding:
    return _Finding(DANGEROUS, reason, priority, network)


_SAFE_DEVICES = {"/dev/null", "/dev/stdout", "/dev/stderr", "/dev/stdin", "/dev/tty", "/dev/zero"}
_SCRATCH = ("/tmp", "/var/tmp")
_FORK_BOMB = re.compile(r"(\S+?)\s*\(\s*\)\s*\{.*?\1\s*\|\s*&?\s*\1", re.S)
_MAX_DEPTH = 8


class _Classifier:
    def __init__(self, workspace: Path | None) -> None:
        self.workspace = workspace.resolve() if workspace is not None else None
        self.cwd: str | None = "."          # relative: inside the workspace; absolute; None: unknown
        self.dirs: list[str | None] = []    # pushd stack
        self.depth = 0

    # -- entry points --

    def source(self, command: str) -> list[_Finding]:
        if self.depth >= _MAX_DEPTH:
            return [_danger("commands nested too deeply to judge")]
        self.depth += 1
        try:
            if _FORK_BOMB.search(command):
                return [_danger("defines a function that pipes into itself (a fork bomb)", priority=2)]
            lexer = _Lexer(command)
            try:
                tokens = lexer.run()
            except ParseError as exc:
                return [_danger(f"cannot parse the command ({exc}); the shell would reject it")]
            findings: list[_Finding] = []
            for sub in lexer.heredoc_subs:
                findings += self.source(sub)
            for cmd in _parse(tokens):
                findings += self.command(cmd)
            return findings
        finally:
            self.depth -= 1

    def command(self, cmd: SimpleCommand) -> list[_Finding]:
        findings: list[_Finding] = []
        for word in cmd.words + [target for _, target in cmd.redirects]:
            for sub in word.subs:
                findings += self.source(sub)
        for op, target in cmd.redirects:
            findings += self.redirect(op, target)
        found = self.argv(cmd.words, cmd)
        cmd.network = any(f.network for f in found)
        return findings + found

    def redirect(self, op: str, target: Word) -> list[_Finding]:
        bare = op.lstrip("0123456789")
        if bare in ("<", "<<", "<<-", "<<<", "<&"):
            return []
        if bare == ">&" and (target.text.isdigit() or target.text == "-"):
            return []  # 2>&1 duplicates a descriptor
        finding = self.target("redirects output to", target, name="")
        return [finding] if finding else []

    # -- paths --

    def locate(self, word: Word) -> tuple[str, str]:
        """("inside" | "scratch" | "device" | "outside", how to say where it is)."""
        text = word.text
        if word.dynamic:
            if text.startswith("~"):
                return "outside", f"{text}, in the home directory outside the workspace"
            return "outside", f"{text}, which is known only when it runs and may be outside the workspace"
        if text in _SAFE_DEVICES or text.startswith("/dev/fd/"):
            return "device", text
        if self.cwd is None and not text.startswith("/"):
            return "outside", f"{text} after cd out of the workspace (or to a place known only when it runs)"
        if text.startswith("/") or (self.cwd or ".").startswith("/"):
            absolute = posixpath.normpath(posixpath.join(self.cwd or "/", text))
            if self.workspace is not None and _within(absolute, str(self.workspace)):
                return self._real_check(Path(absolute), text)
            if any(_within(absolute, root) for root in _SCRATCH):
                return "scratch", text
            return "outside", f"{text}, outside the workspace"
        joined = posixpath.normpath(posixpath.join(self.cwd or ".", text))
        if joined == ".." or joined.startswith("../"):
            return "outside", f"{text}, which escapes the workspace"
        if self.workspace is not None:
            return self._real_check(self.workspace / joined, text)
        return "inside", text

    def _real_check(self, path: Path, text: str) -> tuple[str, str]:
        assert self.workspace is not None
        real = path.resolve()
        if real == self.workspace or self.workspace in real.parents:
            return "inside", text
        return "outside", f"{text}, which leads outside the workspace through a symlink"

    def target(self, verb: str, word: Word, name: str) -> _Finding | None:
        kind, where = self.locate(word)
        subject = f"{name} {verb}" if name else verb
        if kind == "device":
            return None
        if kind == "outside":
            return _danger(f"{subject} {where}")
        if kind == "scratch":
            return _writes(f"{subject} {where} (scratch space)")
        return _writes(f"{subject} {where}")

    def targets(self, verb: str, words: list[Word], name: str) -> list[_Finding]:
        found = [f for f in (self.target(verb, w, name) for w in words) if f is not None]
        return found or [_writes(f"{name} {verb} files in the workspace")]

    def cd(self, args: list[Word], push: bool = False) -> None:
        if push:
            self.dirs.append(self.cwd)
        rest = [a for a in args if not (a.text.startswith("-") and a.text != "-")]
        if not rest or rest[0].dynamic or rest[0].text in ("-", "~"):
            self.cwd = None
            return
        text = rest[0].text
        if text.startswith("/"):
            absolute = posixpath.normpath(text)
            if self.workspace is not None and _within(absolute, str(self.workspace)):
                self.cwd = posixpath.relpath(absolute, str(self.workspace))
            else:
                self.cwd = absolute
        elif self.cwd is None:
            return
        else:
            joined = posixpath.normpath(posixpath.join(self.cwd, text))
            self.cwd = None if joined == ".." or joined.startswith("../") else joined

    # -- commands --

    def argv(self, words: list[Word], cmd: SimpleCommand) -> list[_Finding]:
        words = list(words)
        while words and _is_assignment(words[0]):
            words.pop(0)
        while words and words[0].text in _PREFIX_KEYWORDS and not words[0].dynamic:
            words.pop(0)
        if not words:
            return []
        head, args = words[0], words[1:]
        if head.text in _SKIPPED_KEYWORDS:
            return []
        if head.dynamic:
            return [_writes(f"runs {head.text}, a command known only when it runs")]
        name = posixpath.basename(head.text)
        if name in _WRAPPERS:
            return self.wrapper(name, args, cmd)
        handler = _HANDLERS.get(name)
        if handler is not None:
            return handler(self, name, args, cmd)
        if name in _READ_ONLY:
            return [_read(name)]
        if name in _NETWORK:
            return [_danger(f"{name} uses the network", network=True)]
        if name in _PRIVILEGE:
            return [_danger(f"{name} changes privileges or ownership")]
        if name in _SYSTEM or name.startswith("mkfs"):
            return [_danger(f"{name} acts on the system outside the workspace")]
        if name in _SYSTEM_PACKAGES:
            return [_danger(f"{name} installs or changes system packages", network=True)]
        if name in _SHELLS or _is_interpreter(name):
            return self.interpreter(name, args, cmd)
        if name in _BUILD_TOOLS:
            return [_writes(f"{name} builds or tests, which writes in the workspace")]
        return [_writes(f"{name} is not known to be read-only; assumed to write in the workspace")]

    def wrapper(self, name: str, args: list[Word], cmd: SimpleCommand) -> list[_Finding]:
        rest = list(args)
        if name == "command" and rest and rest[0].text in ("-v", "-V"):
            return [_read("command")]
        takes_value = _WRAPPERS[name]
        while rest and rest[0].text.startswith("-") and rest[0].text != "-":
            option = rest.pop(0).text
            if option == "--":
                break
            if option in takes_value and rest:
                rest.pop(0)
        if name == "env":
            while rest and _is_assignment(rest[0]):
                rest.pop(0)
            if not rest:
                return [_read("env")]
        if name == "timeout" and rest:
            rest.pop(0)  # the duration
        if name == "xargs" and not rest:
            return [_read("xargs")]
        return self.argv(rest, cmd)

    def interpreter(self, name: str, args: list[Word], cmd: SimpleCommand) -> list[_Finding]:
        texts = [a.text for a in args]
        if any(t in ("--version", "-V", "--help") for t in texts[:1]):
            return [_read(name)]
        upstream_network = any(c.network for c in cmd.upstream)
        proc_network = any(c.network for c in cmd.process_subs)
        if name in _SHELLS:
            index = next((i for i, t in enumerate(texts) if re.fullmatch(r"-[a-zA-Z]*c[a-zA-Z]*", t)), -1)
            if index >= 0:
                if index + 1 < len(args):
                    inner = args[index + 1]
                    found = self.source(inner.text)
                    if any(f.network for f in found) and inner.subs:
                        found.append(_danger(f"{name} -c runs downloaded content", priority=1, network=True))
                    return found
            script = next((a for a in args if not a.text.startswith("-")), None)
            reads_input = any(re.fullmatch(r"-[a-zA-Z]*s[a-zA-Z]*", t) for t in texts)
            if script is None or script.text == "-" or reads_input or proc_network:
                if upstream_network or proc_network:
                    return [_danger(f"pipes downloaded content into {name}", priority=1, network=True)]
                return [_writes(f"{name} runs commands read from its input")]
            return [_writes(f"{name} runs the script {script.text}")]
        if _is_python(name) and "-m" in texts:
            index = texts.index("-m")
            module = texts[index + 1] if index + 1 < len(texts) else ""
            return _python_module(self, name, module, args[index + 2:], cmd)
        code_flags = {"-c", "-e", "-E", "--eval", "-p", "--print", "-r"}
        if any(t in code_flags for t in texts):
            return [_writes(f"{name} runs inline code")]
        script = next((a for a in args if not a.text.startswith("-")), None)
        if script is None or script.text == "-" or proc_network:
            if upstream_network or proc_network:
                return [_danger(f"pipes downloaded content into {name}", priority=1, network=True)]
            return [_writes(f"{name} runs code read from its input")]
        if script.text.startswith(("http://", "https://")):
            return [_danger(f"{name} runs code from {script.text}", network=True)]
        return [_writes(f"{name} runs {script.text}")]


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\[[^\]]*\])?\+?=")


def _is_assignment(word: Word) -> bool:
    return not word.dynamic and bool(_ASSIGNMENT.match(word.text))


def _is_python(name: str) -> bool:
    return bool(re.fullmatch(r"python[0-9.]*|pypy[0-9.]*", name))


def _is_interpreter(name: str) -> bool:
    return _is_python(name) or name in _SCRIPTING


def _options(args: list[Word],
             value_options: frozenset[str] = frozenset()) -> tuple[list[Word], dict[str, Word | None]]:
    """Positional arguments, and options with their values (`-t DIR`, `--opt=value`, `-tDIR`)."""
    positional: list[Word] = []
    options: dict[str, Word | None] = {}
    i = 0
    only_positional = False
    while i < len(args):
        word = args[i]
        text = word.text
        i += 1
        if only_positional or not text.startswith("-") or text == "-" or word.dynamic:
            positional.append(word)
            continue
        if text == "--":
            only_positional = True
            continue
        if "=" in text and text.startswith("--"):
            key, value = text.split("=", 1)
            options[key] = Word(value)
            continue
        if text in value_options:
            options[text] = args[i] if i < len(args) else None
            i += 1
            continue
        if not text.startswith("--") and text[:2] in value_options and len(text) > 2:
            options[text[:2]] = Word(text[2:])
            continue
        options[text] = None
    return positional, options


def _short_flags(options: dict[str, Word | None]) -> str:
    """All single-letter flags, bundled or not: {'-rf': None} gives 'rf'."""
    return "".join(k[1:] for k in options if k.startswith("-") and not k.startswith("--"))


# -- handlers by command name --

Handler = Callable[[_Classifier, str, list[Word], SimpleCommand], list[_Finding]]


def _h_cd(c: _Classifier, name: str, args: list[Word], cmd: SimpleCommand) -> list[_Finding]:
    if name == "popd":
        c.cwd = c.dirs.pop() if c.dirs else None
    else:
        c.cd(args, push=name == "pushd")
    return [_read(name)]


def _h_delete(c: _Classifier, name: str, args: list[Word], cmd: SimpleCommand) -> list[_Finding]:
    positional, _ = _options(args)
    return c.targets("deletes", positional, name)


def _h_create(c: _Classifier, name: str, args: list[Word], cmd: SimpleCommand) -> list[_Finding]:
    positional, _ = _options(args, frozenset({"-m", "--mode", "-s", "--size", "-r", "--reference", "-d", "--date",
                                              "-t"}))
    if name == "mktemp":
        return [_writes("mktemp creates a temporary file")]
    return c.targets("writes", positional, name)


def _h_copy(c: _Classifier, name: str, args: list[Word], cmd: SimpleCommand) -> list[_Finding]:
    positional, options = _options(args, frozenset({"-t", "--target-directory", "-S", "--suffix", "-m", "--mode",
                                                    "-o", "--owner", "-g", "--group"}))
    directory = options.get("-t") or options.get("--target-directory")
    if name == "mv":
        written = positional + ([directory] if directory else [])
        return c.targets("moves", written, name)
    if name == "install" and ("-d" in options or "--directory" in options):
        return c.targets("creates", positional, name)
    if directory:
        destination = [directory]
    elif name == "ln" and len(positional) == 1:
        destination = [Word(".")]
    else:
        destination = positional[-1:]
    verb = "creates a link at" if name == "ln" else "copies into"
    return c.targets(verb, destination, name)


def _h_chmod(c: _Classifier, name: str, args: list[Word], cmd: SimpleCommand) -> list[_Finding]:
    positional, options = _options(args)
    if "--reference" not in options and positional:
        mode, positional = positional[0].text, positional[1:]
        if re.search(r"[ugoa]*[+=][rwxXt]*s", mode) or re.fullmatch(r"0*[2-7][0-7]{3}", mode):
            return [_danger(f"chmod {mode} sets the setuid or setgid bit")]
    return c.targets("changes permissions of", positional, name)


def _h_tee(c: _Classifier, name: str, args: list[Word], cmd: SimpleCommand) -> list[_Finding]:
    positional, _ = _options(args)
    return [f for w in positional if (f := c.target("writes", w, name))] or [_read(name)]


def _h_sed(c: _Classifier, name: str, args: list[Word], cmd: SimpleCommand) -> list[_Finding]:
    positional, options = _options(args, frozenset({"-e", "--expression", "-f", "--file", "-l"}))
    in_place = any(k in ("--in-place",) or (k.startswith("-i") or (not k.startswith("--") and "i" in k[1:]))
                   for k in options if k not in ("-e", "-f", "-l"))
    if not in_place:
        return [_read(name)]
    files = positional if ("-e" in options or "--expression" in options or "-f" in options) else positional[1:]
    return c.targets("edits", files, name)


def _h_sort(c: _Classifier, name: str, args: list[Word], cmd: SimpleCommand) -> list[_Finding]:
    positional, options = _options(args, frozenset({"-o", "--output", "-k", "--key", "-t", "-S", "-T",
                                                    "--field-separator"}))
    out = options.get("-o") or options.get("--output")
    if name == "uniq" and len(positional) >= 2:
        out = positional[1]
    if out is None:
        return [_read(name)]
    return [c.target("writes", out, name) or _read(name)]


def _h_awk(c: _Classifier, name: str, args: list[Word], cmd: SimpleCommand) -> list[_Finding]:
    positional, options = _options(args, frozenset({"-F", "-v", "-f"}))
    program = "" if "-f" in options or not positional else positional[0].text
    if "-f" in options or re.search(r"system\s*\(|[>|]\s*\"|print[^;}]*>", program):
        return [_writes(f"{name} program may write files or run commands")]
    return [_read(name)]


def _h_find(c: _Classifier, name: str, args: list[Word], cmd: SimpleCommand) -> list[_Finding]:
    texts = [a.text for a in args]
    roots: list[Word] = []
    for word in args:
        if word.text.startswith(("-", "(", "!")) and not word.dynamic:
            break
        roots.append(word)
    root = roots[0] if roots else Word(".")
    findings: list[_Finding] = []
    if "-delete" in texts:
        findings += c.targets("deletes under", roots or [root], "find -delete")
    for flag in ("-fprint", "-fprint0", "-fprintf", "-fls"):
        if flag in texts and texts.index(flag) + 1 < len(args):
            found = c.target("writes", args[texts.index(flag) + 1], f"find {flag}")
            findings += [found] if found else []
    i = 0
    while i < len(args):
        if args[i].text in ("-exec", "-execdir", "-ok", "-okdir"):
            j = i + 1
            while j < len(args) and args[j].text not in (";", "+"):
                j += 1
            inner = [Word(root.text, dynamic=root.dynamic) if a.text == "{}" else a for a in args[i + 1: j]]
            findings += c.argv(inner, SimpleCommand(words=inner))
            i = j
        i += 1
    return findings or [_read(name)]


def _h_archive(c: _Classifier, name: str, args: list[Word], cmd: SimpleCommand) -> list[_Finding]:
    if name == "tar":
        bundled = args[0].text if args and not args[0].text.startswith("-") else ""
        rest = args[1:] if bundled else args
        positional, options = _options(rest, frozenset({"-f", "--file", "-C", "--directory", "-T", "-X"}))
        flags = bundled + _short_flags(options) + " ".join(options)
        if "t" in bundled or "-t" in options or "--list" in options:
            return [_read(name)]
        findings: list[_Finding] = []
        archive = (options.get("-f") or options.get("--file")
                   or (positional[0] if "f" in bundled and positional else None))
        if ("c" in flags or "--create" in options or "r" in bundled or "u" in bundled) and archive:
            findings += c.targets("writes the archive", [archive], name)
        if "x" in flags or "--extract" in options or "--get" in options:
            findings += c.targets("extracts into", [options.get("-C") or options.get("--directory") or Word(".")], name)
        return findings or [_writes(f"{name} writes files in the workspace")]
    if name in ("unzip",):
        positional, options = _options(args, frozenset({"-d", "-x"}))
        if "-l" in options or "-t" in options or "-v" in options or "-p" in options or "-Z" in options:
            return [_read(name)]
        return c.targets("extracts into", [options.get("-d") or Word(".")], name)
    positional, options = _options(args, frozenset({"-S", "--suffix"}))
    flags = _short_flags(options)
    if "c" in flags or "l" in flags or "t" in flags or "--stdout" in options or "--list" in options:
        return [_read(name)]
    verb = "writes" if name == "zip" else "compresses or expands"
    return c.targets(verb, positional[:1] if name == "zip" else positional, name)


def _h_dd(c: _Classifier, name: str, args: list[Word], cmd: SimpleCommand) -> list[_Finding]:
    for word in args:
        if word.text.startswith("of="):
            target = Word(word.text[3:], dynamic=word.text[3:4] in ("$", "~"))
            return [c.target("writes", target, name) or _writes("dd writes to a device of the workspace")]
    return [_read(name)]


def _h_patch(c: _Classifier, name: str, args: list[Word], cmd: SimpleCommand) -> list[_Finding]:
    positional, options = _options(args, frozenset({"-o", "--output", "-d", "--directory", "-i", "--input",
                                                    "-p", "-B", "-r"}))
    if "--dry-run" in options:
        return [_read(name)]
    written = [w for w in (options.get("-o"), options.get("--output"), options.get("-d"),
                           options.get("--directory")) if w is not None]
    return c.targets("patches", written or positional[:1] or [Word(".")], name)


def _h_rsync(c: _Classifier, name: str, args: list[Word], cmd: SimpleCommand) -> list[_Finding]:
    positional, _ = _options(args, frozenset({"-e", "--rsh", "--exclude", "--include", "-f", "--filter"}))
    if any(_remote_spec(w.text) for w in positional):
        return [_danger(f"{name} copies to or from another host", network=True)]
    return c.targets("copies into", positional[-1:], name)


_REMOTE = re.compile(r"^(?:[\w.+-]+@)?[\w.-]+:(?!//)|^[a-z][a-z0-9+.-]*://", re.I)


def _remote_spec(text: str) -> bool:
    return bool(_REMOTE.match(text)) and not text.startswith(("./", "/"))


_CURL_VALUES = frozenset({
    "-d", "--data", "--data-raw", "--data-binary", "--data-urlencode", "-H", "--header", "-o", "--output",
    "-X", "--request", "-u", "--user", "-A", "--user-agent", "-e", "--referer", "-b", "--cookie", "-c",
    "--cookie-jar", "-F", "--form", "-T", "--upload-file", "-m", "--max-time", "--connect-timeout", "-w",
    "--write-out", "-r", "--range", "--retry", "-E", "--cert", "--key", "--cacert", "-y", "-Y", "-z",
    "--output-dir", "--json",
})
_CURL_RISKY = frozenset({"-x", "--proxy", "--preproxy", "--resolve", "--connect-to", "-K", "--config"})
_WGET_VALUES = frozenset({
    "-O", "--output-document", "-o", "--output-file", "-P", "--directory-prefix", "--header", "-U",
    "--user-agent", "--post-data", "--body-data", "--method", "-T", "--timeout", "-t", "--tries", "--user",
    "--password",
})
_WGET_RISKY = frozenset({"-i", "--input-file", "-e", "--execute", "--proxy", "-B", "--base"})
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0", "ip6-localhost"}


def _h_fetch(c: _Classifier, name: str, args: list[Word], cmd: SimpleCommand) -> list[_Finding]:
    values, risky = (_CURL_VALUES, _CURL_RISKY) if name == "curl" else (_WGET_VALUES, _WGET_RISKY)
    positional, options = _options(args, values | risky)
    urls = positional + [w for k, w in options.items() if k == "--url" and w is not None]
    if not urls or risky.intersection(options) or any(not _local_url(w) for w in urls):
        return [_danger(f"{name} uses the network", network=True)]
    findings = [_writes(f"{name} talks only to localhost")]
    for key in ("-o", "--output", "-O", "--output-document", "-P", "--directory-prefix"):
        out = options.get(key)
        if out is not None and out.text != "-":
            findings += [f for f in [c.target("writes", out, name)] if f]
    return findings


def _local_url(word: Word) -> bool:
    if word.dynamic:
        return False
    text = word.text if "://" in word.text else f"http://{word.text}"
    try:
        host = urlsplit(text).hostname or ""
    except ValueError:
        return False
    return host in _LOCAL_HOSTS or host.startswith("127.")


_GIT_READ = {
    "status", "diff", "log", "show", "blame", "annotate", "shortlog", "describe", "rev-parse", "rev-list",
    "ls-files", "ls-tree", "cat-file", "grep", "whatchanged", "merge-base", "name-rev", "for-each-ref",
    "show-ref", "count-objects", "help", "version", "var", "check-ignore", "check-attr", "cherry",
    "range-diff", "diff-tree", "diff-files", "diff-index", "show-branch", "verify-commit", "verify-tag",
    "fsck", "--version", "--help", "check-ref-format", "reflog",
}
_GIT_NETWORK = {"push", "pull", "fetch", "ls-remote", "send-email", "request-pull", "svn", "p4"}


def _h_git(c: _Classifier, name: str, args: list[Word], cmd: SimpleCommand) -> list[_Finding]:
    rest = list(args)
    repo: Word | None = None
    while rest and rest[0].text.startswith("-") and rest[0].text not in ("--version", "--help"):
        option = rest.pop(0).text
        if option in ("-C", "-c", "--git-dir", "--work-tree", "--namespace", "--exec-path") and rest:
            value = rest.pop(0)
            if option in ("-C", "--work-tree", "--git-dir"):
                repo = value
    if not rest:
        return [_read("git")]
    sub, sub_args = rest[0].text, rest[1:]
    texts = [a.text for a in sub_args]
    label = f"git {sub}"
    if sub in _GIT_NETWORK:
        return [_danger(f"{label} talks to a remote repository", network=True)]
    if sub == "clone":
        positional, _ = _options(sub_args, frozenset({"-b", "--branch", "-o", "--origin", "--depth", "-c",
                                                      "--config", "--reference", "-u", "--upload-pack"}))
        if not positional or any(_remote_spec(w.text) or w.dynamic for w in positional[:1]):
            return [_danger(f"{label} downloads a repository", network=True)]
        destination = positional[1] if len(positional) > 1 else Word(".")
        return [c.target("clones into", destination, label) or _writes(label)]
    if sub == "submodule":
        if texts[:1] in (["status"], ["summary"], []):
            return [_read(label)]
        return [_danger(f"{label} may clone or fetch repositories", network=True)]
    if sub == "remote":
        if not texts or texts[0] in ("-v", "--verbose", "get-url"):
            return [_read(label)]
        if texts[0] in ("update", "prune", "show"):
            return [_danger(f"git remote {texts[0]} talks to a remote repository", network=True)]
        return [_writes(f"git remote {texts[0]} changes the repository configuration")]
    if sub == "config":
        if any(t in ("--global", "--system") for t in texts) and not _git_config_reads(texts):
            return [_danger(f"{label} writes configuration outside the workspace")]
        if _git_config_reads(texts):
            return [_read(label)]
        return [_writes(f"{label} changes the repository configuration")]
    read = sub in _GIT_READ
    if sub == "reflog" and texts[:1] in (["expire"], ["delete"]):
        read = False
    if sub in ("branch", "tag"):
        changing = {"-d", "-D", "-m", "-M", "-c", "-C", "--delete", "--move", "--copy", "-u", "--set-upstream-to",
                    "--unset-upstream", "-a", "-s", "-f", "--force", "--annotate", "--sign", "--edit-description"}
        listing = {"-l", "--list", "-v", "-vv", "-r", "--show-current", "--contains", "--merged", "--no-merged"}
        if sub == "branch":
            changing -= {"-a"}
        flagged = [t for t in texts if t.startswith("-")]
        positional = [t for t in texts if not t.startswith("-")]
        read = not changing.intersection(flagged) and (not positional or bool(listing.intersection(flagged)))
    if sub == "stash":
        read = texts[:1] in (["list"], ["show"])
    if sub == "worktree":
        read = texts[:1] == ["list"]
    if read:
        return [_read(label)]
    finding = c.target("changes the repository at", repo, label) if repo is not None else None
    if finding is not None and finding.level == DANGEROUS:
        return [finding]
    return [_writes(f"{label} changes the repository")]


def _git_config_reads(texts: list[str]) -> bool:
    if any(t in ("--get", "--get-all", "--get-regexp", "--list", "-l", "--show-origin", "get", "list") for t in texts):
        return True
    return len([t for t in texts if not t.startswith("-")]) == 1


_PIP_READ = {"list", "show", "freeze", "check", "help", "--version", "-V", "config", "debug", "inspect"}
_PIP_NETWORK = {"install", "download", "wheel", "uninstall", "index", "search"}


def _h_pip(c: _Classifier, name: str, args: list[Word], cmd: SimpleCommand) -> list[_Finding]:
    positional, options = _options(args)
    sub = positional[0].text if positional else next(iter(options), "")
    if sub in _PIP_NETWORK:
        return [_danger(f"{name} {sub} installs or fetches packages", network=True)]
    if sub in _PIP_READ:
        return [_read(f"{name} {sub}")]
    return [_writes(f"{name} {sub} may change the environment")]


_NODE_DANGEROUS = {"install", "i", "ci", "add", "update", "up", "upgrade", "uninstall", "remove", "rm", "un",
                   "publish", "link", "exec", "x", "dlx", "create", "view", "info", "show", "audit", "outdated",
                   "search", "login", "adduser", "unpublish", "deprecate", "dist-tag", "owner", "global"}
_NODE_READ = {"ls", "list", "--version", "-v", "help", "why", "explain", "config", "root", "prefix", "bin"}


def _h_node_pm(c: _Classifier, name: str, args: list[Word], cmd: SimpleCommand) -> list[_Finding]:
    if name in ("npx", "bunx", "pnpx"):
        return [_danger(f"{name} downloads and runs packages", network=True)]
    positional, options = _options(args)
    sub = positional[0].text if positional else next(iter(options), "")
    if name in ("yarn", "bun") and not sub:
        return [_danger(f"{name} installs packages", network=True)]
    if sub in _NODE_DANGEROUS or (sub == "init" and len(positional) > 1):
        return [_danger(f"{name} {sub} installs packages or talks to the registry", network=True)]
    if sub in _NODE_READ:
        return [_read(f"{name} {sub}")]
    return [_writes(f"{name} {sub} runs project scripts, which write in the workspace")]


_LANGUAGE_DANGEROUS: dict[str, set[str]] = {
    "cargo": {"install", "publish", "login", "search", "add", "update", "fetch", "yank", "owner", "uninstall"},
    "go": {"get", "install"},
    "gem": {"install", "update", "uninstall", "push", "fetch", "sources"},
    "bundle": {"install", "update", "add", "exec"},
    "bundler": {"install", "update", "add"},
    "poetry": {"add", "install", "update", "lock", "publish", "remove", "self", "sync"},
    "uv": {"add", "sync", "lock", "pip", "tool", "remove", "publish", "python", "self"},
    "pipx": {"install", "upgrade", "upgrade-all", "inject", "run", "reinstall", "reinstall-all", "uninstall"},
    "conda": {"install", "update", "upgrade", "create", "remove", "uninstall", "env"},
    "mamba": {"install", "update", "create", "remove"},
    "micromamba": {"install", "update", "create", "remove"},
    "composer": {"install", "require", "update", "remove", "create-project", "global"},
    "dotnet": {"add", "restore", "tool", "new", "nuget"},
    "rustup": {"install", "update", "toolchain", "target", "component", "self", "default"},
    "pyenv": {"install", "update"},
    "nvm": {"install", "use"},
    "hatch": {"publish"},
    "twine": {"upload", "register"},
    "mvn": {"deploy"},
}


def _h_language(c: _Classifier, name: str, args: list[Word], cmd: SimpleCommand) -> list[_Finding]:
    positional = [a.text for a in args if not a.text.startswith("-")]
    sub = positional[0] if positional else ""
    if name == "go" and sub == "mod" and positional[1:2] in (["download"], ["tidy"], ["vendor"]):
        return [_danger(f"go mod {positional[1]} downloads modules", network=True)]
    if name == "go" and sub in ("version", "env", "doc", "list"):
        return [_read(f"go {sub}")]
    if sub in _LANGUAGE_DANGEROUS[name] or (name == "twine" and not sub):
        return [_danger(f"{name} {sub} installs, fetches or publishes packages".replace("  ", " "), network=True)]
    if name == "bundle" and not sub:
        return [_danger("bundle installs gems", network=True)]
    return [_writes(f"{name} {sub} builds or runs the project, which writes in the workspace".replace("  ", " "))]


def _h_kill(c: _Classifier, name: str, args: list[Word], cmd: SimpleCommand) -> list[_Finding]:
    positional, options = _options(args, frozenset({"-s", "-n"}))
    if "-l" in options or "-L" in options:
        return [_read(name)]
    if positional and all(w.text.startswith("%") or w.text == "$!" for w in positional):
        return [_writes(f"{name} stops a background job of this shell")]
    return [_danger(f"{name} signals processes outside the command")]


def _h_hostname_date(c: _Classifier, name: str, args: list[Word], cmd: SimpleCommand) -> list[_Finding]:
    texts = [a.text for a in args]
    if name == "date" and any(t in ("-s", "--set") or t.startswith("--set=") for t in texts):
        return [_danger("date --set changes the system clock")]
    if name == "hostname" and any(not t.startswith("-") for t in texts):
        return [_danger("hostname NAME changes the host name")]
    return [_read(name)]


def _h_eval(c: _Classifier, name: str, args: list[Word], cmd: SimpleCommand) -> list[_Finding]:
    if name in ("source", "."):
        if cmd.process_subs and any(p.network for p in cmd.process_subs):
            return [_danger(f"{name} runs downloaded content", priority=1, network=True)]
        return [_writes(f"{name} runs the shell script {args[0].text if args else ''}".rstrip())]
    found = c.source(" ".join(a.text for a in args))
    if any(s for a in args for s in a.subs) and any(f.network for f in found):
        found.append(_danger("eval runs downloaded content", priority=1, network=True))
    return found or [_read(name)]


def _h_openssl(c: _Classifier, name: str, args: list[Word], cmd: SimpleCommand) -> list[_Finding]:
    if args and args[0].text in ("s_client", "s_time", "ocsp"):
        return [_danger(f"openssl {args[0].text} uses the network", network=True)]
    return [_writes("openssl may write keys or certificates")]


def _python_module(c: _Classifier, name: str, module: str, rest: list[Word], cmd: SimpleCommand) -> list[_Finding]:
    if module in ("pip", "pip3"):
        return _h_pip(c, f"{name} -m pip", rest, cmd)
    if module in ("ensurepip",):
        return [_danger(f"{name} -m ensurepip installs packages outside the workspace")]
    if module in ("json.tool", "tabnanny", "pydoc", "site", "sysconfig", "platform"):
        return [_read(f"{name} -m {module}")]
    if module in ("venv", "virtualenv"):
        positional, _ = _options(rest, frozenset({"--prompt"}))
        return c.targets("creates a virtual environment at", positional[:1], f"{name} -m {module}")
    if module in _PYTHON_TEST_MODULES:
        return [_writes(f"{name} -m {module} runs tests or tools, which write caches in the workspace")]
    return [_writes(f"{name} -m {module} runs a module, assumed to write in the workspace")]


_PYTHON_TEST_MODULES = {"pytest", "unittest", "tox", "nox", "mypy", "black", "ruff", "coverage", "build",
                        "doctest", "compileall", "py_compile", "flake8", "pylint", "isort"}

_HANDLERS: dict[str, Handler] = {
    "cd": _h_cd, "pushd": _h_cd, "popd": _h_cd,
    "rm": _h_delete, "rmdir": _h_delete, "unlink": _h_delete, "shred": _h_delete,
    "touch": _h_create, "mkdir": _h_create, "truncate": _h_create, "mkfifo": _h_create, "mktemp": _h_create,
    "cp": _h_copy, "mv": _h_copy, "ln": _h_copy, "install": _h_copy,
    "chmod": _h_chmod,
    "tee": _h_tee,
    "sed": _h_sed, "gsed": _h_sed,
    "sort": _h_sort, "uniq": _h_sort, "shuf": _h_sort,
    "awk": _h_awk, "gawk": _h_awk, "mawk": _h_awk, "nawk": _h_awk,
    "find": _h_find,
    "tar": _h_archive, "unzip": _h_archive, "zip": _h_archive, "gzip": _h_archive, "gunzip": _h_archive,
    "bzip2": _h_archive, "bunzip2": _h_archive, "xz": _h_archive, "unxz": _h_archive, "zstd": _h_archive,
    "dd": _h_dd,
    "patch": _h_patch,
    "rsync": _h_rsync,
    "curl": _h_fetch, "wget": _h_fetch,
    "git": _h_git,
    "pip": _h_pip, "pip3": _h_pip,
    "npm": _h_node_pm, "pnpm": _h_node_pm, "yarn": _h_node_pm, "bun": _h_node_pm, "npx": _h_node_pm,
    "bunx": _h_node_pm, "pnpx": _h_node_pm,
    **{name: _h_language for name in _LANGUAGE_DANGEROUS},
    "kill": _h_kill, "killall": _h_kill, "pkill": _h_kill,
    "date": _h_hostname_date, "hostname": _h_hostname_date,
    "eval": _h_eval, "source": _h_eval, ".": _h_eval,
    "openssl": _h_openssl,
}

_READ_ONLY = frozenset({
    "ls", "ll", "dir", "cat", "head", "tail", "less", "more", "wc", "grep", "egrep", "fgrep", "rg", "ag", "ack",
    "fd", "tree", "pwd", "echo", "printf", "true", "false", "test", "[", "[[", "which", "whereis", "type",
    "whoami", "id", "groups", "printenv", "stat", "file", "du", "df", "diff", "cmp", "cut", "tr", "jq", "yq",
    "basename", "dirname", "realpath", "readlink", "md5sum", "sha1sum", "sha224sum", "sha256sum", "sha384sum",
    "sha512sum", "b2sum", "cksum", "sum", "nl", "column", "xxd", "hexdump", "od", "strings", "tac", "rev",
    "fold", "expand", "unexpand", "paste", "join", "comm", "seq", "sleep", "dirs", "export", "set", "unset",
    "alias", "unalias", "read", "shift", "local", "declare", "typeset", "readonly", "exit", "return", ":",
    "wait", "jobs", "help", "man", "nproc", "free", "uptime", "ps", "locale", "expr", "getconf", "cal",
    "lscpu", "lsb_release", "whatis", "apropos", "zcat", "zgrep", "bzcat", "xzcat", "zless", "base64",
    "base32", "fmt", "look", "mapfile", "readarray", "getopts", "trap", "umask", "ulimit", "hash", "break",
    "continue", "let", "tput", "arch", "tty", "stty", "history", "info", "pgrep", "pidof", "lsof",
    "top", "htop", "vmstat", "iostat", "numfmt", "factor", "bc", "dc", "yes", "cygpath", "sha", "diff3",
    "sdiff", "colordiff", "wdiff", "shellcheck", "tsort", "ptx",
})
_NETWORK = frozenset({
    "nc", "ncat", "netcat", "ssh", "scp", "sftp", "telnet", "ftp", "tftp", "lftp", "socat", "nmap", "ping",
    "ping6", "dig", "nslookup", "host", "http", "https", "httpie", "xh", "aria2c", "whois", "traceroute",
    "tracepath", "mtr", "mosh", "gh", "glab", "aws", "gcloud", "gsutil", "az", "s3cmd", "rclone", "svn", "hg",
    "ssh-keyscan", "sshpass", "ncftp", "axel", "links", "lynx", "w3m", "mail", "sendmail", "smbclient",
})
_PRIVILEGE = frozenset({
    "sudo", "su", "doas", "pkexec", "chown", "chgrp", "setcap", "setfacl", "passwd", "chpasswd", "useradd",
    "userdel", "usermod", "groupadd", "groupdel", "groupmod", "visudo", "newgrp", "runuser", "adduser",
    "deluser", "chattr",
})
_SYSTEM = frozenset({
    "shutdown", "reboot", "halt", "poweroff", "init", "telinit", "systemctl", "service", "mount", "umount",
    "iptables", "ip6tables", "iptables-restore", "nft", "ufw", "firewall-cmd", "ip", "ifconfig", "route",
    "sysctl", "modprobe", "insmod", "rmmod", "docker", "podman", "kubectl", "helm", "crictl", "nerdctl",
    "ctr", "k3s", "kind", "minikube", "kubeadm", "oc", "fdisk", "sfdisk", "parted", "mkswap", "swapon",
    "swapoff", "losetup", "chroot", "nsenter", "unshare", "crontab", "at", "batch", "hwclock", "timedatectl",
    "hostnamectl", "setenforce", "mknod", "dmsetup", "cryptsetup", "wipefs", "blkdiscard", "tc", "brctl",
    "ethtool", "launchctl", "terraform", "ansible", "ansible-playbook", "vagrant",
})
_SYSTEM_PACKAGES = frozenset({
    "apt", "apt-get", "aptitude", "dpkg", "yum", "dnf", "microdnf", "zypper", "apk", "pacman", "brew", "port",
    "snap", "flatpak", "rpm", "nix-env", "nix", "easy_install", "emerge", "pkg", "choco", "winget",
    "sdkmanager", "asdf", "update-alternatives",
})
_SHELLS = frozenset({"sh", "bash", "zsh", "dash", "ksh", "mksh", "fish", "ash", "csh", "tcsh", "busybox"})
_SCRIPTING = frozenset({"perl", "ruby", "node", "nodejs", "php", "deno", "lua", "luajit", "Rscript", "julia",
                        "tclsh", "osascript", "irb", "ts-node", "tsx", "groovy", "scala", "elixir", "erl"})
_BUILD_TOOLS = frozenset({
    "make", "gmake", "cmake", "ninja", "meson", "bazel", "bazelisk", "buck", "pytest", "py.test", "tox", "nox",
    "mypy", "pyright", "black", "ruff", "flake8", "pylint", "isort", "coverage", "pre-commit", "gradle",
    "gradlew", "./gradlew", "mvn", "ant", "sbt", "javac", "java", "gcc", "g++", "cc", "c++", "clang",
    "clang++", "rustc", "tsc", "eslint", "prettier", "jest", "vitest", "mocha", "webpack", "vite", "esbuild",
    "rollup", "swift", "swiftc", "kotlinc", "ghc", "stack", "cabal", "dune", "mix", "rebar3", "zig", "hatch",
    "flit", "maturin", "sphinx-build", "mkdocs", "jupyter", "nbconvert", "protoc", "buf", "golangci-lint",
})
_WRAPPERS: dict[str, frozenset[str]] = {
    "nohup": frozenset(), "time": frozenset({"-f", "-o"}), "nice": frozenset({"-n"}),
    "ionice": frozenset({"-c", "-n", "-p"}), "stdbuf": frozenset({"-i", "-o", "-e"}),
    "timeout": frozenset({"-s", "--signal", "-k", "--kill-after"}), "command": frozenset(),
    "builtin": frozenset(), "exec": frozenset({"-a"}), "env": frozenset({"-u", "--unset", "-C", "--chdir", "-S"}),
    "xargs": frozenset({"-I", "-n", "-P", "-d", "-L", "-s", "-E", "-a", "--arg-file", "--max-args",
                        "--max-procs", "--delimiter", "-i"}),
    "watch": frozenset({"-n", "--interval", "-d"}), "chronic": frozenset(), "unbuffer": frozenset(),
    "setsid": frozenset(), "taskset": frozenset({"-c"}), "caffeinate": frozenset(), "catchsegv": frozenset(),
    "strace": frozenset({"-o", "-e", "-p", "-s"}), "ltrace": frozenset({"-o", "-e"}), "flock": frozenset({"-w"}),
}
_PREFIX_KEYWORDS = frozenset({"!", "{", "if", "then", "else", "elif", "do", "while", "until", "time", "}"})
_SKIPPED_KEYWORDS = frozenset({"fi", "done", "esac", "for", "select", "case", "function"})


def classify_command(command: str, workspace: Path | None = None) -> Classification:
    """What a shell command may touch: read-only, writes-workspace or dangerous, and why.
    With a workspace, absolute paths inside it and symlinks out of it are recognised."""
    if not command.strip():
        return Classification(READ_ONLY, "empty command")
    findings = _Classifier(workspace).source(command)
    if not findings:
        return Classification(READ_ONLY, "only sets shell state")
    worst = max(_SEVERITY[f.level] for f in findings)
    top = [f for f in findings if _SEVERITY[f.level] == worst]
    if worst == 0:
        names = list(dict.fromkeys(f.name or f.reason for f in top))
        return Classification(READ_ONLY, f"only reads ({', '.join(names)})")
    chosen = max(top, key=lambda f: f.priority)  # max() keeps the first of equals
    return Classification(chosen.level, chosen.reason)
