"""Webhook events (API.md, "Events"): a real receiver on loopback checks every event's
body and signature; delivery survives a receiver that is down, a server SIGKILL, a
receiver that hangs (uploads go on) and redirects (never followed)."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from streamproxy.cli import build_parser
from streamproxy.events import EVENTS, SIGNATURE_HEADER, Schedule, emit, file_data, sign
from streamproxy.events.model import new_event
from streamproxy.fetch.safety import parse_allow_rule
from streamproxy.intake.mediatypes import parse_type_rule
from streamproxy.intake.scan import ClamdAddress
from streamproxy.runtime.settings import Settings, SettingsError, load_settings
from streamproxy.storage.base import STORAGE

from .conftest import (
    ServerProcess,
    ServiceFactory,
    eventually,
    file_part,
    http_post_head,
    multipart_body,
    random_bytes,
    raw_request,
)
from .conversations import AUTH, KEY, upload_to
from .s3support import BUCKET, S3Store
from .test_scan import EICAR, Clamd
from .test_scan import clamd as clamd  # the fixture: a real clamd with the EICAR signature
from .webhooks import (
    PNG,
    SECRET,
    Receiver,
    chunked_upload,
    metric_value,
    pending_records,
    quick_retries,
    tiny_queue,
    until_metric,
)

pytestmark = pytest.mark.every_s3_server  # the event spool on S3 is conditional writes and listing


@pytest.fixture
async def dead_receiver() -> AsyncIterator[Receiver]:
    """A receiver whose port answers nothing until the test starts it."""
    hook = Receiver()
    yield hook
    await hook.stop()


async def test_stored_and_refused_events_are_signed(
    receiver: Receiver, start_service: ServiceFactory
) -> None:
    service = await start_service(
        webhook=(receiver.url,),
        webhook_secret=SECRET,
        max_size=50_000,
        deny_type=(parse_type_rule("image/png"),),
    )
    stored = await service.upload_json(random_bytes(1000), filename="a.bin", conversation_id="c1")
    refused_type = await service.upload(PNG, filename="p.png", conversation_id="c1")
    assert refused_type.status == 415
    body = multipart_body("b", [file_part(random_bytes(500_000))])
    head = http_post_head("/files?conversationId=c2", "b", len(body))
    answer = await raw_request(service.port, head, [body])
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    async with service.session.post(
        service.url + "/files?conversationId=c3",
        data=chunked_upload(random_bytes(60_000), "big.bin", "c3"),
    ) as response:
        assert response.status == 413

    await eventually(lambda: len(receiver.events) == 4)
    assert receiver.rejected == 0
    [event] = receiver.of_type("file.stored")
    assert event["id"].startswith("evt_")
    assert event["created"].endswith("Z")
    assert event["data"] == {
        "name": stored["name"],
        "type": stored["type"],
        "size": 1000,
        "etag": stored["etag"],
        "url": stored["url"],
        "conversationId": "c1",
        "channel": None,
    }
    refusals = {
        event["data"]["conversationId"]: event["data"] for event in receiver.of_type("file.refused")
    }
    assert refusals["c1"] == {
        "name": "p.png",
        "type": "image/png",
        "size": len(PNG),
        "etag": None,
        "url": None,
        "conversationId": "c1",
        "channel": None,
        "reason": "type",
    }
    # Declared over the cap: refused before a byte of the body was read.
    assert refusals["c2"]["reason"] == "size"
    assert refusals["c2"]["name"] is None
    # Found over the cap while streaming: the pump refuses it, knowing its name.
    assert refusals["c3"]["reason"] == "size"
    assert refusals["c3"]["name"] == "big.bin"
    assert refusals["c3"]["size"] <= 50_000
    await eventually(lambda: pending_records(service) == [])
    assert (
        await metric_value(service.url, "streamproxy_event_deliveries_total", outcome="delivered")
        == 4
    )
    assert await metric_value(service.url, "streamproxy_events_total", type="file.refused") == 3


async def test_url_import_events_carry_the_channel(
    receiver: Receiver, start_service: ServiceFactory
) -> None:
    """The import goes through the same pump: stored and refused both send events."""
    service = await start_service(
        webhook=(receiver.url,),
        webhook_secret=SECRET,
        fetch_allow=(parse_allow_rule("127.0.0.1"),),
        allow_type=(parse_type_rule("image/*"),),
    )
    source = f"http://127.0.0.1:{receiver.port}/source"
    job = {"channel": "whatsapp", "conversationId": "u1"}
    async with service.session.post(
        service.url + "/files/from-url", json={"sourceUrl": source + "/ok.png", **job}
    ) as response:
        assert response.status == 200
        stored = await response.json()
    async with service.session.post(
        service.url + "/files/from-url",
        json={"sourceUrl": source + "/no.txt", **job},
    ) as response:
        assert response.status == 415
    await eventually(lambda: len(receiver.events) == 2)
    [event] = receiver.of_type("file.stored")
    assert event["data"]["name"] == stored["name"]
    assert (event["data"]["channel"], event["data"]["url"]) == ("whatsapp", stored["url"])
    [refused] = receiver.of_type("file.refused")
    assert refused["data"]["reason"] == "type"
    assert (refused["data"]["conversationId"], refused["data"]["channel"]) == ("u1", "whatsapp")


async def test_receiver_rejects_a_tampered_event(receiver: Receiver) -> None:
    """What the signature is for: the receiver's check fails for changed bytes,
    another key or a replayed old signature, and passes for the real thing."""
    event = new_event("file.stored", {"name": "1_a.bin", "size": 3})
    good = sign(event.body, SECRET)
    tampered = event.body.replace(b'"size":3', b'"size":4')
    stale = sign(event.body, SECRET, timestamp=1_000_000_000)
    other_key = sign(event.body, "another-secret-of-16+")
    hook = f"http://127.0.0.1:{receiver.port}/hook"
    async with aiohttp.ClientSession() as session:
        for body, header, status in (
            (event.body, good, 204),
            (tampered, good, 400),
            (event.body, stale, 400),
            (event.body, other_key, 400),
            (event.body, "", 400),
        ):
            async with session.post(hook, data=body, headers={SIGNATURE_HEADER: header}) as answer:
                assert answer.status == status, header
    assert receiver.rejected == 4
    assert [e["id"] for e in receiver.events] == [event.id]


async def test_virus_refusal_event(
    receiver: Receiver, start_service: ServiceFactory, clamd: Clamd
) -> None:
    service = await start_service(
        webhook=(receiver.url,),
        webhook_secret=SECRET,
        clamd=ClamdAddress(path=str(clamd.socket)),
    )
    response = await service.upload(EICAR, filename="eicar.com", conversation_id="v1")
    assert response.status == 422
    await eventually(lambda: len(receiver.events) == 1)
    data = receiver.events[0]["data"]
    assert receiver.events[0]["type"] == "file.refused"
    assert (data["reason"], data["name"], data["size"], data["conversationId"]) == (
        "virus",
        "eicar.com",
        len(EICAR),
        "v1",
    )


async def test_emit_for_a_deletion(receiver: Receiver, start_service: ServiceFactory) -> None:
    """The API the deletion and expiry routes call: `await emit(app, type, data)`."""
    service = await start_service(webhook=(receiver.url,), webhook_secret=SECRET)
    stored = await service.upload_json(b"to be erased", filename="e.txt", conversation_id="d1")
    app = service.server.app
    meta = await app[STORAGE].stat(stored["name"])
    event = await emit(app, "file.deleted", file_data(meta))
    assert event is not None
    await eventually(lambda: event.id in receiver.ids())
    [deleted] = receiver.of_type("file.deleted")
    assert deleted["data"] == {
        "name": stored["name"],
        "type": stored["type"],
        "size": len(b"to be erased"),
        "etag": stored["etag"],
        "url": None,
        "conversationId": "d1",
        "channel": None,
    }
    expired = await emit(app, "upload.expired", {"size": 10, "conversationId": "d1"})
    assert expired is not None
    await eventually(lambda: expired.id in receiver.ids())
    with pytest.raises(ValueError, match="unknown event type"):
        await emit(app, "file.exploded", {})
    with pytest.raises(ValueError, match="reason"):
        await emit(app, "file.refused", {"reason": "boredom"})
    with pytest.raises(ValueError, match="unknown event data keys"):
        await emit(app, "file.deleted", {"nmae": "typo"})


async def test_deletions_send_file_deleted(
    receiver: Receiver, start_service: ServiceFactory
) -> None:
    """Each file that DELETE /files removes, alone or with its conversation, is announced."""
    service = await start_service(webhook=(receiver.url,), webhook_secret=SECRET, api_key=(KEY,))
    session, url = service.session, service.url
    alone = await upload_to(session, url, "d1", "alone.txt", b"alone")
    erased = [await upload_to(session, url, "d2", f"{n}.txt", b"x" * n) for n in (1, 2)]
    kept = await upload_to(session, url, "d2_b", "kept.txt", b"kept")
    async with session.delete(
        url + "/files", params={"filename": alone["name"]}, headers=AUTH
    ) as r:
        assert r.status == 204
    async with session.delete(url + "/files", params={"conversationId": "d2"}, headers=AUTH) as r:
        assert (r.status, await r.json()) == (200, {"deleted": 2})
    await eventually(lambda: len(receiver.of_type("file.deleted")) >= 3)
    announced = {event["data"]["name"]: event["data"] for event in receiver.of_type("file.deleted")}
    assert set(announced) == {alone["name"], *(stored["name"] for stored in erased)}
    assert kept["name"] not in announced
    for stored in (alone, *erased):
        data = announced[stored["name"]]
        assert (data["etag"], data["size"], data["type"]) == (
            stored["etag"],
            stored["size"],
            stored["type"],
        )
    assert announced[erased[0]["name"]]["conversationId"] == "d2"


async def test_without_webhooks_nothing_is_spooled(start_service: ServiceFactory) -> None:
    service = await start_service()
    await service.upload_json(b"quiet")
    assert await emit(service.server.app, "file.deleted", {"name": "x"}) is None
    assert pending_records(service) == []


async def test_receiver_down_then_up_gets_every_event(
    dead_receiver: Receiver, start_service: ServiceFactory
) -> None:
    service = await start_service(
        webhook=(dead_receiver.url,), webhook_secret=SECRET, prepare=tiny_queue
    )
    names = {(await service.upload_json(b"%d" % i, filename=f"f{i}.txt"))["name"] for i in range(5)}
    assert len(pending_records(service)) == 5
    # Every event was tried, and retried, while the port was dead.
    await until_metric(service.url, "streamproxy_event_deliveries_total", 10, outcome="failed")
    await dead_receiver.start()
    await eventually(lambda: {e["data"]["name"] for e in dead_receiver.events} == names, 20)
    assert len(dead_receiver.ids()) == 5
    await eventually(lambda: pending_records(service) == [])


async def test_redirect_is_not_followed(receiver: Receiver, start_service: ServiceFactory) -> None:
    receiver.mode = "redirect"
    service = await start_service(
        webhook=(receiver.url,), webhook_secret=SECRET, prepare=quick_retries
    )
    await service.upload_json(b"hello")
    await until_metric(service.url, "streamproxy_event_deliveries_total", 3, outcome="failed")
    assert receiver.redirect_followed == 0
    assert len(pending_records(service)) == 1  # kept: a redirect is not a delivery
    receiver.mode = "ok"
    await eventually(lambda: len(receiver.events) == 1)
    assert receiver.redirect_followed == 0


async def test_hanging_receiver_does_not_slow_uploads(
    receiver: Receiver, start_service: ServiceFactory
) -> None:
    receiver.mode = "hang"
    service = await start_service(
        webhook=(receiver.url,), webhook_secret=SECRET, prepare=tiny_queue
    )
    bus = service.server.app[EVENTS]
    uploads = 3 * bus.concurrency  # more than the slots and the queue: most spill to the spool
    names = set()
    for i in range(uploads):
        stored = await service.upload_json(random_bytes(10_000, seed=i), filename=f"h{i}.bin")
        names.add(stored["name"])
    # Every upload was answered while the receiver held every delivery it was sent.
    assert receiver.events == []
    await eventually(lambda: receiver.held == bus.concurrency)
    assert len(pending_records(service)) == uploads
    # Let go: the held ones and those that spilled past the queue all arrive.
    receiver.mode = "ok"
    receiver.release.set()
    await eventually(lambda: {e["data"]["name"] for e in receiver.events} == names, 20)
    await eventually(lambda: pending_records(service) == [])


async def test_two_processes_never_deliver_one_event_at_once(
    dead_receiver: Receiver, start_service: ServiceFactory, tmp_path: Path
) -> None:
    """Two services on one storage (as `--workers 2`, or two instances on a bucket)
    scan one spool: a record is sent by whoever holds its claim, one at a time."""
    shared = tmp_path / "shared"
    first = await start_service(
        root=shared, webhook=(dead_receiver.url,), webhook_secret=SECRET, prepare=quick_retries
    )
    second = await start_service(
        root=shared, webhook=(dead_receiver.url,), webhook_secret=SECRET, prepare=quick_retries
    )
    for i in range(10):
        await (first if i % 2 else second).upload_json(b"x%d" % i, filename=f"w{i}.txt")
    await asyncio.sleep(0.5)  # both have failed attempts behind them and scan the spool
    await dead_receiver.start()
    await eventually(lambda: len(dead_receiver.ids()) == 10, 20)
    await eventually(lambda: pending_records(first) == [])
    assert dead_receiver.most_at_once == 1


async def test_no_event_lost_across_sigkill(
    dead_receiver: Receiver, spawn: Callable[..., Any], tmp_path: Path
) -> None:
    """Local storage (the spool's S3 side runs in the tests above, in process)."""
    storage = tmp_path / "data"
    args = ("--storage", str(storage), "--webhook", dead_receiver.url, "--webhook-secret", SECRET)
    server: ServerProcess = await spawn(*args)
    names = set()
    async with aiohttp.ClientSession() as session:
        for i in range(6):
            form = aiohttp.FormData()
            form.add_field("conversationId", "k")
            form.add_field("file", b"kill %d" % i, filename=f"k{i}.txt")
            async with session.post(server.url + "/files", data=form) as response:
                assert response.status == 200
                names.add((await response.json())["name"])
    os.kill(server.pid, signal.SIGKILL)  # the receiver has not had one of them
    await server.process.wait()
    assert len(list((storage / ".events").glob("*.json"))) == 6
    await dead_receiver.start()
    await spawn(*args)
    await eventually(lambda: {e["data"]["name"] for e in dead_receiver.events} == names, 30)
    await eventually(lambda: list((storage / ".events").glob("*.json")) == [])


def test_retry_schedule() -> None:
    schedule = Schedule(first_retry=5.0, give_up_after=86400.0)
    created = 1000.0
    assert schedule.next_attempt(created, 0.0) == created
    assert schedule.next_attempt(created, created) == created + 5
    assert schedule.next_attempt(created, created + 5) == created + 15
    assert schedule.next_attempt(created, created + 16) == created + 35
    slots, attempted = [], 0.0
    while (slot := schedule.next_attempt(created, attempted)) is not None:
        slots.append(slot - created)
        attempted = slot
    assert slots[:5] == [0, 5, 15, 35, 75]
    assert slots[-1] <= 86400 < slots[-1] * 2 + 5
    assert len(slots) == 15


def test_webhook_settings() -> None:
    def parse(*argv: str, environ: dict[str, str] | None = None) -> Settings:
        return load_settings(build_parser().parse_args(["serve", *argv]), environ or {})

    settings = parse(
        "--webhook", "http://10.0.0.5:8000/hook", "--webhook", "https://a.example/h?t=1"
    )
    assert settings.webhook == ("http://10.0.0.5:8000/hook", "https://a.example/h?t=1")
    assert settings.webhook_secret is None
    from_env = parse(
        environ={
            "STREAMPROXY_WEBHOOK": "http://a.example/1,http://b.example/2",
            "STREAMPROXY_WEBHOOK_SECRET": SECRET,
        }
    )
    assert from_env.webhook == ("http://a.example/1", "http://b.example/2")
    assert from_env.webhook_secret == SECRET
    with pytest.raises(SettingsError, match="--webhook: not an http"):
        parse("--webhook", "ftp://a.example/hook")
    with pytest.raises(SettingsError, match="--webhook-secret: a webhook secret needs at least 16"):
        parse("--webhook-secret", "short")


@pytest.mark.s3_only
async def test_s3_claim_of_a_dead_holder_is_broken_after_its_lease(
    dead_receiver: Receiver, start_service: ServiceFactory
) -> None:
    """Instances on one bucket claim a record with a lock object; one left by an
    instance that died is respected for its lease, then broken."""
    from botocore.exceptions import ClientError

    from streamproxy.events.s3spool import S3Spool

    service = await start_service(
        webhook=(dead_receiver.url,), webhook_secret=SECRET, prepare=quick_retries
    )
    store = service.store
    assert isinstance(store, S3Store)
    spool = service.server.app[EVENTS].spool
    assert isinstance(spool, S3Spool)
    spool.lease = 3600.0
    await service.upload_json(b"locked out")
    [record] = pending_records(service)
    lock = record.removesuffix(".json") + ".lock"
    for _ in range(100):  # take the lock as soon as the service is not holding it
        try:
            store.moto.client.put_object(Bucket=BUCKET, Key=lock, Body=b"", IfNoneMatch="*")
            break
        except ClientError:
            await asyncio.sleep(0.05)
    else:
        raise AssertionError("the service never let go of its claim")
    await dead_receiver.start()
    await asyncio.sleep(1.0)  # several scans and retry times pass
    assert dead_receiver.events == []  # the holder's lease runs: nobody else sends it
    spool.lease = 0.0  # now the lease has run out
    await eventually(lambda: len(dead_receiver.events) == 1)
    await eventually(lambda: store._keys(store.prefix + ".events/") == [])
