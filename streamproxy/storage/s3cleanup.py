"""Never leave parts behind: aborts and deletes that must happen even when S3 is away.

Every staging object and multipart upload a writer made is discarded on every
way out. When S3 cannot be reached at that moment (the outage that made the
transfer fail in the first place), the discard is queued here and retried in
the background until it succeeds, and once more at shutdown. What a crash
leaves anyway is removed by the retention sweep once older than
`--stale-after` (so that it belongs to no live instance); a bucket lifecycle
rule (see README) is the last line.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from .s3meta import S3_ERRORS, error_code
from .s3nameclaim import Claim, is_record, recorded, release

if TYPE_CHECKING:
    from types_aiobotocore_s3.client import S3Client

log = logging.getLogger("streamproxy.storage")

STAGING_DIR = ".tmp/"
UPLOADS_DIR = ".uploads/"
"""Resumable uploads: their multipart uploads live as long as their records say, so
upload expiry removes them (resumable.s3store), never the stale sweep."""
FIRST_RETRY = 0.5
LAST_RETRY = 30.0
LAST_TRY = 5.0  # seconds spent on the queue at shutdown


@dataclass(frozen=True)
class Leftover:
    """A staging object (upload_id None), a multipart upload, or a claim on a name
    (`s3nameclaim`) to be removed. Past `until` (a wall-clock time) a queued claim is
    left to the stale sweep, whose check-then-delete it must not race."""

    key: str
    upload_id: str | None = None
    claim: Claim | None = None
    until: float | None = None

    @classmethod
    def of_claim(cls, claim: Claim, stale_after: float) -> Leftover:
        return cls(claim.key, claim=claim, until=claim.release_by(stale_after))

    def expired(self) -> bool:
        return self.until is not None and time.time() > self.until


class Janitor:
    """Removes leftovers now if it can, later if it must."""

    def __init__(self, client: Callable[[], S3Client], bucket: str) -> None:
        self._client = client
        self._bucket = bucket
        self._queue: set[Leftover] = set()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def remove(self, leftover: Leftover) -> None:
        client = self._client()
        if leftover.claim is not None:
            if not leftover.expired():
                await release(client, self._bucket, leftover.claim)
            return
        try:
            if leftover.upload_id is None:
                await client.delete_object(Bucket=self._bucket, Key=leftover.key)
            else:
                await client.abort_multipart_upload(
                    Bucket=self._bucket, Key=leftover.key, UploadId=leftover.upload_id
                )
        except ClientError as error:
            if error_code(error) not in {"NoSuchUpload", "NoSuchKey"}:
                raise

    async def discard(self, leftover: Leftover) -> None:
        """Remove now; on failure queue it for the background retries. Never raises."""
        try:
            await self.remove(leftover)
        except S3_ERRORS as error:
            log.warning("could not remove %s now (%r); retrying in the background", leftover, error)
            self.later(leftover)

    def later(self, leftover: Leftover) -> None:
        self._queue.add(leftover)
        if not self._closed and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._retry())

    def after_creation(self, key: str) -> Callable[[asyncio.Future[str]], None]:
        """A done-callback for a CreateMultipartUpload whose caller was cancelled meanwhile."""

        def callback(created: asyncio.Future[str]) -> None:
            if not created.cancelled() and created.exception() is None:
                self.later(Leftover(key, created.result()))

        return callback

    async def _remove_queued(self) -> None:
        """One try at each queued leftover; what goes is taken off the queue."""
        for leftover in list(self._queue):
            if leftover.expired():
                log.warning("left %s to the stale sweep", leftover)
                self._queue.discard(leftover)
                continue
            with suppress(*S3_ERRORS):
                await self.remove(leftover)
                self._queue.discard(leftover)

    async def _retry(self) -> None:
        delay = FIRST_RETRY
        while self._queue:
            await asyncio.sleep(delay)
            await self._remove_queued()
            delay = min(delay * 2, LAST_RETRY)

    async def close(self) -> None:
        """One last try for what is still queued, then log what the next start must sweep."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        with suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._remove_queued(), LAST_TRY)
        if self._queue:
            log.warning(
                "%d staging objects or multipart uploads are left in the bucket; "
                "the stale sweep (--stale-after) or the bucket's lifecycle rule removes them",
                len(self._queue),
            )


def staging_key(staging_prefix: str) -> str:
    """A fresh staging key that carries its creation time, for `remove_stale`.

    ListMultipartUploads' `Initiated` would do, but not every S3-compatible
    server fills it in faithfully (moto reports one fixed date), and taking a
    live upload for a stale one would abort another instance's transfer.
    """
    return f"{staging_prefix}{int(time.time())}-{uuid.uuid4().hex}"


def _created(key: str, staging_prefix: str, reported: datetime) -> datetime:
    """The time in a staging key of ours, else what S3 reported."""
    stamp = key.removeprefix(staging_prefix).partition("-")[0]
    if key.startswith(staging_prefix) and stamp.isdigit():
        return datetime.fromtimestamp(int(stamp), UTC)
    return reported


async def remove_stale(client: S3Client, bucket: str, prefix: str, cutoff: datetime) -> int:
    """Abort multipart uploads and delete staging objects from before `cutoff`; the count.
    A stale claim record's name is deleted only if it still carries that claim."""
    staging = prefix + STAGING_DIR
    stale: list[Leftover] = []
    async for uploads in client.get_paginator("list_multipart_uploads").paginate(
        Bucket=bucket, Prefix=prefix
    ):
        stale += [
            Leftover(upload["Key"], upload["UploadId"])
            for upload in uploads.get("Uploads", [])
            if _created(upload["Key"], staging, upload["Initiated"]) < cutoff
            and not upload["Key"].startswith(prefix + UPLOADS_DIR)
        ]
    async for objects in client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=staging
    ):
        stale += [
            Leftover(item["Key"])
            for item in objects.get("Contents", [])
            if _created(item["Key"], staging, item["LastModified"]) < cutoff
        ]
    janitor = Janitor(lambda: client, bucket)
    removed = 0
    for leftover in stale:
        with suppress(*S3_ERRORS):
            if is_record(leftover.key):
                claim = await recorded(client, bucket, leftover.key)
                leftover = Leftover(claim.key, claim=claim) if claim else leftover
            await janitor.remove(leftover)
            removed += 1
            log.info("removed stale %s", leftover)
    return removed
