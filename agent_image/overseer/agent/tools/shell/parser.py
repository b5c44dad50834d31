"""Simple commands out of shell tokens: the pipelines, lists, subshells and process
substitutions they sit in are flattened, keeping what a command may read from upstream."""

from __future__ import annotations

from dataclasses import dataclass, field

from .lexer import REDIRECTS, Op, Token, Word

@dataclass
class SimpleCommand:
    words: list[Word] = field(default_factory=list)
    redirects: list[tuple[str, Word]] = field(default_factory=list)
    upstream: list[SimpleCommand] = field(default_factory=list)
    """Commands earlier in the same pipeline, whose output this one may read."""
    process_subs: list[SimpleCommand] = field(default_factory=list)
    network: bool = False
    """Whether the command uses the network (set by the classifier, read by those downstream)."""


def parse(tokens: list[Token]) -> list[SimpleCommand]:
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

    open_cases = 0        # case statements begun and not yet closed by esac
    pattern: list[Word] | None = None  # the words of a case pattern being read, up to its `)`
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if pattern is not None:
            if isinstance(token, Word) and token.text == "esac" and not pattern:
                open_cases -= 1
                pattern = None
            elif isinstance(token, Word):
                pattern.append(token)
                continue
            elif token.text == ")":
                if any(w.subs for w in pattern):  # a pattern's substitutions run too; `:` carries them
                    out.append(SimpleCommand(words=[Word(":"), *pattern]))
                pattern = None
                continue
            else:
                continue  # `|` between patterns, `(` before one, newlines
        if isinstance(token, Op) and current.words and current.words[0].text == "[[" \
                and current.words[-1].text != "]]" and token.text in ("&&", "||", "(", ")", "<", ">"):
            current.words.append(Word(token.text))  # inside [[ ]] these are operators of the test
            continue
        if isinstance(token, Word):
            current.words.append(token)
            if token.text == "in" and len(current.words) == 3 and current.words[0].text == "case":
                finish(keep_pipeline=False)
                open_cases += 1
                pattern = []
            continue
        op = token.text
        if op in ("|", "|&"):
            finish(keep_pipeline=True)
        elif op in (";", "&", "&&", "||", ";;"):
            finish(keep_pipeline=False)
            if op == ";;" and open_cases:
                pattern = []
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
            current.words.append(Word(op + "…)", dynamic=True, computed=True))
        elif op.lstrip("0123456789") in REDIRECTS:
            if i < len(tokens) and isinstance(tokens[i], Word):
                current.redirects.append((op, tokens[i]))  # type: ignore[arg-type]
                i += 1
    finish(keep_pipeline=False)
    return out, i

