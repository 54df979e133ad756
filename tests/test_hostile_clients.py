"""Hostile HTTP clients against a real `streamproxy serve`: stalled heads, huge heads, odd framing.

Raw sockets, so every byte on the wire is the test's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from streamproxy.error_table import HEADERS_TOO_LARGE

from .conftest import (
    ServerProcess,
    field_part,
    file_part,
    md5,
    multipart_body,
    random_bytes,
    read_response,
)

Spawn = Callable[..., Awaitable[ServerProcess]]


def port_of(server: ServerProcess) -> int:
    return int(server.url.rsplit(":", 1)[1])


async def read_until_closed(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """Everything the server sends until it closes the connection (or `seconds` pass)."""
    return await asyncio.wait_for(reader.read(), seconds)


def error_of(answer: bytes) -> tuple[int, dict[str, str]]:
    """The status and JSON body of a whole `Connection: close` response."""
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"\r\nconnection: close" in head.lower(), head
    return int(head.split(b" ", 2)[1]), json.loads(body)


async def metric(server: ServerProcess, name: str, **labels: str) -> float:
    async with aiohttp.ClientSession() as session, session.get(server.url + "/metrics") as r:
        text = await r.text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


def upload_request(extra_headers: bytes = b"", transfer_encoding: bytes | None = None) -> bytes:
    body = multipart_body("b", [field_part("conversationId", "5"), file_part(b"hello", "h.bin")])
    if transfer_encoding is None:
        framing = b"Content-Length: %d\r\n" % len(body)
    else:
        framing = b"Transfer-Encoding: " + transfer_encoding + b"\r\n"
        body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    return (
        b"POST /files HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\n"
        + framing
        + extra_headers
        + b"Connection: close\r\n\r\n"
        + body
    )


def padding_headers(count: int, size: int = 1000) -> bytes:
    return b"".join(b"X-Pad-%d: %s\r\n" % (i, b"p" * size) for i in range(count))


async def exchange(port: int, request: bytes, seconds: float = 15) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await read_until_closed(reader, seconds)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_fifty_stalled_heads_are_closed_with_408_and_counted(
    spawn: Spawn, tmp_path: Path
) -> None:
    """Half a request line, or headers without their blank line, then silence: on
    today's main only aiohttp's hour-long keep-alive timer would end them."""
    server = await spawn("--storage", str(tmp_path / "data"), "--header-timeout", "1")
    port = port_of(server)
    stalls = [b"GET /files/downl", b"POST /files HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: 1\r\n"]
    connections = []
    for i in range(50):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(stalls[i % 2])
        connections.append((reader, writer))
    started = time.monotonic()
    answers = await asyncio.gather(*(read_until_closed(r, 30) for r, _ in connections))
    waited = time.monotonic() - started
    for _, writer in connections:
        writer.close()
    assert waited < 15, f"closed after {waited:.1f}s, the header timeout is 1s"
    for answer in answers:
        status, error = error_of(answer)
        assert status == 408
        assert error["error"] == "timeout"
        assert "1 seconds" in error["detail"]
    assert await metric(server, "streamproxy_connections_timed_out_total", phase="head") == 50


async def test_a_connection_that_sends_nothing_is_closed(spawn: Spawn, tmp_path: Path) -> None:
    server = await spawn("--storage", str(tmp_path / "data"), "--header-timeout", "1")
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(server))
    assert await read_until_closed(reader, 15) == b""  # no request begun: closed without a word
    writer.close()
    assert await metric(server, "streamproxy_connections_timed_out_total", phase="head") == 1


async def test_idle_keepalive_closes_and_a_later_head_has_its_own_deadline(
    spawn: Spawn, tmp_path: Path
) -> None:
    server = await spawn(
        "--storage", str(tmp_path / "data"), "--keepalive-timeout", "1", "--header-timeout", "1"
    )
    port = port_of(server)
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    # An idle keep-alive connection closes after --keepalive-timeout (main: 3,630 s).
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    answer = await read_until_closed(reader, 15)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b'{"status": "ok"}'), answer
    # The second request of a connection gets the whole header timeout from its
    # first byte, not from the first request, and stalls into a 408 like any other.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    # With the first response read, the second request starts (at once: an idle
    # connection would close after the 1 s keep-alive timeout, and a pause of ours
    # could last that long on a loaded machine).
    answer = await asyncio.wait_for(reader.readuntil(b'{"status": "ok"}'), 15)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 1")
    answer += await read_until_closed(reader, 15)
    writer.close()
    first, _, second = answer.partition(b'{"status": "ok"}')
    assert first.startswith(b"HTTP/1.1 200"), answer
    status, error = error_of(second)
    assert (status, error["error"]) == (408, "timeout")
    # Only the head is timed: a body may take longer than the header timeout.
    request = upload_request()
    head_end = request.index(b"\r\n\r\n") + 4
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request[: head_end + 20])
    await asyncio.sleep(2.5)
    writer.write(request[head_end + 20 :])
    answer = await read_until_closed(reader, 15)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]


async def test_a_head_over_the_limit_gets_431_and_is_not_stored(
    spawn: Spawn, tmp_path: Path
) -> None:
    storage = tmp_path / "data"
    server = await spawn("--storage", str(storage))
    port = port_of(server)
    # 100 headers of 1 KiB (main stores this upload).
    status, error = error_of(await exchange(port, upload_request(padding_headers(100))))
    assert (status, error["error"]) == (431, "headers_too_large")
    assert "32768" in error["detail"] and error["requestId"]
    assert error["message"] == HEADERS_TOO_LARGE.message
    # Refused while the head is still arriving: no blank line ever comes.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\n" + padding_headers(40))
    status, error = error_of(await read_until_closed(reader, 15))
    writer.close()
    assert status == 431
    # Just under the limit, with the body in the same write: served.
    answer = await exchange(port, upload_request(padding_headers(30)))
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert sorted(p.name for p in storage.iterdir() if not p.name.startswith(".")) == ["5_h.bin"]
    assert list((storage / ".tmp").iterdir()) == []
    assert await metric(server, "streamproxy_refusals_total", reason="headers_too_large") == 2


async def test_the_head_limit_is_settable(spawn: Spawn, tmp_path: Path) -> None:
    server = await spawn("--storage", str(tmp_path / "data"), "--max-head-size", "4k")
    port = port_of(server)
    status, _ = error_of(await exchange(port, upload_request(padding_headers(5))))
    assert status == 431
    answer = await exchange(port, upload_request(padding_headers(2)))
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]


async def test_a_malformed_head_gets_the_json_400_and_one_log_line(
    spawn: Spawn, tmp_path: Path
) -> None:
    """aiohttp's parser refusals (a NUL in a header, a duplicate Content-Length, a bad
    request line) are the client's fault: the service's JSON error with a request id,
    the connection closed, nothing stored, and one INFO line, not a traceback at ERROR."""
    storage = tmp_path / "data"
    server = await spawn("--storage", str(storage))
    port = port_of(server)
    malformed = [
        upload_request(b"X-Bad: a\x00b\r\n"),
        upload_request(b"Content-Length: 9\r\n"),
        b"GET /healthz HTTP/1.1 extra\r\nHost: x\r\n\r\n",
    ]
    for request in malformed:
        status, error = error_of(await exchange(port, request))
        assert (status, error["error"]) == (400, "bad_request"), request[:60]
        assert error["detail"].startswith("malformed request"), error
        assert error["requestId"]
    assert [p.name for p in storage.iterdir() if not p.name.startswith(".")] == []
    log = "".join(server.log)
    assert "Traceback" not in log and " ERROR " not in log, log
    assert log.count("refused from 127.0.0.1: malformed request") == 3, log
    # The connection's next client is served as usual.
    answer = await exchange(port, upload_request())
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]


async def test_transfer_codings_other_than_chunked_get_501(spawn: Spawn, tmp_path: Path) -> None:
    storage = tmp_path / "data"
    server = await spawn("--storage", str(storage))
    port = port_of(server)
    for coding in (b"gzip, chunked", b"deflate,chunked", b"Br , Chunked"):
        status, error = error_of(await exchange(port, upload_request(transfer_encoding=coding)))
        assert (status, error["error"]) == (501, "not_implemented"), coding
    # The same codings on two lines stay aiohttp's 400.
    answer = await exchange(
        port, upload_request(b"Transfer-Encoding: gzip\r\n", transfer_encoding=b"chunked")
    )
    assert answer.startswith(b"HTTP/1.0 400") or answer.startswith(b"HTTP/1.1 400"), answer
    assert [p.name for p in storage.iterdir() if not p.name.startswith(".")] == []
    assert list((storage / ".tmp").iterdir()) == []
    # Plain chunked is framing the service understands.
    answer = await exchange(port, upload_request(transfer_encoding=b"chunked"))
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert (storage / "5_h.bin").read_bytes() == b"hello"
    assert await metric(server, "streamproxy_refusals_total", reason="not_implemented") == 3


def raw_put(name: str, body: bytes) -> bytes:
    """A raw-body PUT of `p_{name}` on a kept-alive connection, head and body."""
    return (
        f"PUT /files?conversationId=p&fileName={name} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def test_a_body_past_the_parser_then_a_pipelined_request(
    spawn: Spawn, tmp_path: Path
) -> None:
    """A plain Content-Length body skips aiohttp's parser once its head is parsed
    (connections.py): the body ends where Content-Length says, even when the next
    request's head and body follow in the same write, and that request is parsed as
    a new one on the same connection."""
    storage = tmp_path / "data"
    server = await spawn("--storage", str(storage))
    first = random_bytes(3 * 1024 * 1024 + 7, seed=3)  # many reads: most of it after the head
    second = b"second body"

    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(server))
    writer.write(raw_put("a.bin", first) + raw_put("b.txt", second))
    answers = [await read_response(reader), await read_response(reader)]
    writer.close()
    for answer, name, body in zip(answers, ("p_a.bin", "p_b.txt"), (first, second), strict=True):
        head, _, text = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), answer[:300]
        stored = json.loads(text)
        assert (stored["name"], stored["size"], stored["etag"]) == (name, len(body), md5(body))
        assert (storage / name).read_bytes() == body


async def test_a_body_refused_midway_then_a_pipelined_request(spawn: Spawn, tmp_path: Path) -> None:
    """A large plain body is read straight into buffers (runtime/directbody.py). Refused
    on its first bytes (a type the rules deny) while the rest still arrives: the
    refusal comes at once, the rest of the body is read and dropped where its length
    says it ends, and the request pipelined behind it is served on the same connection."""
    storage = tmp_path / "data"
    server = await spawn("--storage", str(storage), "--deny-type", "application/pdf")
    refused = b"%PDF-1.4\n" + random_bytes(4 * 1024 * 1024, seed=21)
    second = b"second body"

    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(server))
    whole = raw_put("a.pdf", refused)
    writer.write(whole[: len(whole) // 8])  # the head and the file's first bytes
    await writer.drain()
    first = await read_response(reader)  # answered before the rest is sent
    writer.write(whole[len(whole) // 8 :] + raw_put("b.txt", second))
    await writer.drain()
    answer = await read_response(reader)
    writer.close()
    assert first.startswith(b"HTTP/1.1 415"), first[:300]
    assert json.loads(first.partition(b"\r\n\r\n")[2])["error"] == "type_not_allowed"
    head, _, text = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), answer[:300]
    assert json.loads(text)["etag"] == md5(second)
    assert sorted(p.name for p in storage.iterdir() if not p.name.startswith(".")) == ["p_b.txt"]
    assert (storage / "p_b.txt").read_bytes() == second
