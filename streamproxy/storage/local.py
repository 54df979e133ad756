"""Local directory storage, the embedded default.

Layout under the root:
    NAME                 the file's bytes, exactly as uploaded (servable by anything)
    .meta/NAME.json      its metadata
    .tmp/                files being written; emptied at start-up

A file is staged in `.tmp`, flushed with fsync, and published with `link(2)`,
which fails instead of replacing an existing name: that is the atomic,
no-overwrite commit. The metadata is linked first and claims the name; the bytes
follow, so whenever a name is visible its metadata is too. Stored names never
start with a dot, so `.meta` and `.tmp` cannot be reached by a download.
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import ctypes.util
import errno
import itertools
import logging
import os
import stat as stat_module
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import IO, Any, TypeVar

from ..settings import DEFAULT_CHUNK_SIZE
from .base import (
    FileInfo,
    FileMissing,
    NoFreeName,
    Observer,
    Piece,
    StorageError,
    StorageFull,
    StoredMeta,
)
from .smallfiles import SMALL_FILE, CachedFile, Identity, SmallFileCache

log = logging.getLogger("streamproxy.storage")

META_DIR = ".meta"
TMP_DIR = ".tmp"
HELD_BACK = 64 * 1024  # a first chunk up to this size waits for the next trip
_GIL_HELD = 2047  # hashlib keeps the GIL for updates below 2048 bytes
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC  # a stored file, never a link
_T = TypeVar("_T")


def _raise_storage_error(error: OSError, doing: str) -> None:
    if error.errno in _FULL_ERRNOS:
        raise StorageFull(f"no space left while {doing}: {error.strerror}") from error
    raise StorageError(f"{doing} failed: {error.strerror}") from error


def observe_holding_gil(observer: Observer, pieces: Sequence[Piece]) -> None:
    """Hash small pieces on the event loop in slices under 2 KiB.

    hashlib lets go of the GIL for 2 KiB and more; on the event loop that is a
    loss, because getting it back means waiting behind busy worker threads.
    """
    for piece in pieces:
        view = memoryview(piece)
        for start in range(0, len(view), _GIL_HELD):
            observer(view[start : start + _GIL_HELD])


def _load_sync_file_range() -> Callable[[int, int, int], None] | None:
    """Linux's sync_file_range(2), which Python's os module does not offer."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        function = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    write_only = 2  # SYNC_FILE_RANGE_WRITE: start writing back, do not wait

    def start_writeback(fd: int, offset: int, length: int) -> None:
        function(fd, offset, length, write_only)  # advisory: a failure changes nothing

    return start_writeback


# With fsync on, a big upload's bytes are sent to disk as they arrive, so the final
# fsync finds little left to write instead of the whole file.
_start_writeback = _load_sync_file_range()
WRITEBACK_EVERY = 8 * 1024 * 1024


def _writeback(fd: int, offset: int, length: int) -> None:
    try:
        assert _start_writeback is not None
        _start_writeback(fd, offset, length)
    finally:
        os.close(fd)


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class _Operation:
    function: Callable[..., Any]
    args: tuple[Any, ...]
    done: asyncio.Future[Any]


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # cancelled by an abort meanwhile
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


class LocalWriter:
    """Stages one upload; runs every blocking call on the storage's threads.

    The bytes go to an unnamed file (`O_TMPFILE`) where the file system allows it:
    nothing to clean up after a crash, and no name to create and remove (on this
    project's test machine that made the whole commit six times cheaper). Elsewhere a
    named file in `.tmp` stands in. Operations are chained: each waits for the
    previous one, so `abort` never closes the file while a worker thread still
    writes to it, even after a cancellation.
    """

    def __init__(self, storage: LocalStorage, observer: Observer) -> None:
        self._storage = storage
        self._observer = observer
        self._path: Path | None = None  # only for a named temporary
        self._fd: int | None = None
        # A small first write waits here (already observed: hashing 64 KiB on the
        # event loop costs less than a thread trip), so that a small file is opened,
        # written and committed in a single trip to a worker thread, not three.
        self._first: Sequence[Piece] = ()
        self._written = self._written_back = 0
        self._done = False
        # Operations run in order on one worker thread at a time, which takes the
        # next queued one without waiting for the event loop: a batch queued while
        # the previous one is written starts the moment that one ends.
        self._loop = asyncio.get_running_loop()
        self._lock = threading.Lock()
        self._queue: collections.deque[_Operation] = collections.deque()
        self._draining: asyncio.Future[None] | None = None

    def _run(self, function: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """Queue a blocking operation; the future settles when it has run."""
        done: asyncio.Future[Any] = self._loop.create_future()
        with self._lock:
            self._queue.append(_Operation(function, args, done))
            if self._draining is not None:
                return done
            self._draining = self._loop.create_future()
        self._storage.submit(self._drain_sync)
        return done

    def _drain_sync(self) -> None:
        """On a worker thread: run queued operations until none is left."""
        while True:
            with self._lock:
                if not self._queue:
                    draining, self._draining = self._draining, None
                    break
                operation = self._queue.popleft()
            try:
                result = operation.function(*operation.args)
            except BaseException as error:
                self._loop.call_soon_threadsafe(_settle, operation.done, None, error)
            else:
                self._loop.call_soon_threadsafe(_settle, operation.done, result, None)
        assert draining is not None
        self._loop.call_soon_threadsafe(_settle, draining, None, None)

    def _open_sync(self) -> None:
        """Create the temporary, and write the chunk held back, if any."""
        storage = self._storage
        try:
            if storage.unnamed_temporaries:
                self._fd = os.open(
                    storage.tmp_dir, os.O_WRONLY | os.O_TMPFILE | os.O_CLOEXEC, 0o644
                )
            else:
                self._path = storage.tmp_dir / f"{storage.temporary_name()}.part"
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
                self._fd = os.open(self._path, flags, 0o644)
        except OSError as error:
            _raise_storage_error(error, "creating a temporary file")
        first, self._first = self._first, ()
        if first:
            self._write_all(first)

    def _write_sync(self, pieces: Sequence[Piece]) -> None:
        if self._fd is None:
            self._open_sync()
        for piece in pieces:
            self._observer(piece)
        self._write_all(pieces)
        self._written += sum(len(piece) for piece in pieces)
        if (
            self._storage.fsync
            and _start_writeback is not None
            and self._written - self._written_back >= WRITEBACK_EVERY
        ):
            assert self._fd is not None
            # On another thread: starting writeback can wait for the disk, and the
            # hashing of the next batch should not. A descriptor of its own keeps it
            # safe from this file being closed meanwhile.
            offset, length = self._written_back, self._written - self._written_back
            self._storage.submit(partial(_writeback, os.dup(self._fd), offset, length))
            self._written_back = self._written

    def _write_all(self, pieces: Sequence[Piece]) -> None:
        """One writev for all the pieces (a short write continues where it stopped)."""
        assert self._fd is not None
        views = [memoryview(piece) for piece in pieces]
        try:
            while views:
                written = os.writev(self._fd, views)
                while views and written >= len(views[0]):
                    written -= len(views[0])
                    views.pop(0)
                if views and written:
                    views[0] = views[0][written:]
        except OSError as error:
            _raise_storage_error(error, "writing the file")

    def write(self, pieces: Sequence[Piece]) -> asyncio.Future[None]:
        """Queue the pieces; the future settles once they are written.

        Not a coroutine: the write is queued when this is called, so a caller can
        queue the next batch before awaiting the previous one.
        """
        if (
            self._fd is None
            and not self._first
            and not self._queue
            and self._draining is None
            and sum(len(piece) for piece in pieces) <= HELD_BACK
        ):
            observe_holding_gil(self._observer, pieces)
            self._first = list(pieces)
            done: asyncio.Future[None] = self._loop.create_future()
            done.set_result(None)
            return done
        return self._run(self._write_sync, pieces)

    def _commit_sync(self, names: Iterable[str], info: FileInfo) -> StoredMeta:
        storage = self._storage
        if self._fd is None:
            self._open_sync()
        assert self._fd is not None
        try:
            if storage.fsync:
                os.fsync(self._fd)
            metadata = info.to_json()
            for name in names:
                if storage.claim(name, metadata, self._fd, self._path):
                    if storage.fsync:
                        _fsync_directory(storage.meta_dir)
                        _fsync_directory(storage.root)
                    return StoredMeta(name, info)
        except OSError as error:
            _raise_storage_error(error, "saving the file")
        finally:
            self._release()
        raise NoFreeName("every candidate name is taken")

    def _release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._path is not None:
            with suppress(FileNotFoundError):
                self._path.unlink()
            self._path = None

    async def commit(self, names: Iterable[str], info: FileInfo) -> StoredMeta:
        meta: StoredMeta = await self._run(self._commit_sync, iter(names), info)
        self._done = True
        return meta

    async def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._first = ()
        with self._lock:
            for operation in self._queue:
                operation.done.cancel()
            self._queue.clear()
            draining = self._draining
        if draining is not None:
            # A worker thread may still be writing; wait for it, whatever happens to us.
            with suppress(BaseException):
                await asyncio.shield(draining)
        self._release()


class LocalFileHandle:
    """An opened stored file: its whole content when small, else an open descriptor,
    which pins the inode for the whole download (sendfile reads from it)."""

    def __init__(
        self,
        meta: StoredMeta,
        storage: LocalStorage,
        *,
        local_file: IO[bytes] | None = None,
        content: bytes | None = None,
    ) -> None:
        self.meta = meta
        self.local_file = local_file
        self.content = content
        self._storage = storage

    def close(self) -> None:
        if self.local_file is not None:
            self.local_file.close()

    async def chunks(self, start: int, length: int) -> AsyncIterator[bytes]:
        if self.content is not None:
            yield self.content[start : start + length]
            return
        assert self.local_file is not None
        chunk_size = self._storage.chunk_size
        offset, remaining = start, length
        while remaining > 0:
            size = min(chunk_size, remaining)
            fd = self.local_file.fileno()
            data = await self._storage.run_blocking(os.pread, fd, size, offset)
            if not data:
                raise StorageError("the file is shorter than its metadata says")
            offset += len(data)
            remaining -= len(data)
            yield data


class LocalStorage:
    """Files in a directory; see the module docstring for the layout and the commit."""

    def __init__(
        self,
        root: str | Path,
        *,
        fsync: bool = True,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        cache_size: int = 32 * 1024 * 1024,
        clean_on_start: bool = True,
    ):
        self.root = Path(root).resolve()
        self._clean_on_start = clean_on_start
        self._temporaries = itertools.count(1)
        self.unnamed_temporaries = False  # decided at start-up by a probe
        self._proc_fd: int | None = None
        self._cache = SmallFileCache(cache_size) if cache_size else None
        self.meta_dir = self.root / META_DIR
        self.tmp_dir = self.root / TMP_DIR
        self.fsync = fsync
        self.chunk_size = chunk_size
        self.description = f"local directory {self.root}"
        self._executor: ThreadPoolExecutor | None = None

    def temporary_name(self) -> str:
        """Unique among the processes sharing the directory: pid and a counter
        (files are created with O_EXCL, so a clash would fail, never overwrite)."""
        return f"{os.getpid()}-{next(self._temporaries)}"

    def submit(self, function: Callable[[], None]) -> None:
        """Start a blocking call on the storage threads without waiting for it."""
        if self._executor is None:
            raise StorageError("storage is not started")
        self._executor.submit(function)

    def run_blocking(self, function: Callable[..., _T], *args: Any) -> asyncio.Future[_T]:
        """Run a blocking call on the storage threads (disk I/O may stall for a long time)."""
        if self._executor is None:
            raise StorageError("storage is not started")
        return asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    async def start(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=32, thread_name_prefix="storage")
        await self.run_blocking(self._prepare_sync)

    def _prepare_sync(self) -> None:
        try:
            for directory in (self.root, self.meta_dir, self.tmp_dir):
                directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StorageError(f"cannot create {error.filename}: {error.strerror}") from error
        self.unnamed_temporaries = self._probe_unnamed_temporaries()
        removed = remove_temporaries(self.tmp_dir) if self._clean_on_start else 0
        if removed:
            log.info("removed %d unfinished temporary files from %s", removed, self.tmp_dir)

    def _probe_unnamed_temporaries(self) -> bool:
        """Can this file system create an unnamed file and link it in? (Linux, most local
        file systems; not NFS.) Otherwise named temporaries in `.tmp` are used."""
        try:
            self._proc_fd = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            fd = os.open(self.tmp_dir, os.O_WRONLY | os.O_TMPFILE | os.O_CLOEXEC, 0o644)
        except (OSError, AttributeError):
            log.info("unnamed temporary files unavailable in %s; using named ones", self.tmp_dir)
            return False
        probe = self.tmp_dir / f"probe-{self.temporary_name()}"
        try:
            os.link(str(fd), probe, src_dir_fd=self._proc_fd)
            probe.unlink()
            return True
        except OSError:
            log.info("cannot link unnamed files in %s; using named temporaries", self.tmp_dir)
            return False
        finally:
            os.close(fd)

    async def close(self) -> None:
        if self._proc_fd is not None:
            os.close(self._proc_fd)
            self._proc_fd = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def create_writer(self, observer: Observer) -> LocalWriter:
        """The temporary file is created with the first write (or the commit)."""
        return LocalWriter(self, observer)

    def claim(self, name: str, metadata: bytes, fd: int, path: Path | None) -> bool:
        """Publish metadata then bytes under `name`; False if the name is taken.

        Creating the metadata file with O_EXCL claims the name atomically; the bytes
        are linked in only once it is complete, so a visible file always has its
        metadata. Linking fails rather than replace a file that is already there.
        """
        meta_path = self.meta_dir / f"{name}.json"
        try:
            meta_fd = os.open(meta_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            return False
        try:
            try:
                os.write(meta_fd, metadata)
                if self.fsync:
                    os.fsync(meta_fd)
            finally:
                os.close(meta_fd)
            if path is None:  # an unnamed temporary: link it through /proc/self/fd
                os.link(str(fd), self.root / name, src_dir_fd=self._proc_fd)
            else:
                os.link(path, self.root / name)
        except FileExistsError:
            # Bytes without metadata under that name (copied in by hand): leave them be.
            meta_path.unlink()
            return False
        except BaseException:
            meta_path.unlink()
            raise
        return True

    def _read_meta_sync(self, name: str) -> FileInfo:
        try:
            with open(self.meta_dir / f"{name}.json", "rb") as meta_file:
                return FileInfo.from_json(meta_file.read())
        except FileNotFoundError:
            raise FileMissing(name) from None
        except (ValueError, TypeError, KeyError) as error:
            raise StorageError(f"metadata of {name!r} is unreadable: {error}") from error

    def _open_sync(self, name: str) -> tuple[LocalFileHandle, Identity]:
        try:
            fd = os.open(self.root / name, _READ_FLAGS)
        except FileNotFoundError:
            raise FileMissing(name) from None
        except OSError as error:
            if error.errno in {errno.ELOOP, errno.EISDIR, errno.ENAMETOOLONG, errno.ENOTDIR}:
                raise FileMissing(name) from None
            raise
        file = os.fdopen(fd, "rb", buffering=0)
        try:
            status = os.fstat(fd)
            if not stat_module.S_ISREG(status.st_mode):
                raise FileMissing(name)
            info = self._read_meta_sync(name)
            if info.size != status.st_size:
                raise StorageError(
                    f"{name!r} is {status.st_size} bytes but its metadata says {info.size}"
                )
            meta = StoredMeta(name, info)
            if status.st_size <= SMALL_FILE:
                content = os.pread(fd, status.st_size, 0)
                file.close()
                return LocalFileHandle(meta, self, content=content), Identity.of(status)
        except BaseException:
            file.close()
            raise
        return LocalFileHandle(meta, self, local_file=file), Identity.of(status)

    def _cache_entry(self, name: str) -> CachedFile | None:
        """The cache's entry for `name`, if it is still the file there (one stat)."""
        if self._cache is None:
            return None
        try:
            status = os.stat(self.root / name, follow_symlinks=False)
        except OSError:
            return None
        return self._cache.get(name, Identity.of(status))

    def _cached(self, name: str) -> LocalFileHandle | None:
        """The file under `name` from the cache: its bytes, or opened on the loop."""
        entry = self._cache_entry(name)
        if entry is None:
            return None
        if entry.content is not None:
            return LocalFileHandle(entry.meta, self, content=entry.content)
        try:
            fd = os.open(self.root / name, _READ_FLAGS)
        except OSError:
            return None
        file = os.fdopen(fd, "rb", buffering=0)
        if Identity.of(os.fstat(fd)) != entry.identity:  # replaced since the stat
            file.close()
            return None
        return LocalFileHandle(entry.meta, self, local_file=file)

    @asynccontextmanager
    async def open(self, name: str) -> AsyncIterator[LocalFileHandle]:
        cached = self._cached(name)
        if cached is not None:
            handle = cached
        else:
            handle, identity = await self.run_blocking(self._open_sync, name)
            if self._cache is not None:
                self._cache.put(name, CachedFile(identity, handle.meta, handle.content))
        try:
            yield handle
        finally:
            handle.close()

    def _stat_sync(self, name: str) -> StoredMeta:
        if not (self.root / name).is_file():
            raise FileMissing(name)
        return StoredMeta(name, self._read_meta_sync(name))

    async def stat(self, name: str) -> StoredMeta:
        """From the cache when the file was served lately, else in one thread trip."""
        entry = self._cache_entry(name)
        if entry is not None:
            return entry.meta
        return await self.run_blocking(self._stat_sync, name)

    def _probe_sync(self) -> None:
        probe = self.tmp_dir / f"ready-{self.temporary_name()}.probe"
        try:
            with open(probe, "xb") as file:
                file.write(b"ok")
        except OSError as error:
            _raise_storage_error(error, f"writing to {self.tmp_dir}")
        finally:
            with suppress(OSError):
                probe.unlink()

    async def check_ready(self) -> None:
        await self.run_blocking(self._probe_sync)

    def _delete_older_than_sync(self, cutoff: float) -> int:
        deleted = 0
        with os.scandir(self.meta_dir) as entries:
            for entry in entries:
                if not entry.name.endswith(".json") or _mtime(entry) >= cutoff:
                    continue
                name = entry.name.removesuffix(".json")
                # Bytes first: the name stops being visible before its metadata goes.
                with suppress(FileNotFoundError):
                    (self.root / name).unlink()
                    deleted += 1
                    log.info("retention: deleted %s", name)
                with suppress(FileNotFoundError):
                    os.unlink(entry.path)
        return deleted

    async def delete_older_than(self, cutoff: datetime) -> int:
        return await self.run_blocking(self._delete_older_than_sync, cutoff.timestamp())

    def _remove_stale_sync(self, cutoff: float) -> int:
        removed = 0
        with os.scandir(self.tmp_dir) as entries:
            for entry in entries:
                if _mtime(entry) < cutoff:
                    with suppress(FileNotFoundError):
                        os.unlink(entry.path)
                        removed += 1
        # Metadata whose bytes never arrived (a crash between the two links).
        with os.scandir(self.meta_dir) as entries:
            for entry in entries:
                name = entry.name.removesuffix(".json")
                if _mtime(entry) < cutoff and not (self.root / name).exists():
                    with suppress(FileNotFoundError):
                        os.unlink(entry.path)
                        removed += 1
        return removed

    async def remove_stale_temporaries(self, cutoff: datetime) -> int:
        return await self.run_blocking(self._remove_stale_sync, cutoff.timestamp())


def _mtime(entry: os.DirEntry[str]) -> float:
    """An entry's mtime; one removed since the listing (a finished upload) counts as new."""
    try:
        return entry.stat().st_mtime
    except FileNotFoundError:
        return float("inf")


def remove_temporaries(tmp_dir: Path) -> int:
    """Delete what an earlier run left half-written; nothing there was ever visible."""
    removed = 0
    with suppress(FileNotFoundError):
        for entry in tmp_dir.iterdir():
            with suppress(FileNotFoundError, IsADirectoryError):
                entry.unlink()
                removed += 1
    return removed
