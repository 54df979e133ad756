"""Upload links for resumable uploads (API.md "Upload links"): a tus or draft creation
at `/files/uploads` with the link's query needs no API key, nor do that upload's later
requests; the link's terms apply; the link is used up at completion, once, shared with
`POST /files` and `PUT /files`.

Local storage only: the resumable routes answer 501 on S3 until its upload store lands.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from yarl import URL

from streamproxy.resumable.state import Protocol, UploadRecord

from ..conftest import Service, ServiceFactory, md5, random_bytes

pytestmark = pytest.mark.local_only  # the links logic is the same on every storage

KEY = "api-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
TUS = {"Tus-Resumable": "1.0.0"}
PATCH = {**TUS, "Content-Type": "application/offset+octet-stream"}
DRAFT8 = {"Upload-Draft-Interop-Version": "8"}
PNG = b"\x89PNG\r\n\x1a\n" + random_bytes(300_000, seed=41)


def metadata(**fields: str) -> str:
    import base64

    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in fields.items())


async def links_service(start_service: ServiceFactory, **overrides: Any) -> Service:
    return await start_service(api_key=(KEY,), signing_key=("link-key",), **overrides)


async def issue(service: Service, **terms: Any) -> URL:
    """The link's resumable form: its query on `/files/uploads` (README "Upload links")."""
    terms.setdefault("conversationId", "conv1")
    url = service.url + "/files/upload-links"
    async with service.session.post(url, json=terms, headers=AUTH) as response:
        assert response.status == 200, await response.text()
        link = URL((await response.json())["url"])
    return link.with_path(link.path + "/uploads").with_query(link.query)


def plain(link: URL) -> URL:
    """The link as issued, for `POST /files` and `PUT /files`."""
    return link.with_path(link.path.removesuffix("/uploads")).with_query(link.query)


async def tus_create(
    service: Service,
    url: URL | str,
    length: int | None,
    headers: dict[str, str] | None = None,
    **meta: str,
) -> tuple[int, str, dict[str, Any]]:
    sent = {**TUS, "Upload-Metadata": metadata(**(meta or {"filename": "photo.png"}))}
    if length is None:
        sent["Upload-Defer-Length"] = "1"
    else:
        sent["Upload-Length"] = str(length)
    sent.update(headers or {})
    async with service.session.post(url, headers=sent) as answer:
        body = await answer.read()
        detail = json.loads(body) if body else {}
        return answer.status, answer.headers.get("Location", ""), detail


async def tus_patch(
    service: Service, url: str, offset: int, data: bytes, **extra: str
) -> tuple[int, dict[str, Any]]:
    headers = {**PATCH, "Upload-Offset": str(offset), **extra}
    async with service.session.patch(url, data=data, headers=headers) as answer:
        body = await answer.read()
        return answer.status, json.loads(body) if body else {}


async def post_form(service: Service, url: URL, data: bytes) -> int:
    form = aiohttp.FormData()
    form.add_field("file", data, filename="form.png")
    async with service.session.post(url, data=form) as response:
        await response.read()
        return response.status


def record_of(service: Service, location: str) -> UploadRecord:
    upload_id = location.rsplit("/", 1)[1]
    return UploadRecord.from_json((service.root / ".uploads" / upload_id / "info").read_bytes())


# --- working through a link ----------------------------------------------------------------


async def test_a_tus_upload_through_a_link_needs_no_api_key(
    start_service: ServiceFactory,
) -> None:
    service = await links_service(start_service)
    link = await issue(service)
    # No conversationId in the metadata: the link's is the upload's.
    status, url, _ = await tus_create(service, link, len(PNG), filename="photo.png")
    assert status == 201 and url.startswith(service.url + "/files/uploads/")
    record = record_of(service, url)
    assert record.upload_link == link.query["uploadToken"]
    assert record.metadata == {"filename": "photo.png", "conversationId": "conv1"}
    async with service.session.head(url, headers=TUS) as answer:
        assert (answer.status, answer.headers["Upload-Offset"]) == (200, "0")
    half = len(PNG) // 2
    assert (await tus_patch(service, url, 0, PNG[:half]))[0] == 204
    assert (await tus_patch(service, url, half, PNG[half:]))[0] == 204
    async with service.session.get(url, headers=TUS) as answer:
        assert answer.status == 200
        body = await answer.json()
    assert (body["name"], body["etag"]) == ("conv1_photo.png", md5(PNG))
    async with service.session.get(body["url"]) as answer:  # signed, as with --signing-key
        assert await answer.read() == PNG
    async with service.session.delete(url, headers=TUS) as answer:
        assert answer.status == 204  # the link's upload, without a key too
    # Used: a new creation with it is refused at once, and so are the other uses.
    status, _, detail = await tus_create(service, link, 10)
    assert status == 403 and "has been used" in detail["detail"]
    assert await post_form(service, plain(link), PNG) == 403
    assert service.stored_names() == {"conv1_photo.png"}


async def test_without_a_link_the_api_key_still_applies(start_service: ServiceFactory) -> None:
    service = await links_service(start_service)
    status, _, detail = await tus_create(service, service.url + "/files/uploads", 10)
    assert (status, detail["error"]) == (401, "unauthorized")
    status, url, _ = await tus_create(
        service, service.url + "/files/uploads", 10, AUTH, filename="a.bin", conversationId="c"
    )
    assert status == 201 and record_of(service, url).upload_link is None
    for method in ("HEAD", "DELETE", "GET"):
        async with service.session.request(method, url, headers=TUS) as answer:
            assert answer.status == 401, method
    assert (await tus_patch(service, url, 0, b"0123456789"))[0] == 401
    assert (await tus_patch(service, url, 0, b"0123456789", **AUTH))[0] == 204
    # A link's token on a request to an upload made with the key lends it nothing.
    link = await issue(service)
    async with service.session.head(
        URL(url).with_query(uploadToken=link.query["uploadToken"]), headers=TUS
    ) as answer:
        assert answer.status == 401
    # Unknown uploads answer the key's refusal, not 404, to a request without one.
    async with service.session.head(
        service.url + "/files/uploads/AAAAAAAAAAAAAAAAAAAAAA", headers=TUS
    ) as answer:
        assert answer.status == 401


async def test_a_draft_creation_with_upload_complete_through_a_link(
    start_service: ServiceFactory,
) -> None:
    service = await links_service(start_service)
    link = await issue(service, fileName="scan.png")
    headers = {**DRAFT8, "Upload-Complete": "?1", "Content-Type": "image/png"}
    async with service.session.post(
        link.update_query(filename="IMG_1.png"), data=PNG, headers=headers
    ) as answer:
        assert answer.status == 200, await answer.text()
        assert answer.headers["Upload-Complete"] == "?1"
        body = await answer.json()
        location = answer.headers["Location"]
    assert (body["name"], body["etag"]) == ("conv1_scan.png", md5(PNG))  # the link's name
    record = record_of(service, location)
    assert "uploadToken" not in record.metadata  # the token is kept once, as the link
    assert record.upload_link == link.query["uploadToken"]
    async with service.session.post(link, data=PNG, headers=headers) as answer:
        assert answer.status == 403
    assert service.stored_names() == {"conv1_scan.png"}


# --- the link's terms ----------------------------------------------------------------------


async def test_a_link_for_another_conversation_or_altered_is_403_at_creation(
    start_service: ServiceFactory,
) -> None:
    service = await links_service(start_service)
    link = await issue(service)
    status, _, detail = await tus_create(service, link, 10, conversationId="conv2", filename="a")
    assert status == 403 and "another conversationId" in detail["detail"]
    altered = link.update_query(uploadToken=link.query["uploadToken"][:-2] + "xx")
    status, _, detail = await tus_create(service, altered, 10)
    assert status == 403 and "not valid" in detail["detail"]
    async with service.session.post(
        link.update_query(conversationId="conv2"),
        data=PNG,
        headers={**DRAFT8, "Upload-Complete": "?1"},
    ) as answer:
        assert answer.status == 403
    assert not (service.root / ".uploads").exists() or not any(
        (service.root / ".uploads").iterdir()
    )
    status, url, _ = await tus_create(service, link, len(PNG), conversationId="conv1")
    assert (await tus_patch(service, url, 0, PNG))[0] == 204  # nothing used it up


async def test_the_link_s_size_cap_holds_for_every_length(start_service: ServiceFactory) -> None:
    service = await links_service(start_service)
    link = await issue(service, maxSize=1000)
    status, _, detail = await tus_create(service, link, 1001)
    assert (status, detail["error"]) == (413, "too_large")
    # A deferred length declared later, then bytes with no length declared at all.
    status, url, _ = await tus_create(service, link, None)
    assert status == 201
    status, detail = await tus_patch(service, url, 0, PNG[:500], **{"Upload-Length": "1001"})
    assert (status, detail["error"]) == (413, "too_large")
    status, detail = await tus_patch(service, url, 0, PNG[:1001])
    assert (status, detail["error"]) == (413, "too_large")
    async with service.session.post(
        link, data=PNG[:1001], headers={**DRAFT8, "Upload-Complete": "?1"}
    ) as answer:
        assert answer.status == 413
    assert service.stored_names() == set()
    # The draft announces the link's cap as its Upload-Limit.
    headers = {**DRAFT8, "Upload-Complete": "?0"}
    async with service.session.post(link, data=b"", headers=headers) as answer:
        assert answer.status == 201, await answer.text()
        assert answer.headers["Upload-Limit"] == "max-size=1000"
        location = answer.headers["Location"]
    async with service.session.head(location, headers=DRAFT8) as answer:
        assert (answer.status, answer.headers["Upload-Limit"]) == (204, "max-size=1000")
    # The refusals left the link usable.
    png = PNG[:1000]
    status, url, _ = await tus_create(service, link, len(png))
    assert (await tus_patch(service, url, 0, png))[0] == 204
    assert service.stored_names() == {"conv1_photo.png"}


async def test_the_link_s_types_apply_and_a_refusal_leaves_it_usable(
    start_service: ServiceFactory,
) -> None:
    service = await links_service(start_service)
    link = await issue(service, allowType=["image/*"])
    pdf = b"%PDF-1.7\n" + bytes(2000)
    status, url, _ = await tus_create(service, link, len(pdf), filename="doc.pdf")
    status, detail = await tus_patch(service, url, 0, pdf)
    assert (status, detail["error"]) == (415, "type_not_allowed")
    async with service.session.get(url, headers=TUS) as answer:
        assert answer.status == 415  # the refusal is kept and replayed
    assert service.stored_names() == set()
    status, url, _ = await tus_create(service, link, len(PNG))
    assert (await tus_patch(service, url, 0, PNG))[0] == 204
    assert service.stored_names() == {"conv1_photo.png"}


# --- one use -------------------------------------------------------------------------------


async def test_two_uploads_on_one_link_only_the_first_to_complete_stores(
    start_service: ServiceFactory,
) -> None:
    service = await links_service(start_service)
    link = await issue(service)
    first = (await tus_create(service, link, len(PNG), filename="one.png"))[1]
    second = (await tus_create(service, link, len(PNG), filename="two.png"))[1]
    assert (await tus_patch(service, first, 0, PNG))[0] == 204
    status, detail = await tus_patch(service, second, 0, PNG)
    assert status == 403 and "has been used" in detail["detail"]
    assert service.stored_names() == {"conv1_one.png"}


async def test_a_multipart_post_and_a_tus_upload_on_one_link_one_stores(
    start_service: ServiceFactory,
) -> None:
    service = await links_service(start_service)
    # The POST first: the tus upload, created before, cannot complete.
    link = await issue(service)
    url = (await tus_create(service, link, len(PNG)))[1]
    assert (await tus_patch(service, url, 0, PNG[:1000]))[0] == 204
    assert await post_form(service, plain(link), PNG) == 200
    status, detail = await tus_patch(service, url, 1000, PNG[1000:])
    assert status == 403 and "has been used" in detail["detail"]
    assert service.stored_names() == {"conv1_form.png"}
    # The tus upload first: the POST is refused.
    link = await issue(service, conversationId="conv2")
    url = (await tus_create(service, link, len(PNG)))[1]
    assert (await tus_patch(service, url, 0, PNG))[0] == 204
    assert await post_form(service, plain(link), PNG) == 403
    # Both at once, each with every byte but the last in flight: exactly one wins.
    for attempt in range(5):
        link = await issue(service, conversationId=f"race{attempt}")
        url = (await tus_create(service, link, len(PNG)))[1]
        assert (await tus_patch(service, url, 0, PNG[:-1]))[0] == 204
        async with aiohttp.ClientSession() as other:
            racing = Service(service.url, service.store, service.settings, other, service.server)
            (tus_status, _), form_status = await asyncio.gather(
                tus_patch(service, url, len(PNG) - 1, PNG[-1:]), post_form(racing, plain(link), PNG)
            )
        assert sorted((tus_status, form_status)) in ([200, 403], [204, 403]), attempt
        stored = {n for n in service.stored_names() if n.startswith(f"race{attempt}_")}
        assert len(stored) == 1, stored


# --- the record ----------------------------------------------------------------------------


def test_a_record_written_before_links_reads_as_made_with_a_key() -> None:
    record = UploadRecord.create(
        protocol=Protocol.TUS, now=0, lifetime=60, md5_state=b"", max_size=10, length=5
    )
    fields = json.loads(record.to_json())
    assert fields["upload_link"] is None
    del fields["upload_link"]
    old = UploadRecord.from_json(json.dumps(fields).encode())
    assert old == record and old.upload_link is None
    linked = UploadRecord.create(
        protocol=Protocol.TUS, now=0, lifetime=60, md5_state=b"", max_size=10, upload_link="t.s"
    )
    assert UploadRecord.from_json(linked.to_json()).upload_link == "t.s"


async def test_a_parallel_tus_upload_through_a_link(start_service: ServiceFactory) -> None:
    """tus-js-client's `parallelUploads`: partial uploads, then the final one, all on the
    link's query and without a key; the final one is what uses the link up."""
    service = await links_service(start_service)
    link = await issue(service, maxSize=len(PNG))
    half = len(PNG) // 2
    parts = []
    for piece in (PNG[:half], PNG[half:]):
        status, url, _ = await tus_create(service, link, len(piece), {"Upload-Concat": "partial"})
        assert status == 201
        assert (await tus_patch(service, url, 0, piece))[0] == 204
        parts.append(url)
    final = {"Upload-Concat": "final;" + " ".join(parts)}
    status, _, detail = await tus_create(service, link, None, final, filename="whole.png")
    assert status == 201, detail
    assert service.stored_names() == {"conv1_whole.png"}
    status, _, detail = await tus_create(service, link, None, final, filename="again.png")
    assert status == 403 and "has been used" in detail["detail"]
