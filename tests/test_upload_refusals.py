"""Bad input and limits on upload: each gets its clear error and leaves nothing behind."""

from __future__ import annotations

import asyncio
import json
import zlib

import aiohttp
import pytest

from streamproxy.intake.mediatypes import parse_type_rule

from .conftest import (
    VIAS,
    Service,
    ServiceFactory,
    eventually,
    field_part,
    file_part,
    md5,
    multipart_body,
    random_bytes,
    raw_request,
    require_program,
    run_program,
    upload_body,
    upload_head,
)

UPLOAD_MESSAGE = "An error occurred while uploading file."


def parse_answer(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


async def expect_error(response: aiohttp.ClientResponse, status: int, code: str) -> str:
    assert response.status == status, await response.text()
    body = await response.json()
    assert body["error"] == code
    assert body["message"] == UPLOAD_MESSAGE
    assert body["detail"]
    assert body["requestId"] == response.headers["X-Request-Id"]
    detail: str = body["detail"]
    return detail


async def post_raw(service: Service, body: bytes, boundary: str = "bnd") -> aiohttp.ClientResponse:
    async with service.session.post(
        service.url + "/files",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    ) as response:
        await response.read()
        return response


# --- the size cap ------------------------------------------------------------------


@pytest.mark.parametrize("via", [*VIAS, "post"])
async def test_exactly_the_cap_is_accepted_and_one_more_byte_refused(
    start_service: ServiceFactory, via: str
) -> None:
    service = await start_service(max_size=100_000)
    body = await service.upload_json(random_bytes(100_000), filename="exact.bin", via=via)
    assert body["size"] == 100_000
    response = await service.upload(random_bytes(100_001), filename="over.bin", via=via)
    detail = await expect_error(response, 413, "too_large")
    assert "100000" in detail
    service.assert_clean({"11111_exact.bin"})


@pytest.mark.parametrize("via", VIAS)
async def test_declared_length_over_the_cap_is_refused_before_the_body(
    start_service: ServiceFactory, via: str
) -> None:
    service = await start_service(max_size=1000)
    head = upload_head(via, 50_000_000)
    # No body is sent at all: the answer must come from the headers alone.
    answer = await raw_request(service.port, head, [])
    status, _, body = parse_answer(answer)
    assert status == 413
    assert json.loads(body)["error"] == "too_large"
    service.assert_nothing_stored()


@pytest.mark.parametrize("via", VIAS)
async def test_expect_100_continue_gets_413_instead_of_continue(
    start_service: ServiceFactory, via: str
) -> None:
    service = await start_service(max_size=1000)
    head = upload_head(via, 50_000_000, "Expect: 100-continue\r\n")
    answer = await raw_request(service.port, head, [])
    assert not answer.startswith(b"HTTP/1.1 100"), answer[:200]
    status, headers, body = parse_answer(answer)
    assert status == 413
    assert json.loads(body)["error"] == "too_large"
    assert json.loads(body)["requestId"] == headers["x-request-id"]


@pytest.mark.parametrize("via", VIAS)
async def test_expect_100_continue_goes_ahead_when_acceptable(service: Service, via: str) -> None:
    body = upload_body(via, b"ok")
    head = upload_head(via, len(body), "Expect: 100-continue\r\n")
    reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
    writer.write(head)
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert interim.startswith(b"HTTP/1.1 100 Continue")
    writer.write(body)
    final = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert final.startswith(b"HTTP/1.1 200")
    service.assert_clean({"1_a.bin"})


CURL_UPLOADS = {
    "multipart": lambda path, url: ["-F", f"file=@{path}", "-F", "conversationId=1", url],
    "put": lambda path, url: ["-T", str(path), url + "?conversationId=1&fileName=big.bin"],
    "post": lambda path, url: ["--data-binary", f"@{path}", url + "?conversationId=1"],
}


@pytest.mark.parametrize("via", list(CURL_UPLOADS))
async def test_curl_with_expect_gets_413(start_service: ServiceFactory, tmp_path, via: str) -> None:
    curl = require_program("curl", "curl")
    service = await start_service(max_size=10_000)
    big = tmp_path / "big.bin"
    big.write_bytes(random_bytes(2_000_000))
    code, stdout, _ = await run_program(
        curl,
        "-sS",
        "-H",
        "Expect: 100-continue",
        "-w",
        "\\n%{http_code}",
        *CURL_UPLOADS[via](big, service.url + "/files"),
    )
    assert code == 0
    body, _, status = stdout.rpartition(b"\n")
    assert status == b"413"
    assert json.loads(body)["error"] == "too_large"
    service.assert_nothing_stored()


@pytest.mark.parametrize("via", VIAS)
async def test_chunked_body_over_the_cap(start_service: ServiceFactory, via: str) -> None:
    service = await start_service(max_size=50_000)
    body = upload_body(via, b"x" * 80_000)
    chunks = [f"{len(body):x}\r\n".encode() + body + b"\r\n", b"0\r\n\r\n"]
    head = upload_head(via, None, "Transfer-Encoding: chunked\r\n")
    status, _, payload = parse_answer(await raw_request(service.port, head, chunks))
    assert status == 413
    assert json.loads(payload)["error"] == "too_large"
    service.assert_nothing_stored()


RAW_QUERY = "?conversationId=1&fileName=z.bin"


@pytest.mark.parametrize("via", VIAS)
async def test_compressed_body_cannot_get_past_the_cap(
    start_service: ServiceFactory, via: str
) -> None:
    """A gzip bomb: 64 KiB on the wire, 256 MiB decoded; the cap counts decoded bytes."""
    service = await start_service(max_size=1_000_000)
    prefix = multipart_body("b", [field_part("conversationId", "1")])[: -len(b"--b--\r\n")]
    prefix += b'--b\r\nContent-Disposition: form-data; name="file"; filename="z.bin"\r\n\r\n'
    suffix = b"\r\n--b--\r\n"
    content_type = "multipart/form-data; boundary=b"
    method, url = "POST", service.url + "/files"
    if via == "put":
        prefix, suffix, content_type = b"", b"", "application/octet-stream"
        method, url = "PUT", url + RAW_QUERY
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip container
    wire = compressor.compress(prefix)
    zeros = bytes(1 << 20)
    for _ in range(256):
        wire += compressor.compress(zeros)
    wire += compressor.compress(suffix) + compressor.flush()
    assert len(wire) < 1_000_000
    async with service.session.request(
        method,
        url,
        data=wire,
        headers={"Content-Type": content_type, "Content-Encoding": "gzip"},
    ) as response:
        await expect_error(response, 413, "too_large")
    service.assert_nothing_stored()


@pytest.mark.parametrize("via", VIAS)
async def test_corrupt_gzip_body(service: Service, via: str) -> None:
    content_type, method, url = "multipart/form-data; boundary=b", "POST", service.url + "/files"
    if via == "put":
        content_type, method, url = "application/octet-stream", "PUT", url + RAW_QUERY
    async with service.session.request(
        method,
        url,
        data=b"\x1f\x8b\x08\x00garbage-not-deflate" * 10,
        headers={"Content-Type": content_type, "Content-Encoding": "gzip"},
    ) as response:
        await expect_error(response, 400, "bad_request")
    service.assert_nothing_stored()


# --- malformed forms ----------------------------------------------------------------

MALFORMED = {
    "no boundary in the body": b"just some bytes, no multipart here",
    "truncated before the closing boundary": (
        b'--bnd\r\nContent-Disposition: form-data; name="file"; filename="t.bin"\r\n\r\n'
        + b"x" * 10_000
    ),
    "broken part header": b"--bnd\r\nthis is not a header\r\n\r\nx\r\n--bnd--\r\n",
    "not form-data": b"--bnd\r\nContent-Disposition: attachment\r\n\r\nx\r\n--bnd--\r\n",
    "garbage after boundary": b"--bnd garbage\r\n\r\nx\r\n--bnd--\r\n",
    "preamble too long": b"p" * 20_000 + b"\r\n--bnd--\r\n",
    "part headers too long": b'--bnd\r\nContent-Disposition: form-data; name="f"\r\nX-Pad: '
    + b"p" * 10_000
    + b"\r\n\r\nv\r\n--bnd--\r\n",
    "headers never end": b'--bnd\r\nContent-Disposition: form-data; name="file"\r\n',
    "too many parts": multipart_body(
        "bnd", [field_part(f"f{i}", "v") for i in range(17)] + [file_part(b"x")]
    ),
    "field too large": multipart_body(
        "bnd", [field_part("comment", "c" * 70_000), file_part(b"x")]
    ),
    "two file parts": multipart_body(
        "bnd", [field_part("conversationId", "1"), file_part(b"x"), file_part(b"y")]
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED))
async def test_malformed_multipart(service: Service, case: str) -> None:
    response = await post_raw(service, MALFORMED[case])
    detail = await expect_error(response, 400, "bad_request")
    assert detail
    service.assert_nothing_stored()


@pytest.mark.parametrize(
    "content_type",
    [None, "application/json", "multipart/form-data", "multipart/form-data; boundary=" + "x" * 80],
)
async def test_not_a_multipart_request(service: Service, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    async with service.session.post(
        service.url + "/files", data=b"{}", headers=headers, skip_auto_headers=["Content-Type"]
    ) as response:
        await expect_error(response, 400, "bad_request")
    service.assert_nothing_stored()


async def test_missing_file_part(service: Service) -> None:
    response = await post_raw(service, multipart_body("bnd", [field_part("conversationId", "1")]))
    assert "file" in await expect_error(response, 400, "bad_request")


@pytest.mark.parametrize("via", [*VIAS, "post"])
async def test_missing_conversation_id_discards_the_streamed_file(
    service: Service, via: str
) -> None:
    response = await service.upload(random_bytes(300_000), conversation_id=None, via=via)
    assert "conversationId" in await expect_error(response, 400, "bad_request")
    service.assert_nothing_stored()


def unchosen_file_part(content_type: str | None) -> tuple[dict[str, str], bytes]:
    """A file input left empty, as a browser sends it: `filename=""` and no bytes."""
    headers = {"Content-Disposition": 'form-data; name="file"; filename=""'}
    if content_type is not None:
        headers["Content-Type"] = content_type
    return headers, b""


@pytest.mark.parametrize("content_type", ["application/octet-stream", None])
async def test_empty_file_part_without_a_name_is_refused(
    service: Service, content_type: str | None
) -> None:
    body = multipart_body(
        "bnd", [unchosen_file_part(content_type), field_part("conversationId", "1")]
    )
    response = await post_raw(service, body)
    assert "no file was sent" in await expect_error(response, 400, "bad_request")
    form = aiohttp.FormData()  # aiohttp's own client sends the same for filename=""
    form.add_field("file", b"", filename="", content_type=content_type)
    form.add_field("conversationId", "1")
    async with service.session.post(service.url + "/files", data=form) as response:
        assert "no file was sent" in await expect_error(response, 400, "bad_request")
    service.assert_nothing_stored()


@pytest.mark.parametrize("content_type", ["application/octet-stream", None])
async def test_curl_empty_file_part_without_a_name_is_refused(
    service: Service, tmp_path, content_type: str | None
) -> None:
    """curl -F 'file=@empty;filename=' sends the browser's empty part; so does a hand-made body."""
    curl = require_program("curl", "curl")
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    form_args = ["-F", f"file=@{empty};filename=", "-F", "conversationId=1"]
    if content_type is None:
        raw = tmp_path / "body"
        parts = [unchosen_file_part(None), field_part("conversationId", "1")]
        raw.write_bytes(multipart_body("bnd", parts))
        form_args = ["-H", "Content-Type: multipart/form-data; boundary=bnd"]
        form_args += ["--data-binary", f"@{raw}"]
    code, stdout, _ = await run_program(curl, "-sS", *form_args, service.url + "/files")
    assert code == 0
    body = json.loads(stdout)
    assert body["error"] == "bad_request"
    assert "no file was sent" in body["detail"]
    service.assert_nothing_stored()


async def test_curl_empty_file_with_a_name_is_stored(service: Service, tmp_path) -> None:
    curl = require_program("curl", "curl")
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    code, stdout, _ = await run_program(
        curl, "-sS", "-F", f"file=@{empty}", "-F", "conversationId=1", service.url + "/files"
    )
    assert code == 0
    body = json.loads(stdout)
    assert (body["name"], body["size"], body["etag"]) == ("1_empty.txt", 0, md5(b""))
    service.assert_clean({"1_empty.txt"})


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("bad", ["", "../x", "a/b", "x" * 129, ".hidden", "a b", "ü"])
async def test_bad_conversation_id(service: Service, bad: str, via: str) -> None:
    response = await service.upload(b"data", conversation_id=bad, via=via)
    await expect_error(response, 400, "bad_request")
    service.assert_nothing_stored()


@pytest.mark.parametrize(
    "filename",
    [
        "../../etc/passwd",
        "..",
        ".",
        "a/b.txt",
        "a\\\\b.txt",
        "x%2F..%2Fy",
        "nul%00.txt",
        "line%0Abreak.txt",
        "é" * 5000,
        "n" * 10_000,
    ],
)
async def test_bad_file_names(service: Service, filename: str) -> None:
    part = (
        {"Content-Disposition": f'form-data; name="file"; filename="{filename}"'},
        b"content",
    )
    body = multipart_body("bnd", [field_part("conversationId", "1"), part])
    response = await post_raw(service, body)
    await expect_error(response, 400, "bad_request")
    service.assert_nothing_stored()


# --- type rules --------------------------------------------------------------------

PDF = b"%PDF-1.7\n" + random_bytes(1000)
EXE = b"MZ\x90\x00" + random_bytes(1000)


@pytest.mark.parametrize("via", VIAS)
async def test_allow_list(start_service: ServiceFactory, via: str) -> None:
    service = await start_service(allow_type=(parse_type_rule("image/*"), parse_type_rule(".pdf")))
    await service.upload_json(b"\x89PNG\r\n\x1a\n" + bytes(100), filename="a.png", via=via)
    await service.upload_json(PDF, filename="b.pdf", via=via)
    response = await service.upload(b"hello", filename="c.txt", content_type="text/plain", via=via)
    detail = await expect_error(response, 415, "type_not_allowed")
    assert "text/plain" in detail and "image/*" in detail
    service.assert_clean({"11111_a.png", "11111_b.pdf"})


@pytest.mark.parametrize("via", VIAS)
async def test_deny_list_checks_the_bytes_too(start_service: ServiceFactory, via: str) -> None:
    service = await start_service(
        deny_type=(
            parse_type_rule("application/vnd.microsoft.portable-executable"),
            parse_type_rule(".svg"),
        )
    )
    response = await service.upload(EXE, filename="cat.png", content_type="image/png", via=via)
    await expect_error(response, 415, "type_not_allowed")
    response = await service.upload(
        b"<svg/>", filename="x.svg", content_type="image/svg+xml", via=via
    )
    await expect_error(response, 415, "type_not_allowed")
    service.assert_nothing_stored()


# --- keys, compat status, busy -------------------------------------------------------


@pytest.mark.parametrize("via", VIAS)
async def test_api_keys(start_service: ServiceFactory, via: str) -> None:
    service = await start_service(api_key=("k1", "k2"))
    response = await service.upload(b"x", via=via)
    await expect_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    response = await service.upload(b"x", headers={"Authorization": "Bearer nope"}, via=via)
    await expect_error(response, 403, "forbidden")
    body = await service.upload_json(b"x", headers={"Authorization": "Bearer k2"}, via=via)
    async with service.session.get(
        service.url + "/files/stat", params={"filename": body["name"]}
    ) as response:
        assert response.status == 401
    async with service.session.get(
        service.url + "/files/stat",
        params={"filename": body["name"]},
        headers={"Authorization": "Bearer k1"},
    ) as response:
        assert response.status == 200
    assert await service.fetch(body["name"]) == b"x"  # downloads stay open


@pytest.mark.parametrize("via", VIAS)
async def test_api_key_checked_before_the_body(start_service: ServiceFactory, via: str) -> None:
    service = await start_service(api_key=("k1",))
    head = upload_head(via, 1000, "Expect: 100-continue\r\n")
    status, _, _ = parse_answer(await raw_request(service.port, head, []))
    assert status == 401


@pytest.mark.parametrize("via", VIAS)
async def test_compat_status_turns_upload_4xx_into_404(
    start_service: ServiceFactory, via: str
) -> None:
    service = await start_service(compat_status=True, max_size=10)
    response = await service.upload(b"x" * 11, via=via)
    await expect_error(response, 404, "too_large")
    response = await service.upload(b"x", conversation_id=None, via=via)
    await expect_error(response, 404, "bad_request")
    async with service.session.get(service.url + "/files/download") as response:
        assert response.status == 400  # only the upload routes are affected


@pytest.mark.parametrize("via", VIAS)
async def test_busy_when_transfers_are_in_flight(start_service: ServiceFactory, via: str) -> None:
    service = await start_service(max_transfers=1)
    body = upload_body(via, b"s" * 4000)
    head = upload_head(via, len(body))
    reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
    writer.write(head + body[:100])  # holds the only slot
    await writer.drain()
    await eventually(lambda: service.in_flight() == 1)
    response = await service.upload(b"second", via=via)
    await expect_error(response, 503, "busy")
    assert int(response.headers["Retry-After"]) >= 1
    writer.write(body[100:])
    final = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert final.startswith(b"HTTP/1.1 200")
    service.assert_clean({"1_a.bin"})


@pytest.mark.parametrize("via", VIAS)
async def test_stalled_client_is_dropped(start_service: ServiceFactory, via: str) -> None:
    service = await start_service(client_timeout=0.5)
    body = upload_body(via, b"s" * 40_000)
    head = upload_head(via, len(body))
    reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
    writer.write(head + body[:20_000])
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    status, _, payload = parse_answer(answer)
    assert status == 408
    assert json.loads(payload)["error"] == "timeout"
    service.assert_nothing_stored()


async def test_unknown_route_and_method_are_json(service: Service) -> None:
    async with service.session.get(service.url + "/nope") as response:
        assert response.status == 404
        assert (await response.json())["error"] == "not_found"
    async with service.session.patch(service.url + "/files") as response:
        assert response.status == 405
        assert (await response.json())["error"] == "method_not_allowed"
        assert "POST" in response.headers["Allow"]
