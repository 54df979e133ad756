"""A `streamproxy serve` SIGKILLed mid-PATCH, restarted on the same storage, and the
upload resumed from the offset it acknowledged: byte-identical, ETag = MD5 of the file.
Also: a client's connection cut at random offsets many times, resumed each time."""

from __future__ import annotations

import asyncio
import random
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from ..conftest import ServerProcess, Service, eventually, md5, random_bytes, stop_server

pytestmark = pytest.mark.local_only  # resumable uploads are on local storage so far

TUS = {"Tus-Resumable": "1.0.0"}
PATCH = {**TUS, "Content-Type": "application/offset+octet-stream"}
META = "filename a2lsbC5iaW4=,conversationId YzU="  # kill.bin, c5


async def offset_of(session: aiohttp.ClientSession, url: str) -> int:
    async with session.head(url, headers=TUS) as answer:
        assert answer.status == 200
        return int(answer.headers["Upload-Offset"])


async def send_part_and_cut(port: int, path: str, offset: int, data: bytes, sent: int) -> None:
    """A PATCH declaring all of `data` that sends `sent` bytes, then resets the connection."""
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        f"PATCH {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nTus-Resumable: 1.0.0\r\n"
        "Content-Type: application/offset+octet-stream\r\n"
        f"Upload-Offset: {offset}\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    writer.write(head.encode() + data[:sent])
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.transport.abort()


async def test_sigkill_mid_patch_then_restart_and_resume(
    spawn: Callable[..., Awaitable[ServerProcess]], tmp_path: Path
) -> None:
    storage = tmp_path / "data"
    data = random_bytes(6_000_000, seed=31)
    args = ("--storage", str(storage), "--max-size", "10M")
    server = await spawn(*args)
    async with aiohttp.ClientSession() as session:
        headers = {**TUS, "Upload-Length": str(len(data)), "Upload-Metadata": META}
        async with session.post(server.url + "/files/uploads", headers=headers) as answer:
            assert answer.status == 201
            url = answer.headers["Location"]
        async with session.patch(
            url, data=data[:1_000_000], headers={**PATCH, "Upload-Offset": "0"}
        ) as answer:
            assert answer.status == 204
        # A PATCH under way: 3 MB of 5 arrive, then the server dies.
        upload_dir = next((storage / ".uploads").iterdir())
        port = int(server.url.rsplit(":", 1)[1])
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = (
            f"PATCH {url.removeprefix(server.url)} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Tus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\n"
            f"Upload-Offset: 1000000\r\nContent-Length: {len(data) - 1_000_000}\r\n\r\n"
        )
        writer.write(head.encode() + data[1_000_000:4_000_000])
        await writer.drain()
        await eventually(lambda: (upload_dir / "data").stat().st_size >= 3_000_000, 30)
        await stop_server(server, signal.SIGKILL)
        writer.close()
        # Restarted: the acknowledged offset holds; the unacknowledged tail is cut.
        server = await spawn(*args)
        url = server.url + "/files/uploads/" + upload_dir.name
        offset = await offset_of(session, url)
        assert offset == 1_000_000
        async with session.patch(
            url, data=data[offset:], headers={**PATCH, "Upload-Offset": str(offset)}
        ) as answer:
            assert answer.status == 204
            assert answer.headers["ETag"] == f'"{md5(data)}"'
        assert (storage / "c5_kill.bin").read_bytes() == data


async def test_connections_cut_at_random_offsets_many_times(service: Service) -> None:
    data = random_bytes(4_000_000, seed=32)
    headers = {**TUS, "Upload-Length": str(len(data)), "Upload-Metadata": META}
    async with service.session.post(service.url + "/files/uploads", headers=headers) as answer:
        url = answer.headers["Location"]
    path = url.removeprefix(service.url)
    chooser = random.Random(7)
    offsets = []
    offset = 0
    for _ in range(12):
        sent = chooser.randrange(1, 600_000)
        await send_part_and_cut(service.port, path, offset, data[offset:], sent)
        # The cut request keeps what arrived; ask until its lock is let go.
        await eventually(lambda: service.in_flight() == 0)
        offset = await offset_of(service.session, url)
        offsets.append(offset)
    assert offsets == sorted(offsets) and offsets[-1] > 0
    async with service.session.patch(
        url, data=data[offset:], headers={**PATCH, "Upload-Offset": str(offset)}
    ) as answer:
        assert answer.status == 204
        assert answer.headers["ETag"] == f'"{md5(data)}"'
    assert await service.fetch("c5_kill.bin") == data
