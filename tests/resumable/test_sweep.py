"""The expiry sweep of resumable uploads keeps going past an upload it cannot read, and
removes what races with a removal left behind: markers, and on S3 the bytes of a writer
the removal fenced."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from streamproxy.events import EVENTS
from streamproxy.resumable.localstore import STALE_REMOVAL, UploadArea
from streamproxy.resumable.store import UPLOAD_STORE
from streamproxy.runtime.metrics import METRICS
from streamproxy.runtime.retention import sweep_uploads

from ..conftest import Service, ServiceFactory, eventually, random_bytes
from ..faultproxy import ALWAYS, Answer, FaultProxy, Hold, Match
from ..s3support import BUCKET, S3Server, S3Store, until
from ..webhooks import metric_value
from .test_concat_unfinished import final, partial
from .test_tus_routes import TUS, create, patch
from .uploads import upload_objects, uploads_left

MiB = 1024 * 1024


@pytest.mark.local_only  # the record is corrupted through the directory
async def test_an_unreadable_record_is_removed_and_the_sweep_goes_on(
    start_service: ServiceFactory,
) -> None:
    service = await start_service(upload_expiry=2.0)
    locations = []
    for _ in range(3):
        status, url, _ = await create(service, 100)
        assert status == 201
        await patch(service, url, 0, b"z" * 10)
        locations.append(url.rsplit("/", 1)[1])
    broken = sorted(locations)[0]  # the first the sweep meets
    (service.root / ".uploads" / broken / "info").write_bytes(b"{not a record")
    await eventually(lambda: broken not in uploads_left(service))
    await eventually(lambda: uploads_left(service) == [])  # the others, once expired
    assert await metric_value(service.url, "streamproxy_retention_failures_total") == 0


async def sweep(service: Service) -> None:
    """One pass of retention's upload sweep, as its task runs it (without its wait)."""
    app = service.server.app
    store = app[UPLOAD_STORE]
    assert store is not None
    await sweep_uploads(store, app[METRICS], app[EVENTS])


@pytest.mark.local_only  # the markers are made through the directory
async def test_stop_markers_of_removed_uploads_are_swept_and_live_ones_stay(
    service: Service,
) -> None:
    """A draft request asks a holder in another worker to stop (`.uploads/.stop/<id>`)
    just as the upload is removed, and dies before it withdraws its marker: the sweep
    removes that marker; one of an upload still there stays (its asker is waiting)."""
    ids = []
    for _ in range(2):
        status, url, _ = await create(service, 100)
        assert status == 201
        ids.append(url.rsplit("/", 1)[1])
    removed, live = ids
    another_worker = UploadArea(service.root)
    another_worker.ask_to_stop(removed)
    another_worker.ask_to_stop(live)
    async with service.session.delete(f"{service.url}/files/uploads/{removed}", headers=TUS) as a:
        assert a.status == 204
    markers = service.root / ".uploads" / ".stop"
    assert sorted(p.name for p in markers.iterdir()) == [live]  # went with its upload
    (markers / removed).touch()  # the racing asker's touch, just after the removal
    await sweep(service)
    assert sorted(p.name for p in markers.iterdir()) == [live]
    assert uploads_left(service) == [live]
    assert (
        await metric_value(service.url, "streamproxy_retention_deleted_total", what="marker") == 1
    )


@pytest.mark.local_only  # the leftover is made through the directory
async def test_a_removed_part_s_directory_a_link_landed_in_is_swept_once_old(
    service: Service,
) -> None:
    """A final upload links a part just as the part is removed: the link's path was
    looked up before the removal renamed the directory to `.new-<id>-removed`, and the
    link lands there after the removal's delete listed it, so the directory stays. The
    sweep deletes it once untouched for STALE_REMOVAL seconds; a younger one (a removal
    may still be deleting it) and a creation in progress stay."""
    part = await partial(service, None)
    status, headers, _ = await final(service, part)
    assert status == 201
    final_id = headers["Location"].rsplit("/", 1)[1]
    async with service.session.delete(part, headers=TUS) as answer:
        assert answer.status == 204
    uploads = service.root / ".uploads"
    part_id = part.rsplit("/", 1)[1]
    left = uploads / f".new-{part_id}-removed"
    left.mkdir()
    (left / f"final.{final_id}").touch()  # the racing link, after the removal's rmtree
    long_ago = time.time() - STALE_REMOVAL - 5
    os.utime(left, (long_ago, long_ago))
    young = uploads / f".new-{'a' * len(part_id)}-removed"
    creating = uploads / f".new-{'b' * len(part_id)}"
    for directory in (young, creating):
        directory.mkdir()
        (directory / "info").touch()
    os.utime(creating, (long_ago, long_ago))  # start-up's to judge, not the sweep's

    await sweep(service)
    assert not left.exists()
    assert young.exists() and creating.exists()
    assert uploads_left(service) == sorted([young.name, creating.name, final_id])
    value = await metric_value(service.url, "streamproxy_retention_deleted_total", what="leftover")
    assert value == 1


async def status_of(service: Service, method: str, url: str, headers: dict[str, str]) -> int:
    async with service.session.request(method, url, headers=headers) as answer:
        return answer.status


@pytest.mark.s3_only  # the race is made at the S3 server's door (the fault proxy)
async def test_on_s3_markers_a_removal_raced_past_are_swept_and_live_ones_stay(
    start_service: ServiceFactory, s3_server: S3Server
) -> None:
    """A part's removal has listed and deleted its prefix and is about to delete its info
    (held at the proxy): meanwhile a final upload links the part (the info is still
    there, so the link stands) and a draft HEAD asks the removal, the part's holder, to
    stop (S3 fails the HEAD's withdrawal of its marker). Once the info goes both markers
    are orphans; the sweep removes them, and keeps a live part's link and the stop
    marker of an upload that still exists."""
    proxy = await FaultProxy(s3_server.port).start()
    try:
        service = await start_service(s3_endpoint=proxy.endpoint)
        store = service.store
        assert isinstance(store, S3Store)
        area = f"{store.prefix}.uploads/"

        def keys(upload_url: str, leaf: str = "") -> list[str]:
            prefix = f"{area}{upload_url.rsplit('/', 1)[1]}/"
            return sorted(key.removeprefix(prefix) for key in store._keys(prefix + leaf))

        part, live_part = await partial(service, None), await partial(service, None)
        status, _, _ = await final(service, live_part)
        assert status == 201 and [k[:6] for k in keys(live_part, "final.")] == ["final."]
        live = (await create(service, 100))[1]
        live_stop = f"{area}{live.rsplit('/', 1)[1]}/stop.7"  # an earlier holder's, asker gone
        s3_server.client.put_object(Bucket="streamproxy-test", Key=live_stop, Body=b"")

        part_id = part.rsplit("/", 1)[1]
        hold = Hold()
        proxy.fail(Match("DELETE", path_end=f"{part_id}/info"), hold)
        stop_delete = Match("DELETE", path_has=f"{part_id}/stop.")
        proxy.fail(stop_delete, Answer(500, "InternalError"), times=ALWAYS)
        removing = asyncio.ensure_future(status_of(service, "DELETE", part, TUS))
        await hold.reached.wait()  # listed and deleted all but the info
        status, _, _ = await final(service, part)  # links the part: its info is there
        assert status == 201
        draft = {"Upload-Draft-Interop-Version": "8"}
        asking = asyncio.ensure_future(status_of(service, "HEAD", part, draft))
        await until(lambda: keys(part, "stop.") != [])  # the HEAD asked the holder to stop
        hold.release.set()
        assert await removing == 204
        assert await asking == 404  # the upload went while it waited
        orphans = keys(part)
        assert [leaf.partition(".")[0] for leaf in orphans] == ["final", "stop"]  # no info

        proxy.restore()  # S3 answers deletes again
        await sweep(service)
        assert keys(part) == []
        assert [k[:6] for k in keys(live_part)] == ["final.", "info"]  # a live link stays
        assert "stop.7" in keys(live)  # a marker beside an info stays
        value = await metric_value(
            service.url, "streamproxy_retention_deleted_total", what="marker"
        )
        assert value == 2
    finally:
        await proxy.close()


@pytest.mark.s3_only  # the race is made at the S3 server's door (the fault proxy)
async def test_on_s3_bytes_a_fenced_writer_left_are_swept_and_live_ones_stay(
    start_service: ServiceFactory, s3_server: S3Server
) -> None:
    """An upload's removal has aborted its multipart upload and deleted its objects, and
    is about to delete its info (held at the proxy): meanwhile a writer it fenced lands
    what it had in flight, a new multipart upload of `data` with a part, and a tail.
    Once the info goes they lie beside no info; the sweep aborts and deletes them, and
    a live upload's multipart upload, tail and info stay."""
    proxy = await FaultProxy(s3_server.port).start()
    try:
        service = await start_service(
            s3_endpoint=proxy.endpoint, max_size=40 * MiB, s3_part_size=5 * MiB
        )
        store = service.store
        assert isinstance(store, S3Store)
        area = f"{store.prefix}.uploads/"
        live = (await create(service, 7 * MiB))[1]
        assert (await patch(service, live, 0, random_bytes(6 * MiB)))[0] == 204
        live_id = live.rsplit("/", 1)[1]
        live_objects = [key for key in upload_objects(service) if key.startswith(live_id)]
        assert f"{live_id}/data (multipart)" in live_objects  # a part, and a tail
        gone = (await create(service, 100))[1]
        assert (await patch(service, gone, 0, b"z" * 10))[0] == 204
        gone_id = gone.rsplit("/", 1)[1]

        hold = Hold()
        proxy.fail(Match("DELETE", path_end=f"{gone_id}/info"), hold)
        removing = asyncio.ensure_future(status_of(service, "DELETE", gone, TUS))
        await hold.reached.wait()  # listed, aborted and deleted all but the info
        client, key = s3_server.client, f"{area}{gone_id}/data"
        fenced = client.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
        client.upload_part(Bucket=BUCKET, Key=key, UploadId=fenced, PartNumber=3, Body=b"p" * 1000)
        client.put_object(Bucket=BUCKET, Key=f"{area}{gone_id}/tail.2.10", Body=b"t" * 5)
        hold.release.set()
        assert await removing == 204
        assert [key for key in upload_objects(service) if key.startswith(gone_id)] == [
            f"{gone_id}/data (multipart)",
            f"{gone_id}/tail.2.10",
        ]

        await sweep(service)
        assert uploads_left(service) == [live_id]
        assert upload_objects(service) == live_objects
        value = await metric_value(
            service.url, "streamproxy_retention_deleted_total", what="leftover"
        )
        assert value == 2
        await sweep(service)  # nothing more to find
        assert upload_objects(service) == live_objects
    finally:
        await proxy.close()
