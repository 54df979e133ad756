"""S3 failing in the middle of a commit: each S3 call an upload makes, failed on its own.

A file that fits one part is committed with one conditional PutObject. A larger
one goes through a staging multipart upload (CreateMultipartUpload, UploadPart
per part, CompleteMultipartUpload), then is published by a server-side copy into
a second multipart upload on the final name (CreateMultipartUpload,
UploadPartCopy, CompleteMultipartUpload with If-None-Match). The fault proxy
fails just one of those calls, for good or once; botocore retries each call up
to three times (standard mode, and aiohttp once more for a PUT on a reset), so
a fault that lasts must beat the retries.

For good: the answer is 503 `storage_unavailable` with Retry-After, and by the
time it is sent nothing is left: no object under the name, no staging object,
no open multipart upload (ListMultipartUploads is empty at once; the writer
aborts before it answers, not the janitor later). Once: the retry carries the
upload through, stored once under the name asked for.

A lost answer (S3 did the work, the connection dropped before the answer) is
its own case. Lost answers to the publishing write (PutObject, the conditional
CompleteMultipartUpload) mean the file is stored: it must be reported under
that name, not stored a second time nor answered 503 beside it. A lost answer
to CreateMultipartUpload leaves an upload whose id nobody has; the stale sweep
(`--stale-after`) aborts it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import NamedTuple

import pytest

from .conftest import Service, ServiceFactory, md5, random_bytes
from .faultproxy import ALWAYS, Answer, Cut, Fault, FaultProxy, Match, Rule
from .s3support import MotoServer, until

MiB = 1024 * 1024
BIG = {"max_size": 40 * MiB, "s3_part_size": 5 * MiB}
BIG_FILE = random_bytes(12 * MiB + 7, seed=21)  # three staging parts, one copied part
SMALL_FILE = random_bytes(300_000, seed=22)  # one PutObject
ATTEMPTS = 3  # botocore's standard retry mode: one call, three tries

pytestmark = pytest.mark.s3_only


class Step(NamedTuple):
    """One S3 call of a commit: which requests are it, and which of them to fail."""

    match: Match
    nth: int
    big: bool


PART = Match("PUT", query=("uploadId", "partNumber"), without=("x-amz-copy-source",))
STEPS = {
    "PutObject": Step(Match("PUT", no_query=("uploadId",), headers=("If-None-Match",)), 1, False),
    "CreateMultipartUpload-staging": Step(Match("POST", query=("uploads",)), 1, True),
    "UploadPart-2": Step(PART, 2, True),
    "CompleteMultipartUpload-staging": Step(
        Match("POST", query=("uploadId",), without=("If-None-Match",)), 1, True
    ),
    "CreateMultipartUpload-publish": Step(Match("POST", query=("uploads",)), 2, True),
    "UploadPartCopy": Step(
        Match("PUT", query=("uploadId", "partNumber"), headers=("x-amz-copy-source",)), 1, True
    ),
    "CompleteMultipartUpload-publish": Step(
        Match("POST", query=("uploadId",), headers=("If-None-Match",)), 1, True
    ),
}
LASTING: dict[str, Fault] = {
    "500-InternalError": Answer(500, "InternalError"),
    "503-SlowDown": Answer(503, "SlowDown"),
    "connection-reset": Cut(),
    "answer-lost": Cut(after=True),  # S3 did it; only its answers never came
}
ONCE: dict[str, Fault] = {
    "500-InternalError": Answer(500, "InternalError"),
    "503-SlowDown": Answer(503, "SlowDown"),
    "connection-reset": Cut(),
    "answer-lost": Cut(after=True),  # S3 did it; only its answer never came
}


@pytest.fixture
async def fault_proxy(moto_server: MotoServer) -> AsyncIterator[FaultProxy]:
    proxy = await FaultProxy(moto_server.port).start()
    yield proxy
    await proxy.close()


async def start_behind(proxy: FaultProxy, start_service: ServiceFactory, step: Step) -> Service:
    """A service on S3 through the proxy; rules are armed after its start-up checks."""
    settings = BIG if step.big else {}
    return await start_service(s3_endpoint=proxy.endpoint, **settings)


async def status_of(service: Service, name: str) -> int:
    async with service.session.get(
        service.url + "/files/download", params={"filename": name}
    ) as response:
        return response.status


# Where a lost answer hides a write that happened: the file is stored, under the name.
PUBLISHING = ["PutObject", "CompleteMultipartUpload-publish"]
# Where a lost answer hides an upload no one knows the id of.
CREATING = ["CreateMultipartUpload-staging", "CreateMultipartUpload-publish"]


@pytest.mark.parametrize(
    ("step", "fault"),
    [
        (step, fault)
        for step in STEPS
        for fault in LASTING
        if fault != "answer-lost" or step not in PUBLISHING + CREATING
    ],
)
async def test_lasting_fault_in_a_commit_step_is_503_and_leaves_nothing(
    start_service: ServiceFactory, fault_proxy: FaultProxy, step: str, fault: str
) -> None:
    chosen = STEPS[step]
    service = await start_behind(fault_proxy, start_service, chosen)
    rule = fault_proxy.fail(chosen.match, LASTING[fault], nth=chosen.nth, times=ALWAYS)
    data = BIG_FILE if chosen.big else SMALL_FILE
    response = await service.upload(data, filename="f.bin")
    body = await response.json()
    assert response.status == 503, body
    assert body["error"] == "storage_unavailable"
    assert response.headers["Retry-After"].isdigit()
    assert rule.hits >= ATTEMPTS  # the step was reached and every retry of it failed
    # Already at the answer: no name, no staging object, no open multipart upload.
    assert await asyncio.to_thread(service.temporaries) == []
    assert await asyncio.to_thread(service.stored_names) == set()
    assert await status_of(service, "11111_f.bin") == 404


@pytest.mark.parametrize(
    ("step", "fault"),
    [
        (step, fault)
        for step in STEPS
        for fault in ONCE
        if fault != "answer-lost" or step not in CREATING
    ],
)
async def test_passing_fault_in_a_commit_step_is_retried_and_stores_once(
    start_service: ServiceFactory, fault_proxy: FaultProxy, step: str, fault: str
) -> None:
    chosen = STEPS[step]
    service = await start_behind(fault_proxy, start_service, chosen)
    rule: Rule = fault_proxy.fail(chosen.match, ONCE[fault], nth=chosen.nth, times=1)
    data = BIG_FILE if chosen.big else SMALL_FILE
    response = await service.upload(data, filename="f.bin")
    body = await response.json()
    assert response.status == 200, body
    assert rule.hits == 1
    assert (body["name"], body["etag"]) == ("11111_f.bin", md5(data))
    assert await service.fetch("11111_f.bin") == data
    await asyncio.to_thread(service.assert_clean, {"11111_f.bin"})


@pytest.mark.parametrize("step", PUBLISHING)
async def test_commit_whose_every_answer_is_lost_is_found_stored(
    start_service: ServiceFactory, fault_proxy: FaultProxy, step: str
) -> None:
    """S3 stored the file and no answer said so: the writer finds its own object
    under the name (by its token) and says so, instead of a 503 beside a file
    nobody is told of."""
    chosen = STEPS[step]
    service = await start_behind(fault_proxy, start_service, chosen)
    rule = fault_proxy.fail(chosen.match, Cut(after=True), nth=chosen.nth, times=ALWAYS)
    data = BIG_FILE if chosen.big else SMALL_FILE
    body = await service.upload_json(data, filename="f.bin")
    assert rule.hits >= ATTEMPTS
    assert (body["name"], body["etag"]) == ("11111_f.bin", md5(data))
    fault_proxy.restore()
    assert await service.fetch("11111_f.bin") == data
    await asyncio.to_thread(service.assert_clean, {"11111_f.bin"})


@pytest.mark.parametrize("times", [1, ALWAYS], ids=["once", "always"])
@pytest.mark.parametrize("step", CREATING)
async def test_lost_answer_to_create_multipart_upload_is_left_to_the_stale_sweep(
    start_service: ServiceFactory, fault_proxy: FaultProxy, step: str, times: int
) -> None:
    chosen = STEPS[step]
    service = await start_behind(fault_proxy, start_service, chosen)
    rule = fault_proxy.fail(chosen.match, Cut(after=True), nth=chosen.nth, times=times)
    response = await service.upload(BIG_FILE, filename="f.bin")
    if times == 1:  # botocore's retry made a second upload, which carried the file
        assert response.status == 200
        assert rule.hits == 1
        assert await service.fetch("11111_f.bin") == BIG_FILE
        stored = {"11111_f.bin"}
    else:
        assert response.status == 503
        assert rule.hits >= ATTEMPTS
        assert await status_of(service, "11111_f.bin") == 404
        stored = set()
    orphans = await asyncio.to_thread(service.temporaries)
    where = ".tmp/" if step.endswith("staging") else "11111_f.bin"
    assert len(orphans) == rule.hits
    assert all(orphan.startswith("multipart upload of ") and where in orphan for orphan in orphans)
    assert await asyncio.to_thread(service.stored_names) == stored
    # Staging keys carry their creation second: past it, a sweep with
    # --stale-after 1s (run at start-up) takes the orphans for stale.
    await asyncio.sleep(2.1)
    await start_service(storage=service.settings.storage, stale_after=1.0)
    await until(lambda: service.temporaries() == [])
    await asyncio.to_thread(service.assert_clean, stored)
