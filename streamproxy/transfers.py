"""Transfers in flight: the `--max-transfers` limit, counted per process.

A transfer over the limit is refused at once with 503 `busy` and `Retry-After`,
rather than queued: a queued upload would hold its connection and buffers while
it waits, which is the load the limit exists to shed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from aiohttp import web

from .errors import busy


class TransferSlots:
    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.in_flight = 0

    def check(self) -> None:
        """Refuse now if no slot is free (used before a request body is read)."""
        if self.limit is not None and self.in_flight >= self.limit:
            raise busy()

    @contextmanager
    def slot(self) -> Iterator[None]:
        self.check()
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1


TRANSFERS: web.AppKey[TransferSlots] = web.AppKey("transfers", TransferSlots)
