"""The pump's writer for one PATCH, whatever the storage: writes queued in order, settled
before the upload's offset is acknowledged or its request's bytes discarded.

The pump hands writes over without waiting for each (its backpressure is the number in
flight); an append must still land byte after byte, so they run one at a time in the
order they came. A storage supplies three steps: apply a batch, drop what this request
appended, and make the appended bytes and the record durable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Generic, Protocol, TypeVar

from ..storage.base import FileInfo, Observer, Piece, StorageError, StoredMeta
from .state import UploadRecord


class Counting(Protocol):
    """A storage's appender for one request: how many bytes it has taken."""

    @property
    def written(self) -> int: ...


AppenderT = TypeVar("AppenderT", bound=Counting)


class OrderedAppendWriter(Generic[AppenderT]):
    """Ordered writes into an upload; `commit` is not how an upload is published."""

    def __init__(self, appender: AppenderT, observer: Observer) -> None:
        self._appender = appender
        self._observer = observer  # the pump's: MD5, sniffing, counting
        self._order = asyncio.Lock()  # FIFO: writes land in the order they were queued
        self._pending: set[asyncio.Future[None]] = set()

    @property
    def written(self) -> int:
        return self._appender.written

    async def _apply(self, pieces: Sequence[Piece]) -> None:
        raise NotImplementedError

    async def _drop(self) -> None:
        raise NotImplementedError

    async def _keep(self, record: UploadRecord) -> None:
        raise NotImplementedError

    async def _write(self, pieces: Sequence[Piece]) -> None:
        async with self._order:
            await self._apply(pieces)

    def _start(self, pieces: Sequence[Piece]) -> asyncio.Future[None]:
        """Start applying a batch after the ones before it; a storage that keeps the
        order its own way (local storage's lanes) starts it differently."""
        return asyncio.ensure_future(self._write(pieces))

    def write(self, pieces: Sequence[Piece]) -> asyncio.Future[None]:
        done = self._start(pieces)
        self._pending.add(done)
        done.add_done_callback(self._pending.discard)
        return done

    async def settle(self) -> None:
        """Wait for the writes in flight (their errors are the pump's to report)."""
        if self._pending:
            await asyncio.wait(set(self._pending))

    async def commit(self, names: Iterable[str], info: FileInfo) -> StoredMeta:
        raise StorageError("an append is published through the held upload's staged()")

    async def abort(self) -> None:
        await asyncio.shield(self.settle())

    async def discard(self) -> None:
        """Drop what this request appended (a checksum mismatch, a refusal)."""
        await self.settle()
        await self._drop()

    async def acknowledge(self, record: UploadRecord) -> None:
        """Make the appended bytes and `record` durable: the new offset may be answered."""
        await self.settle()
        await self._keep(record)
