"""S3 storage's `UploadStore` for the routes: s3store's UploadArea in the shape the
routes drive (hold / appender / save / staged / stored_bytes / remove), as localupload.py
is for local storage (the `tus` branch's resumable/store.py protocol; matched by shape).

The running MD5 (OpenSSL's, GIL released; see hashstate) is the observer: it runs on the
storage's threads, in order, and the bytes then go into the Appender on the loop. A
completed upload is completed into its staging object `<id>/data` when first needed (the
virus scan reads it, or the commit), then published by `s3upload.publish_staged`, the
same copy-and-conditional-complete `POST /files` commits with; the staging object is
deleted once the file is published.

A draft request on an upload whose lease another request holds (takeover.py) stops it
directly in this instance, and asks another through a marker object
`<id>/stop.<generation>`, which that instance's watcher looks for (a HEAD) when its
append's body has been idle for half a second. It then tries the lease every 0.1 s for
`TAKE_OVER_WAIT` seconds, and past that takes it over (the older request is fenced by
the generation) if the upload is still receiving bytes, else answers 409.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager, suppress

from ..storage.base import FileInfo, Observer, Piece, StorageError, StoredMeta
from ..storage.s3 import S3Storage
from ..storage.s3cleanup import Leftover
from ..storage.s3meta import S3_ERRORS, is_missing, storage_error
from ..storage.s3upload import publish_staged
from .appendwriter import OrderedAppendWriter
from .problems import Busy, NotFound
from .s3append import Appender
from .s3orphans import remove_orphans
from .s3store import LEASE_TTL, UploadArea, UploadLease
from .state import Status, UploadRecord, is_valid_id
from .takeover import TAKE_OVER_WAIT, AppendStop, RunningAppends, wait_for_lock

_WATCH_EVERY = 0.5
"""Seconds between looks for stop markers, for appends idle at least as long (a HEAD each)."""
_RETRY_EVERY = 0.1

_FINAL_LINK = "final."
"""`<part>/final.<final id>`: a final upload waits for this partial one (assembly.py)."""
_ENDING = frozenset({Status.COMMITTED, Status.FAILED, Status.CANCELLED, Status.EXPIRED})
"""Statuses whose record lets go of the lease (state.UploadRecord.committed and others)."""


class S3AppendWriter(OrderedAppendWriter[Appender]):
    """The pump's writer for one PATCH: hash off the loop, then into the Appender, in order."""

    def __init__(self, storage: S3Storage, appender: Appender, observer: Observer) -> None:
        super().__init__(appender, observer)
        self._storage = storage

    def _observe(self, pieces: Sequence[Piece]) -> None:
        for piece in pieces:
            self._observer(piece)

    async def _apply(self, pieces: Sequence[Piece]) -> None:
        await self._storage.run_blocking(self._observe, pieces)
        for piece in pieces:
            await self._appender.write(piece)

    async def _drop(self) -> None:
        await self._appender.discard()

    async def _keep(self, record: UploadRecord) -> None:
        await self._appender.acknowledge(record)


class S3StagedUpload:
    """A completed upload as a staged file: `commit` publishes its staging object."""

    def __init__(self, held: S3HeldUpload) -> None:
        self._held = held

    def write(self, pieces: Sequence[Piece]) -> asyncio.Future[None]:
        raise StorageError("a completed upload takes no more bytes")

    async def commit(self, names: Iterable[str], info: FileInfo) -> StoredMeta:
        held = self._held
        key = await held.stage()
        stored = await publish_staged(held.storage, key, names, info)
        await held.storage.janitor.discard(Leftover(key))  # the file has its own copy now
        return stored

    async def abort(self) -> None:
        """Nothing to do: the bytes stay the upload's until it is removed."""


class S3HeldUpload:
    """One upload under its lease."""

    def __init__(
        self, storage: S3Storage, area: UploadArea, lease: UploadLease, stop: AppendStop
    ) -> None:
        self.storage = storage
        self._area = area
        self._lease = lease
        self.stop = stop

    @property
    def record(self) -> UploadRecord:
        return self._lease.record

    @asynccontextmanager
    async def appender(self, observer: Observer) -> AsyncIterator[S3AppendWriter]:
        appender = await self._area.appender(self._lease, self._lease.record)
        writer = S3AppendWriter(self.storage, appender, observer)
        try:
            yield writer
        finally:
            await asyncio.shield(writer.settle())
            await asyncio.shield(appender.close())

    async def save(self, record: UploadRecord) -> None:
        """Store the routes' `record` with this store's own fields as they stand now.

        The routes build records from what they last saw (`appended`, `finish`, ...); the
        S3 bookkeeping (`backend`: parts, tail, staged key), the fencing `generation` and
        the lease are the store's and move under the routes' feet (each acknowledge puts
        a new tail, completion stages the data). The routes end the lease only with a
        final status (committed, failed, cancelled, expired).
        """
        current = self._lease.record
        lease = None if record.status in _ENDING else current.lease
        merged = dataclasses.replace(
            record, backend=current.backend, generation=current.generation, lease=lease
        )
        await self._area.write_info(self._lease, merged)

    async def stage(self) -> str:
        """The completed upload as one object (completed once, then found in the record)."""
        record = self._lease.record
        if record.status is not Status.COMPLETE:
            raise StorageError(f"cannot stage an upload that is {record.status}")
        return await self._area.complete(self._lease, record)

    def staged(self) -> S3StagedUpload:
        return S3StagedUpload(self)

    async def stored_bytes(self) -> AsyncIterator[bytes]:
        await self.stage()
        async for piece in self._area.chunks(self._lease.record):
            yield piece

    async def remove(self) -> None:
        await self._area.remove(self._lease)


class S3UploadStore:
    """`.uploads/` under an S3 storage's prefix (see s3store.py for the layout)."""

    def __init__(
        self, storage: S3Storage, *, ttl: float = LEASE_TTL, take_over_wait: float = TAKE_OVER_WAIT
    ) -> None:
        self.storage = storage
        self.area = UploadArea(storage, ttl=ttl)
        self.take_over_wait = take_over_wait
        self.appends = RunningAppends(self._stops_asked, interval=_WATCH_EVERY, idle=_WATCH_EVERY)
        self._listing: list[str] | None = None
        """The area's listing `expired` took, for the same sweep's `remove_orphans`."""

    async def prepare(self, now: float) -> None:
        await self.area.prepare(now)

    async def create(self, record: UploadRecord) -> None:
        await self.area.create(record)

    async def read(self, upload_id: str) -> UploadRecord:
        return await self.area.read(upload_id)

    @asynccontextmanager
    async def hold(self, upload_id: str, *, take_over: bool = False) -> AsyncIterator[S3HeldUpload]:
        lease = await self._lock(upload_id, take_over)
        try:
            with self.appends.running(upload_id, lease.generation) as stop:
                yield S3HeldUpload(self.storage, self.area, lease, stop)
        finally:
            with suppress(StorageError):
                await asyncio.shield(lease.close())

    async def _lock(self, upload_id: str, take_over: bool) -> UploadLease:
        try:
            return await self.area.lock(upload_id)
        except Busy:
            if not take_over:
                raise
        lease = (await self.area.read(upload_id)).lease
        generation = lease.generation if lease is not None else None
        if generation is not None:
            self.appends.stop(upload_id)  # a holder in this instance: at once
            await self._ask_to_stop(upload_id, generation)  # in another: its watcher

        async def nothing() -> None:
            """Asked once: the marker stays until this request is done."""

        try:
            taken = await wait_for_lock(
                lambda: self.area.lock(upload_id),
                nothing,
                wait=self.take_over_wait,
                poll=_RETRY_EVERY,
                busy=Busy,
            )
        finally:
            if generation is not None:
                await self._withdraw_stop(upload_id, generation)
        if taken is not None:
            return taken
        # Fenced by the generation; Busy still if the holder is completing the upload.
        return await self.area.lock(upload_id, take_over=True)

    async def settled(self, upload_id: str) -> UploadRecord:
        record = await self.read(upload_id)
        lease = record.lease
        if record.status is not Status.RECEIVING or lease is None:
            return record  # nobody appends, or the offset moves no more
        if lease.until <= self.area.clock():
            return record  # a dead holder's: its unacknowledged bytes are lost anyway
        async with self.hold(upload_id, take_over=True) as held:
            return held.record

    # --- stop markers (takeover.py) -------------------------------------------------------

    def _marker(self, upload_id: str, generation: float) -> str:
        return self.area.key(upload_id, f"stop.{int(generation)}")

    async def _ask_to_stop(self, upload_id: str, generation: int) -> None:
        area = self.area
        try:
            await area.client.put_object(
                Bucket=area.bucket, Key=self._marker(upload_id, generation), Body=b""
            )
        except S3_ERRORS as error:
            raise storage_error(error, "asking an upload's holder to stop") from error

    async def _withdraw_stop(self, upload_id: str, generation: int) -> None:
        with suppress(*S3_ERRORS):  # a marker left behind names a generation gone by
            await self.area.client.delete_object(
                Bucket=self.area.bucket, Key=self._marker(upload_id, generation)
            )

    async def _stops_asked(self, held: list[AppendStop]) -> list[AppendStop]:
        async def asked(stop: AppendStop) -> bool:
            key = self._marker(stop.upload_id, stop.token)
            try:
                await self.area.client.head_object(Bucket=self.area.bucket, Key=key)
            except S3_ERRORS as error:
                if is_missing(error):
                    return False
                raise
            return True

        found = await asyncio.gather(*(asked(stop) for stop in held))
        return [stop for stop, yes in zip(held, found, strict=True) if yes]

    async def expired(self, now: float) -> list[str]:
        """From one listing of the area, kept for this sweep's `remove_orphans`."""
        self._listing = await self.area.listing()
        return await self.area.expired(now, self._listing)

    async def remove_orphans(self, now: float) -> dict[str, int]:
        """Markers, parts and tails a removal raced past (s3orphans.py), from the
        listing `expired` took in this sweep (a listing of its own if none)."""
        keys, self._listing = self._listing, None
        return await remove_orphans(self.area, keys)

    async def remove_unreadable(self, upload_id: str) -> bool:
        """For retention: an upload whose record cannot be read takes no lease."""
        return await self.area.remove_unreadable(upload_id)

    async def link(self, part_id: str, final_id: str) -> None:
        """An empty object `<part>/final.<final id>` (no lease: the record is not
        touched); checked against the part's info afterwards, so a link put while the
        part was being removed is taken back, not left behind."""
        if not is_valid_id(final_id):
            raise ValueError(f"not an upload id: {final_id!r}")
        area = self.area
        key = area.key(part_id, _FINAL_LINK + final_id)
        try:
            await area.client.put_object(Bucket=area.bucket, Key=key, Body=b"")
        except S3_ERRORS as error:
            raise storage_error(error, "linking a final upload to its part") from error
        try:
            await area.read(part_id)
        except NotFound:
            await self.storage.janitor.discard(Leftover(key))
            raise

    async def linked(self, part_id: str) -> list[str]:
        area = self.area
        prefix = area.key(part_id, _FINAL_LINK)
        finals = []
        try:
            async for page in area.client.get_paginator("list_objects_v2").paginate(
                Bucket=area.bucket, Prefix=prefix
            ):
                finals += [item["Key"].removeprefix(prefix) for item in page.get("Contents", [])]
        except S3_ERRORS as error:
            raise storage_error(error, "listing a part's final uploads") from error
        return sorted(final_id for final_id in finals if is_valid_id(final_id))
