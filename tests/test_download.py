"""Downloads: headers, every range case, conditional requests, name validation, stat."""

from __future__ import annotations

import asyncio
import email.utils
import socket
from datetime import UTC, datetime, timedelta
from email.message import Message
from email.parser import BytesParser
from typing import Any

import aiohttp
import pytest
from yarl import URL

from .conftest import (
    LocalStore,
    Service,
    ServiceFactory,
    md5,
    random_bytes,
    read_response,
    require_program,
    run_program,
)

DATA = random_bytes(10_000, seed=7)
SIZE = len(DATA)


@pytest.fixture
async def stored(service: Service) -> dict[str, Any]:
    return await service.upload_json(DATA, filename="clip.mp4", content_type="video/mp4")


async def get(
    service: Service,
    name: str,
    headers: dict[str, str] | None = None,
    method: str = "GET",
    path: str = "/files/download",
    **params: str,
) -> tuple[aiohttp.ClientResponse, bytes]:
    async with service.session.request(
        method, service.url + path, params={"filename": name, **params}, headers=headers
    ) as response:
        return response, await response.read()


async def test_whole_file_headers(service: Service, stored: dict[str, Any]) -> None:
    response, body = await get(service, stored["name"])
    assert response.status == 200
    assert body == DATA
    headers = response.headers
    assert headers["Content-Type"] == "video/mp4"
    assert headers["Content-Length"] == str(SIZE)
    assert headers["ETag"] == f'"{md5(DATA)}"'
    assert headers["Accept-Ranges"] == "bytes"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Content-Disposition"] == (
        "inline; filename=\"clip.mp4\"; filename*=UTF-8''clip.mp4"
    )
    assert email.utils.parsedate_to_datetime(headers["Last-Modified"]) <= datetime.now(UTC)
    assert "Content-Security-Policy" not in headers
    assert "Content-Encoding" not in headers


async def test_alias_and_head(service: Service, stored: dict[str, Any]) -> None:
    response, body = await get(service, stored["name"], path="/api/downloadFileStream")
    assert body == DATA
    head, empty = await get(service, stored["name"], method="HEAD")
    assert head.status == 200 and empty == b""
    assert head.headers["Content-Length"] == str(SIZE)
    assert head.headers["ETag"] == response.headers["ETag"]


async def test_attachment_on_request(service: Service, stored: dict[str, Any]) -> None:
    response, _ = await get(service, stored["name"], download="1")
    assert response.headers["Content-Disposition"].startswith("attachment;")


@pytest.mark.every_s3_server  # ranged GETs reach the S3 server
@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-99", 0, 99),
        ("bytes=100-", 100, SIZE - 1),
        ("bytes=-500", SIZE - 500, SIZE - 1),
        ("bytes=9000-99999", 9000, SIZE - 1),  # end past the file is clamped
        ("bytes=-99999", 0, SIZE - 1),  # suffix longer than the file
        ("bytes=9999-9999", 9999, 9999),
        ("bytes = 5 - 9", 5, 9),
        ("bytes=0-99,", 0, 99),  # empty list elements are allowed
        ("BYTES=10-19", 10, 19),
    ],
)
async def test_single_ranges(
    service: Service, stored: dict[str, Any], header: str, start: int, end: int
) -> None:
    response, body = await get(service, stored["name"], {"Range": header})
    assert response.status == 206
    assert body == DATA[start : end + 1]
    assert response.headers["Content-Range"] == f"bytes {start}-{end}/{SIZE}"
    assert response.headers["Content-Length"] == str(end - start + 1)
    assert response.headers["ETag"] == f'"{md5(DATA)}"'


def parse_byteranges(
    content_type: str, body: bytes, part_type: str = "video/mp4"
) -> list[tuple[str, bytes]]:
    message = BytesParser().parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    parts: list[Message] = message.get_payload()  # type: ignore[assignment]
    result = []
    for part in parts:
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        assert part["Content-Type"] == part_type
        result.append((part["Content-Range"], payload))
    return result


@pytest.mark.every_s3_server  # ranged GETs reach the S3 server
async def test_multiple_ranges(service: Service, stored: dict[str, Any]) -> None:
    response, body = await get(service, stored["name"], {"Range": "bytes=0-9,100-199,-10"})
    assert response.status == 206
    assert response.headers["Content-Type"].startswith("multipart/byteranges; boundary=")
    assert int(response.headers["Content-Length"]) == len(body)
    parts = parse_byteranges(response.headers["Content-Type"], body)
    assert parts == [
        (f"bytes 0-9/{SIZE}", DATA[0:10]),
        (f"bytes 100-199/{SIZE}", DATA[100:200]),
        (f"bytes {SIZE - 10}-{SIZE - 1}/{SIZE}", DATA[-10:]),
    ]


async def test_unsatisfiable_parts_are_dropped(service: Service, stored: dict[str, Any]) -> None:
    response, body = await get(service, stored["name"], {"Range": "bytes=50000-,0-4"})
    assert response.status == 206
    assert response.headers["Content-Range"] == f"bytes 0-4/{SIZE}"
    assert body == DATA[:5]


@pytest.mark.parametrize("header", ["bytes=10000-", "bytes=20000-30000", "bytes=-0"])
async def test_unsatisfiable(service: Service, stored: dict[str, Any], header: str) -> None:
    response, _body = await get(service, stored["name"], {"Range": header})
    assert response.status == 416
    assert response.headers["Content-Range"] == f"bytes */{SIZE}"
    assert (await response.json())["error"] == "range_not_satisfiable"


@pytest.mark.parametrize(
    "header",
    [
        "bytes=abc",
        "bytes=5-1",  # last before first: invalid, so ignored
        "items=0-5",
        "bytes=",
        "bytes=1-2-3",
        "0-5",
        "bytes=0-1,0-5",  # overlapping: the whole file instead
        "bytes=" + ",".join(f"{i * 10}-{i * 10 + 1}" for i in range(40)),  # too many
    ],
)
async def test_ignored_range_headers(service: Service, stored: dict[str, Any], header: str) -> None:
    response, body = await get(service, stored["name"], {"Range": header})
    assert response.status == 200
    assert body == DATA


@pytest.mark.every_s3_server  # ranged GETs reach the S3 server
async def test_empty_file_ranges(service: Service) -> None:
    body = await service.upload_json(b"", filename="empty.txt")
    response, _ = await get(service, body["name"], {"Range": "bytes=0-"})
    assert response.status == 416
    response, content = await get(service, body["name"])
    assert response.status == 200 and content == b""


# --- conditional requests ------------------------------------------------------------


async def conditional(service: Service, name: str, **headers: str) -> tuple[int, bytes, Any]:
    response, body = await get(service, name, {k.replace("_", "-"): v for k, v in headers.items()})
    return response.status, body, response.headers


async def test_if_none_match(service: Service, stored: dict[str, Any]) -> None:
    etag = f'"{stored["etag"]}"'
    status, body, headers = await conditional(service, stored["name"], If_None_Match=etag)
    assert status == 304 and body == b""
    assert headers["ETag"] == etag
    for matching in (f'"x", {etag}', f"W/{etag}", "*"):
        assert (await conditional(service, stored["name"], If_None_Match=matching))[0] == 304
    status, body, _ = await conditional(service, stored["name"], If_None_Match='"other"')
    assert status == 200 and body == DATA


async def test_if_modified_since(service: Service, stored: dict[str, Any]) -> None:
    response, _ = await get(service, stored["name"])
    last_modified = response.headers["Last-Modified"]
    assert (await conditional(service, stored["name"], If_Modified_Since=last_modified))[0] == 304
    earlier = email.utils.format_datetime(
        email.utils.parsedate_to_datetime(last_modified) - timedelta(seconds=5), usegmt=True
    )
    assert (await conditional(service, stored["name"], If_Modified_Since=earlier))[0] == 200
    # If-None-Match takes precedence over If-Modified-Since
    status, _, _ = await conditional(
        service, stored["name"], If_None_Match='"other"', If_Modified_Since=last_modified
    )
    assert status == 200
    assert (await conditional(service, stored["name"], If_Modified_Since="garbage"))[0] == 200


async def test_if_match(service: Service, stored: dict[str, Any]) -> None:
    etag = f'"{stored["etag"]}"'
    assert (await conditional(service, stored["name"], If_Match=etag))[0] == 200
    assert (await conditional(service, stored["name"], If_Match="*"))[0] == 200
    status, _, _ = await conditional(service, stored["name"], If_Match='"nope"')
    assert status == 412
    # a weak tag never matches If-Match (strong comparison)
    assert (await conditional(service, stored["name"], If_Match=f"W/{etag}"))[0] == 412


async def test_if_unmodified_since(service: Service, stored: dict[str, Any]) -> None:
    long_ago = "Mon, 01 Jan 2001 00:00:00 GMT"
    assert (await conditional(service, stored["name"], If_Unmodified_Since=long_ago))[0] == 412
    future = email.utils.format_datetime(datetime.now(UTC) + timedelta(days=1), usegmt=True)
    assert (await conditional(service, stored["name"], If_Unmodified_Since=future))[0] == 200
    # If-Match takes precedence over If-Unmodified-Since
    status, _, _ = await conditional(
        service, stored["name"], If_Match=f'"{stored["etag"]}"', If_Unmodified_Since=long_ago
    )
    assert status == 200


@pytest.mark.every_s3_server  # ranged GETs reach the S3 server
async def test_if_range(service: Service, stored: dict[str, Any]) -> None:
    etag = f'"{stored["etag"]}"'
    response, _ = await get(service, stored["name"])
    last_modified = response.headers["Last-Modified"]
    cases = {
        etag: 206,
        '"changed"': 200,
        f"W/{etag}": 200,  # If-Range needs a strong match
        last_modified: 206,
        "Mon, 01 Jan 2001 00:00:00 GMT": 200,
        "not a validator": 200,
    }
    for if_range, expected in cases.items():
        status, body, _ = await conditional(
            service, stored["name"], Range="bytes=0-9", If_Range=if_range
        )
        assert status == expected, if_range
        assert body == (DATA[:10] if expected == 206 else DATA)


# --- what is served, and what never is ------------------------------------------------


@pytest.mark.parametrize(
    ("content", "declared", "filename"),
    [
        (b"<html><script>alert(1)</script></html>", "text/html", "page.html"),
        (
            b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
            "image/svg+xml",
            "i.svg",
        ),
        (b"alert(document.cookie)", "application/javascript", "a.js"),
        (b"<?xml version='1.0'?><x/>", "application/xml", "d.xml"),
        (b"<!DOCTYPE html><script>alert(1)</script>", None, "sneaky.txt"),
    ],
)
async def test_active_content_cannot_script_the_origin(
    service: Service, content: bytes, declared: str | None, filename: str
) -> None:
    body = await service.upload_json(content, filename=filename, content_type=declared)
    response, served = await get(service, body["name"])
    assert served == content
    policy = response.headers["Content-Security-Policy"]
    assert "sandbox" in policy and "default-src 'none'" in policy
    assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_utf8_disposition(service: Service) -> None:
    body = await service.upload_json(b"x", filename='résumé "final".pdf')
    response, _ = await get(service, body["name"])
    disposition = response.headers["Content-Disposition"]
    assert disposition.startswith("inline; filename=\"r_sum__final_.pdf\"; filename*=UTF-8''")
    assert "r%C3%A9sum%C3%A9_final_.pdf" in disposition


@pytest.mark.parametrize(
    "name",
    [
        "",
        "../11111_secret.txt",
        "..",
        "a/b",
        "a\\b",
        ".meta/11111_secret.txt.json",
        ".tmp",
        "/etc/passwd",
        "x\x00y",
        "line\nbreak",
        "é" * 150,
    ],
)
async def test_bad_names_are_refused(service: Service, name: str) -> None:
    await service.upload_json(b"secret", filename="secret.txt")
    for path in ("/files/download", "/files/stat"):
        response, _ = await get(service, name, path=path)
        assert response.status == 400, (path, name)
        assert (await response.json())["error"] == "bad_request"


async def test_missing_parameter_and_unknown_name(service: Service) -> None:
    async with service.session.get(service.url + "/files/download") as response:
        assert response.status == 400
    response, _ = await get(service, "11111_nothing.txt")
    assert response.status == 404
    body = await response.json()
    assert body == {
        "message": "Not found.",
        "error": "not_found",
        "detail": "no file named '11111_nothing.txt'",
        "requestId": response.headers["X-Request-Id"],
    }
    response, _ = await get(service, "11111_nothing.txt", path="/files/stat")
    assert response.status == 404


@pytest.mark.local_only  # a symlink planted in the storage directory
async def test_symlink_inside_the_root_is_not_followed(service: Service, tmp_path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("private")
    await service.upload_json(b"x", filename="real.txt")
    (service.root / "11111_link.txt").symlink_to(outside)
    assert isinstance(service.store, LocalStore)
    meta = service.store.metadata("11111_real.txt")
    (service.root / ".meta" / "11111_link.txt.json").write_bytes(meta)
    response, body = await get(service, "11111_link.txt")
    assert response.status == 404
    assert b"private" not in body


async def test_request_id_is_echoed(service: Service, stored: dict[str, Any]) -> None:
    response, _ = await get(service, stored["name"], {"X-Request-Id": "abc-123"})
    assert response.headers["X-Request-Id"] == "abc-123"
    # An id that does not look like one is replaced by a new one, as for a request
    # without an id: the process's prefix and the next number of its counter.
    response, _ = await get(service, stored["name"])
    made = response.headers["X-Request-Id"]
    prefix, number = made[:-8], int(made[-8:], 16)
    response, _ = await get(service, stored["name"], {"X-Request-Id": "bad id\twith space"})
    assert response.headers["X-Request-Id"] == f"{prefix}{number + 1:08x}"


@pytest.mark.every_s3_server  # ranged GETs reach the S3 server
async def test_large_download_is_byte_identical(service: Service) -> None:
    big = random_bytes(5 * 1024 * 1024)
    body = await service.upload_json(big, filename="big.bin")
    assert await service.fetch(body["name"]) == big
    _response, part = await get(service, body["name"], {"Range": "bytes=1000000-3999999"})
    assert part == big[1_000_000:4_000_000]


async def test_curl_ranges_and_conditionals(service: Service, stored: dict[str, Any]) -> None:
    curl = require_program("curl", "curl")
    url = f"{service.url}/files/download?filename={stored['name']}"
    code, out, _ = await run_program(curl, "-sS", "-r", "10-19", url)
    assert code == 0 and out == DATA[10:20]
    code, out, _ = await run_program(
        curl,
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        f'If-None-Match: "{stored["etag"]}"',
        url,
    )
    assert out == b"304"
    code, out, _ = await run_program(curl, "-sS", "-I", url)
    assert b"HTTP/1.1 200" in out and f"Content-Length: {SIZE}".encode() in out


async def slow_download(url: str, expected_size: int, range_header: str | None = None) -> bytes:
    """A client with a small receive buffer that waits before reading: the server's socket
    buffer fills, so the server must wait for it to drain (the EAGAIN path)."""
    target = URL(url)
    reader, writer = await asyncio.open_connection(target.host, target.port, limit=1 << 16)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    extra = f"Range: {range_header}\r\n" if range_header else ""
    writer.write(
        f"GET {target.path_qs} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n".encode()
    )
    await asyncio.sleep(0.3)
    head = await reader.readuntil(b"\r\n\r\n")
    assert b" 200 " in head or b" 206 " in head, head
    body = bytearray()
    while len(body) < expected_size:
        piece = await reader.read(65536)
        if not piece:
            break
        body += piece
    writer.close()
    return bytes(body)


async def test_sendfile_to_a_slow_reader(service: Service) -> None:
    big = random_bytes(4 * 1024 * 1024, seed=11)
    body = await service.upload_json(big, filename="slow.bin")
    assert await slow_download(body["url"], len(big)) == big


async def test_sendfile_under_uvloop(spawn, tmp_path) -> None:
    """`streamproxy serve` runs on uvloop, which has no loop.sendfile of its own."""
    pytest.importorskip("uvloop")
    server = await spawn("--storage", str(tmp_path / "s"))
    big = random_bytes(3 * 1024 * 1024, seed=12)
    async with aiohttp.ClientSession() as session:
        form = aiohttp.FormData()
        form.add_field("conversationId", "1")
        form.add_field("file", big, filename="u.bin")
        async with session.post(server.url + "/files", data=form) as response:
            url = (await response.json())["url"]
        async with session.get(url) as response:
            assert await response.read() == big
        async with session.get(url, headers={"Range": "bytes=0-9,2000000-2000099"}) as response:
            parts = parse_byteranges(
                response.headers["Content-Type"], await response.read(), "application/octet-stream"
            )
            assert [p[1] for p in parts] == [big[:10], big[2_000_000:2_000_100]]
    assert await slow_download(url, len(big)) == big
    assert "uvloop loop" in server.log[0]


@pytest.mark.local_only
@pytest.mark.parametrize("padding", [0, 100 * 1024], ids=["small", "large"])
async def test_cached_files_follow_the_disk(service: Service, padding: int) -> None:
    """Small files are served from memory, large ones from cached metadata; a file
    replaced or removed on disk is noticed."""
    tail = b"." * padding
    first = await service.upload_json(b"first version" + tail, filename="note.txt")
    name = first["name"]
    assert await service.fetch(name) == b"first version" + tail
    assert await service.fetch(name) == b"first version" + tail  # from the cache
    (service.root / name).unlink()  # what a retention sweep does
    (service.root / ".meta" / f"{name}.json").unlink(missing_ok=True)  # sidecar, if any
    response, _ = await get(service, name)
    assert response.status == 404
    second = await service.upload_json(b"second, longer version" + tail, filename="note.txt")
    assert second["name"] == name  # the name was free again
    assert await service.fetch(name) == b"second, longer version" + tail
    response, body = await get(service, name, {"Range": "bytes=0-5,8-13"})
    assert response.status == 206 and b"second" in body and b"longer" in body
    response, _ = await get(service, name, {"If-None-Match": f'"{second["etag"]}"'})
    assert response.status == 304  # the validators are the new file's


@pytest.mark.parametrize("cache_size", [0, 1024])
async def test_small_files_without_or_with_a_tiny_cache(
    start_service: ServiceFactory, cache_size: int
) -> None:
    service = await start_service(cache_size=cache_size)
    payloads = {f"f{i}.bin": random_bytes(900, seed=i) for i in range(4)}
    names = {name: (await service.upload_json(data, filename=name))["name"]
             for name, data in payloads.items()}  # fmt: skip
    for _ in range(2):
        for name, data in payloads.items():
            assert await service.fetch(names[name]) == data


async def test_pipelined_range_gets_by_sendfile_under_uvloop(spawn, tmp_path) -> None:
    """A sendfile download's head goes out with its body (held back by aiohttp, sent
    with MSG_MORE just before the sendfile): two range GETs pipelined on one connection,
    then a HEAD, each answer whole and in order."""
    server = await spawn("--storage", str(tmp_path / "s"))
    big = random_bytes(2 * 1024 * 1024, seed=14)
    async with (
        aiohttp.ClientSession() as session,
        session.put(server.url + "/files?conversationId=1&fileName=r.bin", data=big) as response,
    ):
        name = (await response.json())["name"]
    path = f"/files/download?filename={name}"

    def get(method: str, byte_range: str) -> bytes:
        return (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nRange: bytes={byte_range}\r\n\r\n"
        ).encode()

    reader, writer = await asyncio.open_connection("127.0.0.1", URL(server.url).port)
    writer.write(get("GET", "100-1048675") + get("GET", "2000000-") + get("HEAD", "0-9"))
    await writer.drain()
    answers = [await read_response(reader) for _ in range(2)]
    head_only = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    writer.close()
    expected = [(big[100:1048676], "bytes 100-1048675/2097152"), (big[2000000:], None)]
    for answer, (body, content_range) in zip(answers, expected, strict=True):
        head, _, got = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 206"), head
        assert got == body
        if content_range:
            assert f"Content-Range: {content_range}".encode() in head, head
    assert head_only.startswith(b"HTTP/1.1 206") and b"Content-Length: 10\r\n" in head_only
