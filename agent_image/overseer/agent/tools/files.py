"""File tools: read, list, glob, grep, edit and write, all confined to the workspace.

Every file is opened through tools.confined (beneath the workspace, no symlinks, regular files
with one name), sizes are judged on the open descriptor before reading, and searches run under
a deadline, so neither a raced path, a hard link, a FIFO, a huge file nor a catastrophic
regular expression gets past a tool.

Risk: reads are low. `edit_file` is low: the call carries the exact change. `write_file`
is low when it creates a file and medium when it overwrites one, since the call does not
show what it throws away.
"""

from __future__ import annotations

import asyncio
import os
import stat
import time
from abc import abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import IO, Any

import regex

from . import confined
from .base import Assessment, Tool, ToolContext, ToolError, ToolResult, WorkspaceError

GLOB_LIMIT = 500
"""Paths returned by one glob call."""
GREP_LIMIT = 200
"""Matching lines returned by one grep call."""
GREP_LINE_WIDTH = 300
"""Characters of one matching line shown by grep."""
LIST_LIMIT = 1000
"""Entries shown by one list_directory call."""
GREP_MAX_FILE_BYTES = 5_000_000
"""Larger files are skipped by grep (generated data, not source)."""
READ_MAX_BYTES = 10_000_000
"""Larger files are read only by line range (start_line/end_line), streamed."""
LINE_MAX_BYTES = 1_000_000
"""Bytes of one line kept when a large file is streamed; the rest of the line is skipped."""
SEARCH_SECONDS = 20.0
"""Wall-clock limit of one grep or glob call, regular expression matching included."""
SKIPPED_DIRS = frozenset({".git", ".hg", ".svn"})
"""Version-control internals that glob and grep do not descend into."""
_BINARY_SNIFF = 8192


class _FileTool(Tool):
    """Runs its blocking file work in a thread, so the event loop stays free."""

    async def run(self, input: Mapping[str, Any], ctx: ToolContext) -> ToolResult:
        return await asyncio.to_thread(self.run_sync, input, ctx)

    @abstractmethod
    def run_sync(self, input: Mapping[str, Any], ctx: ToolContext) -> ToolResult: ...


class ReadFile(_FileTool):
    name = "read_file"
    side_effects = False
    description = (
        "Read a text file in the workspace. Lines are numbered like `cat -n`. "
        "Pass start_line and end_line (1-based, inclusive) to read part of a large file; "
        "long output is truncated with a notice saying where to continue."
    )
    input_schema = {
        "type": "object",
        "properties": {
            "path": {"type": "string", "minLength": 1, "description": "File path relative to the workspace."},
            "start_line": {"type": "integer", "minimum": 1, "description": "First line to read (1-based)."},
            "end_line": {"type": "integer", "minimum": 1, "description": "Last line to read (inclusive)."},
        },
        "required": ["path"],
        "additionalProperties": False,
    }

    def summarize(self, input: Mapping[str, Any]) -> str:
        return f"read {input.get('path')}"

    def run_sync(self, input: Mapping[str, Any], ctx: ToolContext) -> ToolResult:
        start = input.get("start_line", 1)
        end: int | None = input.get("end_line")
        if end is not None and end < start:
            raise ToolError(f"end_line {end} is before start_line {start}")
        with _open_file(ctx, input["path"], os.O_RDONLY) as (fh, st, shown):
            total: int | None = None
            if st.st_size <= READ_MAX_BYTES:
                lines = _lines(_decode(fh.read(), shown))
                total = len(lines)
                if total == 0:
                    return ToolResult(f"({shown} is empty)", summary=f"read {shown} (empty)")
                if start > total:
                    raise ToolError(f"start_line {start} is past the end of {shown} ({total} lines)")
                last_wanted = min(end or total, total)
                numbered: Iterable[tuple[int, str]] = ((n, lines[n - 1]) for n in range(start, last_wanted + 1))
            elif "start_line" not in input and "end_line" not in input:
                raise ToolError(f"{shown} is {st.st_size} bytes, over the {READ_MAX_BYTES}-byte limit of a whole "
                                "read; read part of it with start_line and end_line, or search it with grep")
            else:
                _refuse_binary(fh.read(_BINARY_SNIFF), shown, st.st_size)
                fh.seek(0)
                numbered = _stream_lines(fh, start, end)
            out, last, more = _take(numbered, ctx.output_limit)
        if not out:
            raise ToolError(f"start_line {start} is past the end of {shown}")
        body = "\n".join(out)
        of_total = f" of {total}" if total is not None else ""
        if more:
            body += (f"\n[truncated at the output limit: showing lines {start}-{last}{of_total}; "
                     f"read on with start_line={last + 1}]")
        return ToolResult(body, summary=f"read {shown} lines {start}-{last}")


class ListDirectory(_FileTool):
    name = "list_directory"
    side_effects = False
    description = (
        "List a directory in the workspace: one entry per line, directories end with '/', "
        "files show their size in bytes, symlinks show their target."
    )
    input_schema = {
        "type": "object",
        "properties": {
            "path": {"type": "string", "description": "Directory relative to the workspace; default '.'."},
        },
        "additionalProperties": False,
    }

    def summarize(self, input: Mapping[str, Any]) -> str:
        return f"list {input.get('path') or '.'}"

    def run_sync(self, input: Mapping[str, Any], ctx: ToolContext) -> ToolResult:
        raw = input.get("path") or "."
        with confined.workspace_fd(ctx.workspace) as root:
            parts = confined.relative_parts(ctx.workspace, raw)
            shown = "/".join(parts) or "."
            _require_directory(root, parts, shown)
            fd = confined.open_directory(root, parts, shown=shown)
        try:
            with os.scandir(fd) as it:
                entries = sorted(it, key=lambda e: e.name)
            lines = [_describe_entry(entry, fd) for entry in entries[:LIST_LIMIT]]
        finally:
            os.close(fd)
        if len(entries) > LIST_LIMIT:
            lines.append(f"[... and {len(entries) - LIST_LIMIT} more entries]")
        body = "\n".join(lines) if lines else f"({shown} is empty)"
        return ToolResult(_cap(body, ctx), summary=f"listed {shown} ({len(entries)} entries)")


class Glob(_FileTool):
    name = "glob"
    side_effects = False
    description = (
        "Find paths in the workspace matching a glob pattern such as '**/*.py' or 'src/*.toml'. "
        f"Results are sorted, relative to the workspace, and capped at {GLOB_LIMIT}; "
        "'**' matches any number of directories. .git is skipped."
    )
    input_schema = {
        "type": "object",
        "properties": {
            "pattern": {"type": "string", "minLength": 1, "description": "Glob pattern relative to the workspace."},
        },
        "required": ["pattern"],
        "additionalProperties": False,
    }

    def summarize(self, input: Mapping[str, Any]) -> str:
        return f"glob {input.get('pattern')}"

    def run_sync(self, input: Mapping[str, Any], ctx: ToolContext) -> ToolResult:
        pattern = input["pattern"]
        parts = PurePosixPath(pattern).parts
        if pattern.startswith(("/", "~")) or ".." in parts:
            raise WorkspaceError(f"pattern {pattern} leaves the workspace; give a pattern relative to it")
        workspace = ctx.workspace.resolve()
        deadline = time.monotonic() + SEARCH_SECONDS
        found: list[str] = []
        for match in workspace.glob(pattern):
            if time.monotonic() > deadline:
                raise ToolError(f"glob {pattern} stopped after {SEARCH_SECONDS:g} s (the tree is too large); "
                                "narrow the pattern to a folder, e.g. 'src/**/*.py'")
            rel = match.relative_to(workspace)
            if SKIPPED_DIRS.intersection(rel.parts):
                continue
            if not _inside(match, workspace):
                continue
            found.append(rel.as_posix() + ("/" if match.is_dir() else ""))
        found.sort()
        if not found:
            return ToolResult(f"No paths match {pattern}.", summary=f"glob {pattern}: no matches")
        lines = found[:GLOB_LIMIT]
        if len(found) > GLOB_LIMIT:
            lines.append(f"[... and {len(found) - GLOB_LIMIT} more; narrow the pattern]")
        return ToolResult(_cap("\n".join(lines), ctx), summary=f"glob {pattern}: {len(found)} matches")


class Grep(_FileTool):
    name = "grep"
    side_effects = False
    description = (
        "Search file contents in the workspace with a Python regular expression. "
        "Returns 'file:line: text' lines, sorted by file, capped at "
        f"{GREP_LIMIT} matches. Binary files and .git are skipped. "
        "Narrow the search with path (a file or directory) and glob (e.g. '*.py')."
    )
    input_schema = {
        "type": "object",
        "properties": {
            "pattern": {"type": "string", "minLength": 1, "description": "Regular expression (Python syntax)."},
            "path": {"type": "string", "description": "File or directory to search; default the workspace."},
            "glob": {"type": "string", "description": "Only files whose path matches, e.g. '*.py' or 'src/*.ts'."},
            "case_insensitive": {"type": "boolean", "description": "Ignore case; default false."},
        },
        "required": ["pattern"],
        "additionalProperties": False,
    }

    def summarize(self, input: Mapping[str, Any]) -> str:
        where = f" in {input['path']}" if input.get("path") else ""
        return f"grep {input.get('pattern')!r}{where}"

    def run_sync(self, input: Mapping[str, Any], ctx: ToolContext) -> ToolResult:
        flags = regex.IGNORECASE if input.get("case_insensitive") else 0
        try:
            pattern = regex.compile(input["pattern"], flags)
        except regex.error as exc:
            raise ToolError(f"invalid regular expression {input['pattern']!r}: {exc}") from None
        search = _Search(pattern, input["pattern"], time.monotonic() + SEARCH_SECONDS)
        file_glob = input.get("glob")
        matches: list[str] = []
        total = 0
        files_with_matches = 0
        with confined.workspace_fd(ctx.workspace) as root:
            parts = confined.relative_parts(ctx.workspace, input.get("path") or ".")
            for rel, hits in _grep_tree(root, parts, search, file_glob):
                if hits:
                    files_with_matches += 1
                for number, text in hits:
                    total += 1
                    if len(matches) < GREP_LIMIT:
                        line = text if len(text) <= GREP_LINE_WIDTH else text[:GREP_LINE_WIDTH] + "…"
                        matches.append(f"{rel}:{number}: {line}")
        summary = f"grep {input['pattern']!r}: {total} matches in {files_with_matches} files"
        if not matches:
            return ToolResult(f"No matches for {input['pattern']!r}.", summary=summary)
        if total > len(matches):
            matches.append(f"[... {total - len(matches)} more matches; narrow the pattern, path or glob]")
        return ToolResult(_cap("\n".join(matches), ctx), summary=summary)


class EditFile(_FileTool):
    name = "edit_file"
    description = (
        "Replace exact text in a file. old_string must match the file exactly, including "
        "whitespace and indentation, and must be unique unless replace_all is true; include "
        "enough surrounding lines to make it unique. Read the file first. To create a file, use write_file."
    )
    input_schema = {
        "type": "object",
        "properties": {
            "path": {"type": "string", "minLength": 1, "description": "File path relative to the workspace."},
            "old_string": {"type": "string", "minLength": 1, "description": "Exact text to replace."},
            "new_string": {"type": "string", "description": "Replacement text."},
            "replace_all": {"type": "boolean", "description": "Replace every occurrence; default false."},
        },
        "required": ["path", "old_string", "new_string"],
        "additionalProperties": False,
    }

    def summarize(self, input: Mapping[str, Any]) -> str:
        return f"edit {input.get('path')}"

    def assess(self, input: Mapping[str, Any], ctx: ToolContext) -> Assessment:
        return Assessment("low", f"exact edit of {input['path']} inside the workspace")

    def run_sync(self, input: Mapping[str, Any], ctx: ToolContext) -> ToolResult:
        old, new = input["old_string"], input["new_string"]
        if old == new:
            raise ToolError("old_string and new_string are identical; nothing to change")
        # One descriptor for the read and the write: the file changed is the file read.
        with _open_file(ctx, input["path"], os.O_RDWR, hint="; use write_file to create it") as (fh, st, shown):
            if st.st_size > READ_MAX_BYTES:
                raise ToolError(f"{shown} is {st.st_size} bytes, over the {READ_MAX_BYTES}-byte limit of "
                                "edit_file; edit it with a bash command (e.g. sed) instead")
            text = _decode(fh.read(), shown)
            if "\r\n" in text and "\r" not in old:
                # read_file shows lines without their \r; match what the model saw.
                old, new = old.replace("\n", "\r\n"), new.replace("\n", "\r\n")
            count = text.count(old)
            if count == 0:
                raise ToolError(f"old_string was not found in {shown} (0 matches); read the file and copy "
                                "the exact text, including whitespace and indentation")
            replace_all = bool(input.get("replace_all"))
            if count > 1 and not replace_all:
                raise ToolError(f"old_string appears {count} times in {shown}; include more surrounding "
                                "lines to make it unique, or set replace_all to true")
            position = text.index(old)
            updated = text.replace(old, new) if replace_all else text.replace(old, new, 1)
            _rewrite(fh, updated)
        replaced = count if replace_all else 1
        noun = "occurrence" if replaced == 1 else "occurrences"
        snippet = _snippet(updated, position, new)
        return ToolResult(f"Replaced {replaced} {noun} in {shown}.\n{snippet}",
                          summary=f"edited {shown} ({replaced} {noun})")


class WriteFile(_FileTool):
    name = "write_file"
    description = (
        "Write a whole file in the workspace, creating parent directories. Overwrites an "
        "existing file entirely; to change part of a file, prefer edit_file."
    )
    input_schema = {
        "type": "object",
        "properties": {
            "path": {"type": "string", "minLength": 1, "description": "File path relative to the workspace."},
            "content": {"type": "string", "description": "The complete new content of the file."},
        },
        "required": ["path", "content"],
        "additionalProperties": False,
    }

    def summarize(self, input: Mapping[str, Any]) -> str:
        return f"write {input.get('path')}"

    def assess(self, input: Mapping[str, Any], ctx: ToolContext) -> Assessment:
        try:
            parts = confined.relative_parts(ctx.workspace, input["path"])
        except WorkspaceError as exc:
            return Assessment("low", f"{exc}; the call will be refused")
        shown = "/".join(parts) or "."
        with confined.workspace_fd(ctx.workspace) as root:
            try:
                st = confined.lstat_beneath(root, parts)
            except ToolError as exc:
                return Assessment("low", f"{exc}; the call will be refused")
        if st is not None and stat.S_ISREG(st.st_mode):
            return Assessment("medium", f"overwrites {shown} ({st.st_size} bytes)")
        return Assessment("low", f"creates {shown} inside the workspace")

    def run_sync(self, input: Mapping[str, Any], ctx: ToolContext) -> ToolResult:
        content = input["content"]
        with confined.workspace_fd(ctx.workspace) as root:
            parts = confined.relative_parts(ctx.workspace, input["path"])
            shown = "/".join(parts) or "."
            if not parts:
                raise ToolError(f"{shown} is a directory")
            existed = confined.lstat_beneath(root, parts) is not None
            parent = confined.open_directory(root, parts[:-1], create=True, shown=shown)
        try:
            fd, _ = confined.open_regular(parent, parts[-1:], os.O_WRONLY | os.O_CREAT, shown=shown)
        finally:
            os.close(parent)
        with os.fdopen(fd, "wb") as fh:
            _rewrite(fh, content)
        lines = content.count("\n") + (0 if content.endswith("\n") or not content else 1)
        size = len(content.encode("utf-8"))
        verb = "Overwrote" if existed else "Created"
        return ToolResult(f"{verb} {shown} ({lines} lines, {size} bytes).",
                          summary=f"{verb.lower()} {shown} ({lines} lines)")


FILE_TOOLS: tuple[type[Tool], ...] = (ReadFile, ListDirectory, Glob, Grep, EditFile, WriteFile)


@contextmanager
def _open_file(ctx: ToolContext, raw: str, flags: int, hint: str = "") -> Iterator[tuple[IO[bytes], os.stat_result, str]]:
    """A regular file of the workspace opened safely (see confined), as a binary file object."""
    with confined.workspace_fd(ctx.workspace) as root:
        parts = confined.relative_parts(ctx.workspace, raw)
        shown = "/".join(parts) or "."
        if confined.lstat_beneath(root, parts) is None:
            raise ToolError(f"{shown} does not exist in the workspace{hint}")
        fd, st = confined.open_regular(root, parts, flags, shown=shown)
    with os.fdopen(fd, "r+b" if flags & os.O_RDWR else "rb") as fh:
        yield fh, st, shown


def _require_directory(root: int, parts: tuple[str, ...], shown: str) -> None:
    st = confined.lstat_beneath(root, parts)
    if st is None:
        raise ToolError(f"{shown} does not exist")
    if stat.S_ISREG(st.st_mode):
        raise ToolError(f"{shown} is a file, not a directory; use read_file")


def _refuse_binary(head: bytes, shown: str, size: int) -> None:
    if b"\x00" in head[:_BINARY_SNIFF]:
        raise ToolError(f"{shown} is a binary file ({size} bytes)")


def _decode(data: bytes, shown: str) -> str:
    _refuse_binary(data, shown, len(data))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ToolError(f"{shown} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _rewrite(fh: IO[bytes], text: str) -> None:
    fh.seek(0)
    fh.truncate()
    fh.write(text.encode("utf-8"))


def _stream_lines(fh: IO[bytes], start: int, end: int | None) -> Iterator[tuple[int, str]]:
    """Lines start..end of a large file, read a line at a time; a line is cut at LINE_MAX_BYTES,
    and skipping what is cut (or the lines before start) stops at the search deadline."""
    deadline = time.monotonic() + SEARCH_SECONDS
    number = 0
    while end is None or number < end:
        raw = fh.readline(LINE_MAX_BYTES)
        if not raw:
            return
        number += 1
        if number >= start:
            yield number, raw.rstrip(b"\n").rstrip(b"\r").decode("utf-8", errors="replace")
        rest = raw
        while not rest.endswith(b"\n") and (rest := fh.readline(LINE_MAX_BYTES)):
            if time.monotonic() > deadline:
                raise ToolError(f"reading stopped after {SEARCH_SECONDS:g} s inside line {number}, which is "
                                "too long to skip; look at the file with a bash command such as head -c instead")


def _take(numbered: Iterable[tuple[int, str]], limit: int) -> tuple[list[str], int, bool]:
    """`cat -n` lines up to the output limit: the lines, the last number shown, whether more were cut."""
    out: list[str] = []
    used, last = 0, 0
    for number, text in numbered:
        line = f"{number:>6}\t{text}"
        if used + len(line) + 1 > limit and out:
            return out, last, True
        out.append(line[:limit])
        used += len(line) + 1
        last = number
        if used >= limit:
            return out, last, True  # full: reading on could mean skipping a huge line for nothing
    return out, last, False


def _snippet(text: str, position: int, new: str, context: int = 3, max_lines: int = 40) -> str:
    """Numbered lines around the first replacement, so the model sees the result."""
    lines = _lines(text)
    first = text.count("\n", 0, position)
    last = first + new.count("\n")
    start = max(first - context, 0)
    end = min(last + context, len(lines) - 1, start + max_lines - 1)
    return "\n".join(f"{n + 1:>6}\t{lines[n]}" for n in range(start, end + 1))


def _lines(text: str) -> list[str]:
    """Lines as `cat -n` counts them: split on \n only, a final newline ends the last line."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _describe_entry(entry: os.DirEntry[str], dir_fd: int) -> str:
    if entry.is_symlink():
        try:
            target = os.readlink(entry.name, dir_fd=dir_fd)
        except OSError:
            target = "?"
        return f"{entry.name} -> {target}"
    if entry.is_dir(follow_symlinks=False):
        return f"{entry.name}/"
    try:
        return f"{entry.name}  {entry.stat(follow_symlinks=False).st_size}"
    except OSError:
        return entry.name


class _Search:
    """A compiled pattern and the deadline of the call it serves."""

    def __init__(self, pattern: regex.Pattern[str], source: str, deadline: float) -> None:
        self.pattern, self.source, self.deadline = pattern, source, deadline

    def remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise ToolError(f"grep {self.source!r} stopped after {SEARCH_SECONDS:g} s (too many files); "
                            "narrow it with path or glob")
        return left

    def lines(self, text: str) -> list[tuple[int, str]]:
        hits = []
        for number, line in enumerate(_lines(text), 1):
            try:
                found = self.pattern.search(line, timeout=self.remaining())
            except TimeoutError:
                raise ToolError(f"grep {self.source!r} stopped after {SEARCH_SECONDS:g} s: the pattern backtracks "
                                "too much (nested repetition such as (a+)+); simplify it") from None
            if found:
                hits.append((number, line))
        return hits


def _grep_tree(root: int, parts: tuple[str, ...], search: _Search,
               file_glob: str | None) -> Iterator[tuple[str, list[tuple[int, str]]]]:
    """(path, hits) for each regular file under parts in sorted order, skipping VCS internals,
    symlinks, binary files and files over GREP_MAX_FILE_BYTES."""
    shown = "/".join(parts) or "."
    st = confined.lstat_beneath(root, parts)
    if st is None:
        raise ToolError(f"{shown} does not exist")
    if not stat.S_ISDIR(st.st_mode):
        fd, _ = confined.open_regular(root, parts, os.O_RDONLY, shown=shown)
        yield shown, _grep_fd(fd, search)
        return
    top = confined.open_directory(root, parts, shown=shown)
    try:
        # fwalk opens each folder relative to its parent's descriptor and never follows a symlink.
        for dirpath, dirnames, filenames, dir_fd in os.fwalk(".", dir_fd=top, follow_symlinks=False):
            search.remaining()
            dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED_DIRS)
            for name in sorted(filenames):
                rel = os.path.normpath(os.path.join(*parts, dirpath, name)) if parts else os.path.normpath(
                    os.path.join(dirpath, name))
                if file_glob and not PurePosixPath(rel).match(file_glob):
                    continue
                try:
                    fd, _ = confined.open_regular(dir_fd, (name,), os.O_RDONLY, shown=rel)
                except ToolError:
                    continue  # a symlink, FIFO, device or hard link: not searched
                yield rel, _grep_fd(fd, search)
    finally:
        os.close(top)


def _grep_fd(fd: int, search: _Search) -> list[tuple[int, str]]:
    with os.fdopen(fd, "rb") as fh:
        if os.fstat(fd).st_size > GREP_MAX_FILE_BYTES:
            return []
        data = fh.read()
    if b"\x00" in data[:_BINARY_SNIFF]:
        return []
    return search.lines(data.decode("utf-8", errors="replace"))


def _inside(path: Path, workspace: Path) -> bool:
    real = path.resolve()
    return real == workspace or workspace in real.parents


def _cap(text: str, ctx: ToolContext) -> str:
    if len(text) <= ctx.output_limit:
        return text
    return text[: ctx.output_limit] + "\n[... truncated at the output limit]"
