"""What only S3 storage has to prove: multipart uploads, shared buckets, outages, start-up.

The behavioural suite already runs on S3 (see conftest); these cover what it
cannot reach: files larger than one part, leftovers in ListMultipartUploads,
two instances on one bucket, a bucket that goes away, and a clear start-up.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from streamproxy.runtime.settings import Settings
from streamproxy.storage import open_storage, s3copy
from streamproxy.storage import s3 as s3_module
from streamproxy.storage.base import StorageError
from streamproxy.storage.s3 import S3Location, S3Storage

from .conftest import (
    Service,
    ServiceFactory,
    field_part,
    file_part,
    http_post_head,
    md5,
    multipart_body,
    random_bytes,
    run_program,
)
from .faultproxy import FaultProxy
from .s3support import BUCKET, STAGING, MotoServer, S3Server, S3Store, free_port

MiB = 1024 * 1024
# Parts of S3's minimum size, and a cap that lets a file span several of them.
BIG = {"max_size": 40 * MiB, "s3_part_size": 5 * MiB}
BIG_FILE = random_bytes(12 * MiB + 7, seed=12)

pytestmark = pytest.mark.s3_only


async def eventually(check: Callable[[], bool], within: float = 20.0) -> None:
    """Poll a blocking check (boto3 against moto) off the event loop the service runs on."""
    deadline = time.monotonic() + within
    while not await asyncio.to_thread(check):
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


async def test_file_of_several_parts_round_trip(start_service: ServiceFactory) -> None:
    service = await start_service(**BIG)
    body = await service.upload_json(BIG_FILE, filename="video.mp4", content_type="video/mp4")
    assert body["size"] == len(BIG_FILE)
    assert body["etag"] == md5(BIG_FILE)  # the MD5, not S3's multipart ETag
    assert await service.fetch(body["name"]) == BIG_FILE
    async with service.session.get(
        service.url + "/files/download",
        params={"filename": body["name"]},
        headers={"Range": f"bytes={5 * MiB - 3}-{5 * MiB + 2}"},
    ) as response:
        assert response.status == 206
        assert await response.read() == BIG_FILE[5 * MiB - 3 : 5 * MiB + 3]
    async with service.session.get(
        service.url + "/files/stat", params={"filename": body["name"]}
    ) as response:
        stat = await response.json()
    assert stat["etag"] == md5(BIG_FILE) and stat["type"] == "video/mp4"
    service.assert_clean({"11111_video.mp4"})


@pytest.mark.parametrize(
    "size", [5 * MiB, 10 * MiB], ids=["exactly-one-part", "exactly-two-parts-and-the-cap"]
)
async def test_sizes_at_the_part_boundary(start_service: ServiceFactory, size: int) -> None:
    """Exactly one part is still one PutObject; two take the multipart path, to the cap.

    (A part may overshoot by a write batch, so where between the two the path
    changes depends on batching: not asserted.)"""
    service = await start_service(max_size=10 * MiB, s3_part_size=5 * MiB)
    store = service.store
    assert isinstance(store, S3Store)
    data = random_bytes(size, seed=size)
    body = await service.upload_json(data, filename="edge.bin")
    assert (body["size"], body["etag"]) == (size, md5(data))
    assert await service.fetch(body["name"]) == data
    head = store.moto.client.head_object(Bucket=BUCKET, Key=store.prefix + body["name"])
    assert ("-" in head["ETag"]) == (size > 5 * MiB)  # a multipart ETag ends in -N
    service.assert_clean({body["name"]})


async def test_large_upload_never_replaces_a_taken_name(start_service: ServiceFactory) -> None:
    service = await start_service(**BIG)
    first = await service.upload_json(b"small first", filename="same.bin")
    second = await service.upload_json(BIG_FILE, filename="same.bin")
    assert first["name"] == "11111_same.bin"
    assert re.fullmatch(r"11111_same-[0-9a-f]{6}\.bin", second["name"])
    assert await service.fetch(first["name"]) == b"small first"
    assert await service.fetch(second["name"]) == BIG_FILE
    service.assert_clean({first["name"], second["name"]})


async def test_publication_copies_in_pieces_of_at_most_copy_part(
    start_service: ServiceFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commit's server-side copy goes through storage/s3copy: with 8 MiB pieces the
    12 MiB file is published as two copied parts (a multipart ETag ends in -2), whole."""
    monkeypatch.setattr(s3copy, "COPY_PART", 8 * MiB)
    service = await start_service(**BIG)
    store = service.store
    assert isinstance(store, S3Store)
    body = await service.upload_json(BIG_FILE, filename="pieces.bin")
    head = store.moto.client.head_object(Bucket=BUCKET, Key=store.prefix + body["name"])
    assert head["ETag"].strip('"').endswith("-2")
    assert await service.fetch(body["name"]) == BIG_FILE
    service.assert_clean({body["name"]})


async def test_copy_ranges_keeps_exactly_the_ranges(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a completion with stray parts relies on (resumable/s3strays.py): ranges with
    gaps between them, each split evenly, copied into one object that is exactly them."""
    monkeypatch.setattr(s3copy, "COPY_PART", 8 * MiB)
    prefix = f"copy-{time.time_ns()}/"
    source, target = prefix + "source", prefix + "target"
    data = random_bytes(21 * MiB, seed=13)
    s3_server.client.put_object(Bucket=BUCKET, Key=source, Body=data)
    ranges = [[0, 12 * MiB], [13 * MiB, 19 * MiB], [20 * MiB, 21 * MiB - 5]]
    storage = S3Storage(S3Location(BUCKET, prefix), endpoint=s3_server.endpoint)
    await storage.start()
    try:
        client = storage.client
        upload_id = (await client.create_multipart_upload(Bucket=BUCKET, Key=target))["UploadId"]
        parts = await s3copy.copy_ranges(client, BUCKET, source, target, upload_id, ranges)
        assert [part["PartNumber"] for part in parts] == [1, 2, 3, 4]  # 6 + 6 + 6 + 1 MiB
        await client.complete_multipart_upload(
            Bucket=BUCKET, Key=target, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )
    finally:
        await storage.close()
    copied = s3_server.client.get_object(Bucket=BUCKET, Key=target)["Body"].read()
    assert copied == b"".join(data[start:end] for start, end in ranges)
    for key in (source, target):
        s3_server.client.delete_object(Bucket=BUCKET, Key=key)


async def test_metadata_survives_non_ascii(service: Service) -> None:
    body = await service.upload_json(b"x", filename="résumé 履歴書.txt", content_type="text/plain")
    async with service.session.get(
        service.url + "/files/stat", params={"filename": body["name"]}
    ) as response:
        stat = await response.json()
    assert stat["originalName"] == "résumé_履歴書.txt"
    assert stat["name"] == body["name"] == "11111_résumé_履歴書.txt"


async def test_client_gone_mid_upload_leaves_no_multipart_upload(
    start_service: ServiceFactory,
) -> None:
    service = await start_service(**BIG)
    payload = random_bytes(30 * MiB, seed=3)
    body = multipart_body("b", [field_part("conversationId", "1"), file_part(payload)])
    _, writer = await asyncio.open_connection("127.0.0.1", service.port)
    writer.write(http_post_head("/files", "b", len(body)))
    sent = 0
    while sent < 16 * MiB:  # past two parts: one uploaded, one on its way
        writer.write(body[sent : sent + MiB])
        await writer.drain()
        sent += MiB
    await eventually(lambda: bool(service.temporaries()))
    writer.transport.abort()
    await eventually(lambda: service.temporaries() == [])
    service.assert_nothing_stored()


async def test_cap_hit_after_several_parts_leaves_nothing(start_service: ServiceFactory) -> None:
    service = await start_service(max_size=11 * MiB, s3_part_size=5 * MiB)
    response = await service.upload(BIG_FILE, filename="over.bin")
    assert response.status == 413
    service.assert_nothing_stored()  # the staging multipart upload is aborted before the answer


async def test_two_instances_on_one_bucket_race_for_one_name(
    start_service: ServiceFactory,
) -> None:
    first = await start_service(**BIG)
    second = await start_service(storage=first.settings.storage, **BIG)
    payloads = [random_bytes(20_000 + i, seed=i) for i in range(10)]
    payloads += [random_bytes(6 * MiB + i, seed=100 + i) for i in range(2)]
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
    first.assert_clean(set(names))


@pytest.fixture
async def fault_proxy(s3_server: S3Server) -> AsyncIterator[FaultProxy]:
    proxy = await FaultProxy(s3_server.port).start()
    yield proxy
    await proxy.close()


async def test_outage_mid_transfer_is_503_and_leaves_nothing(
    start_service: ServiceFactory, fault_proxy: FaultProxy
) -> None:
    service = await start_service(s3_endpoint=fault_proxy.endpoint, **BIG)

    async def cut_once_uploading() -> None:
        await eventually(lambda: bool(service.temporaries()))  # a part is on its way
        fault_proxy.cut()

    cutting = asyncio.create_task(cut_once_uploading())
    last = len(BIG_FILE) - 256 * 1024

    async def body() -> AsyncIterator[bytes]:
        # All but the last chunk: enough for the server to start its multipart
        # upload (how much it reads ahead depends on timing); without the last
        # chunk it cannot commit before S3 goes away.
        for start in range(0, last, 256 * 1024):
            yield BIG_FILE[start : start + 256 * 1024]
        await asyncio.wait_for(asyncio.shield(cutting), 30)
        yield BIG_FILE[last:]

    form = aiohttp.FormData()
    form.add_field("conversationId", "1")
    form.add_field("file", body(), filename="big.bin")
    async with service.session.post(service.url + "/files", data=form) as response:
        assert response.status == 503, await response.text()
        answer = await response.json()
    await cutting
    assert answer["error"] == "storage_unavailable"
    assert answer["message"] == "An error occurred while uploading file."
    async with service.session.get(service.url + "/readyz") as response:
        assert response.status == 503
    fault_proxy.restore()  # the aborts that failed during the outage are retried
    await eventually(lambda: service.temporaries() == [])
    service.assert_nothing_stored()
    async with service.session.get(service.url + "/readyz") as response:
        assert response.status == 200


@pytest.mark.parametrize("code", ["EntityTooLarge", "QuotaExceeded"])
async def test_bucket_refusing_the_write_is_507(
    start_service: ServiceFactory, fault_proxy: FaultProxy, code: str
) -> None:
    service = await start_service(s3_endpoint=fault_proxy.endpoint)
    fault_proxy.reject(400 if code == "EntityTooLarge" else 403, code)
    response = await service.upload(b"some bytes", filename="q.bin")
    assert response.status == 507
    assert (await response.json())["error"] == "insufficient_storage"
    fault_proxy.restore()
    service.assert_nothing_stored()


async def test_download_of_a_foreign_object(service: Service) -> None:
    """An object put there by another program (say Hybrid Chat's MinIO) is still served."""
    store = service.store
    assert isinstance(store, S3Store)
    await asyncio.to_thread(
        store.moto.client.put_object,
        Bucket=BUCKET,
        Key=store.prefix + "old_photo.png",
        Body=b"legacy bytes",
        ContentType="image/png",
    )
    async with service.session.get(
        service.url + "/files/download", params={"filename": "old_photo.png"}
    ) as response:
        assert response.status == 200
        assert await response.read() == b"legacy bytes"
        assert response.headers["ETag"] == f'"{md5(b"legacy bytes")}"'
        assert response.headers["Content-Type"] == "image/png"


# --- start-up ---------------------------------------------------------------------------


async def test_start_fails_clearly_for_a_missing_bucket(s3_server: S3Server) -> None:
    settings = Settings(storage="s3://no-such-bucket/x", s3_endpoint=s3_server.endpoint)
    storage = open_storage(settings)
    with pytest.raises(StorageError, match="bucket 'no-such-bucket' does not exist"):
        await storage.start()


async def test_start_fails_clearly_for_an_unreachable_endpoint(moto_server: MotoServer) -> None:
    settings = Settings(storage=f"s3://{BUCKET}/x", s3_endpoint=f"http://127.0.0.1:{free_port()}")
    storage = open_storage(settings)
    with pytest.raises(StorageError, match=r"cannot reach http://127\.0\.0\.1"):
        await storage.start()


async def test_command_says_why_it_cannot_start(s3_server: S3Server) -> None:
    code, _, stderr = await run_program(
        sys.executable,
        "-m",
        "streamproxy",
        "serve",
        "--port",
        "0",
        "--storage",
        "s3://missing-bucket/media",
        "--s3-endpoint",
        s3_server.endpoint,
    )
    assert code == 1
    assert b"cannot start: bucket 'missing-bucket' does not exist" in stderr


async def test_stale_sweep_spares_live_uploads_of_other_instances(
    start_service: ServiceFactory, s3_server: S3Server
) -> None:
    first = await start_service()
    store = first.store
    assert isinstance(store, S3Store)
    client, staging = s3_server.client, store.prefix + STAGING
    kept = await first.upload_json(b"kept", filename="kept.txt")
    # A crash long ago left a staging object and a multipart upload; another
    # instance is uploading right now. (moto reports one fixed 2010 date as
    # every upload's Initiated, so only the time in our keys can tell them apart.)
    client.put_object(Bucket=BUCKET, Key=f"{staging}1000-crashed", Body=b"half")
    client.create_multipart_upload(Bucket=BUCKET, Key=f"{staging}1000-abandoned")
    live_key = f"{staging}{int(time.time())}-live"
    live = client.create_multipart_upload(Bucket=BUCKET, Key=live_key)
    await start_service(storage=first.settings.storage, stale_after=600.0)  # sweeps at start
    await eventually(lambda: store.temporaries() == [f"multipart upload of {live_key}"])
    client.abort_multipart_upload(Bucket=BUCKET, Key=live_key, UploadId=live["UploadId"])
    first.assert_clean({kept["name"]})


async def test_start_fails_clearly_for_denied_credentials(fault_proxy: FaultProxy) -> None:
    fault_proxy.reject(403, "InvalidAccessKeyId")
    storage = open_storage(Settings(storage=f"s3://{BUCKET}/x", s3_endpoint=fault_proxy.endpoint))
    with pytest.raises(StorageError, match=f"access to bucket '{BUCKET}' .* is denied"):
        await storage.start()


async def test_start_refuses_a_server_that_ignores_if_none_match(
    moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that would let an upload replace a file is refused, not trusted."""
    monkeypatch.setattr(s3_module, "_VERIFIED", {})
    storage = open_storage(Settings(storage=f"s3://{BUCKET}/x", s3_endpoint=moto_server.endpoint))
    assert isinstance(storage, S3Storage)
    check_bucket = storage._check_bucket

    async def check_then_forget_conditions() -> None:
        await check_bucket()
        client: Any = storage.client
        put_object = client.put_object

        async def unconditional_put(**arguments: Any) -> Any:
            arguments.pop("IfNoneMatch", None)
            return await put_object(**arguments)

        client.put_object = unconditional_put

    monkeypatch.setattr(storage, "_check_bucket", check_then_forget_conditions)
    with pytest.raises(StorageError, match="ignores If-None-Match on PutObject"):
        await storage.start()
