"""Claim first (storage/s3nameclaim.py): large files on a server that ignores If-None-Match
on CompleteMultipartUpload, as RGW 16 does.

Every test runs on RGW, where the service chooses claims by itself, and on moto's
server with claims forced (`s3_claims`), so the mode is proven where RGW is absent.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from streamproxy.storage.base import FileInfo, StorageError, now_utc
from streamproxy.storage.s3 import S3Location, S3Storage
from streamproxy.storage.s3nameclaim import CLAIM, CLAIMED_KEY, RECORD_SUFFIX

from .conftest import ServiceFactory, md5, random_bytes
from .faultproxy import ALWAYS, Delay, FaultProxy, Match
from .s3support import BUCKET, STAGING, S3Server, S3Store

pytestmark = pytest.mark.s3_only

MiB = 1024 * 1024
BIG = {"max_size": 40 * MiB, "s3_part_size": 5 * MiB, "s3_claims": True}
KEY = "k"


async def test_racing_large_uploads_of_one_name_give_distinct_intact_files(
    start_service: ServiceFactory,
) -> None:
    """On RGW a conditional completion replaced the file of the racer before it."""
    first = await start_service(**BIG)
    second = await start_service(storage=first.settings.storage, **BIG)
    payloads = [random_bytes(6 * MiB + i, seed=300 + i) for i in range(6)]
    services = [first, second]
    results = await asyncio.gather(
        *(
            services[index % 2].upload_json(data, filename="race.bin")
            for index, data in enumerate(payloads)
        )
    )
    names = [result["name"] for result in results]
    assert len(set(names)) == len(payloads)
    for index, (data, result) in enumerate(zip(payloads, results, strict=True)):
        assert result["etag"] == md5(data)
        assert await services[(index + 1) % 2].fetch(result["name"]) == data
    await asyncio.to_thread(first.assert_clean, set(names))


async def test_a_claim_is_never_served(start_service: ServiceFactory) -> None:
    """A name being published is no file: download, stat, listing and delete say 404."""
    service = await start_service(api_key=(KEY,), **BIG)
    store = service.store
    assert isinstance(store, S3Store)
    claimed = "11111_coming.bin"
    await asyncio.to_thread(
        store.moto.client.put_object,
        Bucket=BUCKET,
        Key=store.prefix + claimed,
        Body=b"",
        Metadata={CLAIM: uuid.uuid4().hex},
    )
    auth = {"Authorization": f"Bearer {KEY}"}
    kept = await service.upload_json(b"a file", filename="kept.txt", headers=auth)
    session, url = service.session, service.url
    for path in ("/files/download", "/files/stat"):
        async with session.get(url + path, params={"filename": claimed}, headers=auth) as answer:
            assert answer.status == 404, path
    async with session.get(url + "/files", params={"conversationId": "11111"}, headers=auth) as r:
        assert [item["name"] for item in (await r.json())["files"]] == [kept["name"]]
    async with session.delete(url + "/files", params={"filename": claimed}, headers=auth) as r:
        assert r.status == 404
    async with session.delete(
        url + "/files", params={"conversationId": "11111"}, headers=auth
    ) as r:
        assert (await r.json())["deleted"] == 1
    # The claim still holds its name: a new upload of it gets another one.
    small = await service.upload_json(b"small", filename="coming.bin", headers=auth)
    large = await service.upload_json(
        random_bytes(6 * MiB, seed=5), filename="coming.bin", headers=auth
    )
    assert claimed not in {small["name"], large["name"]}
    assert await asyncio.to_thread(store.stored_names) == {claimed, small["name"], large["name"]}


@pytest.fixture
async def storage(s3_server: S3Server) -> AsyncIterator[S3Storage]:
    """A storage of its own prefix, claiming names, with no sweep running beside the test."""
    storage = S3Storage(
        S3Location(BUCKET, f"claims-{uuid.uuid4().hex[:12]}/"),
        endpoint=s3_server.endpoint,
        part_size=5 * MiB,
        claims=True,
    )
    await storage.start()
    yield storage
    await storage.close()


def plant_claim(s3_server: S3Server, storage: S3Storage, name: str, since: int) -> str:
    """A claim on `name` as a writer that crashed at `since` left it; its UUID."""
    token, key = uuid.uuid4().hex, storage.key(name)
    client = s3_server.client
    record = f"{storage.staging_prefix}{since}-{token}{RECORD_SUFFIX}"
    client.put_object(Bucket=BUCKET, Key=record, Body=b"", Metadata={CLAIMED_KEY: key})
    client.put_object(Bucket=BUCKET, Key=key, Body=b"", Metadata={CLAIM: token})
    return token


async def test_a_stale_claim_is_swept_only_while_it_carries_its_uuid(
    storage: S3Storage, s3_server: S3Server
) -> None:
    client, store = s3_server.client, S3Store(s3_server, storage.prefix)
    now, long_ago = int(time.time()), int(time.time()) - 3600
    # Crashed long ago before publishing: the name still carries the claim.
    await asyncio.to_thread(plant_claim, s3_server, storage, "crashed.bin", long_ago)
    # Crashed long ago after publishing: the claim was replaced by the file...
    await asyncio.to_thread(plant_claim, s3_server, storage, "published.bin", long_ago)
    await asyncio.to_thread(
        client.put_object, Bucket=BUCKET, Key=storage.key("published.bin"), Body=b"the file"
    )
    # ...or by another claim (its record stands beside it).
    await asyncio.to_thread(plant_claim, s3_server, storage, "reclaimed.bin", long_ago)
    newer = await asyncio.to_thread(plant_claim, s3_server, storage, "reclaimed.bin", now)
    # Under way right now.
    await asyncio.to_thread(plant_claim, s3_server, storage, "live.bin", now)
    assert len(await asyncio.to_thread(store.temporaries)) == 5

    removed = await storage.remove_stale_temporaries(datetime.now(UTC) - timedelta(seconds=600))

    assert removed == 3
    assert await asyncio.to_thread(store.stored_names) == {
        "published.bin",
        "reclaimed.bin",
        "live.bin",
    }
    head = client.head_object(Bucket=BUCKET, Key=storage.key("reclaimed.bin"))
    assert head["Metadata"] == {CLAIM: newer}
    body = client.get_object(Bucket=BUCKET, Key=storage.key("published.bin"))["Body"].read()
    assert body == b"the file"
    records = await asyncio.to_thread(store.temporaries)
    assert len(records) == 2 and all(record.startswith(f"{STAGING}{now}-") for record in records)


async def test_a_claim_older_than_half_stale_after_is_not_published(
    s3_server: S3Server,
) -> None:
    """The copy took past half of --stale-after (S3 held it): no completion, the claim
    is released, and nothing is left: the sweep cannot race a completion."""
    proxy = await FaultProxy(s3_server.port).start()
    storage = S3Storage(
        S3Location(BUCKET, f"claims-{uuid.uuid4().hex[:12]}/"),
        endpoint=proxy.endpoint,
        part_size=5 * MiB,
        stale_after=6.0,  # publish within 3 s, release within 4.5 s
        claims=True,
    )
    await storage.start()
    store = S3Store(s3_server, storage.prefix)
    try:
        copy = Match("PUT", query=("uploadId", "partNumber"), headers=("x-amz-copy-source",))
        rule = proxy.fail(copy, Delay(3.5), times=ALWAYS)
        data = random_bytes(6 * MiB, seed=6)
        writer = await storage.create_writer(lambda piece: None)
        await writer.write([data[: 5 * MiB + 1]])
        await writer.write([data[5 * MiB + 1 :]])  # the first part goes: a multipart upload
        info = FileInfo(
            type="application/octet-stream", size=len(data), etag=md5(data), created=now_utc()
        )
        with pytest.raises(StorageError, match="stale-after"):
            await writer.commit(["late.bin"], info)
        assert rule.hits >= 1
        assert await asyncio.to_thread(store.stored_names) == set()
        assert await asyncio.to_thread(store.temporaries) == []
    finally:
        await storage.close()
        await proxy.close()
