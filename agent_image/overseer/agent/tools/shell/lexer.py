"""Shell words as bash splits them: quotes, escapes, operators, expansions, here-documents.

Expansions stay as written ($X, $(...)); command substitutions are collected on their word, so
the classifier can judge the commands inside them too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
REDIRECTS = {"<", ">", ">>", ">|", "<>", "&>", "&>>", ">&", "<&", "<<", "<<-", "<<<"}


class Lexer:
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
                self.tokens.append(Op(prefix + op if op in REDIRECTS else op))
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

