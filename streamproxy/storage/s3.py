"""S3-compatible storage (AWS S3, MinIO, Ceph RGW) through aiobotocore.

Layout under `s3://BUCKET/PREFIX`:
    PREFIX/NAME            the file, with its FileInfo as user metadata (`s3meta`)
    PREFIX/.tmp/TIME-UUID  staging objects of large uploads, never a stored name
    PREFIX/.claims/KEY     one-time claims (upload links used), `s3claims`
    PREFIX/.keys/PURPOSE   secrets shared by every instance on the bucket (`s3erase`)

Stored names never contain `/` nor start with a dot, so no name reaches the
staging area. Many instances may share one bucket and prefix: names are taken
with conditional writes (`s3upload`; on servers that ignore the condition on
CompleteMultipartUpload, by a claim first, `s3nameclaim`), and nothing is kept on
the instance. An object that is a claim is no file: every reader here skips it.
Uploads are in `s3upload`; this module opens the client, checks the bucket, and
reads files back with ranged GETs at constant memory.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from botocore.exceptions import ClientError, NoCredentialsError

from ..runtime.settings import DEFAULT_CHUNK_SIZE, Settings, SettingsError
from . import s3claims
from .base import FileMissing, Observer, OneTimeClaims, StorageError, StoredMeta
from .s3cleanup import LAST_TRY, STAGING_DIR, Janitor, remove_stale
from .s3erase import S3Erasure
from .s3meta import (
    S3_ERRORS,
    TRANSPORT_ERRORS,
    decode,
    error_code,
    http_status,
    is_missing,
    storage_error,
)
from .s3nameclaim import is_claim
from .s3probe import needs_claims
from .s3upload import S3Writer

if TYPE_CHECKING:
    from types_aiobotocore_s3.client import S3Client
    from types_aiobotocore_s3.type_defs import HeadObjectOutputTypeDef

log = logging.getLogger("streamproxy.storage")

MAX_PARTS = 10_000
MiB = 1024 * 1024
_T = TypeVar("_T")

# One botocore session per process: it parses the S3 service model once (~0.2 s).
_SESSION: AioSession | None = None
# (endpoint, bucket) pairs whose conditional writes were seen to hold, in this process:
# whether large files need claims there (CompleteMultipartUpload ignores the condition).
_VERIFIED: dict[tuple[str | None, str], bool] = {}


def _session() -> AioSession:
    global _SESSION
    if _SESSION is None:
        _SESSION = AioSession()
    return _SESSION


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str  # "" or ending in "/"

    @classmethod
    def parse(cls, url: str) -> S3Location:
        """`s3://bucket` or `s3://bucket/some/prefix` (a trailing slash is implied)."""
        rest = url.removeprefix("s3://")
        bucket, _, prefix = rest.partition("/")
        if not bucket or any(ch in bucket for ch in "?#\\ "):
            raise SettingsError(f"--storage {url}: expected s3://bucket/prefix")
        prefix = prefix.strip("/")
        return cls(bucket, prefix + "/" if prefix else "")


def effective_part_size(part_size: int, max_size: int) -> int:
    """The part size, grown (to whole MiB) until the cap fits in S3's 10,000 parts."""
    needed = math.ceil(math.ceil(max_size / MAX_PARTS) / MiB) * MiB
    return max(part_size, needed)


class S3File:
    """A stored object, read with ranged GETs pinned to the object HEAD saw."""

    def __init__(self, storage: S3Storage, meta: StoredMeta, key: str, s3_etag: str) -> None:
        self.meta = meta
        self._storage = storage
        self._key = key
        self._s3_etag = s3_etag

    async def chunks(self, start: int, length: int) -> AsyncIterator[bytes]:
        if length <= 0:
            return
        storage = self._storage
        extra: dict[str, Any] = {}
        if start or length != self.meta.info.size:
            extra["Range"] = f"bytes={start}-{start + length - 1}"
        if self._s3_etag:
            extra["IfMatch"] = self._s3_etag
        try:
            response = await storage.client.get_object(
                Bucket=storage.bucket, Key=self._key, **extra
            )
        except S3_ERRORS as error:
            raise storage_error(error, "reading the file") from error
        async with response["Body"] as body:
            remaining = length
            while remaining > 0:
                try:
                    data = await body.read(min(storage.chunk_size, remaining))
                except S3_ERRORS as error:
                    raise storage_error(error, "reading the file") from error
                if not data:
                    raise StorageError("the object is shorter than its metadata says")
                remaining -= len(data)
                yield data


class S3Storage(OneTimeClaims):
    """Files in a bucket under a prefix; see the module docstring."""

    def __init__(
        self,
        location: S3Location,
        *,
        endpoint: str | None = None,
        region: str | None = None,
        part_size: int = 8 * MiB,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        stale_after: float = 86400.0,
        claims: bool = False,
    ) -> None:
        """`claims`: claim names first even where the server would not need it (tests);
        otherwise start-up's probe decides."""
        self.bucket = location.bucket
        self.prefix = location.prefix
        self.staging_prefix = self.prefix + STAGING_DIR
        self.endpoint = endpoint
        self.region = region
        self.part_size = part_size
        self.chunk_size = chunk_size
        self.stale_after = stale_after
        self.claims = self._force_claims = claims
        where = endpoint or "AWS"
        self.description = f"S3 bucket {self.bucket!r} prefix {self.prefix!r} at {where}"
        self._client: S3Client | None = None
        self._stack: AsyncExitStack | None = None
        self._executor: ThreadPoolExecutor | None = None
        self.janitor = Janitor(lambda: self.client, self.bucket)
        self.erasure = S3Erasure(lambda: self.client, self.bucket, self.prefix)
        self._discarding: set[asyncio.Task[None]] = set()

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Storage:
        return cls(
            S3Location.parse(settings.storage),
            endpoint=settings.s3_endpoint,
            region=settings.s3_region,
            part_size=effective_part_size(settings.s3_part_size, settings.max_size),
            chunk_size=settings.chunk_size,
            stale_after=settings.stale_after,
            claims=settings.s3_claims,
        )

    @property
    def client(self) -> S3Client:
        if self._client is None:
            raise StorageError("storage is not started")
        return self._client

    def key(self, name: str) -> str:
        return self.prefix + name

    def run_blocking(self, function: Callable[..., _T], *args: Any) -> asyncio.Future[_T]:
        """Hashing and buffering run here, off the event loop."""
        if self._executor is None:
            raise StorageError("storage is not started")
        return asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    # --- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        session = _session()
        region = self.region or session.get_config_variable("region") or "us-east-1"
        config = AioConfig(
            # The SDKs' default CRC checksums (2025) break some S3-compatible servers.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            # Downloads hold a connection while the client reads: allow many.
            max_pool_connections=256,
            connect_timeout=5,
            read_timeout=60,
            retries={"mode": "standard"},
            s3={"addressing_style": "path"} if self.endpoint else None,
        )
        self._stack = AsyncExitStack()
        self._executor = ThreadPoolExecutor(max_workers=16, thread_name_prefix="s3")
        try:
            self._client = await self._stack.enter_async_context(
                session.create_client(
                    "s3", region_name=region, endpoint_url=self.endpoint, config=config
                )
            )
            await self._check_bucket()
            await self._check_conditional_writes()
        except BaseException:
            await self.close()
            raise

    async def _check_bucket(self) -> None:
        """Start-up's clear message for the usual mistakes; raises StorageError."""
        bucket = self.bucket
        try:
            await self.client.head_bucket(Bucket=bucket)
        except NoCredentialsError:
            raise StorageError(
                "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                "(or AWS_PROFILE, or an instance role)"
            ) from None
        except ClientError as error:
            status = http_status(error)
            if status == 404:
                raise StorageError(f"bucket {bucket!r} does not exist at {self._where}") from None
            if status == 403:
                raise StorageError(
                    f"access to bucket {bucket!r} at {self._where} is denied: check the "
                    "credentials and that they grant s3:ListBucket on it"
                ) from None
            if status in {301, 400}:
                raise StorageError(
                    f"bucket {bucket!r} answered {status} {error_code(error)}: wrong region? "
                    "set AWS_REGION or --s3-region"
                ) from None
            raise StorageError(f"bucket {bucket!r}: {error}") from None
        except TRANSPORT_ERRORS as error:
            raise StorageError(f"cannot reach {self._where}: {error}") from None
        except S3_ERRORS as error:
            raise StorageError(f"S3 client set-up failed: {error}") from None

    @property
    def _where(self) -> str:
        return self.endpoint or f"AWS ({self.client.meta.region_name})"

    async def _check_conditional_writes(self) -> None:
        """Refuse to start on a server that would let an upload replace a file; claim
        names first where only CompleteMultipartUpload ignores the condition."""
        bucket = self.bucket
        if (self.endpoint, bucket) not in _VERIFIED:
            _VERIFIED[(self.endpoint, bucket)] = await needs_claims(self, self._where)
        if _VERIFIED[(self.endpoint, bucket)]:
            self.claims = True
            log.info(
                "%s ignores If-None-Match on CompleteMultipartUpload: large files claim "
                "their name first",
                self._where,
            )
        else:
            self.claims = self._force_claims

    def track(self, discard: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run a writer's clean-up as a task that `close` waits for before closing the client."""
        task = asyncio.ensure_future(discard)
        self._discarding.add(task)
        task.add_done_callback(self._discarding.discard)
        return task

    async def close(self) -> None:
        if self._discarding:
            await asyncio.wait(self._discarding, timeout=LAST_TRY)
        if self._client is not None:
            await self.janitor.close()
        if self._stack is not None:
            await self._stack.aclose()
            self._stack = None
        self._client = None
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.to_thread(executor.shutdown)  # waits for its jobs, off the loop

    # --- the protocol ----------------------------------------------------------------

    async def create_writer(self, observer: Observer) -> S3Writer:
        self.client  # noqa: B018 (raises when not started)
        return S3Writer(self, observer, self.part_size)

    async def create_upload(self, key: str, **arguments: Any) -> str:
        """CreateMultipartUpload that cannot orphan: if we are cancelled, the janitor aborts it."""
        created = asyncio.ensure_future(self._create_upload(key, arguments))
        try:
            return await asyncio.shield(created)
        except asyncio.CancelledError:
            created.add_done_callback(self.janitor.after_creation(key))
            raise

    async def _create_upload(self, key: str, arguments: dict[str, Any]) -> str:
        try:
            response = await self.client.create_multipart_upload(
                Bucket=self.bucket, Key=key, **arguments
            )
        except S3_ERRORS as error:
            raise storage_error(error, "starting the upload") from error
        return response["UploadId"]

    async def head_object(self, key: str, doing: str) -> HeadObjectOutputTypeDef | None:
        """HeadObject, or None when there is no such object."""
        try:
            return await self.client.head_object(Bucket=self.bucket, Key=key)
        except S3_ERRORS as error:
            if is_missing(error):
                return None
            raise storage_error(error, doing) from error

    async def _head(self, name: str) -> tuple[StoredMeta, str]:
        head = await self.head_object(self.key(name), "looking the file up")
        if head is None or is_claim(head):  # a claim: a large file on its way, not yet one
            raise FileMissing(name)
        return StoredMeta(name, decode(head)), str(head.get("ETag", ""))

    async def exists(self, key: str) -> bool:
        return await self.head_object(key, "looking a name up") is not None

    async def stat(self, name: str) -> StoredMeta:
        meta, _ = await self._head(name)
        return meta

    @asynccontextmanager
    async def open(self, name: str) -> AsyncIterator[S3File]:
        meta, s3_etag = await self._head(name)
        yield S3File(self, meta, self.key(name), s3_etag)

    async def delete_older_than(self, cutoff: datetime) -> int:
        """Retention: delete files committed before `cutoff` (S3's LastModified is the commit)."""
        client, expired = self.client, []
        try:
            async for page in client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix
            ):
                for item in page.get("Contents", []):
                    name = item["Key"].removeprefix(self.prefix)
                    if item["LastModified"] < cutoff and "/" not in name and name[:1] != ".":
                        expired.append(item["Key"])
            for key in expired:
                if await self._claimed(key):
                    continue  # a large file on its way: its claim is the stale sweep's
                await client.delete_object(Bucket=self.bucket, Key=key)
                log.info("retention: deleted %s", key.removeprefix(self.prefix))
        except S3_ERRORS as error:
            raise storage_error(error, "deleting expired files") from error
        return len(expired)

    async def _claimed(self, key: str) -> bool:
        if not self.claims:
            return False
        head = await self.head_object(key, "deleting expired files")
        return head is not None and is_claim(head)

    async def remove_stale_temporaries(self, cutoff: datetime) -> int:
        try:
            return await remove_stale(self.client, self.bucket, self.prefix, cutoff)
        except S3_ERRORS as error:
            raise storage_error(error, "removing stale uploads") from error

    async def claim(self, key: str, record: bytes) -> bool:
        return await s3claims.claim(self.client, self.bucket, self.prefix, key, record)

    async def is_claimed(self, key: str) -> bool:
        return await s3claims.is_claimed(self.client, self.bucket, self.prefix, key)

    async def release(self, key: str) -> None:
        await s3claims.release(self.client, self.bucket, self.prefix, key)

    async def forget_claims_before(self, cutoff: datetime) -> int:
        return await s3claims.forget_before(self.client, self.bucket, self.prefix, cutoff)

    async def check_ready(self) -> None:
        try:
            await self.client.head_bucket(Bucket=self.bucket)
        except S3_ERRORS as error:
            raise storage_error(error, "checking the bucket") from error

    async def delete(self, name: str) -> None:
        await self.erasure.delete(name)

    async def conversation(self, conversation_id: str) -> list[StoredMeta]:
        return await self.erasure.conversation(conversation_id)

    async def delete_conversation(
        self, conversation_id: str, deleted: Callable[[str], None]
    ) -> int:
        return await self.erasure.delete_conversation(conversation_id, deleted)

    async def shared_secret(self, purpose: str) -> bytes:
        return await self.erasure.shared_secret(purpose)
