"""Reading local storage back: open and stat, through the cache of recent files.

A small file is read whole with its metadata and handed out as `InMemoryFile`;
a larger one stays an open descriptor (`LocalFileHandle`), which pins the inode
for the whole download and lets the download sendfile from it.
"""

from __future__ import annotations

import asyncio
import errno
import os
import stat as stat_module
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import IO, Any, TypeVar

from .base import (
    FileInfo,
    FileMissing,
    InMemoryContent,
    LocalFileSource,
    StorageError,
    StoredMeta,
)
from .localfs import META_DIR, READ_FLAGS, read_attached
from .smallfiles import SMALL_FILE, CachedFile, Identity, SmallFileCache

_T = TypeVar("_T")
RunBlocking = Callable[..., asyncio.Future[Any]]
_NOT_A_STORED_FILE = {errno.ELOOP, errno.EISDIR, errno.ENAMETOOLONG, errno.ENOTDIR}


class InMemoryFile(InMemoryContent):
    """A stored file small enough to have been read whole."""

    def __init__(self, meta: StoredMeta, content: bytes) -> None:
        self.meta = meta
        self.content = content

    def close(self) -> None:
        pass

    async def chunks(self, start: int, length: int) -> AsyncIterator[bytes]:
        yield self.content[start : start + length]


class LocalFileHandle(LocalFileSource):
    """An open stored file, read on the storage's threads when not sent by sendfile."""

    def __init__(
        self, meta: StoredMeta, local_file: IO[bytes], run_blocking: RunBlocking, chunk_size: int
    ) -> None:
        self.meta = meta
        self.local_file = local_file
        self._run_blocking = run_blocking
        self._chunk_size = chunk_size

    def close(self) -> None:
        self.local_file.close()

    async def chunks(self, start: int, length: int) -> AsyncIterator[bytes]:
        offset, remaining = start, length
        while remaining > 0:
            size = min(self._chunk_size, remaining)
            fd = self.local_file.fileno()
            data: bytes = await self._run_blocking(os.pread, fd, size, offset)
            if not data:
                raise StorageError("the file is shorter than its metadata says")
            offset += len(data)
            remaining -= len(data)
            yield data


OpenedFile = InMemoryFile | LocalFileHandle


class Opening:
    """`LocalReader.open(name)`: from the cache on the loop, else on a storage thread
    (then cached); closed on the way out. A class rather than an
    `asynccontextmanager`: every download passes here."""

    __slots__ = ("_name", "_opened", "_reader")

    def __init__(self, reader: LocalReader, name: str) -> None:
        self._reader = reader
        self._name = name
        self._opened: OpenedFile | None = None

    async def __aenter__(self) -> OpenedFile:
        reader, name = self._reader, self._name
        opened = reader.cached(name)
        if opened is None:
            opened = await reader.open_uncached(name)
        self._opened = opened
        return opened

    async def __aexit__(self, *_: object) -> None:
        if self._opened is not None:
            self._opened.close()


class LocalReader:
    """Opens stored files and their metadata; keeps recent ones in a `SmallFileCache`."""

    def __init__(
        self, root: Path, *, run_blocking: RunBlocking, chunk_size: int, cache_size: int
    ) -> None:
        self.root = root
        self._prefix = f"{root}{os.sep}"  # + a stored name (never a path): on the hot path
        self.meta_dir = root / META_DIR
        self._run_blocking = run_blocking
        self._chunk_size = chunk_size
        self._cache = SmallFileCache(cache_size) if cache_size else None

    def forget(self, name: str) -> None:
        """Drop a deleted file from the cache at once (other processes' caches see the
        file gone on their next stat of the path)."""
        if self._cache is not None:
            self._cache.discard(name)

    def _handle(self, meta: StoredMeta, file: IO[bytes]) -> LocalFileHandle:
        return LocalFileHandle(meta, file, self._run_blocking, self._chunk_size)

    def _read_meta_sync(self, name: str, fd: int | None = None) -> FileInfo:
        """The metadata of `name` (open as `fd`, when given): the file's own extended
        attribute, else its sidecar in `.meta` (file systems without attributes, files
        stored before there were any). A file with neither is not a stored file."""
        try:
            raw = read_attached(fd if fd is not None else self.root / name)
            if raw is None:
                with open(self.meta_dir / f"{name}.json", "rb") as meta_file:
                    raw = meta_file.read()
            return FileInfo.from_json(raw)
        except FileNotFoundError:
            raise FileMissing(name) from None
        except (ValueError, TypeError, KeyError) as error:
            raise StorageError(f"metadata of {name!r} is unreadable: {error}") from error

    def _open_sync(self, name: str) -> tuple[OpenedFile, Identity]:
        try:
            fd = os.open(self.root / name, READ_FLAGS)
        except FileNotFoundError:
            raise FileMissing(name) from None
        except OSError as error:
            if error.errno in _NOT_A_STORED_FILE:
                raise FileMissing(name) from None
            raise
        file = os.fdopen(fd, "rb", buffering=0)
        try:
            status = os.fstat(fd)
            if not stat_module.S_ISREG(status.st_mode):
                raise FileMissing(name)
            info = self._read_meta_sync(name, fd)
            if info.size != status.st_size:
                raise StorageError(
                    f"{name!r} is {status.st_size} bytes but its metadata says {info.size}"
                )
            meta = StoredMeta(name, info)
            if status.st_size <= SMALL_FILE:
                content = os.pread(fd, status.st_size, 0)
                file.close()
                return InMemoryFile(meta, content), Identity.of(status)
        except BaseException:
            file.close()
            raise
        return self._handle(meta, file), Identity.of(status)

    def _cache_entry(self, name: str) -> CachedFile | None:
        """The cache's entry for `name`, if it is still the file there (one stat)."""
        if self._cache is None:
            return None
        try:
            status = os.stat(self._prefix + name, follow_symlinks=False)
        except OSError:
            return None
        return self._cache.get(name, Identity.of(status))

    def cached(self, name: str) -> OpenedFile | None:
        """The file under `name` from the cache: its bytes after a `stat`, or for a large
        one, opened on the loop and checked with the `fstat` of that descriptor."""
        cache = self._cache
        known = None if cache is None else cache.peek(name)
        if known is None or cache is None:
            return None
        if known.content is not None:
            entry = self._cache_entry(name)
            if entry is None or entry.content is None:
                return None
            return InMemoryFile(entry.meta, entry.content)
        try:
            fd = os.open(self._prefix + name, READ_FLAGS)
        except OSError:
            return None
        try:
            entry = cache.get(name, Identity.of(os.fstat(fd)))
        except BaseException:
            os.close(fd)
            raise
        if entry is None or entry.content is not None:  # replaced since it was cached
            os.close(fd)
            return None
        return self._handle(entry.meta, os.fdopen(fd, "rb", buffering=0))

    async def open_uncached(self, name: str) -> OpenedFile:
        """Open `name` on a storage thread, and keep what the cache keeps of it."""
        opened: OpenedFile
        opened, identity = await self._run_blocking(self._open_sync, name)
        if self._cache is not None:
            content = opened.content if isinstance(opened, InMemoryFile) else None
            self._cache.put(name, CachedFile(identity, opened.meta, content))
        return opened

    def open(self, name: str) -> Opening:
        return Opening(self, name)

    def _stat_sync(self, name: str) -> StoredMeta:
        if not (self.root / name).is_file():
            raise FileMissing(name)
        return StoredMeta(name, self._read_meta_sync(name))

    async def stat(self, name: str) -> StoredMeta:
        """From the cache when the file was served lately, else in one thread trip."""
        entry = self._cache_entry(name)
        if entry is not None:
            return entry.meta
        meta: StoredMeta = await self._run_blocking(self._stat_sync, name)
        return meta
