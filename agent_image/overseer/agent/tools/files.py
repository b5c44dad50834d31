"""File tools: read, list, glob, grep, edit and write, all confined to the workspace.

Risk: reads are low. `edit_file` is low: the call carries the exact change. `write_file`
is low when it creates a file and medium when it overwrites one, since the call does not
show what it throws away.
"""

from __future__ import annotations

import asyncio
import os
import re
from abc import abstractmethod
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from .base import (
    Assessment,
    Tool,
    ToolContext,
    ToolError,
    ToolResult,
    WorkspaceError,
    display_path,
    resolve_in_workspace,
)

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
        path = _existing_file(ctx, input["path"])
        shown = display_path(ctx, path)
        lines = _lines(_read_text(path, shown))
        total = len(lines)
        start = input.get("start_line", 1)
        end = input.get("end_line", max(total, start))
        if end < start:
            raise ToolError(f"end_line {end} is before start_line {start}")
        if total == 0:
            return ToolResult(f"({shown} is empty)", summary=f"read {shown} (empty)")
        if start > total:
            raise ToolError(f"start_line {start} is past the end of {shown} ({total} lines)")
        end = min(end, total)
        out: list[str] = []
        used = 0
        last = start - 1
        for number in range(start, end + 1):
            line = f"{number:>6}\t{lines[number - 1]}"
            if used + len(line) + 1 > ctx.output_limit and out:
                break
            out.append(line[: ctx.output_limit])
            used += len(line) + 1
            last = number
        body = "\n".join(out)
        if last < end:
            body += (f"\n[truncated at the output limit: showing lines {start}-{last} of {total}; "
                     f"read on with start_line={last + 1}]")
        elif end < total and "end_line" not in input:
            body += f"\n[{total - end} more lines]"
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
        path = resolve_in_workspace(ctx, input.get("path") or ".")
        shown = display_path(ctx, path)
        if not path.exists():
            raise ToolError(f"{shown} does not exist")
        if not path.is_dir():
            raise ToolError(f"{shown} is a file, not a directory; use read_file")
        entries = sorted(os.scandir(path), key=lambda e: e.name)
        lines = [_describe_entry(entry) for entry in entries[:LIST_LIMIT]]
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
        found: list[str] = []
        for match in workspace.glob(pattern):
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
        flags = re.IGNORECASE if input.get("case_insensitive") else 0
        try:
            regex = re.compile(input["pattern"], flags)
        except re.error as exc:
            raise ToolError(f"invalid regular expression {input['pattern']!r}: {exc}") from None
        root = resolve_in_workspace(ctx, input.get("path") or ".")
        if not root.exists():
            raise ToolError(f"{display_path(ctx, root)} does not exist")
        workspace = ctx.workspace.resolve()
        file_glob = input.get("glob")
        matches: list[str] = []
        total = 0
        files_with_matches = 0
        for file in _walk_files(root, workspace):
            rel = display_path(ctx, file)
            if file_glob and not PurePosixPath(rel).match(file_glob):
                continue
            hits = _grep_file(file, regex)
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
        path = _existing_file(ctx, input["path"], hint="; use write_file to create it")
        shown = display_path(ctx, path)
        old, new = input["old_string"], input["new_string"]
        if old == new:
            raise ToolError("old_string and new_string are identical; nothing to change")
        text = _read_text(path, shown)
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
        _write_text(path, updated)
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
            path = resolve_in_workspace(ctx, input["path"])
        except WorkspaceError as exc:
            return Assessment("low", f"{exc}; the call will be refused")
        if path.is_file():
            return Assessment("medium", f"overwrites {display_path(ctx, path)} ({path.stat().st_size} bytes)")
        return Assessment("low", f"creates {display_path(ctx, path)} inside the workspace")

    def run_sync(self, input: Mapping[str, Any], ctx: ToolContext) -> ToolResult:
        path = resolve_in_workspace(ctx, input["path"])
        shown = display_path(ctx, path)
        if path.is_dir():
            raise ToolError(f"{shown} is a directory")
        existed = path.exists()
        path.parent.mkdir(parents=True, exist_ok=True)
        content = input["content"]
        _write_text(path, content)
        lines = content.count("\n") + (0 if content.endswith("\n") or not content else 1)
        size = len(content.encode("utf-8"))
        verb = "Overwrote" if existed else "Created"
        return ToolResult(f"{verb} {shown} ({lines} lines, {size} bytes).",
                          summary=f"{verb.lower()} {shown} ({lines} lines)")


FILE_TOOLS: tuple[type[Tool], ...] = (ReadFile, ListDirectory, Glob, Grep, EditFile, WriteFile)


def _existing_file(ctx: ToolContext, raw: str, hint: str = "") -> Path:
    path = resolve_in_workspace(ctx, raw)
    if not path.exists():
        raise ToolError(f"{raw} does not exist in the workspace{hint}")
    if path.is_dir():
        raise ToolError(f"{raw} is a directory; use list_directory")
    return path


def _read_text(path: Path, shown: str) -> str:
    data = path.read_bytes()
    if b"\x00" in data[:_BINARY_SNIFF]:
        raise ToolError(f"{shown} is a binary file ({len(data)} bytes)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ToolError(f"{shown} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)


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


def _describe_entry(entry: os.DirEntry[str]) -> str:
    if entry.is_symlink():
        try:
            target = os.readlink(entry.path)
        except OSError:
            target = "?"
        return f"{entry.name} -> {target}"
    if entry.is_dir():
        return f"{entry.name}/"
    try:
        return f"{entry.name}  {entry.stat().st_size}"
    except OSError:
        return entry.name


def _walk_files(root: Path, workspace: Path) -> Iterator[Path]:
    """Files under root in sorted order, skipping VCS internals and anything outside the workspace."""
    if root.is_file():
        yield root
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED_DIRS)
        for name in sorted(filenames):
            file = Path(dirpath, name)
            if file.is_symlink() and not _inside(file, workspace):
                continue
            yield file


def _grep_file(file: Path, regex: re.Pattern[str]) -> list[tuple[int, str]]:
    try:
        if not file.is_file() or file.stat().st_size > GREP_MAX_FILE_BYTES:
            return []
        data = file.read_bytes()
    except OSError:
        return []
    if b"\x00" in data[:_BINARY_SNIFF]:
        return []
    text = data.decode("utf-8", errors="replace")
    return [(n, line) for n, line in enumerate(_lines(text), 1) if regex.search(line)]


def _inside(path: Path, workspace: Path) -> bool:
    real = path.resolve()
    return real == workspace or workspace in real.parents


def _cap(text: str, ctx: ToolContext) -> str:
    if len(text) <= ctx.output_limit:
        return text
    return text[: ctx.output_limit] + "\n[... truncated at the output limit]"
