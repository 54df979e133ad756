"""Resumable uploads send the events `POST /files` sends: file.stored at completion,
file.refused for a type or a virus refused at completion and for a final upload over
the cap, and upload.expired when one is swept or a final upload fails because a part
went; each upload's end is announced once."""

from __future__ import annotations

import json

import pytest

from streamproxy.intake.mediatypes import parse_type_rule
from streamproxy.intake.scan import ClamdAddress

from ..conftest import Service, ServiceFactory, eventually, md5, random_bytes
from ..test_scan import EICAR, Clamd
from ..test_scan import clamd as clamd  # the fixture: a real clamd with the EICAR signature
from ..webhooks import PNG, SECRET, Receiver, metric_value
from .test_concat_unfinished import final, get, partial
from .test_sweep import sweep
from .test_tus_routes import TUS, create, head, patch

pytestmark = pytest.mark.local_only  # the routes' storage-neutral part; S3 runs the same code


async def test_completion_sends_file_stored(
    receiver: Receiver, start_service: ServiceFactory
) -> None:
    service = await start_service(webhook=(receiver.url,), webhook_secret=SECRET)
    data = random_bytes(300_000, seed=11)
    _, url, _ = await create(service, len(data))
    for start in (0, 150_000):
        status, _, _ = await patch(service, url, start, data[start : start + 150_000])
        assert status == 204
    await eventually(lambda: len(receiver.of_type("file.stored")) == 1)
    [stored] = receiver.of_type("file.stored")
    assert stored["data"]["name"] == "c7_clip.bin"
    assert (stored["data"]["etag"], stored["data"]["size"]) == (md5(data), len(data))
    assert stored["data"]["conversationId"] == "c7"
    assert stored["data"]["url"].endswith("filename=c7_clip.bin")


async def test_a_refused_completion_sends_file_refused(
    receiver: Receiver, start_service: ServiceFactory
) -> None:
    service = await start_service(
        webhook=(receiver.url,),
        webhook_secret=SECRET,
        allow_type=(parse_type_rule("image/*"),),
    )
    body = b"%PDF-1.7 not an image at all, a pdf..."
    _, url, _ = await create(service, len(body))
    status, _, _ = await patch(service, url, 0, body)
    assert status == 415
    await eventually(lambda: len(receiver.of_type("file.refused")) == 1)
    [refused] = receiver.of_type("file.refused")
    assert refused["data"]["reason"] == "type"
    assert refused["data"]["conversationId"] == "c7"
    assert receiver.of_type("file.stored") == []


async def test_an_expired_upload_sends_upload_expired(
    receiver: Receiver, start_service: ServiceFactory
) -> None:
    service = await start_service(webhook=(receiver.url,), webhook_secret=SECRET, upload_expiry=1.0)
    _, url, _ = await create(service, 100)
    await patch(service, url, 0, b"z" * 10)
    await eventually(lambda: len(receiver.of_type("upload.expired")) == 1)
    [expired] = receiver.of_type("upload.expired")
    assert expired["data"]["size"] == 10
    assert (expired["data"]["name"], expired["data"]["conversationId"]) == ("clip.bin", "c7")


def expire_now(service: Service, url: str) -> None:
    """The upload's record says it expired (its lifetime run out, as days would)."""
    info = service.root / ".uploads" / url.rsplit("/", 1)[1] / "info"
    record = json.loads(info.read_bytes())
    info.write_text(json.dumps({**record, "expires": 1.0}))


async def expired_sent(service: Service) -> float:
    """upload.expired events emitted (spooled) so far: counted as emitted, not received."""
    return await metric_value(service.url, "streamproxy_events_total", type="upload.expired")


async def test_a_final_upload_whose_part_went_sends_upload_expired_once(
    receiver: Receiver, start_service: ServiceFactory
) -> None:
    """A part terminated while its final upload waits: the PATCH finishing the other part
    fails the final (410 `expired`) and sends upload.expired for it; later looks at it
    and retention's removal of it send nothing more (an unfinished upload's does)."""
    service = await start_service(webhook=(receiver.url,), webhook_secret=SECRET)
    parts = [await partial(service, 300_000), await partial(service, 300_000)]
    status, headers, _ = await final(service, *parts)
    assert status == 201
    final_url = headers["Location"]
    async with service.session.delete(parts[1], headers=TUS) as answer:
        assert answer.status == 204
    assert receiver.of_type("upload.expired") == []  # a part's termination is the client's
    assert (await patch(service, parts[0], 0, random_bytes(300_000)))[0] == 204
    await eventually(lambda: len(receiver.of_type("upload.expired")) == 1)
    [failed] = receiver.of_type("upload.expired")
    assert (failed["data"]["name"], failed["data"]["conversationId"]) == ("joined.bin", "c9")
    assert (failed["data"]["size"], failed["data"]["etag"], failed["data"]["url"]) == (
        0,
        None,
        None,
    )
    assert (await head(service, final_url))[0] == 410  # the failure again: no event again
    assert await expired_sent(service) == 1

    _, unfinished, _ = await create(service, 100)
    for url in (final_url, unfinished):
        expire_now(service, url)
    await sweep(service)  # removes both: only the unfinished upload is announced now
    assert await expired_sent(service) == 2
    await eventually(lambda: len(receiver.of_type("upload.expired")) == 2)
    assert receiver.of_type("upload.expired")[1]["data"]["name"] == "clip.bin"


async def test_the_sweep_announces_no_upload_whose_end_was_announced(
    receiver: Receiver, start_service: ServiceFactory
) -> None:
    """A stored upload (file.stored) and a refused one (file.refused) are removed at their
    expiry without an upload.expired; an upload that expired unfinished gets one."""
    service = await start_service(
        webhook=(receiver.url,),
        webhook_secret=SECRET,
        allow_type=(parse_type_rule("image/*"),),
    )
    _, stored, _ = await create(service, len(PNG))
    assert (await patch(service, stored, 0, PNG))[0] == 204
    pdf = b"%PDF-1.7 not an image at all, a pdf..."
    _, refused, _ = await create(service, len(pdf))
    assert (await patch(service, refused, 0, pdf))[0] == 415
    _, unfinished, _ = await create(service, 100)
    await eventually(lambda: len(receiver.events) == 2)  # file.stored, file.refused
    for url in (stored, refused, unfinished):
        expire_now(service, url)
    await sweep(service)
    assert await expired_sent(service) == 1
    await eventually(lambda: len(receiver.of_type("upload.expired")) == 1)


async def refused_sent(service: Service) -> float:
    """file.refused events emitted (spooled) so far."""
    return await metric_value(service.url, "streamproxy_events_total", type="file.refused")


async def test_a_virus_found_at_completion_sends_file_refused(
    receiver: Receiver, start_service: ServiceFactory, clamd: Clamd
) -> None:
    service = await start_service(
        webhook=(receiver.url,),
        webhook_secret=SECRET,
        clamd=ClamdAddress(path=str(clamd.socket)),
    )
    body = random_bytes(1000) + EICAR
    _, url, _ = await create(service, len(body))
    assert (await patch(service, url, 0, body[:600]))[0] == 204
    assert (await patch(service, url, 600, body[600:]))[0] == 422
    assert (await get(service, url))[0] == 422  # the refusal replayed: no event again
    await eventually(lambda: len(receiver.of_type("file.refused")) == 1)
    [refused] = receiver.of_type("file.refused")
    assert refused["data"]["reason"] == "virus"
    assert (refused["data"]["name"], refused["data"]["size"]) == ("clip.bin", len(body))
    assert await refused_sent(service) == 1


async def test_a_final_upload_over_the_cap_sends_file_refused_once(
    receiver: Receiver, start_service: ServiceFactory
) -> None:
    """Parts that add up to more than the cap: refused with 413 and `file.refused`
    (reason `size`, the parts' sum) as `POST /files` refuses a body over it: at the
    creation when their lengths are known, at the assembly when they were deferred.
    Later looks at the failed final and retention's removal of it send nothing more."""
    service = await start_service(webhook=(receiver.url,), webhook_secret=SECRET, max_size=1000)
    known = [await partial(service, 600), await partial(service, 600)]
    status, _, body = await final(service, *known)
    assert (status, body["error"]) == (413, "too_large")
    await eventually(lambda: len(receiver.of_type("file.refused")) == 1)
    [refused] = receiver.of_type("file.refused")
    assert refused["data"]["reason"] == "size"
    assert (refused["data"]["size"], refused["data"]["name"]) == (1200, "joined.bin")
    assert refused["data"]["conversationId"] == "c9"

    deferred = [await partial(service, None), await partial(service, None)]
    status, headers, _ = await final(service, *deferred)
    assert status == 201
    final_url = headers["Location"]
    for url in deferred:  # the PATCH that finishes the second part fails the final
        status, _, _ = await patch(service, url, 0, random_bytes(600), **{"Upload-Length": "600"})
        assert status == 204
    assert (await head(service, final_url))[0] == 413
    assert (await head(service, final_url))[0] == 413  # the failure again: no event again
    await eventually(lambda: len(receiver.of_type("file.refused")) == 2)
    second = receiver.of_type("file.refused")[1]
    assert (second["data"]["reason"], second["data"]["size"]) == ("size", 1200)
    expire_now(service, final_url)
    await sweep(service)
    assert await refused_sent(service) == 2
    assert await expired_sent(service) == 0
    assert receiver.of_type("file.stored") == []
