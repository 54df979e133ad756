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

Where the server ignores If-None-Match on CompleteMultipartUpload (RGW), the
name is claimed first (storage/s3nameclaim.py): a claim record PutObject, the claim
(an empty conditional PutObject on the name) before the copy, an unconditional
completion, and a DeleteObject of the record after it; those steps are failed
too. Every test runs on moto's server and on RGW, behind the proxy.

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
from .s3servers import CLAIMS
from .s3support import S3Server, until

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
# A PutObject: no uploadId (not a part), no copy source.
PUT = Match("PUT", no_query=("uploadId",), without=("x-amz-copy-source",))
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
# Where names are claimed first, the publishing steps are these.
CLAIM_STEPS = {
    **{name: step for name, step in STEPS.items() if name != "CompleteMultipartUpload-publish"},
    "PutObject-claim-record": Step(
        Match("PUT", no_query=("uploadId",), without=("x-amz-copy-source", "If-None-Match")),
        1,
        True,
    ),
    "PutObject-claim": Step(
        Match("PUT", no_query=("uploadId",), headers=("If-None-Match",)), 1, True
    ),
    # Unconditional, like the staging one before it.
    "CompleteMultipartUpload-publish": Step(Match("POST", query=("uploadId",)), 2, True),
    "DeleteObject-claim-record": Step(Match("DELETE", no_query=("uploadId",)), 1, True),
}
# After the file is published: a failure there costs a leftover record, not the upload.
AFTER_PUBLISHING = ["DeleteObject-claim-record"]
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
async def fault_proxy(s3_server: S3Server) -> AsyncIterator[FaultProxy]:
    proxy = await FaultProxy(s3_server.port).start()
    yield proxy
    await proxy.close()


async def start_behind(proxy: FaultProxy, start_service: ServiceFactory, chosen: Chosen) -> Service:
    """A service on S3 through the proxy; rules are armed after its start-up checks."""
    settings = BIG if chosen.step.big else {}
    return await start_service(s3_endpoint=proxy.endpoint, s3_claims=chosen.claims, **settings)


async def status_of(service: Service, name: str) -> int:
    async with service.session.get(
        service.url + "/files/download", params={"filename": name}
    ) as response:
        return response.status


class Chosen(NamedTuple):
    step: Step
    claims: bool  # the service claims names first (forced on moto for a claim's own steps)


def step_of(storage_kind: str, step: str) -> Chosen:
    """The step as the service on this server takes it."""
    claims = CLAIMS[storage_kind] or step not in STEPS
    return Chosen((CLAIM_STEPS if claims else STEPS)[step], claims)


# Where a lost answer hides a write that happened: the file is stored, under the name
# (a lost claim is found ours and the upload goes on).
PUBLISHING = ["PutObject", "CompleteMultipartUpload-publish", "PutObject-claim"]
# Where a lost answer hides an upload no one knows the id of.
CREATING = ["CreateMultipartUpload-staging", "CreateMultipartUpload-publish"]


@pytest.mark.parametrize(
    ("step", "fault"),
    [
        (step, fault)
        for step in CLAIM_STEPS
        for fault in LASTING
        if (fault != "answer-lost" or step not in PUBLISHING + CREATING)
        and step not in AFTER_PUBLISHING
    ],
)
async def test_lasting_fault_in_a_commit_step_is_503_and_leaves_nothing(
    start_service: ServiceFactory,
    fault_proxy: FaultProxy,
    storage_kind: str,
    step: str,
    fault: str,
) -> None:
    chosen = step_of(storage_kind, step)
    service = await start_behind(fault_proxy, start_service, chosen)
    rule = fault_proxy.fail(chosen.step.match, LASTING[fault], nth=chosen.step.nth, times=ALWAYS)
    data = BIG_FILE if chosen.step.big else SMALL_FILE
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
        for step in CLAIM_STEPS
        for fault in ONCE
        if fault != "answer-lost" or step not in CREATING
    ],
)
async def test_passing_fault_in_a_commit_step_is_retried_and_stores_once(
    start_service: ServiceFactory,
    fault_proxy: FaultProxy,
    storage_kind: str,
    step: str,
    fault: str,
) -> None:
    chosen = step_of(storage_kind, step)
    service = await start_behind(fault_proxy, start_service, chosen)
    rule: Rule = fault_proxy.fail(chosen.step.match, ONCE[fault], nth=chosen.step.nth, times=1)
    data = BIG_FILE if chosen.step.big else SMALL_FILE
    response = await service.upload(data, filename="f.bin")
    body = await response.json()
    assert response.status == 200, body
    assert rule.hits == 1
    assert (body["name"], body["etag"]) == ("11111_f.bin", md5(data))
    assert await service.fetch("11111_f.bin") == data
    await asyncio.to_thread(service.assert_clean, {"11111_f.bin"})


@pytest.mark.parametrize("step", PUBLISHING)
async def test_commit_whose_every_answer_is_lost_is_found_stored(
    start_service: ServiceFactory, fault_proxy: FaultProxy, storage_kind: str, step: str
) -> None:
    """S3 stored the file and no answer said so: the writer finds its own object
    under the name (by its token) and says so, instead of a 503 beside a file
    nobody is told of."""
    chosen = step_of(storage_kind, step)
    service = await start_behind(fault_proxy, start_service, chosen)
    rule = fault_proxy.fail(chosen.step.match, Cut(after=True), nth=chosen.step.nth, times=ALWAYS)
    data = BIG_FILE if chosen.step.big else SMALL_FILE
    body = await service.upload_json(data, filename="f.bin")
    assert rule.hits >= ATTEMPTS
    assert (body["name"], body["etag"]) == ("11111_f.bin", md5(data))
    fault_proxy.restore()
    assert await service.fetch("11111_f.bin") == data
    await asyncio.to_thread(service.assert_clean, {"11111_f.bin"})


@pytest.mark.parametrize("times", [1, ALWAYS], ids=["once", "always"])
@pytest.mark.parametrize("step", CREATING)
async def test_lost_answer_to_create_multipart_upload_is_left_to_the_stale_sweep(
    start_service: ServiceFactory, fault_proxy: FaultProxy, storage_kind: str, step: str, times: int
) -> None:
    chosen = step_of(storage_kind, step)
    service = await start_behind(fault_proxy, start_service, chosen)
    rule = fault_proxy.fail(chosen.step.match, Cut(after=True), nth=chosen.step.nth, times=times)
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


async def test_a_claim_record_that_cannot_be_deleted_costs_no_upload(
    start_service: ServiceFactory, fault_proxy: FaultProxy, storage_kind: str
) -> None:
    """The file is published when the record's delete fails: the answer is 200, and
    the record (with the staging object) goes once S3 takes deletes again."""
    chosen = step_of(storage_kind, "DeleteObject-claim-record")
    service = await start_behind(fault_proxy, start_service, chosen)
    rule = fault_proxy.fail(chosen.step.match, Answer(500, "InternalError"), times=ALWAYS)
    body = await service.upload_json(BIG_FILE, filename="f.bin")
    assert rule.hits >= ATTEMPTS
    assert (body["name"], body["etag"]) == ("11111_f.bin", md5(BIG_FILE))
    assert await service.fetch("11111_f.bin") == BIG_FILE
    assert any(key.endswith("-claim") for key in await asyncio.to_thread(service.temporaries))
    fault_proxy.restore()  # the janitor's retries get through
    await until(lambda: service.temporaries() == [])
    await asyncio.to_thread(service.assert_clean, {"11111_f.bin"})
