"""What shell commands may touch, by name: the levels, the findings that lead to them, the
tables of known commands, and the small readings of words and options the handlers share."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..base import CodeExecution, Level, Risk
from .lexer import Word

READ_ONLY: Level = "read-only"
WRITES: Level = "writes-workspace"
RUNS_CODE: Level = "runs-code"
DANGEROUS: Level = "dangerous"
SEVERITY = {READ_ONLY: 0, WRITES: 1, RUNS_CODE: 2, DANGEROUS: 3}


def risk_of(level: Level, code_execution: CodeExecution) -> Risk:
    """The risk the approval policy compares with minRisk: code the classifier cannot read is
    high (a person approves it under the default policy) unless the Agent allows code execution."""
    risks: dict[Level, Risk] = {READ_ONLY: "low", WRITES: "medium", DANGEROUS: "high",
                                RUNS_CODE: "medium" if code_execution == "Allowed" else "high"}
    return risks[level]


@dataclass(frozen=True)
class Finding:
    level: Level
    reason: str
    priority: int = 0
    network: bool = False
    name: str = ""


def read_only(name: str) -> Finding:
    return Finding(READ_ONLY, name, name=name)


def writes(reason: str) -> Finding:
    return Finding(WRITES, reason)


def runs_code(reason: str, priority: int = 0) -> Finding:
    return Finding(RUNS_CODE, reason, priority)


def dangerous(reason: str, priority: int = 0, network: bool = False) -> Finding:
    return Finding(DANGEROUS, reason, priority, network)


READ_ONLY_COMMANDS = frozenset({
    "ls", "ll", "dir", "cat", "head", "tail", "less", "more", "wc", "grep", "egrep", "fgrep", "rg", "ag", "ack",
    "fd", "tree", "pwd", "echo", "true", "false", "test", "[", "[[", "which", "whereis", "type",
    "whoami", "id", "groups", "stat", "file", "du", "df", "diff", "cmp", "cut", "tr", "jq", "yq",
    "basename", "dirname", "realpath", "readlink", "md5sum", "sha1sum", "sha224sum", "sha256sum", "sha384sum",
    "sha512sum", "b2sum", "cksum", "sum", "nl", "column", "xxd", "hexdump", "od", "strings", "tac", "rev",
    "fold", "expand", "unexpand", "paste", "join", "comm", "seq", "sleep", "dirs", "unset",
    "unalias", "shift", "exit", "return", ":",
    "wait", "jobs", "help", "man", "nproc", "free", "uptime", "locale", "expr", "getconf", "cal",
    "lscpu", "lsb_release", "whatis", "apropos", "zcat", "zgrep", "bzcat", "xzcat", "zless", "base64",
    "base32", "fmt", "look", "umask", "ulimit", "break",
    "continue", "let", "tput", "arch", "tty", "stty", "history", "info", "pgrep", "pidof", "lsof",
    "top", "htop", "vmstat", "iostat", "numfmt", "factor", "bc", "yes", "cygpath", "sha", "diff3",
    "sdiff", "colordiff", "wdiff", "shellcheck", "tsort", "ptx",
})
NETWORK_COMMANDS = frozenset({
    "nc", "ncat", "netcat", "ssh", "scp", "sftp", "telnet", "ftp", "tftp", "lftp", "socat", "nmap", "ping",
    "ping6", "dig", "nslookup", "host", "http", "https", "httpie", "xh", "aria2c", "whois", "traceroute",
    "tracepath", "mtr", "mosh", "gh", "glab", "aws", "gcloud", "gsutil", "az", "s3cmd", "rclone", "svn", "hg",
    "ssh-keyscan", "sshpass", "ncftp", "axel", "links", "lynx", "w3m", "mail", "sendmail", "smbclient", "psql", "mysql", "redis-cli", "mongosh", "mongo",
})
PRIVILEGE_COMMANDS = frozenset({
    "sudo", "su", "doas", "pkexec", "chown", "chgrp", "setcap", "setfacl", "passwd", "chpasswd", "useradd",
    "userdel", "usermod", "groupadd", "groupdel", "groupmod", "visudo", "newgrp", "runuser", "adduser",
    "deluser", "chattr",
})
SYSTEM_COMMANDS = frozenset({
    "shutdown", "reboot", "halt", "poweroff", "init", "telinit", "systemctl", "service", "mount", "umount",
    "iptables", "ip6tables", "iptables-restore", "nft", "ufw", "firewall-cmd", "ip", "ifconfig", "route",
    "sysctl", "modprobe", "insmod", "rmmod", "docker", "podman", "kubectl", "helm", "crictl", "nerdctl",
    "ctr", "k3s", "kind", "minikube", "kubeadm", "oc", "fdisk", "sfdisk", "parted", "mkswap", "swapon",
    "swapoff", "losetup", "chroot", "nsenter", "unshare", "crontab", "at", "batch", "hwclock", "timedatectl",
    "hostnamectl", "setenforce", "mknod", "dmsetup", "cryptsetup", "wipefs", "blkdiscard", "tc", "brctl",
    "ethtool", "launchctl", "terraform", "ansible", "ansible-playbook", "vagrant",
})
PACKAGE_MANAGERS = frozenset({
    "apt", "apt-get", "aptitude", "dpkg", "yum", "dnf", "microdnf", "zypper", "apk", "pacman", "brew", "port",
    "snap", "flatpak", "rpm", "nix-env", "nix", "easy_install", "emerge", "pkg", "choco", "winget",
    "sdkmanager", "asdf", "update-alternatives",
})
SHELLS = frozenset({"sh", "bash", "zsh", "dash", "ksh", "mksh", "fish", "ash", "csh", "tcsh"})
SCRIPTING = frozenset({"perl", "ruby", "node", "nodejs", "php", "deno", "lua", "luajit", "Rscript", "julia",
                        "tclsh", "osascript", "irb", "ts-node", "tsx", "groovy", "scala", "elixir", "erl"})
BUILD_TOOLS = frozenset({
    "make", "gmake", "cmake", "ninja", "meson", "bazel", "bazelisk", "buck", "pytest", "py.test", "tox", "nox",
    "mypy", "pyright", "black", "ruff", "flake8", "pylint", "isort", "coverage", "pre-commit", "gradle",
    "gradlew", "./gradlew", "mvn", "ant", "sbt", "javac", "java", "gcc", "g++", "cc", "c++", "clang",
    "clang++", "rustc", "tsc", "eslint", "prettier", "jest", "vitest", "mocha", "webpack", "vite", "esbuild",
    "rollup", "swift", "swiftc", "kotlinc", "ghc", "stack", "cabal", "dune", "mix", "rebar3", "zig", "hatch",
    "flit", "maturin", "sphinx-build", "mkdocs", "jupyter", "nbconvert", "protoc", "buf", "golangci-lint",
})
WRAPPERS: dict[str, frozenset[str]] = {
    "nohup": frozenset(), "time": frozenset({"-f", "-o"}), "nice": frozenset({"-n"}),
    "ionice": frozenset({"-c", "-n", "-p"}), "stdbuf": frozenset({"-i", "-o", "-e"}),
    "timeout": frozenset({"-s", "--signal", "-k", "--kill-after"}), "command": frozenset(),
    "builtin": frozenset(), "exec": frozenset({"-a"}), "env": frozenset({"-u", "--unset", "-C", "--chdir", "-S"}),
    "xargs": frozenset({"-I", "-n", "-P", "-d", "-L", "-s", "-E", "-a", "--arg-file", "--max-args",
                        "--max-procs", "--delimiter", "-i"}),
    "watch": frozenset({"-n", "--interval", "-d"}), "chronic": frozenset(), "unbuffer": frozenset(),
    "setsid": frozenset(), "taskset": frozenset({"-c"}), "caffeinate": frozenset(), "catchsegv": frozenset(),
    "strace": frozenset({"-o", "-e", "-p", "-s"}), "busybox": frozenset(), "toybox": frozenset(), "ltrace": frozenset({"-o", "-e"}), "flock": frozenset({"-w"}),
}
PREFIX_KEYWORDS = frozenset({"!", "{", "if", "then", "else", "elif", "do", "while", "until", "time", "}"})
SKIPPED_KEYWORDS = frozenset({"fi", "done", "esac", "for", "select", "case"})


def within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\[[^\]]*\])?\+?=")


def is_assignment(word: Word) -> bool:
    return not word.dynamic and bool(_ASSIGNMENT.match(word.text))


def is_python(name: str) -> bool:
    return bool(re.fullmatch(r"python[0-9.]*|pypy[0-9.]*", name))


def is_interpreter(name: str) -> bool:
    return is_python(name) or name in SCRIPTING


def split_options(args: list[Word],
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


def short_flags(options: dict[str, Word | None]) -> str:
    """All single-letter flags, bundled or not: {'-rf': None} gives 'rf'."""
    return "".join(k[1:] for k in options if k.startswith("-") and not k.startswith("--"))

