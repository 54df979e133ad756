"""One request's bytes into an upload on S3: parts, the tail, and completion.

The bytes go into one multipart upload per resumable upload (`<id>/data`, made by the
first part). Each part is at least the storage's part size (S3's minimum is 5 MiB, and
all but the last part must reach it); what an acknowledge leaves short of a part is the
tail, its own small object, prepended to the next part (as tusd's `.part`). The record's
`backend` says what is acknowledged:

    {"upload": multipart upload id or None, "parts": [[number, etag, size], ...],
     "tail": key or None, "tail_size": bytes, "staged": key once complete}

so the offset is the parts' sizes plus the tail's. Parts uploaded but not acknowledged
(the request failed, or its checksum did not match) are forgotten: the next request
uploads the same part numbers again, and completion names only the recorded parts
(where a server refuses to leave the others out, as RGW does: s3strays.py).

Memory: the tail plus what arrived (under a part), and one part in flight, as S3Writer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from contextlib import suppress
from typing import TYPE_CHECKING, Any, Protocol

from botocore.exceptions import ClientError

from ..storage.base import StorageError
from ..storage.s3body import PartReader
from ..storage.s3cleanup import Leftover
from ..storage.s3meta import S3_ERRORS, error_code, storage_error
from .problems import Busy
from .s3strays import copy_ranges, fill_short_strays, kept_ranges
from .state import CorruptRecord, Status, UploadRecord

if TYPE_CHECKING:
    from types_aiobotocore_s3.client import S3Client

    from ..storage.s3cleanup import Janitor

log = logging.getLogger("streamproxy.storage")


class AreaBucket(Protocol):
    """What appending needs of the storage behind the uploads area."""

    part_size: int
    janitor: Janitor

    async def create_upload(self, key: str, **arguments: Any) -> str: ...


class UploadArea(Protocol):
    """What appending needs of the uploads area (`s3store.UploadArea` is one); a
    protocol here, so this module does not import the store that imports it."""

    bucket: str
    ttl: float

    @property
    def storage(self) -> AreaBucket: ...

    @property
    def client(self) -> S3Client: ...

    def clock(self) -> float: ...

    def key(self, upload_id: str, leaf: str) -> str: ...


class UploadLease(Protocol):
    """What appending needs of the lease (`s3store.UploadLease` is one)."""

    upload_id: str
    generation: int
    took_over: bool
    record: UploadRecord

    @property
    def held(self) -> bool: ...

    @property
    def remaining(self) -> float: ...

    async def write(self, record: UploadRecord) -> UploadRecord: ...

    async def keep(self) -> None: ...

    async def confirm(self) -> None: ...


MAX_PART_NUMBER = 10_000
Part = list[Any]
"""[number, etag, size]: JSON has no tuples."""


def last_number(parts: list[Part]) -> int:
    return max((int(part[0]) for part in parts), default=0)


async def first_number(
    area: UploadArea,
    lease: UploadLease,
    upload_id: str | None,
    parts: list[Part],
    *,
    past_all: bool = False,
) -> int:
    """The number of this request's first part: after the recorded parts; after a
    take-over, also past every part the older request sent, plus one for the part it may
    still have in flight (it checks the record before each part, so it sends at most
    that one more). `past_all`: past every part in S3 whatever sent it (the tail at
    completion, which must be the last part where stray parts stay: s3strays.py)."""
    last = last_number(parts)
    if not (lease.took_over or past_all) or upload_id is None:
        return last + 1
    try:
        async for page in area.client.get_paginator("list_parts").paginate(
            Bucket=area.bucket, Key=area.key(lease.upload_id, "data"), UploadId=upload_id
        ):
            last = max([last, *(part["PartNumber"] for part in page.get("Parts", []))])
    except S3_ERRORS as error:
        raise storage_error(error, "listing the upload's parts") from error
    return last + 2 if lease.took_over else last + 1


def backend_of(record: UploadRecord) -> dict[str, Any]:
    """The record's S3 bookkeeping, with the defaults of an upload that has no bytes yet."""
    backend = record.backend
    return {
        "upload": backend.get("upload"),
        "parts": [list(part) for part in backend.get("parts", [])],
        "tail": backend.get("tail"),
        "tail_size": int(backend.get("tail_size", 0)),
        "staged": backend.get("staged"),
    }


class Appender:
    """Writes one request's bytes after the acknowledged offset, and acknowledges them."""

    def __init__(self, area: UploadArea, lease: UploadLease, record: UploadRecord) -> None:
        if not lease.held or lease.upload_id != record.id:
            raise Busy("appending needs this upload's lease")
        self._area = area
        self._lease = lease
        self.record = record
        self.written = 0
        self._part_size = area.storage.part_size
        self._acked = backend_of(record)
        parts_size = sum(int(part[2]) for part in self._acked["parts"])
        if parts_size + self._acked["tail_size"] != record.offset:
            raise CorruptRecord(f"upload {record.id}: its parts and tail are not its offset")
        self._upload_id: str | None = self._acked["upload"]
        self._buffer: bytearray | None = None  # None: the tail is not read yet
        self._pending: list[Part] = []  # uploaded in this request, not acknowledged
        self._sending: asyncio.Task[Part] | None = None
        self._next_number: int | None = None  # the next part's number, once known
        self._failed: BaseException | None = None
        """A part that did not make it: this request's bytes cannot all be kept (the
        running MD5 covers them all), so only discard() goes on from here."""

    @classmethod
    async def open(cls, area: UploadArea, lease: UploadLease, record: UploadRecord) -> Appender:
        return cls(area, lease, record)

    @property
    def _key(self) -> str:
        return self._area.key(self.record.id, "data")

    async def write(self, piece: bytes | bytearray | memoryview) -> None:
        self._check_whole()
        await self._lease.keep()  # renewed while bytes flow
        buffer = await self._loaded()
        buffer += piece
        self.written += len(piece)
        if len(buffer) >= self._part_size:
            await self._send(buffer)

    async def _loaded(self) -> bytearray:
        """The buffer, beginning with the acknowledged tail (read once per request)."""
        if self._buffer is None:
            buffer = bytearray()
            tail = self._acked["tail"]
            if tail:
                try:
                    response = await self._area.client.get_object(
                        Bucket=self._area.bucket, Key=tail
                    )
                    async with response["Body"] as body:
                        buffer += await body.read()
                except S3_ERRORS as error:
                    raise storage_error(error, "reading the upload's tail") from error
                if len(buffer) != self._acked["tail_size"]:
                    raise StorageError("the upload's tail is not the size its record says")
            self._buffer = buffer
        return self._buffer

    async def _send(self, buffer: bytearray) -> None:
        """Send `buffer` as the next part, once the part before it is through."""
        await self._sent()
        if self._next_number is None:
            self._next_number = await self._first_number()
        number, self._next_number = self._next_number, self._next_number + 1
        if number > MAX_PART_NUMBER:
            raise StorageError("the upload has used all of S3's part numbers")
        self._buffer = bytearray()
        self._sending = asyncio.ensure_future(self._upload_part(number, buffer))

    async def _sent(self) -> None:
        if self._sending is not None:
            sending, self._sending = self._sending, None
            try:
                self._pending.append(await sending)
            except BaseException as error:
                self._failed = error
                raise

    def _check_whole(self) -> None:
        if self._failed is not None:
            raise StorageError(
                "a part of this request was not stored; resume from the acknowledged offset"
            ) from self._failed

    async def _first_number(self) -> int:
        return await first_number(self._area, self._lease, self._upload_id, self._acked["parts"])

    async def _upload_part(self, number: int, buffer: bytearray) -> Part:
        area, lease = self._area, self._lease
        await lease.confirm()
        if self._upload_id is None:
            self._upload_id = await area.storage.create_upload(self._key)
        try:
            # Done before the lease runs out, or not at all: the next holder may then
            # write this part number (an unfinished body is never a part).
            async with asyncio.timeout(lease.remaining):
                response = await area.client.upload_part(
                    Bucket=area.bucket,
                    Key=self._key,
                    UploadId=self._upload_id,
                    PartNumber=number,
                    Body=PartReader(buffer),
                )
        except TimeoutError as error:
            raise Busy("the upload's lease ran out while a part was sent") from error
        except S3_ERRORS as error:
            raise storage_error(error, f"uploading part {number}") from error
        return [number, response["ETag"], len(buffer)]

    async def discard(self) -> None:
        """Forget this request's bytes (tus checksum mismatch): back to the record's offset."""
        if self._sending is not None:
            sending, self._sending = self._sending, None
            sending.cancel()
            with suppress(asyncio.CancelledError, Busy, StorageError, *S3_ERRORS):
                await sending
        self._pending, self._failed, self._next_number = [], None, None
        self._buffer = None  # read the acknowledged tail again if more comes
        self.written = 0
        made, self._upload_id = self._upload_id, self._acked["upload"]
        if made is not None and made != self._acked["upload"]:
            # Made by this request and recorded nowhere: nobody else will ever use it.
            janitor = self._area.storage.janitor
            await asyncio.shield(janitor.discard(Leftover(self._key, made)))

    async def acknowledge(self, record: UploadRecord) -> UploadRecord:
        """Make `record` (offset + written) the truth: parts and tail stored first, then the
        info, conditionally. Returns the record as stored (its backend and lease filled in)."""
        if record.id != self.record.id or record.offset != self.record.offset + self.written:
            raise ValueError(
                f"record at offset {record.offset} does not follow "
                f"{self.record.offset} + {self.written} written bytes"
            )
        self._check_whole()
        await self._sent()
        backend = dict(self._acked)
        old_tail = backend["tail"]
        if self.written:
            buffer = await self._loaded()
            backend["parts"] = self._acked["parts"] + self._pending
            backend["upload"] = self._upload_id
            backend["tail"] = await self._put_tail(record.offset, buffer) if buffer else None
            backend["tail_size"] = len(buffer)
        lease, janitor = self._lease, self._area.storage.janitor
        now = self._area.clock()
        stored = record_with(record, backend, lease.record, now, self._area.ttl)
        try:
            stored = await lease.write(stored)
        except Busy:
            if backend["tail"] and backend["tail"] != old_tail:  # ours, and nobody's now
                await asyncio.shield(janitor.discard(Leftover(backend["tail"])))
            raise
        if old_tail and old_tail != backend["tail"]:
            await janitor.discard(Leftover(old_tail))
        self.record, self._acked = stored, backend
        self._pending, self.written = [], 0
        return stored

    async def _put_tail(self, offset: int, buffer: bytearray) -> str:
        """A fresh key per acknowledge: the acknowledged tail is never overwritten."""
        area = self._area
        key = area.key(self.record.id, f"tail.{self._lease.generation}.{offset}")
        try:
            async with asyncio.timeout(self._lease.remaining):
                await area.client.put_object(Bucket=area.bucket, Key=key, Body=bytes(buffer))
        except TimeoutError as error:
            raise Busy("the upload's lease ran out while its tail was written") from error
        except S3_ERRORS as error:
            raise storage_error(error, "writing the upload's tail") from error
        return key

    async def close(self) -> None:
        """Stop a part still in flight (its bytes were never acknowledged)."""
        await self.discard()

    async def __aenter__(self) -> Appender:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def record_with(
    record: UploadRecord, backend: dict[str, Any], stored: UploadRecord, now: float, ttl: float
) -> UploadRecord:
    """`record` with our bookkeeping and the lease as stored, renewed (bytes flowed)."""
    lease = stored.lease
    if lease is not None:
        lease = dataclasses.replace(lease, until=now + ttl)
    return dataclasses.replace(record, backend=backend, lease=lease, generation=stored.generation)


async def complete(area: UploadArea, lease: UploadLease, record: UploadRecord) -> str:
    """The whole upload as one object at its staging key `<id>/data`, for the commit to
    publish (s3upload.publish_staged); stores `record` (COMPLETE) with the key. Safe to
    call again after a failure: a completed multipart upload is found by its object."""
    if record.status is not Status.COMPLETE:
        raise ValueError("complete() takes the record finish() returned")
    acked = backend_of(lease.record)
    if acked["staged"]:
        return str(acked["staged"])
    key = area.key(record.id, "data")
    assembled = lease.record.backend.get("assembled")  # with stray parts (s3strays.py)
    if assembled is None:
        assembled = await _complete_data(area, lease, record, acked, key)
    staged = key
    if assembled is not None:
        staged = area.key(record.id, "whole")
        await lease.keep()
        await copy_ranges(area, key, staged, assembled["ranges"])
    backend = {**acked, "upload": None, "parts": [], "tail": None, "tail_size": 0, "staged": staged}
    await lease.write(record_with(record, backend, lease.record, area.clock(), area.ttl))
    if acked["tail"]:
        await area.storage.janitor.discard(Leftover(acked["tail"]))
    if staged != key:
        await area.storage.janitor.discard(Leftover(key))
    await _abort_unrecorded(area, key)
    return staged


async def _complete_data(
    area: UploadArea, lease: UploadLease, record: UploadRecord, acked: dict[str, Any], key: str
) -> dict[str, Any] | None:
    """The upload's bytes as the object `key`: None, or with stray parts on a server that
    refuses to leave them out, the record's `assembled` (its parts' ranges in `key`)."""
    client, bucket = area.client, area.bucket
    tail = b""
    if acked["tail"]:
        try:
            response = await client.get_object(Bucket=bucket, Key=acked["tail"])
            async with response["Body"] as body:
                tail = await body.read()
        except S3_ERRORS as error:
            raise storage_error(error, "reading the upload's tail") from error
    parts = acked["parts"]
    try:
        if not parts:  # all of it is in the tail: one PutObject, no multipart upload
            if acked["upload"]:  # made by a request whose parts were all discarded
                await area.storage.janitor.discard(Leftover(key, acked["upload"]))
            await client.put_object(Bucket=bucket, Key=key, Body=tail)
        else:
            await lease.keep()
            if tail:
                number = await first_number(area, lease, acked["upload"], parts, past_all=True)
                response_part = await client.upload_part(
                    Bucket=bucket, Key=key, UploadId=acked["upload"], PartNumber=number, Body=tail
                )
                parts = [*parts, [number, response_part["ETag"], len(tail)]]
            try:
                await _complete_multipart(area, key, acked["upload"], parts, record.offset)
            except ClientError as error:
                if error_code(error) != "InvalidPart":
                    raise
                return await _complete_with_strays(area, lease, acked, key, parts)
    except S3_ERRORS as error:
        raise storage_error(error, "completing the upload") from error
    return None


async def _complete_with_strays(
    area: UploadArea, lease: UploadLease, acked: dict[str, Any], key: str, parts: list[Part]
) -> dict[str, Any]:
    """Complete with every part the upload holds, and record where our own parts are."""
    listed = await fill_short_strays(area, key, acked["upload"], parts)
    assembled = {"ranges": kept_ranges(listed, parts)}
    log.info("upload %s: completing with %d stray parts", lease.upload_id, len(listed) - len(parts))
    await _complete_multipart(area, key, acked["upload"], listed, sum(p[2] for p in listed))
    backend = {**acked, "upload": None, "assembled": assembled}
    await lease.write(record_with(lease.record, backend, lease.record, area.clock(), area.ttl))
    return assembled


async def _abort_unrecorded(area: UploadArea, key: str) -> None:
    """After completion no multipart upload of `<id>/data` is anyone's: abort what a
    request that died mid-part (SIGKILL, a lost lease) made and never recorded, rather
    than leave its parts billed until the upload expires."""
    janitor = area.storage.janitor
    try:
        async for page in area.client.get_paginator("list_multipart_uploads").paginate(
            Bucket=area.bucket, Prefix=key
        ):
            for upload in page.get("Uploads", []):
                if upload["Key"] == key:
                    await janitor.discard(Leftover(key, upload["UploadId"]))
    except S3_ERRORS as error:  # the upload's removal (expiry) takes them all anyway
        log.warning("could not list the multipart uploads left under %s: %r", key, error)


async def _complete_multipart(
    area: UploadArea, key: str, upload_id: str, parts: list[Part], size: int
) -> None:
    try:
        await area.client.complete_multipart_upload(
            Bucket=area.bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etag} for n, etag, _ in parts]},
        )
    except S3_ERRORS as error:
        if not isinstance(error, ClientError) or error_code(error) != "NoSuchUpload":
            raise
        # Completed by an earlier try whose record write did not happen?
        head = await area.client.head_object(Bucket=area.bucket, Key=key)
        if int(head["ContentLength"]) != size:
            raise
