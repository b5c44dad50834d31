"""Judgements of single commands by name (rm, cp, sed -i, git, curl, pip, ...): where they
write, whether they reach the network, which of their subcommands only read."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from .code import Handler, awk_finding, git_code_hazard, sed_hazard
from .lexer import Word
from .parser import SimpleCommand
from .rules import DANGEROUS, Finding, dangerous, read_only, runs_code, short_flags, split_options, writes

if TYPE_CHECKING:
    from .classify import Classifier


def _h_cd(c: Classifier, name: str, args: list[Word], cmd: SimpleCommand) -> list[Finding]:
    if name == "popd":
        c.cwd = c.dirs.pop() if c.dirs else None
    else:
        c.cd(args, push=name == "pushd")
    return [read_only(name)]


def _h_delete(c: Classifier, name: str, args: list[Word], cmd: SimpleCommand) -> list[Finding]:
    positional, _ = split_options(args)
    return c.targets("deletes", positional, name)


def _h_create(c: Classifier, name: str, args: list[Word], cmd: SimpleCommand) -> list[Finding]:
    positional, _ = split_options(args, frozenset({"-m", "--mode", "-s", "--size", "-r", "--reference", "-d", "--date",
                                              "-t"}))
    if name == "mktemp":
        return [writes("mktemp creates a temporary file")]
    return c.targets("writes", positional, name)


def _h_copy(c: Classifier, name: str, args: list[Word], cmd: SimpleCommand) -> list[Finding]:
    positional, options = split_options(args, frozenset({"-t", "--target-directory", "-S", "--suffix", "-m", "--mode",
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


def _h_chmod(c: Classifier, name: str, args: list[Word], cmd: SimpleCommand) -> list[Finding]:
    positional, options = split_options(args)
    if "--reference" not in options and positional:
        mode, positional = positional[0].text, positional[1:]
        if re.search(r"[ugoa]*[+=][rwxXt]*s", mode) or re.fullmatch(r"0*[2-7][0-7]{3}", mode):
            return [dangerous(f"chmod {mode} sets the setuid or setgid bit")]
    return c.targets("changes permissions of", positional, name)


def _h_tee(c: Classifier, name: str, args: list[Word], cmd: SimpleCommand) -> list[Finding]:
    positional, _ = split_options(args)
    return [f for w in positional if (f := c.target("writes", w, name))] or [read_only(name)]


def _h_sed(c: Classifier, name: str, args: list[Word], cmd: SimpleCommand) -> list[Finding]:
    hazard = sed_hazard(args)
    if hazard:
        return [runs_code(hazard)]
    positional, options = split_options(args, frozenset({"-e", "--expression", "-f", "--file", "-l"}))
    in_place = any(k in ("--in-place",) or (k.startswith("-i") or (not k.startswith("--") and "i" in k[1:]))
                   for k in options if k not in ("-e", "-f", "-l"))
    if not in_place:
        return [read_only(name)]
    files = positional if ("-e" in options or "--expression" in options or "-f" in options) else positional[1:]
    return c.targets("edits", files, name)


def _h_sort(c: Classifier, name: str, args: list[Word], cmd: SimpleCommand) -> list[Finding]:
    positional, options = split_options(args, frozenset({"-o", "--output", "-k", "--key", "-t", "-S", "-T",
                                                    "--field-separator"}))
    out = options.get("-o") or options.get("--output")
    if name == "uniq" and len(positional) >= 2:
        out = positional[1]
    if out is None:
        return [read_only(name)]
    return [c.target("writes", out, name) or read_only(name)]


def _h_awk(c: Classifier, name: str, args: list[Word], cmd: SimpleCommand) -> list[Finding]:
    return [awk_finding(name, args)]


def _h_find(c: Classifier, name: str, args: list[Word], cmd: SimpleCommand) -> list[Finding]:
    texts = [a.text for a in args]
    roots: list[Word] = []
    for word in args:
        if word.text.startswith(("-", "(", "!")) and not word.dynamic:
            break
        roots.append(word)
    root = roots[0] if roots else Word(".")
    findings: list[Finding] = []
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
            findings.append(runs_code(f"find {args[i].text} runs a command for each file it finds, with names "
                                      "the files choose"))
            findings += c.argv(inner, SimpleCommand(words=inner))
            i = j
        i += 1
    return findings or [read_only(name)]


def _h_archive(c: Classifier, name: str, args: list[Word], cmd: SimpleCommand) -> list[Finding]:
    if name == "tar":
        bundled = args[0].text if args and not args[0].text.startswith("-") else ""
        rest = args[1:] if bundled else args
        positional, options = split_options(rest, frozenset({"-f", "--file", "-C", "--directory", "-T", "-X"}))
        flags = bundled + short_flags(options) + " ".join(options)
        if "t" in bundled or "-t" in options or "--list" in options:
            return [read_only(name)]
        findings: list[Finding] = []
        archive = (options.get("-f") or options.get("--file")
                   or (positional[0] if "f" in bundled and positional else None))
        if ("c" in flags or "--create" in options or "r" in bundled or "u" in bundled) and archive:
            findings += c.targets("writes the archive", [archive], name)
        if "x" in flags or "--extract" in options or "--get" in options:
            findings += c.targets("extracts into", [options.get("-C") or options.get("--directory") or Word(".")], name)
        return findings or [writes(f"{name} writes files in the workspace")]
    if name in ("unzip",):
        positional, options = split_options(args, frozenset({"-d", "-x"}))
        if "-l" in options or "-t" in options or "-v" in options or "-p" in options or "-Z" in options:
            return [read_only(name)]
        return c.targets("extracts into", [options.get("-d") or Word(".")], name)
    positional, options = split_options(args, frozenset({"-S", "--suffix"}))
    flags = short_flags(options)
    if "c" in flags or "l" in flags or "t" in flags or "--stdout" in options or "--list" in options:
        return [read_only(name)]
    verb = "writes" if name == "zip" else "compresses or expands"
    return c.targets(verb, positional[:1] if name == "zip" else positional, name)


def _h_dd(c: Classifier, name: str, args: list[Word], cmd: SimpleCommand) -> list[Finding]:
    for word in args:
        if word.text.startswith("of="):
            target = Word(word.text[3:], dynamic=word.text[3:4] in ("$", "~"))
            return [c.target("writes", target, name) or writes("dd writes to a device of the workspace")]
    return [read_only(name)]


def _h_patch(c: Classifier, name: str, args: list[Word], cmd: SimpleCommand) -> list[Finding]:
    positional, options = split_options(args, frozenset({"-o", "--output", "-d", "--directory", "-i", "--input",
                                                    "-p", "-B", "-r"}))
    if "--dry-run" in options:
        return [read_only(name)]
    written = [w for w in (options.get("-o"), options.get("--output"), options.get("-d"),
                           options.get("--directory")) if w is not None]
    return c.targets("patches", written or positional[:1] or [Word(".")], name)


def _h_rsync(c: Classifier, name: str, args: list[Word], cmd: SimpleCommand) -> list[Finding]:
    positional, _ = split_options(args, frozenset({"-e", "--rsh", "--exclude", "--include", "-f", "--filter"}))
    if any(_remote_spec(w.text) for w in positional):
        return [dangerous(f"{name} copies to or from another host", network=True)]
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


def _h_fetch(c: Classifier, name: str, args: list[Word], cmd: SimpleCommand) -> list[Finding]:
    values, risky = (_CURL_VALUES, _CURL_RISKY) if name == "curl" else (_WGET_VALUES, _WGET_RISKY)
    positional, options = split_options(args, values | risky)
    urls = positional + [w for k, w in options.items() if k == "--url" and w is not None]
    if not urls or risky.intersection(options) or any(not _local_url(w) for w in urls):
        return [dangerous(f"{name} uses the network", network=True)]
    findings = [writes(f"{name} talks only to localhost")]
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


def _h_git(c: Classifier, name: str, args: list[Word], cmd: SimpleCommand) -> list[Finding]:
    hazard = git_code_hazard(args)
    found = _git(c, args)
    return [runs_code(hazard), *found] if hazard else found


def _git(c: Classifier, args: list[Word]) -> list[Finding]:
    rest = list(args)
    repo: Word | None = None
    while rest and rest[0].text.startswith("-") and rest[0].text not in ("--version", "--help"):
        option = rest.pop(0).text
        if option in ("-C", "-c", "--git-dir", "--work-tree", "--namespace", "--exec-path") and rest:
            value = rest.pop(0)
            if option in ("-C", "--work-tree", "--git-dir"):
                repo = value
    if not rest:
        return [read_only("git")]
    sub, sub_args = rest[0].text, rest[1:]
    texts = [a.text for a in sub_args]
    label = f"git {sub}"
    if sub in _GIT_NETWORK:
        return [dangerous(f"{label} talks to a remote repository", network=True)]
    if sub == "clone":
        positional, _ = split_options(sub_args, frozenset({"-b", "--branch", "-o", "--origin", "--depth", "-c",
                                                      "--config", "--reference", "-u", "--upload-pack"}))
        if not positional or any(_remote_spec(w.text) or w.dynamic for w in positional[:1]):
            return [dangerous(f"{label} downloads a repository", network=True)]
        destination = positional[1] if len(positional) > 1 else Word(".")
        return [c.target("clones into", destination, label) or writes(label)]
    if sub == "submodule":
        if texts[:1] in (["status"], ["summary"], []):
            return [read_only(label)]
        if texts[:1] == ["foreach"]:
            return [writes("git submodule foreach runs a command in each submodule")]
        return [dangerous(f"{label} may clone or fetch repositories", network=True)]
    if sub == "remote":
        if not texts or texts[0] in ("-v", "--verbose", "get-url"):
            return [read_only(label)]
        if texts[0] in ("update", "prune", "show"):
            return [dangerous(f"git remote {texts[0]} talks to a remote repository", network=True)]
        return [writes(f"git remote {texts[0]} changes the repository configuration")]
    if sub == "config":
        if any(t in ("--global", "--system") for t in texts) and not _git_config_reads(texts):
            return [dangerous(f"{label} writes configuration outside the workspace")]
        if _git_config_reads(texts):
            return [read_only(label)]
        return [writes(f"{label} changes the repository configuration")]
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
        names = [t for t in texts if not t.startswith("-")]
        read = not changing.intersection(flagged) and (not names or bool(listing.intersection(flagged)))
    if sub == "stash":
        read = texts[:1] in (["list"], ["show"])
    if sub == "worktree":
        read = texts[:1] == ["list"]
    if read:
        return [read_only(label)]
    finding = c.target("changes the repository at", repo, label) if repo is not None else None
    if finding is not None and finding.level == DANGEROUS:
        return [finding]
    return [writes(f"{label} changes the repository")]


def _git_config_reads(texts: list[str]) -> bool:
    if any(t in ("--get", "--get-all", "--get-regexp", "--list", "-l", "--show-origin", "get", "list") for t in texts):
        return True
    return len([t for t in texts if not t.startswith("-")]) == 1


_PIP_READ = {"list", "show", "freeze", "check", "help", "--version", "-V", "config", "debug", "inspect"}
_PIP_NETWORK = {"install", "download", "wheel", "uninstall", "index", "search"}


def _h_pip(c: Classifier, name: str, args: list[Word], cmd: SimpleCommand) -> list[Finding]:
    positional, options = split_options(args)
    sub = positional[0].text if positional else next(iter(options), "")
    if sub in _PIP_NETWORK:
        return [dangerous(f"{name} {sub} installs or fetches packages", network=True)]
    if sub in _PIP_READ:
        return [read_only(f"{name} {sub}")]
    return [writes(f"{name} {sub} may change the environment")]


_NODE_DANGEROUS = {"install", "i", "ci", "add", "update", "up", "upgrade", "uninstall", "remove", "rm", "un",
                   "publish", "link", "exec", "x", "dlx", "create", "view", "info", "show", "audit", "outdated",
                   "search", "login", "adduser", "unpublish", "deprecate", "dist-tag", "owner", "global"}
_NODE_READ = {"ls", "list", "--version", "-v", "help", "why", "explain", "config", "root", "prefix", "bin"}


def _h_node_pm(c: Classifier, name: str, args: list[Word], cmd: SimpleCommand) -> list[Finding]:
    if name in ("npx", "bunx", "pnpx"):
        return [dangerous(f"{name} downloads and runs packages", network=True)]
    positional, options = split_options(args)
    sub = positional[0].text if positional else next(iter(options), "")
    if name in ("yarn", "bun") and not sub:
        return [dangerous(f"{name} installs packages", network=True)]
    if sub in _NODE_DANGEROUS or (sub == "init" and len(positional) > 1):
        return [dangerous(f"{name} {sub} installs packages or talks to the registry", network=True)]
    if sub in _NODE_READ:
        return [read_only(f"{name} {sub}")]
    return [writes(f"{name} {sub} runs project scripts, which write in the workspace")]


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


def _h_language(c: Classifier, name: str, args: list[Word], cmd: SimpleCommand) -> list[Finding]:
    positional = [a.text for a in args if not a.text.startswith("-")]
    sub = positional[0] if positional else ""
    if name == "go" and sub == "mod" and positional[1:2] in (["download"], ["tidy"], ["vendor"]):
        return [dangerous(f"go mod {positional[1]} downloads modules", network=True)]
    if name == "go" and sub in ("version", "env", "doc", "list"):
        return [read_only(f"go {sub}")]
    if sub in _LANGUAGE_DANGEROUS[name] or (name == "twine" and not sub):
        return [dangerous(f"{name} {sub} installs, fetches or publishes packages".replace("  ", " "), network=True)]
    if name == "bundle" and not sub:
        return [dangerous("bundle installs gems", network=True)]
    return [writes(f"{name} {sub} builds or runs the project, which writes in the workspace".replace("  ", " "))]


def _h_kill(c: Classifier, name: str, args: list[Word], cmd: SimpleCommand) -> list[Finding]:
    positional, options = split_options(args, frozenset({"-s", "-n"}))
    if "-l" in options or "-L" in options:
        return [read_only(name)]
    if positional and all(w.text.startswith("%") or w.text == "$!" for w in positional):
        return [writes(f"{name} stops a background job of this shell")]
    return [dangerous(f"{name} signals processes outside the command")]


def _h_hostname_date(c: Classifier, name: str, args: list[Word], cmd: SimpleCommand) -> list[Finding]:
    texts = [a.text for a in args]
    if name == "date" and any(t in ("-s", "--set") or t.startswith("--set=") for t in texts):
        return [dangerous("date --set changes the system clock")]
    if name == "hostname" and any(not t.startswith("-") for t in texts):
        return [dangerous("hostname NAME changes the host name")]
    return [read_only(name)]


def _h_openssl(c: Classifier, name: str, args: list[Word], cmd: SimpleCommand) -> list[Finding]:
    if args and args[0].text in ("s_client", "s_time", "ocsp"):
        return [dangerous(f"openssl {args[0].text} uses the network", network=True)]
    return [writes("openssl may write keys or certificates")]


def python_module(c: Classifier, name: str, module: str, rest: list[Word], cmd: SimpleCommand) -> list[Finding]:
    if module in ("pip", "pip3"):
        return _h_pip(c, f"{name} -m pip", rest, cmd)
    if module in ("ensurepip",):
        return [dangerous(f"{name} -m ensurepip installs packages outside the workspace")]
    if module in ("json.tool", "tabnanny", "pydoc", "site", "sysconfig", "platform"):
        return [read_only(f"{name} -m {module}")]
    if module in ("venv", "virtualenv"):
        positional, _ = split_options(rest, frozenset({"--prompt"}))
        return c.targets("creates a virtual environment at", positional[:1], f"{name} -m {module}")
    if module in ("timeit", "code", "pdb", "runpy", "cProfile", "profile", "trace"):
        return [runs_code(f"{name} -m {module} runs code given on its command line or input")]
    if module in _PYTHON_TEST_MODULES:
        return [writes(f"{name} -m {module} runs tests or tools, which write caches in the workspace")]
    return [writes(f"{name} -m {module} runs a module, assumed to write in the workspace")]


_PYTHON_TEST_MODULES = {"pytest", "unittest", "tox", "nox", "mypy", "black", "ruff", "coverage", "build",
                        "doctest", "compileall", "py_compile", "flake8", "pylint", "isort"}

HANDLERS: dict[str, Handler] = {
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
    "openssl": _h_openssl,
}

