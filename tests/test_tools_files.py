"""File tools on a real workspace: reading ranges, listing, glob, grep, exact edits, writes, confinement."""

from __future__ import annotations

from pathlib import Path

import pytest

from overseer.agent.tools import ToolContext, ToolRegistry, ToolResult, default_registry


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "src" / "parser.py").write_text("".join(f"line {n}\n" for n in range(1, 101)))
    (root / "src" / "pkg" / "util.py").write_text("def helper():\n    return 'TODO: tidy'\n")
    (root / "README.md").write_text("# Demo\nSee src/parser.py. todo: docs\n")
    (root / "data.bin").write_bytes(b"\x00\x01TODO\x02")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("TODO in git internals\n")
    (tmp_path / "secret.txt").write_text("TODO outside\n")
    return root


@pytest.fixture
def ctx(workspace: Path) -> ToolContext:
    return ToolContext(workspace=workspace)


@pytest.fixture
def tools() -> ToolRegistry:
    return default_registry()


async def call(tools: ToolRegistry, ctx: ToolContext, name: str, **input: object) -> ToolResult:
    return await tools.run(name, input, ctx)


async def test_read_file_numbers_lines_like_cat_n(tools: ToolRegistry, ctx: ToolContext) -> None:
    result = await call(tools, ctx, "read_file", path="src/pkg/util.py")
    assert not result.is_error
    assert result.content == "     1\tdef helper():\n     2\t    return 'TODO: tidy'"
    assert result.summary == "read src/pkg/util.py lines 1-2"


async def test_read_file_reads_a_range(tools: ToolRegistry, ctx: ToolContext) -> None:
    result = await call(tools, ctx, "read_file", path="src/parser.py", start_line=10, end_line=12)
    assert result.content == "    10\tline 10\n    11\tline 11\n    12\tline 12"
    assert result.summary == "read src/parser.py lines 10-12"


async def test_read_file_past_the_end_is_an_error(tools: ToolRegistry, ctx: ToolContext) -> None:
    result = await call(tools, ctx, "read_file", path="src/parser.py", start_line=500)
    assert result.is_error and "past the end of src/parser.py (100 lines)" in result.content


async def test_read_file_truncates_at_the_output_limit_and_says_where_to_go_on(
        tools: ToolRegistry, workspace: Path) -> None:
    ctx = ToolContext(workspace=workspace, output_limit=200)
    result = await call(tools, ctx, "read_file", path="src/parser.py")
    assert len(result.content) < 400
    assert "[truncated at the output limit: showing lines 1-13 of 100; read on with start_line=14]" in result.content


async def test_read_file_refuses_binary_files_and_directories(tools: ToolRegistry, ctx: ToolContext) -> None:
    binary = await call(tools, ctx, "read_file", path="data.bin")
    directory = await call(tools, ctx, "read_file", path="src")
    missing = await call(tools, ctx, "read_file", path="nope.py")
    assert binary.is_error and "binary file" in binary.content
    assert directory.is_error and "is a directory" in directory.content
    assert missing.is_error and "does not exist" in missing.content


@pytest.mark.parametrize("path", ["../secret.txt", "/etc/hostname", "src/../../secret.txt"])
async def test_file_tools_cannot_leave_the_workspace(tools: ToolRegistry, ctx: ToolContext, path: str) -> None:
    for name, extra in [("read_file", {}), ("write_file", {"content": "x"}), ("list_directory", {}),
                        ("edit_file", {"old_string": "TODO", "new_string": "DONE"}), ("grep", {"pattern": "x"})]:
        result = await call(tools, ctx, name, path=path, **extra)
        assert result.is_error, name
        assert "workspace" in result.content, name
    assert (ctx.workspace.parent / "secret.txt").read_text() == "TODO outside\n"


async def test_file_tools_do_not_follow_symlinks_out(tools: ToolRegistry, ctx: ToolContext) -> None:
    (ctx.workspace / "link").symlink_to(ctx.workspace.parent / "secret.txt")
    read = await call(tools, ctx, "read_file", path="link")
    write = await call(tools, ctx, "write_file", path="link", content="pwned")
    assert read.is_error and "through a symlink" in read.content
    assert write.is_error
    assert (ctx.workspace.parent / "secret.txt").read_text() == "TODO outside\n"


async def test_list_directory_marks_directories_and_sizes(tools: ToolRegistry, ctx: ToolContext) -> None:
    result = await call(tools, ctx, "list_directory", path="src")
    assert result.content == "parser.py  792\npkg/"
    root = await call(tools, ctx, "list_directory")
    assert ".git/" in root.content.splitlines() and "README.md  37" in root.content.splitlines()


async def test_glob_returns_sorted_workspace_paths(tools: ToolRegistry, ctx: ToolContext) -> None:
    result = await call(tools, ctx, "glob", pattern="**/*.py")
    assert result.content == "src/parser.py\nsrc/pkg/util.py"
    assert result.summary == "glob **/*.py: 2 matches"
    none = await call(tools, ctx, "glob", pattern="*.rs")
    assert not none.is_error and none.content == "No paths match *.rs."


async def test_glob_is_capped(tools: ToolRegistry, ctx: ToolContext) -> None:
    many = ctx.workspace / "many"
    many.mkdir()
    for n in range(520):
        (many / f"f{n:03}.txt").touch()
    result = await call(tools, ctx, "glob", pattern="many/*.txt")
    lines = result.content.splitlines()
    assert lines[0] == "many/f000.txt" and len(lines) == 501
    assert lines[-1] == "[... and 20 more; narrow the pattern]"


async def test_glob_patterns_cannot_leave_the_workspace(tools: ToolRegistry, ctx: ToolContext) -> None:
    for pattern in ("../*", "/etc/*"):
        result = await call(tools, ctx, "glob", pattern=pattern)
        assert result.is_error and "leaves the workspace" in result.content


async def test_grep_finds_lines_and_skips_binary_and_git(tools: ToolRegistry, ctx: ToolContext) -> None:
    result = await call(tools, ctx, "grep", pattern=r"TODO")
    assert result.content == "src/pkg/util.py:2:     return 'TODO: tidy'"
    insensitive = await call(tools, ctx, "grep", pattern="todo", case_insensitive=True)
    assert insensitive.content.splitlines() == ["README.md:2: See src/parser.py. todo: docs",
                                                "src/pkg/util.py:2:     return 'TODO: tidy'"]


async def test_grep_filters_by_path_and_glob(tools: ToolRegistry, ctx: ToolContext) -> None:
    by_glob = await call(tools, ctx, "grep", pattern="parser", glob="*.md")
    by_path = await call(tools, ctx, "grep", pattern=r"^line 9\d$", path="src/parser.py")
    assert by_glob.content == "README.md:2: See src/parser.py. todo: docs"
    assert by_path.content.splitlines()[0] == "src/parser.py:90: line 90"
    assert len(by_path.content.splitlines()) == 10


async def test_grep_is_capped_and_reports_bad_patterns(tools: ToolRegistry, ctx: ToolContext) -> None:
    (ctx.workspace / "big.txt").write_text("match\n" * 250)
    capped = await call(tools, ctx, "grep", pattern="match", path="big.txt")
    lines = capped.content.splitlines()
    assert len(lines) == 201 and lines[-1].startswith("[... 50 more matches")
    bad = await call(tools, ctx, "grep", pattern="(unclosed")
    assert bad.is_error and "invalid regular expression" in bad.content


async def test_edit_replaces_a_unique_string(tools: ToolRegistry, ctx: ToolContext) -> None:
    result = await call(tools, ctx, "edit_file", path="src/pkg/util.py", old_string="'TODO: tidy'",
                        new_string="'done'")
    assert not result.is_error
    assert result.content.startswith("Replaced 1 occurrence in src/pkg/util.py.")
    assert "     2\t    return 'done'" in result.content
    assert (ctx.workspace / "src/pkg/util.py").read_text() == "def helper():\n    return 'done'\n"


async def test_edit_fails_clearly_when_the_string_is_missing(tools: ToolRegistry, ctx: ToolContext) -> None:
    result = await call(tools, ctx, "edit_file", path="src/pkg/util.py", old_string="return None",
                        new_string="return 1")
    assert result.is_error and "not found in src/pkg/util.py (0 matches)" in result.content


async def test_edit_refuses_an_ambiguous_string_unless_replace_all(tools: ToolRegistry, ctx: ToolContext) -> None:
    path = ctx.workspace / "src/parser.py"
    before = path.read_text()
    ambiguous = await call(tools, ctx, "edit_file", path="src/parser.py", old_string="line 1", new_string="L1")
    assert ambiguous.is_error and "appears 12 times in src/parser.py" in ambiguous.content
    assert path.read_text() == before
    everywhere = await call(tools, ctx, "edit_file", path="src/parser.py", old_string="line 1",
                            new_string="L1", replace_all=True)
    assert not everywhere.is_error and everywhere.summary == "edited src/parser.py (12 occurrences)"
    assert path.read_text().count("L1") == 12 and "line 1" not in path.read_text()


async def test_edit_keeps_windows_line_endings(tools: ToolRegistry, ctx: ToolContext) -> None:
    path = ctx.workspace / "win.txt"
    path.write_bytes(b"a\r\nb\r\nc\r\n")
    result = await call(tools, ctx, "edit_file", path="win.txt", old_string="a\nb", new_string="x\ny")
    assert not result.is_error
    assert path.read_bytes() == b"x\r\ny\r\nc\r\n"


async def test_write_creates_parents_and_overwrites(tools: ToolRegistry, ctx: ToolContext) -> None:
    created = await call(tools, ctx, "write_file", path="new/deep/file.txt", content="one\ntwo\n")
    assert created.content == "Created new/deep/file.txt (2 lines, 8 bytes)."
    assert created.risk == "low"
    overwritten = await call(tools, ctx, "write_file", path="new/deep/file.txt", content="three")
    assert overwritten.content == "Overwrote new/deep/file.txt (1 lines, 5 bytes)."
    assert (ctx.workspace / "new/deep/file.txt").read_text() == "three"


def test_overwriting_a_file_is_medium_risk_and_creating_one_low(tools: ToolRegistry, ctx: ToolContext) -> None:
    assert tools.assess("write_file", {"path": "README.md", "content": ""}, ctx).risk == "medium"
    assert tools.assess("write_file", {"path": "NEW.md", "content": ""}, ctx).risk == "low"
    assert tools.assess("edit_file", {"path": "README.md", "old_string": "a", "new_string": "b"}, ctx).risk == "low"
    assert tools.assess("read_file", {"path": "README.md"}, ctx).risk == "low"


def test_only_the_tools_that_read_are_without_side_effects(tools: ToolRegistry, ctx: ToolContext) -> None:
    reads = {"read_file": {"path": "README.md"}, "list_directory": {}, "glob": {"pattern": "*.md"},
             "grep": {"pattern": "x"}}
    writes = {"write_file": {"path": "NEW.md", "content": ""},
              "edit_file": {"path": "README.md", "old_string": "a", "new_string": "b"}}
    assert all(tools.validate(name, args) is None for name, args in (reads | writes).items())
    assert not any(tools.assess(name, args, ctx).side_effects for name, args in reads.items())
    assert all(tools.assess(name, args, ctx).side_effects for name, args in writes.items())
