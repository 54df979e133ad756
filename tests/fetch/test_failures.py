"""Every way a source can fail, and every bad request: a clear error, and nothing stored."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ..conftest import (
    ServerProcess,
    Service,
    ServiceFactory,
    random_bytes,
    require_program,
    run_program,
)
from .conftest import ALLOW_SOURCES, SOURCE_HOSTS, import_error, import_ok, job, post_import
from .sources import HOLD, Source, gzip_bomb, gzipped, response_head

# --- the source fails --------------------------------------------------------------


async def test_non_2xx_source_is_source_failed(importer: Service, source: Source) -> None:
    for status in (404, 403, 500):
        url = source.file(f"/s{status}", b"an error page", status=status)
        detail = await import_error(importer, url, 502, "source_failed")
        assert str(status) in detail
    # A redirect status without a Location is an answer, not a redirect.
    url = source.script("/nowhere", response_head(302, 0))
    await import_error(importer, url, 502, "source_failed")
    importer.assert_nothing_stored()


async def test_source_closing_mid_body(importer: Service, source: Source) -> None:
    head = response_head(200, 1_000_000, {"Content-Type": "application/octet-stream"})
    url = source.script("/cut", head, random_bytes(300_000))  # then the connection ends
    detail = await import_error(importer, url, 502, "source_failed")
    assert "broke off" in detail
    importer.assert_nothing_stored()


async def test_source_closing_mid_chunked_body(importer: Service, source: Source) -> None:
    head = response_head(200, None, {"Transfer-Encoding": "chunked"})
    url = source.script("/cut", head, b"10000\r\n" + random_bytes(1000))
    await import_error(importer, url, 502, "source_failed")
    importer.assert_nothing_stored()


async def test_corrupt_gzip(importer: Service, source: Source) -> None:
    good = gzipped(random_bytes(200_000))
    corrupt = good[:1000] + bytes(b ^ 0x5A for b in good[1000:3000]) + good[3000:]
    url = source.file("/bad.gz", corrupt, headers={"Content-Encoding": "gzip"})
    detail = await import_error(importer, url, 502, "source_failed")
    assert "encoding" in detail
    url = source.file("/notgz", b"plain bytes, not gzip", headers={"Content-Encoding": "gzip"})
    await import_error(importer, url, 502, "source_failed")
    importer.assert_nothing_stored()


async def test_unsupported_content_encoding(importer: Service, source: Source) -> None:
    url = source.file("/x", b"whatever", headers={"Content-Encoding": "x-secret-sauce"})
    detail = await import_error(importer, url, 502, "source_failed")
    assert "x-secret-sauce" in detail
    importer.assert_nothing_stored()


def _reset_peak_rss(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := the current RSS


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(field)


async def test_gzip_bomb_fills_neither_disk_nor_memory(
    spawn: Callable[..., Awaitable[ServerProcess]], source: Source, tmp_path: Path
) -> None:
    """Measured on a spawned server alone: the test process's own memory (sources,
    other tests' leftovers, the garbage collector's timing) plays no part."""
    storage = tmp_path / "store"
    allow = [arg for host in SOURCE_HOSTS for arg in ("--fetch-allow", host)]
    server = await spawn("--storage", str(storage), "--max-size", "20M", *allow)
    bomb = gzip_bomb(256 * 1024 * 1024)  # 256 MiB of zeros in about 256 KiB: one read
    assert len(bomb) < 300 * 1024
    warm_up = source.file("/small", gzipped(bytes(100_000)), headers={"Content-Encoding": "gzip"})
    url = source.file("/bomb", bomb, headers={"Content-Encoding": "gzip"})
    async with aiohttp.ClientSession() as session:

        async def post(source_url: str) -> tuple[int, dict[str, Any]]:
            async with session.post(server.url + "/files/from-url", json=job(source_url)) as answer:
                return answer.status, await answer.json()

        # The first import loads the fetch path's code; the peak is measured after it.
        assert (await post(warm_up))[0] == 200
        _reset_peak_rss(server.pid)
        before = _status_kib(server.pid, "VmRSS")
        status, body = await post(url)
        peak = _status_kib(server.pid, "VmHWM")
    assert (status, body["error"]) == (413, "too_large"), body
    growth_mib = (peak - before) / 1024
    assert growth_mib < 50, f"the server's peak RSS rose {growth_mib:.0f} MiB decoding the bomb"
    assert sorted(p.name for p in storage.iterdir() if not p.name.startswith(".")) == [
        "11111_small"
    ]
    assert list((storage / ".tmp").iterdir()) == []


async def test_deflate_bomb_is_stopped_at_the_cap(
    start_service: ServiceFactory, source: Source
) -> None:
    service = await start_service(fetch_allow=ALLOW_SOURCES, max_size=1024 * 1024)
    compressor = zlib.compressobj(9)
    body = compressor.compress(bytes(64 * 1024 * 1024)) + compressor.flush()
    url = source.file("/deflate-bomb", body, headers={"Content-Encoding": "deflate"})
    await import_error(service, url, 413, "too_large")
    service.assert_nothing_stored()


async def test_declared_length_over_the_cap_is_refused_before_the_body(
    start_service: ServiceFactory, source: Source
) -> None:
    service = await start_service(fetch_allow=ALLOW_SOURCES, max_size=1000, fetch_read_timeout=60.0)
    # The head announces 50 MB and then nothing comes: reading would hang for a minute.
    url = source.script("/huge", response_head(200, 50_000_000), HOLD)
    detail = await asyncio.wait_for(import_error(service, url, 413, "too_large"), 10)
    assert "1000" in detail
    service.assert_nothing_stored()


async def test_streamed_size_over_the_cap(start_service: ServiceFactory, source: Source) -> None:
    service = await start_service(fetch_allow=ALLOW_SOURCES, max_size=100_000)
    exact = source.file("/exact", random_bytes(100_000))
    await import_ok(service, exact, fileName="exact.bin")
    # no Content-Length: counted on the way through
    url = source.script("/over", response_head(200, None), random_bytes(100_001))
    await import_error(service, url, 413, "too_large")
    service.assert_clean({"11111_exact.bin"})


async def test_unreachable_source(importer: Service, source: Source) -> None:
    await source.close()  # nothing listens on that port any more
    detail = await import_error(importer, source.url("/gone"), 502, "source_failed")
    assert "could not connect" in detail


async def test_unresolvable_name(start_service: ServiceFactory) -> None:
    service = await start_service(fetch_allow=(*ALLOW_SOURCES, "no-such-host.invalid"))
    await import_error(service, "http://no-such-host.invalid/x", 502, "source_failed")


# --- timeouts ----------------------------------------------------------------------


@pytest.fixture
async def quick_timeouts(start_service: ServiceFactory) -> Service:
    return await start_service(
        fetch_allow=ALLOW_SOURCES,
        fetch_connect_timeout=0.5,
        fetch_read_timeout=0.5,
        fetch_timeout=2.0,
    )


async def test_first_byte_timeout(quick_timeouts: Service, source: Source) -> None:
    url = source.script("/silent", HOLD)
    detail = await import_error(quick_timeouts, url, 504, "source_timeout")
    assert "sent nothing" in detail
    quick_timeouts.assert_nothing_stored()


async def test_idle_read_timeout(quick_timeouts: Service, source: Source) -> None:
    url = source.script("/stall", response_head(200, 500_000), random_bytes(100_000), HOLD)
    await import_error(quick_timeouts, url, 504, "source_timeout")
    quick_timeouts.assert_nothing_stored()


async def test_total_timeout(start_service: ServiceFactory, source: Source) -> None:
    """Never idle for long, but never done: only the total stops it.

    The idle timeout is 100 times the source's pause, so a busy machine that delays
    the source's loop cannot turn this into an idle timeout; without the total, the
    body would complete after about 10 seconds."""
    service = await start_service(
        fetch_allow=ALLOW_SOURCES, fetch_read_timeout=10.0, fetch_timeout=2.0
    )
    trickle = [step for _ in range(100) for step in (b"x" * 10, 0.1)]
    url = source.script("/trickle", response_head(200, 1000), *trickle)
    detail = await import_error(service, url, 504, "source_timeout")
    assert "2 seconds" in detail
    service.assert_nothing_stored()


@contextlib.contextmanager
def full_listener() -> Iterator[int]:
    """A port whose accept queue is full: connections to it hang in SYN-SENT."""
    server = socket.socket()
    server.bind(("127.0.0.3", 0))
    server.listen(0)
    port = server.getsockname()[1]
    filler = socket.socket()
    filler.connect(("127.0.0.3", port))
    try:
        yield port
    finally:
        filler.close()
        server.close()


async def test_connect_timeout(quick_timeouts: Service) -> None:
    with full_listener() as port:
        detail = await import_error(
            quick_timeouts, f"http://127.0.0.3:{port}/x", 504, "source_timeout"
        )
    assert "connect" in detail


# --- bad requests ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"channel": "web"}, "sourceUrl"),
        ({"sourceUrl": "", "channel": "web"}, "sourceUrl"),
        ({"sourceUrl": 42, "channel": "web"}, "sourceUrl"),
        ({"sourceUrl": "http://[::1", "channel": "web"}, "sourceUrl"),
        ({"sourceUrl": "http://127.0.0.2/" + "a" * 9000, "channel": "web"}, "sourceUrl"),
        ({"sourceUrl": "http://127.0.0.2/a"}, "channel"),
        ({"sourceUrl": "http://127.0.0.2/a", "channel": ["web"]}, "channel"),
        ({"sourceUrl": "http://127.0.0.2/a", "channel": "we b"}, "channel"),
        (
            {"sourceUrl": "http://127.0.0.2/a", "channel": "web", "conversationId": "a/b"},
            "conversationId",
        ),
        (
            {"sourceUrl": "http://127.0.0.2/a", "channel": "web", "conversationId": 1.5},
            "conversationId",
        ),
        ({"sourceUrl": "http://127.0.0.2/a", "channel": "web", "fileName": "a\x00b"}, "fileName"),
        ({"sourceUrl": "http://127.0.0.2/a", "channel": "web", "fileName": ".."}, "fileName"),
        ({"sourceUrl": "http://127.0.0.2/a", "channel": "web", "mime_type": "png"}, "mime_type"),
        ({"sourceUrl": "http://127.0.0.2/a", "channel": "web", "sha256": "abc"}, "sha256"),
        ({"sourceUrl": "http://127.0.0.2/a", "channel": "web", "sha256": "g" * 64}, "sha256"),
        ({"sourceUrl": "http://127.0.0.2/a", "channel": "web", "oauth": 5}, "oauth"),
        ({"sourceUrl": "http://127.0.0.2/a", "channel": "web", "oauth": {}}, "oauth"),
        (
            {
                "sourceUrl": "http://127.0.0.2/a",
                "channel": "web",
                "oauth": {"access_token": "a\r\nX-Injected: 1"},
            },
            "oauth",
        ),
        (
            {
                "sourceUrl": "http://127.0.0.2/a",
                "channel": "web",
                "oauth": {"access_token": "t", "token_type": "Bearer x"},
            },
            "oauth",
        ),
        ({"sourceUrl": "http://127.0.0.2/a", "channel": "web", "APIKey360": "k e y"}, "APIKey360"),
        ({"sourceUrl": "http://127.0.0.2/a", "channel": "web", "APIKey360": {"k": 1}}, "APIKey360"),
    ],
)
async def test_bad_fields_are_named(importer: Service, source: Source, body: Any, field) -> None:
    response, answer = await post_import(importer, body)
    assert response.status == 400, answer
    assert answer["error"] == "bad_request"
    assert field in answer["detail"]
    importer.assert_nothing_stored()


@pytest.mark.parametrize(
    ("data", "content_type", "words"),
    [
        (b'{"sourceUrl": ', "application/json", "JSON"),
        (b"[1, 2]", "application/json", "object"),
        (b"\xff\xfe{}", "application/json", "JSON"),
        (b'{"sourceUrl": "http://127.0.0.2/", "channel": "web"}', "text/plain", "application/json"),
        (b"sourceUrl=http://127.0.0.2/", "application/x-www-form-urlencoded", "application/json"),
        (b'{"pad": "' + b"x" * 70_000 + b'"}', "application/json", "larger"),
    ],
)
async def test_bad_bodies(importer: Service, data: bytes, content_type: str, words: str) -> None:
    async with importer.session.post(
        importer.url + "/files/from-url", data=data, headers={"Content-Type": content_type}
    ) as response:
        answer = await response.json()
    assert response.status == 400, answer
    assert answer["error"] == "bad_request"
    assert words in answer["detail"]


async def test_oversized_body_without_length_is_cut_off(importer: Service) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b'{"pad": "'
        for _ in range(100):
            yield b"x" * 1024
        yield b'"}'

    async with importer.session.post(
        importer.url + "/files/from-url",
        data=body(),
        headers={"Content-Type": "application/json"},
    ) as response:
        answer = await response.json()
    assert response.status == 400
    assert "larger" in answer["detail"]


async def test_compat_status(start_service: ServiceFactory, source: Source) -> None:
    service = await start_service(fetch_allow=ALLOW_SOURCES, compat_status=True)
    response, _ = await post_import(service, job("ftp://127.0.0.2/x"))
    assert response.status == 404
    response, _ = await post_import(service, job(source.file("/e", b"", status=404)))
    assert response.status == 502


async def test_imports_count_as_transfers(start_service: ServiceFactory, source: Source) -> None:
    service = await start_service(fetch_allow=ALLOW_SOURCES, max_transfers=1)
    slow = asyncio.create_task(post_import(service, job(source.script("/slow", HOLD))))
    await source.first_request()
    response, body = await post_import(service, job(source.file("/quick", b"x")))
    assert (response.status, body["error"]) == (503, "busy")
    assert response.headers["Retry-After"]
    await source.close()  # the held import now fails, and frees its slot
    response, _ = await slow
    assert response.status == 502
    service.assert_nothing_stored()


async def test_untrusted_tls_certificate(importer: Service, tmp_path: Path) -> None:
    """https is verified: a self-signed source is refused, and nothing is stored."""
    openssl = require_program("openssl", "openssl")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    code, _, error = await run_program(
        openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
        "-subj", "/CN=127.0.0.2", "-addext", "subjectAltName=IP:127.0.0.2",
    )  # fmt: skip
    assert code == 0, error
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    source = await Source("127.0.0.2", tls=context).start()
    try:
        url = source.file("/tls.png", b"\x89PNG\r\n\x1a\n")
        detail = await import_error(importer, url, 502, "source_failed")
        assert "certificate" in detail
    finally:
        await source.close()
    importer.assert_nothing_stored()
