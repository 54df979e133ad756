"""One upload into S3, and its commit that never replaces a file.

Bytes gather in a part buffer. A full part starts uploading in the background
when the next chunk arrives, while the pump goes on filling the next buffer;
the next part waits for the previous one to finish. So a transfer holds at most
two parts, and a slow bucket slows the client instead of growing memory. The two
buffers are reused part after part: allocating a fresh 8 MiB buffer per part
left glibc holding freed ones, adding about half again to the peak RSS.

Commit, without ever replacing a name and with nothing visible before it:
- A file that fits one part is still all in memory: one PutObject with
  `If-None-Match: *` per candidate name, the next name on 412.
- A larger file went into a multipart upload under a staging key
  (`PREFIX.tmp/TIME-UUID`), which downloads cannot name. Commit completes it there,
  then copies it server-side (UploadPartCopy, no byte through us) into a new
  multipart upload on the candidate name, completed with `If-None-Match: *`:
  on 412 that upload is aborted and the next name tried. CopyObject would be
  one call, but not every S3-compatible server honours its If-None-Match
  (moto silently replaces), whereas the conditional CompleteMultipartUpload is
  the primitive AWS, MinIO and moto all implement; start-up checks it. Where
  the server ignores it there (RGW 16), the name is claimed first with a
  conditional PutObject and the completion goes without a condition (`s3nameclaim`).

A conditional write whose answer was lost may have happened: aiohttp or
botocore retries it unseen, and the retry finds the name taken (412), or no
answer comes at all. Every object carries its writer's random token
(`x-amz-meta-writer`), so after a failure that may hide a write the writer
looks at the name: if the object there is its own, the file is stored, and
saying 412 (next name) or 503 would leave a file under a name nobody is told.
A claim whose answer was lost is recognised the same way, by its UUID.

Every multipart upload and staging object is discarded on every way out; see
`s3cleanup` for when S3 itself is away.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from botocore.exceptions import ClientError

from .base import FileInfo, NoFreeName, Observer, Piece, StorageError, StoredMeta
from .interruptions import Interruptions
from .s3body import PartReader
from .s3cleanup import Janitor, Leftover, staging_key
from .s3copy import copy_ranges
from .s3meta import S3_ERRORS, encode, http_status, is_taken, storage_error
from .s3nameclaim import Claim, take

if TYPE_CHECKING:
    from types_aiobotocore_s3.client import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef, HeadObjectOutputTypeDef


WRITER = "writer"  # the user metadata key of the writer's token
_T = TypeVar("_T")


class Bucket(Protocol):
    """What a writer needs of its storage, and no more: the bucket and its keys, the
    two lookups, and where to run and track work. `S3Storage` is one."""

    bucket: str
    staging_prefix: str
    chunk_size: int
    janitor: Janitor
    claims: bool  # publish large files by claiming the name first (`s3nameclaim`)
    stale_after: float

    @property
    def client(self) -> S3Client: ...

    def key(self, name: str) -> str: ...

    async def create_upload(self, key: str, **arguments: Any) -> str: ...

    async def exists(self, key: str) -> bool: ...

    async def head_object(self, key: str, doing: str) -> HeadObjectOutputTypeDef | None: ...

    def run_blocking(self, function: Callable[..., _T], *args: Any) -> asyncio.Future[_T]: ...

    def track(self, discard: Coroutine[Any, Any, None]) -> asyncio.Task[None]: ...


class S3Writer:
    """Stages one upload; see the module docstring."""

    def __init__(self, storage: Bucket, observer: Observer, part_size: int) -> None:
        self._storage = storage
        self._observer = observer
        self._part_size = part_size
        self._buffer = bytearray()  # grows for the first part, then is reused
        self._filled = 0  # bytes of the buffer that belong to the current part
        self._spare: bytearray | None = None  # the other buffer, once its part is sent
        self._staging_key = staging_key(storage.staging_prefix)
        self._upload_id: str | None = None
        self._parts: list[CompletedPartTypeDef] = []
        self._next_part = 1
        self._sending: asyncio.Task[None] | None = None
        self._taking: asyncio.Future[None] | None = None
        # The pump may queue the next write before this one ends: they go in turn.
        self._in_turn = asyncio.Lock()
        self._staged = False  # the staging upload was (perhaps) completed into an object
        self._token = uuid.uuid4().hex  # tells our own object from another writer's
        self._done = False

    # --- writing ------------------------------------------------------------------

    def _take(self, pieces: Sequence[Piece]) -> None:
        """On a worker thread: hash and buffer in the same trip (hashlib releases the GIL)."""
        for piece in pieces:
            self._observer(piece)
            end = self._filled + len(piece)
            # In place while it fits; past the end the slice assignment grows the buffer.
            self._buffer[self._filled : min(end, len(self._buffer))] = piece
            self._filled = end

    async def write(self, pieces: Sequence[Piece]) -> None:
        async with self._in_turn:
            if self._done:
                raise StorageError("the upload is already finished")
            if self._filled >= self._part_size:
                await self._flush()
            self._taking = self._storage.run_blocking(self._take, pieces)
            await self._taking

    async def _flush(self) -> None:
        """Send the buffer as the next part, once the part before it is through."""
        await self._sent()
        if self._done:  # aborted while we waited: start nothing more
            raise StorageError("the upload was aborted")
        part, filled = self._buffer, self._filled
        # A reused buffer may be longer than this part: trimming keeps its memory.
        del part[filled:]
        self._buffer = self._spare or bytearray(self._part_size + self._storage.chunk_size)
        self._spare, self._filled = None, 0
        number, self._next_part = self._next_part, self._next_part + 1
        self._sending = asyncio.ensure_future(self._send_part(number, part))

    async def _sent(self) -> None:
        """Wait for the part in flight; it stays on `self` meanwhile, for `_discard` to cancel."""
        if self._sending is not None:
            await self._sending
            self._sending = None

    async def _send_part(self, number: int, buffer: bytearray) -> None:
        storage = self._storage
        if self._upload_id is None:
            self._upload_id = await storage.create_upload(self._staging_key)
        body = PartReader(buffer)
        try:
            response = await storage.client.upload_part(
                Bucket=storage.bucket,
                Key=self._staging_key,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=body,
            )
        except S3_ERRORS as error:
            raise storage_error(error, f"uploading part {number}") from error
        self._parts.append({"PartNumber": number, "ETag": response["ETag"]})
        if body.release():  # the request is complete: reuse the buffer for a later part
            self._spare = buffer

    # --- commit ---------------------------------------------------------------------

    async def commit(self, names: Iterable[str], info: FileInfo) -> StoredMeta:
        if self._done:
            raise StorageError("the upload is already finished")
        # The same object arguments for every candidate name: encoded once.
        metadata = encode(info) | {WRITER: self._token}
        arguments = {"ContentType": info.type, "Metadata": metadata}
        try:
            if self._next_part == 1:
                return await self._put_whole(names, info, arguments)
            await self._flush()
            await self._sent()
            await self._complete_staging()
            return await self._publish_copy(names, info, arguments)
        finally:
            await asyncio.shield(self._storage.track(self._discard()))

    async def _put_whole(
        self, names: Iterable[str], info: FileInfo, arguments: dict[str, Any]
    ) -> StoredMeta:
        storage = self._storage
        for name in names:
            try:
                await storage.client.put_object(
                    Bucket=storage.bucket,
                    Key=storage.key(name),
                    Body=PartReader(self._buffer),
                    IfNoneMatch="*",
                    **arguments,
                )
            except S3_ERRORS as error:
                if await self._written_by_us(name, error):
                    return StoredMeta(name, info)
                if is_taken(error):
                    continue
                raise storage_error(error, "saving the file") from error
            return StoredMeta(name, info)
        raise NoFreeName("every candidate name is taken")

    async def _written_by_us(self, name: str, error: BaseException, unsure: bool = False) -> bool:
        """After a failed write of `name`: did a try whose answer was lost store it?
        `unsure`: even a refusal may follow a lost answer (an unconditional completion's
        retry finds its upload gone)."""
        refused = isinstance(error, ClientError) and http_status(error) < 500
        if refused and not (unsure or is_taken(error)):
            return False  # S3 refused the write outright
        try:
            head = await self._storage.head_object(self._storage.key(name), "looking a name up")
        except StorageError:
            return False
        return head is not None and head.get("Metadata", {}).get(WRITER) == self._token

    async def _complete_staging(self) -> None:
        storage = self._storage
        assert self._upload_id is not None
        self._staged = True
        try:
            await storage.client.complete_multipart_upload(
                Bucket=storage.bucket,
                Key=self._staging_key,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": self._parts},  # in order: parts go one at a time
            )
        except S3_ERRORS as error:
            raise storage_error(error, "completing the upload") from error
        self._upload_id = None

    async def _publish_copy(
        self, names: Iterable[str], info: FileInfo, arguments: dict[str, Any]
    ) -> StoredMeta:
        storage = self._storage
        for name in names:
            key = storage.key(name)
            if await storage.exists(key):
                continue  # known taken: spare the copy (the condition below still decides)
            claim = Claim.new(storage.staging_prefix, key) if storage.claims else None
            if claim is not None and not await self._claim(claim):
                continue
            # Where the server ignores the condition, our claim holds the name.
            condition: dict[str, Any] = {} if claim is not None else {"IfNoneMatch": "*"}
            upload_id: str | None = None
            try:
                upload_id = await storage.create_upload(key, **arguments)
                parts = await copy_ranges(
                    storage.client,
                    storage.bucket,
                    self._staging_key,
                    key,
                    upload_id,
                    [[0, info.size]],
                )
                if claim is not None and claim.too_old(storage.stale_after):
                    raise StorageError("the copy outlasted half of --stale-after; not published")
                await storage.client.complete_multipart_upload(
                    Bucket=storage.bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                    **condition,
                )
            except BaseException as error:
                await asyncio.shield(storage.track(self._unpublish(key, upload_id, claim)))
                if not isinstance(error, S3_ERRORS):
                    raise
                if await self._written_by_us(name, error, unsure=claim is not None):
                    return StoredMeta(name, info)
                if is_taken(error) and claim is None:
                    continue
                raise storage_error(error, "publishing the file") from error
            if claim is not None:  # the name is the file's now: only the record is left
                await storage.janitor.discard(Leftover(claim.record))
            return StoredMeta(name, info)
        raise NoFreeName("every candidate name is taken")

    async def _claim(self, claim: Claim) -> bool:
        """Claim a name (`s3nameclaim`): True if ours; on False or an error, released."""
        storage = self._storage
        try:
            if await take(storage.client, storage.bucket, claim):
                return True
        except BaseException:
            await asyncio.shield(storage.track(self._release(claim)))
            raise
        await asyncio.shield(storage.track(self._release(claim)))
        return False

    async def _release(self, claim: Claim) -> None:
        await self._storage.janitor.discard(Leftover.of_claim(claim, self._storage.stale_after))

    async def _unpublish(self, key: str, upload_id: str | None, claim: Claim | None) -> None:
        """Abort the upload on the name, then release our claim on it: only once the abort
        is done can no completion of ours land after the claim is gone."""
        janitor = self._storage.janitor
        if upload_id is not None:
            upload = Leftover(key, upload_id)
            if claim is None:
                await janitor.discard(upload)
                return
            try:
                await janitor.remove(upload)
            except S3_ERRORS:
                janitor.later(upload)  # the claim stays for the stale sweep
                return
        if claim is not None:
            await self._release(claim)

    # --- abort ------------------------------------------------------------------------

    async def abort(self) -> None:
        if not self._done:
            await asyncio.shield(self._storage.track(self._discard()))

    async def _discard(self) -> None:
        """Stop what is in flight and remove what was staged; idempotent. Raises only a
        cancellation or interrupt that arrived meanwhile, once all that is done."""
        self._done = True
        interruptions = Interruptions()
        if self._taking is not None and not self._taking.done():
            # A worker thread may still be appending to the buffer: let it finish.
            await interruptions.wait(self._taking)
        self._buffer, self._spare, self._filled = bytearray(), None, 0
        if self._sending is not None:
            sending, self._sending = self._sending, None
            sending.cancel()
            await interruptions.wait(sending)
        janitor = self._storage.janitor
        if self._upload_id is not None:
            upload_id, self._upload_id = self._upload_id, None
            await janitor.discard(Leftover(self._staging_key, upload_id))
        if self._staged:
            self._staged = False
            await janitor.discard(Leftover(self._staging_key))
        interruptions.reraise()


async def publish_staged(
    storage: Bucket, staging: str, names: Iterable[str], info: FileInfo
) -> StoredMeta:
    """Publish an object already whole at `staging` (a finished resumable upload) as a
    writer's commit does: copied server-side under the first free name, never replacing
    one. The staging object stays: its owner deletes it once the commit is recorded."""
    writer = S3Writer(storage, _ignore, 0)
    writer._staging_key = staging
    writer._done = True  # takes no bytes
    metadata = encode(info) | {WRITER: writer._token}  # as commit: a lost answer is read back
    arguments = {"ContentType": info.type, "Metadata": metadata}
    return await writer._publish_copy(names, info, arguments)


def _ignore(piece: Piece) -> None:
    """The observer of a writer that takes no bytes."""
