"""The IETF draft at interop 8 from a raw socket: the 104 on the wire before the body,
offset retrieval, appends with application/partial-upload, the problem types,
cancellation; and interop 6's completed-upload problem."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest

from ..conftest import Service, md5, random_bytes, read_response

pytestmark = pytest.mark.every_s3_server  # the upload record and parts live in the bucket


def parse(response: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


async def request(
    service: Service, method: str, path: str, headers: dict[str, str], body: bytes = b""
) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
    try:
        host = f"127.0.0.1:{service.port}"
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if body or method in ("POST", "PATCH"):
            lines.append(f"Content-Length: {len(body)}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        await writer.drain()
        while True:  # interim responses (the 104) first, then the final one
            if method == "HEAD":
                answer = parse(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30))
            else:
                answer = parse(await read_response(reader))
            if answer[0] >= 200:
                return answer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


DRAFT8 = {"Upload-Draft-Interop-Version": "8"}


async def test_creation_sends_104_with_location_before_the_body_is_read(service: Service) -> None:
    data = random_bytes(600_000, seed=21)
    reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
    head = (
        "POST /files/uploads?conversationId=c8&filename=wire.bin HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{service.port}\r\n"
        "Upload-Draft-Interop-Version: 8\r\nUpload-Complete: ?1\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    writer.write(head.encode())
    await writer.drain()
    # Nothing of the body sent yet: the interim response must come now.
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    status, headers, _ = parse(interim)
    assert interim.startswith(b"HTTP/1.1 104 Upload Resumption Supported\r\n")
    assert headers["location"].startswith(service.url + "/files/uploads/")
    assert headers["upload-draft-interop-version"] == "8"
    assert headers["upload-limit"] == f"max-size={service.settings.max_size}"
    location = headers["location"]
    # The resource exists already: a HEAD on another connection sees offset 0. (A tus
    # HEAD, which only reads: a draft HEAD would stop the creation still running, as the
    # draft's concurrency rule says; test_take_over.py.)
    path = location.removeprefix(service.url)
    status, headers, _ = await request(service, "HEAD", path, {"Tus-Resumable": "1.0.0"})
    assert (status, headers["upload-offset"]) == (200, "0")
    writer.write(data)
    await writer.drain()
    status, headers, body = parse(await read_response(reader))
    writer.close()
    assert status == 200 and headers["etag"] == f'"{md5(data)}"'
    assert headers["upload-complete"] == "?1" and headers["upload-offset"] == str(len(data))
    answer = json.loads(body)
    assert (answer["name"], answer["etag"]) == ("c8_wire.bin", md5(data))
    assert await service.fetch("c8_wire.bin") == data


async def test_appends_offsets_problems_and_cancel_at_interop_8(service: Service) -> None:
    data = random_bytes(300_000, seed=22)
    status, headers, _ = await request(
        service,
        "POST",
        "/files/uploads?conversationId=c8&filename=parts.bin",
        {**DRAFT8, "Upload-Complete": "?0", "Upload-Length": str(len(data))},
        data[:100_000],
    )
    assert status == 201 and headers["upload-offset"] == "100000"
    assert headers["upload-complete"] == "?0"
    path = headers["location"].removeprefix(service.url)
    status, headers, _ = await request(service, "HEAD", path, DRAFT8)
    assert (headers["upload-offset"], headers["upload-length"]) == ("100000", "300000")
    append = {**DRAFT8, "Content-Type": "application/partial-upload", "Upload-Complete": "?0"}
    # A wrong offset: 409 with the draft's problem type, the offset unchanged.
    status, headers, body = await request(
        service, "PATCH", path, {**append, "Upload-Offset": "5"}, b"x"
    )
    problem = json.loads(body)
    assert status == 409 and headers["content-type"].startswith("application/problem+json")
    assert problem["type"].endswith("#mismatching-upload-offset")
    assert (problem["expected-offset"], problem["provided-offset"]) == (100_000, 5)
    # A length that changes: 400 inconsistent-upload-length.
    status, _, body = await request(
        service, "PATCH", path, {**append, "Upload-Offset": "100000", "Upload-Length": "7"}, b"x"
    )
    assert status == 400 and json.loads(body)["type"].endswith("#inconsistent-upload-length")
    # Interop 8 appends are application/partial-upload.
    status, _, _ = await request(
        service,
        "PATCH",
        path,
        {**DRAFT8, "Upload-Offset": "100000", "Upload-Complete": "?0"},
        b"x",
    )
    assert status == 415
    status, headers, _ = await request(
        service, "PATCH", path, {**append, "Upload-Offset": "100000"}, data[100_000:200_000]
    )
    assert (status, headers["upload-offset"], headers["upload-complete"]) == (204, "200000", "?0")
    status, headers, body = await request(
        service,
        "PATCH",
        path,
        {**append, "Upload-Offset": "200000", "Upload-Complete": "?1"},
        data[200_000:],
    )
    assert status == 200 and json.loads(body)["etag"] == md5(data)
    assert await service.fetch("c8_parts.bin") == data
    # Cancelling the resource does not delete the stored file.
    status, _, _ = await request(service, "DELETE", path, DRAFT8)
    assert status == 204
    assert (await request(service, "HEAD", path, DRAFT8))[0] == 404
    assert await service.fetch("c8_parts.bin") == data


async def test_interop_6_completed_upload_and_unknown_versions(service: Service) -> None:
    draft6 = {"Upload-Draft-Interop-Version": "6"}
    # curl --data-binary's default Content-Type is not taken for the file's type.
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    status, headers, body = await request(
        service,
        "POST",
        "/files/uploads?conversationId=c6",
        {**draft6, "Upload-Complete": "?1", **form},
        b"hello",
    )
    assert status == 200 and json.loads(body)["type"].startswith("text/plain")
    path = headers["location"].removeprefix(service.url)
    status, _, body = await request(
        service,
        "PATCH",
        path,
        {**draft6, "Upload-Offset": "5", "Upload-Complete": "?1"},
        b"more",
    )
    assert status == 400 and json.loads(body)["type"].endswith("#completed-upload")
    status, headers, _ = await request(
        service,
        "POST",
        "/files/uploads?conversationId=c6",
        {"Upload-Draft-Interop-Version": "7", "Upload-Complete": "?1"},
        b"x",
    )
    assert status == 412 and headers["tus-version"] == "1.0.0"
    status, _, body = await request(
        service, "POST", "/files/uploads", {**draft6, "Upload-Complete": "?1"}, b"x"
    )
    assert status == 400 and "conversationId" in json.loads(body)["detail"]
    assert service.stored_names() == {"c6_file.txt"}
