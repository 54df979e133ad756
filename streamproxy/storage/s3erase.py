"""Deletion, a conversation's listing and erasure, and shared secrets, on S3.

An object carries its bytes and its metadata together, so deleting it is one
atomic step: a file is visible or gone, never half. A conversation is found by
listing the keys that start with `{conversationId}_`, then checking each
object's stored conversationId (`a_b_x` may be conversation `a` or `a_b`).
Erasure deletes what that finds; a crash half-way leaves whole files that a
rerun finds and deletes. A download already reading a deleted object either
finishes the GET it has open (S3 serves the version it started) or fails its
next ranged GET, which is pinned to the object's ETag with If-Match.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, TypeVar, cast

from .base import FileMissing, StorageError, StoredMeta
from .s3meta import S3_ERRORS, decode, is_missing, is_taken, storage_error
from .s3nameclaim import is_claim

if TYPE_CHECKING:
    from types_aiobotocore_s3.client import S3Client

log = logging.getLogger("streamproxy.storage")

KEYS_DIR = ".keys/"  # shared secrets under the prefix; a dot name, never a stored file
SECRET_BYTES = 32
CONCURRENCY = 16  # HEADs and DELETEs in flight at once for one conversation

_T = TypeVar("_T")
_R = TypeVar("_R")


async def _bounded(function: Callable[[_T], Awaitable[_R]], items: Iterable[_T]) -> list[_R]:
    """`function` over `items`, at most CONCURRENCY at a time, results in order; on a
    failure the calls under way finish, none is started, and the first error is raised."""
    gate, failed = asyncio.Semaphore(CONCURRENCY), False

    async def one(item: _T) -> _R | None:
        nonlocal failed
        async with gate:
            if failed:
                return None
            try:
                return await function(item)
            except BaseException:
                failed = True
                raise

    results = await asyncio.gather(*(one(item) for item in items), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return cast(list[_R], results)


class S3Erasure:
    """The erasure side of one bucket and prefix."""

    def __init__(self, client: Callable[[], S3Client], bucket: str, prefix: str) -> None:
        self._client = client
        self.bucket = bucket
        self.prefix = prefix

    async def delete(self, name: str) -> None:
        """HEAD (S3 deletes a missing key without complaint), then DELETE."""
        client, key = self._client(), self.prefix + name
        try:
            head = await client.head_object(Bucket=self.bucket, Key=key)
        except S3_ERRORS as error:
            if is_missing(error):
                raise FileMissing(name) from None
            raise storage_error(error, "looking the file up") from error
        if is_claim(head):  # a large file on its way, not yet a file
            raise FileMissing(name)
        try:
            await client.delete_object(Bucket=self.bucket, Key=key)
        except S3_ERRORS as error:
            raise storage_error(error, "deleting the file") from error

    async def _names(self, conversation_id: str) -> list[str]:
        """Stored names that start with `{conversationId}_` (one LIST per 1,000)."""
        start, names = f"{self.prefix}{conversation_id}_", []
        try:
            async for page in (
                self._client()
                .get_paginator("list_objects_v2")
                .paginate(Bucket=self.bucket, Prefix=start)
            ):
                for item in page.get("Contents", []):
                    name = item["Key"].removeprefix(self.prefix)
                    if "/" not in name:
                        names.append(name)
        except S3_ERRORS as error:
            raise storage_error(error, "listing a conversation") from error
        return names

    async def _meta(self, name: str) -> StoredMeta | None:
        try:
            head = await self._client().head_object(Bucket=self.bucket, Key=self.prefix + name)
        except S3_ERRORS as error:
            if is_missing(error):
                return None  # deleted since the listing
            raise storage_error(error, "reading a file's metadata") from error
        if is_claim(head):
            return None  # a large file on its way, not yet a file
        try:
            return StoredMeta(name, decode(head))
        except StorageError as error:
            log.warning("metadata of %r is unreadable: %s", name, error)
            return None

    async def conversation(self, conversation_id: str) -> list[StoredMeta]:
        metas = await _bounded(self._meta, await self._names(conversation_id))
        return [m for m in metas if m is not None and m.info.conversation_id == conversation_id]

    async def delete_conversation(
        self, conversation_id: str, deleted: Callable[[str], None]
    ) -> int:
        async def delete(name: str) -> None:
            try:
                await self._client().delete_object(Bucket=self.bucket, Key=self.prefix + name)
            except S3_ERRORS as error:
                raise storage_error(error, "erasing a conversation") from error
            deleted(name)

        files = await self.conversation(conversation_id)
        return len(await _bounded(delete, [meta.name for meta in files]))

    async def shared_secret(self, purpose: str) -> bytes:
        """`PREFIX.keys/PURPOSE`, put once with If-None-Match: the first writer wins and
        every instance on the bucket reads the same key."""
        client, key = self._client(), f"{self.prefix}{KEYS_DIR}{purpose}"
        for _ in range(3):
            try:
                response = await client.get_object(Bucket=self.bucket, Key=key)
                async with response["Body"] as body:
                    secret: bytes = await body.read()
                if secret:
                    return secret
            except S3_ERRORS as error:
                if not is_missing(error):
                    raise storage_error(error, f"reading the {purpose} key") from error
            try:
                await client.put_object(
                    Bucket=self.bucket,
                    Key=key,
                    Body=secrets.token_bytes(SECRET_BYTES),
                    IfNoneMatch="*",
                )
            except S3_ERRORS as error:
                if not is_taken(error):
                    raise storage_error(error, f"writing the {purpose} key") from error
        raise StorageError(f"the {purpose} key could not be read back from the bucket")
