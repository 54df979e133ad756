"""Upload links (API.md "Upload links"): issued with an API key and `--signing-key`, used
once without a key, within their terms; every refusal, and one use under racing uses on
each storage, across two instances on one storage, and across `--workers 2`."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from streamproxy.http import linktokens
from streamproxy.runtime.metrics import METRICS
from streamproxy.runtime.retention import sweep
from streamproxy.runtime.settings import SETTINGS
from streamproxy.storage.base import STORAGE, OneTimeClaims, capability

from .conftest import (
    ServerProcess,
    Service,
    ServiceFactory,
    eventually,
    md5,
    random_bytes,
    raw_request,
    require_program,
    run_program,
)
from .faultproxy import ALWAYS, Answer, FaultProxy, Match
from .s3support import S3Server
from .test_upload_refusals import expect_error, parse_answer
from .test_workers import started

pytestmark = pytest.mark.every_s3_server  # one-use claims are conditional writes

KEY = "api-key"
SIGNING = "link-signing-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
PNG = b"\x89PNG\r\n\x1a\n" + random_bytes(2000, seed=5)
Spawn = Callable[..., Awaitable[ServerProcess]]


async def links_service(start_service: ServiceFactory, **overrides: Any) -> Service:
    overrides.setdefault("api_key", (KEY,))
    overrides.setdefault("signing_key", (SIGNING,))
    return await start_service(**overrides)


async def issue(service: Service, **terms: Any) -> dict[str, Any]:
    terms.setdefault("conversationId", "conv1")
    async with service.session.post(
        service.url + "/files/upload-links", json=terms, headers=AUTH
    ) as response:
        assert response.status == 200, await response.text()
        link: dict[str, Any] = await response.json()
    return link


async def put(
    service: Service, url: str | URL, data: bytes, **headers: str
) -> aiohttp.ClientResponse:
    async with service.session.put(url, data=data, headers=headers) as response:
        await response.read()
        return response


async def post_form(
    service: Service, url: str | URL, data: bytes, filename: str = "x.png", **fields: str
) -> aiohttp.ClientResponse:
    form = aiohttp.FormData()
    for name, value in fields.items():
        form.add_field(name, value)
    form.add_field("file", data, filename=filename)
    async with service.session.post(url, data=form) as response:
        await response.read()
        return response


async def forbidden(response: aiohttp.ClientResponse, words: str) -> None:
    assert words in await expect_error(response, 403, "forbidden")


# --- issuing -------------------------------------------------------------------------


async def test_a_link_has_the_terms_and_the_expiry_asked_for(
    start_service: ServiceFactory,
) -> None:
    service = await links_service(start_service)
    before = int(time.time())
    link = await issue(service, conversationId=42, fileName="scan.pdf", expiresIn=120)
    assert set(link) == {"url", "expires"}
    assert before + 120 <= link["expires"] <= int(time.time()) + 120
    url = URL(link["url"])
    assert (url.path, url.query["conversationId"], url.query["fileName"]) == (
        "/files", "42", "scan.pdf",
    )  # fmt: skip
    default = await issue(service)
    assert default["expires"] - int(time.time()) in range(3590, 3601)


async def test_issuing_needs_the_api_key(start_service: ServiceFactory) -> None:
    service = await links_service(start_service)
    url = service.url + "/files/upload-links"
    async with service.session.post(url, json={"conversationId": "1"}) as response:
        assert response.status == 401
        assert (await response.json())["error"] == "unauthorized"
    bad = {"Authorization": "Bearer nope"}
    async with service.session.post(url, json={"conversationId": "1"}, headers=bad) as response:
        assert response.status == 403
        assert (await response.json())["error"] == "forbidden"


async def test_without_a_signing_key_links_are_refused(start_service: ServiceFactory) -> None:
    service = await start_service(api_key=(KEY,))
    async with service.session.post(
        service.url + "/files/upload-links", json={"conversationId": "1"}, headers=AUTH
    ) as response:
        assert response.status == 403
        body = await response.json()
    assert body["error"] == "forbidden" and "--signing-key" in body["detail"]
    # A token brought to such a service opens nothing either.
    other = await links_service(start_service)
    link = await issue(other)
    response = await put(
        service, URL(link["url"]).with_host("127.0.0.1").with_port(service.port), PNG
    )
    await forbidden(response, "--signing-key")
    service.assert_nothing_stored()


@pytest.mark.local_only  # validation of the JSON: nothing reaches storage
@pytest.mark.parametrize(
    "terms",
    [
        {},
        {"conversationId": ""},
        {"conversationId": "../x"},
        {"conversationId": True},
        {"conversationId": "1", "fileName": "a/b"},
        {"conversationId": "1", "fileName": ""},
        {"conversationId": "1", "maxSize": 5 * 1024 * 1024 + 1},
        {"conversationId": "1", "maxSize": -1},
        {"conversationId": "1", "maxSize": "10"},
        {"conversationId": "1", "allowType": "image/*"},
        {"conversationId": "1", "allowType": ["not a rule!"]},
        {"conversationId": "1", "expiresIn": 0},
        {"conversationId": "1", "expiresIn": 8 * 24 * 3600},
        ["conversationId"],
    ],
)
async def test_bad_terms_are_400(start_service: ServiceFactory, terms: Any) -> None:
    service = await links_service(start_service)
    async with service.session.post(
        service.url + "/files/upload-links", json=terms, headers=AUTH
    ) as response:
        assert response.status == 400, await response.text()
        assert (await response.json())["error"] == "bad_request"


# --- using ---------------------------------------------------------------------------


@pytest.mark.parametrize("via", ["multipart", "put"])
async def test_one_upload_without_a_key_then_403(start_service: ServiceFactory, via: str) -> None:
    service = await links_service(start_service)
    link = await issue(service)
    if via == "multipart":
        form = aiohttp.FormData()
        form.add_field("file", PNG, filename="x.png")
        request = service.session.post(link["url"], data=form)
    else:
        request = service.session.put(link["url"], data=PNG)
    async with request as response:
        assert response.status == 200
        body = await response.json()
    assert (body["name"], body["etag"]) == (
        "conv1_x.png" if via == "multipart" else "conv1_file.png", md5(PNG),
    )  # fmt: skip
    for again in (post_form, put):
        await forbidden(await again(service, link["url"], PNG), "has been used")
    service.assert_clean({body["name"]})
    # The link is no API key elsewhere: the key is still needed without it.
    async with service.session.put(
        service.url + "/files?conversationId=conv1", data=PNG
    ) as response:
        assert response.status == 401


async def test_a_used_link_is_refused_before_the_body(start_service: ServiceFactory) -> None:
    service = await links_service(start_service)
    link = URL((await issue(service))["url"])
    assert (await put(service, link, PNG)).status == 200
    head = (
        f"PUT {link.raw_path_qs} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000000\r\n"
        "Expect: 100-continue\r\nConnection: close\r\n\r\n"
    ).encode()
    status, _, payload = parse_answer(await raw_request(service.port, head, []))
    assert status == 403 and "has been used" in json.loads(payload)["detail"]


async def test_the_link_s_file_name_wins(start_service: ServiceFactory) -> None:
    service = await links_service(start_service)
    link = await issue(service, fileName="passport.png")
    response = await post_form(service, link["url"], PNG, filename="IMG_0001.png")
    assert response.status == 200
    service.assert_clean({"conv1_passport.png"})


async def test_curl_uses_the_link_as_it_is(start_service: ServiceFactory, tmp_path: Path) -> None:
    curl = require_program("curl", "curl")
    service = await links_service(start_service)
    source = tmp_path / "photo.png"
    source.write_bytes(PNG)
    names = []
    for args in (["-T", str(source)], ["-F", f"file=@{source}"]):
        link = await issue(service)
        code, stdout, _ = await run_program(curl, "-sS", *args, link["url"])
        assert code == 0
        names.append(json.loads(stdout)["name"])
        code, stdout, _ = await run_program(curl, "-sS", *args, link["url"])
        assert json.loads(stdout)["error"] == "forbidden"
    assert names == ["conv1_file.png", "conv1_photo.png"]  # -T names no file: sniffed
    service.assert_clean(set(names))


# --- refusals ------------------------------------------------------------------------


async def test_altered_expired_or_foreign_links_are_403(start_service: ServiceFactory) -> None:
    service = await links_service(start_service)
    url = URL((await issue(service, fileName="a.png"))["url"])
    token = url.query["uploadToken"]
    payload, _, signature = token.partition(".")
    forged = json.loads(linktokens._unb64(payload))
    forged["m"] = 10**12  # a bigger cap, signature kept
    tampered = {
        "payload changed": url.update_query(
            uploadToken=linktokens._b64(json.dumps(forged).encode()) + "." + signature
        ),
        "signature changed": url.update_query(uploadToken=payload + "." + signature[::-1]),
        "no signature": url.update_query(uploadToken=payload),
        "another key": url.update_query(
            uploadToken=linktokens.sign(linktokens.read(token, [SIGNING]), ["other-key"])
        ),
    }
    for case, altered in tampered.items():
        response = await put(service, altered, PNG)
        assert "not valid" in await expect_error(response, 403, "forbidden"), case
    await forbidden(
        await put(service, url.update_query(conversationId="conv2"), PNG), "conversationId"
    )
    await forbidden(await put(service, url.update_query(fileName="b.png"), PNG), "fileName")
    response = await post_form(service, url, PNG, conversationId="conv2")
    await forbidden(response, "another conversationId")  # the form's, after the body
    expired = linktokens.new_link("conv1", None, 1000, (), 60, now=time.time() - 120)
    response = await put(
        service, url.update_query(uploadToken=linktokens.sign(expired, [SIGNING])), PNG
    )
    await forbidden(response, "expired")
    service.assert_nothing_stored()
    assert (await put(service, url, PNG)).status == 200  # none of that used the link up


async def test_refused_uploads_leave_the_link_usable(start_service: ServiceFactory) -> None:
    service = await links_service(start_service)
    link = URL((await issue(service, maxSize=3000, allowType=["image/*"]))["url"])
    await expect_error(await put(service, link, random_bytes(3001)), 413, "too_large")

    async def stream() -> Any:  # no Content-Length: the cap counts the bytes as they come
        yield PNG
        yield random_bytes(2000)

    async with service.session.put(link, data=stream()) as response:
        await expect_error(response, 413, "too_large")
    await expect_error(
        await put(service, link, b"%PDF-1.7\n" + bytes(100)), 415, "type_not_allowed"
    )
    response = await post_form(service, link, b"plain text", filename="t.txt")
    await expect_error(response, 415, "type_not_allowed")
    # A client that goes away mid-body does not use it up either.
    head = (
        f"PUT {link.raw_path_qs} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2500\r\n\r\n"
    ).encode()
    _reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
    writer.write(head + PNG[:1000])
    await writer.drain()
    await eventually(lambda: service.in_flight() == 1)  # the upload is under way
    writer.close()
    await eventually(lambda: service.in_flight() == 0)  # and over, its temporary removed
    service.assert_nothing_stored()
    response = await put(service, link, PNG)
    assert response.status == 200
    await forbidden(await put(service, link, PNG), "has been used")


async def test_the_link_s_types_come_on_top_of_the_service_s(
    start_service: ServiceFactory,
) -> None:
    from streamproxy.intake.mediatypes import parse_type_rule

    service = await links_service(start_service, deny_type=(parse_type_rule("image/gif"),))
    link = (await issue(service, allowType=["image/*"]))["url"]
    gif = b"GIF89a" + bytes(100)
    await expect_error(await put(service, link, gif), 415, "type_not_allowed")
    assert (await put(service, link, PNG)).status == 200


# --- one use, racing -----------------------------------------------------------------


async def race(services: list[Service], link: str, uses: int = 20) -> Counter[int]:
    """`uses` uploads on one link at once, spread over `services`, each on its own session."""
    url = URL(link)

    async def use(index: int) -> int:
        service = services[index % len(services)]
        target = url.with_host("127.0.0.1").with_port(service.port)
        async with aiohttp.ClientSession() as session:
            data = random_bytes(200_000, seed=index)
            async with session.put(target, data=data) as response:
                await response.read()
                return response.status

    return Counter(await asyncio.gather(*(use(i) for i in range(uses))))


async def test_twenty_racing_uses_one_wins(start_service: ServiceFactory) -> None:
    service = await links_service(start_service)
    link = (await issue(service, fileName="race.bin"))["url"]
    assert await race([service], link) == {200: 1, 403: 19}
    service.assert_clean({"conv1_race.bin"})


async def test_twenty_racing_uses_on_two_instances_one_wins(
    start_service: ServiceFactory, tmp_path: Path
) -> None:
    """Two services on one storage (one directory, or one bucket and prefix)."""
    first = await links_service(start_service, root=tmp_path / "shared")
    second = await links_service(start_service, root=tmp_path / "shared")
    link = (await issue(first, fileName="race.bin"))["url"]
    assert await race([first, second], link) == {200: 1, 403: 19}
    first.assert_clean({"conv1_race.bin"})


async def test_twenty_racing_uses_across_two_workers_one_wins(spawn: Spawn, tmp_path: Path) -> None:
    storage = tmp_path / "data"
    server = await spawn(
        "--storage", str(storage), "--workers", "2", "--signing-key", SIGNING, "--api-key", KEY
    )
    await eventually(lambda: started(server))  # both workers listen
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            server.url + "/files/upload-links",
            json={"conversationId": "w", "fileName": "race.bin"},
            headers=AUTH,
        ) as response,
    ):
        link = URL((await response.json())["url"])
    workers: set[str] = set()

    async def use(index: int) -> int:
        data = random_bytes(200_000, seed=index)
        # A session (so a connection) each: the kernel may pick either worker.
        async with aiohttp.ClientSession() as session, session.put(link, data=data) as response:
            await response.read()
            workers.add(response.headers["X-Request-Id"][:12])
            return response.status

    statuses = Counter(await asyncio.gather(*(use(i) for i in range(20))))
    assert statuses == {200: 1, 403: 19}
    assert len(workers) == 2, "both workers answered"
    assert sorted(p.name for p in storage.iterdir() if not p.name.startswith(".")) == ["w_race.bin"]


@pytest.mark.s3_only  # a storage failure on the publishing write, staged by the fault proxy
async def test_a_commit_that_fails_after_the_claim_gives_the_link_back(
    start_service: ServiceFactory, s3_server: S3Server
) -> None:
    proxy = await FaultProxy(s3_server.port).start()
    try:
        service = await links_service(start_service, s3_endpoint=proxy.endpoint)
        link = (await issue(service, fileName="back.png"))["url"]
        # The link's claim is the first conditional PutObject; the file's is the second.
        publish = proxy.fail(
            Match("PUT", headers=("If-None-Match",)), Answer(503, "SlowDown"), nth=2, times=ALWAYS
        )
        response = await put(service, link, PNG)
        await expect_error(response, 503, "storage_unavailable")
        assert publish.hits
        proxy.restore()
        service.assert_nothing_stored()
        response = await put(service, link, PNG)
        assert response.status == 200, "the failed commit released the claim"
        await forbidden(await put(service, link, PNG), "has been used")
        service.assert_clean({"conv1_back.png"})
    finally:
        await proxy.close()


async def test_claims_of_expired_links_are_swept(start_service: ServiceFactory) -> None:
    """A claim only has to outlive its link (at most 7 days); then retention removes it."""
    service = await links_service(start_service)
    storage = capability(service.server.app[STORAGE], OneTimeClaims)
    assert storage is not None
    for _ in range(2):
        assert (await put(service, (await issue(service))["url"], PNG)).status == 200
    app = service.server.app
    now = datetime.now(UTC)
    assert await storage.forget_claims_before(now - timedelta(days=1)) == 0
    if service.kind == "local":  # local claim files can be aged; S3's LastModified cannot
        old, new = sorted((service.root / ".claims").iterdir())
        eight_days_ago = time.time() - 8 * 24 * 3600
        os.utime(old, (eight_days_ago, eight_days_ago))
        await sweep(app[STORAGE], app[SETTINGS], app[METRICS])
        assert list((service.root / ".claims").iterdir()) == [new]
        assert await storage.forget_claims_before(now + timedelta(minutes=1)) == 1
    else:
        assert await storage.forget_claims_before(now + timedelta(minutes=1)) == 2
    assert await storage.forget_claims_before(now + timedelta(minutes=1)) == 0
