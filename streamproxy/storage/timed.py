"""A storage wrapper that times every operation into the metrics histogram.

Wrapping keeps timing out of each implementation: local and S3 storage stay
about storing, and both are measured the same way.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from functools import partial
from types import TracebackType

from ..runtime.metrics import Metrics
from .base import FileInfo, Observer, Piece, Storage, StorageWriter, StoredFile, StoredMeta


class TimedWriter:
    def __init__(self, inner: StorageWriter, metrics: Metrics) -> None:
        self._inner = inner
        self._metrics = metrics

    def write(self, pieces: Sequence[Piece]) -> asyncio.Future[None]:
        """Passed on at once (a writer may queue writes), timed until it is done."""
        started = time.perf_counter()
        done = asyncio.ensure_future(self._inner.write(pieces))
        if done.done():  # a small first write, held back by the writer: nothing to wait for
            self._metrics.record("write", started)
        else:
            done.add_done_callback(partial(self._metrics.record, "write", started))
        return done

    async def commit(self, names: Iterable[str], info: FileInfo) -> StoredMeta:
        with self._metrics.timed("commit"):
            return await self._inner.commit(names, info)

    async def abort(self) -> None:
        with self._metrics.timed("abort"):
            await self._inner.abort()


class TimedOpen:
    """The inner storage's open, with its opening timed as `open`: a class rather than
    an `asynccontextmanager` around the inner one, since every download passes here."""

    __slots__ = ("_inner", "_metrics")

    def __init__(self, inner: AbstractAsyncContextManager[StoredFile], metrics: Metrics) -> None:
        self._inner = inner
        self._metrics = metrics

    async def __aenter__(self) -> StoredFile:
        started = time.perf_counter()
        try:
            return await self._inner.__aenter__()
        finally:
            self._metrics.record("open", started)

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        return await self._inner.__aexit__(kind, error, traceback)


class TimedStorage:
    """Any Storage, with each call timed under its operation name."""

    def __init__(self, inner: Storage, metrics: Metrics) -> None:
        self.inner = inner
        self._metrics = metrics
        self.description = inner.description

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    async def create_writer(self, observer: Observer) -> TimedWriter:
        with self._metrics.timed("create"):
            writer = await self.inner.create_writer(observer)
        return TimedWriter(writer, self._metrics)

    async def stat(self, name: str) -> StoredMeta:
        with self._metrics.timed("stat"):
            return await self.inner.stat(name)

    def open(self, name: str) -> TimedOpen:
        return TimedOpen(self.inner.open(name), self._metrics)

    async def check_ready(self) -> None:
        with self._metrics.timed("ready"):
            await self.inner.check_ready()

    async def delete_older_than(self, cutoff: datetime) -> int:
        with self._metrics.timed("retention"):
            return await self.inner.delete_older_than(cutoff)

    async def remove_stale_temporaries(self, cutoff: datetime) -> int:
        with self._metrics.timed("cleanup"):
            return await self.inner.remove_stale_temporaries(cutoff)

    async def delete(self, name: str) -> None:
        with self._metrics.timed("delete"):
            await self.inner.delete(name)

    async def conversation(self, conversation_id: str) -> list[StoredMeta]:
        with self._metrics.timed("list"):
            return await self.inner.conversation(conversation_id)

    async def delete_conversation(
        self, conversation_id: str, deleted: Callable[[str], None]
    ) -> int:
        with self._metrics.timed("erase"):
            return await self.inner.delete_conversation(conversation_id, deleted)

    async def shared_secret(self, purpose: str) -> bytes:
        with self._metrics.timed("secret"):
            return await self.inner.shared_secret(purpose)
