"""Operating the service: metrics in Prometheus format, retention sweeps."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .conftest import (
    Service,
    ServiceFactory,
    field_part,
    file_part,
    http_post_head,
    multipart_body,
    random_bytes,
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


async def test_transfers_in_flight_gauge(service: Service) -> None:
    body = multipart_body("b", [field_part("conversationId", "1"), file_part(b"s" * 4000)])
    reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
    writer.write(http_post_head("/files", "b", len(body)) + body[:100])
    await writer.drain()
    await asyncio.sleep(0.2)
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


async def test_retention_deletes_expired_files(start_service: ServiceFactory) -> None:
    service = await start_service(retention=1.0)
    old = await service.upload_json(b"old", filename="old.txt")

    async def gone() -> bool:
        # The sweep unlinks the bytes, then the metadata: wait for both.
        return service.stored_names() == set() and service.meta_names() == set()

    await wait_for(gone)
    service.assert_nothing_stored()
    async with service.session.get(old["url"]) as response:
        assert response.status == 404
    samples = await scrape(service)
    assert value(samples, "streamproxy_retention_deleted_total", what="file") == 1


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
    samples = await scrape(service)
    assert value(samples, "streamproxy_retention_deleted_total", what="staged") == 2
