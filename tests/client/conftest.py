"""Fixtures for the client tests: a live service that records what reached it, and the CLI.

The recording is the service's own view of each request (an `on_response_prepare`
hook added by the test, not a mock), so a test can prove that a resumed download
really sent `Range` and `If-Range`, or that a signed link's query string arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from streamproxy.cli import main
from streamproxy.client import MediaClient

from ..conftest import Service, ServiceFactory
from ..fetch.conftest import start_source  # noqa: F401  (a fixture: sources for URL imports)

SEEN_HEADERS = ("Range", "If-Range", "Authorization", "Content-Length", "Transfer-Encoding")


@dataclass
class Exchange:
    """One request as the service saw it, and the status it answered."""

    method: str
    path: str
    path_qs: str
    headers: dict[str, str]
    status: int


@dataclass
class Recorder:
    exchanges: list[Exchange] = field(default_factory=list)

    def install(self, app: web.Application) -> None:
        app.on_response_prepare.append(self._record)

    async def _record(self, request: web.Request, response: web.StreamResponse) -> None:
        headers = {name: request.headers[name] for name in SEEN_HEADERS if name in request.headers}
        self.exchanges.append(
            Exchange(request.method, request.path, request.path_qs, headers, response.status)
        )

    def to(self, path_end: str, method: str | None = None) -> list[Exchange]:
        return [
            seen
            for seen in self.exchanges
            if seen.path.endswith(path_end) and (method is None or seen.method == method)
        ]

    def clear(self) -> None:
        self.exchanges.clear()


@dataclass
class Recorded:
    """A started service and what reached it."""

    service: Service
    seen: Recorder

    @property
    def url(self) -> str:
        return self.service.url


@pytest.fixture
def start_recorded(start_service: ServiceFactory) -> Any:
    async def start(**settings: Any) -> Recorded:
        recorder = Recorder()
        service = await start_service(prepare=recorder.install, **settings)
        return Recorded(service, recorder)

    return start


@pytest.fixture
async def served(start_recorded: Any) -> Recorded:
    recorded: Recorded = await start_recorded()
    return recorded


@pytest.fixture
async def client(served: Recorded) -> AsyncIterator[MediaClient]:
    async with MediaClient(served.url) as media:
        yield media


@dataclass
class CliRun:
    code: int
    stdout: str
    stderr: str

    def json_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]


def _call_main(argv: list[str]) -> CliRun:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse's usage errors
            code = exit_.code if isinstance(exit_.code, int) else 1
    return CliRun(code, out.getvalue(), err.getvalue())


async def run_cli(*argv: str) -> CliRun:
    """`streamproxy ARGV` in a worker thread (its own event loop), while the service serves."""
    return await asyncio.to_thread(_call_main, list(argv))
