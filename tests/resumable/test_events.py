"""Resumable uploads send the events `POST /files` sends: file.stored at completion,
file.refused for a type refused at completion, and upload.expired when one is swept."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from streamproxy.intake.mediatypes import parse_type_rule

from ..conftest import ServiceFactory, eventually, md5, random_bytes
from ..webhooks import SECRET, Receiver
from .test_tus_routes import create, patch

pytestmark = pytest.mark.local_only  # the routes' storage-neutral part; S3 runs the same code


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    hook = Receiver()
    await hook.start()
    yield hook
    await hook.stop()


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
