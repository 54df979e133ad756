"""CORS in a real browser: a page on one origin calls the service on another.

A tiny static server on 127.0.0.1 serves an empty page on two ports: one origin
is listed in `--cors-origin`, the other is not. From the listed one Chromium
uploads with fetch and FormData (a preflight, since the request carries an API
key), uploads resumably with tus (creation and PATCHes, reading `Location`,
`Upload-Offset` and `ETag`), then downloads a Range and reads `ETag` and
`Content-Range`; from the
other the browser itself refuses to hand the page any answer (fetch rejects
with a TypeError). One browser launch for all of it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from ..conftest import ServiceFactory, md5
from .test_browser import browser  # noqa: F401  (a fixture: one Chromium, as the page uses)

KEY = "widget-key"
SIZE = 200_000  # over the 64 KiB cache: the download goes out by sendfile

# The widget's code, run in the page: bytes made in JS, so nothing crosses but HTTP.
UPLOAD_AND_DOWNLOAD = """
async ({service, key, size}) => {
  const bytes = new Uint8Array(size);
  for (let i = 0; i < size; i++) bytes[i] = (i * 7 + 3) % 251;
  const form = new FormData();
  form.append("conversationId", "13318");
  form.append("file", new File([bytes], "widget.bin", {type: "application/octet-stream"}));
  const upload = await fetch(service + "/files", {
    method: "POST", body: form, headers: {Authorization: "Bearer " + key}});
  const stored = await upload.json();
  const ranged = await fetch(stored.url, {headers: {Range: "bytes=1000-1999"}});
  const part = Array.from(new Uint8Array(await ranged.arrayBuffer()));
  const refused = await fetch(service + "/files", {method: "POST", body: form});
  return {
    upload: {status: upload.status, body: stored, requestId: upload.headers.get("X-Request-Id")},
    range: {status: ranged.status, etag: ranged.headers.get("ETag"), part,
            contentRange: ranged.headers.get("Content-Range"),
            disposition: ranged.headers.get("Content-Disposition")},
    refused: {status: refused.status, body: await refused.json()},
  };
}
"""

# A resumable upload from the widget: tus creation, then two PATCHes, all cross-origin.
RESUMABLE = """
async ({service, key, size}) => {
  const bytes = new Uint8Array(size);
  for (let i = 0; i < size; i++) bytes[i] = (i * 11 + 5) % 251;
  const b64 = (text) => btoa(text);
  const auth = {Authorization: "Bearer " + key, "Tus-Resumable": "1.0.0"};
  const created = await fetch(service + "/files/uploads", {method: "POST", headers: {...auth,
    "Upload-Length": String(size),
    "Upload-Metadata": "filename " + b64("resumed.bin") + ",conversationId " + b64("13318")}});
  const location = created.headers.get("Location");
  const half = Math.floor(size / 2);
  const patches = [];
  for (const [start, end] of [[0, half], [half, size]]) {
    const answer = await fetch(location, {method: "PATCH", body: bytes.slice(start, end),
      headers: {...auth, "Upload-Offset": String(start),
                "Content-Type": "application/offset+octet-stream"}});
    patches.push({status: answer.status, offset: answer.headers.get("Upload-Offset"),
                  etag: answer.headers.get("ETag")});
  }
  const result = await fetch(location, {headers: auth});
  return {created: created.status, location, patches, result: await result.json()};
}
"""

FROM_ANOTHER_ORIGIN = """
async ({service, key}) => {
  const attempt = async (run) => {
    try { const response = await run(); return {status: response.status}; }
    catch (error) { return {error: error.name}; }
  };
  const form = new FormData();
  form.append("conversationId", "13318");
  form.append("file", new File(["not for you"], "blocked.txt", {type: "text/plain"}));
  return {
    upload: await attempt(() => fetch(service + "/files", {
      method: "POST", body: form, headers: {Authorization: "Bearer " + key}})),
    download: await attempt(() => fetch(
      service + "/files/download?filename=13318_widget.bin", {headers: {Range: "bytes=0-9"}})),
    health: await attempt(() => fetch(service + "/healthz")),
  };
}
"""


@pytest.fixture
async def page_origins() -> AsyncIterator[tuple[str, str]]:
    """An empty page served on two ports of 127.0.0.1: two origins."""

    async def empty_page(request: web.Request) -> web.Response:
        return web.Response(text="<!doctype html><title>widget</title>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/", empty_page)
    runner = web.AppRunner(app)
    await runner.setup()
    origins = []
    for _ in range(2):
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        origins.append(f"http://127.0.0.1:{runner.addresses[-1][1]}")
    try:
        yield origins[0], origins[1]
    finally:
        await runner.cleanup()


@pytest.mark.local_only  # the browser's side of CORS; one launch is enough
async def test_a_page_on_a_listed_origin_uploads_and_downloads_and_another_is_blocked(
    start_service: ServiceFactory,
    browser: Any,  # noqa: F811
    page_origins: tuple[str, str],
) -> None:
    listed, unlisted = page_origins
    answered: list[tuple[str, str, int, str | None]] = []

    async def record(request: web.Request, response: web.StreamResponse) -> None:
        answered.append(
            (request.method, request.path, response.status, request.headers.get("Origin"))
        )

    service = await start_service(
        cors_origin=(listed,),
        api_key=(KEY,),
        prepare=lambda app: app.on_response_prepare.append(record),
    )
    assert service.url.rsplit(":", 1)[1] not in {o.rsplit(":", 1)[1] for o in page_origins}

    page = await browser.new_page()
    page.set_default_timeout(15_000)
    await page.goto(listed + "/")
    result = await page.evaluate(
        UPLOAD_AND_DOWNLOAD, {"service": service.url, "key": KEY, "size": SIZE}
    )
    data = bytes((i * 7 + 3) % 251 for i in range(SIZE))
    upload = result["upload"]
    assert upload["status"] == 200, upload
    assert upload["body"]["name"] == "13318_widget.bin"
    assert upload["body"]["etag"] == md5(data)
    assert upload["requestId"]  # an exposed header
    # The upload carried a key, so the browser asked first; the preflight carried none.
    assert ("OPTIONS", "/files", 204, listed) in answered
    ranged = result["range"]
    assert ranged["status"] == 206
    assert ranged["etag"] == f'"{md5(data)}"'
    assert ranged["contentRange"] == f"bytes 1000-1999/{SIZE}"
    assert ranged["disposition"] is not None and "widget.bin" in ranged["disposition"]
    assert bytes(ranged["part"]) == data[1000:2000]
    # Errors carry the headers too: the widget can read why it was refused.
    assert result["refused"]["status"] == 401
    assert result["refused"]["body"]["error"] == "unauthorized"
    resumed = await page.evaluate(RESUMABLE, {"service": service.url, "key": KEY, "size": SIZE})
    data = bytes((i * 11 + 5) % 251 for i in range(SIZE))
    assert resumed["created"] == 201 and resumed["location"]  # Location is exposed
    assert [p["status"] for p in resumed["patches"]] == [204, 204]
    assert resumed["patches"][-1]["offset"] == str(SIZE)  # Upload-Offset is exposed
    assert resumed["patches"][-1]["etag"] == f'"{md5(data)}"'
    assert resumed["result"]["name"] == "13318_resumed.bin"
    assert ("OPTIONS", "/files/uploads", 204, listed) in answered  # tus headers preflighted
    await page.close()

    page = await browser.new_page()
    page.set_default_timeout(15_000)
    await page.goto(unlisted + "/")
    blocked = await page.evaluate(FROM_ANOTHER_ORIGIN, {"service": service.url, "key": KEY})
    assert blocked == {
        "upload": {"error": "TypeError"},
        "download": {"error": "TypeError"},
        "health": {"error": "TypeError"},
    }
    await page.close()
    # The refused preflight kept the upload from being sent at all.
    assert ("OPTIONS", "/files", 405, unlisted) in answered
    assert not [a for a in answered if a[0] == "POST" and a[3] == unlisted], answered
    assert service.stored_names() == {"13318_widget.bin", "13318_resumed.bin"}
