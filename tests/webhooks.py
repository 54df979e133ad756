"""A webhook receiver for the events tests, and helpers to watch delivery.

The receiver is what a connector would write: an aiohttp app on loopback that
checks each event's signature (400 otherwise) and keeps what it got; `mode`
makes it misbehave (hang, redirect) on cue.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families

from streamproxy.events import EVENTS, SIGNATURE_HEADER, Schedule, verify

from .conftest import LocalStore, Service

SECRET = "webhook-secret-of-the-tests"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Receiver:
    """A webhook receiver as a connector would write one: it checks the signature
    (400 otherwise), then keeps the event. `mode` makes it misbehave."""

    def __init__(self, secret: str | None = SECRET, port: int | None = None) -> None:
        self.secret = secret
        self.port = port or free_port()
        self.events: list[dict[str, Any]] = []
        self.rejected = 0
        self.mode = "ok"  # "hang": hold every request; "redirect": answer 307
        self.held = 0
        self.release = asyncio.Event()
        self.redirect_followed = 0
        self.in_flight: dict[str, int] = {}
        self.most_at_once = 0  # the most deliveries of one event id at the same time
        self._server: TestServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook?token=abc"

    def ids(self) -> set[str]:
        return {event["id"] for event in self.events}

    def of_type(self, event_type: str) -> list[dict[str, Any]]:
        return [event for event in self.events if event["type"] == event_type]

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.secret is not None and not verify(
            request.headers.get(SIGNATURE_HEADER, ""), body, self.secret
        ):
            self.rejected += 1
            return web.Response(status=400, text="bad signature")
        if self.mode == "hang":
            self.held += 1
            await self.release.wait()
        if self.mode == "redirect":
            raise web.HTTPTemporaryRedirect("/elsewhere")
        event = json.loads(body)
        self.in_flight[event["id"]] = self.in_flight.get(event["id"], 0) + 1
        self.most_at_once = max(self.most_at_once, self.in_flight[event["id"]])
        await asyncio.sleep(0.05)  # long enough for a second deliverer to overlap
        self.in_flight[event["id"]] -= 1
        self.events.append(event)
        return web.Response(status=204)

    async def _source(self, request: web.Request) -> web.Response:
        """Files for URL imports to fetch: `/source/NAME.png` is a PNG, others text."""
        if request.match_info["name"].endswith(".png"):
            return web.Response(body=PNG, content_type="image/png")
        return web.Response(text="plain words\n")

    async def _elsewhere(self, request: web.Request) -> web.Response:
        self.redirect_followed += 1
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        app.router.add_post("/elsewhere", self._elsewhere)
        app.router.add_get("/source/{name}", self._source)
        self._server = TestServer(app, host="127.0.0.1", port=self.port)
        await self._server.start_server()

    async def stop(self) -> None:
        self.release.set()
        if self._server is not None:
            await self._server.close()
            self._server = None


def quick_retries(app: web.Application) -> None:
    """`prepare` hook: retries after 0.1 s instead of 5 s, so a test waits seconds."""
    bus = app[EVENTS]
    bus.schedule = Schedule(first_retry=0.1, give_up_after=60.0)
    bus.scan_interval = 0.2


def tiny_queue(app: web.Application) -> None:
    """`prepare` hook: quick retries, and room for 2 fresh events in memory: the
    rest spill, and only the spool scan finds them."""
    quick_retries(app)
    app[EVENTS].queue_size = 2


def pending_records(service: Service) -> list[str]:
    """What the spool holds: files in `.events/`, or objects under `<prefix>.events/`."""
    store = service.store
    if isinstance(store, LocalStore):
        directory = store.root / ".events"
        return sorted(p.name for p in directory.iterdir()) if directory.exists() else []
    keys = store._keys(store.prefix + ".events/")
    return sorted(key for key in keys if key.endswith(".json"))  # not the claims' locks


async def metric_value(url: str, name: str, **labels: str) -> float:
    async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as response:
        text = await response.text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


async def until_metric(url: str, name: str, at_least: float, **labels: str) -> None:
    """Wait until a counter of the service reaches `at_least` (the server's own pace)."""
    for _ in range(300):
        if await metric_value(url, name, **labels) >= at_least:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{name}{labels} did not reach {at_least}")


def chunked_upload(data: bytes, filename: str, conversation_id: str) -> aiohttp.FormData:
    """A form sent without Content-Length: the cap is found by the pump, not declared."""

    form = aiohttp.FormData()
    form.add_field("conversationId", conversation_id)

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 4096):
            yield data[start : start + 4096]

    form.add_field("file", pieces(), filename=filename)
    return form
