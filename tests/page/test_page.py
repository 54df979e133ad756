"""The test page as HTTP: served at the base path, strict CSP, no inline code, `--no-ui`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from streamproxy import Settings, create_app

from ..conftest import Service, ServiceFactory
from ..test_settings import parse


async def get(service: Service, path: str, **kwargs: Any) -> tuple[aiohttp.ClientResponse, str]:
    async with service.session.get(service.url + path, **kwargs) as response:
        return response, await response.text()


async def test_the_page_and_its_assets_are_served(service: Service) -> None:
    response, _ = await get(service, "/")
    assert response.status == 200
    assert response.content_type == "text/html"
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "default-src 'none'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    for path, content_type in (("/ui/app.js", "text/javascript"), ("/ui/app.css", "text/css")):
        asset, body = await get(service, path)
        assert asset.status == 200 and asset.content_type == content_type and body
        assert asset.headers["Content-Security-Policy"] == policy
        again, _ = await get(service, path, headers={"If-None-Match": asset.headers["ETag"]})
        assert again.status == 304


async def test_the_page_has_no_inline_code(service: Service) -> None:
    """The CSP would block inline script and style: the page must not need them."""
    _, html = await get(service, "/")
    for tag in re.findall(r"<script\b[^>]*>(.*?)</script>", html, re.S):
        assert not tag.strip()
    assert 'src="ui/app.js"' in html and 'href="ui/app.css"' in html
    assert "<style" not in html
    assert not re.search(r"\s(on[a-z]+|style)\s*=", html)


async def test_the_page_links_its_own_icon_and_every_link_answers(
    start_service: ServiceFactory,
) -> None:
    """Without an icon link a browser asks for `/favicon.ico` at the origin: a 404."""
    service = await start_service(base_path="/media")
    _, html = await get(service, "/media/")
    icons = re.findall(r'<link rel="icon" href="([^"]+)" type="([^"]+)">', html)
    assert icons == [("ui/icon.svg", "image/svg+xml")]
    for link in re.findall(r'(?:href|src)="([^"#]+)"', html):
        response, body = await get(service, "/media/" + link)
        assert response.status == 200, link
    icon, body = await get(service, "/media/ui/icon.svg")
    assert icon.content_type == "image/svg+xml" and body.startswith("<svg")


async def test_unknown_assets_are_not_found(service: Service) -> None:
    for path in ("/ui/index.html", "/ui/__init__.py", "/ui/..%2f__init__.py", "/ui/"):
        response, _ = await get(service, path)
        assert response.status == 404, path


async def test_the_page_follows_the_base_path(start_service: ServiceFactory) -> None:
    service = await start_service(base_path="/media")
    response, html = await get(service, "/media/")
    assert response.status == 200 and "ui/app.js" in html
    asset, _ = await get(service, "/media/ui/app.js")
    assert asset.status == 200
    redirect, _ = await get(service, "/media", allow_redirects=False)
    assert redirect.status == 308 and redirect.headers["Location"] == "/media/"
    elsewhere, _ = await get(service, "/")
    assert elsewhere.status == 404


async def test_the_page_works_in_a_mounted_sub_application(tmp_path: Path) -> None:
    host = web.Application()
    host.add_subapp("/chat/media", create_app(Settings(storage=str(tmp_path / "data"))))
    server = TestServer(host, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            base = f"http://127.0.0.1:{server.port}/chat/media"
            async with session.get(base + "/") as page:
                assert page.status == 200
            async with session.get(base + "/ui/app.js") as asset:
                assert asset.status == 200
    finally:
        await server.close()


async def test_no_ui_turns_the_page_off(start_service: ServiceFactory) -> None:
    service = await start_service(ui=False)
    for path in ("/", "/ui/app.js"):
        response, _ = await get(service, path)
        assert response.status == 404
        assert response.content_type == "application/json"


@pytest.mark.parametrize(
    ("argv", "environ", "expected"),
    [
        ((), {}, True),
        (("--no-ui",), {}, False),
        ((), {"STREAMPROXY_UI": "false"}, False),
        ((), {"STREAMPROXY_UI": "true"}, True),
        (("--no-ui",), {"STREAMPROXY_UI": "true"}, False),
    ],
)
def test_the_ui_setting(argv: tuple[str, ...], environ: dict[str, str], expected: bool) -> None:
    assert parse(*argv, environ=environ).ui is expected


def test_the_ui_setting_from_a_config_file(tmp_path: Path) -> None:
    config = tmp_path / "streamproxy.toml"
    config.write_text("ui = false\n")
    assert parse("--config", str(config)).ui is False
