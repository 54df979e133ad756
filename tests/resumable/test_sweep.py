"""The expiry sweep of resumable uploads keeps going past an upload it cannot read, and
removes the markers that races with a removal left behind."""

from __future__ import annotations

import pytest

from streamproxy.resumable.localstore import UploadArea
from streamproxy.resumable.store import UPLOAD_STORE
from streamproxy.runtime.metrics import METRICS
from streamproxy.runtime.retention import sweep_uploads

from ..conftest import Service, ServiceFactory, eventually
from ..webhooks import metric_value
from .test_tus_routes import TUS, create, patch
from .uploads import uploads_left


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
    await sweep_uploads(store, app[METRICS])


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
