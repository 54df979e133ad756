"""The load generator: an aiohttp client for streamed transfers, wrk for small requests.

Upload bodies are streamed from an async generator that yields one pre-built random
block over and over, with the multipart envelope built by hand around it, so the
client does no per-byte work of its own and declares an exact Content-Length (no
chunked encoding). Small requests (5 KB up and down, 1 MiB ranges) go through wrk,
which needs far less CPU per request than any Python client: client and servers
share the machine's two cores.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from .servers import CONVERSATION_ID, Server

BLOCK_SIZE = 256 * 1024
BLOCK = os.urandom(BLOCK_SIZE)
READ_BUFFER = 4 * 1024 * 1024


@dataclass
class Outcome:
    """What one measured run moved: payload bytes, requests, failures, wall time."""

    seconds: float = 0.0
    payload_bytes: int = 0
    requests: int = 0
    errors: int = 0
    error_sample: str = ""
    extra: dict[str, float] = field(default_factory=dict)

    def add_error(self, text: str) -> None:
        self.errors += 1
        if not self.error_sample:
            self.error_sample = text[:300]


def hashing_figures(outcome: Outcome, hashing_seconds: float) -> dict[str, float]:
    """What the server's hashing took in a run: its wall-clock seconds, their share of
    the run's time (for one stream: near 1, it went as fast as its hashing could) and
    the MD5 rate it got (with the other work sharing the cores)."""
    if hashing_seconds <= 0 or outcome.seconds <= 0:
        return {}
    return {
        "hashing_s": hashing_seconds,
        "hashing_busy": hashing_seconds / outcome.seconds,
        "hashing_MBps": outcome.payload_bytes / hashing_seconds / 1e6,
    }


def new_session() -> aiohttp.ClientSession:
    """A keep-alive session without a connection cap."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, limit_per_host=0),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=300),
        read_bufsize=READ_BUFFER,
        auto_decompress=False,
    )


def multipart_envelope(filename: str, boundary: str) -> tuple[bytes, bytes]:
    """What goes before and after the file bytes: the conversationId field, then `file`."""
    head = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="conversationId"\r\n\r\n'
        f"{CONVERSATION_ID}\r\n"
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    return head, tail


async def stream_body(head: bytes, size: int, tail: bytes) -> AsyncIterator[bytes]:
    """`head`, then `size` bytes of the pre-built block, then `tail`; nothing is copied
    but the final partial block."""
    if head:
        yield head
    remaining = size
    while remaining >= BLOCK_SIZE:
        yield BLOCK
        remaining -= BLOCK_SIZE
    if remaining:
        yield BLOCK[:remaining]
    if tail:
        yield tail


def upload_request(
    server: Server, name: str, size: int
) -> tuple[str, str, dict[str, str], AsyncIterator[bytes]]:
    """Method, URL, headers and streamed body of one upload to `server`."""
    if not server.multipart:
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        return "PUT", server.upload_url(name), headers, stream_body(b"", size, b"")
    boundary = "bench" + secrets.token_hex(12)
    head, tail = multipart_envelope(name, boundary)
    headers = {
        "Content-Type": f"multipart/form-data; boundary={boundary}",
        "Content-Length": str(len(head) + size + len(tail)),
    }
    return "POST", server.upload_url(name), headers, stream_body(head, size, tail)


async def upload(session: aiohttp.ClientSession, server: Server, name: str, size: int) -> str:
    """Upload `size` bytes as `name`; the stored name, or raise with the server's answer."""
    method, url, headers, body = upload_request(server, name, size)
    async with session.request(method, url, headers=headers, data=body) as response:
        text = await response.text()
        if response.status not in (200, 201, 204):
            raise UploadFailed(f"{method} {url}: {response.status} {text[:200]}")
        if not server.answers_with_name:
            return name
        answer = json.loads(text)
        if answer.get("size", size) != size:
            raise UploadFailed(f"{method} {url}: stored {answer['size']} bytes of {size}")
        stored: str = answer["name"]
        return stored


class UploadFailed(RuntimeError):
    pass


async def upload_many(
    session: aiohttp.ClientSession,
    server: Server,
    *,
    count: int,
    concurrency: int,
    size: int,
    prefix: str,
) -> Outcome:
    """`count` uploads of `size` bytes, `concurrency` at a time on kept-alive connections."""
    outcome = Outcome()
    indexes = iter(range(count))

    async def worker() -> None:
        for index in indexes:
            try:
                await upload(session, server, f"{prefix}-{index}.bin", size)
            except (aiohttp.ClientError, OSError, UploadFailed, TimeoutError) as error:
                outcome.add_error(f"{type(error).__name__}: {error}")
            else:
                outcome.requests += 1
                outcome.payload_bytes += size

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(concurrency, count))))
    outcome.seconds = time.perf_counter() - started
    return outcome


async def download(session: aiohttp.ClientSession, url: str, expected: int) -> int:
    """GET `url`, reading and discarding the body; the byte count, checked."""
    received = 0
    async with session.get(url) as response:
        if response.status not in (200, 206):
            raise UploadFailed(f"GET {url}: {response.status} {(await response.text())[:200]}")
        while data := await response.content.readany():
            received += len(data)
    if received != expected:
        raise UploadFailed(f"GET {url}: {received} bytes, expected {expected}")
    return received


def download_raw(url: str, expected: int) -> int:
    """GET `url` over a plain blocking socket into one reused buffer (run it on a thread).

    For the big download: aiohttp's client makes a bytes object per read and tops out
    near loopback sendfile speed on one core; `recv_into` costs the kernel copy only.
    """
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    buffer = bytearray(READ_BUFFER)
    view = memoryview(buffer)
    with socket.create_connection((parts.hostname, parts.port or 80), timeout=300) as sock:
        sock.sendall(
            f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            data = sock.recv(65536)
            if not data:
                raise UploadFailed(f"GET {url}: connection closed before the response head")
            head += data
        head, _, body = head.partition(b"\r\n\r\n")
        status = head.split(b" ", 2)[1]
        if status != b"200":
            raise UploadFailed(f"GET {url}: {head[:200]!r}")
        received = len(body)
        while count := sock.recv_into(view):
            received += count
    if received != expected:
        raise UploadFailed(f"GET {url}: {received} bytes, expected {expected}")
    return received


# -- wrk ------------------------------------------------------------------------------

_WRK_DONE = """
function done(summary, latency, requests)
  io.write(string.format(
    'BENCHJSON {"requests":%d,"bytes":%d,"duration_us":%d,"connect":%d,"read":%d,' ..
    '"write":%d,"status":%d,"timeout":%d}\\n',
    summary.requests, summary.bytes, summary.duration, summary.errors.connect,
    summary.errors.read, summary.errors.write, summary.errors.status, summary.errors.timeout))
end
"""

_WRK_THREAD_IDS = """
local next_id = 0
function setup(thread)
  thread:set("thread_id", next_id)
  next_id = next_id + 1
end
"""


def _lua_string(data: str) -> str:
    return json.dumps(data)  # a JSON string of ASCII text is a valid Lua string literal


def wrk_upload_script(server: Server, size: int, prefix: str) -> str:
    """Each request uploads `size` bytes under a new name (PUT, or a multipart POST).

    Names are new to every script, whatever the prefix: a script made again for the next
    turn against the same storage must not send the names the last one stored, or
    streamproxy takes its collision path (a failed link, then a suffixed name; ~10% of
    its rate at 5 KB) where a peer naming files by uuid never does."""
    prefix = f"{prefix}-{secrets.token_hex(4)}"
    payload = secrets.token_hex(size)[:size]
    if server.multipart:
        boundary = "bench" + secrets.token_hex(12)
        head, tail = multipart_envelope("NAME", boundary)
        before, after = head.decode().split("NAME")
        make = f"""
  local name = "{prefix}-" .. thread_id .. "-" .. counter .. ".bin"
  local body = {_lua_string(before)} .. name .. {_lua_string(after)}
    .. payload .. {_lua_string(tail.decode())}
  return wrk.format("POST", "/files",
    {{["Content-Type"] = "multipart/form-data; boundary={boundary}"}}, body)"""
    else:
        # The server's own upload URL, the name spliced in: `/NAME` for nginx, the raw
        # route's `/files?conversationId=..&fileName=NAME` for streamproxy-raw.
        path = server.upload_url("NAME").removeprefix(server.base_url)
        before, after = path.split("NAME")
        make = f"""
  local name = "{prefix}-" .. thread_id .. "-" .. counter .. ".bin"
  return wrk.format("PUT", {_lua_string(before)} .. name .. {_lua_string(after)},
    {{["Content-Type"] = "application/octet-stream"}}, payload)"""
    return f"""{_WRK_THREAD_IDS}
local counter = 0
local payload = {_lua_string(payload)}
function request()
  counter = counter + 1{make}
end
{_WRK_DONE}"""


def wrk_range_script(path: str, file_size: int, length: int) -> str:
    """Each request asks for `length` bytes at a random offset of the file."""
    return f"""{_WRK_THREAD_IDS}
function init(args)
  math.randomseed(os.time() + thread_id * 7919)
end
function request()
  local start = math.random(0, {file_size - length})
  return wrk.format("GET", {_lua_string(path)},
    {{["Range"] = "bytes=" .. start .. "-" .. (start + {length - 1})}})
end
{_WRK_DONE}"""


def wrk_get_script(path: str) -> str:
    return f"""
function request()
  return wrk.format("GET", {_lua_string(path)})
end
{_WRK_DONE}"""


async def run_wrk(
    wrk: str,
    base_url: str,
    script: str,
    *,
    connections: int,
    seconds: float,
    payload_per_request: int,
    threads: int = 2,
) -> Outcome:
    """Run wrk for `seconds` with `connections` kept-alive connections; non-2xx/3xx
    answers and socket errors count as errors."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as file:
        file.write(script)
        script_path = Path(file.name)
    try:
        process = await asyncio.create_subprocess_exec(
            wrk,
            f"-t{min(threads, connections)}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "30s",
            "-s",
            str(script_path),
            base_url,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await process.communicate()
    finally:
        await asyncio.to_thread(script_path.unlink)
    outcome = Outcome()
    for line in stdout.decode(errors="replace").splitlines():
        if line.startswith("BENCHJSON "):
            data = json.loads(line.removeprefix("BENCHJSON "))
            break
    else:
        outcome.add_error(f"wrk gave no result: {stderr.decode(errors='replace')[:300]}")
        return outcome
    failed = sum(data[key] for key in ("connect", "read", "write", "status", "timeout"))
    outcome.seconds = data["duration_us"] / 1e6
    outcome.requests = max(0, data["requests"] - data["status"])
    outcome.payload_bytes = outcome.requests * payload_per_request
    if failed:
        outcome.errors = failed
        outcome.error_sample = (
            f"wrk: {data['status']} non-2xx, {data['connect']} connect, {data['read']} read, "
            f"{data['write']} write, {data['timeout']} timeout errors"
        )
    return outcome
