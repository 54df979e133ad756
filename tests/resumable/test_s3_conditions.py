"""The lease's conditional writes against each S3 server, below the service.

Ceph RGW 16 refuses `If-Match: "<etag>"` (the quoted form every other server and
RFC 9110 use) with 412 even when the ETag matches, and accepts the bare one; the
uploads area learns that from the first refusal it can prove wrong (the record it
read back has exactly the ETag it matched) and sends If-Match bare from then on.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator

import pytest

from streamproxy.resumable.hashstate import ResumableMD5
from streamproxy.resumable.problems import Busy
from streamproxy.resumable.s3store import UploadArea
from streamproxy.resumable.state import Protocol, UploadRecord
from streamproxy.storage.s3 import S3Location, S3Storage

from ..s3support import BUCKET, S3Server

pytestmark = pytest.mark.s3_only


@pytest.fixture
async def storage(s3_server: S3Server) -> AsyncIterator[S3Storage]:
    storage = S3Storage(
        S3Location(BUCKET, f"cond-{uuid.uuid4().hex[:12]}/"), endpoint=s3_server.endpoint
    )
    await storage.start()
    try:
        yield storage
    finally:
        await storage.close()


def new_record() -> UploadRecord:
    return UploadRecord.create(
        protocol=Protocol.TUS,
        now=1_000_000.0,
        lifetime=86400.0,
        md5_state=ResumableMD5().to_bytes(),
        max_size=1000,
        length=10,
        metadata={"conversationId": "c1"},
    )


async def test_the_lease_is_taken_renewed_fenced_and_let_go(storage: S3Storage) -> None:
    one = UploadArea(storage, instance="one", clock=lambda: 1_000_000.0)
    two = UploadArea(storage, instance="two", clock=lambda: 1_000_000.0)
    record = new_record()
    await one.create(record)
    with pytest.raises(FileExistsError):  # If-None-Match: *
        await two.create(dataclasses.replace(record, metadata={"conversationId": "c2"}))
    lease = await one.lock(record.id)  # a conditional write on the ETag just read
    await lease.renew()  # and again on the ETag it wrote
    await lease.confirm()
    with pytest.raises(Busy):
        await two.lock(record.id)  # the lease runs: the other instance is refused
    stale = await two.read(record.id)
    with pytest.raises(Busy):  # a write on an ETag that moved on is refused (412)
        await lease.write(stale.renewed(lease.holder, lease.generation + 1, 1_000_000.0, 60))
    await lease.close()
    taken = await two.lock(record.id)  # let go: the other instance takes it
    assert taken.generation == lease.generation + 1
    await taken.close()
    assert (await one.read(record.id)).lease is None
