"""A PATCH whose client goes away mid-body: what arrived is kept, and the append's own
ending error is taken care of, not left as an unretrieved task exception in the log."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest

from ..conftest import Service, eventually
from .test_tus_routes import create, head

pytestmark = pytest.mark.local_only  # the server side is the same on every storage


async def test_a_patch_cut_mid_body_keeps_its_bytes_and_logs_no_stray_error(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    _, url, _ = await create(service, 1_000_000)
    path = url.removeprefix(service.url.rstrip("/"))
    before = service.taken()
    _, writer = await asyncio.open_connection("127.0.0.1", service.port)
    writer.write(
        f"PATCH {path} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n"
        "Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\n"
        "Content-Length: 1000000\r\n\r\n".encode()
        + b"a" * 300_000
    )
    await writer.drain()

    async def offset() -> int:
        return int((await head(service, url))[1]["Upload-Offset"])

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        # Once the service has taken the bytes in (bytes still in aiohttp's buffer go
        # with the connection, and how many those are is the machine's timing).
        await eventually(lambda: service.taken() - before >= 300_000)
        writer.transport.abort()  # the client vanishes mid-body
        await eventually(lambda: service.in_flight() == 0)  # the append has ended
        assert await offset() == 300_000  # every byte that arrived, acknowledged
        gc.collect()
        await asyncio.sleep(0)
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]
