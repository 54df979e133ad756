"""Virus scanning against a real clamd (Debian's clamav-daemon) with a database the tests write."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from streamproxy.intake.scan import ClamdAddress

from .conftest import Service, ServiceFactory, eventually, random_bytes, require_program
from .fetch.conftest import ALLOW_SOURCES, import_error, import_ok
from .fetch.sources import Source

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
SIGNATURE = "Eicar-Test-Signature"
STREAM_LIMIT = 2 * 1024 * 1024  # clamd's StreamMaxLength in these tests


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Clamd:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.socket = root / "clamd.sock"
        self.port = free_port()
        self.process: asyncio.subprocess.Process | None = None

    async def start(self, clamd: str) -> None:
        database = self.root / "db"
        database.mkdir()
        # The EICAR test file as a ClamAV body signature: the only one loaded.
        (database / "eicar.ndb").write_text(f"{SIGNATURE}:0:*:{EICAR.hex()}\n")
        config = self.root / "clamd.conf"
        config.write_text(
            f"LocalSocket {self.socket}\nTCPSocket {self.port}\nTCPAddr 127.0.0.1\n"
            f"DatabaseDirectory {database}\nForeground yes\nLogFile {self.root / 'clamd.log'}\n"
            f"StreamMaxLength {STREAM_LIMIT}\n"
        )
        self.process = await asyncio.create_subprocess_exec(
            clamd,
            "-c",
            str(config),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        for _ in range(300):
            if self.socket.exists():
                return
            if self.process.returncode is not None:
                break
            await asyncio.sleep(0.1)
        log = (self.root / "clamd.log").read_text() if (self.root / "clamd.log").exists() else ""
        raise RuntimeError("clamd did not start:\n" + log)

    def bytes_spooled(self) -> int:
        """Bytes clamd has written so far: it spools each stream it reads to a file."""
        assert self.process is not None
        io = Path(f"/proc/{self.process.pid}/io").read_text()
        return int(next(line for line in io.splitlines() if line.startswith("wchar:")).split()[1])

    def signal(self, number: int) -> None:
        assert self.process is not None
        os.kill(self.process.pid, number)

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGCONT)  # in case a test left it stopped
            self.process.terminate()
            await self.process.wait()


@pytest.fixture
async def clamd(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Clamd]:
    program = require_program("clamd", "clamav-daemon")
    root = tmp_path_factory.mktemp("clamd")
    if len(str(root / "clamd.sock")) > 100:  # unix socket paths are short
        root = Path(tempfile.mkdtemp(prefix="clamd-", dir="/tmp"))
    daemon = Clamd(root)
    await daemon.start(program)
    yield daemon
    await daemon.stop()


async def test_clean_and_infected_uploads(start_service: ServiceFactory, clamd: Clamd) -> None:
    service = await start_service(clamd=ClamdAddress(path=str(clamd.socket)))
    clean = await service.upload_json(random_bytes(100_000), filename="clean.bin")
    response = await service.upload(EICAR, filename="eicar.com")
    assert response.status == 422
    body = await response.json()
    assert body["error"] == "infected"
    assert SIGNATURE in body["detail"]
    service.assert_clean({clean["name"]})


async def test_signature_across_chunk_boundaries(
    start_service: ServiceFactory, clamd: Clamd
) -> None:
    chunk = 64 * 1024
    service = await start_service(
        clamd=ClamdAddress(host="127.0.0.1", port=clamd.port), chunk_size=chunk
    )
    data = random_bytes(chunk - 30) + EICAR + random_bytes(3 * chunk)
    response = await service.upload(data, filename="hidden.bin")
    assert response.status == 422
    assert SIGNATURE in (await response.json())["detail"]
    service.assert_nothing_stored()


async def test_unreachable_scanner_fails_closed_or_open(
    start_service: ServiceFactory, tmp_path: Path
) -> None:
    nowhere = ClamdAddress(path=str(tmp_path / "no-clamd.sock"))
    closed = await start_service(clamd=nowhere)
    response = await closed.upload(b"data", filename="a.txt")
    assert response.status == 503
    body = await response.json()
    assert body["error"] == "scanner_unavailable"
    assert "no-clamd.sock" in body["detail"]
    closed.assert_nothing_stored()
    open_ = await start_service(clamd=nowhere, clamd_fail_open=True)
    stored = await open_.upload_json(b"data", filename="a.txt")
    open_.assert_clean({stored["name"]})


async def test_scanner_refusing_a_large_stream_fails_closed(
    start_service: ServiceFactory, clamd: Clamd
) -> None:
    """clamd stops at its StreamMaxLength: that is no verdict, so nothing is stored."""
    service = await start_service(clamd=ClamdAddress(path=str(clamd.socket)), max_size=10 << 20)
    response = await service.upload(random_bytes(2 * STREAM_LIMIT), filename="big.bin")
    assert response.status == 503
    assert (await response.json())["error"] == "scanner_unavailable"
    service.assert_nothing_stored()


async def test_url_imports_are_scanned(start_service: ServiceFactory, clamd: Clamd) -> None:
    service = await start_service(
        clamd=ClamdAddress(path=str(clamd.socket)), fetch_allow=ALLOW_SOURCES
    )
    source = await Source("127.0.0.2").start()
    try:
        detail = await import_error(service, source.file("/eicar.com", EICAR), 422, "infected")
        assert SIGNATURE in detail
        clean = await import_ok(service, source.file("/clean.bin", b"harmless"))
    finally:
        await source.close()
    service.assert_clean({clean["name"]})


async def upload_breaking_clamd(
    service: Service, clamd: Clamd, data: bytes, first: int, fault: Callable[[], Awaitable[None]]
) -> aiohttp.ClientResponse:
    """Upload `data`, sending its first `first` bytes, then, once clamd has read them,
    `fault()` (clamd killed or stopped mid-scan), then the rest."""
    before = clamd.bytes_spooled()

    async def body() -> AsyncIterator[bytes]:
        yield data[:first]
        await eventually(lambda: clamd.bytes_spooled() - before >= first // 2)
        await fault()
        yield data[first:]

    form = aiohttp.FormData()
    form.add_field("conversationId", "7")
    form.add_field("file", body(), filename="midway.bin")
    async with service.session.post(service.url + "/files", data=form) as response:
        await response.read()
        return response


async def test_clamd_killed_mid_scan_refuses_even_failing_open(
    start_service: ServiceFactory, clamd: Clamd
) -> None:
    """clamd took the stream and died: no verdict, so no file, --clamd-fail-open or not."""
    service = await start_service(
        clamd=ClamdAddress(path=str(clamd.socket)), clamd_fail_open=True, chunk_size=64 * 1024
    )

    async def kill() -> None:
        clamd.signal(signal.SIGKILL)
        assert clamd.process is not None
        await clamd.process.wait()

    data = random_bytes(STREAM_LIMIT // 2)
    response = await upload_breaking_clamd(service, clamd, data, 256 * 1024, kill)
    assert response.status == 503
    body = await response.json()
    assert body["error"] == "scanner_unavailable"
    assert "clamd dropped the stream" in body["detail"]
    assert "--clamd-fail-open covers only" in body["detail"]
    service.assert_nothing_stored()


async def test_clamd_stopped_mid_scan_refuses_even_failing_open(
    start_service: ServiceFactory, clamd: Clamd
) -> None:
    """clamd stops reading (SIGSTOP) after the first chunk: --clamd-timeout ends the wait."""
    service = await start_service(
        clamd=ClamdAddress(path=str(clamd.socket)),
        clamd_fail_open=True,
        clamd_timeout=1.0,
        chunk_size=64 * 1024,
    )

    async def stop() -> None:
        clamd.signal(signal.SIGSTOP)

    data = random_bytes(STREAM_LIMIT // 2)
    try:
        response = await upload_breaking_clamd(service, clamd, data, 256 * 1024, stop)
    finally:
        clamd.signal(signal.SIGCONT)
    assert response.status == 503
    body = await response.json()
    assert body["error"] == "scanner_unavailable"
    assert "within 1 seconds" in body["detail"] or "nothing for 1 seconds" in body["detail"]
    service.assert_nothing_stored()
    # clamd running again serves the next upload as before.
    stored = await service.upload_json(b"after the stall", filename="next.txt")
    service.assert_clean({stored["name"]})


async def test_stream_limit_refuses_even_failing_open(
    start_service: ServiceFactory, clamd: Clamd
) -> None:
    """clamd's StreamMaxLength error: a stream it refused to finish is never stored unscanned."""
    service = await start_service(
        clamd=ClamdAddress(path=str(clamd.socket)), clamd_fail_open=True, max_size=10 << 20
    )
    response = await service.upload(random_bytes(2 * STREAM_LIMIT), filename="big.bin")
    assert response.status == 503
    body = await response.json()
    assert body["error"] == "scanner_unavailable"
    assert "StreamMaxLength" in body["detail"]
    service.assert_nothing_stored()
