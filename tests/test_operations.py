"""Operating the service: metrics in Prometheus format, retention sweeps."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from yarl import URL

from .conftest import (
    Service,
    ServiceFactory,
    eventually,
    field_part,
    file_part,
    http_post_head,
    multipart_body,
    random_bytes,
    stop_server,
)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(service: Service) -> Samples:
    """Every sample of /metrics, parsed with prometheus-client's own parser."""
    async with service.session.get(service.url + "/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        text = await response.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_count_bytes_requests_refusals_and_storage(
    start_service: ServiceFactory,
) -> None:
    service = await start_service(max_size=100_000)
    data = random_bytes(70_000)
    body = await service.upload_json(data, filename="m.bin")
    assert await service.fetch(body["name"]) == data
    await service.upload(random_bytes(100_001), filename="big.bin")
    async with service.session.get(
        service.url + "/files/download", params={"filename": "11111_none.bin"}
    ) as response:
        assert response.status == 404
    samples = await scrape(service)
    assert value(samples, "streamproxy_received_bytes_total", kind="upload") == 70_000
    assert value(samples, "streamproxy_sent_bytes_total") == 70_000
    assert value(samples, "streamproxy_hashing_seconds_total", kind="upload") > 0
    assert value(samples, "streamproxy_refusals_total", reason="too_large") == 1
    assert value(samples, "streamproxy_refusals_total", reason="not_found") == 1
    assert (
        value(
            samples,
            "streamproxy_request_duration_seconds_count",
            route="upload",
            method="POST",
            status="200",
        )
        == 1
    )
    assert (
        value(
            samples,
            "streamproxy_request_duration_seconds_count",
            route="upload",
            method="POST",
            status="413",
        )
        == 1
    )
    assert (
        value(
            samples,
            "streamproxy_request_duration_seconds_count",
            route="download",
            method="GET",
            status="200",
        )
        == 1
    )
    assert value(samples, "streamproxy_storage_operation_seconds_count", operation="commit") == 1
    assert value(samples, "streamproxy_storage_operation_seconds_count", operation="abort") == 1
    assert value(samples, "streamproxy_storage_operation_seconds_count", operation="write") >= 1
    assert value(samples, "streamproxy_transfers_in_flight", kind="upload") == 0


async def test_hashing_time_counts_every_upload_on_whichever_thread(
    start_service: ServiceFactory,
) -> None:
    """A small file is hashed on the event loop, a large one on the storage's threads, and
    an upload refused at the cap was hashed up to there: each adds to the counter."""
    service = await start_service(max_size=8_000_000)

    async def hashed() -> float:
        return value(await scrape(service), "streamproxy_hashing_seconds_total", kind="upload")

    assert await hashed() == 0
    await service.upload_json(random_bytes(5_000), filename="small.bin")
    after_small = await hashed()
    assert after_small > 0
    await service.upload_json(random_bytes(6_000_000), filename="large.bin")
    after_large = await hashed()
    assert after_large > after_small
    response = await service.upload(random_bytes(8_000_001), filename="over.bin")
    assert response.status == 413
    assert await hashed() > after_large


async def test_transfers_in_flight_gauge(service: Service) -> None:
    body = multipart_body("b", [field_part("conversationId", "1"), file_part(b"s" * 4000)])
    reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
    writer.write(http_post_head("/files", "b", len(body)) + body[:100])
    await writer.drain()
    await eventually(lambda: service.in_flight() == 1)
    assert value(await scrape(service), "streamproxy_transfers_in_flight", kind="upload") == 1
    writer.write(body[100:])
    assert (await asyncio.wait_for(reader.read(), 10)).startswith(b"HTTP/1.1 200")
    writer.close()
    assert value(await scrape(service), "streamproxy_transfers_in_flight", kind="upload") == 0


async def wait_for(condition, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not await condition():
        assert time.monotonic() < deadline, "not reached in time"
        await asyncio.sleep(0.1)


async def deleted_count(service: Service, what: str, count: float) -> None:
    """Until the sweep's count of deleted `what` reaches `count`, then exactly that: the
    count follows the removal (the sweep counts once its thread is back), so files seen
    gone are not yet a count to read."""

    async def reached() -> bool:
        return (
            value(await scrape(service), "streamproxy_retention_deleted_total", what=what) >= count
        )

    await wait_for(reached)
    assert value(await scrape(service), "streamproxy_retention_deleted_total", what=what) == count


async def test_retention_deletes_expired_files(start_service: ServiceFactory) -> None:
    """The sweep that deletes an expired file keeps a newer one (a sweep deleting
    everything would fail here), on either storage."""
    service = await start_service(retention=6.0)  # a sweep every second
    old = await service.upload_json(b"old", filename="old.txt")
    await asyncio.sleep(3)
    assert old["name"] in service.stored_names()  # nothing goes before its time
    new = await service.upload_json(b"new", filename="new.txt")
    assert service.stored_names() == {old["name"], new["name"]}

    async def old_gone() -> bool:
        # The sweep unlinks the bytes, then the metadata: wait for both.
        return old["name"] not in service.stored_names() | service.meta_names()

    await wait_for(old_gone)  # 6 to 7 s after the old upload; the new one is 3 s younger
    service.assert_clean({new["name"]})
    async with service.session.get(old["url"]) as response:
        assert response.status == 404
    assert await service.fetch(new["name"]) == b"new"
    await deleted_count(service, "file", 1)


@pytest.mark.local_only  # plants files in the directory; S3: test_s3 stale sweep test
async def test_stale_temporaries_are_swept(start_service: ServiceFactory, tmp_path) -> None:
    service = await start_service(stale_after=1.0)
    kept = await service.upload_json(b"kept", filename="kept.txt")
    stale = service.root / ".tmp" / "abandoned.part"
    stale.write_bytes(b"half")
    orphan = service.root / ".meta" / "1_orphan.bin.json"
    orphan.write_bytes(b"{}")
    long_ago = time.time() - 3600
    os.utime(stale, (long_ago, long_ago))
    os.utime(orphan, (long_ago, long_ago))

    async def swept() -> bool:
        return not stale.exists() and not orphan.exists()

    await wait_for(swept)
    service.assert_clean({kept["name"]})  # stored files are not touched without --retention
    await deleted_count(service, "staged", 2)


def _plant_stale(path: Path, data: bytes = b"half") -> None:
    path.write_bytes(data)
    long_ago = time.time() - 3600
    os.utime(path, (long_ago, long_ago))


@pytest.mark.local_only  # plants a directory in .tmp
async def test_a_stale_directory_does_not_stop_the_sweep(start_service: ServiceFactory) -> None:
    service = await start_service(stale_after=1.0)
    tmp = service.root / ".tmp"
    directory = tmp / "left-by-something"
    directory.mkdir()
    _plant_stale(directory / "inner.part")
    _plant_stale(tmp / "first.part")
    long_ago = time.time() - 3600
    os.utime(directory, (long_ago, long_ago))
    await eventually(lambda: service.temporaries() == [])
    # The sweep lives on: a stale file planted after that goes too.
    _plant_stale(tmp / "second.part")
    await eventually(lambda: service.temporaries() == [])
    await deleted_count(service, "staged", 3)
    assert value(await scrape(service), "streamproxy_retention_failures_total") == 0


@pytest.mark.local_only  # breaks the directory layout by hand
async def test_a_failed_sweep_is_logged_counted_and_retried(
    start_service: ServiceFactory, caplog: pytest.LogCaptureFixture
) -> None:
    service = await start_service(stale_after=1.0)
    tmp = service.root / ".tmp"
    tmp.rename(service.root / ".tmp-away")
    tmp.write_bytes(b"not a directory")  # every sweep of .tmp fails now
    with caplog.at_level(logging.WARNING, logger="streamproxy.retention"):

        async def failed() -> bool:
            return value(await scrape(service), "streamproxy_retention_failures_total") >= 1

        await wait_for(failed)
    assert any("retention sweep failed" in r.getMessage() for r in caplog.records)
    tmp.unlink()
    (service.root / ".tmp-away").rename(tmp)
    _plant_stale(tmp / "abandoned.part")
    await eventually(lambda: service.temporaries() == [])  # the sweep runs on

    async def counted() -> bool:  # the count follows the removal, after the sweep's thread
        deleted = value(await scrape(service), "streamproxy_retention_deleted_total", what="staged")
        assert deleted <= 1
        return deleted == 1

    await wait_for(counted)


KEY = "a-signing-key-of-some-length"


def _tamper(signature: str) -> str:
    """Change the first character, always to a different one."""
    return ("B" if signature[0] == "A" else "A") + signature[1:]


async def test_signed_links(start_service: ServiceFactory) -> None:
    service = await start_service(signing_key=(KEY,), link_ttl=3600.0)
    body = await service.upload_json(b"signed bytes", filename="s.txt")
    url = URL(body["url"])
    assert set(url.query) == {"filename", "expires", "signature"}
    assert int(url.query["expires"]) == pytest.approx(time.time() + 3600, abs=5)
    async with service.session.get(url) as response:
        assert response.status == 200
        assert await response.read() == b"signed bytes"
    alias = url.with_path("/api/downloadFileStream", keep_query=True)  # as the agent desk does
    async with service.session.head(alias) as response:
        assert response.status == 200
    refused = {
        "missing": url.with_query(filename=body["name"]),
        "tampered": url.update_query(signature=_tamper(url.query["signature"])),
        "other file": url.update_query(filename="11111_other.txt"),
        "extended": url.update_query(expires=str(int(url.query["expires"]) + 10)),
    }
    for case, bad in refused.items():
        async with service.session.get(bad) as response:
            assert response.status == 403, case
            assert (await response.json())["error"] == "forbidden"


async def test_expired_link_and_key_rotation(start_service: ServiceFactory) -> None:
    from streamproxy.http import signing

    service = await start_service(signing_key=("new-key-0123456789", KEY))
    body = await service.upload_json(b"x", filename="r.txt")
    name = body["name"]
    old_link = signing.sign(name, [KEY], ttl=60)  # signed before the rotation
    async with service.session.get(
        service.url + "/files/download", params={"filename": name, **old_link}
    ) as response:
        assert response.status == 200
    expired = signing.sign(name, ["new-key-0123456789"], ttl=-10)
    async with service.session.get(
        service.url + "/files/download", params={"filename": name, **expired}
    ) as response:
        assert response.status == 403
        assert "expired" in (await response.json())["detail"]


async def test_limits(start_service: ServiceFactory) -> None:
    from streamproxy.intake.mediatypes import parse_type_rule

    service = await start_service(
        max_size=1234,
        allow_type=(parse_type_rule("image/*"),),
        deny_type=(parse_type_rule(".svg"),),
    )
    async with service.session.get(service.url + "/files/limits") as response:
        assert await response.json() == {
            "maxSize": 1234,
            "allowTypes": ["image/*"],
            "denyTypes": [".svg"],
            "signedLinks": False,
        }


async def test_json_logs_carry_the_request_id(spawn, tmp_path) -> None:
    server = await spawn("--storage", str(tmp_path / "s"), "--log-format", "json")
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            server.url + "/files/download",
            params={"filename": "1_nothing.txt"},
            headers={"X-Request-Id": "trace-42"},
        ) as response,
    ):
        assert response.status == 404
        assert (await response.json())["requestId"] == "trace-42"
    await stop_server(server)
    lines = [json.loads(line) for line in server.log if line.startswith("{")]
    access = [line for line in lines if line["logger"] == "streamproxy.access"]
    assert access and access[-1]["request_id"] == "trace-42"
    assert access[-1]["status"] == 404 and access[-1]["path"] == "/files/download"
    assert all({"time", "level", "logger", "message", "request_id"} <= set(line) for line in lines)
