"""A `streamproxy serve` SIGKILLed mid-PATCH, restarted on the same storage, and the
upload resumed from the offset it acknowledged: byte-identical, ETag = MD5 of the file.
On S3 the upload is resumed through another process while the dead one's lease runs
out (no sticky sessions). Also: a client's connection cut at random offsets many
times, resumed each time (on every storage)."""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from ..conftest import ServerProcess, Service, eventually, md5, random_bytes, stop_server
from ..s3support import BUCKET, S3Server, S3Store, until

pytestmark = pytest.mark.every_s3_server  # a lease taken over in the bucket

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


@pytest.mark.local_only  # it watches the upload's data file grow to know the bytes arrived
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
    # As a tus client does: 409 while the last cut request still lets go of the upload
    # (on S3 its lease is released by a record write after its transfer ended).
    for _ in range(100):
        async with service.session.patch(
            url, data=data[offset:], headers={**PATCH, "Upload-Offset": str(offset)}
        ) as answer:
            if answer.status != 409:
                break
        await asyncio.sleep(0.1)
        assert await offset_of(service.session, url) == offset  # busy, not moved on
    assert answer.status == 204
    assert answer.headers["ETag"] == f'"{md5(data)}"'
    assert await service.fetch("c5_kill.bin") == data


@pytest.mark.s3_only  # on RGW the dead request's part is a stray (resumable/s3strays.py)
async def test_sigkill_mid_patch_on_s3_then_resume_through_another_process(
    spawn: Callable[..., Awaitable[ServerProcess]], s3_server: S3Server
) -> None:
    mib = 1024 * 1024
    store = S3Store(s3_server, f"kill-{time.time_ns()}/")
    args = (
        *("--storage", f"s3://{BUCKET}/{store.prefix}", "--s3-endpoint", s3_server.endpoint),
        *("--max-size", "40M", "--s3-part-size", "5M", "--upload-lease", "2s"),
    )
    data = random_bytes(14 * mib + 11, seed=33)
    first = await spawn(*args)
    async with aiohttp.ClientSession() as session:
        headers = {**TUS, "Upload-Length": str(len(data)), "Upload-Metadata": META}
        async with session.post(first.url + "/files/uploads", headers=headers) as answer:
            assert answer.status == 201
            path = answer.headers["Location"].removeprefix(first.url)
        async with session.patch(
            first.url + path, data=data[:mib], headers={**PATCH, "Upload-Offset": "0"}
        ) as answer:
            assert answer.status == 204
        # A PATCH under way: 9 MiB of 13 arrive, a part goes to S3, then the process dies.
        port = int(first.url.rsplit(":", 1)[1])
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = (
            f"PATCH {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Tus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\n"
            f"Upload-Offset: {mib}\r\nContent-Length: {len(data) - mib}\r\n\r\n"
        )
        writer.write(head.encode() + data[mib : 10 * mib])
        await writer.drain()
        await until(lambda: bool(store.multipart_uploads()))
        await stop_server(first, signal.SIGKILL)
        writer.close()
        # Another process on the same bucket: the acknowledged offset holds (an S3
        # request acknowledges at its end); the dead holder's lease runs out, then the
        # upload is this process's (409 until then, as for any busy upload).
        second = await spawn(*args)
        offset = await offset_of(session, second.url + path)
        assert offset == mib
        deadline = time.monotonic() + 20
        while True:
            async with session.patch(
                second.url + path,
                data=data[offset:],
                headers={**PATCH, "Upload-Offset": str(offset)},
            ) as answer:
                if answer.status != 409 or time.monotonic() > deadline:
                    break
            await asyncio.sleep(0.5)
        assert answer.status == 204, await answer.text()
        assert answer.headers["ETag"] == f'"{md5(data)}"'
        async with session.get(
            second.url + "/files/download", params={"filename": "c5_kill.bin"}
        ) as got:
            assert await got.read() == data
    # The dead request's multipart upload (never recorded) was aborted at completion.
    assert store.temporaries() == []
    assert store.stored_names() == {"c5_kill.bin"}
