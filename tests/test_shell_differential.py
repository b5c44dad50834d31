"""Our shell parser against tree-sitter-bash: for every command of the corpus, both must read the
same simple commands (assignments, words after quote removal, redirections) and the same command
substitutions, and reject the same input. Where we read differently on purpose, DELIBERATE says
why; an entry there that no longer differs fails too, so the list stays true."""

from __future__ import annotations

import codecs
import re
from pathlib import Path
from typing import Any

import pytest
import tree_sitter_bash
import yaml
from tree_sitter import Language, Node, Parser

from overseer.agent.tools.shell.lexer import Lexer, ParseError
from overseer.agent.tools.shell.parser import parse
from overseer.agent.tools.shell.rules import PREFIX_KEYWORDS, SKIPPED_KEYWORDS, is_assignment

from .test_tools_bash import CLASSIFICATIONS

CORPUS = [e["command"] for e in yaml.safe_load((Path(__file__).parent / "data" / "shell_corpus.yaml").read_text())]
# Shapes the corpus does not hold but a reader of bash must get right.
SHAPES = [
    "a | b |& c && d || e; f & g",
    "(cd src && make) > build.log 2>&1",
    "diff <(sort a.txt) <(sort b.txt) >> out.txt",
    "cat <<-EOF | tee x.txt\n\tline $(date)\n\tEOF\n",
    "cat <<EOF\n$(id) and `whoami`\nEOF\necho done",
    "cat <<'EOF'\n$(id)\nEOF",
    "echo \"a \\\"quoted\\\" $x\" 'it''s' a\\ b",
    "printf '%s\\n' \"$@\" > \"$OUT\"",
    "f() { echo in; }; f",
    "function g { echo in; }",
    "function h { rm -rf /tmp/x; }; h",
    "case $x in *) echo any;; esac",
    "case $x in (a|b) echo ab;; $(id)) echo sub;;\nesac",
    "if [ -f x ]; then cat x; elif true; then :; else echo no; fi",
    "while read -r line; do echo \"$line\"; done < input.txt",
    "case $x in a) echo a;; b|c) echo bc;; esac",
    "x=1 y=$(date) env",
    "echo $(echo $(echo nested))",
    "echo `echo back`",
    "ls 2>/dev/null 1>&2 &>all.log",
    "exec 3< in.txt 4> out.txt",
    "echo ~ ~/x a~b",
    "echo {a,b}{1,2} *.py ?.txt",
    "echo $'tab\\there' $\"locale\"",
    "time ls -la",
    "! grep -q x file && echo missing",
    "echo a\\\nb",
    "echo '#not a comment' # a comment",
    "{ echo a; echo b; } > both.txt",
    "echo ${#arr[@]} ${arr[0]} ${x%.py} ${x//a/b}",
    "cmd >| forced.txt",
    "cat < in.txt > out.txt",
    "echo $((1 + 2)) $(( x * 3 ))",
    "echo $(case x in x) echo y;; esac)",
    "echo $(case x in (a|b) echo y;; c) echo z;; esac; ls)",
    "a=(1 2 3); echo ${a[@]}",
    "declare -A m=([k]=v)",
    "a=($(id) x)",
    "echo a;b",
    "echo \"a;b\" 'c|d' e\\;f",
    "echo $(echo ')')",
    "echo \"$(echo \"nested quotes\")\"",
    "x+=1",
    "echo >out 2>>err <in",
    "echo ${x:+\"quoted $y\"} \"${x//\\//_}\"",
    "until false; do break; done",
    "select x in a b; do break; done",
    "echo $# $? $$ $! $0 $1 ${10}",
    "echo \\$HOME '$HOME' \"\\$HOME\"",
    "f() ( echo sub ); f",
    "for f in *.py; do echo \"$f\"; done",
    "echo $((16#ff)) {1..5} a{b,c}d",
    "VAR=value command -v ls",
    "cd \"$(dirname \"$0\")\" && pwd",
    "echo \"$(cat <<EOF\ninner\nEOF\n)\"",
    "(( i++ )); echo $((i++))",
    "echo $(echo \"a)b\") $(echo 'a)b') $(echo a\\)b)",
    "echo $(echo a # c )\n)",
    "echo $(: # ) '\necho inner #'\n)",
    "echo $(echo `echo mixed`) \"$((1+$(echo 2)))\" ${x?$(echo err)}",
    "cmd 2>&- 1<&0",
    "IFS=: read -r a b <<< \"$line\"",
    "[[ $a == b* && $c =~ ^d ]] && echo match",
    "[[ ( -f a || -f b ) && ! -d c ]]",
    "x=${y:-$(echo z)} cmd",
    "echo $(<file.txt) 'a'\\''b' \"\\`not\\`\"",
    "echo $((a[$(echo 0)]))",
    "echo `echo \\`echo inner\\``",
    "echo ${x:-'a}b'}",
    "cat <<EOF; echo after\nbody\nEOF",
    "echo x > >(cat) 2> >(cat >&2)",
    "echo ok)",
    "while IFS= read -r l; do :; done < <(ls)",
    "h() { :; } > out",
    "echo ${x:-$(echo ran; echo })}",
    "echo ${y:-`echo }`}",
    "echo $(cat <<EOF\n) '\nEOF\necho ran-hidden\n#'\n)",
    "x=$(cat <<-'END'\n\t)\n\tEND\n); echo \"$x\"",
]

# Commands (corpus or shapes) we read differently on purpose, and why.
DELIBERATE: dict[str, str] = {
    "{rm,-rf,build}": "bash expands the brace list into `rm -rf build`; tree-sitter-bash rejects a brace "
                      "expansion as a command; we read one word made when it runs (runs-code)",
    'echo "${x:=`id`}"': "bash runs backquotes inside ${…} within double quotes; tree-sitter-bash keeps them as text",
    "exec 3<>/dev/tcp/10.0.0.1/80": "bash takes N<> (a descriptor opened for reading and writing); "
                                    "tree-sitter-bash rejects it",
    "cat <<EOF\n$(id) and `whoami`\nEOF\necho done": "bash runs backquotes in an unquoted here-document; "
                                                       "tree-sitter-bash sees only $(…) there",
    "case $x in (a|b) echo ab;; $(id)) echo sub;;\nesac": "a case pattern's substitution runs; we hand it to the "
                                                          "classifier on a `:` command, which tree-sitter-bash lacks",
    "time ls -la": "time is a reserved word that times the pipeline; tree-sitter-bash reads it as a command name",
    "echo a\\\nb": "a backslash-newline joins the lines inside a word; tree-sitter-bash splits the word there",
    "echo `echo \\`echo inner\\``": "bash unescapes \\` inside backquotes and runs the inner command too; "
                                     "tree-sitter-bash keeps one substitution with the escapes",
    "echo ${x:-'a}b'}": "bash honours single quotes in an unquoted ${…}; we reject it (so it is dangerous)",
    "cat <<EOF; echo after\nbody\nEOF": "bash reads here-document bodies after the line's other commands; "
                                        "tree-sitter-bash rejects it",
    "echo x > >(cat) 2> >(cat >&2)": "a redirection into a process substitution: we judge the process's commands "
                                     "and keep the target as a word of the command, writing to no file",
    "echo ok)": "a stray ) is a syntax error, so bash runs nothing; we read past it",
    "while IFS= read -r l; do :; done < <(ls)": "the redirection into the loop from a process substitution: "
                                                "we judge the process's commands and drop the redirection",
    "echo $(echo `echo )`; python3 -c 'x')": "bash reads the backquotes inside $(…) first, so their `)` closes "
                                              "nothing (and runs the rest); tree-sitter-bash rejects it",
    "echo ${y:-`echo }`}": "bash reads backquotes inside ${…} first, so their } closes nothing; tree-sitter-bash "
                          "rejects it",
    "echo ${x:-`python3 -c 'print(1)' #}`}": "the same: a } inside backquotes within ${…}",
    "h() { :; } > out": "a redirection of a function definition applies when it is called; we judge it at "
                        "the definition (stricter)",
}

_PARSER = Parser(Language(tree_sitter_bash.language()))
Reading = tuple[tuple[str, ...], tuple[str, ...], tuple[tuple[str, str], ...]]


# -- our reading --------------------------------------------------------------------------------

def ours(source: str) -> tuple[list[Reading], list[str]]:
    lexer = Lexer(source)
    commands = parse(lexer.run())
    readings: list[Reading] = []
    subs = list(lexer.heredoc_subs)
    for cmd in commands:
        subs += [sub for w in cmd.words + [t for _, t in cmd.redirects] for sub in w.subs]
        words, assignments = list(cmd.words), []
        while words and (is_assignment(words[0]) or words[0].text in PREFIX_KEYWORDS):
            word = words.pop(0)
            if is_assignment(word):
                assignments.append(word.text)
        if words and words[0].text == "function":
            words = words[2:]  # function NAME { BODY: the body's first command follows
            while words and words[0].text in PREFIX_KEYWORDS | {"()"}:
                words.pop(0)
        if words and (words[0].text in SKIPPED_KEYWORDS or words[0].text in ("[", "[[")
                      or words[0].text.startswith("((")):
            words = []  # compound commands and tests: tree-sitter has no simple command for their heads
        redirects = tuple((op, target.text) for op, target in cmd.redirects)
        if words or assignments or redirects:
            readings.append((tuple(assignments), tuple(w.text for w in words), redirects))
    nested = [s for sub in subs for s in ours(sub)[1]]
    return sorted(readings), sorted(s.strip() for s in subs + nested)


# -- tree-sitter's reading ----------------------------------------------------------------------

def _text(node: Node) -> str:
    return (node.text or b"").decode()


def word(node: Node) -> str:
    """A word after quote removal; expansions stay as written, as our lexer keeps them."""
    kind, text = node.type, _text(node)
    if kind in ("word", "number", "variable_name", "extglob_pattern"):
        return re.sub(r"\\(.)", r"\1", text.replace("\\\n", ""), flags=re.S)
    if kind == "raw_string":
        return text[1:-1]
    if kind in ("string", "translated_string"):
        inner = text[2:-1] if kind == "translated_string" else text[1:-1]
        return re.sub(r"\\([$`\"\\])", r"\1", inner.replace("\\\n", ""))
    if kind == "ansi_c_string":
        return codecs.decode(text[2:-1], "unicode_escape")
    if kind == "concatenation":
        return "".join(word(c) for c in node.children)
    if kind == "process_substitution":
        return text[:2] + "…)"
    if kind == "command_name":
        return word(node.children[0])
    return text


def _redirect(node: Node) -> list[tuple[str, str]]:
    kind = node.type
    if kind == "herestring_redirect":
        return [("<<<", word(node.named_children[-1]))]
    if kind == "heredoc_redirect":
        op = next(_text(c) for c in node.children if not c.is_named)
        start = next(c for c in node.children if c.type == "heredoc_start")
        out = [(op, re.sub(r"[\"'\\]", "", _text(start)))]
        return out + [r for c in node.named_children if c.type.endswith("_redirect") for r in _redirect(c)]
    descriptor = next((_text(c) for c in node.children if c.type == "file_descriptor"), "")
    op = next(_text(c) for c in node.children if not c.is_named)
    target = "".join(word(c) for c in node.named_children if c.type != "file_descriptor")
    if op.endswith("&-"):  # closing a descriptor: one token here, operator and target for us
        op, target = op[:-1], "-"
    return [(descriptor + op, target)]


def _simple(node: Node, redirects: list[tuple[str, str]]) -> Reading:
    assignments: list[str] = []
    words = [_text(node.children[0])] if node.type in ("declaration_command", "unset_command") else []
    for child in node.named_children:
        if child.type == "variable_assignment":
            (words if words else assignments).append(word_of_assignment(child))
        elif child.type.endswith("_redirect"):
            redirects += _redirect(child)
        elif child.type != "comment":
            words.append(word(child))
    return tuple(assignments), tuple(words), tuple(redirects)


def word_of_assignment(node: Node) -> str:
    return "".join(word(c) if c.is_named else _text(c) for c in node.children)


def theirs(source: str) -> tuple[list[Reading], list[str]]:
    root = _PARSER.parse(source.encode()).root_node
    if root.has_error:
        raise ParseError("tree-sitter-bash reads a syntax error")
    readings: list[Reading] = []
    subs: list[str] = []

    def walk(node: Node, inside_sub: bool) -> None:
        kind = node.type
        if kind == "command_substitution":
            text = _text(node)
            subs.append((text[1:-1] if text.startswith("`") else text[2:-1]).strip())
            inside_sub = True
        elif not inside_sub and kind in ("command", "declaration_command", "unset_command"):
            redirects: list[tuple[str, str]] = []
            if node.parent is not None and node.parent.type == "redirected_statement":
                redirects = [r for c in node.parent.named_children[1:] for r in _redirect(c)]
            readings.append(_simple(node, redirects))
        elif not inside_sub and kind in ("variable_assignment", "variable_assignments") and node.parent is not None \
                and node.parent.type not in ("command", "declaration_command", "variable_assignments", "for_statement",
                                             "c_style_for_statement"):
            parts = node.named_children if kind == "variable_assignments" else [node]
            readings.append((tuple(word_of_assignment(p) for p in parts), (), ()))
        elif not inside_sub and kind == "redirected_statement" and node.named_children[0].type not in (
                "command", "declaration_command", "unset_command"):
            readings.append(((), (), tuple(r for c in node.named_children[1:] for r in _redirect(c))))
        for child in node.children:
            walk(child, inside_sub)

    walk(root, False)
    return sorted(readings), sorted(subs)


def _reading(read: Any, source: str) -> Any:
    try:
        return read(source)
    except ParseError:
        return "rejected"


@pytest.mark.parametrize("source", CORPUS + SHAPES + [c for c, _ in CLASSIFICATIONS], ids=lambda s: s[:50])
def test_our_parser_reads_commands_as_tree_sitter_bash_does(source: str) -> None:
    mine, reference = _reading(ours, source), _reading(theirs, source)
    if source in DELIBERATE:
        assert mine != reference, f"listed as deliberate ({DELIBERATE[source]}), but both now agree"
    else:
        assert mine == reference
