"""S3 storage's spool: `<prefix>.events/KEY.json` per pending record.

Many instances may share the bucket, so a record's claim is a conditional write:
`<prefix>.events/KEY.lock` created with `If-None-Match: *` (the same guarantee the
uploads' commit relies on; start-up checks the server honours it). The one who
created it delivers, then deletes the record and the lock. A lock older than
`lease` seconds belongs to a holder that died (an attempt takes at most the client's
timeout): it is deleted and the claim tried once more. Two instances breaking the
same dead lock at once may both deliver: at least once, as promised, and receivers
deduplicate by id. The last attempt's time is written into the record itself.

Retention and listing skip these keys: they contain a `/` and start with a dot.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Final

from ..storage.base import StorageError
from ..storage.s3 import S3Storage
from ..storage.s3meta import S3_ERRORS, is_missing, is_taken, storage_error
from .spool import EVENTS_DIR, Claim, Pending

_RECORD: Final = ".json"
_LOCK: Final = ".lock"
DEFAULT_LEASE: Final = 300.0


class _S3Claim:
    def __init__(self, spool: S3Spool, pending: Pending) -> None:
        self._spool = spool
        self.pending = pending

    async def attempted(self, at: float) -> None:
        self.pending = replace(self.pending, attempted=at)
        await self._spool.write(self.pending)

    async def done(self) -> None:
        await self._spool.delete(self._spool.record_key(self.pending.key), "removing an event")


class S3Spool:
    """Pending events as objects beside the files; see the module docstring."""

    durable = True

    def __init__(self, storage: S3Storage, *, lease: float = DEFAULT_LEASE) -> None:
        self._storage = storage
        self.prefix = storage.prefix + EVENTS_DIR + "/"
        self.lease = lease
        self.description = f"S3 bucket {storage.bucket!r} under {self.prefix!r}"

    def record_key(self, key: str) -> str:
        return self.prefix + key + _RECORD

    async def start(self) -> None:
        return None

    async def put(self, pending: Pending) -> None:
        await self.write(pending)

    async def write(self, pending: Pending) -> None:
        storage = self._storage
        try:
            await storage.client.put_object(
                Bucket=storage.bucket,
                Key=self.record_key(pending.key),
                Body=pending.to_json(),
                ContentType="application/json",
            )
        except S3_ERRORS as error:
            raise storage_error(error, "spooling an event") from error

    async def delete(self, key: str, doing: str) -> None:
        storage = self._storage
        try:
            await storage.client.delete_object(Bucket=storage.bucket, Key=key)
        except S3_ERRORS as error:
            raise storage_error(error, doing) from error

    async def keys(self) -> list[str]:
        storage, found = self._storage, []
        try:
            async for page in storage.client.get_paginator("list_objects_v2").paginate(
                Bucket=storage.bucket, Prefix=self.prefix
            ):
                for item in page.get("Contents", []):
                    name = item["Key"].removeprefix(self.prefix)
                    if name.endswith(_RECORD) and "/" not in name:
                        found.append(name.removesuffix(_RECORD))
        except S3_ERRORS as error:
            raise storage_error(error, "listing pending events") from error
        return sorted(found)

    @asynccontextmanager
    async def claim(self, key: str) -> AsyncIterator[Claim | None]:
        lock = self.prefix + key + _LOCK
        if not await self._lock(lock):
            yield None
            return
        try:
            pending = await self._read(key)
            yield None if pending is None else _S3Claim(self, pending)
        finally:
            with suppress(StorageError):  # a lock left behind is broken after the lease
                await self.delete(lock, "releasing an event's claim")

    async def _lock(self, lock: str) -> bool:
        for _ in range(2):
            if await self._create(lock):
                return True
            if not await self._broke_dead_lock(lock):
                return False
        return False

    async def _create(self, lock: str) -> bool:
        storage = self._storage
        try:
            await storage.client.put_object(
                Bucket=storage.bucket, Key=lock, Body=b"", IfNoneMatch="*"
            )
        except S3_ERRORS as error:
            if is_taken(error):
                return False
            raise storage_error(error, "claiming an event") from error
        return True

    async def _broke_dead_lock(self, lock: str) -> bool:
        """Delete `lock` if its holder's lease ran out; True if it is gone now."""
        storage = self._storage
        try:
            head = await storage.client.head_object(Bucket=storage.bucket, Key=lock)
        except S3_ERRORS as error:
            if is_missing(error):
                return True  # released meanwhile
            raise storage_error(error, "checking an event's claim") from error
        if head["LastModified"] > datetime.now(UTC) - timedelta(seconds=self.lease):
            return False
        await self.delete(lock, "breaking a dead claim")
        return True

    async def _read(self, key: str) -> Pending | None:
        storage = self._storage
        try:
            response = await storage.client.get_object(
                Bucket=storage.bucket, Key=self.record_key(key)
            )
            async with response["Body"] as body:
                raw = await body.read()
        except S3_ERRORS as error:
            if is_missing(error):
                return None  # delivered and removed by whoever held it before
            raise storage_error(error, "reading a pending event") from error
        try:
            return Pending.from_json(key, raw)
        except (ValueError, KeyError, TypeError) as error:
            await self.delete(self.record_key(key), "removing an unreadable event")
            raise StorageError(
                f"pending event {key} was unreadable and is removed: {error}"
            ) from None
