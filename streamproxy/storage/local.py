"""Local directory storage, the embedded default.

Layout under the root:
    NAME                 the file's bytes, exactly as uploaded (servable by anything),
                         its metadata in the extended attribute `user.streamproxy`
    .meta/NAME.json      its metadata where the file system has no extended attributes
    .tmp/                files being written; emptied at start-up
    .claims/KEY          one-time claims (upload links used), `localclaims`
    .keys/PURPOSE        secrets shared by every process on the directory

A file is staged in `.tmp`, its metadata attached, flushed with fsync, and
published with `link(2)`, which fails instead of replacing an existing name: that
is the atomic, no-overwrite commit, and whenever a name is visible its metadata
is too. (With sidecars the metadata is linked first and claims the name; the
bytes follow.) Stored names never start with a dot, so `.meta` and `.tmp` cannot
be reached by a download.

The parts live in their own modules: `localstaging` (the staging area and the
commit), `localwrite` (one upload), `localread` (open, stat and the cache) and
`localsweep` (retention and clean-up), `localerase` (deletion, a conversation's
listing and erasure, shared secrets).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from ..runtime.settings import DEFAULT_CHUNK_SIZE
from . import localclaims, localerase
from .base import Observer, OneTimeClaims, StorageError, StoredMeta
from .localfs import storage_error
from .localread import LocalReader, OpenedFile
from .localstaging import StagingArea
from .localsweep import delete_older_than, remove_stale, remove_temporaries, sweeping
from .localwrite import LocalWriter

log = logging.getLogger("streamproxy.storage")

_T = TypeVar("_T")


class LocalStorage(OneTimeClaims):
    """Files in a directory; see the module docstring for the layout and the commit."""

    def __init__(
        self,
        root: str | Path,
        *,
        fsync: bool = True,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        cache_size: int = 32 * 1024 * 1024,
        clean_on_start: bool = True,
    ):
        self.root = Path(root).resolve()
        self._clean_on_start = clean_on_start
        self.staging = StagingArea(self.root, fsync=fsync, submit=self.submit)
        self._reader = LocalReader(
            self.root, run_blocking=self.run_blocking, chunk_size=chunk_size, cache_size=cache_size
        )
        self.description = f"local directory {self.root}"
        self._executor: ThreadPoolExecutor | None = None
        self._writers = 0  # uploads being written, to decide how each one hashes

    def submit(self, function: Callable[[], None]) -> None:
        """Start a blocking call on the storage threads without waiting for it."""
        if self._executor is None:
            raise StorageError("storage is not started")
        self._executor.submit(function)

    def run_blocking(self, function: Callable[..., _T], *args: Any) -> asyncio.Future[_T]:
        """Run a blocking call on the storage threads (disk I/O may stall for a long time)."""
        if self._executor is None:
            raise StorageError("storage is not started")
        return asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    async def start(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=32, thread_name_prefix="storage")
        await self.run_blocking(self._prepare_sync)

    def _prepare_sync(self) -> None:
        staging = self.staging
        try:
            for directory in (self.root, staging.meta_dir, staging.tmp_dir):
                directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StorageError(f"cannot create {error.filename}: {error.strerror}") from error
        staging.probe()
        removed = remove_temporaries(staging.tmp_dir) if self._clean_on_start else 0
        if removed:
            log.info("removed %d unfinished temporary files from %s", removed, staging.tmp_dir)

    async def close(self) -> None:
        """Wait for the storage threads' work (a commit may be linking), off the loop."""
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.to_thread(executor.shutdown)
        self.staging.close()

    async def create_writer(self, observer: Observer) -> LocalWriter:
        """The temporary file is created with the first write (or the commit). An upload
        that starts alone hashes on a thread beside the one that writes (two cores for
        one stream); one that starts beside others hashes and writes in one thread."""
        if self._executor is None:
            raise StorageError("storage is not started")
        self._writers += 1
        return LocalWriter(
            self.staging,
            self.submit,
            observer,
            hash_beside=self._writers == 1,
            on_end=self._writer_ended,
        )

    def _writer_ended(self) -> None:
        self._writers -= 1

    def open(self, name: str) -> AbstractAsyncContextManager[OpenedFile]:
        return self._reader.open(name)

    async def stat(self, name: str) -> StoredMeta:
        return await self._reader.stat(name)

    async def check_ready(self) -> None:
        await self.run_blocking(self.staging.check_writable)

    async def delete_older_than(self, cutoff: datetime) -> int:
        return await self.run_blocking(
            sweeping, "deleting expired files", delete_older_than, self.root, cutoff.timestamp()
        )

    async def remove_stale_temporaries(self, cutoff: datetime) -> int:
        return await self.run_blocking(
            sweeping, "removing stale temporaries", remove_stale, self.root, cutoff.timestamp()
        )

    async def claim(self, key: str, record: bytes) -> bool:
        try:
            return await self.run_blocking(
                localclaims.claim, self.root, key, record, self.staging.fsync
            )
        except OSError as error:
            raise storage_error(error, "recording a one-time claim") from error

    async def is_claimed(self, key: str) -> bool:
        return await self.run_blocking(localclaims.is_claimed, self.root, key)

    async def release(self, key: str) -> None:
        await self.run_blocking(localclaims.release, self.root, key)

    async def forget_claims_before(self, cutoff: datetime) -> int:
        return await self.run_blocking(
            sweeping,
            "removing spent claims",
            localclaims.forget_before,
            self.root,
            cutoff.timestamp(),
        )

    async def _erasing(self, doing: str, function: Callable[..., _T], *args: Any) -> _T:
        """Run a `localerase` function; an OS error becomes a StorageError saying what failed."""
        try:
            return await self.run_blocking(function, self.root, *args)
        except OSError as error:
            raise StorageError(f"{doing} failed: {error.strerror}") from error

    async def delete(self, name: str) -> None:
        try:
            await self._erasing("deleting a file", localerase.delete_file, name, self.staging.fsync)
        finally:
            self._reader.forget(name)

    async def conversation(self, conversation_id: str) -> list[StoredMeta]:
        return await self._erasing(
            "listing a conversation", localerase.conversation_files, conversation_id
        )

    async def delete_conversation(
        self, conversation_id: str, deleted: Callable[[str], None]
    ) -> int:
        """One thread trip per file, so that `deleted` hears of each as it goes."""
        doing = "erasing a conversation"
        candidates = await self._erasing(doing, localerase.erasure_candidates, conversation_id)
        count = 0
        for name in candidates:
            if await self._erasing(doing, localerase.erase_if_in, name, conversation_id):
                self._reader.forget(name)
                count += 1
                deleted(name)
        if self.staging.fsync:
            await self._erasing(doing, localerase.sync_directories)
        return count

    async def shared_secret(self, purpose: str) -> bytes:
        return await self._erasing(
            f"reading the {purpose} key", localerase.shared_secret, purpose, self.staging.fsync
        )
