"""Shell words as bash splits them: quotes, escapes, operators, expansions, here-documents.

Expansions stay as written ($X, $(...)); command substitutions are collected on their word, so
the classifier can judge the commands inside them too.
"""

from __future__ import annotations

import re
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
    computed: bool = False
    """Contains an expansion, an unquoted glob or a brace list anywhere: the shell makes the word
    (or several) only when it runs."""
    hidden_subs: bool = False
    """A command substitution sits inside a parameter or arithmetic expansion (${x:-$(...)})."""
    arith: list[str] = field(default_factory=list)
    """Bodies of arithmetic expansions $((...)), $[...], and of an arithmetic command ((...))."""
    params: list[str] = field(default_factory=list)
    """Names of the parameters the word expands ($NAME, ${NAME...})."""
    indirect: bool = False
    """Expands ${!name} or ${!prefix*}: a variable named only when it runs."""
    quoted_subst: bool = False
    """Quoted text that reads as a command substitution ('$(id)'): inert here, code if a later
    eval or arithmetic evaluation reads it."""


@dataclass(frozen=True)
class Op:
    text: str


Token = Word | Op

_OPERATORS = sorted(["&>>", "<<<", "<<-", "&&", "||", ";;", "|&", ">>", ">|", "<>", "<<", "&>", ">&", "<&",
                     "<(", ">(", ";", "&", "|", "(", ")", "<", ">"], key=len, reverse=True)
_OP_START = set(";&|()<>")
_BEFORE_COMMAND = {"for", "if", "then", "else", "elif", "do", "while", "until", "!", "time", "{"}
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
            elif s.startswith("((", self.i) and self._command_start():
                self._arithmetic_command()
            elif c in _OP_START:
                self._op()
            else:
                self._word()
        return self.tokens

    def _command_start(self) -> bool:
        last = self.tokens[-1] if self.tokens else None
        if isinstance(last, Word):
            return last.text in _BEFORE_COMMAND
        return last is None or last.text not in REDIRECTS

    def _arithmetic_command(self) -> None:
        end = _balanced(self.s, self.i + 2, "(", ")")
        if not self.s.startswith("))", end):
            raise ParseError("unterminated arithmetic command ((")
        body = self.s[self.i + 2: end]
        self.i = end + 2
        word = Word(f"(({body}))", computed=True, arith=[body])
        word.subs = _substitutions(body)
        word.params = _names(body)
        self.tokens.append(word)

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
            if c == "(" and not quoted and _ASSIGNMENT.fullmatch("".join(text)):
                end = _balanced(s, self.i + 1, "(", ")")  # name=(a b c): an array's elements, one word
                word.subs.extend(_substitutions(s[self.i + 1: end]))
                word.computed = word.computed or "$" in s[self.i: end] or "`" in s[self.i: end]
                text.append(s[self.i: end + 1])
                self.i = end + 1
                continue
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
                text.append(self._quoted(s[self.i + 1: end], word))
                self.i = end + 1
                quoted = True
            elif s.startswith("$'", self.i):
                end = self.i + 2
                while end < len(s) and s[end] != "'":
                    end += 2 if s[end] == "\\" else 1
                if end >= len(s):
                    raise ParseError("unterminated $'...' quote")
                text.append(self._quoted(_ansi_c(s[self.i + 2: end]), word))
                self.i = end + 1
                quoted = True
            elif c == '"' or s.startswith('$"', self.i):
                quoted = True
                self.i += 1 if c == '"' else 2
                self._double_quoted(text, word)
            elif c == "$" or c == "`":
                self._expansion(text, word)
            elif c == "~" and not text and not quoted:
                word.dynamic = True
                text.append(c)
                self.i += 1
            else:
                rest = _REST_OF_WORD.match(s, self.i).group()  # type: ignore[union-attr]
                if c in "*?" or (c == "[" and "]" in rest) or (c == "{" and "," in rest and "}" in rest):
                    word.computed = True  # a glob or a brace list: the words exist only when it runs
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

    @staticmethod
    def _quoted(text: str, word: Word) -> str:
        if "$(" in text or "`" in text:
            word.quoted_subst = True
        return text

    def _expansion(self, text: list[str], word: Word) -> None:
        s = self.s
        start = self.i
        if not text:
            word.dynamic = True
        word.computed = True
        if s[self.i] == "`":
            end = _backquote_end(s, self.i)
            word.subs.append(s[self.i + 1: end].replace("\\`", "`"))
            self.i = end + 1
        elif s.startswith("$((", self.i):
            end = _balanced(s, self.i + 3, "(", ")")
            if not s.startswith("))", end):
                raise ParseError("unterminated arithmetic expansion")
            self._nested(s[self.i + 3: end], word, arithmetic=True)
            self.i = end + 2
        elif s.startswith("$[", self.i):
            end = _balanced(s, self.i + 2, "[", "]")
            self._nested(s[self.i + 2: end], word, arithmetic=True)
            self.i = end + 1
        elif s.startswith("$(", self.i):
            end = _balanced(s, self.i + 2, "(", ")")
            word.subs.append(s[self.i + 2: end])
            self.i = end + 1
        elif s.startswith("${", self.i):
            end = _balanced(s, self.i + 2, "{", "}")
            body = s[self.i + 2: end]
            if body.startswith("!") and len(body) > 1:
                word.indirect = True
            self._nested(body, word, arithmetic=False)
            self.i = end + 1
        elif self.i + 1 < len(s) and (s[self.i + 1].isalnum() or s[self.i + 1] in "_?@*#$!-"):
            self.i += 2
            if s[start + 1].isalpha() or s[start + 1] == "_":
                while self.i < len(s) and (s[self.i].isalnum() or s[self.i] == "_"):
                    self.i += 1
                word.params.append(s[start + 1: self.i])
        else:
            if len(text) == 0:
                word.dynamic = False  # a lone $ is a literal dollar sign
            word.computed = bool(word.subs or word.params or word.arith)
            self.i += 1
        text.append(s[start: self.i])

    @staticmethod
    def _nested(body: str, word: Word, arithmetic: bool) -> None:
        """A parameter or arithmetic expansion: the substitutions inside it run too."""
        inner = _substitutions(body)
        if inner:
            word.subs.extend(inner)
            word.hidden_subs = True
        if arithmetic:
            word.arith.append(body)
            word.params.extend(_names(body))
        else:
            word.params.extend(_names(body)[:1])

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


_WORD_BREAK = " \t\n;&|()"
_HEREDOC = re.compile(r"<<(-?)[ \t]*((?:[^\s;&|()<>'\"]|'[^']*'|\"[^\"]*\")+)")
_KEYWORD = re.compile(r"(case|in|esac)(?=[\s;&|()]|$)")
_REST_OF_WORD = re.compile(r"[^\s;&|()<>]*")
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\[[^\]]*\])?\+?=")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ANSI_C = re.compile(r"\\(x[0-9A-Fa-f]{1,2}|u[0-9A-Fa-f]{1,4}|U[0-9A-Fa-f]{1,8}|[0-7]{1,3}|c.|.)", re.S)
_ANSI_SIMPLE = {"a": "\a", "b": "\b", "e": "\x1b", "E": "\x1b", "f": "\f", "n": "\n", "r": "\r", "t": "\t",
                "v": "\v"}


def _names(body: str) -> list[str]:
    """Variable names an expansion's body refers to ($x, x, ${x...}); the digits of 10#x are not names."""
    return [m.group() for m in _NAME.finditer(body) if m.start() == 0 or not body[m.start() - 1].isalnum()]


def _ansi_c(body: str) -> str:
    """The text of $'...' as bash decodes it (\\x72 is r, \\101 is A, \\n a newline)."""
    def one(m: re.Match[str]) -> str:
        code = m.group(1)
        if code[0] in "xuU":
            return chr(int(code[1:], 16))
        if code[0] in "01234567":
            return chr(int(code, 8) & 0xFF)
        if code[0] == "c":
            return chr(ord(code[1].upper()) & 0x1F)
        return _ANSI_SIMPLE.get(code, code)
    return _ANSI_C.sub(one, body)


def _backquote_end(s: str, i: int) -> int:
    """Index of the backquote that closes the one at i."""
    end = i + 1
    while end < len(s) and s[end] != "`":
        end += 2 if s[end] == "\\" else 1
    if end >= len(s):
        raise ParseError("unterminated backquote")
    return end


def _balanced(s: str, i: int, open_: str, close: str) -> int:
    """Index of the `close` that ends a group opened just before i; quotes inside are skipped, and
    so is the `)` of a case pattern inside $(...), which closes nothing."""
    depth = 1
    cases: list[str] = []  # per case statement still open: "header", "pattern" or "body"
    heredocs: list[tuple[str, bool]] = []  # here-documents whose bodies start at the next newline
    start = i
    while i < len(s):
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if open_ == "(" and s.startswith("<<", i) and not s.startswith("<<<", i):
            delimiter = _HEREDOC.match(s, i)
            if delimiter:  # its body is text: a `)` in it closes nothing
                heredocs.append((re.sub(r"[\"'\\]", "", delimiter.group(2)), bool(delimiter.group(1))))
                i = delimiter.end()
                continue
        if c == "\n" and heredocs:
            i += 1
            for word, strip in heredocs:
                while i < len(s):
                    end = s.find("\n", i)
                    line = s[i: len(s) if end < 0 else end]
                    i = len(s) if end < 0 else end + 1
                    if (line.lstrip("\t") if strip else line) == word:
                        break
            heredocs.clear()
            continue
        if c == "`":
            i = _backquote_end(s, i) + 1
            continue
        if open_ == "{" and s.startswith("$(", i):  # ${x:-$(echo })}: the } in $(…) closes nothing
            i = _balanced(s, i + 2, "(", ")") + 1
            continue
        if open_ == "(" and c == "#" and (i == start or s[i - 1] in _WORD_BREAK):
            end = s.find("\n", i)  # a comment, to the end of the line: a `)` in it closes nothing
            i = len(s) if end < 0 else end
            continue
        if open_ == "(" and (i == start or s[i - 1] in _WORD_BREAK):
            keyword = _KEYWORD.match(s, i)
            if keyword:
                word = keyword.group(1)
                if word == "case":
                    cases.append("header")
                elif word == "in" and cases and cases[-1] == "header":
                    cases[-1] = "pattern"
                elif word == "esac" and cases:
                    cases.pop()
                i = keyword.end(1)
                continue
        if cases and cases[-1] == "pattern" and c in "()":
            cases[-1] = "body" if c == ")" else "pattern"
            i += 1
            continue
        if cases and s.startswith(";;", i):
            cases[-1] = "pattern"
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
    raise ParseError(f"unterminated {'$' + open_}")


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

