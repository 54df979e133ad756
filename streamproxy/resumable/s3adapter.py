"""S3 storage's `UploadStore` for the routes: s3store's UploadArea in the shape the
routes drive (hold / appender / save / staged / stored_bytes / remove), as localupload.py
is for local storage (the `tus` branch's resumable/store.py protocol; matched by shape).

The running MD5 (OpenSSL's, GIL released; see hashstate) is the observer: it runs on the
storage's threads, in order, and the bytes then go into the Appender on the loop. A
completed upload is completed into its staging object `<id>/data` when first needed (the
virus scan reads it, or the commit), then published by `s3upload.publish_staged`, the
same copy-and-conditional-complete `POST /files` commits with; the staging object is
deleted once the file is published.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager, suppress

from ..storage.base import FileInfo, Observer, Piece, StorageError, StoredMeta
from ..storage.s3 import S3Storage
from ..storage.s3cleanup import Leftover
from ..storage.s3meta import S3_ERRORS, storage_error
from ..storage.s3upload import publish_staged
from .appendwriter import OrderedAppendWriter
from .problems import NotFound
from .s3append import Appender
from .s3store import LEASE_TTL, UploadArea, UploadLease
from .state import Status, UploadRecord, is_valid_id

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

    def __init__(self, storage: S3Storage, area: UploadArea, lease: UploadLease) -> None:
        self.storage = storage
        self._area = area
        self._lease = lease

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

    def __init__(self, storage: S3Storage, *, ttl: float = LEASE_TTL) -> None:
        self.storage = storage
        self.area = UploadArea(storage, ttl=ttl)

    async def prepare(self, now: float) -> None:
        await self.area.prepare(now)

    async def create(self, record: UploadRecord) -> None:
        await self.area.create(record)

    async def read(self, upload_id: str) -> UploadRecord:
        return await self.area.read(upload_id)

    @asynccontextmanager
    async def hold(self, upload_id: str, *, take_over: bool = False) -> AsyncIterator[S3HeldUpload]:
        lease = await self.area.lock(upload_id, take_over=take_over)
        try:
            yield S3HeldUpload(self.storage, self.area, lease)
        finally:
            with suppress(StorageError):
                await asyncio.shield(lease.close())

    async def expired(self, now: float) -> list[str]:
        return await self.area.expired(now)

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
