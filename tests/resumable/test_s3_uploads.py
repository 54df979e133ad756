"""Resumable uploads on S3 (moto's server, RGW): what local storage cannot show.

Parts of S3's minimum size and a tail object below it, the record and lease in the
bucket so that any instance takes the next PATCH (no sticky sessions), two instances
racing on one upload, and what termination and expiry leave behind (nothing: no object
and no open multipart upload). The routes' behaviour on both storages is in
test_tus_routes.py and the client tests.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ..conftest import Service, ServiceFactory, eventually, md5, random_bytes
from .uploads import upload_objects, uploads_left

pytestmark = pytest.mark.s3_only

MiB = 1024 * 1024
BIG = {"max_size": 40 * MiB, "s3_part_size": 5 * MiB}
TUS = {"Tus-Resumable": "1.0.0"}
PATCH = {**TUS, "Content-Type": "application/offset+octet-stream"}
META = "filename czMuYmlu,conversationId YzM="  # s3.bin, c3


async def create(service: Service, length: int) -> str:
    headers = {**TUS, "Upload-Length": str(length), "Upload-Metadata": META}
    async with service.session.post(service.url + "/files/uploads", headers=headers) as answer:
        assert answer.status == 201, await answer.text()
        return answer.headers["Location"].removeprefix(service.url)


async def patch(service: Service, path: str, offset: int, data: Any, **extra: str) -> Any:
    headers = {**PATCH, "Upload-Offset": str(offset), **extra}
    async with service.session.patch(service.url + path, data=data, headers=headers) as answer:
        return answer.status, answer.headers, await answer.read()


async def offset_of(service: Service, path: str) -> int:
    async with service.session.head(service.url + path, headers=TUS) as answer:
        assert answer.status == 200
        return int(answer.headers["Upload-Offset"])


def leaves(service: Service, upload_id: str) -> list[str]:
    """What the bucket holds of one upload, by kind: info, tail, data (multipart), ..."""
    names = [key.removeprefix(upload_id + "/") for key in upload_objects(service)]
    return sorted(name.split(".", 1)[0] if name.startswith("tail.") else name for name in names)


async def test_patches_below_and_above_the_part_size_make_parts_and_a_tail(
    start_service: ServiceFactory,
) -> None:
    service = await start_service(**BIG)
    data = random_bytes(13 * MiB + 5, seed=41)
    path = await create(service, len(data))
    upload_id = path.rsplit("/", 1)[1]
    assert leaves(service, upload_id) == ["info"]
    # Below the part size: all of it in a tail object, no multipart upload yet.
    cuts = [0, 1 * MiB, 1 * MiB + 300_000, 7 * MiB, 11 * MiB + 1, len(data)]
    status, answer, _ = await patch(service, path, 0, data[: cuts[1]])
    assert (status, answer["Upload-Offset"]) == (204, str(cuts[1]))
    assert leaves(service, upload_id) == ["info", "tail"]
    for start, end in itertools.pairwise(cuts[1:]):
        status, answer, body = await patch(service, path, start, data[start:end])
        assert status == 204, body
        assert answer["Upload-Offset"] == str(end)
        assert await offset_of(service, path) == end
        if end == 7 * MiB:  # one part of 5 MiB sent, 2 MiB kept as the tail
            assert leaves(service, upload_id) == ["data (multipart)", "info", "tail"]
    assert answer["ETag"] == f'"{md5(data)}"'
    assert await service.fetch("c3_s3.bin") == data
    # Committed: the record stays for GET's replay until expiry; no bytes of it are left.
    assert leaves(service, upload_id) == ["info"]
    service.assert_clean({"c3_s3.bin"})


async def test_checksum_mismatch_over_a_part_discards_the_chunk(
    start_service: ServiceFactory,
) -> None:
    service = await start_service(**BIG)
    data = random_bytes(12 * MiB, seed=42)
    path = await create(service, len(data))
    assert (await patch(service, path, 0, data[: 2 * MiB]))[0] == 204
    wrong = base64.b64encode(hashlib.md5(b"not these bytes").digest()).decode()
    chunk = data[2 * MiB : 9 * MiB]  # a part's worth and more: a part is sent, then dropped
    status, _, _ = await patch(service, path, 2 * MiB, chunk, **{"Upload-Checksum": f"md5 {wrong}"})
    assert status == 460
    assert await offset_of(service, path) == 2 * MiB
    right = base64.b64encode(hashlib.md5(chunk).digest()).decode()
    status, _, _ = await patch(service, path, 2 * MiB, chunk, **{"Upload-Checksum": f"md5 {right}"})
    assert status == 204
    status, answer, _ = await patch(service, path, 9 * MiB, data[9 * MiB :])
    assert (status, answer["ETag"]) == (204, f'"{md5(data)}"')
    assert await service.fetch("c3_s3.bin") == data
    service.assert_clean({"c3_s3.bin"})


async def test_termination_with_parts_leaves_no_object_and_no_multipart_upload(
    start_service: ServiceFactory,
) -> None:
    service = await start_service(**BIG)
    data = random_bytes(8 * MiB, seed=43)
    path = await create(service, 20 * MiB)
    assert (await patch(service, path, 0, data))[0] == 204
    assert "data (multipart)" in leaves(service, path.rsplit("/", 1)[1])
    async with service.session.delete(service.url + path, headers=TUS) as answer:
        assert answer.status == 204
    assert upload_objects(service) == []
    service.assert_nothing_stored()


async def test_expired_upload_with_parts_is_swept(start_service: ServiceFactory) -> None:
    service = await start_service(upload_expiry=1.0, **BIG)
    path = await create(service, 20 * MiB)
    assert (await patch(service, path, 0, random_bytes(6 * MiB, seed=44)))[0] == 204
    assert "data (multipart)" in leaves(service, path.rsplit("/", 1)[1])
    await eventually(lambda: uploads_left(service) == [], 20)
    assert (await offset_of_status(service, path)) == 404
    service.assert_nothing_stored()


async def offset_of_status(service: Service, path: str) -> int:
    async with service.session.head(service.url + path, headers=TUS) as answer:
        return answer.status


async def test_started_on_one_instance_and_finished_on_another(
    start_service: ServiceFactory,
) -> None:
    first = await start_service(**BIG)
    second = await start_service(storage=first.settings.storage, **BIG)
    data = random_bytes(16 * MiB + 3, seed=45)
    path = await create(first, len(data))
    cuts = [0, 3 * MiB, 9 * MiB, 10 * MiB, len(data)]
    for index, (start, end) in enumerate(itertools.pairwise(cuts)):
        here, there = (first, second) if index % 2 == 0 else (second, first)
        assert await offset_of(here, path) == start
        status, answer, body = await patch(here, path, start, data[start:end])
        assert status == 204, body
        assert await offset_of(there, path) == end
    assert answer["ETag"] == f'"{md5(data)}"'
    assert await first.fetch("c3_s3.bin") == data
    async with first.session.get(first.url + path, headers=TUS) as got:
        assert (await got.json())["etag"] == md5(data)
    first.assert_clean({"c3_s3.bin"})


async def test_two_instances_racing_patches_one_gets_409_and_the_result_is_intact(
    start_service: ServiceFactory,
) -> None:
    first = await start_service(**BIG)
    second = await start_service(storage=first.settings.storage, **BIG)
    data = random_bytes(14 * MiB, seed=46)
    path = await create(first, len(data))
    sent = 7 * MiB

    async def slow_body() -> AsyncIterator[bytes]:
        for start in range(0, sent, 512 * 1024):
            yield data[start : start + 512 * 1024]
            await asyncio.sleep(0.05)

    before = first.taken()
    slow = asyncio.ensure_future(patch(first, path, 0, slow_body()))
    # Bytes taken in: the slow PATCH holds the lease (a PATCH holds it before its body).
    await eventually(lambda: first.taken() > before)
    status, answer, body = await patch(second, path, 0, data[:sent])
    assert status == 409 and b"offset_mismatch" in body
    status, answer, body = await slow
    assert (status, answer["Upload-Offset"]) == (204, str(sent)), body
    # The loser asks again and goes on from the winner's offset, on its own instance.
    assert await offset_of(second, path) == sent
    status, answer, _ = await patch(second, path, sent, data[sent:])
    assert (status, answer["ETag"]) == (204, f'"{md5(data)}"')
    assert await second.fetch("c3_s3.bin") == data
    first.assert_clean({"c3_s3.bin"})
