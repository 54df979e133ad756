"""What the local storage's writer, reader and sweep share: the layout's names,
the flags a stored file is opened with, and the one mapping of OS errors.

A full disk is the client's 507; a file system that refuses writes (mounted
read-only, or permissions taken away) is 503, since nothing the client sends
can fix it and the operator can; anything else stays a plain storage error.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from collections.abc import Callable
from pathlib import Path

from .base import StorageError, StorageFull, StorageUnavailable

META_DIR = ".meta"
META_XATTR = "user.streamproxy"  # a stored file's metadata, where extended attributes exist
TMP_DIR = ".tmp"
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC  # a stored file, never a link
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_REFUSED_ERRNOS = {errno.EROFS, errno.EACCES}
# No such attribute, or none on this file system (or on links: Linux refuses user.*).
_NO_ATTRIBUTE = {errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM}


def storage_error(error: OSError, doing: str) -> StorageError:
    """The storage error for an OS error met while `doing` something on the write path."""
    if error.errno in _FULL_ERRNOS:
        return StorageFull(f"no space left while {doing}: {error.strerror}")
    if error.errno in _REFUSED_ERRNOS:
        return StorageUnavailable(f"{doing} failed: {error.strerror}")
    return StorageError(f"{doing} failed: {error.strerror}")


def read_attached(file: int | Path) -> bytes | None:
    """The metadata in a stored file's extended attribute (a descriptor, or a path that
    is not followed if it is a link); None when it has none there."""
    try:
        if isinstance(file, int):
            return os.getxattr(file, META_XATTR)
        return os.getxattr(file, META_XATTR, follow_symlinks=False)
    except OSError as error:
        if error.errno in _NO_ATTRIBUTE:
            return None
        raise


def fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def mtime(entry: os.DirEntry[str]) -> float:
    """An entry's mtime; one removed since the listing (a finished upload) counts as new."""
    try:
        return entry.stat().st_mtime
    except FileNotFoundError:
        return float("inf")


SYNC_FILE_RANGE_WAIT_BEFORE = 1
SYNC_FILE_RANGE_WRITE = 2  # start writing back, do not wait
SYNC_FILE_RANGE_WAIT_AFTER = 4


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """Linux's sync_file_range(2), which Python's os module does not offer: (fd, offset,
    length, flags); advisory, a failure changes nothing."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        function = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    return function


sync_file_range = _load_sync_file_range()


def _start_writeback(fd: int, offset: int, length: int) -> None:
    assert sync_file_range is not None
    sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WRITE)


# With fsync on, a big upload's bytes (and a resumable append's) are sent to disk as
# they arrive, so the final fsync finds little left to write instead of the whole file.
start_writeback: Callable[[int, int, int], None] | None = (
    _start_writeback if sync_file_range is not None else None
)
WRITEBACK_EVERY = 8 * 1024 * 1024
