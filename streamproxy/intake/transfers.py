"""Transfers in flight: the `--max-transfers` limit, counted per process.

A transfer over the limit is refused at once with 503 `busy` and `Retry-After`,
rather than queued: a queued upload would hold its connection and buffers while
it waits, which is the load the limit exists to shed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from aiohttp import web
from prometheus_client import Gauge

from ..error_table import BUSY

# A transfer that starts with at most one other in flight hands its bytes to the
# writer in batches this many times `--chunk-size`: fewer, larger trips to the worker
# threads let one big stream keep both cores busy (hash beside write), and memory is
# no concern with so few transfers. At most two transfers ever have the larger
# batches at once (a third starts with both counted), so the bound per transfer
# under load, where memory matters, is unchanged.
FEW_TRANSFERS = 2
FEW_TRANSFERS_BATCH = 4


class TransferSlots:
    def __init__(self, limit: int | None, gauge: Gauge | None = None) -> None:
        self.limit = limit
        self._gauge = gauge
        self._children: dict[str, Gauge] = {}  # the gauge's child per kind, looked up once
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def check(self) -> None:
        """Refuse now if no slot is free (used before a request body is read)."""
        if self.limit is not None and self.in_flight >= self.limit:
            raise BUSY("too many transfers in flight; retry shortly")

    @contextlib.contextmanager
    def slot(self, kind: str) -> Iterator[None]:
        """Hold one slot for a transfer of this kind (upload, import, download)."""
        self.check()
        self.in_flight += 1
        self._idle.clear()
        child = self._child(kind)
        if child is not None:
            child.inc()
        try:
            yield
        finally:
            self.in_flight -= 1
            if child is not None:
                child.dec()
            if not self.in_flight:
                self._idle.set()

    def few_others_in_flight(self) -> bool:
        """Asked as a request's head arrives, before its own transfer counts: may its large
        plain body be read into buffers of its own (runtime/directbody.py)? Only with at
        most one other in flight: many bodies at once read small pieces each, where own
        buffers were no cheaper (benchmarks/RESULTS.md, history, 2026-12-02 05:37) and
        each connection would hold one partly filled."""
        return self.in_flight < FEW_TRANSFERS

    def batch_size(self, chunk_size: int) -> int:
        """Bytes per hand-off to the writer for a transfer whose slot is held now."""
        return chunk_size * (FEW_TRANSFERS_BATCH if self.in_flight <= FEW_TRANSFERS else 1)

    def _child(self, kind: str) -> Gauge | None:
        if self._gauge is None:
            return None
        child = self._children.get(kind)
        if child is None:
            child = self._children[kind] = self._gauge.labels(kind)
        return child

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no transfer is in flight; False if some still are after `timeout`."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        return not self.in_flight


TRANSFERS: web.AppKey[TransferSlots] = web.AppKey("transfers", TransferSlots)
