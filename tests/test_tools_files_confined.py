"""File tools against an attacker in the same workspace: raced symlinks, hard links, FIFOs,
devices, huge files and catastrophic regular expressions."""

from __future__ import annotations

import os
import resource
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from overseer.agent.tools import ToolContext, ToolRegistry, ToolResult, confined, default_registry, files
from overseer.agent.tools.files import ReadFile

SECRET = "canary-outside-the-workspace"


@pytest.fixture(params=["openat2", "openat-walk"])
def resolver(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways of opening beneath the workspace: the kernel's openat2, and the component walk."""
    if request.param == "openat2" and not confined.has_openat2():
        pytest.skip("this kernel has no openat2")
    if request.param == "openat-walk":
        monkeypatch.setattr(confined, "has_openat2", lambda: False)
    return str(request.param)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "f.txt").write_text(SECRET + "\n")
    return folder


@pytest.fixture
def ctx(tmp_path: Path) -> ToolContext:
    workspace = tmp_path / "ws"
    (workspace / "d").mkdir(parents=True)
    (workspace / "d" / "f.txt").write_text("inside\n")
    return ToolContext(workspace=workspace)


@pytest.fixture
def tools() -> ToolRegistry:
    return default_registry()


async def call(tools: ToolRegistry, ctx: ToolContext, name: str, **input: object) -> ToolResult:
    return await tools.run(name, input, ctx)


def test_a_directory_swapped_for_a_symlink_while_reading_never_leads_out(
        resolver: str, ctx: ToolContext, outside: Path) -> None:
    stop = threading.Event()
    real, parked = ctx.workspace / "d", ctx.workspace / "d-parked"

    def swap() -> None:
        while not stop.is_set():
            real.rename(parked)
            real.symlink_to(outside)
            real.unlink()
            parked.rename(real)
            # The real folder stays a moment too: a swapper that never rests can keep a loaded
            # machine's reader from ever seeing it, and then nothing raced.
            time.sleep(0.0002)

    swapper = threading.Thread(target=swap)
    swapper.start()
    escapes = refused = read = 0
    try:
        for _ in range(3000):
            try:
                result = ReadFile().run_sync({"path": "d/f.txt"}, ctx)
            except Exception:  # noqa: BLE001 - refused or missing mid-swap: both fine
                refused += 1
                continue
            read += 1
            escapes += SECRET in result.content
    finally:
        stop.set()
        swapper.join()
    assert escapes == 0
    assert refused > 0 and read > 0, "the swap must have raced the reads both ways"


async def test_a_hard_link_to_a_file_outside_is_neither_read_nor_edited(
        resolver: str, tools: ToolRegistry, ctx: ToolContext, outside: Path) -> None:
    os.link(outside / "f.txt", ctx.workspace / "linked.txt")
    read = await call(tools, ctx, "read_file", path="linked.txt")
    edit = await call(tools, ctx, "edit_file", path="linked.txt", old_string="canary", new_string="owned")
    write = await call(tools, ctx, "write_file", path="linked.txt", content="owned")
    grep = await call(tools, ctx, "grep", pattern="canary")
    for result in (read, edit, write):
        assert result.is_error and "hard links" in result.content
    assert "No matches" in grep.content
    assert (outside / "f.txt").read_text() == SECRET + "\n"


@pytest.mark.timeout(20)
async def test_a_fifo_is_refused_without_blocking(resolver: str, tools: ToolRegistry, ctx: ToolContext) -> None:
    os.mkfifo(ctx.workspace / "pipe")
    read = await call(tools, ctx, "read_file", path="pipe")
    write = await call(tools, ctx, "write_file", path="pipe", content="x")
    grep = await call(tools, ctx, "grep", pattern="x")
    assert read.is_error and "is a FIFO" in read.content
    assert write.is_error and "FIFO" in write.content
    assert "No matches" in grep.content


@pytest.mark.timeout(20)
async def test_a_device_in_the_workspace_is_refused(tools: ToolRegistry, ctx: ToolContext) -> None:
    try:
        os.mknod(ctx.workspace / "zero", 0o666 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero
    except PermissionError:
        pytest.skip("creating a device node needs CAP_MKNOD")
    read = await call(tools, ctx, "read_file", path="zero")
    grep = await call(tools, ctx, "grep", pattern="x")
    assert read.is_error and "is a device" in read.content
    assert "No matches" in grep.content


async def test_a_symlink_to_dev_zero_is_refused(tools: ToolRegistry, ctx: ToolContext) -> None:
    (ctx.workspace / "zero").symlink_to("/dev/zero")
    read = await call(tools, ctx, "read_file", path="zero")
    assert read.is_error and "symlink" in read.content


@pytest.fixture
def sparse(ctx: ToolContext) -> Iterator[Path]:
    """A 3 GiB file that costs almost no disk: 3,000 text lines, then a hole."""
    path = ctx.workspace / "huge.log"
    with open(path, "wb") as fh:
        fh.write(b"first\nsecond\nthird\n" * 1000)
        fh.truncate(3 * 1024**3)
    yield path
    path.unlink()


async def test_a_3_gib_file_is_read_by_range_only_and_without_loading_it(
        tools: ToolRegistry, ctx: ToolContext, sparse: Path) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    whole = await call(tools, ctx, "read_file", path="huge.log")
    part = await call(tools, ctx, "read_file", path="huge.log", start_line=2, end_line=3)
    started = time.monotonic()
    into_the_hole = await call(tools, ctx, "read_file", path="huge.log", start_line=2999)
    seconds = time.monotonic() - started
    grep = await call(tools, ctx, "grep", pattern="second")
    edit = await call(tools, ctx, "edit_file", path="huge.log", old_string="first", new_string="1st")
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert whole.is_error
    assert f"over the {files.READ_MAX_BYTES}-byte limit" in whole.content and "start_line and end_line" in whole.content
    assert part.content == "     2\tsecond\n     3\tthird"
    assert into_the_hole.content.startswith("  2999\tsecond\n  3000\tthird\n")
    assert "read on with start_line=3001" in into_the_hole.content and seconds < 5, seconds
    assert "No matches" in grep.content  # over grep's size limit: skipped
    assert edit.is_error and "limit of edit_file" in edit.content
    assert grown_kib < 200_000, f"reading grew the process by {grown_kib} KiB"


@pytest.mark.timeout(60)
async def test_a_catastrophic_regular_expression_ends_with_a_tool_error(
        tools: ToolRegistry, ctx: ToolContext, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(files, "SEARCH_SECONDS", 1.0)
    (ctx.workspace / "input.txt").write_text("a" * 40 + "b\n")
    started = time.monotonic()
    result = await call(tools, ctx, "grep", pattern=r"(a|aa)+$")
    assert result.is_error and "backtracks too much" in result.content
    assert time.monotonic() - started < 30


async def test_a_search_of_a_huge_tree_ends_at_its_deadline(
        tools: ToolRegistry, ctx: ToolContext, monkeypatch: pytest.MonkeyPatch) -> None:
    for n in range(300):
        folder = ctx.workspace / "tree" / f"d{n}"
        folder.mkdir(parents=True)
        (folder / "f.txt").write_text("nothing here\n")
    monkeypatch.setattr(files, "SEARCH_SECONDS", 0.0)
    result = await call(tools, ctx, "grep", pattern="needle")
    assert result.is_error and "narrow it with path or glob" in result.content


async def test_symlinks_inside_the_workspace_are_not_followed_either(
        resolver: str, tools: ToolRegistry, ctx: ToolContext) -> None:
    (ctx.workspace / "alias").symlink_to(ctx.workspace / "d")
    read = await call(tools, ctx, "read_file", path="alias/f.txt")
    assert read.is_error and "goes through a symlink (alias)" in read.content
    listing = await call(tools, ctx, "list_directory")
    assert f"alias -> {ctx.workspace / 'd'}" in listing.content.splitlines()
