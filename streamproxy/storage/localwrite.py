"""One upload into local storage: bytes into a temporary, then the no-overwrite commit.

Every blocking call runs on the storage's threads, in two lanes (see `lanes`): one
writes the batches and then commits, the other hashes the batches meanwhile. Each
lane's calls are chained, so `abort` never closes the file while a worker thread
still writes to it, nor returns while one still reads a batch, even after a
cancellation.
"""

from __future__ import annotations

import asyncio
import enum
import os
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from functools import partial
from pathlib import Path

from .base import FileInfo, NoFreeName, Observer, Piece, StorageError, StoredMeta
from .interruptions import Interruptions
from .lanes import Lane, Settler, Submit
from .localfs import WRITEBACK_EVERY, start_writeback, storage_error
from .localstaging import StagingArea

HELD_BACK = 64 * 1024  # a first chunk up to this size waits for the next trip
_GIL_HELD = 2047  # hashlib keeps the GIL for updates below 2048 bytes


def observe_holding_gil(observer: Observer, pieces: Sequence[Piece]) -> None:
    """Hash small pieces on the event loop in slices under 2 KiB.

    hashlib lets go of the GIL for 2 KiB and more; on the event loop that is a
    loss, because getting it back means waiting behind busy worker threads.
    """
    for piece in pieces:
        view = memoryview(piece)
        for start in range(0, len(view), _GIL_HELD):
            observer(view[start : start + _GIL_HELD])


def _writeback(fd: int, offset: int, length: int) -> None:
    try:
        assert start_writeback is not None
        start_writeback(fd, offset, length)
    finally:
        os.close(fd)


class WriterState(enum.Enum):
    """OPEN takes writes; exactly one of COMMITTED or ABORTED ends it."""

    OPEN = "open"
    COMMITTED = "committed"
    ABORTED = "aborted"


class LocalWriter:
    """Stages one upload in the staging area; see the module docstring."""

    def __init__(
        self,
        staging: StagingArea,
        submit: Submit,
        observer: Observer,
        *,
        hash_beside: bool = True,
        on_end: Callable[[], None] | None = None,
    ) -> None:
        self._staging = staging
        self._submit = submit
        self._observer = observer
        # Hashing on a thread of its own pays when a core is free for it; among many
        # concurrent uploads the cores are busy anyway, and the hand-offs only cost.
        self._hash_beside = hash_beside
        self._on_end = on_end
        self.state = WriterState.OPEN
        self._path: Path | None = None  # only for a named temporary
        self._fd: int | None = None
        # A small first write waits here (already observed: hashing 64 KiB on the
        # event loop costs less than a thread trip), so that a small file is opened,
        # written and committed in a single trip to a worker thread, not three.
        self._first: Sequence[Piece] = ()
        self._handed_off = False  # a write or the commit went to the lanes
        self._written = self._written_back = 0
        self._loop = asyncio.get_running_loop()
        self._writes = Lane(self._loop, submit)
        self._hashes = Lane(self._loop, submit)

    def _open_sync(self) -> None:
        """Create the temporary, and write the chunk held back, if any."""
        self._fd, self._path = self._staging.create_temporary()
        first, self._first = self._first, ()
        if first:
            self._write_all(first)
            self._written += sum(len(piece) for piece in first)

    def _observe_sync(self, pieces: Sequence[Piece]) -> None:
        for piece in pieces:
            self._observer(piece)

    def _write_sync(self, pieces: Sequence[Piece]) -> None:
        if self._fd is None:
            self._open_sync()
        self._write_all(pieces)
        self._written += sum(len(piece) for piece in pieces)
        if not self._staging.fsync or start_writeback is None:
            return
        assert self._fd is not None
        if self._written <= WRITEBACK_EVERY:
            # A file still small: its batch goes to the disk now, from this thread (a
            # batch of a few hundred KiB does not wait), so that the commit's fsync of a
            # small file finds its earlier batches written already.
            start_writeback(self._fd, self._written_back, self._written - self._written_back)
            self._written_back = self._written
        elif self._written - self._written_back >= WRITEBACK_EVERY:
            # On another thread: starting writeback can wait for the disk, and the
            # next batch should not. A descriptor of its own keeps it safe from this
            # file being closed meanwhile.
            offset, length = self._written_back, self._written - self._written_back
            self._submit(partial(_writeback, os.dup(self._fd), offset, length))
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
            raise storage_error(error, "writing the file") from error

    def write(self, pieces: Sequence[Piece]) -> asyncio.Future[None]:
        """Queue the pieces; the future settles once they are written and observed.

        Not a coroutine: the write is queued when this is called, so a caller can
        queue the next batch before awaiting the previous one.
        """
        if self.state is not WriterState.OPEN:
            raise StorageError(f"the upload is already {self.state.value}")
        if (
            not self._handed_off
            and not self._first
            and sum(len(piece) for piece in pieces) <= HELD_BACK
        ):
            observe_holding_gil(self._observer, pieces)
            self._first = list(pieces)
            done: asyncio.Future[None] = self._loop.create_future()
            done.set_result(None)
            return done
        self._handed_off = True
        if not self._hash_beside:
            settler = Settler(self._loop, parts=1)
            self._writes.run(self._observe_and_write_sync, (pieces,), settler)
            return settler.future
        settler = Settler(self._loop, parts=2)
        self._hashes.run(self._observe_sync, (pieces,), settler)
        self._writes.run(self._write_sync, (pieces,), settler)
        return settler.future

    def _observe_and_write_sync(self, pieces: Sequence[Piece]) -> None:
        self._observe_sync(pieces)
        self._write_sync(pieces)

    def _ended(self) -> None:
        on_end, self._on_end = self._on_end, None
        if on_end is not None:
            on_end()

    def _commit_sync(self, names: Iterable[str], info: FileInfo, settler: Settler) -> StoredMeta:
        """Publish. With the metadata attached, one link, whose directory fsync (shared
        with other commits) becomes the last part of the commit's `settler`."""
        if self._fd is None:
            self._open_sync()
        assert self._fd is not None
        staging = self._staging
        try:
            metadata = info.to_json()
            attached = staging.attach(self._fd, metadata)
            if staging.fsync:
                os.fsync(self._fd)  # the bytes, and the metadata when attached
            for name in names:
                if attached and staging.link_attached(name, self._fd, self._path):
                    if staging.fsync:
                        settler.add_part()
                        staging.root_synced.after_next_sync(partial(settler.report, None))
                    return StoredMeta(name, info)
                sidecar = not attached
                if sidecar and staging.claim_with_sidecar(name, metadata, self._fd, self._path):
                    return StoredMeta(name, info)
        except OSError as error:
            raise storage_error(error, "saving the file") from error
        finally:
            self._release()
        raise NoFreeName("every candidate name is taken")

    def _release(self) -> None:
        """Close and remove the temporary; what cannot be removed is left to the sweep."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._path is not None:
            path, self._path = self._path, None
            with suppress(OSError):  # gone already, or a file system that refuses now
                path.unlink()

    async def commit(self, names: Iterable[str], info: FileInfo) -> StoredMeta:
        """Publish; the caller has awaited every write (the etag in `info` covers them)."""
        if self.state is not WriterState.OPEN:
            raise StorageError(f"the upload is already {self.state.value}")
        self._handed_off = True
        settler = Settler(self._loop, parts=1)
        self._writes.run(self._commit_sync, (iter(names), info, settler), settler)
        try:
            meta: StoredMeta = await settler.future
        except OSError as error:  # the directory's fsync: the link may not last
            raise storage_error(error, "saving the file") from error
        self.state = WriterState.COMMITTED
        self._ended()
        return meta

    async def abort(self) -> None:
        """Drop what is queued, wait for the calls in flight, remove the temporary.
        A cancellation that arrives meanwhile is raised once that is done."""
        if self.state is not WriterState.OPEN:
            return
        self.state = WriterState.ABORTED
        self._first = ()
        for settler in self._writes.drop_queued() + self._hashes.drop_queued():
            settler.future.cancel()
        interruptions = Interruptions()
        await interruptions.wait(self._writes.idle())
        await interruptions.wait(self._hashes.idle())
        self._release()
        self._ended()
        interruptions.reraise()
