"""aiohttp's `TestServer`, its connections made as `streamproxy serve` makes them.

A test server of aiohttp's own would give each connection aiohttp's plain handler,
so the tests that run the service in their own process would pass by the service's
connection layer (runtime/connections.py: the head's deadline and size, the body
past the parser, the body read straight into buffers). This one listens through the
site `streamproxy serve` builds (`runtime.server.guarded_site`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer
from yarl import URL

from streamproxy.runtime.server import READ_BUFFER, guarded_site


class GuardedTestServer(TestServer):
    async def start_server(
        self, loop: asyncio.AbstractEventLoop | None = None, **kwargs: Any
    ) -> None:
        if self.runner:
            return
        handler_options: dict[str, Any] = {"read_bufsize": READ_BUFFER, **kwargs}
        runner = await self._make_runner(handler_cancellation=True, **handler_options)
        assert isinstance(runner, web.AppRunner)
        self.runner = runner
        await runner.setup()
        await guarded_site(runner, self.host, 0, handler_options=handler_options).start()
        self.port = runner.addresses[0][1]
        self.scheme = "http"
        self._root = URL(f"http://{self.host}:{self.port}")
