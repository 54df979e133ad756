"""Fixtures and helpers shared by the URL-import tests (a subpackage keeps them together)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from ipaddress import ip_network
from typing import Any

import aiohttp
import pytest

from ..conftest import Service, ServiceFactory
from .sources import Source

UPLOAD_MESSAGE = "An error occurred while uploading file."
# The tests' own sources live on these two; only they are let through.
SOURCE_HOSTS = ("127.0.0.2", "127.0.0.3")
ALLOW_SOURCES = tuple(ip_network(f"{host}/32") for host in SOURCE_HOSTS)

SourceFactory = Callable[[str], Awaitable[Source]]


@pytest.fixture
async def start_source() -> AsyncIterator[SourceFactory]:
    started: list[Source] = []

    async def start(host: str = SOURCE_HOSTS[0]) -> Source:
        source = await Source(host).start()
        started.append(source)
        return source

    yield start
    for source in started:
        await source.close()


@pytest.fixture
async def source(start_source: SourceFactory) -> Source:
    return await start_source(SOURCE_HOSTS[0])


@pytest.fixture
async def other_source(start_source: SourceFactory) -> Source:
    """A second origin, for cross-origin redirects."""
    return await start_source(SOURCE_HOSTS[1])


@pytest.fixture
async def importer(start_service: ServiceFactory) -> Service:
    """The service, allowed to reach the tests' sources and nothing else local."""
    return await start_service(fetch_allow=ALLOW_SOURCES)


async def post_import(
    service: Service,
    body: Any,
    *,
    path: str = "/files/from-url",
    headers: dict[str, str] | None = None,
) -> tuple[aiohttp.ClientResponse, dict[str, Any]]:
    """POST a JSON body to the import route; (response, parsed JSON body)."""
    async with service.session.post(service.url + path, json=body, headers=headers) as response:
        parsed: dict[str, Any] = await response.json(content_type=None)
        return response, parsed


def job(url: str, **fields: Any) -> dict[str, Any]:
    """A request body with the required fields and the given extras."""
    return {"sourceUrl": url, "channel": "whatsapp", "conversationId": "11111", **fields}


async def import_ok(service: Service, url: str, **fields: Any) -> dict[str, Any]:
    response, body = await post_import(service, job(url, **fields))
    assert response.status == 200, body
    assert response.headers["ETag"] == f'"{body["etag"]}"'
    return body


async def import_error(service: Service, url: str, status: int, code: str, **fields: Any) -> str:
    """Import and expect a contract error; returns its detail."""
    response, body = await post_import(service, job(url, **fields))
    assert response.status == status, body
    assert body["error"] == code, body
    assert body["message"] == UPLOAD_MESSAGE
    detail: str = body["detail"]
    assert detail
    return detail
