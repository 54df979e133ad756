"""A real `streamproxy serve` on S3, stopped with SIGTERM while an upload of
several parts is under way: the multipart upload is aborted before the process
exits, so the bucket holds nothing of it (no janitor runs after the exit)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from .conftest import (
    ServerProcess,
    field_part,
    file_part,
    http_post_head,
    multipart_body,
    random_bytes,
    stop_server,
)
from .s3support import BUCKET, MotoServer, S3Store, until

MiB = 1024 * 1024
Spawn = Callable[..., Awaitable[ServerProcess]]
FILE = random_bytes(30 * MiB, seed=31)
BODY = multipart_body("b", [field_part("conversationId", "1"), file_part(FILE, "big.bin")])


async def test_sigterm_mid_multipart_upload_leaves_nothing_in_the_bucket(
    spawn: Spawn, moto_server: MotoServer
) -> None:
    store = S3Store(moto_server, f"shutdown-{time.time_ns()}/")
    server = await spawn(
        "--storage",
        f"s3://{BUCKET}/{store.prefix}",
        "--s3-endpoint",
        moto_server.endpoint,
        "--max-size",
        "40M",
        "--s3-part-size",
        "5M",
        "--shutdown-timeout",
        "0.5",
    )
    port = int(server.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(http_post_head("/files", "b", len(BODY)) + BODY[: 16 * MiB])
        await writer.drain()
        # Parts are going into the staging multipart upload: the upload is under way.
        await until(lambda: bool(store.multipart_uploads()))
        assert await stop_server(server) == 0
        # Whatever the client was told, the process is gone: what it left is final.
        with contextlib.suppress(ConnectionError, asyncio.TimeoutError):
            await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
    # The drain timed out with the upload unfinished: the abort, not a commit, ended it.
    assert any("aborting 1 unfinished transfers" in line for line in server.log)
    assert store.multipart_uploads() == []
    assert store.temporaries() == []
    assert store.stored_names() == set()
