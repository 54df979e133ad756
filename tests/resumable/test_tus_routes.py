"""tus 1.0.0 at /files/uploads, request by request with aiohttp on a real server.

Every test runs on each storage (local, and S3 through moto's server and RGW).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from streamproxy.intake.mediatypes import parse_type_rule

from ..conftest import Service, ServiceFactory, eventually, md5, random_bytes
from .uploads import uploads_left

pytestmark = pytest.mark.every_s3_server  # the upload record and parts live in the bucket

TUS = {"Tus-Resumable": "1.0.0"}
PATCH = {**TUS, "Content-Type": "application/offset+octet-stream"}


def metadata(**fields: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in fields.items())


async def create(service: Service, length: int | None, **extra: str) -> tuple[int, str, Any]:
    headers = {**TUS, "Upload-Metadata": metadata(filename="clip.bin", conversationId="c7")}
    if length is None:
        headers["Upload-Defer-Length"] = "1"
    else:
        headers["Upload-Length"] = str(length)
    headers.update(extra)
    async with service.session.post(service.url + "/files/uploads", headers=headers) as answer:
        return answer.status, answer.headers.get("Location", ""), answer.headers


async def patch(service: Service, url: str, offset: int, data: bytes, **extra: str) -> Any:
    headers = {**PATCH, "Upload-Offset": str(offset), **extra}
    async with service.session.patch(url, data=data, headers=headers) as answer:
        return answer.status, answer.headers, await answer.read()


async def head(service: Service, url: str) -> Any:
    async with service.session.head(url, headers=TUS) as answer:
        return answer.status, answer.headers


async def test_options_advertises_exactly_what_is_implemented(service: Service) -> None:
    async with service.session.options(service.url + "/files/uploads") as answer:
        assert answer.status == 204
        assert answer.headers["Tus-Resumable"] == answer.headers["Tus-Version"] == "1.0.0"
        assert answer.headers["Tus-Extension"] == (
            "creation,creation-with-upload,creation-defer-length,expiration,checksum,"
            "termination,concatenation,concatenation-unfinished"
        )
        assert answer.headers["Tus-Max-Size"] == str(service.settings.max_size)
        assert answer.headers["Tus-Checksum-Algorithm"] == "md5,sha1,sha256"


async def test_an_upload_in_three_patches_is_stored_like_post_files(service: Service) -> None:
    data = random_bytes(1_500_000, seed=3)
    status, url, headers = await create(service, len(data))
    assert status == 201 and url.startswith(service.url + "/files/uploads/")
    assert headers["Tus-Resumable"] == "1.0.0" and "Upload-Expires" in headers
    for start in (0, 500_000, 1_000_000):
        status, answer, _ = await patch(service, url, start, data[start : start + 500_000])
        assert status == 204, answer
        assert answer["Upload-Offset"] == str(start + 500_000)
    assert answer["ETag"] == f'"{md5(data)}"'
    assert await service.fetch("c7_clip.bin") == data
    async with service.session.get(url, headers=TUS) as got:
        body = await got.json()
    assert body["name"] == "c7_clip.bin" and body["etag"] == md5(data)
    assert body["size"] == len(data) and body["message"] == "File uploaded successfully."
    status, headers = await head(service, url)
    assert (status, headers["Upload-Offset"], headers["Upload-Length"]) == (
        200,
        str(len(data)),
        str(len(data)),
    )


async def test_creation_with_upload_and_deferred_length(service: Service) -> None:
    data = random_bytes(300_000, seed=4)
    status, url, headers = await create(
        service, None, **{"Content-Type": "application/offset+octet-stream"}
    )
    assert status == 201
    status, headers = await head(service, url)
    assert headers["Upload-Defer-Length"] == "1" and headers["Upload-Offset"] == "0"
    status, answer, _ = await patch(service, url, 0, data[:100_000])
    assert (status, answer["Upload-Offset"]) == (204, "100000")
    status, answer, _ = await patch(
        service, url, 100_000, data[100_000:], **{"Upload-Length": str(len(data))}
    )
    assert (status, answer["ETag"]) == (204, f'"{md5(data)}"')
    assert await service.fetch("c7_clip.bin") == data


async def test_the_first_bytes_give_the_type_and_metadata_the_name(service: Service) -> None:
    png = b"\x89PNG\r\n\x1a\n" + random_bytes(5000)
    headers = {
        **PATCH,
        "Upload-Length": str(len(png)),
        "Upload-Metadata": metadata(filename="photo.png", conversationId="13318"),
    }
    async with service.session.post(
        service.url + "/files/uploads", data=png, headers=headers
    ) as answer:
        assert answer.status == 201 and answer.headers["Upload-Offset"] == str(len(png))
        url = answer.headers["Location"]
    async with service.session.get(url, headers=TUS) as got:
        body = await got.json()
    assert (body["name"], body["type"]) == ("13318_photo.png", "image/png")


async def test_checksum_mismatch_is_460_and_the_chunk_discarded(service: Service) -> None:
    data = random_bytes(200_000, seed=5)
    status, url, _ = await create(service, len(data))
    good = base64.b64encode(hashlib.sha1(data[:100_000]).digest()).decode()
    status, answer, _ = await patch(
        service, url, 0, data[:100_000], **{"Upload-Checksum": f"sha1 {good}"}
    )
    assert (status, answer["Upload-Offset"]) == (204, "100000")
    wrong = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    status, answer, body = await patch(
        service, url, 100_000, data[100_000:], **{"Upload-Checksum": f"sha256 {wrong}"}
    )
    assert status == 460 and b"checksum_mismatch" in body
    assert (await head(service, url))[1]["Upload-Offset"] == "100000"
    status, _, body = await patch(
        service, url, 100_000, data[100_000:], **{"Upload-Checksum": "crc32 AAAA"}
    )
    assert status == 400 and b"crc32" in body
    md5_digest = base64.b64encode(hashlib.md5(data[100_000:]).digest()).decode()
    status, answer, _ = await patch(
        service, url, 100_000, data[100_000:], **{"Upload-Checksum": f"md5 {md5_digest}"}
    )
    # The running MD5 went on from the first chunk, not from the discarded one.
    assert (status, answer["ETag"]) == (204, f'"{md5(data)}"')


async def test_refusals_leave_nothing_stored(start_service: ServiceFactory) -> None:
    service = await start_service(max_size=1_000_000)
    uploads = service.url + "/files/uploads"
    async with service.session.post(uploads, headers={"Upload-Length": "5"}) as answer:
        assert answer.status == 412 and answer.headers["Tus-Version"] == "1.0.0"
        assert (await answer.json())["error"] == "unsupported_version"
    async with service.session.post(
        uploads, headers={"Tus-Resumable": "0.2.2", "Upload-Length": "5"}
    ) as answer:
        assert answer.status == 412
    no_conversation = {**TUS, "Upload-Length": "5", "Upload-Metadata": metadata(filename="a.bin")}
    async with service.session.post(uploads, headers=no_conversation) as answer:
        assert answer.status == 400 and "conversationId" in (await answer.json())["detail"]
    assert (await create(service, 1_000_001))[0] == 413
    async with service.session.post(uploads, headers={**TUS, "Upload-Length": "-1"}) as answer:
        assert answer.status == 400
    assert uploads_left(service) == []
    # A deferred length over the cap: refused when declared, and when bytes go past it
    # (the first 413 fails the upload for good: test_size_events.py).
    status, url, _ = await create(service, None)
    status, _, _ = await patch(service, url, 0, b"x" * 10, **{"Upload-Length": "1000001"})
    assert status == 413
    status, _, _ = await patch(service, url, 0, random_bytes(1_000_001))
    assert status == 413
    assert (await head(service, url))[1]["Upload-Offset"] == "0"
    # Wrong offsets, a length that changes, a PATCH past the length, a wrong type.
    status, url, _ = await create(service, 100)
    status, answer, body = await patch(service, url, 5, b"abc")
    assert status == 409 and answer["Upload-Offset"] == "0" and b"offset_mismatch" in body
    status, _, _ = await patch(service, url, 0, b"abc", **{"Upload-Length": "99"})
    assert status == 400
    status, _, _ = await patch(service, url, 0, b"y" * 101)
    assert status == 413
    async with service.session.patch(
        url, data=b"abc", headers={**TUS, "Upload-Offset": "0", "Content-Type": "text/plain"}
    ) as answer:
        assert answer.status == 415
    assert (await head(service, url))[1]["Upload-Offset"] == "0"
    unknown = uploads + "/" + "A" * 22
    assert (await head(service, unknown))[0] == 404
    assert (await patch(service, unknown, 0, b"abc"))[0] == 404
    assert (await head(service, uploads + "/not-an-id"))[0] == 404
    service.assert_nothing_stored()


async def test_termination_removes_the_upload(service: Service) -> None:
    _status, url, _ = await create(service, 100)
    await patch(service, url, 0, b"a" * 50)
    assert len(uploads_left(service)) == 1
    async with service.session.delete(url, headers=TUS) as answer:
        assert answer.status == 204 and answer.headers["Tus-Resumable"] == "1.0.0"
    assert (await head(service, url))[0] == 404
    assert (await patch(service, url, 50, b"a" * 50))[0] == 404
    assert uploads_left(service) == []
    service.assert_nothing_stored()


async def test_api_keys_apply_to_every_request_but_options(start_service: ServiceFactory) -> None:
    service = await start_service(api_key=("k1",))
    async with service.session.options(service.url + "/files/uploads") as answer:
        assert answer.status == 204
    assert (await create(service, 10))[0] == 401
    status, url, _ = await create(service, 10, Authorization="Bearer k1")
    assert status == 201
    assert (await head(service, url))[0] == 401
    assert (await patch(service, url, 0, b"0123456789", Authorization="Bearer no"))[0] == 403
    status, answer, _ = await patch(service, url, 0, b"0123456789", Authorization="Bearer k1")
    assert status == 204


async def test_two_patches_racing_on_one_upload_one_gets_409(service: Service) -> None:
    data = random_bytes(2_000_000, seed=6)
    status, url, _ = await create(service, len(data))

    async def slow_body() -> AsyncIterator[bytes]:
        for start in range(0, 1_000_000, 100_000):
            yield data[start : start + 100_000]
            await asyncio.sleep(0.05)

    before = service.taken()
    first = asyncio.ensure_future(patch(service, url, 0, slow_body()))  # type: ignore[arg-type]
    # Bytes taken in: the first PATCH holds the upload (a PATCH holds it before its body).
    await eventually(lambda: service.taken() > before)
    status, answer, body = await patch(service, url, 0, data[:1_000_000])
    assert status == 409 and b"offset_mismatch" in body
    status, answer, _ = await first
    assert (status, answer["Upload-Offset"]) == (204, "1000000")
    status, answer, _ = await patch(service, url, 1_000_000, data[1_000_000:])
    assert answer["ETag"] == f'"{md5(data)}"'


async def test_expired_uploads_answer_410_and_are_swept(start_service: ServiceFactory) -> None:
    service = await start_service(upload_expiry=1.0)
    status, url, _headers = await create(service, 100)
    await patch(service, url, 0, b"z" * 10)
    await asyncio.sleep(1.1)
    status, _ = await head(service, url)
    assert status in (404, 410)  # 410 until the sweep (every second here) removes it
    await eventually(lambda: uploads_left(service) == [])
    assert (await head(service, url))[0] == 404
    assert (await patch(service, url, 10, b"z"))[0] == 404


async def test_a_refused_type_is_refused_and_replayed(start_service: ServiceFactory) -> None:
    """Refused as soon as the first bytes show the type (mid-PATCH), or at completion
    for a short file; either way later requests get the same refusal, nothing stored."""
    service = await start_service(allow_type=(parse_type_rule("image/*"),))
    for size, sent in ((30_000, 20_000), (300, 300)):
        status, url, _ = await create(service, size)
        status, _, body = await patch(service, url, 0, random_bytes(sent))
        assert status == 415 and b"type_not_allowed" in body
        async with service.session.get(url, headers=TUS) as answer:
            assert answer.status == 415
        offset = int((await head(service, url))[1]["Upload-Offset"])
        assert (await patch(service, url, offset, random_bytes(size - offset)))[0] == 415
    service.assert_nothing_stored()


async def test_concatenation_of_finished_parts_and_its_refusals(service: Service) -> None:
    data = random_bytes(700_000, seed=9)
    uploads = service.url + "/files/uploads"
    parts = []
    for start, end in ((0, 300_000), (300_000, 700_000)):
        headers = {**PATCH, "Upload-Concat": "partial", "Upload-Length": str(end - start)}
        async with service.session.post(uploads, data=data[start:end], headers=headers) as answer:
            assert answer.status == 201
            parts.append(answer.headers["Location"])
    assert service.stored_names() == set()  # a finished part is not a file
    whole = (await create(service, 10))[1]
    meta = metadata(filename="joined.bin", conversationId="c9")

    async def final(*urls: str, **extra: str) -> tuple[int, Any, Any]:
        headers = {**TUS, "Upload-Concat": "final;" + " ".join(urls), "Upload-Metadata": meta}
        async with service.session.post(uploads, headers={**headers, **extra}) as answer:
            return answer.status, answer.headers, await answer.json(content_type=None)

    for urls, status in (
        ((parts[0], whole), 400),  # not a partial upload
        ((parts[0], "https://elsewhere.example/files/uploads/" + "B" * 22), 404),
        ((parts[0], "https://elsewhere.example/other/" + "B" * 22), 400),  # foreign
    ):
        assert (await final(*urls))[0] == status, urls
    assert (await final(*parts, **{"Upload-Length": "700000"}))[0] == 400
    no_conversation = {"Upload-Metadata": metadata(filename="x.bin")}
    assert (await final(*parts, **no_conversation))[0] == 400
    assert service.stored_names() == set()
    status, headers, _ = await final(*parts)
    assert status == 201 and headers["ETag"] == f'"{md5(data)}"'
    assert await service.fetch("c9_joined.bin") == data
    # A PATCH on a final upload is 403.
    status, _, body = await patch(service, headers["Location"], 0, b"x")
    assert status == 403 and b"forbidden" in body
