"""Lanes: blocking calls that run in order, one at a time, on the storage's threads.

A local upload has two lanes, one that writes its batches and one that hashes them.
Each lane keeps its own order (the bytes land in order, the digest sees them in
order), but the two run side by side: while one thread writes a batch another
hashes it, and since both calls release the GIL one stream uses two cores. A batch
counts as done once both lanes are through with it (a `Settler` of two parts), so
its memory is not reused while either still reads it.

A lane takes its next call on the worker thread that ran the last one, without
waiting for the event loop: a batch queued while the previous one is written starts
the moment that one ends.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Submit = Callable[[Callable[[], None]], None]
"""Starts a blocking call on the storage's threads without waiting for it."""


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # cancelled by an abort meanwhile
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


class Settler:
    """Settles one event-loop future once `parts` calls on worker threads have reported:
    with the first error among them, else with the last result reported other than None."""

    def __init__(self, loop: asyncio.AbstractEventLoop, parts: int) -> None:
        self.future: asyncio.Future[Any] = loop.create_future()
        self._loop = loop
        self._remaining = parts
        self._result: Any = None
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._started = self._dropped = False

    def try_start(self) -> bool:
        """A lane is about to run a part: False if the call was dropped meanwhile."""
        with self._lock:
            self._started = not self._dropped
            return self._started

    def try_drop(self) -> bool:
        """An abort would drop the call: only if no part of it has started (a batch half
        hashed is also written, so that whoever awaits it sees it finish)."""
        with self._lock:
            self._dropped = not self._started
            return self._dropped

    def add_part(self) -> None:
        """One more part will report: called by a part that has not reported yet (a
        commit that hands its last step, the directory's fsync, to another thread)."""
        with self._lock:
            self._remaining += 1

    def report(self, result: Any, error: BaseException | None) -> None:
        """Called on a worker thread when one part is done."""
        with self._lock:
            self._remaining -= 1
            if error is not None and self._error is None:
                self._error = error
            if result is not None:
                self._result = result
            if self._remaining:
                return
        self._loop.call_soon_threadsafe(_settle, self.future, self._result, self._error)


@dataclass
class _Call:
    function: Callable[..., Any]
    args: tuple[Any, ...]
    settler: Settler


class Lane:
    """Runs queued calls in order on the storage's threads; see the module docstring."""

    def __init__(self, loop: asyncio.AbstractEventLoop, submit: Submit) -> None:
        self._loop = loop
        self._submit = submit
        self._lock = threading.Lock()
        self._queue: collections.deque[_Call] = collections.deque()
        self._running = False
        self._idle_waiters: list[asyncio.Future[None]] = []

    def run(self, function: Callable[..., Any], args: tuple[Any, ...], settler: Settler) -> None:
        """Queue a call; it reports its result or error to `settler` once it has run."""
        with self._lock:
            self._queue.append(_Call(function, args, settler))
            if self._running:
                return
            self._running = True
        self._submit(self._drain_sync)

    def _drain_sync(self) -> None:
        """On a worker thread: run queued calls until none is left."""
        while True:
            with self._lock:
                if not self._queue:
                    self._running = False
                    waiters, self._idle_waiters = self._idle_waiters, []
                    break
                call = self._queue.popleft()
            if not call.settler.try_start():
                continue
            try:
                result = call.function(*call.args)
            except BaseException as error:
                call.settler.report(None, error)
            else:
                call.settler.report(result, None)
        for waiter in waiters:
            self._loop.call_soon_threadsafe(_settle, waiter, None, None)

    def drop_queued(self) -> list[Settler]:
        """Take the queued calls none of whose parts has started off the queue; their
        settlers, to cancel."""
        kept: collections.deque[_Call] = collections.deque()
        dropped: list[Settler] = []
        with self._lock:
            for call in self._queue:
                if call.settler.try_drop():
                    dropped.append(call.settler)
                else:
                    kept.append(call)
            self._queue = kept
        return dropped

    def idle(self) -> asyncio.Future[None]:
        """A future that settles once no call of this lane runs."""
        waiter: asyncio.Future[None] = self._loop.create_future()
        with self._lock:
            if self._running:
                self._idle_waiters.append(waiter)
                return waiter
        waiter.set_result(None)
        return waiter
