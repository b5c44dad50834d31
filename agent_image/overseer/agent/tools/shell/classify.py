"""The classification of shell commands by what they may touch.

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
  out of the workspace), downloaded content fed to an interpreter, fork bombs, commands
  that print the environment or read credentials (env, printenv, set, /proc/*/environ,
  $API_KEY), and commands that cannot be parsed.
- runs-code: code the classifier cannot read before it runs (shell.code): interpreters with
  inline code or code on their input (python3 -c, node -e, bash <<EOF, base64 -d | sh),
  command names known only when they run ($x, $(…)), eval, source, trap, env -S, hash -p,
  substitutions hidden in parameter or arithmetic expansions, sed e and w, awk system(),
  git options and config that name a command, find -exec, xargs.
- writes-workspace: changes inside the workspace: file commands (rm, mv, cp, touch,
  sed -i, ...) on workspace paths, redirections into the workspace or /tmp, git
  commands that change the repository, builds and test runs (they write caches and
  artifacts), interpreters running script files, and every command not known to be
  read-only.
- read-only: commands known only to read (ls, cat, grep, find without -delete/-exec,
  git status/diff/log, ...), with no redirection into a file.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from ..base import Classification
from . import code
from .commands import HANDLERS as COMMAND_HANDLERS
from .commands import python_module
from .lexer import Lexer, ParseError, Word
from .parser import SimpleCommand, parse
from .rules import (
    BUILD_TOOLS,
    NETWORK_COMMANDS,
    PACKAGE_MANAGERS,
    PREFIX_KEYWORDS,
    PRIVILEGE_COMMANDS,
    READ_ONLY,
    READ_ONLY_COMMANDS,
    SEVERITY,
    SHELLS,
    SKIPPED_KEYWORDS,
    SYSTEM_COMMANDS,
    WRAPPERS,
    Finding,
    dangerous,
    is_assignment,
    is_interpreter,
    is_python,
    read_only,
    runs_code,
    within,
    writes,
)

HANDLERS = {**COMMAND_HANDLERS, **code.HANDLERS}

_SAFE_DEVICES = {"/dev/null", "/dev/stdout", "/dev/stderr", "/dev/stdin", "/dev/tty", "/dev/zero"}
_SCRATCH = ("/tmp", "/var/tmp")
_FORK_BOMB = re.compile(r"(\S+?)\s*\(\s*\)\s*\{.*?\1\s*\|\s*&?\s*\1", re.S)
_MAX_DEPTH = 8


class Classifier:
    """Judges the commands of one command line in order, following `cd`, `pushd` and `popd`, so
    a relative path is placed where the shell would be by then."""

    def __init__(self, workspace: Path | None) -> None:
        self.workspace = workspace.resolve() if workspace is not None else None
        self.cwd: str | None = "."          # relative: inside the workspace; absolute; None: unknown
        self.dirs: list[str | None] = []    # pushd stack
        self.depth = 0
        self.tainted: set[str] = set()      # variables holding text read when the command runs

    # -- entry points --

    def source(self, command: str) -> list[Finding]:
        if self.depth >= _MAX_DEPTH:
            return [dangerous("commands nested too deeply to judge")]
        self.depth += 1
        try:
            if _FORK_BOMB.search(command):
                return [dangerous("defines a function that pipes into itself (a fork bomb)", priority=2)]
            lexer = Lexer(command)
            try:
                tokens = lexer.run()
            except ParseError as exc:
                return [dangerous(f"cannot parse the command ({exc}); the shell would reject it")]
            findings: list[Finding] = []
            for sub in lexer.heredoc_subs:
                findings += self.source(sub)
            for cmd in parse(tokens):
                findings += self.command(cmd)
            return findings
        finally:
            self.depth -= 1

    def command(self, cmd: SimpleCommand) -> list[Finding]:
        findings: list[Finding] = []
        words = cmd.words + [target for _, target in cmd.redirects]
        for word in words:
            for sub in word.subs:
                findings += self.source(sub)
            if word.hidden_subs:
                findings.append(runs_code(f"{word.text} hides a command substitution inside a parameter or "
                                          "arithmetic expansion"))
        findings += code.secret_reads(self, words)
        named = [w for w in cmd.words if not is_assignment(w) and w.text not in PREFIX_KEYWORDS]
        findings += code.arithmetic(self, cmd.words, named[0].text if named else "")
        for op, target in cmd.redirects:
            findings += self.redirect(op, target)
        found = self.argv(cmd.words, cmd)
        cmd.network = any(f.network for f in found)
        return findings + found

    def redirect(self, op: str, target: Word) -> list[Finding]:
        bare = op.lstrip("0123456789")
        if target.text.startswith(("/dev/tcp/", "/dev/udp/")):
            return [dangerous(f"redirects to {target.text}, a network connection", network=True)]
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
            if self.workspace is not None and within(absolute, str(self.workspace)):
                return self._real_check(Path(absolute), text)
            if any(within(absolute, root) for root in _SCRATCH):
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

    def target(self, verb: str, word: Word, name: str) -> Finding | None:
        kind, where = self.locate(word)
        subject = f"{name} {verb}" if name else verb
        if kind == "device":
            return None
        if kind == "outside":
            return dangerous(f"{subject} {where}")
        if kind == "scratch":
            return writes(f"{subject} {where} (scratch space)")
        return writes(f"{subject} {where}")

    def targets(self, verb: str, words: list[Word], name: str) -> list[Finding]:
        found = [f for f in (self.target(verb, w, name) for w in words) if f is not None]
        return found or [writes(f"{name} {verb} files in the workspace")]

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
            if self.workspace is not None and within(absolute, str(self.workspace)):
                self.cwd = posixpath.relpath(absolute, str(self.workspace))
            else:
                self.cwd = absolute
        elif self.cwd is None:
            return
        else:
            joined = posixpath.normpath(posixpath.join(self.cwd, text))
            self.cwd = None if joined == ".." or joined.startswith("../") else joined

    # -- commands --

    def argv(self, words: list[Word], cmd: SimpleCommand) -> list[Finding]:
        words = list(words)
        found: list[Finding] = []
        assignments = []
        while words and (is_assignment(words[0]) or (words[0].text in PREFIX_KEYWORDS and not words[0].dynamic)):
            word = words.pop(0)
            if is_assignment(word):
                assignments.append(word)
        for word in assignments:
            found += code.assignment(self, word, words[0].text if words else "")
        if not words:
            return found
        head, args = words[0], words[1:]
        if head.text == "for" and len(args) >= 2 and args[1].text == "in" and any(a.computed for a in args[2:]):
            self.tainted.add(args[0].text)  # each value comes from a list read when it runs
        if head.text == "function" and not head.computed:
            return found + self.argv(args[1:], cmd)  # function NAME { BODY: the body's first command follows
        if head.text in SKIPPED_KEYWORDS or (head.arith and head.text.startswith("((")):
            return found
        if head.computed:
            return found + [runs_code(f"runs {head.text}, a command known only when it runs")]
        return found + self.named(head, args, cmd)

    def named(self, head: Word, args: list[Word], cmd: SimpleCommand) -> list[Finding]:
        name = posixpath.basename(head.text)
        option = code.option_runs_code(name, [a.text for a in args])
        if option:
            return [runs_code(f"{name} {option} runs a command it names")]
        if name in WRAPPERS:
            return self.wrapper(name, args, cmd)
        handler = HANDLERS.get(name)
        if handler is not None:
            return handler(self, name, args, cmd)
        if name in READ_ONLY_COMMANDS:
            return [read_only(name)]
        if name in NETWORK_COMMANDS:
            return [dangerous(f"{name} uses the network", network=True)]
        if name in PRIVILEGE_COMMANDS:
            return [dangerous(f"{name} changes privileges or ownership")]
        if name in SYSTEM_COMMANDS or name.startswith("mkfs"):
            return [dangerous(f"{name} acts on the system outside the workspace")]
        if name in PACKAGE_MANAGERS:
            return [dangerous(f"{name} installs or changes system packages", network=True)]
        if name in SHELLS or is_interpreter(name):
            return self.interpreter(name, args, cmd)
        if name in BUILD_TOOLS:
            return [writes(f"{name} builds or tests, which writes in the workspace")]
        return [writes(f"{name} is not known to be read-only; assumed to write in the workspace")]

    def wrapper(self, name: str, args: list[Word], cmd: SimpleCommand) -> list[Finding]:
        rest = list(args)
        if name == "command" and rest and rest[0].text in ("-v", "-V"):
            return [read_only("command")]
        takes_value = WRAPPERS[name]
        while rest and rest[0].text.startswith("-") and rest[0].text != "-":
            option = rest.pop(0).text
            if option == "--":
                break
            if option in takes_value and rest:
                rest.pop(0)
        found: list[Finding] = []
        if name == "env":
            options = args[:len(args) - len(rest)]
            if any(a.text.startswith(("-S", "--split-s")) for a in options):
                return [runs_code("env -S splits a string into a command")]
            while rest and "=" in rest[0].text and not rest[0].text.startswith("-"):
                found += code.assignment(self, rest.pop(0), rest[0].text if rest else "")
            if not rest:
                return [dangerous("env prints the environment, where the agent's credentials are")]
        if name == "timeout" and rest:
            rest.pop(0)  # the duration
        if name == "xargs":
            if not rest:
                return [read_only("xargs")]
            found.append(runs_code("xargs runs a command with arguments read from its input"))
        if name == "watch":
            return found + self.source(" ".join(a.text for a in rest))  # watch hands its words to sh -c
        return found + self.argv(rest, cmd)

    def interpreter(self, name: str, args: list[Word], cmd: SimpleCommand) -> list[Finding]:
        texts = [a.text for a in args]
        if any(t in ("--version", "-V", "--help") for t in texts[:1]):
            return [read_only(name)]
        upstream_network = any(c.network for c in cmd.upstream)
        proc_network = any(c.network for c in cmd.process_subs)
        if name in SHELLS:
            index = next((i for i, t in enumerate(texts) if re.fullmatch(r"-[a-zA-Z]*c[a-zA-Z]*", t)), -1)
            if index >= 0:
                if index + 1 < len(args):
                    inner = args[index + 1]
                    found = self.source(inner.text)
                    if any(f.network for f in found) and inner.subs:
                        found.append(dangerous(f"{name} -c runs downloaded content", priority=1, network=True))
                    if inner.computed:
                        found.append(runs_code(f"{name} -c runs a command string built when it runs"))
                    return found
            if any(t.split("=", 1)[0] in ("--rcfile", "--init-file") for t in texts):
                return [runs_code(f"{name} --rcfile runs a startup file the classifier does not read")]
            script = _script(args, _SHELL_VALUES)
            reads_input = any(re.fullmatch(r"-[a-zA-Z]*s[a-zA-Z]*", t) for t in texts)
            if script is None or script.text == "-" or reads_input or proc_network or script.computed:
                if upstream_network or proc_network:
                    return [dangerous(f"pipes downloaded content into {name}", priority=1, network=True)]
                return [runs_code(f"{name} runs commands read from its input or built when it runs")]
            return [writes(f"{name} runs the script {script.text}")]
        if is_python(name) and "-m" in texts:
            index = texts.index("-m")
            module = texts[index + 1] if index + 1 < len(texts) else ""
            return python_module(self, name, module, args[index + 2:], cmd)
        inline = _inline_code(name, texts)
        if inline:
            return [runs_code(f"{name} {inline} runs inline code")]
        script = _script(args, _PYTHON_VALUES if is_python(name) else frozenset())
        if script is None or script.text == "-" or proc_network or script.computed:
            if upstream_network or proc_network:
                return [dangerous(f"pipes downloaded content into {name}", priority=1, network=True)]
            return [runs_code(f"{name} runs code read from its input or built when it runs")]
        if script.text.startswith(("http://", "https://")):
            return [dangerous(f"{name} runs code from {script.text}", network=True)]
        return [writes(f"{name} runs {script.text}")]


_CODE_FLAGS = frozenset({"-e", "-E", "--eval", "-p", "--print", "-r", "--require", "--import", "-R", "-B", "-l",
                         "-eval", "-s", "-run", "--loader", "--experimental-loader", "eval"})
_PYTHON_VALUES = frozenset({"-W", "-X", "--check-hash-based-pycs"})


def _inline_code(name: str, texts: list[str]) -> str | None:
    """The option (or deno's `eval`) that hands an interpreter code on its command line. Reading
    stops at the script; a word that does not look like a file (an option's value) does not stop it."""
    i = 0
    while i < len(texts):
        text = texts[i]
        i += 1
        if is_python(name):
            if text in _PYTHON_VALUES:
                i += 1
            elif not text.startswith("-") or text == "-":
                return None
            elif not text.startswith(("-W", "-X", "--")) and "c" in text:
                return "-c"
            elif not text.startswith(("-W", "-X", "--")) and "i" in text:
                return "-i (code read from its input after the script)"
        elif name in ("perl", "ruby") and re.fullmatch(r"-[a-zA-Z0-9]*[eE].*", text):
            return text
        elif text in _CODE_FLAGS or text.split("=", 1)[0] in _CODE_FLAGS:
            return text
        elif not text.startswith("-") and ("." in text or "/" in text):
            return None  # the script; what follows are its arguments
    return None


def _script(args: list[Word], values: frozenset[str]) -> Word | None:
    """The first argument that is not an option or an option's value."""
    i = 0
    while i < len(args):
        text = args[i].text
        i += 1
        if text in values:
            i += 1
        elif not text.startswith(("-", "+")) or text == "-":
            return Word("-") if _STDIN.match(text) else args[i - 1]
    return None


_STDIN = re.compile(r"^/dev/(stdin|fd/0)$|^/proc/(self|\$\$|[0-9]+)/fd/0$")


_SHELL_VALUES = frozenset({"-o", "+o", "-O", "+O"})


def classify_command(command: str, workspace: Path | None = None) -> Classification:
    """What a shell command may touch: read-only, writes-workspace or dangerous, and why.
    With a workspace, absolute paths inside it and symlinks out of it are recognised."""
    if not command.strip():
        return Classification(READ_ONLY, "empty command")
    findings = Classifier(workspace).source(command)
    if not findings:
        return Classification(READ_ONLY, "only sets shell state")
    worst = max(SEVERITY[f.level] for f in findings)
    top = [f for f in findings if SEVERITY[f.level] == worst]
    if worst == 0:
        names = list(dict.fromkeys(f.name or f.reason for f in top))
        return Classification(READ_ONLY, f"only reads ({', '.join(names)})")
    chosen = max(top, key=lambda f: f.priority)  # max() keeps the first of equals
    return Classification(chosen.level, chosen.reason)
