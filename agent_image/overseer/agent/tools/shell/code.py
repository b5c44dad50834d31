"""Commands that run code the classifier cannot read before it runs (runs-code), and commands that
print the environment, where the agent's secrets may be (dangerous).

Runs-code sits between writes-workspace and dangerous: a person approves it under the default
approval policy unless the Agent's spec.codeExecution is Allowed. The code may be inline
(python3 -c), stored for later (trap, hash -p, alias, a variable holding '$(…)'), assembled when it
runs (eval, $x as a command, base64 -d | sh), or hidden in a program the classifier does not
parse (a sed `e` command, an awk system(), a git option naming a command).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from .lexer import Word
from .parser import SimpleCommand
from .rules import Finding, dangerous, read_only, runs_code, split_options, writes

if TYPE_CHECKING:
    from .classify import Classifier

Handler = Callable[["Classifier", str, list[Word], SimpleCommand], list[Finding]]

# Variables that make a later program load or run code of the command's choosing.
CODE_VARIABLES = frozenset({
    "BASH_ENV", "ENV", "PATH", "PS4", "PROMPT_COMMAND", "SHELLOPTS", "BASHOPTS", "LD_PRELOAD", "LD_LIBRARY_PATH",
    "LD_AUDIT", "GCONV_PATH", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONHOME", "PERL5OPT", "PERL5LIB", "PERLLIB",
    "RUBYOPT", "RUBYLIB", "NODE_OPTIONS", "NODE_PATH", "PAGER", "EDITOR", "VISUAL", "MANPAGER", "MANOPT",
    "LESSOPEN", "LESSCLOSE", "BROWSER", "SSH_ASKPASS", "SUDO_ASKPASS", "GIT_EXTERNAL_DIFF", "GIT_PAGER",
    "GIT_EDITOR", "GIT_SEQUENCE_EDITOR", "GIT_SSH", "GIT_SSH_COMMAND", "GIT_ASKPASS", "GIT_PROXY_COMMAND",
    "GIT_CONFIG_PARAMETERS", "GIT_CONFIG_COUNT", "GIT_CONFIG_GLOBAL", "GIT_CONFIG_SYSTEM", "GIT_EXEC_PATH",
    "GIT_TEMPLATE_DIR", "GIT_DIR",
})
# Parameter names that likely hold a credential: expanding one prints or sends it.
SECRET_NAME = re.compile(r"(?i)(^|_)(API_?KEY|KEYS?|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?|COOKIE|DSN|AUTH)($|_)"
                         r"|_URL$")
# The ServiceAccount's credentials (the environment is /proc/PID/environ, matched by its last part).
SECRET_DIR = re.compile(r"^/(var/)?run/secrets(/|$)")
# Options that make a command run another command it names (tar --to-command=CMD, ...).
CODE_OPTIONS: dict[str, tuple[str, ...]] = {
    "tar": ("--to-command", "--checkpoint-action", "-I", "--use-compress-program", "--rsh-command", "-F",
            "--info-script", "--new-volume-script", "--rmt-command"),
    "zip": ("-TT", "--unzip-command"),
    "man": ("-P", "--pager", "-H", "--html"),
    "sort": ("--compress-program",),
    "split": ("--filter",),
    "make": ("--eval", "-E"),
    "gmake": ("--eval", "-E"),
    "rsync": ("-e", "--rsh", "--rsync-path"),
}
# name[…$(…)…] as text: bash evaluates an array subscript wherever a builtin takes a variable name
# (printf -v, read, unset, declare, test -v), and runs the substitution in it.
_SUBSCRIPT = re.compile(r"[A-Za-z_]\w*\[[^\]]*(\$\(|`)")
# Programs whose own language can start a shell (dc's `!`, sqlite3's .shell, an editor's :!).
CODE_RUNNERS = frozenset({"dc", "sqlite3", "ed", "ex", "vi", "vim", "nvim", "view", "emacs", "gdb", "expect",
                          "parallel", "coproc", "script", "irb"})
_ARITH_TESTS = frozenset({"-eq", "-ne", "-lt", "-le", "-gt", "-ge"})


def option_runs_code(name: str, texts: list[str]) -> str | None:
    """The option of `name` that names a command to run, if any."""
    for option in CODE_OPTIONS.get(name, ()):
        for text in texts:
            if text == option or text.startswith(option + "=") or (len(option) == 2 and text.startswith(option)):
                return option
    return None


def secret_reads(c: Classifier, words: list[Word]) -> list[Finding]:
    """Words that read the environment of another process, the ServiceAccount token, or a
    variable that may hold a credential."""
    found: list[Finding] = []
    for word in words:
        path = word.text
        if c.cwd is not None and c.cwd.startswith("/") and not path.startswith("/"):
            path = f"{c.cwd.rstrip('/')}/{path}"
        parts = re.sub(r"/+", "/", path).split("/")
        if SECRET_DIR.match("/".join(parts)) or (parts[:2] == ["", "proc"] and len(parts) >= 4
                                                 and fnmatch.fnmatchcase("environ", parts[-1])):
            found.append(dangerous(f"reads {word.text}, which holds the agent's environment or credentials"))
        secret = [p for p in word.params if SECRET_NAME.search(p)]
        if secret:
            found.append(dangerous(f"expands ${secret[0]}, which may hold a credential"))
        if word.quoted_subst and _SUBSCRIPT.search(word.text):
            found.append(runs_code(f"{word.text} is an array subscript with a command substitution, which bash "
                                   "runs when a builtin reads the name"))
        if word.indirect:
            found.append(dangerous("expands ${!…}, a variable named only when it runs, which may hold a credential"))
    return found


def arithmetic(c: Classifier, words: list[Word], head: str) -> list[Finding]:
    """Arithmetic evaluates a variable's text as an expression, and a[$(cmd)] in it runs cmd: a
    variable filled from a file or a command's output may carry such text."""
    bodies = [body for w in words for body in w.arith]
    names = [n for w in words for n in w.params] if bodies else []
    if head in ("let",):
        names = [n for w in words[1:] for n in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", w.text)]
    if head == "[[":
        for i, word in enumerate(words):
            if word.text in _ARITH_TESTS:
                for side in words[i - 1: i] + words[i + 1: i + 2]:
                    names += side.params + ([side.text] if re.fullmatch(r"[A-Za-z_]\w*", side.text) else [])
    tainted = sorted(set(names) & c.tainted)
    if tainted:
        return [runs_code(f"arithmetic on ${tainted[0]}, which holds text read when it runs; "
                          "a[$(…)] in it would run a command")]
    return []


def assignment(c: Classifier, word: Word, command: str = "") -> list[Finding]:
    """NAME=value: taints NAME when the value is read when it runs; judges the variables that
    make later programs run code."""
    name = re.split(r"[\[+=]", word.text, maxsplit=1)[0]
    found: list[Finding] = []
    if word.subs or word.indirect or c.tainted.intersection(word.params):
        c.tainted.add(name)
    if name in CODE_VARIABLES or name.startswith("BASH_FUNC_"):
        found.append(runs_code(f"sets {name}, which makes {command or 'later commands'} load or run code it names"))
    if word.quoted_subst:
        found.append(runs_code(f"stores text with a command substitution in {name}, which eval or arithmetic "
                               "would run"))
    return found


def _h_env_print(c: Classifier, name: str, args: list[Word], cmd: SimpleCommand) -> list[Finding]:
    positional, options = split_options(args)
    flags = set(options)
    assignments = [w for w in positional if "=" in w.text]
    found = [f for w in assignments for f in assignment(c, w)]
    names = [w for w in positional if "=" not in w.text]
    if name == "printenv":
        return [dangerous("printenv prints the environment, where the agent's credentials are")]
    if name == "set":
        if not args:
            return [dangerous("set prints every variable, the agent's credentials among them")]
        return found or [read_only(name)]
    if name == "export" and (not args or "-p" in flags):
        return [dangerous("export -p prints the environment, where the agent's credentials are")]
    if name in ("declare", "typeset", "local", "readonly") and (not assignments and (not names or "-p" in flags)
                                                                  and "-f" not in flags and "-F" not in flags):
        return [dangerous(f"{name} prints variables, the agent's credentials among them")]
    return found or [read_only(name)]


def _h_ps(c: Classifier, name: str, args: list[Word], cmd: SimpleCommand) -> list[Finding]:
    if any(not a.text.startswith("-") and re.fullmatch(r"[a-zA-Z]*e[a-zA-Z]*", a.text) for a in args):
        return [dangerous("ps e prints the environment of processes, the agent's among them")]
    return [read_only(name)]


def _h_trap(c: Classifier, name: str, args: list[Word], cmd: SimpleCommand) -> list[Finding]:
    if not args or args[0].text in ("-l", "-p", "-", "") or (args[0].text.isdigit() and not args[0].computed):
        return [read_only(name)]
    return [runs_code(f"trap sets a command that runs later, on a signal or exit ({args[0].text})"),
            *c.source(args[0].text)]


def _h_state(c: Classifier, name: str, args: list[Word], cmd: SimpleCommand) -> list[Finding]:
    texts = [a.text for a in args]
    if name == "hash" and any(t.startswith("-") and "p" in t for t in texts):
        return [runs_code("hash -p makes a command name run a program it names")]
    if name == "enable" and any(t.startswith("-") and ("f" in t or "n" in t) for t in texts):
        return [runs_code("enable loads or turns off shell builtins, so later names run other code")]
    if name == "shopt" and "-s" in texts and any(t in ("expand_aliases", "extdebug") for t in texts):
        return [runs_code(f"shopt -s {texts[-1]} makes later commands run code the classifier does not follow")]
    if name == "alias" and any("=" in t for t in texts):
        return [runs_code("alias makes a command name run other code")]
    return [read_only(name)]


def _h_read(c: Classifier, name: str, args: list[Word], cmd: SimpleCommand) -> list[Finding]:
    values = {"read": {"-p", "-d", "-n", "-N", "-t", "-u", "-i"}, "printf": set(),
              "mapfile": {"-d", "-n", "-O", "-s", "-u", "-c"}, "readarray": {"-d", "-n", "-O", "-s", "-u", "-c"},
              "getopts": set()}[name]
    texts = [a.text for a in args]
    if name in ("mapfile", "readarray") and any(t.startswith("-C") for t in texts):
        return [runs_code(f"{name} -C runs a callback command it names")]
    if name == "printf":
        if "-v" in texts and texts.index("-v") + 1 < len(texts):
            c.tainted.add(texts[texts.index("-v") + 1])
        return [read_only(name)]
    i, names = 0, []
    while i < len(texts):
        if texts[i].startswith("-") and len(texts[i]) > 1:
            if texts[i] in ("-a",) and i + 1 < len(texts):
                names.append(texts[i + 1])
            i += 2 if texts[i] in values or texts[i] == "-a" else 1
            continue
        names.append(texts[i])
        i += 1
    c.tainted.update(names[-1:] if name == "getopts" else names or ["REPLY", "MAPFILE"])
    return [read_only(name)]


def _h_code_runner(c: Classifier, name: str, args: list[Word], cmd: SimpleCommand) -> list[Finding]:
    if args and args[0].text in ("--version", "-V", "--help") and name not in ("coproc",):
        return [read_only(name)]
    return [runs_code(f"{name} runs commands written in its own language, which can start a shell")]


def _h_eval(c: Classifier, name: str, args: list[Word], cmd: SimpleCommand) -> list[Finding]:
    if name in ("source", "."):
        if cmd.process_subs and any(p.network for p in cmd.process_subs):
            return [dangerous(f"{name} runs downloaded content", priority=1, network=True)]
        script = args[0].text if args else ""
        return [runs_code(f"{name} runs the shell script {script} in this shell, which the classifier does not read")]
    found = c.source(" ".join(a.text for a in args))
    if any(s for a in args for s in a.subs) and any(f.network for f in found):
        found.append(dangerous("eval runs downloaded content", priority=1, network=True))
    return [runs_code("eval runs text as commands, which may be built when it runs"), *found]


# -- sed ---------------------------------------------------------------------------------------

_SED_PLAIN = set("=dDgGhHnNpPxzFlLqQ{}")


def sed_script_hazard(script: str) -> str | None:
    """Why a sed script runs a command or writes a file (e, s///e, w, s///w, W), or None. A script
    this reader does not understand is a hazard too."""
    s, i, n = script, 0, len(script)

    def delimited(i: int, delim: str) -> int:
        while i < n and s[i] != delim:
            i += 2 if s[i] == "\\" else 1
        if i >= n:
            raise ValueError("unterminated")
        return i + 1

    try:
        while i < n:
            while i < n and s[i] in " \t\n;":
                i += 1
            if i >= n:
                break
            for _ in range(2):  # up to two addresses
                if s[i].isdigit():
                    while i < n and (s[i].isdigit() or s[i] == "~"):
                        i += 1
                elif s[i] == "$":
                    i += 1
                elif s[i] in "/\\":
                    delim = "/" if s[i] == "/" else s[i + 1]
                    i = delimited(i + (1 if s[i] == "/" else 2), delim)
                    while i < n and s[i] in "IM":
                        i += 1
                elif s[i] in "+~" and _ == 1:
                    i += 1
                    while i < n and s[i].isdigit():
                        i += 1
                if i < n and s[i] == "," and _ == 0:
                    i += 1
                    continue
                break
            while i < n and s[i] in " \t!":
                i += 1
            if i >= n:
                break
            command = s[i]
            i += 1
            if command == "e":
                return "sed's e command runs a shell command"
            if command in "wW":
                return f"sed's {command} command writes a file it names"
            if command == "s" or command == "y":
                delim = s[i]
                i = delimited(delimited(i + 1, delim), delim)
                while command == "s" and i < n and s[i] in "gpiImMew0123456789":
                    if s[i] == "e":
                        return "sed's s///e flag runs the replacement as a shell command"
                    if s[i] == "w":
                        return "sed's s///w flag writes a file it names"
                    i += 1
            elif command in "rRaicbtT:v":
                while i < n and s[i] != "\n" and not (command in "btTv" and s[i] == ";"):
                    i += 2 if s[i] == "\\" else 1
            elif command in _SED_PLAIN:
                while i < n and s[i].isdigit():
                    i += 1
            elif command != "#":
                return f"sed script {script!r} is not understood (command {command!r})"
            else:
                while i < n and s[i] != "\n":
                    i += 1
    except (ValueError, IndexError):
        return f"sed script {script!r} is not understood"
    return None


def sed_scripts(args: list[Word]) -> tuple[list[Word], list[Word], bool]:
    """(scripts, files, whether a script comes from a file (-f)), reading options as GNU sed does."""
    scripts: list[Word] = []
    files: list[Word] = []
    from_file = False
    i = 0
    while i < len(args):
        word, text = args[i], args[i].text
        i += 1
        if text in ("-e", "--expression", "-f", "--file") or text.startswith(("--expression=", "--file=")):
            from_file |= "f" in text[1:3] or text.startswith("--file")
            value = text.split("=", 1)[1] if "=" in text else (args[i].text if i < len(args) else "")
            scripts.append(Word(value, computed=word.computed or (i < len(args) and args[i].computed)))
            i += 0 if "=" in text else 1
        elif text.startswith("-") and not text.startswith("--") and len(text) > 1:
            for j, flag in enumerate(text[1:], start=1):
                if flag in "ef":
                    from_file |= flag == "f"
                    rest = text[j + 1:]
                    scripts.append(Word(rest) if rest else (args[i] if i < len(args) else Word("")))
                    i += 0 if rest else 1
                    break
                if flag in "il":
                    break
        elif text.startswith("-"):
            continue
        else:
            files.append(word)
    if not scripts and files:
        scripts.append(files.pop(0))
    return scripts, files, from_file


def sed_hazard(args: list[Word]) -> str | None:
    if any(a.text == "--sandbox" for a in args):
        return None  # GNU sed refuses e, r and w in sandbox mode
    scripts, _, from_file = sed_scripts(args)
    if from_file:
        return "sed -f runs a script file the classifier does not read"
    for script in scripts:
        if script.computed:
            return "sed runs a script known only when it runs"
        reason = sed_script_hazard(script.text)
        if reason:
            return reason
    return None


# -- awk ---------------------------------------------------------------------------------------

_AWK_RUNS = re.compile(r"system\s*\(|\|\s*getline|\|&|print[f]?[^;}]*\|\s*\"?|@load")


def awk_finding(name: str, args: list[Word]) -> Finding:
    positional, options = split_options(args, frozenset({"-F", "-v", "-f", "-e", "--source", "-l", "--load",
                                                        "-i", "--include", "-E", "--exec"}))
    programs = [w for k, w in options.items() if k in ("-e", "--source") and w is not None]
    if not programs and positional and "-f" not in options and "-E" not in options:
        programs = positional[:1]
    if any(k in options for k in ("-l", "--load", "-i", "--include")):
        return runs_code(f"{name} loads an extension or library that runs code")
    if any(p.computed for p in programs):
        return runs_code(f"{name} runs a program known only when it runs")
    text = " ".join(p.text for p in programs)
    if _AWK_RUNS.search(text):
        return runs_code(f"{name} program runs commands (system(), pipes to or from a command)")
    if "-f" in options or "-E" in options or "--exec" in options or re.search(r"print[^;}]*>", text):
        return writes(f"{name} program may write files")
    return read_only(name)


# -- git ---------------------------------------------------------------------------------------

# `git -c KEY=VALUE` keys that only change how git reads or prints; any other key may name a
# command (core.fsmonitor, diff.external, core.pager, alias.x=!cmd, ...).
_GIT_SAFE_KEYS = re.compile(
    r"(user\.(name|email)|color\..+|advice\..+|core\.(quotepath|autocrlf|safecrlf|filemode|abbrev|ignorecase)"
    r"|init\.defaultbranch|safe\.directory|(commit|tag)\.gpgsign|log\.(date|decorate|abbrevcommit|follow)"
    r"|diff\.(renames|algorithm|noprefix|mnemonicprefix|context|interhunkcontext|submodule)|merge\.conflictstyle"
    r"|pull\.(rebase|ff)|rebase\.autosquash|grep\.(linenumber|patterntype|extendedregexp|column)"
    r"|status\.(short|branch|showuntrackedfiles)|column\.ui|i18n\.[a-z]+|protocol\.version)")
# Keys `git config` may set that make later git commands run a command.
_GIT_CODE_KEYS = re.compile(
    r"(core\.(fsmonitor|pager|editor|sshcommand|askpass|gitproxy|hookspath|alternaterefscommand|worktree)"
    r"|diff\.external|diff\..+\.(textconv|command)|merge\..+\.driver|filter\..+\.(clean|smudge|process)"
    r"|alias\..+|pager\..+|sequence\.editor|credential\..*helper|gpg(\..+)?\.program"
    r"|uploadpack\.packobjectshook|remote\..+\.(uploadpack|receivepack|proxy)|include\.path|includeif\..+"
    r"|(diff|merge)tool\..+\.(cmd|path)|interactive\.difffilter|web\.browser|browser\..+\.(cmd|path)"
    r"|man\..+\.(cmd|path)|sendemail\..+|ssh\.variant|receive\.procreceiverefs|http\..*proxy.*)")
_GIT_CODE_OPTIONS = ("--upload-pack", "--receive-pack", "--exec", "--open-files-in-pager", "--ext-diff",
                     "--config-env", "--exec-path", "--template")
_GIT_CODE_SUBCOMMANDS = {"difftool", "mergetool", "filter-branch", "instaweb", "filter-repo"}


def git_code_hazard(args: list[Word]) -> str | None:
    """Why a git command runs a command it names (an option, a config key, a subcommand), or None."""
    texts = [a.text for a in args]
    for i, text in enumerate(texts):
        if text == "-c" and i + 1 < len(texts):
            key = texts[i + 1].split("=", 1)[0].lower()
            if not _GIT_SAFE_KEYS.fullmatch(key):
                return f"git -c {key}=… may name a command git runs"
        if any(text == o or text.startswith(o + "=") for o in _GIT_CODE_OPTIONS):
            return f"git {text.split('=', 1)[0]} runs a command it names"
    sub = next((t for i, t in enumerate(texts) if not t.startswith("-") and (i == 0 or texts[i - 1] not in
                                                                              ("-c", "-C", "--git-dir", "--work-tree",
                                                                               "--namespace"))), "")
    after = texts[texts.index(sub) + 1:] if sub else []
    if sub in _GIT_CODE_SUBCOMMANDS:
        return f"git {sub} runs configured or given commands"
    if sub == "grep" and any(t == "-O" or (t.startswith("-O") and not t.startswith("--")) for t in after):
        return "git grep -O opens the files with a command it names"
    if sub in ("clone", "fetch", "pull", "ls-remote", "archive", "push") and any(
            t == "-u" or (t.startswith("-u") and sub == "clone") for t in after):
        return f"git {sub} -u runs the upload-pack command it names"
    if sub == "rebase" and any(t in ("-x", "--exec") or t.startswith(("-x", "--exec=")) for t in after):
        return "git rebase --exec runs a command after each commit"
    if sub == "bisect" and after[:1] == ["run"]:
        return "git bisect run runs a command"
    if sub == "submodule" and "foreach" in after:
        return "git submodule foreach runs a command in each submodule"
    if sub == "config":
        keys = [t.lower() for t in after if not t.startswith("-") and t not in ("set", "unset", "get", "list")]
        reads = any(t in ("--get", "--get-all", "--get-regexp", "--list", "-l", "get", "list") for t in after)
        if keys and not reads and len(keys) >= 2 and _GIT_CODE_KEYS.fullmatch(keys[0]):
            return f"git config {keys[0]} names a command later git commands run"
    return None


HANDLERS: dict[str, Handler] = {
    "printenv": _h_env_print, "set": _h_env_print, "export": _h_env_print, "declare": _h_env_print,
    "typeset": _h_env_print, "local": _h_env_print, "readonly": _h_env_print,
    "ps": _h_ps,
    "trap": _h_trap,
    "hash": _h_state, "enable": _h_state, "shopt": _h_state, "alias": _h_state,
    "read": _h_read, "mapfile": _h_read, "readarray": _h_read, "printf": _h_read, "getopts": _h_read,
    "eval": _h_eval, "source": _h_eval, ".": _h_eval,
    **{name: _h_code_runner for name in CODE_RUNNERS},
}
