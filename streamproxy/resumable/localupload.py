"""Local storage's `UploadStore`: localstore.UploadArea with its blocking calls off the loop.

Every call runs on the local storage's own threads (`LocalStorage.run_blocking`), so a
slow fsync never stalls the event loop. A completed upload is published by the staging
area's `claim`, the same code that publishes a `POST /files` upload: the data file is
linked under the first free name (metadata first, never replacing a file), so the
stored file and the upload's data are one inode and nothing is copied.

A draft request on an upload another request holds stops that one first (takeover.py):
directly in this process, through the marker `.uploads/.stop/<id>` in another worker,
which this store's watcher looks for every 0.1 s (one listing of that directory, for
all the appends this process runs); it waits up to `TAKE_OVER_WAIT` for the lock, then
answers 409 as before.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import BinaryIO

from ..storage.base import FileInfo, NoFreeName, Observer, Piece, StorageError, StoredMeta
from ..storage.lanes import Lane, Settler
from ..storage.local import LocalStorage
from ..storage.localfs import storage_error
from .appendwriter import OrderedAppendWriter
from .localstore import Appender, UploadArea, UploadLock
from .problems import Busy, NotFound
from .state import CorruptRecord, Status, UploadRecord
from .takeover import TAKE_OVER_WAIT, AppendStop, RunningAppends, wait_for_lock

_WATCH_EVERY = 0.1
"""Seconds between looks for other workers' stop markers (one listing of `.stop`)."""
_RETRY_EVERY = 0.05


class LocalAppendWriter(OrderedAppendWriter[Appender]):
    """The pump's writer for one PATCH: the upload's Appender and its running MD5 on two
    lanes (storage/lanes.py), as `POST /files` writes and hashes: each lane keeps the
    batches' order, and the two run side by side, since the file write and the MD5
    (OpenSSL's, see hashstate) both let go of the GIL. A batch is done once both lanes
    are through with it."""

    def __init__(self, storage: LocalStorage, appender: Appender, observer: Observer) -> None:
        super().__init__(appender, observer)
        self._storage = storage
        self._loop = asyncio.get_running_loop()
        self._writes = Lane(self._loop, storage.submit)
        self._hashes = Lane(self._loop, storage.submit)

    def _observe_sync(self, pieces: Sequence[Piece]) -> None:
        for piece in pieces:
            self._observer(piece)

    def _write_sync(self, pieces: Sequence[Piece]) -> None:
        try:
            for piece in pieces:
                self._appender.write(piece)
        except OSError as error:
            raise storage_error(error, "writing the upload") from error

    def _start(self, pieces: Sequence[Piece]) -> asyncio.Future[None]:
        settler = Settler(self._loop, parts=2)
        self._hashes.run(self._observe_sync, (pieces,), settler)
        self._writes.run(self._write_sync, (pieces,), settler)
        return settler.future

    async def _apply(self, pieces: Sequence[Piece]) -> None:
        raise AssertionError("batches go through the lanes (_start)")

    async def _drop(self) -> None:
        await self._storage.run_blocking(self._appender.discard)

    async def _keep(self, record: UploadRecord) -> None:
        try:
            await self._storage.run_blocking(self._appender.acknowledge, record)
        except OSError as error:
            raise storage_error(error, "saving the upload's offset") from error


class LocalStagedUpload:
    """A completed upload's data file as a staged file: `commit` links it under a name."""

    def __init__(self, storage: LocalStorage, data: Path) -> None:
        self._storage = storage
        self._data = data

    def write(self, pieces: Sequence[Piece]) -> asyncio.Future[None]:
        raise StorageError("a completed upload takes no more bytes")

    def _commit_sync(self, names: Iterable[str], info: FileInfo) -> StoredMeta:
        staging = self._storage.staging
        fd = os.open(self._data, os.O_RDONLY | os.O_CLOEXEC)
        try:
            metadata = info.to_json()
            for name in names:
                if staging.claim_with_sidecar(name, metadata, fd, self._data):
                    return StoredMeta(name, info)
        except OSError as error:
            raise storage_error(error, "saving the file") from error
        finally:
            os.close(fd)
        raise NoFreeName("every candidate name is taken")

    async def commit(self, names: Iterable[str], info: FileInfo) -> StoredMeta:
        return await self._storage.run_blocking(self._commit_sync, iter(names), info)

    async def abort(self) -> None:
        """Nothing to do: the data stays the upload's until it is removed."""


class LocalHeldUpload:
    def __init__(
        self, store: LocalUploadStore, lock: UploadLock, record: UploadRecord, stop: AppendStop
    ) -> None:
        self._store = store
        self._lock = lock
        self._record = record
        self.stop = stop

    @property
    def record(self) -> UploadRecord:
        return self._record

    @asynccontextmanager
    async def appender(self, observer: Observer) -> AsyncIterator[LocalAppendWriter]:
        storage, area = self._store.storage, self._store.area
        appender = await storage.run_blocking(area.appender, self._lock, self._record)
        writer = LocalAppendWriter(storage, appender, observer)
        try:
            yield writer
        finally:
            await asyncio.shield(writer.settle())
            self._record = appender.record
            appender.close()

    async def save(self, record: UploadRecord) -> None:
        await self._store.storage.run_blocking(self._store.area.write_info, record)
        self._record = record

    def staged(self) -> LocalStagedUpload:
        data = self._store.area.path(self._record.id) / "data"
        return LocalStagedUpload(self._store.storage, data)

    async def stored_bytes(self) -> AsyncIterator[bytes]:
        storage = self._store.storage
        path = self._store.area.path(self._record.id) / "data"
        file = await storage.run_blocking(_open_for_reading, path)
        try:
            remaining = self._record.offset
            while remaining > 0:
                chunk = await storage.run_blocking(file.read, min(remaining, 512 * 1024))
                if not chunk:
                    break
                remaining -= len(chunk)
                yield chunk
        finally:
            file.close()

    async def remove(self) -> None:
        await self._store.storage.run_blocking(self._store.area.remove, self._lock)


class LocalUploadStore:
    """`.uploads/` under a local storage's root (see localstore.py for the layout)."""

    def __init__(self, storage: LocalStorage, *, take_over_wait: float = TAKE_OVER_WAIT) -> None:
        self.storage = storage
        self.area = UploadArea(storage.root, fsync=storage.staging.fsync)
        self.take_over_wait = take_over_wait
        self.appends = RunningAppends(self._stops_asked, interval=_WATCH_EVERY, idle=0.0)

    async def _stops_asked(self, held: list[AppendStop]) -> list[AppendStop]:
        since = {stop.upload_id: stop.token for stop in held}
        asked = set(await self.storage.run_blocking(self.area.stops_asked, since))
        return [stop for stop in held if stop.upload_id in asked]

    async def prepare(self, now: float) -> None:
        await self.storage.run_blocking(self.area.prepare, now)

    async def create(self, record: UploadRecord) -> None:
        try:
            await self.storage.run_blocking(self.area.create, record)
        except OSError as error:
            raise storage_error(error, "creating the upload") from error

    async def read(self, upload_id: str) -> UploadRecord:
        return await self.storage.run_blocking(self.area.read, upload_id)

    @asynccontextmanager
    async def hold(
        self, upload_id: str, *, take_over: bool = False
    ) -> AsyncIterator[LocalHeldUpload]:
        lock = await self._lock(upload_id, take_over)
        locked_at = time.time()  # a stop marker touched after this is for us
        stop: AppendStop | None = None
        try:
            record = await self.storage.run_blocking(self.area.read, upload_id)
            with self.appends.running(upload_id, locked_at) as stop:
                yield LocalHeldUpload(self, lock, record, stop)
        finally:
            lock.close()
            if stop is not None and stop.requested:  # the marker is spent: gone with us
                with suppress(OSError):  # else the sweep takes it; the request's outcome stands
                    withdraw = self.storage.run_blocking(self.area.withdraw_stop, upload_id)
                    await asyncio.shield(withdraw)

    async def _lock(self, upload_id: str, take_over: bool) -> UploadLock:
        run = self.storage.run_blocking
        try:
            return await run(self.area.lock, upload_id)
        except Busy:
            if not take_over:
                raise

        async def ask() -> None:
            self.appends.stop(upload_id)  # a holder in this process: at once
            await run(self.area.ask_to_stop, upload_id)  # in another: its watcher

        try:
            lock = await wait_for_lock(
                lambda: run(self.area.lock, upload_id),
                ask,
                wait=self.take_over_wait,
                poll=_RETRY_EVERY,
                busy=Busy,
            )
        finally:
            await run(self.area.withdraw_stop, upload_id)
        if lock is None:
            raise Busy(
                f"another request holds this upload and did not let go within "
                f"{self.take_over_wait:g} s; ask for its offset again"
            )
        return lock

    async def settled(self, upload_id: str) -> UploadRecord:
        record = await self.read(upload_id)
        if record.status is not Status.RECEIVING:  # its offset moves no more
            return record
        async with self.hold(upload_id, take_over=True) as held:
            return held.record

    async def expired(self, now: float) -> list[str]:
        return await self.storage.run_blocking(self.area.expired, now)

    async def link(self, part_id: str, final_id: str) -> None:
        try:
            await self.storage.run_blocking(self.area.link, part_id, final_id)
        except OSError as error:
            raise storage_error(error, "linking a final upload to its part") from error

    async def linked(self, part_id: str) -> list[str]:
        return await self.storage.run_blocking(self.area.linked, part_id)

    async def remove_orphans(self, now: float) -> dict[str, int]:
        """Stop markers nobody withdrew, and removed uploads' directories a link landed
        in (localstore.py)."""
        area, run = self.area, self.storage.run_blocking
        return {
            "marker": await run(area.remove_orphans, now),
            "leftover": await run(area.remove_leftovers, now),
        }

    async def remove_unreadable(self, upload_id: str) -> bool:
        def remove() -> bool:
            try:
                lock = self.area.lock(upload_id)
            except (Busy, NotFound):
                return False
            try:
                self.area.read(upload_id)
            except CorruptRecord:
                self.area.remove(lock)
                return True
            except NotFound:
                return False
            finally:
                lock.close()
            return False

        return await self.storage.run_blocking(remove)


def _open_for_reading(path: Path) -> BinaryIO:
    return path.open("rb")
