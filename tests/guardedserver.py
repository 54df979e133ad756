"""aiohttp's `TestServer`, its connections made as `streamproxy serve` makes them.

A test server of aiohttp's own would give each connection aiohttp's plain handler,
so the tests that run the service in their own process would pass by the service's
connection layer (runtime/connections.py: the head's deadline and size, the body
past the parser, the body read straight into buffers). This one listens through
`GuardedSite`, with the settings and counters of the app it serves.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestServer
from yarl import URL

from streamproxy.intake.transfers import TRANSFERS
from streamproxy.runtime.connections import GuardedSite, HeadLimits
from streamproxy.runtime.metrics import METRICS
from streamproxy.runtime.server import READ_BUFFER
from streamproxy.runtime.settings import SETTINGS


class GuardedTestServer(TestServer):
    async def start_server(
        self, loop: asyncio.AbstractEventLoop | None = None, **kwargs: Any
    ) -> None:
        if self.runner:
            return
        handler_options: dict[str, Any] = {"read_bufsize": READ_BUFFER, **kwargs}
        self.runner = await self._make_runner(handler_cancellation=True, **handler_options)
        await self.runner.setup()
        settings = self.app[SETTINGS]
        site = GuardedSite(
            self.runner,
            self.host,
            0,
            limits=HeadLimits(settings.header_timeout, settings.max_head_size),
            metrics=self.app[METRICS],
            handler_options=handler_options,
            body_buffer=self.app[TRANSFERS].read_buffer,
        )
        await site.start()
        self.port = self.runner.addresses[0][1]
        self.scheme = "http"
        self._root = URL(f"http://{self.host}:{self.port}")
