"""The expiry sweep of resumable uploads keeps going past an upload it cannot read."""

from __future__ import annotations

import pytest

from ..conftest import ServiceFactory, eventually
from ..webhooks import metric_value
from .test_tus_routes import create, patch
from .uploads import uploads_left

pytestmark = pytest.mark.local_only  # the record is corrupted through the directory


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
