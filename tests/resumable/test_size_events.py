"""Resumable uploads refused for their size send `file.refused` (reason `size`) as
`POST /files` does for a body over the cap, once, and retention's later removal of such
an upload sends no `upload.expired` (its end was announced):

- a creation declaring a length over the cap (tus `Upload-Length`, the draft's): 413,
  nothing is created, the event carries the declared length;
- an upload of deferred length that takes a length or bytes over the cap: 413, and
  the upload fails for good (the file is bigger than the cap), its 413 replayed after;
- a draft append past the upload's length: 413, and the upload fails for good (the
  draft: the resource rejects it, and a client does not resume after a 4xx);
- a tus PATCH past a known length stays resumable: no event then.

Every test runs on local storage and on S3 (moto): the records live in either.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from streamproxy.resumable.store import UPLOAD_STORE

from ..conftest import Service, ServiceFactory, eventually, random_bytes
from ..webhooks import SECRET, Receiver, metric_value
from .test_sweep import sweep
from .test_tus_routes import create, head, patch

DRAFT8 = {"Upload-Draft-Interop-Version": "8"}
DRAFT_PATCH = {**DRAFT8, "Content-Type": "application/partial-upload"}
CAP = 1000


async def sent(service: Service, event_type: str) -> float:
    """Events of a type emitted (spooled before the answer) so far."""
    return await metric_value(service.url, "streamproxy_events_total", type=event_type)


async def expire_now(service: Service, url: str) -> None:
    """The upload's record says it expired (its lifetime run out, as days would)."""
    store = service.server.app[UPLOAD_STORE]
    assert store is not None
    async with store.hold(url.rsplit("/", 1)[1]) as held:
        await held.save(dataclasses.replace(held.record, expires=1.0))


async def expire_and_sweep(service: Service, *urls: str) -> None:
    for url in urls:
        await expire_now(service, url)
    await sweep(service)
    for url in urls:
        assert (await head(service, url))[0] == 404  # removed


def refusals(receiver: Receiver) -> list[dict[str, Any]]:
    return [event["data"] for event in receiver.of_type("file.refused")]


async def draft_create(service: Service, body: bytes, **headers: str) -> Any:
    async with service.session.post(
        service.url + "/files/uploads",
        params={"conversationId": "c7", "filename": "clip.bin"},
        data=body,
        headers={**DRAFT8, **headers},
    ) as answer:
        return answer.status, answer.headers.get("Location", "")


async def draft_patch(service: Service, url: str, offset: int, body: bytes) -> int:
    headers = {**DRAFT_PATCH, "Upload-Offset": str(offset), "Upload-Complete": "?0"}
    async with service.session.patch(url, data=body, headers=headers) as answer:
        return answer.status


async def test_a_creation_over_the_cap_sends_file_refused_once(
    receiver: Receiver, start_service: ServiceFactory
) -> None:
    """As `POST /files` with a declared size over the cap: nothing is created, so
    nothing is left for retention to announce."""
    service = await start_service(webhook=(receiver.url,), webhook_secret=SECRET, max_size=CAP)
    assert (await create(service, 5000))[0] == 413
    status, _ = await draft_create(
        service, b"", **{"Upload-Complete": "?0", "Upload-Length": "6000"}
    )
    assert status == 413
    assert await sent(service, "file.refused") == 2
    await eventually(lambda: len(refusals(receiver)) == 2)
    by_size = {data["size"]: data for data in refusals(receiver)}
    assert set(by_size) == {5000, 6000}
    for data in by_size.values():
        assert (data["reason"], data["name"], data["conversationId"]) == ("size", "clip.bin", "c7")
    await sweep(service)
    assert await sent(service, "upload.expired") == 0


async def test_a_deferred_length_upload_over_the_cap_fails_with_file_refused_once(
    receiver: Receiver, start_service: ServiceFactory
) -> None:
    """Bytes past the cap while the length is deferred, and a length declared over it:
    the upload can never be stored, so it fails for good (413 replayed, no event again)
    and its removal at expiry sends no upload.expired."""
    service = await start_service(webhook=(receiver.url,), webhook_secret=SECRET, max_size=CAP)
    _, grown, _ = await create(service, None)
    assert (await patch(service, grown, 0, random_bytes(600)))[0] == 204
    assert (await patch(service, grown, 600, random_bytes(600)))[0] == 413
    assert (await patch(service, grown, 600, random_bytes(100)))[0] == 413  # for good
    _, declared, _ = await create(service, None)
    status, _, _ = await patch(service, declared, 0, b"x" * 10, **{"Upload-Length": "5000"})
    assert status == 413
    assert (await patch(service, declared, 0, b"x" * 10, **{"Upload-Length": "900"}))[0] == 413
    assert await sent(service, "file.refused") == 2
    await eventually(lambda: len(refusals(receiver)) == 2)
    first, second = refusals(receiver)
    assert (first["reason"], first["size"], first["name"]) == ("size", 1200, "clip.bin")
    assert (second["reason"], second["size"], second["conversationId"]) == ("size", 5000, "c7")

    _, unfinished, _ = await create(service, None)  # expires unfinished: announced so
    await expire_and_sweep(service, grown, declared, unfinished)
    assert await sent(service, "upload.expired") == 1
    assert await sent(service, "file.refused") == 2
    await eventually(lambda: len(receiver.of_type("upload.expired")) == 1)


async def test_a_draft_append_past_the_length_fails_the_upload_with_file_refused_once(
    receiver: Receiver, start_service: ServiceFactory
) -> None:
    """The draft's 413 "bytes past the length" fails the upload for good (the resource
    rejects the append, the client does not resume after a 4xx): `file.refused` then,
    with the bytes it would have held; nothing again, nor at its removal."""
    service = await start_service(webhook=(receiver.url,), webhook_secret=SECRET, max_size=CAP)
    status, url = await draft_create(
        service, b"a" * 50, **{"Upload-Complete": "?0", "Upload-Length": "100"}
    )
    assert status == 201
    assert await draft_patch(service, url, 50, b"b" * 80) == 413
    assert await draft_patch(service, url, 50, b"b" * 50) == 413  # the right bytes: too late
    assert await sent(service, "file.refused") == 1
    await eventually(lambda: len(refusals(receiver)) == 1)
    [refused] = refusals(receiver)
    assert (refused["reason"], refused["size"], refused["name"]) == ("size", 130, "clip.bin")
    await expire_and_sweep(service, url)
    assert await sent(service, "upload.expired") == 0
    assert await sent(service, "file.refused") == 1


async def test_a_tus_patch_past_the_length_sends_nothing_and_the_upload_goes_on(
    receiver: Receiver, start_service: ServiceFactory
) -> None:
    """tus leaves the upload as it was after bytes past its (known, allowed) length:
    the client may send the right ones, so that 413 is not the upload's end."""
    service = await start_service(webhook=(receiver.url,), webhook_secret=SECRET, max_size=CAP)
    _, url, _ = await create(service, 100)
    assert (await patch(service, url, 0, b"y" * 101))[0] == 413
    assert (await patch(service, url, 0, b"y" * 100))[0] == 204
    await eventually(lambda: len(receiver.of_type("file.stored")) == 1)
    assert await sent(service, "file.refused") == 0
