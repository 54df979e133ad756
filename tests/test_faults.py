"""Faults mid-transfer: disconnects, shutdown, a full disk. Nothing partial is ever left."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from .conftest import (
    ServerProcess,
    Service,
    ServiceFactory,
    eventually,
    field_part,
    file_part,
    http_post_head,
    md5,
    multipart_body,
    random_bytes,
    require_program,
    staged_files,
    stop_server,
    upload_across_sigterm,
    upload_head,
)

Spawn = Callable[..., Awaitable[ServerProcess]]
FILE = random_bytes(3 * 1024 * 1024, seed=3)
BODY = multipart_body("b", [field_part("conversationId", "1"), file_part(FILE, "f.bin")])
OFFSETS = {
    "in the first part headers": 20,
    "in the file part headers": 120,
    "early in the file": 200 + 10_000,
    "mid file": len(BODY) // 2,
    "just before the closing boundary": len(BODY) - 12,
}
# The raw-body upload (PUT): the body is the file itself.
RAW_OFFSETS = {
    "early in the file": 10_000,
    "mid file": len(FILE) // 2,
    "just before the end": len(FILE) - 12,
}
REQUESTS = {
    "multipart": (http_post_head("/files", "b", len(BODY)), BODY),
    "put": (upload_head("put", len(FILE), name="f.bin"), FILE),
}
CUTS = [("multipart", where) for where in OFFSETS] + [("put", where) for where in RAW_OFFSETS]


@pytest.mark.parametrize(("via", "where"), CUTS)
@pytest.mark.parametrize("how", ["close", "reset"])
async def test_client_disconnect_leaves_nothing(
    service: Service, via: str, where: str, how: str
) -> None:
    head, body = REQUESTS[via]
    offset = (OFFSETS if via == "multipart" else RAW_OFFSETS)[where]
    _reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
    writer.write(head + body[:offset])
    await writer.drain()
    await eventually(lambda: service.in_flight() == 1)  # the server is on it
    if how == "reset":
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
    await eventually(lambda: not service.temporaries())
    service.assert_nothing_stored()
    # ... and the server keeps serving.
    after = await service.upload_json(b"after", filename="after.txt")
    assert await service.fetch(after["name"]) == b"after"


async def test_many_disconnects_then_normal_service(service: Service) -> None:
    async def abandon(via: str, offset: int) -> None:
        head, body = REQUESTS[via]
        _, writer = await asyncio.open_connection("127.0.0.1", service.port)
        writer.write(head + body[:offset])
        await writer.drain()
        writer.close()

    await asyncio.gather(*(abandon(list(REQUESTS)[i % 2], 1000 + i * 50_000) for i in range(40)))
    await eventually(lambda: not service.temporaries())
    service.assert_nothing_stored()
    body = await service.upload_json(FILE, filename="ok.bin")
    assert body["etag"] == md5(FILE)


async def test_start_up_removes_leftover_temporaries(
    start_service: ServiceFactory, tmp_path
) -> None:
    root = tmp_path / "store"
    (root / ".tmp").mkdir(parents=True)
    (root / ".tmp" / "0123.part").write_bytes(b"half a file")
    service = await start_service(root=root)
    service.assert_nothing_stored()


@pytest.mark.parametrize("via", list(REQUESTS))
async def test_shutdown_mid_upload_leaves_nothing(spawn: Spawn, tmp_path: Path, via: str) -> None:
    storage = tmp_path / "store"
    server = await spawn("--storage", str(storage), "--shutdown-timeout", "0.5")
    port = int(server.url.rsplit(":", 1)[1])
    head, body = REQUESTS[via]
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head + body[: len(body) // 2])
    await writer.drain()
    await eventually(lambda: staged_files(server.pid, storage) == 1)  # the upload is under way
    assert await stop_server(server) == 0
    writer.close()
    assert list((storage / ".tmp").iterdir()) == []
    assert [p.name for p in storage.iterdir() if not p.name.startswith(".")] == []
    assert any("shutting down" in line for line in server.log)


@pytest.mark.parametrize("via", list(REQUESTS))
async def test_shutdown_lets_a_quick_upload_finish(spawn: Spawn, tmp_path: Path, via: str) -> None:
    storage = tmp_path / "store"
    server = await spawn("--storage", str(storage), "--shutdown-timeout", "10")
    head, body = REQUESTS[via]
    # Several chunks in: the temporary file exists by then.
    answer = await upload_across_sigterm(server, storage, head + body, len(head) + 1_500_000)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert await asyncio.wait_for(server.process.wait(), 20) == 0
    assert (storage / "1_f.bin").read_bytes() == FILE


def _mount_namespace_wrapper() -> list[str]:
    """`unshare -Urm`, once it has shown it can mount a small tmpfs here; else skip saying why."""
    unshare = require_program("unshare", "util-linux")
    probe = subprocess.run(
        [unshare, "-Urm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"],
        capture_output=True,
    )
    if probe.returncode != 0:
        pytest.skip(
            "needs user and mount namespaces (unshare -Urm) to mount a small tmpfs: "
            + probe.stderr.decode(errors="replace").strip()
        )
    return [unshare, "-Urm"]


@pytest.mark.parametrize("via", list(REQUESTS))
async def test_disk_full_gives_507_and_leaves_nothing(
    spawn: Spawn, tmp_path: Path, via: str
) -> None:
    unshare = await asyncio.to_thread(_mount_namespace_wrapper)
    storage = tmp_path / "small"
    storage.mkdir()
    # The server runs in its own mount namespace over a 4 MiB tmpfs; /proc/PID/root
    # lets the test look inside that namespace.
    wrapper = (
        *unshare,
        "sh",
        "-c",
        f'mount -t tmpfs -o size=4m tmpfs "{storage}" && exec "$0" "$@"',
    )
    server = await spawn("--storage", str(storage), "--max-size", "10M", prefix=wrapper)
    inside = Path(f"/proc/{server.pid}/root") / str(storage).lstrip("/")
    first, second = random_bytes(3_000_000, 1), random_bytes(3_000_000, 2)
    async with aiohttp.ClientSession() as session:
        results = []
        for data in (first, second):
            form = aiohttp.FormData()
            form.add_field("conversationId", "1")
            form.add_field("file", data, filename="big.bin")
            upload = (
                session.post(server.url + "/files", data=form)
                if via == "multipart"
                else session.put(server.url + "/files?conversationId=1&fileName=big.bin", data=data)
            )
            async with upload as response:
                results.append((response.status, await response.json()))
        assert results[0][0] == 200
        assert results[1][0] == 507
        refusal = results[1][1]
        assert set(refusal) == {"message", "error", "detail", "requestId"}, refusal
        assert refusal["error"] == "insufficient_storage"
        assert refusal["message"] == "An error occurred while uploading file."
        assert isinstance(refusal["detail"], str) and refusal["detail"], refusal
        assert list((inside / ".tmp").iterdir()) == []
        visible = sorted(p.name for p in inside.iterdir() if not p.name.startswith("."))
        assert visible == ["1_big.bin"]
        assert (inside / "1_big.bin").read_bytes() == first
        async with session.get(server.url + "/readyz") as response:
            assert response.status == 200  # space is free again once the temporary is gone
        async with session.get(
            server.url + "/files/download", params={"filename": "1_big.bin"}
        ) as response:
            assert md5(await response.read()) == md5(first)
    await stop_server(server)
