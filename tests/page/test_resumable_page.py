"""The test page's own tus client in Chromium: the network drops mid-upload, the upload
resumes and completes, and the stored file is byte-identical.

Two ways the network drops: Playwright aborts chosen PATCH requests (as a lost
connection), and the whole browser goes offline for a while and comes back.
The service records each PATCH's `Upload-Offset`, so the test sees where the
page went on from.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from ..conftest import Service, ServiceFactory, md5, random_bytes
from .test_browser import browser as browser  # the Chromium fixture
from .test_browser import finished

pytestmark = pytest.mark.local_only  # the server's resumable uploads are on local storage

MiB = 1024 * 1024
CHUNK = 4 * MiB  # app.js RESUMABLE_CHUNK
KEY = "page-key"


class Seen:
    """What reached the service: each request's method and (for PATCH) offset."""

    def __init__(self, patch_delay: float = 0.0) -> None:
        self.requests: list[tuple[str, int | None, int]] = []
        self.patch_delay = patch_delay

    def install(self, app: web.Application) -> None:
        app.on_response_prepare.append(self._record)

        @web.middleware
        async def slow(request: web.Request, handler: Any) -> web.StreamResponse:
            if request.method == "PATCH" and self.patch_delay:
                await asyncio.sleep(self.patch_delay)
            response: web.StreamResponse = await handler(request)
            return response

        app.middlewares.append(slow)

    async def _record(self, request: web.Request, response: web.StreamResponse) -> None:
        if "/files/uploads" in request.path:
            offset = request.headers.get("Upload-Offset")
            self.requests.append(
                (request.method, None if offset is None else int(offset), response.status)
            )

    def patch_offsets(self) -> list[int]:
        return [offset or 0 for method, offset, status in self.requests if method == "PATCH"]

    def count(self, method: str) -> int:
        return sum(1 for seen in self.requests if seen[0] == method)


async def open_page(browser: Any, service: Service) -> Any:
    context = await browser.new_context()
    page = await context.new_page()
    page.set_default_timeout(30_000)
    await page.goto(service.url + "/media/")
    await page.wait_for_selector("body.ready")
    await page.fill("#api-key", KEY)
    await page.fill("#conversation-id", "13318")
    return page


async def start(start_service: ServiceFactory, seen: Seen) -> Service:
    return await start_service(
        base_path="/media", api_key=(KEY,), max_size=64 * MiB, prepare=seen.install
    )


async def check_stored(service: Service, card: Any, data: bytes, name: str) -> None:
    assert await card.locator(".name").inner_text() == f"13318_{name}"
    assert await card.locator(".etag").inner_text() == md5(data)
    download = service.url + "/media/files/download"
    async with service.session.get(download, params={"filename": f"13318_{name}"}) as answer:
        assert answer.status == 200
        assert await answer.read() == data  # byte-identical


async def test_aborted_patches_are_resumed_from_the_servers_offset(
    start_service: ServiceFactory,
    browser: Any,
    tmp_path: Path,
) -> None:
    seen = Seen()
    service = await start(start_service, seen)
    data = random_bytes(14 * MiB, seed=31)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    page = await open_page(browser, service)
    patches = 0
    aborted = 0

    async def drop_some(route: Any) -> None:
        nonlocal patches, aborted
        if route.request.method == "PATCH":
            patches += 1
            if patches in (2, 3):  # the second chunk fails twice: backoff, HEAD, again
                aborted += 1
                await route.abort("internetdisconnected")
                return
        await route.continue_()

    await page.route("**/files/uploads/*", drop_some)
    await page.set_input_files("#files", [str(path)])
    card = await finished(page, "big.bin")
    await check_stored(service, card, data, "big.bin")
    assert aborted == 2
    assert await card.get_attribute("data-retries") == "2"
    assert seen.count("POST") == 1  # one upload, taken up again after each drop
    assert seen.count("HEAD") == 2
    assert seen.patch_offsets() == [0, CHUNK, 2 * CHUNK, 3 * CHUNK]
    assert await page.evaluate("localStorage.length") == 0  # forgotten once stored


async def test_the_upload_carries_on_when_the_browser_comes_back_online(
    start_service: ServiceFactory,
    browser: Any,
    tmp_path: Path,
) -> None:
    seen = Seen(patch_delay=0.5)  # a slow uplink: the network drops while chunks are left
    service = await start(start_service, seen)
    data = random_bytes(18 * MiB, seed=32)
    path = tmp_path / "long.bin"
    path.write_bytes(data)
    page = await open_page(browser, service)

    async with page.expect_response(lambda r: r.request.method == "PATCH"):
        await page.set_input_files("#files", [str(path)])
    await page.context.set_offline(True)
    card = page.locator(".result", has_text="long.bin")
    await page.wait_for_function(
        "() => Number(document.querySelector('.result').dataset.retries) >= 2"
    )
    assert "connection lost" in await card.locator(".state").inner_text()
    offline_patches = seen.count("PATCH")
    await page.context.set_offline(False)

    card = await finished(page, "long.bin")
    await check_stored(service, card, data, "long.bin")
    assert seen.count("POST") == 1
    offsets = seen.patch_offsets()
    assert offsets[0] == 0 and len(offsets) > offline_patches
    assert offsets == sorted(set(offsets))  # each PATCH went on from the server's offset
