"""CORS (`--cors-origin`): preflights and actual answers on every route, for a listed
origin, an origin not listed, and `*`; errors and sendfile downloads included; and
nothing at all without the flag. The browser's side is tests/page/test_cors_browser.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from streamproxy import Settings, create_app
from streamproxy.http.cors import parse_cors_origin
from streamproxy.runtime.settings import SettingsError

from .conftest import Service, ServiceFactory, md5, random_bytes
from .test_settings import parse

LISTED = "http://widget.example:8000"
OTHER = "https://elsewhere.example"
KEY = "cors-key"

# API.md, "Browsers, deletion, listing, upload links, events", the CORS bullet.
ALLOWED_HEADERS = {
    "authorization",
    "content-type",
    "range",
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
    "if-range",
    "tus-resumable",
    "upload-offset",
    "upload-length",
    "upload-defer-length",
    "upload-metadata",
    "upload-checksum",
    "upload-concat",
    "upload-complete",
    "upload-draft-interop-version",
}
EXPOSED_HEADERS = {
    "etag",
    "location",
    "content-range",
    "content-disposition",
    "x-request-id",
    "upload-offset",
    "upload-length",
    "upload-expires",
    "upload-limit",
    "tus-resumable",
    "tus-version",
    "tus-max-size",
    "tus-extension",
}
# Over the cache's 64 KiB: a local download of it goes out by sendfile.
BIG = 300_000


def header_set(value: str | None) -> set[str]:
    return {part.strip().lower() for part in (value or "").split(",") if part.strip()}


def cors_headers(response: aiohttp.ClientResponse) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.lower().startswith("access-control-")}


def every_route(service: Service) -> list[tuple[str, set[str]]]:
    """Each path the app serves (a placeholder filled in) and the methods it takes there
    (a path may be several resources: `/files` is upload, listing and deletion)."""
    routes: dict[str, set[str]] = {}
    for resource in service.server.app.router.resources():
        path = re.sub(r"\{[^}]*\}", "app.js", resource.canonical)
        routes.setdefault(path, set()).update(route.method for route in resource)
    return list(routes.items())


async def preflight(
    service: Service, path: str, origin: str, method: str = "POST", **headers: str
) -> tuple[aiohttp.ClientResponse, bytes]:
    request_headers = {"Origin": origin, "Access-Control-Request-Method": method, **headers}
    async with service.session.options(service.url + path, headers=request_headers) as response:
        return response, await response.read()


async def call(
    service: Service, method: str, path: str, origin: str | None, **kwargs: Any
) -> tuple[aiohttp.ClientResponse, bytes]:
    headers = dict(kwargs.pop("headers", {}))
    if origin is not None:
        headers["Origin"] = origin
    async with service.session.request(
        method, service.url + path, headers=headers, **kwargs
    ) as response:
        return response, await response.read()


def form(data: bytes, name: str) -> aiohttp.FormData:
    body = aiohttp.FormData()
    body.add_field("conversationId", "13318")
    body.add_field("file", data, filename=name, content_type="application/octet-stream")
    return body


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {KEY}"}


async def actual_requests(service: Service, origin: str | None) -> list[tuple[str, Any, bytes]]:
    """One actual request per route, successes and errors, each answer with what it was."""
    data = random_bytes(BIG, seed=14)
    answers = []

    async def record(what: str, method: str, path: str, **kwargs: Any) -> None:
        response, body = await call(service, method, path, origin, **kwargs)
        answers.append((what, response, body))

    await record("upload", "POST", "/files", data=form(data, "big.bin"), headers=auth())
    await record(
        "upload-hc", "POST", "/api/uploadFileStream", data=form(b"hc", "hc.txt"), headers=auth()
    )
    await record("upload 401", "POST", "/files", data=form(b"x", "no-key.txt"))
    await record("from-url 400", "POST", "/files/from-url", json={}, headers=auth())
    name = "13318_big.bin"
    await record("download", "GET", "/files/download", params={"filename": name})
    await record(
        "download range",
        "GET",
        "/files/download",
        params={"filename": name},
        headers={"Range": "bytes=1000-1999"},
    )
    await record("download head", "HEAD", "/files/download", params={"filename": name})
    await record("download-hc", "GET", "/api/downloadFileStream", params={"filename": name})
    await record("download 404", "GET", "/files/download", params={"filename": "13318_none"})
    await record(
        "download 416",
        "GET",
        "/files/download",
        params={"filename": name},
        headers={"Range": f"bytes={BIG + 5}-"},
    )
    await record("stat", "GET", "/files/stat", params={"filename": name}, headers=auth())
    await record("stat-hc", "GET", "/api/getFileStat", params={"filename": name}, headers=auth())
    for path in ("/files/limits", "/openapi.json", "/healthz", "/readyz", "/metrics", "/"):
        await record(path, "GET", path)
    await record("page asset", "GET", "/ui/app.js")
    await record("no route", "GET", "/nowhere")
    await record("wrong method", "PUT", "/files/limits")
    return answers


EXPECTED_STATUS = {
    "upload": 200,
    "upload-hc": 200,
    "upload 401": 401,
    "from-url 400": 400,
    "download": 200,
    "download range": 206,
    "download head": 200,
    "download-hc": 200,
    "download 404": 404,
    "download 416": 416,
    "stat": 200,
    "stat-hc": 200,
    "page asset": 200,
    "no route": 404,
    "wrong method": 405,
}


def check_status_and_bodies(answers: list[tuple[str, Any, bytes]]) -> None:
    """CORS changes no status and no body: the same answers as without it."""
    data = random_bytes(BIG, seed=14)
    for what, response, _ in answers:
        assert response.status == EXPECTED_STATUS.get(what, 200), what
    bodies = {what: (response, body) for what, response, body in answers}
    assert json.loads(bodies["upload"][1])["etag"] == md5(data)
    assert bodies["download"][1] == data
    response, body = bodies["download range"]
    assert body == data[1000:2000]
    assert response.headers["Content-Range"] == f"bytes 1000-1999/{BIG}"


async def test_preflights_for_every_route_are_answered_without_an_api_key(
    start_service: ServiceFactory,
) -> None:
    service = await start_service(cors_origin=(LISTED,), api_key=(KEY,))
    routes = every_route(service)
    assert {"/files", "/files/download", "/files/from-url", "/healthz", "/metrics"} <= {
        path for path, _ in routes
    }
    for path, methods in routes:
        method = sorted(methods)[0]
        response, body = await preflight(
            service,
            path,
            LISTED,
            method,
            **{"Access-Control-Request-Headers": "authorization,content-type,range"},
        )
        assert response.status == 204, (path, body)
        assert body == b""
        assert response.headers["Access-Control-Allow-Origin"] == LISTED
        assert header_set(response.headers["Access-Control-Allow-Methods"]) == {
            m.lower() for m in methods
        }, path
        assert header_set(response.headers["Access-Control-Allow-Headers"]) == ALLOWED_HEADERS
        assert response.headers["Access-Control-Max-Age"] == "600"
        assert "origin" in header_set(response.headers.get("Vary"))
        assert "Access-Control-Allow-Credentials" not in response.headers
        assert response.headers["X-Request-Id"]


async def test_a_listed_origin_may_read_every_answer_errors_and_downloads_included(
    start_service: ServiceFactory,
) -> None:
    """Runs on both storages: a local download goes out by sendfile, an S3 one in chunks."""
    service = await start_service(cors_origin=(OTHER, LISTED), api_key=(KEY,))
    answers = await actual_requests(service, LISTED)
    check_status_and_bodies(answers)
    for what, response, _ in answers:
        assert response.headers.get("Access-Control-Allow-Origin") == LISTED, what
        exposed = header_set(response.headers.get("Access-Control-Expose-Headers"))
        assert exposed == EXPOSED_HEADERS, what
        assert "origin" in header_set(response.headers.get("Vary")), what
        assert "Access-Control-Allow-Credentials" not in response.headers
        assert "Access-Control-Allow-Methods" not in response.headers


@pytest.mark.local_only  # decided before storage is touched
async def test_an_origin_not_listed_gets_no_cors_header_and_the_same_answers(
    start_service: ServiceFactory,
) -> None:
    service = await start_service(cors_origin=(LISTED,), api_key=(KEY,))
    plain = await start_service(api_key=(KEY,))
    for origin in (OTHER, "http://widget.example:8001", "null"):
        response, body = await preflight(service, "/files", origin)
        unflagged, unflagged_body = await preflight(plain, "/files", origin)
        assert response.status == unflagged.status == 405
        assert cors_headers(response) == {}
        assert json.loads(body)["error"] == json.loads(unflagged_body)["error"]
        # The answer depends on the origin: a cache must keep the origins apart.
        assert "origin" in header_set(response.headers.get("Vary"))
    answers = await actual_requests(service, OTHER)
    check_status_and_bodies(answers)
    for what, response, _ in answers:
        assert cors_headers(response) == {}, what
        assert "origin" in header_set(response.headers.get("Vary")), what
    # No Origin at all (curl, connectors): no CORS header either.
    for what, response, _ in await actual_requests(service, None):
        assert cors_headers(response) == {}, what


@pytest.mark.local_only  # decided before storage is touched
async def test_any_origin_with_a_star(start_service: ServiceFactory) -> None:
    service = await start_service(cors_origin=("*",), api_key=(KEY,))
    for origin in (LISTED, OTHER, "null"):
        response, _ = await preflight(service, "/files/download", origin, "GET")
        assert response.status == 204
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert header_set(response.headers["Access-Control-Allow-Methods"]) == {"get", "head"}
        # The same answer for every origin: nothing for a cache to keep apart.
        assert "Vary" not in response.headers
    answers = await actual_requests(service, OTHER)
    check_status_and_bodies(answers)
    for what, response, _ in answers:
        assert response.headers.get("Access-Control-Allow-Origin") == "*", what
        assert header_set(response.headers.get("Access-Control-Expose-Headers")) == (
            EXPOSED_HEADERS
        )
        assert "Access-Control-Allow-Credentials" not in response.headers
        assert "origin" not in header_set(response.headers.get("Vary")), what


@pytest.mark.local_only  # decided before storage is touched
async def test_without_the_flag_no_cors_header_is_ever_sent(service: Service) -> None:
    response, body = await preflight(service, "/files", LISTED)
    assert response.status == 405
    assert json.loads(body)["detail"] == "OPTIONS is not allowed on /files"
    assert cors_headers(response) == {}
    answers = await actual_requests(service, LISTED)
    for what, response, _ in answers:
        assert cors_headers(response) == {}, what
        assert "origin" not in header_set(response.headers.get("Vary")), what


@pytest.mark.local_only  # decided before storage is touched
async def test_an_options_without_a_requested_method_is_left_to_the_route(
    start_service: ServiceFactory,
) -> None:
    """tus's own `OPTIONS /files/uploads` carries no Access-Control-Request-Method."""
    service = await start_service(cors_origin=(LISTED,))
    response, _ = await call(service, "OPTIONS", "/files", LISTED)
    assert response.status == 405  # the route's answer, as without the flag
    assert response.headers["Allow"] == "DELETE,GET,POST,PUT"  # uploads, listing, deletion
    assert response.headers["Access-Control-Allow-Origin"] == LISTED
    assert "Access-Control-Allow-Methods" not in response.headers
    # A requested method without an Origin is no preflight either.
    response, _ = await call(
        service, "OPTIONS", "/files", None, headers={"Access-Control-Request-Method": "POST"}
    )
    assert response.status == 405
    assert cors_headers(response) == {}
    # A preflight for a path the service does not have: the router's 404.
    response, body = await preflight(service, "/nowhere", LISTED)
    assert response.status == 404
    assert json.loads(body)["error"] == "not_found"


@pytest.mark.local_only  # decided before storage is touched
async def test_preflights_are_counted(start_service: ServiceFactory) -> None:
    service = await start_service(cors_origin=(LISTED,))
    for origin, path in ((LISTED, "/files"), (LISTED, "/healthz"), (OTHER, "/files")):
        await preflight(service, path, origin)
    await preflight(service, "/nowhere", LISTED)
    _, body = await call(service, "GET", "/metrics", None)
    counts = dict(
        re.findall(
            r'^streamproxy_cors_preflights_total\{result="(\w+)"\} (\S+)$', body.decode(), re.M
        )
    )
    assert counts == {"answered": "2.0", "refused": "1.0", "no_route": "1.0"}


async def test_preflights_and_headers_reach_a_mounted_service(tmp_path: Path) -> None:
    """A host program that mounts the service with add_subapp gets CORS on its routes."""
    host = web.Application()
    service_app = create_app(Settings(storage=str(tmp_path), cors_origin=(LISTED,)))
    host.add_subapp("/media", service_app)
    server = TestServer(host, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{server.port}/media"
            request = {"Origin": LISTED, "Access-Control-Request-Method": "POST"}
            async with session.options(url + "/files", headers=request) as response:
                assert response.status == 204
                assert response.headers["Access-Control-Allow-Methods"] == "DELETE, GET, POST, PUT"
                assert response.headers["Access-Control-Allow-Origin"] == LISTED
            async with session.get(url + "/healthz", headers={"Origin": LISTED}) as response:
                assert response.status == 200
                assert response.headers["Access-Control-Allow-Origin"] == LISTED
    finally:
        await server.close()


@pytest.mark.parametrize(
    ("text", "origin"),
    [
        ("https://chat.example", "https://chat.example"),
        ("HTTPS://Chat.Example:443", "https://chat.example"),
        ("http://localhost:80/", "http://localhost"),
        ("http://127.0.0.1:3000", "http://127.0.0.1:3000"),
        ("https://chat.example:80", "https://chat.example:80"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("https://bücher.example", "https://xn--bcher-kva.example"),
        (" * ", "*"),
    ],
)
def test_origins_are_normalised_as_browsers_send_them(text: str, origin: str) -> None:
    assert parse_cors_origin(text) == origin


@pytest.mark.parametrize(
    "text",
    [
        "chat.example",
        "ftp://chat.example",
        "https://chat.example/widget",
        "https://chat.example?x=1",
        "https://chat.example#top",
        "https://user@chat.example",
        "https://chat.example:99999",
        "https://",
        "null",
        "",
        "**",
    ],
)
def test_bad_origins_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="origin"):
        parse_cors_origin(text)


def test_the_setting_from_flags_environment_and_file(tmp_path: Path) -> None:
    settings = parse("--cors-origin", "https://A.example", "--cors-origin", "http://b.example:81")
    assert settings.cors_origin == ("https://a.example", "http://b.example:81")
    environ = {"STREAMPROXY_CORS_ORIGIN": "https://a.example:443, *"}
    assert parse(environ=environ).cors_origin == ("https://a.example", "*")
    config = tmp_path / "streamproxy.toml"
    config.write_text('cors_origin = ["https://chat.example"]\n')
    assert parse("--config", str(config)).cors_origin == ("https://chat.example",)
    assert parse().cors_origin == ()
    with pytest.raises(SettingsError, match="--cors-origin: an origin has no path"):
        parse("--cors-origin", "https://chat.example/widget")
