"""S3 storage's resumable capability: the record and the lease in the bucket, so any
instance can take the next request (localstore's API, async).

    PREFIX.uploads/<id>/info                   the UploadRecord as JSON: the truth
    PREFIX.uploads/<id>/data                   the multipart upload; after completion,
                                               the whole object, staged for the commit
    PREFIX.uploads/<id>/tail.<gen>.<offset>    the acknowledged bytes after the last part

The prefix starts with a dot, so no download can name it (as `.tmp`), and every object
or multipart upload of an upload lives under `<id>/`, created only while its info
exists: `remove` lists that prefix, so nothing a dead writer left survives it. (The
markers other requests write without the lease, links and stop markers, can land just
after that listing, and so can a part or tail a fenced writer had in flight: retention
sweeps those, s3orphans.py.)

The lock across instances is the lease in the record (state.Lease): taking it, renewing
it and every other record write are conditional (`If-Match` on the info's ETag,
`If-None-Match: *` to create). A 412 means someone else wrote: the record is read again,
and the lease decides (Busy while another holder's runs; past `until` anyone takes it,
bumping `generation`). Before each part a writer renews its lease (a conditional
write) when half the TTL is gone, else checks with a HEAD that the info is still the one
it wrote, and each part must arrive before its lease ends (lease safety assumes the
instances' clocks agree to well within the TTL, as every lease does). So a request that
was taken over or outlived its lease stops at its next part, with at most one part in
flight: a take-over's parts are numbered past every part listed plus one (S3 allows gaps
in part numbers), so even that one cannot land on them. Tails are written under fresh
keys (generation and offset in the name), never over the acknowledged one. Anything a
stale request leaves (a part, a tail, a multipart upload it made) is unrecorded, lies
under `<id>/`, and goes with `remove`; the worst a stale part can do is make completion
fail (S3 checks the recorded part ETags), never produce wrong bytes.

On moto's server (5.2.5) the conditions hold but are not atomic: put_object checks, then
writes, without a lock, on werkzeug's threads. Measured with
`python -m benchmarks.moto_conditional_race` (4 writers racing one key, 300 rounds per
condition): exactly one winner in every round at Python's default 5 ms switch interval,
but two winners in 14 (If-None-Match) and 8 (If-Match) rounds of 300 when moto's
interpreter switches threads every microsecond. So the race tests here are meaningful
(a lost race is seen) but moto cannot prove atomicity; AWS, MinIO and Ceph do the check
and the write as one step.

A conditional write whose answer was lost may have happened: botocore retries it and
the retry gets 412. After a 412 the info is read back; if it holds exactly the bytes we
wrote, the write was ours.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING, Any, Final, Protocol

from ..storage.base import StorageError
from ..storage.s3cleanup import UPLOADS_DIR, Janitor, Leftover
from ..storage.s3meta import S3_ERRORS, is_missing, is_taken, storage_error
from .problems import Busy, NotFound
from .s3append import Appender, complete
from .state import CorruptRecord, Status, UploadRecord, is_valid_id

if TYPE_CHECKING:
    from types_aiobotocore_s3.client import S3Client

log = logging.getLogger("streamproxy.storage")

LEASE_TTL: Final = 60.0
"""Seconds a writer holds an upload without renewing; a dead holder's upload waits this
long for the next instance (or is taken at once by the draft's take-over)."""
_ATTEMPTS: Final = 5


class UploadBucket(Protocol):
    """What the uploads area needs of its storage (`S3Storage` is one)."""

    bucket: str
    prefix: str
    part_size: int
    janitor: Janitor

    @property
    def client(self) -> S3Client: ...

    async def create_upload(self, key: str, **arguments: Any) -> str: ...


class _Conflict(Exception):
    """A conditional write lost (412): someone else wrote the info first."""


def instance_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class UploadLease:
    """The exclusive right to write one upload, across instances, until close()."""

    def __init__(
        self,
        area: UploadArea,
        holder: str,
        record: UploadRecord,
        etag: str,
        *,
        took_over: bool = False,
    ) -> None:
        assert record.lease is not None
        self.upload_id = record.id
        self.holder = holder
        self.generation = record.lease.generation
        self.took_over = took_over
        """Taken from a holder whose lease still ran (the draft's take-over): that request
        may still have one part in flight, so this one's parts keep clear of its numbers."""
        self.record = record
        """The record as stored now (the last one this lease wrote)."""
        self._area = area
        self._etag = etag
        self._released = False
        # One record write at a time: a renewal beside an acknowledge would lose to it.
        self._writing = asyncio.Lock()

    @property
    def held(self) -> bool:
        """Ours by the record and by our clock (another instance may take it after `until`)."""
        lease = self.record.lease
        return (
            not self._released
            and lease is not None
            and lease.holder == self.holder
            and self._area.clock() < lease.until
        )

    @property
    def remaining(self) -> float:
        lease = self.record.lease
        return 0.0 if lease is None or self._released else lease.until - self._area.clock()

    async def write(self, record: UploadRecord) -> UploadRecord:
        """Store `record` if the upload is still ours (fencing: generation and the ETag)."""
        async with self._writing:
            return await self._write(record)

    async def _write(self, record: UploadRecord) -> UploadRecord:
        if self._released:
            raise Busy("the upload's lease was already let go")
        # The record this lease last stored may have ended the lease (committed, failed,
        # cancelled): still ours while its generation is. The ETag below is the fence.
        if self.record.generation != self.generation or record.generation != self.generation:
            raise Busy("a newer request took this upload over")
        if record.id != self.upload_id:
            raise ValueError("a record of another upload")
        try:
            self._etag = await self._area._put(record, if_match=self._etag)
        except _Conflict:
            fresh = await self._area.read(self.upload_id)
            fresh.check_holder(self.holder, self.generation)
            raise Busy("the upload's record changed under this request") from None
        self.record = record
        return record

    async def renew(self) -> None:
        """Push `until` a TTL ahead; Busy if another request took the upload over."""
        area = self._area
        async with self._writing:
            now = area.clock()
            await self._write(self.record.renewed(self.holder, self.generation, now, area.ttl))

    async def keep(self) -> None:
        """Renew when half the TTL is gone: called while bytes flow."""
        if self.remaining < self._area.ttl / 2:
            async with self._writing:
                if self.remaining < self._area.ttl / 2:  # not renewed while we waited
                    area = self._area
                    now = area.clock()
                    renewed = self.record.renewed(self.holder, self.generation, now, area.ttl)
                    await self._write(renewed)

    async def confirm(self) -> None:
        """Before sending a part: renew if due, else check (a HEAD) that nobody wrote the
        record since, so a request taken over stops at its next part."""
        if self.remaining < self._area.ttl / 2:
            await self.keep()
            return
        if await self._area._etag_of(self.upload_id) != self._etag:
            fresh = await self._area.read(self.upload_id)
            fresh.check_holder(self.holder, self.generation)
            raise Busy("the upload's record changed under this request")

    async def close(self) -> None:
        """Let go of the lease (if the record still has it); never raises for a lost one."""
        if self._released:
            return
        lease = self.record.lease
        if lease is not None and lease.holder == self.holder:
            with suppress(Busy, NotFound, StorageError):
                await self.write(self.record.released(self.holder, self.generation))
        self._released = True


class UploadArea:
    """The `.uploads/` prefix of one S3 storage; see the module docstring."""

    def __init__(
        self,
        storage: UploadBucket,
        *,
        ttl: float = LEASE_TTL,
        instance: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.storage = storage
        self.bucket = storage.bucket
        self.dir = storage.prefix + UPLOADS_DIR
        self.ttl = ttl
        self.instance = instance or instance_name()
        self.clock = clock
        self._bare_if_match = False
        """Send If-Match's ETag without its quotes (learnt from the server, see _put)."""

    @property
    def client(self) -> S3Client:
        return self.storage.client

    async def prepare(self, now: float) -> None:
        """Nothing to make in a bucket; here for localstore's symmetry."""

    def key(self, upload_id: str, leaf: str) -> str:
        if not is_valid_id(upload_id):
            raise NotFound("no such upload")
        return f"{self.dir}{upload_id}/{leaf}"

    # --- the record -------------------------------------------------------------------

    async def create(self, record: UploadRecord) -> None:
        """A new upload's info, only if the id is new (ids are never reused)."""
        try:
            await self._put(record, if_none_match=True)
        except _Conflict:
            raise FileExistsError(f"upload {record.id} exists") from None

    async def read(self, upload_id: str) -> UploadRecord:
        record, _ = await self._get(upload_id)
        return record

    async def _get(self, upload_id: str) -> tuple[UploadRecord, str]:
        data, etag = await self._get_info(upload_id)
        return UploadRecord.from_json(data), etag

    async def _get_info(self, upload_id: str) -> tuple[bytes, str]:
        key = self.key(upload_id, "info")
        try:
            response = await self.client.get_object(Bucket=self.bucket, Key=key)
            async with response["Body"] as body:
                data = await body.read()
        except S3_ERRORS as error:
            if is_missing(error):
                raise NotFound("no such upload") from error
            raise storage_error(error, "reading an upload's record") from error
        return data, str(response["ETag"])

    async def _etag_of(self, upload_id: str) -> str:
        try:
            head = await self.client.head_object(
                Bucket=self.bucket, Key=self.key(upload_id, "info")
            )
        except S3_ERRORS as error:
            if is_missing(error):
                raise NotFound("the upload was removed") from error
            raise storage_error(error, "looking at an upload's record") from error
        return str(head["ETag"])

    async def _put(
        self, record: UploadRecord, *, if_match: str | None = None, if_none_match: bool = False
    ) -> str:
        """A conditional PutObject of the info; its new ETag, or _Conflict on 412."""
        data = record.to_json()
        condition: dict[str, Any] = {"IfNoneMatch": "*"} if if_none_match else {}
        if if_match is not None:
            condition["IfMatch"] = if_match.strip('"') if self._bare_if_match else if_match
        key = self.key(record.id, "info")
        try:
            response = await self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=data,
                ContentType="application/json",
                **condition,
            )
        except S3_ERRORS as error:
            if is_missing(error) and if_match is not None:
                raise NotFound("the upload was removed") from error
            if not is_taken(error):
                raise storage_error(error, "writing an upload's record") from error
            with suppress(NotFound):
                stored, etag = await self._get_info(record.id)
                if stored == data:
                    return etag  # our own write, whose answer was lost and retried
                if if_match is not None and etag == if_match and not self._bare_if_match:
                    # Refused although the ETag is the one we matched: the server compares
                    # If-Match with the bare ETag (Ceph RGW 16). From now on, send it bare.
                    log.info("the S3 server wants If-Match unquoted; sending it so")
                    self._bare_if_match = True
                    return await self._put(record, if_match=if_match)
            raise _Conflict() from error
        return str(response["ETag"])

    # --- the lease ----------------------------------------------------------------------

    async def lock(self, upload_id: str, *, take_over: bool = False) -> UploadLease:
        """The upload's lease now, or 409 busy; 404 if there is no such upload."""
        holder = f"{self.instance}:{secrets.token_hex(6)}"
        for _ in range(_ATTEMPTS):
            record, etag = await self._get(upload_id)
            now = self.clock()
            # Never take over a completion (it could publish the file twice): decided on
            # the very read the conditional write below depends on.
            forcing = take_over and record.status is Status.RECEIVING
            taken = record.acquire(holder, now, self.ttl, take_over=forcing)
            live = record.lease is not None and record.lease.until > now
            try:
                etag = await self._put(taken, if_match=etag)
            except _Conflict:
                continue  # someone wrote meanwhile: read again, their lease decides
            return UploadLease(self, holder, taken, etag, took_over=live)
        raise Busy("the upload's record keeps changing; ask for its offset again")

    @asynccontextmanager
    async def locked(
        self, upload_id: str, *, take_over: bool = False
    ) -> AsyncIterator[UploadLease]:
        lease = await self.lock(upload_id, take_over=take_over)
        try:
            yield lease
        finally:
            await asyncio.shield(lease.close())

    async def write_info(self, lease: UploadLease, record: UploadRecord) -> UploadRecord:
        """Store `record` under the lease (fenced); see UploadLease.write."""
        return await lease.write(record)

    async def appender(self, lease: UploadLease, record: UploadRecord) -> Appender:
        return await Appender.open(self, lease, record)

    # --- completion -----------------------------------------------------------------------

    async def complete(self, lease: UploadLease, record: UploadRecord) -> str:
        """All bytes as one object at the upload's staging key, which the commit publishes
        with `s3upload.publish_staged`; stores `record` (finish()'s) with the key."""
        return await complete(self, lease, record)

    async def chunks(self, record: UploadRecord, size: int = 1024 * 1024) -> AsyncIterator[bytes]:
        """The bytes of a completed upload (its staged object), read once: for the virus
        scan and for a final concatenation."""
        staged = record.backend.get("staged")
        if not staged:
            raise StorageError("the upload is not complete")
        try:
            response = await self.client.get_object(Bucket=self.bucket, Key=staged)
            async with response["Body"] as body:
                while piece := await body.read(size):
                    yield piece
        except S3_ERRORS as error:
            raise storage_error(error, "reading an upload's bytes") from error

    # --- removal and expiry -------------------------------------------------------------

    async def remove(self, lease: UploadLease) -> None:
        """Cancel or expire: abort every multipart upload and delete every object under the
        upload's prefix, the info last (so a removal cut short is found and done again)."""
        await lease.write(lease.record)  # the same record, if still ours: the fence
        await self._delete_all(lease.upload_id)
        lease._released = True

    async def remove_unreadable(self, upload_id: str) -> bool:
        """Retention's way with a record `expired` listed as unreadable (no lease can be
        taken on it, and no writer can have written it): remove the upload if its record
        is still unreadable. True if it was removed."""
        try:
            await self.read(upload_id)
        except NotFound:
            return False
        except CorruptRecord:
            await self._delete_all(upload_id)
            return True
        return False

    async def _delete_all(self, upload_id: str) -> None:
        prefix = self.key(upload_id, "")
        client, janitor = self.client, self.storage.janitor
        info = self.key(upload_id, "info")
        try:
            async for page in client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=prefix
            ):
                for upload in page.get("Uploads", []):
                    await janitor.remove(Leftover(upload["Key"], upload["UploadId"]))
            keys = await self._keys(prefix)
            for key in keys:
                if key != info:
                    await janitor.remove(Leftover(key))
            await janitor.remove(Leftover(info))
        except S3_ERRORS as error:
            raise storage_error(error, "removing an upload") from error

    async def _keys(self, prefix: str) -> list[str]:
        keys: list[str] = []
        async for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        ):
            keys += [item["Key"] for item in page.get("Contents", [])]
        return keys

    async def listing(self) -> list[str]:
        """Every object key under the uploads area (retention's one listing per sweep)."""
        try:
            return await self._keys(self.dir)
        except S3_ERRORS as error:
            raise storage_error(error, "listing uploads") from error

    async def ids(self, keys: list[str] | None = None) -> list[str]:
        """The uploads with an info, from `keys` (a `listing()`) or a listing now."""
        keys = await self.listing() if keys is None else keys
        found = {key.removeprefix(self.dir).partition("/") for key in keys}
        return sorted(upload_id for upload_id, _, leaf in found if leaf == "info")

    async def expired(self, now: float, keys: list[str] | None = None) -> list[str]:
        """Uploads for retention to remove: past their expiry, cancelled, or unreadable
        (from `keys`, a `listing()`, if given)."""
        due = []
        for upload_id in await self.ids(keys):
            try:
                record = await self.read(upload_id)
            except NotFound:
                continue  # removed meanwhile
            except CorruptRecord:
                due.append(upload_id)
                continue
            if now >= record.expires or record.status is Status.CANCELLED:
                due.append(upload_id)
        return due
