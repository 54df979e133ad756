"""Deletion: `DELETE /files?filename=` and `?conversationId=`, on both storages.

Each route, unknown names, the refusal without API keys, a delete (and a new
file under the same name) during a download, the erasure of 1,000 files, and an
erasure cut short by SIGKILL and run again.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from .conftest import Service, ServiceFactory, eventually, random_bytes, require_program
from .conversations import AUTH, KEY, counter, fill, upload_to
from .s3log import S3Log

pytestmark = pytest.mark.every_s3_server  # deletes, versions and listings differ between servers

MiB = 1024 * 1024
DELETED_FILE = 'streamproxy_deleted_files_total{how="file"}'
DELETED_IN_CONVERSATION = 'streamproxy_deleted_files_total{how="conversation"}'


async def keyed(start_service: ServiceFactory, **overrides: Any) -> Service:
    return await start_service(api_key=(KEY,), **overrides)


async def delete(
    service: Service,
    headers: dict[str, str] | None = AUTH,
    query: dict[str, str] | None = None,
    **params: str,
) -> tuple[int, Any]:
    async with service.session.delete(
        service.url + "/files", params={**(query or {}), **params}, headers=headers
    ) as response:
        body = await response.read()
        if response.content_type == "application/json":
            return response.status, await response.json()
        return response.status, body


async def status_of(service: Service, path: str, name: str) -> int:
    async with service.session.get(
        service.url + path, params={"filename": name}, headers=AUTH
    ) as response:
        await response.read()
        return response.status


async def test_delete_one_file(start_service: ServiceFactory) -> None:
    service = await keyed(start_service)
    kept = await upload_to(service.session, service.url, "c1", "kept.txt", b"kept")
    gone = await upload_to(service.session, service.url, "c1", "gone.txt", b"gone")
    assert await service.fetch(gone["name"]) == b"gone"  # in the local cache now
    status, body = await delete(service, filename=gone["name"])
    assert (status, body) == (204, b"")
    assert await status_of(service, "/files/download", gone["name"]) == 404
    assert await status_of(service, "/files/stat", gone["name"]) == 404
    assert (await delete(service, filename=gone["name"]))[0] == 404
    service.assert_clean({kept["name"]})
    assert await counter(service.session, service.url, DELETED_FILE) == 1
    # The name is free again: a new upload takes it, and a download serves the new bytes.
    again = await upload_to(service.session, service.url, "c1", "gone.txt", b"new bytes")
    assert again["name"] == gone["name"]
    assert await service.fetch(gone["name"]) == b"new bytes"


async def test_unknown_names(start_service: ServiceFactory) -> None:
    service = await keyed(start_service)
    status, body = await delete(service, filename="c1_nothing.txt")
    assert status == 404 and body["error"] == "not_found", body
    assert await delete(service, conversationId="nobody") == (200, {"deleted": 0})
    assert await counter(service.session, service.url, DELETED_FILE) == 0


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"filename": "c1_a.txt", "conversationId": "c1"},
        {"filename": "../etc/passwd"},
        {"filename": ".meta"},
        {"conversationId": "bad/id"},
        {"conversationId": ""},
    ],
    ids=["neither", "both", "path", "dot-name", "bad-conversation", "empty-conversation"],
)
async def test_bad_requests(start_service: ServiceFactory, params: dict[str, str]) -> None:
    service = await keyed(start_service)
    stored = await upload_to(service.session, service.url, "c1", "a.txt")
    status, body = await delete(service, query=params)
    assert status == 400 and body["error"] == "bad_request", body
    service.assert_clean({stored["name"]})


async def test_without_api_keys_deletion_is_refused(service: Service) -> None:
    """An open service cannot tell the operator from a stranger: no deletion at all."""
    stored = await service.upload_json(b"data", filename="a.txt")
    for params in ({"filename": stored["name"]}, {"conversationId": "11111"}):
        status, body = await delete(service, headers=None, **params)
        assert status == 403 and body["error"] == "forbidden", body
        assert "--api-key" in body["detail"]
    service.assert_clean({stored["name"]})


async def test_keys_are_checked_like_other_keyed_routes(start_service: ServiceFactory) -> None:
    service = await keyed(start_service)
    stored = await upload_to(service.session, service.url, "c1", "a.txt")
    status, body = await delete(service, headers=None, filename=stored["name"])
    assert status == 401 and body["error"] == "unauthorized", body
    status, body = await delete(
        service, headers={"Authorization": "Bearer wrong"}, conversationId="c1"
    )
    assert status == 403 and body["error"] == "forbidden", body
    service.assert_clean({stored["name"]})


async def test_erase_a_conversation_of_1000_files(
    start_service: ServiceFactory, storage_kind: str
) -> None:
    """1,000 files locally; 300 on S3, where moto takes ~10 ms a request on this machine."""
    count = 1000 if storage_kind == "local" else 300
    service = await keyed(start_service)
    names = await fill(service.session, service.url, "big", count)
    # Conversations whose names share the prefix stay: `big_x`, and `big` with a name
    # that looks like `big_x`'s files.
    other = await upload_to(service.session, service.url, "big_x", "f0001.txt")
    lookalike = await upload_to(service.session, service.url, "big", "x_f0002.txt")
    assert other["name"] == "big_x_f0001.txt" and lookalike["name"] == "big_x_f0002.txt"
    assert len(names) == count
    started = time.perf_counter()
    status, body = await delete(service, conversationId="big")
    elapsed = time.perf_counter() - started
    assert (status, body) == (200, {"deleted": count + 1})
    print(f"erased {count + 1} files on {storage_kind} in {elapsed:.2f} s")
    service.assert_clean({other["name"]})
    assert await counter(service.session, service.url, DELETED_IN_CONVERSATION) == count + 1
    assert await delete(service, conversationId="big") == (200, {"deleted": 0})


# --- a delete during a download --------------------------------------------------------


async def open_slow_download(url: str, range_header: str | None = None) -> tuple[Any, Any]:
    """A GET from a client with a small receive buffer that reads nothing yet: the
    server fills the socket buffers and waits, mid-body."""
    host, port = url.removeprefix("http://").split("/", 1)[0].split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 16)
    path = "/" + url.removeprefix("http://").split("/", 1)[1]
    extra = f"Range: {range_header}\r\n" if range_header else ""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n".encode())
    await writer.drain()
    return reader, writer


async def read_rest(reader: Any, writer: Any) -> tuple[bytes, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    body = bytearray()
    while piece := await asyncio.wait_for(reader.read(1 << 16), 30):
        body += piece
    writer.close()
    return head, bytes(body)


def expected_multipart(head: bytes, data: bytes, ranges: list[tuple[int, int]]) -> bytes:
    """The body the server means to send for these ranges (its boundary read from `head`)."""
    boundary = head.split(b"boundary=", 1)[1].split(b"\r\n", 1)[0].decode()
    out = b""
    for index, (first, last) in enumerate(ranges):
        out += b"\r\n" if index else b""
        out += (
            f"--{boundary}\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Range: bytes {first}-{last}/{len(data)}\r\n\r\n"
        ).encode() + data[first : last + 1]
    return out + f"\r\n--{boundary}--\r\n".encode()


@pytest.mark.parametrize("ranged", [False, True], ids=["whole", "two-ranges"])
async def test_delete_and_replace_during_a_download(
    start_service: ServiceFactory, storage_kind: str, ranged: bool
) -> None:
    """The download started on the old file either finishes with its bytes or breaks
    off; it never carries on with the new file's. Locally the open descriptor keeps
    the old inode (always complete); on S3 the whole-file GET in flight finishes, and
    the second range's GET, pinned with If-Match, fails on the new object."""
    original, replacement = random_bytes(12 * MiB, seed=1), random_bytes(12 * MiB, seed=2)
    service = await keyed(start_service, max_size=16 * MiB)
    stored = await upload_to(service.session, service.url, "dl", "big.bin", original)
    ranges = [(0, 8 * MiB - 1), (8 * MiB, len(original) - 1)]
    range_header = "bytes=0-8388607,8388608-" if ranged else None
    reader, writer = await open_slow_download(stored["url"], range_header)
    # The download holds a transfer slot once the old file is open: it is under way
    # (and soon stalled, the client reading nothing) in the first part.
    await eventually(lambda: service.in_flight() == 1)
    assert (await delete(service, filename=stored["name"]))[0] == 204
    again = await upload_to(service.session, service.url, "dl", "big.bin", replacement)
    assert again["name"] == stored["name"]
    head, body = await read_rest(reader, writer)
    expected = expected_multipart(head, original, ranges) if ranged else original
    complete = body == expected
    assert complete or (len(body) < len(expected) and expected.startswith(body)), (
        f"{len(body)} bytes received, not the original's {len(expected)} nor a prefix of them"
    )
    if storage_kind == "local":
        assert complete  # the descriptor kept the inode
    elif ranged:
        assert not complete  # If-Match refused the second range on the new object
    assert await service.fetch(stored["name"]) == replacement


# --- an erasure cut short by SIGKILL ------------------------------------------------------


async def serve_args(service: Service, storage_kind: str, log: S3Log | None = None) -> list[str]:
    """`streamproxy serve` arguments for the storage a fixture service uses (on S3, through
    `log` when given)."""
    args = ["--storage", service.settings.storage, "--api-key", KEY]
    if storage_kind != "local":
        assert service.settings.s3_endpoint is not None
        args += ["--s3-endpoint", log.endpoint if log else service.settings.s3_endpoint]
    return args


async def test_erasure_survives_sigkill_and_finishes_when_run_again(
    start_service: ServiceFactory, spawn: Any, storage_kind: str, tmp_path: Path
) -> None:
    """strace slows the server's unlinks (local) or its sends to S3 by 5 ms each, in
    a real process making real system calls, so that the kill lands mid-erasure."""
    count = 400 if storage_kind == "local" else 200
    filler = await keyed(start_service, root=tmp_path / "data")
    names = await fill(filler.session, filler.url, "gdpr", count)
    kept = await upload_to(filler.session, filler.url, "gdpr_other", "x.txt")
    # S3: the requests' sends (uvloop writes with write/writev, asyncio's loop with sendto)
    calls = "unlink,unlinkat" if storage_kind == "local" else "sendto,write,writev"
    prefix: tuple[str, ...] = (require_program("strace", "strace"), "-f", "-qq", "--seccomp-bpf")
    prefix += ("-o", "/dev/null", "-e", f"trace={calls}", "-e", f"inject={calls}:delay_enter=5000")
    # On S3 the server's requests go through the logging proxy: after the kill, it tells
    # when the store has answered every request the server sent whole.
    log = None
    if storage_kind != "local":
        assert filler.settings.s3_endpoint is not None
        s3_port = urlsplit(filler.settings.s3_endpoint).port
        assert s3_port is not None
        log = await S3Log(s3_port).start()
    server = await spawn(*await serve_args(filler, storage_kind, log), prefix=prefix)
    headers = {**AUTH, "X-Request-Id": "erase-first-try"}
    async with aiohttp.ClientSession() as session:
        params = {"conversationId": "gdpr"}
        erasing = asyncio.ensure_future(
            session.delete(server.url + "/files", params=params, headers=headers)
        )
        deadline = time.monotonic() + 60
        while len(filler.stored_names() & names) > count * 3 // 4:
            assert time.monotonic() < deadline and not erasing.done()
            await asyncio.sleep(0.01)
        os.killpg(server.process.pid, signal.SIGKILL)
        await server.process.wait()
        with pytest.raises(aiohttp.ClientError):
            await erasing
    # A delete the dead server sent just before the kill is still carried out by the
    # store (S3): count what is left once the store has answered every one of them.
    if log is not None:
        await log.settled()
        await log.close()
    left = filler.stored_names() & names
    assert 0 < len(left) < count, "the kill should land mid-erasure"
    assert any("[erase-first-try]" in line and "deleted gdpr_" in line for line in server.log)
    # Run again, on a fresh server: everything of the conversation goes, metadata too.
    second = await spawn(*await serve_args(filler, storage_kind))
    async with aiohttp.ClientSession() as session:
        async with session.delete(
            second.url + "/files", params={"conversationId": "gdpr"}, headers=AUTH
        ) as response:
            assert response.status == 200
            assert (await response.json())["deleted"] == len(left)
        async with session.get(
            second.url + "/files", params={"conversationId": "gdpr"}, headers=AUTH
        ) as response:
            assert await response.json() == {"files": [], "next": None}
    filler.assert_clean({kept["name"]})


@pytest.mark.local_only  # CORS is decided before storage is touched
async def test_a_browser_may_delete_and_list_from_a_listed_origin(
    start_service: ServiceFactory,
) -> None:
    origin = "https://desk.example"
    service = await keyed(start_service, cors_origin=(origin,))
    for method in ("DELETE", "GET"):
        headers = {"Origin": origin, "Access-Control-Request-Method": method,
                   "Access-Control-Request-Headers": "authorization"}  # fmt: skip
        async with service.session.options(service.url + "/files", headers=headers) as response:
            assert response.status in {200, 204}, await response.text()
            assert method in response.headers["Access-Control-Allow-Methods"]
            assert response.headers["Access-Control-Allow-Origin"] == origin


@pytest.mark.local_only  # a file copied into the directory by hand: local storage only
async def test_bytes_without_metadata_are_not_a_stored_file_and_stay(
    start_service: ServiceFactory,
) -> None:
    service = await keyed(start_service)
    (service.root / "c1_by-hand.txt").write_bytes(b"put here by an operator")
    status, body = await delete(service, filename="c1_by-hand.txt")
    assert status == 404 and body["error"] == "not_found"
    assert await delete(service, conversationId="c1") == (200, {"deleted": 0})
    assert (service.root / "c1_by-hand.txt").read_bytes() == b"put here by an operator"
