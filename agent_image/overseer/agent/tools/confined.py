"""Files opened inside the workspace and nowhere else, whatever runs beside the tools.

A check on a path followed by an open of that path can be raced: a bash command in the
background swaps a directory for a symlink in between. So nothing here checks a path and then
opens it. Every path is opened relative to a descriptor of the workspace, with the kernel
refusing symlinks on the way: `openat2` with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS where the
kernel has it (Linux 5.6+, probed once), else one `openat` per component with O_NOFOLLOW.
What was opened is then judged by `fstat` of the descriptor itself: only regular files, and
only those with one name (a hard link to a file outside the workspace shares its inode, so
reading or editing it would reach outside). O_NONBLOCK keeps a FIFO from blocking the open.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path, PurePosixPath

from .base import ToolError, WorkspaceError

class MissingError(ToolError):
    """The path, or a folder on the way, does not exist."""


_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC

# openat2(2): struct open_how and the RESOLVE_* flags from linux/openat2.h.
_SYS_OPENAT2 = 437  # the same number on every architecture (a syscall added after the unification)
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_BENEATH = 0x08


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)


def _openat2(dir_fd: int, path: str, flags: int, mode: int = 0) -> int:
    how = _OpenHow(flags, mode if flags & os.O_CREAT else 0,
                   _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS | _RESOLVE_NO_MAGICLINKS)
    fd = _libc.syscall(_SYS_OPENAT2, dir_fd, os.fsencode(path), ctypes.byref(how), ctypes.sizeof(how))
    if fd < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), path)
    return int(fd)


@cache
def has_openat2() -> bool:
    """Whether this kernel (and its seccomp profile) allows openat2."""
    try:
        os.close(_openat2(-100, ".", os.O_PATH | os.O_CLOEXEC))  # AT_FDCWD
    except OSError:
        return False
    return True


def relative_parts(workspace: Path, raw: str) -> tuple[str, ...]:
    """The components of `raw` below the workspace (empty for the workspace itself). Absolute
    paths are taken when they lie inside it; anything that climbs out is refused."""
    if "\x00" in raw:
        raise WorkspaceError(f"path {raw!r} contains a NUL byte")
    given = PurePosixPath(os.path.expanduser(raw) if raw.startswith("~") else raw)
    if given.is_absolute():
        for root in (workspace.absolute(), workspace.resolve()):
            try:
                given = PurePosixPath(os.path.normpath(given)).relative_to(root)
                break
            except ValueError:
                continue
        else:
            raise WorkspaceError(f"path {raw} is outside the workspace {workspace}; use a path inside it")
    parts = PurePosixPath(os.path.normpath(given)).parts
    if parts[:1] == ("..",):
        raise WorkspaceError(f"path {raw} escapes the workspace {workspace}; use a path inside it")
    return tuple(p for p in parts if p != ".")


@contextmanager
def workspace_fd(workspace: Path) -> Iterator[int]:
    """A descriptor of the workspace folder itself, closed on exit."""
    fd = os.open(workspace, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


def open_beneath(root: int, parts: tuple[str, ...], flags: int, mode: int = 0o644, *,
                 shown: str = "") -> int:
    """Open parts relative to the root descriptor, following no symlink anywhere on the way."""
    shown = shown or "/".join(parts) or "."
    if not parts:
        return os.open(".", flags & ~os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=root)
    try:
        if has_openat2():
            try:
                return _openat2(root, "/".join(parts), flags | os.O_CLOEXEC, mode)
            except BlockingIOError:
                pass  # EAGAIN: a rename somewhere raced the lookup; the walk is as safe and cannot be starved
        return _open_walking(root, parts, flags | os.O_CLOEXEC, mode)
    except OSError as exc:
        raise _explain(exc, root, parts, shown) from None


def _open_walking(root: int, parts: tuple[str, ...], flags: int, mode: int) -> int:
    fd = root
    try:
        for name in parts[:-1]:
            step = os.open(name, _DIR_FLAGS, dir_fd=fd)
            if fd != root:
                os.close(fd)
            fd = step
        return os.open(parts[-1], flags | os.O_NOFOLLOW, mode, dir_fd=fd)
    finally:
        if fd != root:
            os.close(fd)


def _explain(exc: OSError, root: int, parts: tuple[str, ...], shown: str) -> ToolError:
    """The error of a refused open, in the model's terms; a symlink on the way is named."""
    if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EXDEV):
        for depth in range(1, len(parts) + 1):
            try:
                st = os.stat("/".join(parts[:depth]), dir_fd=root, follow_symlinks=False)
            except OSError:
                break
            if stat.S_ISLNK(st.st_mode):
                return WorkspaceError(f"path {shown} goes through a symlink ({'/'.join(parts[:depth])}); "
                                      "file tools do not follow symlinks: use the path it points to")
        if exc.errno == errno.ENOTDIR:
            return ToolError(f"a component of {shown} is a file, not a directory")
        return WorkspaceError(f"path {shown} goes through a symlink; file tools do not follow symlinks")
    if exc.errno == errno.ENOENT:
        return MissingError(f"{shown} does not exist in the workspace")
    if exc.errno == errno.EISDIR:
        return ToolError(f"{shown} is a directory; use list_directory")
    if exc.errno == errno.ENXIO:
        return ToolError(f"{shown} is a FIFO or socket; file tools read and write regular files only")
    return ToolError(f"cannot open {shown}: {exc.strerror}")


def check_regular(fd: int, shown: str) -> os.stat_result:
    """The descriptor's stat, if it is a regular file with a single name; else a tool error."""
    st = os.fstat(fd)
    if stat.S_ISDIR(st.st_mode):
        raise ToolError(f"{shown} is a directory; use list_directory")
    if not stat.S_ISREG(st.st_mode):
        kind = ("a FIFO" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode)
                else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "not a regular file")
        raise ToolError(f"{shown} is {kind}; file tools read and write regular files only")
    if st.st_nlink > 1:
        raise WorkspaceError(f"{shown} has {st.st_nlink} hard links; file tools refuse files with more than one "
                             "name, since another name may be outside the workspace (copy it to a new file first)")
    return st


def open_regular(root: int, parts: tuple[str, ...], flags: int, mode: int = 0o644, *,
                 shown: str = "") -> tuple[int, os.stat_result]:
    """A regular, singly-linked file opened beneath root, and its stat."""
    shown = shown or "/".join(parts) or "."
    fd = open_beneath(root, parts, flags | _FILE_FLAGS, mode, shown=shown)
    try:
        st = check_regular(fd, shown)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def open_directory(root: int, parts: tuple[str, ...], *, create: bool = False, shown: str = "") -> int:
    """A readable descriptor of the directory parts beneath root; with create, made as needed."""
    shown = shown or "/".join(parts) or "."
    if create:
        for depth in range(1, len(parts) + 1):
            parent = open_directory(root, parts[:depth - 1], shown=shown)
            try:
                os.mkdir(parts[depth - 1], dir_fd=parent)
            except FileExistsError:
                pass  # a symlink here is refused by the open below
            finally:
                os.close(parent)
    fd = open_beneath(root, parts, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, shown=shown)
    return fd


def lstat_beneath(root: int, parts: tuple[str, ...]) -> os.stat_result | None:
    """The entry's own stat (a symlink is not followed), or None when it or its folder is missing.
    A symlink on the way to it is a WorkspaceError."""
    if not parts:
        return os.fstat(root)
    try:
        parent = open_beneath(root, parts[:-1], os.O_PATH | os.O_DIRECTORY) if parts[:-1] else os.dup(root)
    except MissingError:
        return None
    try:
        return os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
    except OSError:
        return None
    finally:
        os.close(parent)
