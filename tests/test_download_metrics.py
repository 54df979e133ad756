"""`streamproxy_sent_bytes_total` counts the file bytes a download sends, and nothing else.

Each request is bracketed by two scrapes of /metrics and the counter must move by
exactly the file bytes in the body: none for HEAD, 304, 412 and 416; the ranges'
bytes (not the multipart headers) for 206. A small file is answered from memory,
a large one by sendfile (local) or ranged GETs (S3): both paths are covered.
"""

from __future__ import annotations

import pytest

from .conftest import Service, random_bytes
from .test_operations import scrape, value


async def sent_by(
    service: Service, name: str, method: str, headers: dict[str, str]
) -> tuple[int, int, float]:
    """Status, body length, and how far the sent-bytes counter moved for one request."""
    before = value(await scrape(service), "streamproxy_sent_bytes_total")
    async with service.session.request(
        method, service.url + "/files/download", params={"filename": name}, headers=headers
    ) as response:
        body = await response.read()
    after = value(await scrape(service), "streamproxy_sent_bytes_total")
    return response.status, len(body), after - before


# A small file is read whole with its metadata (64 KiB or less); a large one is not.
@pytest.mark.parametrize("size", [10_000, 200_000], ids=["small", "large"])
async def test_sent_bytes_count_exactly_what_a_download_sends(service: Service, size: int) -> None:
    stored = await service.upload_json(random_bytes(size, seed=3), filename="count.bin")
    name, etag = stored["name"], f'"{stored["etag"]}"'
    cases: list[tuple[str, dict[str, str], int, int, int]] = [
        # method, headers, status, body length, counter change
        ("GET", {}, 200, size, size),
        ("HEAD", {}, 200, 0, 0),
        ("HEAD", {"Range": "bytes=0-99"}, 206, 0, 0),
        ("GET", {"Range": "bytes=0-99"}, 206, 100, 100),
        ("GET", {"Range": "bytes=-1000"}, 206, 1000, 1000),
    ]
    for method, headers, status, length, counted in cases:
        assert await sent_by(service, name, method, headers) == (status, length, counted), (
            method,
            headers,
        )
    # several ranges: the ranges' bytes count, the multipart headers around them do not
    status, length, change = await sent_by(service, name, "GET", {"Range": "bytes=0-9,100-199"})
    assert (status, change) == (206, 110)
    assert length > 110
    refusals: list[tuple[dict[str, str], int]] = [
        ({"If-None-Match": etag}, 304),
        ({"If-Match": '"other"'}, 412),
        ({"If-Unmodified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}, 412),
        ({"Range": f"bytes={size}-"}, 416),
    ]
    for headers, status in refusals:
        for method in ("GET", "HEAD"):
            answer_status, _, change = await sent_by(service, name, method, headers)
            assert (answer_status, change) == (status, 0), (method, headers)
