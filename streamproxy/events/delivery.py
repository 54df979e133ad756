"""Delivery: every spooled event POSTed to its webhook until it is taken, or for 24 h.

`EventBus.emit` spools an event (one record per webhook) and hands its key to a
bounded in-memory queue; a full queue just leaves the record to the spool scan. So
emitting costs one small durable write, and a slow or dead receiver never reaches
an upload: it only holds delivery slots (`concurrency`, each bounded by the client's
timeouts) while records wait in the spool.

Attempts follow one schedule counted from the event's creation: at once, then
`first_retry` seconds later, the delay doubling, the last no later than
`give_up_after`. The last attempt's time is kept with the record, so a restarted
process, or another worker, goes on where the schedule is. A 2xx is delivered; any
other answer (a redirect included: none is followed), a timeout or a connection
error is retried. Each attempt is logged and counted.

The URLs are the operator's own (`--webhook`): the URL import's address rules do
not apply, as API.md says; the session uses no proxy variables and no cookies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
from aiohttp import ClientTimeout, hdrs, web
from prometheus_client import CollectorRegistry, Counter
from yarl import URL

from .. import __version__
from ..storage.base import StorageError
from .model import SIGNATURE_HEADER, Event, new_event, sign
from .spool import Claim, MemorySpool, Pending, Spool

log = logging.getLogger("streamproxy.events")

QUEUE_SIZE: Final = 1024  # fresh records waiting for a slot; beyond, the spool scan finds them
CONCURRENCY: Final = 8  # attempts in flight per process


@dataclass(frozen=True)
class Schedule:
    """When to try: at creation, then `first_retry` later, the delay doubling."""

    first_retry: float = 5.0
    give_up_after: float = 86400.0

    def next_attempt(self, created: float, attempted: float) -> float | None:
        """The first slot after the last attempt (`attempted`, 0 for none); None past
        `give_up_after`."""
        if attempted <= 0:
            return created
        slot, delay = created, self.first_retry
        while slot <= attempted:
            slot += delay
            delay *= 2
        return slot if slot - created <= self.give_up_after else None


def _shown(url: str) -> str:
    """A webhook URL for the log: its query may carry a token."""
    parsed = URL(url)
    return str(parsed.with_query(None).with_fragment(None).with_user(None))


class _Counters:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.emitted = Counter(
            "streamproxy_events", "Events emitted, by type.", ["type"], registry=registry
        )
        self.attempts = Counter(
            "streamproxy_event_deliveries",
            "Webhook delivery attempts, by outcome (delivered, failed).",
            ["outcome"],
            registry=registry,
        )
        self.dropped = Counter(
            "streamproxy_events_dropped",
            "Pending events given up, by why (expired: retried for 24 h; "
            "lost: kept only in memory at shutdown).",
            ["why"],
            registry=registry,
        )
        self.spool_failures = Counter(
            "streamproxy_event_spool_failures",
            "Events the storage refused to keep (kept in memory instead) or could not list.",
            registry=registry,
        )
        for outcome in ("delivered", "failed"):
            self.attempts.labels(outcome)


class EventBus:
    """The events of one process: emit, spool, deliver. Disabled without webhooks.

    Timings are attributes, read when delivery starts: a test can shorten them.
    """

    def __init__(
        self,
        urls: tuple[str, ...],
        secret: str | None,
        spool: Spool,
        *,
        registry: CollectorRegistry | None = None,
        schedule: Schedule | None = None,
        connect_timeout: float = 10.0,
        timeout: float = 30.0,
        scan_interval: float = 10.0,
        concurrency: int = CONCURRENCY,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        self.urls = urls
        self._secret = secret
        self.spool = spool
        self.memory = MemorySpool()  # where a record goes when the spool refuses it
        self.schedule = schedule or Schedule()
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.scan_interval = scan_interval
        self.concurrency = concurrency
        self._counters = _Counters(registry or CollectorRegistry())
        self.queue_size = queue_size
        self._fresh: asyncio.Queue[tuple[Spool, str]] | None = None
        self._slots: asyncio.Semaphore | None = None
        self._session: aiohttp.ClientSession | None = None
        self._loops: list[asyncio.Task[None]] = []
        self._attempts: set[asyncio.Task[None]] = set()
        self._emitting: set[asyncio.Task[Any]] = set()
        self._busy: set[tuple[int, str]] = set()
        self._not_before: dict[str, float] = {}
        self._timers: dict[tuple[int, str], asyncio.TimerHandle] = {}

    @property
    def enabled(self) -> bool:
        return bool(self.urls)

    # --- emitting ------------------------------------------------------------------------

    async def emit(self, event_type: str, data: Mapping[str, Any]) -> Event | None:
        """Spool an event for every webhook and queue it; None when no webhook is set.

        Raises ValueError for an unknown type or data key (a caller's mistake); a
        storage that refuses the record is logged, and the record kept in memory.
        """
        if not self.enabled:
            return None
        event = new_event(event_type, data)
        self._counters.emitted.labels(event_type).inc()
        for url in self.urls:
            pending = Pending.of(event, url)
            spool: Spool = self.spool
            try:
                await self.spool.put(pending)
            except StorageError as error:
                self._counters.spool_failures.inc()
                log.warning("event %s kept in memory only: %s", event.id, error)
                spool = self.memory
                await spool.put(pending)
            self._offer(spool, pending.key)
        return event

    def emit_soon(self, event_type: str, data: Mapping[str, Any]) -> None:
        """`emit` from code that cannot await (a check before the body is read)."""
        if not self.enabled:
            return
        new_event(event_type, data)  # a caller's mistake shows here, not in a task
        task = asyncio.ensure_future(self.emit(event_type, data))
        self._emitting.add(task)
        task.add_done_callback(self._emitting.discard)

    def _offer(self, spool: Spool, key: str) -> None:
        if self._fresh is None:
            return  # not started: the first scan finds it
        with contextlib.suppress(asyncio.QueueFull):  # the scan will find it
            self._fresh.put_nowait((spool, key))

    # --- the loops -----------------------------------------------------------------------

    async def start(self) -> None:
        if not self.enabled:
            return
        await self.spool.start()
        if not self.spool.durable:
            log.warning(
                "events are kept in %s: a restart loses pending ones", self.spool.description
            )
        self._slots = asyncio.Semaphore(self.concurrency)
        self._fresh = asyncio.Queue(self.queue_size)
        self._session = aiohttp.ClientSession(
            timeout=ClientTimeout(
                total=self.timeout, connect=self.connect_timeout, sock_connect=self.connect_timeout
            ),
            headers={hdrs.USER_AGENT: f"streamproxy/{__version__}"},
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
        )
        self._loops = [
            asyncio.create_task(self._take_fresh(), name="streamproxy-events-fresh"),
            asyncio.create_task(self._scan_forever(), name="streamproxy-events-scan"),
        ]
        log.info(
            "events go to %d webhook(s), pending ones kept in %s",
            len(self.urls),
            self.spool.description,
        )

    async def close(self) -> None:
        """Stop: emits under way finish (they are spooled), attempts are cut off (their
        records stay, and the next start sends them)."""
        if self._emitting:
            await asyncio.wait(set(self._emitting), timeout=10)
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        tasks = [*self._loops, *self._attempts]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._loops = []
        if self._session is not None:
            await self._session.close()
            self._session = None
        lost = len(self.memory.records)
        if lost:
            self._counters.dropped.labels("lost").inc(lost)
            log.error("%d undelivered event(s) were kept only in memory and are lost", lost)

    async def _take_fresh(self) -> None:
        assert self._fresh is not None
        while True:
            spool, key = await self._fresh.get()
            await self._dispatch(spool, key)

    async def _scan_forever(self) -> None:
        while True:
            for spool in (self.spool, self.memory):
                await self._scan(spool)
            await asyncio.sleep(self.scan_interval)

    async def _scan(self, spool: Spool) -> None:
        try:
            keys = await spool.keys()
        except StorageError as error:
            self._counters.spool_failures.inc()
            log.warning("cannot list pending events in %s: %s", spool.description, error)
            return
        if spool is self.spool:  # forget what others delivered
            present = set(keys)
            for key in [key for key in self._not_before if key not in present]:
                del self._not_before[key]
        now = time.time()
        for key in keys:
            if self._not_before.get(key, 0.0) <= now:
                await self._dispatch(spool, key)

    async def _dispatch(self, spool: Spool, key: str) -> None:
        """Start an attempt when a slot is free (waiting for one: that bounds the tasks)."""
        busy = (id(spool), key)
        if busy in self._busy:
            return
        assert self._slots is not None
        await self._slots.acquire()
        self._busy.add(busy)
        task = asyncio.create_task(self._attempt(spool, key))
        self._attempts.add(task)

        def finished(task: asyncio.Task[None]) -> None:
            self._attempts.discard(task)
            self._busy.discard(busy)
            assert self._slots is not None
            self._slots.release()

        task.add_done_callback(finished)

    def _retry_at(self, spool: Spool, key: str, when: float) -> None:
        """One timer per record: the latest decision replaces an earlier one."""
        self._not_before[key] = when
        which = (id(spool), key)
        earlier = self._timers.pop(which, None)
        if earlier is not None:
            earlier.cancel()

        def wake() -> None:
            self._timers.pop(which, None)
            self._offer(spool, key)

        delay = max(0.0, when - time.time())
        self._timers[which] = asyncio.get_running_loop().call_later(delay, wake)

    # --- one attempt ---------------------------------------------------------------------

    async def _attempt(self, spool: Spool, key: str) -> None:
        try:
            async with spool.claim(key) as claim:
                if claim is not None:
                    await self._deliver(spool, claim)
        except StorageError as error:
            self._counters.spool_failures.inc()
            log.warning("pending event %s: %s", key, error)
        except Exception:  # a bug: the loop must not die of it, the record stays
            log.exception("pending event %s: delivery failed unexpectedly", key)

    async def _deliver(self, spool: Spool, claim: Claim) -> None:
        pending = claim.pending
        due = self.schedule.next_attempt(pending.created, pending.attempted)
        if due is None:
            await self._expire(claim)
            return
        if due > time.time():
            self._retry_at(spool, pending.key, due)  # another process tried it lately
            return
        if pending.url not in self.urls:
            # Another instance on the bucket may have this webhook: leave it to them,
            # until the schedule's end (then whoever finds it drops it, logged).
            self._not_before[pending.key] = pending.created + self.schedule.give_up_after
            log.warning(
                "event %s is for %s, not one of this process's --webhook: left to others",
                pending.label,
                _shown(pending.url),
            )
            return
        failure = await self._post(pending)
        finished = time.time()
        if failure is None:
            self._counters.attempts.labels("delivered").inc()
            log.info("event %s delivered to %s", pending.label, _shown(pending.url))
            self._not_before.pop(pending.key, None)
            await claim.done()
            return
        self._counters.attempts.labels("failed").inc()
        await claim.attempted(finished)
        following = self.schedule.next_attempt(pending.created, finished)
        if following is None:
            log.warning("event %s to %s failed: %s", pending.label, _shown(pending.url), failure)
            await self._expire(claim)
            return
        log.warning(
            "event %s to %s failed: %s; next attempt in %.3gs",
            pending.label,
            _shown(pending.url),
            failure,
            following - finished,
        )
        self._retry_at(spool, pending.key, following)

    async def _post(self, pending: Pending) -> str | None:
        """One POST; None when the receiver took it, else what went wrong."""
        assert self._session is not None
        headers: dict[str, str] = {hdrs.CONTENT_TYPE: "application/json"}
        if self._secret:
            headers[SIGNATURE_HEADER] = sign(pending.body, self._secret)
        try:
            async with self._session.post(
                pending.url, data=pending.body, headers=headers, allow_redirects=False
            ) as response:
                if 200 <= response.status < 300:
                    return None
                return f"answered {response.status}"
        except TimeoutError:
            return f"no answer within {self.timeout:g}s"
        except (aiohttp.ClientError, OSError, ValueError) as error:
            return f"{type(error).__name__}: {error}"

    async def _expire(self, claim: Claim) -> None:
        """Retried for the whole schedule: drop it, with its body in the log to recover it."""
        pending = claim.pending
        self._counters.dropped.labels("expired").inc()
        log.error(
            "event %s to %s given up after %gs of retries: %s",
            pending.label,
            _shown(pending.url),
            self.schedule.give_up_after,
            pending.body.decode(),
        )
        self._not_before.pop(pending.key, None)
        await claim.done()


EVENTS: web.AppKey[EventBus] = web.AppKey("events", EventBus)


async def emit(app: web.Application, event_type: str, data: Mapping[str, Any]) -> Event | None:
    """Send an event to the configured webhooks: `await emit(request.app, "file.deleted",
    file_data(meta))`. Returns once the event is spooled (durable before you answer)."""
    return await app[EVENTS].emit(event_type, data)


async def events_lifecycle(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: delivery runs for the application's life (after the storage starts)."""
    bus = app[EVENTS]
    await bus.start()
    yield
    await bus.close()
