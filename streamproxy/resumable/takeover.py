"""The draft's "stop the older request": a newer request on an upload ends the append
still running on it, at a safe point, instead of waiting for it to time out.

Why (draft-ietf-httpbis-resumable-upload, "Concurrency"): a client resumes after a
connection it considers dead, which the server may still think alive; it then sends an
offset retrieval (HEAD), an append (PATCH) or a cancellation (DELETE) while the older
append still holds the upload. The draft recommends terminating the previous request
before processing the new one; a plain lock would answer 409 until the older request
times out (`--client-timeout`, or on S3 the lease), and an offset read beside it would
be outdated as soon as the older request acknowledged more.

Decisions:

- Only draft requests stop an older one (`hold(take_over=True)`, `settled`); tus
  requests keep tus's 409 (tus 1.0 says nothing of concurrent requests; its clients
  treat 409 as "ask for the offset again").
- The safe point is the older request's next read of its body: it ends there as if its
  client had gone away, so what it received is acknowledged (durable, in the record;
  also the body bytes its process had buffered and not yet read) and the newer request
  then sees that offset. A read that is waiting is woken at once (the
  read's own idle timeout is moved to now: no task per chunk). An older request that
  is committing, scanning or writing a record is not stopped: it ends by itself.
- The older request is answered 409 `offset_mismatch` (the "busy" row of the error
  table) and its connection is closed: a client still listening learns why, a dead one
  reads nothing, and the rest of its body, never read, cannot be left on the connection.
- The signal: a request of the same process is stopped directly (this registry). A
  holder in another process or instance is asked through a marker its process watches
  (`RunningAppends`' watcher): local storage `.uploads/.stop/<id>` (its mtime after the
  holder's lock time), S3 an object `<id>/stop.<generation>` (naming the holder's lease
  generation, so a marker left behind never stops a later holder). Local storage checks
  every 0.1 s (one listing of `.stop` per process, whatever the number of appends it
  runs, and a stat only of a marker naming one of them); S3 only appends whose body
  has been idle for 0.5 s, every 0.5 s (a HEAD each): a flowing append on another
  instance is not asked, and the fenced take-over below ends it instead.
- The newer request waits for the lock at most `TAKE_OVER_WAIT` seconds. Then local
  storage answers 409 as before (the holder is alive: the kernel drops a dead one's
  flock); S3 takes the lease over (`take_over`: the generation moves on and the older
  request's next record write or part is fenced; its unacknowledged bytes are lost, the
  upload stays intact), but only while the upload is receiving bytes: a completion in
  progress is never taken over (that could publish the file twice), it answers 409.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Final, TypeVar

log = logging.getLogger("streamproxy")

T = TypeVar("T")

TAKE_OVER_WAIT: Final = 5.0
"""Seconds a newer draft request waits for the older one to let go of the upload."""


class AppendStop:
    """One held upload's stop switch; an append's body reads watch it."""

    def __init__(self, upload_id: str, token: float) -> None:
        self.upload_id = upload_id
        self.token = token
        """What a marker must name to stop this holder (S3: the lease generation; local:
        a marker modified after this wall-clock time, when the lock was taken)."""
        self.requested = False
        self.appending = False
        """The holder reads a body (an append): only then is a stop request of use."""
        self._timeout: asyncio.Timeout | None = None
        self._reading_since: float | None = None

    def request(self) -> None:
        """Stop at the next safe point; a read waiting for the body ends now."""
        self.requested = True
        if self._timeout is not None:
            self._timeout.reschedule(asyncio.get_running_loop().time())

    def asked(self) -> bool:
        """Has a newer request asked this one to stop (it may since any await)?"""
        return self.requested

    @contextmanager
    def reading(self, timeout: asyncio.Timeout) -> Iterator[None]:
        """Around one wait for the body, inside its `asyncio.timeout` (entered)."""
        self.appending = True
        self._timeout = timeout
        self._reading_since = asyncio.get_running_loop().time()
        try:
            yield
        finally:
            self._timeout = None
            self._reading_since = None

    def idle_for(self, now: float) -> float:
        """How long the current read has waited (0 when not reading)."""
        return 0.0 if self._reading_since is None else now - self._reading_since


Check = Callable[[list[AppendStop]], Awaitable[list[AppendStop]]]
"""A store's look for markers: which of these holders another process asked to stop."""


class RunningAppends:
    """A store's held uploads in this process, and the watcher that brings other
    processes' stop requests to them (runs only while something is held)."""

    def __init__(self, check: Check, *, interval: float, idle: float) -> None:
        self._check = check
        self._interval = interval
        self._idle = idle
        self._held: dict[str, AppendStop] = {}
        self._watcher: asyncio.Task[None] | None = None

    @contextmanager
    def running(self, upload_id: str, token: float) -> Iterator[AppendStop]:
        stop = AppendStop(upload_id, token)
        self._held[upload_id] = stop  # after an S3 take-over, the newer holder's
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.get_running_loop().create_task(self._watch())
        try:
            yield stop
        finally:
            if self._held.get(upload_id) is stop:
                del self._held[upload_id]

    def stop(self, upload_id: str) -> None:
        """Ask this process's holder of `upload_id`, if any, to stop."""
        stop = self._held.get(upload_id)
        if stop is not None:
            stop.request()

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while self._held:
            await asyncio.sleep(self._interval)
            now = loop.time()
            candidates = [
                stop
                for stop in self._held.values()
                if stop.appending and not stop.requested and stop.idle_for(now) >= self._idle
            ]
            if not candidates:
                continue
            try:
                asked = await self._check(candidates)
            except Exception as error:  # storage away: the next round tries again
                log.debug("could not look for stop requests: %r", error)
                continue
            for stop in asked:
                stop.request()


async def wait_for_lock(
    attempt: Callable[[], Awaitable[T]],
    ask: Callable[[], Awaitable[None]],
    *,
    wait: float,
    poll: float,
    busy: type[Exception],
) -> T | None:
    """Ask the holder to stop, then try `attempt` every `poll` seconds until it gets the
    lock (its result) or `wait` seconds pass (None). `ask` runs before each try (local
    storage touches its marker again, so a holder that came meanwhile sees it too)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        await ask()
        await asyncio.sleep(poll)
        try:
            return await attempt()
        except busy:
            if loop.time() >= deadline:
                return None
