"""The draft's "stop the older request" (takeover.py), from raw sockets: a draft PATCH
stalls mid-body with its connection open (the client thinks it dead, the server does
not); a newer draft request on another connection stops it at once, in the same
process, in another service on the same storage, and in another `--workers` process.
The older request's bytes are kept, it is answered 409 and its connection closed, and
the upload resumes to the right bytes and MD5 ETag. tus requests keep their 409."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..conftest import (
    LocalStore,
    ServerProcess,
    Service,
    ServiceFactory,
    Store,
    eventually,
    md5,
    random_bytes,
    read_response,
)
from ..s3support import BUCKET
from ..test_workers import Spawn, started
from .test_draft_wire import parse

pytestmark = pytest.mark.every_s3_server  # leases, stop markers and fencing live in the bucket

MiB = 1024 * 1024
DRAFT8 = {"Upload-Draft-Interop-Version": "8"}
APPEND = {**DRAFT8, "Content-Type": "application/partial-upload"}
PROMPT = 10.0
"""Seconds within which the newer request is answered: far below --client-timeout and
the S3 lease (60 s each), so only a stopped older request can explain it (and the
offset, all the older request sent, shows it was stopped, not fenced). Measured here:
well under a second in one process or on local storage; about 3 s across two instances
on moto (the watcher's half-second look, then a 5 MiB part and the tail acknowledged)."""


@dataclass
class Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def send(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        await self.writer.drain()

    async def answer(self, method: str = "PATCH") -> tuple[int, dict[str, str], bytes]:
        """The final response (interim ones skipped)."""
        while True:
            if method == "HEAD":
                raw = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 30)
            else:
                raw = await read_response(self.reader)
            status, headers, body = parse(raw)
            if status >= 200:
                return status, headers, body

    async def ask(
        self, method: str, path: str, headers: dict[str, str], body: bytes = b""
    ) -> tuple[int, dict[str, str], bytes]:
        if method in ("POST", "PATCH"):
            headers = {**headers, "Content-Length": str(len(body))}
        await self.send(method, path, headers, body)
        return await self.answer(method)

    async def closed(self) -> bool:
        """The server closed the connection (EOF) after its answer."""
        return await asyncio.wait_for(self.reader.read(), 10) == b""

    def close(self) -> None:
        self.writer.close()


async def create(port: int, data: bytes, first: int, name: str) -> str:
    """A draft upload of `data` with its first `first` bytes; its path."""
    connection = await Connection.open(port)
    try:
        status, headers, body = await connection.ask(
            "POST",
            f"/files/uploads?conversationId=c9&filename={name}",
            {**DRAFT8, "Upload-Complete": "?0", "Upload-Length": str(len(data))},
            data[:first],
        )
    finally:
        connection.close()
    assert (status, headers["upload-offset"]) == (201, str(first)), body
    return re.sub(r"^https?://[^/]+", "", headers["location"])


async def stall_patch(port: int, path: str, data: bytes, offset: int, sent: int) -> Connection:
    """A completing PATCH from `offset` that sends `sent` bytes of its body, then nothing
    (the connection stays open, as one the client gave up on but never closed)."""
    connection = await Connection.open(port)
    rest = len(data) - offset
    headers = {
        **APPEND,
        "Upload-Offset": str(offset),
        "Upload-Complete": "?1",
        "Content-Length": str(rest),
    }
    await connection.send("PATCH", path, headers, data[offset : offset + sent])
    return connection


def queued(client: Connection) -> int:
    """Bytes of `client`'s connection that the server process has not taken from its
    socket yet: the client's unacknowledged send queue plus the server's receive queue
    (/proc/net/tcp, in hexadecimal: `tx_queue:rx_queue` of each end)."""
    host, port = client.writer.get_extra_info("sockname")[:2]
    ours = f"{_hex_address(host, port)}"
    waiting = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, (tx, rx) = fields[1], fields[2], fields[4].split(":")
        if local == ours:
            waiting += int(tx, 16)
        elif remote == ours:
            waiting += int(rx, 16)
    return waiting


def _hex_address(host: str, port: int) -> str:
    packed = bytes(int(part) for part in host.split("."))
    return f"{int.from_bytes(packed, 'little'):08X}:{port:04X}"


def holding(store: Store, upload_id: str) -> bool:
    """Does a request hold the upload? Local: a flock on its lock file (/proc/locks, any
    process); S3: a lease in its info object."""
    if isinstance(store, LocalStore):
        inode = (store.root / ".uploads" / upload_id / "lock").stat().st_ino
        locks = Path("/proc/locks").read_text().splitlines()
        return any(line.split()[5].endswith(f":{inode}") for line in locks if "FLOCK" in line)
    key = f"{store.prefix}.uploads/{upload_id}/info"
    info = store.moto.client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    return json.loads(info)["lease"] is not None


def stop_markers(store: Store, path: str) -> list[str]:
    """The upload's stop markers left: local `.uploads/.stop/<id>`, S3 `<id>/stop.*`."""
    upload_id = path.rsplit("/", 1)[1]
    if isinstance(store, LocalStore):
        marker = store.root / ".uploads" / ".stop" / upload_id
        return [marker.name] if marker.exists() else []
    prefix = f"{store.prefix}.uploads/{upload_id}/stop."
    return store._keys(prefix)


async def received(connection: Connection, store: Store, path: str) -> None:
    """Until the older request holds the upload and the server process has read all the
    client sent (a stop keeps what the process has read)."""
    upload_id = path.rsplit("/", 1)[1]
    await eventually(lambda: holding(store, upload_id) and queued(connection) == 0)


async def head(port: int, path: str) -> tuple[int, float, dict[str, str]]:
    connection = await Connection.open(port)
    try:
        began = time.monotonic()
        status, headers, _ = await connection.ask("HEAD", path, DRAFT8)
        return status, time.monotonic() - began, headers
    finally:
        connection.close()


async def finish(port: int, path: str, data: bytes, offset: int) -> tuple[int, dict[str, str]]:
    connection = await Connection.open(port)
    try:
        headers = {**APPEND, "Upload-Offset": str(offset), "Upload-Complete": "?1"}
        status, answer, body = await connection.ask("PATCH", path, headers, data[offset:])
    finally:
        connection.close()
    assert status == 200, body
    return status, answer


async def assert_stopped(older: Connection, offset: int) -> None:
    """The older request: 409 (the busy row), then its connection closed."""
    try:
        status, headers, body = await older.answer()
        assert status == 409 and json.loads(body)["error"] == "offset_mismatch"
        assert f"offset {offset}" in json.loads(body)["detail"]
        assert headers.get("connection", "").lower() == "close"
        assert await older.closed()
    finally:
        older.close()


@pytest.mark.parametrize("newer", ["HEAD", "PATCH"])
async def test_a_newer_request_stops_a_stalled_append_and_the_upload_resumes(
    service: Service, newer: str
) -> None:
    data = random_bytes(1_500_000, seed=91)
    path = await create(service.port, data, 100_000, f"same-{newer}.bin")
    older = await stall_patch(service.port, path, data, 100_000, 600_000)
    await received(older, service.store, path)
    began = time.monotonic()
    if newer == "HEAD":
        status, _, headers = await head(service.port, path)
        assert (status, headers["upload-offset"]) == (204, "700000")
    else:  # an append at the offset the client last heard: stopped, then 409 with the truth
        connection = await Connection.open(service.port)
        headers = {**APPEND, "Upload-Offset": "100000", "Upload-Complete": "?1"}
        status, _, body = await connection.ask("PATCH", path, headers, data[100_000:])
        connection.close()
        assert status == 409 and json.loads(body)["expected-offset"] == 700_000
    assert time.monotonic() - began < PROMPT
    await assert_stopped(older, 700_000)
    assert stop_markers(service.store, path) == []
    _, answer = await finish(service.port, path, data, 700_000)
    assert answer["etag"] == f'"{md5(data)}"'
    assert await service.fetch(f"c9_same-{newer}.bin") == data
    service.assert_clean({f"c9_same-{newer}.bin"})


async def test_across_two_services_on_one_storage(start_service: ServiceFactory) -> None:
    """Another instance (S3: another bucket client; local: another process's view of the
    root) holds the upload: the stop request goes through the storage's marker. On S3
    the stalled request has sent a whole part already (parts and a tail are kept)."""
    big = {"max_size": 40 * MiB, "s3_part_size": 5 * MiB}
    first = await start_service(**big)
    second = await start_service(storage=first.settings.storage, **big)
    size, sent = (9 * MiB, 6 * MiB) if first.kind == "s3" else (1_500_000, 600_000)
    data = random_bytes(size, seed=92)
    path = await create(first.port, data, 100_000, "two.bin")
    older = await stall_patch(first.port, path, data, 100_000, sent)
    await received(older, first.store, path)
    status, took, headers = await head(second.port, path)
    assert (status, headers["upload-offset"]) == (204, str(100_000 + sent))
    assert took < PROMPT
    await assert_stopped(older, 100_000 + sent)
    assert stop_markers(first.store, path) == []
    _, answer = await finish(second.port, path, data, 100_000 + sent)
    assert answer["etag"] == f'"{md5(data)}"'
    assert await second.fetch("c9_two.bin") == data
    first.assert_clean({"c9_two.bin"})


async def test_tus_requests_still_get_409_while_another_runs(service: Service) -> None:
    """tus has no such rule: a second tus PATCH is refused at once and the first goes on."""
    data = random_bytes(1_000_000, seed=93)
    tus = {"Tus-Resumable": "1.0.0"}
    connection = await Connection.open(service.port)
    status, headers, _ = await connection.ask(
        "POST",
        "/files/uploads",
        {**tus, "Upload-Length": str(len(data)), "Upload-Metadata": "conversationId Yzk="},
    )
    connection.close()
    assert status == 201
    path = re.sub(r"^https?://[^/]+", "", headers["location"])
    older = await Connection.open(service.port)
    patch = {**tus, "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"}
    await older.send("PATCH", path, {**patch, "Content-Length": str(len(data))}, data[:400_000])
    await received(older, service.store, path)
    newer = await Connection.open(service.port)
    began = time.monotonic()
    status, _, body = await newer.ask("PATCH", path, patch, data)
    newer.close()
    assert status == 409 and b"offset_mismatch" in body
    assert time.monotonic() - began < PROMPT
    status, headers, _ = await head_tus(service.port, path)
    assert (status, headers["upload-offset"]) == (
        200,
        "0",
    )  # the running PATCH acknowledged nothing yet
    older.writer.write(data[400_000:])  # the first request was never stopped: it completes
    status, headers, _ = await older.answer()
    older.close()
    assert (status, headers["upload-offset"], headers["etag"]) == (
        204,
        str(len(data)),
        f'"{md5(data)}"',
    )


async def head_tus(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    connection = await Connection.open(port)
    try:
        return await connection.ask("HEAD", path, {"Tus-Resumable": "1.0.0"})
    finally:
        connection.close()


async def worker_of(connection: Connection) -> str:
    """Which worker serves this (kept-alive) connection: its request ids' prefix."""
    status, headers, _ = await connection.ask("OPTIONS", "/files/uploads", {})
    assert status == 204
    return headers["x-request-id"][:12]


@pytest.mark.local_only  # --workers shares a local root; S3 instances are the test above
async def test_across_workers_the_holder_in_another_process_lets_go(
    spawn: Spawn, tmp_path: Path
) -> None:
    storage = tmp_path / "data"
    server: ServerProcess = await spawn("--storage", str(storage), "--workers", "2")
    await eventually(lambda: started(server))  # both workers listen
    port = int(server.url.rsplit(":", 1)[1])
    data = random_bytes(1_500_000, seed=94)
    path = await create(port, data, 100_000, "workers.bin")
    older = await Connection.open(port)
    holder = await worker_of(older)
    other: Connection | None = None
    for _ in range(50):  # the kernel spreads connections over the workers
        candidate = await Connection.open(port)
        if await worker_of(candidate) != holder:
            other = candidate
            break
        candidate.close()
    assert other is not None, "no connection reached the other worker"
    headers = {**APPEND, "Upload-Offset": "100000", "Upload-Complete": "?1"}
    await older.send(
        "PATCH",
        path,
        {**headers, "Content-Length": str(len(data) - 100_000)},
        data[100_000:700_000],
    )
    await received(older, LocalStore(storage), path)
    began = time.monotonic()
    status, answer, _ = await other.ask("HEAD", path, DRAFT8)
    assert (status, answer["upload-offset"]) == (204, "700000")
    assert time.monotonic() - began < PROMPT
    await assert_stopped(older, 700_000)
    assert stop_markers(LocalStore(storage), path) == []
    status, answer, body = await other.ask(
        "PATCH", path, {**headers, "Upload-Offset": "700000"}, data[700_000:]
    )
    with contextlib.suppress(OSError):
        other.close()
    assert (status, answer["etag"]) == (200, f'"{md5(data)}"'), body
    assert (storage / "c9_workers.bin").read_bytes() == data


@pytest.mark.s3_only  # local storage answers 409 when the holder does not let go in time
async def test_on_s3_an_append_that_does_not_let_go_is_fenced_by_a_take_over(
    start_service: ServiceFactory,
) -> None:
    """An append on another instance whose body keeps trickling is never idle long enough
    to be asked: after the wait the newer request takes the lease over; the older one's
    bytes are dropped (its writes are fenced), and the upload resumes intact."""
    first = await start_service()
    second = await start_service(storage=first.settings.storage)
    data = random_bytes(1_500_000, seed=95)
    path = await create(first.port, data, 100_000, "fenced.bin")
    older = await stall_patch(first.port, path, data, 100_000, 10_000)

    async def trickle() -> None:
        # A piece every 50 ms, well under the half second of idleness that is asked (a
        # loaded machine may stretch a pause several times over), for over 12 s.
        for start in range(110_000, 600_000, 2_000):
            await asyncio.sleep(0.05)
            older.writer.write(data[start : start + 2_000])
            await older.writer.drain()

    trickling = asyncio.ensure_future(trickle())
    try:
        await received(older, first.store, path)
        status, took, headers = await head(second.port, path)
        assert (status, headers["upload-offset"]) == (204, "100000")
        assert 4.0 < took < PROMPT  # the wait (5 s), then the take-over
    finally:
        trickling.cancel()
        older.close()  # the client gives up; the fenced request acknowledges nothing
    _, answer = await finish(second.port, path, data, 100_000)
    assert answer["etag"] == f'"{md5(data)}"'
    assert await second.fetch("c9_fenced.bin") == data
    first.assert_clean({"c9_fenced.bin"})
