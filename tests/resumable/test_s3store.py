"""The S3 uploads area on each S3 server (moto, RGW): two instances (two S3 client sessions) on one
bucket, leases that expire and are taken over, fencing, parts and the tail, completion
into a staged object that the commit publishes, removal and expiry."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from streamproxy.resumable import problems
from streamproxy.resumable.hashstate import ResumableMD5
from streamproxy.resumable.s3adapter import S3UploadStore
from streamproxy.resumable.s3store import UploadArea, UploadLease
from streamproxy.resumable.state import HEAD_SIZE, CorruptRecord, Protocol, Status, UploadRecord
from streamproxy.storage.base import FileInfo, StorageError, now_utc
from streamproxy.storage.s3 import S3Location, S3Storage
from streamproxy.storage.s3upload import publish_staged

from ..conftest import random_bytes
from ..faultproxy import FaultProxy
from ..s3support import BUCKET, S3Server, S3Store, until

pytestmark = pytest.mark.s3_only

MiB = 1024 * 1024
PART = 5 * MiB
CAP = 64 * MiB
DAY = 86400.0
TTL = 60.0
T0 = 1_000_000.0


class Clock:
    """One instance's clock: the tests move it, S3 stays real."""

    def __init__(self, now: float = T0) -> None:
        self.now = now
        self.tick = 0.0
        """Added at each reading, for time that passes between two steps."""

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


@dataclass
class Instance:
    storage: S3Storage
    area: UploadArea
    clock: Clock


@dataclass
class Bucket:
    one: Instance
    two: Instance
    store: S3Store

    def keys(self, upload_id: str) -> list[str]:
        return self.store._keys(f"{self.store.prefix}.uploads/{upload_id}/")

    def uploads(self) -> list[str]:
        return self.store.multipart_uploads()

    def parts(self, upload_id: str) -> list[int]:
        """Part numbers in S3 of the upload's multipart uploads."""
        client, key = self.store.moto.client, f"{self.store.prefix}.uploads/{upload_id}/data"
        answer = client.list_multipart_uploads(Bucket=BUCKET, Prefix=key)
        numbers = []
        for upload in answer.get("Uploads", []):
            listed = client.list_parts(Bucket=BUCKET, Key=key, UploadId=upload["UploadId"])
            numbers += [part["PartNumber"] for part in listed.get("Parts", [])]
        return numbers


@pytest.fixture
async def bucket(s3_server: S3Server) -> AsyncIterator[Bucket]:
    prefix = f"rs3-{uuid.uuid4().hex[:12]}/"
    instances = []
    for name in ("one", "two"):
        storage = S3Storage(S3Location(BUCKET, prefix), endpoint=s3_server.endpoint, part_size=PART)
        await storage.start()
        clock = Clock()
        instances.append(
            Instance(storage, UploadArea(storage, ttl=TTL, instance=name, clock=clock), clock)
        )
    try:
        yield Bucket(instances[0], instances[1], S3Store(s3_server, prefix))
    finally:
        for instance in instances:
            await instance.storage.close()


async def new_upload(area: UploadArea, length: int | None) -> UploadRecord:
    record = UploadRecord.create(
        protocol=Protocol.TUS,
        now=area.clock(),
        lifetime=DAY,
        md5_state=ResumableMD5().to_bytes(),
        max_size=CAP,
        length=length,
        metadata={"conversationId": "c1"},
    )
    await area.create(record)
    return record


async def write_and_acknowledge(
    lease: UploadLease, data: bytes, piece: int = 256 * 1024
) -> UploadRecord:
    """One request's append as the routes will do it: check, write, hash, acknowledge."""
    area = lease._area
    record = lease.record.check_append(lease.record.offset, area.clock(), max_size=CAP)
    md5 = ResumableMD5.from_bytes(record.md5_state)
    async with await area.appender(lease, record) as appender:
        for start in range(0, len(data), piece):
            await appender.write(data[start : start + piece])
            md5.update(data[start : start + piece])
        done = record.appended(
            len(data), data[:HEAD_SIZE], md5.to_bytes(), now=area.clock(), lifetime=DAY
        )
        return await appender.acknowledge(done)


async def append(area: UploadArea, upload_id: str, data: bytes) -> UploadRecord:
    async with area.locked(upload_id) as lease:
        return await write_and_acknowledge(lease, data)


async def complete(area: UploadArea, upload_id: str) -> tuple[UploadRecord, bytes]:
    """Finish and stage; the staged object's bytes (read as the scanner would)."""
    async with area.locked(upload_id) as lease:
        await area.complete(lease, lease.record.finish())
        record = lease.record
    staged = b"".join([piece async for piece in area.chunks(record)])
    return record, staged


def md5_of(record: UploadRecord) -> str:
    return ResumableMD5.from_bytes(record.md5_state).hexdigest()


async def test_an_upload_goes_on_on_another_instance_after_the_lease_expires(
    bucket: Bucket,
) -> None:
    one, two = bucket.one, bucket.two
    data = random_bytes(13 * MiB + 12345, seed=31)
    record = await new_upload(one.area, len(data))

    lease = await one.area.lock(record.id)
    acked = await write_and_acknowledge(lease, data[: 6 * MiB])
    # The first instance goes on writing, then dies without a word: no acknowledge, no
    # release (its appender is dropped; its part may be in S3, never recorded).
    appender = await one.area.appender(lease, acked)
    await appender.write(data[6 * MiB : 9 * MiB])

    with pytest.raises(problems.Busy):  # its lease runs: the other instance must wait
        await two.area.lock(record.id)
    assert (await two.area.read(record.id)).offset == 6 * MiB

    two.clock.now = T0 + TTL + 1  # past the lease: the second instance takes over
    async with two.area.locked(record.id) as taken:
        assert taken.generation == lease.generation + 1
        assert taken.record.offset == 6 * MiB
        await write_and_acknowledge(taken, data[6 * MiB : 11 * MiB])
    await append(two.area, record.id, data[11 * MiB :])
    final, staged = await complete(two.area, record.id)

    assert staged == data
    assert final.status is Status.COMPLETE and final.offset == len(data)
    assert md5_of(final) == hashlib.md5(data).hexdigest()  # continued across instances
    assert final.head == data[:HEAD_SIZE]
    assert bucket.uploads() == []  # the multipart upload was completed
    # The dead writer's request still cannot write anything.
    with pytest.raises(problems.Busy):
        stale = appender.record
        await appender.acknowledge(stale.appended(3 * MiB, b"", b"", now=T0, lifetime=DAY))
    await appender.close()

    # The commit publishes the staged object under a name, as POST /files would.
    info = FileInfo(type="video/mp4", size=len(data), etag=md5_of(final), created=now_utc())
    stored = await publish_staged(two.storage, str(final.backend["staged"]), ["a.mp4"], info)
    assert stored.name == "a.mp4"
    async with two.storage.open("a.mp4") as opened:
        assert b"".join([p async for p in opened.chunks(0, len(data))]) == data
        assert opened.meta.info.etag == hashlib.md5(data).hexdigest()
    # The staged object stays the upload's (its owner deletes it once the commit is
    # recorded); nothing else is left: no tail, no multipart upload.
    prefix = f"{bucket.store.prefix}.uploads/{record.id}/"
    assert bucket.keys(record.id) == [prefix + "data", prefix + "info"]


async def test_racing_instances_one_holds_the_others_get_busy(bucket: Bucket) -> None:
    for _ in range(5):
        record = await new_upload(bucket.one.area, None)
        attempts = [
            instance.area.lock(record.id) for instance in (bucket.one, bucket.two) for _ in range(3)
        ]
        outcomes = await asyncio.gather(*attempts, return_exceptions=True)
        winners = [outcome for outcome in outcomes if isinstance(outcome, UploadLease)]
        assert len(winners) == 1, outcomes
        assert all(isinstance(o, problems.Busy) for o in outcomes if o is not winners[0])
        stored = await bucket.two.area.read(record.id)
        assert stored.lease is not None and stored.lease.holder == winners[0].holder
        await winners[0].close()
        assert (await bucket.two.area.read(record.id)).lease is None
        async with bucket.two.area.locked(record.id) as lease:  # released: the next one may
            assert lease.generation == winners[0].generation + 1


async def test_a_renewal_beside_a_part_in_flight_is_one_write(bucket: Bucket) -> None:
    """Half the lease is gone while a part starts and more bytes come: both want to renew
    it, and the second must see the first's renewal instead of losing a race to it."""
    area, clock = bucket.one.area, bucket.one.clock
    data = random_bytes(6 * MiB, seed=43)
    record = await new_upload(area, None)
    async with area.locked(record.id) as lease:
        appender = await area.appender(lease, lease.record)
        await appender.write(data[: 5 * MiB])  # a part is on its way (it renews first)
        clock.now, clock.tick = T0 + TTL * 0.75, 0.001
        await appender.write(data[5 * MiB :])  # renews too, at the same moment
        done = lease.record.appended(
            len(data), data[:HEAD_SIZE], lease.record.md5_state, now=clock(), lifetime=DAY
        )
        stored = await appender.acknowledge(done)
        await appender.close()
        assert stored.offset == len(data) and stored.lease is not None
        assert T0 + TTL * 1.75 < stored.lease.until < T0 + TTL * 1.75 + 1


async def test_a_stale_generation_cannot_write(bucket: Bucket) -> None:
    one, two = bucket.one, bucket.two
    data = random_bytes(2 * MiB, seed=32)
    record = await new_upload(one.area, None)
    await append(one.area, record.id, data[:MiB])

    old = await one.area.lock(record.id)
    appender = await one.area.appender(old, old.record)
    await appender.write(data[MiB:])
    taken = await two.area.lock(record.id, take_over=True)  # the draft's "stop the older"
    assert taken.generation == old.generation + 1

    with pytest.raises(problems.Busy):
        await appender.acknowledge(
            old.record.appended(MiB, b"", old.record.md5_state, now=T0, lifetime=DAY)
        )
    with pytest.raises(problems.Busy):
        await one.area.write_info(old, old.record.cancelled())
    with pytest.raises(problems.Busy):
        await old.renew()
    with pytest.raises(problems.Busy):
        await one.area.remove(old)
    await appender.close()
    await old.close()  # letting go of a lost lease is quiet and writes nothing
    stored = await two.area.read(record.id)
    assert stored.offset == MiB and stored.status is Status.RECEIVING
    assert stored.lease is not None and stored.lease.holder == taken.holder
    await taken.close()


async def test_short_appends_go_to_the_tail_and_are_prepended_to_the_next_part(
    bucket: Bucket,
) -> None:
    area = bucket.one.area
    data = random_bytes(8 * MiB + 5, seed=33)
    record = await new_upload(area, len(data))
    prefix = f"{bucket.store.prefix}.uploads/{record.id}/"
    pieces = [data[:MiB], data[MiB : 2 * MiB], data[2 * MiB : 3 * MiB + 7]]
    for piece in pieces:
        record = await append(area, record.id, piece)
        # No part below S3's minimum: all of it is in one tail object, the older ones gone.
        assert record.backend["parts"] == [] and record.backend["upload"] is None
        assert record.backend["tail_size"] == record.offset
        assert sorted(bucket.keys(record.id)) == sorted(
            [prefix + "info", str(record.backend["tail"])]
        )
    record = await append(area, record.id, data[3 * MiB + 7 : 6 * MiB])
    # The tail went first into part 1, which was sent once it reached the part size
    # (the 3 MiB + 7 tail, then eight 256 KiB pieces); the rest is the new tail.
    first = 3 * MiB + 7 + 8 * 256 * 1024
    assert [(n, size) for n, _, size in record.backend["parts"]] == [(1, first)]
    assert record.backend["tail_size"] == 6 * MiB - first
    assert sorted(bucket.keys(record.id)) == sorted([prefix + "info", str(record.backend["tail"])])
    client = bucket.store.moto.client
    upload_id = record.backend["upload"]
    parts = client.list_parts(Bucket=BUCKET, Key=prefix + "data", UploadId=upload_id)
    assert [(p["PartNumber"], p["Size"]) for p in parts["Parts"]] == [(1, first)]
    record = await append(area, record.id, data[6 * MiB :])
    assert record.backend["tail_size"] == len(data) - first
    final, staged = await complete(area, record.id)
    assert staged == data and md5_of(final) == hashlib.md5(data).hexdigest()


async def test_a_discarded_request_leaves_offset_and_bytes_as_they_were(bucket: Bucket) -> None:
    area = bucket.one.area
    data = random_bytes(7 * MiB, seed=34)
    record = await new_upload(area, None)
    record = await append(area, record.id, data[: 2 * MiB])
    async with area.locked(record.id) as lease:
        appender = await area.appender(lease, lease.record)
        await appender.write(random_bytes(6 * MiB, seed=35))  # a whole part went to S3
        await appender.discard()  # the checksum did not match
        kept = await appender.acknowledge(lease.record)
        assert kept.offset == 2 * MiB and kept.backend == record.backend
        await appender.close()
    await append(area, record.id, data[2 * MiB :])
    final, staged = await complete(area, record.id)
    assert staged == data and md5_of(final) == hashlib.md5(data).hexdigest()


async def test_a_multipart_upload_whose_parts_were_all_discarded_is_not_left_open(
    bucket: Bucket,
) -> None:
    area = bucket.one.area
    data = random_bytes(2 * MiB, seed=47)
    record = await new_upload(area, None)
    async with area.locked(record.id) as lease:
        appender = await area.appender(lease, lease.record)
        await appender.write(random_bytes(6 * MiB, seed=48))  # makes the multipart upload
        await until(lambda: bool(bucket.parts(record.id)))  # and its part is there
        await appender.discard()
        await appender.write(data)  # then a short request: all of it in the tail
        done = lease.record.appended(len(data), data[:HEAD_SIZE], b"", now=T0, lifetime=DAY)
        kept = await appender.acknowledge(done)
        await appender.close()
    # Discarded with its parts: the multipart upload this request made is aborted then.
    assert kept.backend["parts"] == [] and kept.backend["upload"] is None
    assert bucket.uploads() == []
    _, staged = await complete(area, record.id)
    assert staged == data and bucket.uploads() == []


@pytest.mark.parametrize("size", [0, 1000], ids=["empty", "small"])
async def test_an_upload_below_one_part_completes_without_a_multipart_upload(
    bucket: Bucket, size: int
) -> None:
    area = bucket.one.area
    data = random_bytes(size, seed=36)
    record = await new_upload(area, None)
    if data:
        await append(area, record.id, data)
    final, staged = await complete(area, record.id)
    assert staged == data and final.length == size and bucket.uploads() == []


async def test_remove_leaves_no_object_and_no_multipart_upload(bucket: Bucket) -> None:
    area = bucket.one.area
    data = random_bytes(18 * MiB, seed=37)
    record = await new_upload(area, None)
    await append(area, record.id, data[: 7 * MiB])
    lease = await area.lock(record.id)
    appender = await area.appender(lease, lease.record)
    await appender.write(data[7 * MiB : 11 * MiB])  # with the 2 MiB tail: part 2
    await appender.write(data[11 * MiB : 12 * MiB])  # the next tail
    await appender.acknowledge(
        lease.record.appended(5 * MiB, b"", lease.record.md5_state, now=T0, lifetime=DAY)
    )
    assert len(bucket.keys(record.id)) == 2  # info and tail
    await appender.write(data[12 * MiB :])  # a part nobody acknowledges
    assert bucket.uploads()
    await appender.close()
    await area.write_info(lease, lease.record.cancelled())  # tus termination, then removal
    await area.remove(lease)
    assert bucket.keys(record.id) == [] and bucket.uploads() == []
    with pytest.raises(problems.NotFound):
        await area.read(record.id)
    with pytest.raises(problems.NotFound):
        await area.lock(record.id)
    assert await area.ids() == []


async def test_expired_lists_only_the_expired_the_cancelled_and_the_unreadable(
    bucket: Bucket,
) -> None:
    area, clock = bucket.one.area, bucket.one.clock
    old = await new_upload(area, None)
    clock.now = T0 + DAY / 2
    young = await new_upload(area, None)
    cancelled = await new_upload(area, None)
    async with area.locked(cancelled.id) as lease:
        await area.write_info(lease, lease.record.cancelled())
    await append(area, old.id, b"renewed")  # a write renews the expiry
    renewed = await new_upload(area, None)
    clock.now = T0
    await append(area, renewed.id, b"x")  # written last at T0: expires at T0 + DAY
    assert set(await area.ids()) == {old.id, young.id, cancelled.id, renewed.id}
    unreadable = await new_upload(area, None)
    info = f"{bucket.store.prefix}.uploads/{unreadable.id}/info"
    bucket.store.moto.client.put_object(Bucket=BUCKET, Key=info, Body=b"{not json")
    assert set(await area.expired(T0)) == {cancelled.id, unreadable.id}
    with pytest.raises(CorruptRecord):
        await area.lock(unreadable.id)
    assert not await area.remove_unreadable(cancelled.id)  # readable: not this way
    assert await area.remove_unreadable(unreadable.id)
    assert bucket.keys(unreadable.id) == []
    assert await area.expired(T0 + DAY / 2 + 1) == [cancelled.id]
    assert set(await area.expired(T0 + DAY + 1)) == {cancelled.id, renewed.id}
    assert set(await area.expired(T0 + 2 * DAY)) == {old.id, young.id, cancelled.id, renewed.id}


async def test_the_stale_sweep_leaves_resumable_uploads_alone(bucket: Bucket) -> None:
    """Only expiry removes a resumable upload: the sweep of `.tmp` leftovers must not
    abort its multipart upload (moto reports every upload as initiated long ago)."""
    area = bucket.one.area
    data = random_bytes(6 * MiB, seed=38)
    record = await new_upload(area, None)
    await append(area, record.id, data)
    future = datetime.now(UTC) + timedelta(days=365)
    await bucket.one.storage.remove_stale_temporaries(future)
    assert len(bucket.uploads()) == 1
    _, staged = await complete(area, record.id)
    assert staged == data


async def test_the_routes_adapter_appends_scans_publishes_and_removes(bucket: Bucket) -> None:
    """The flow the routes drive through S3UploadStore: hashed appends, finish, the scan's
    one read, the commit under a name (the staging object then goes), and removal."""
    store = S3UploadStore(bucket.one.storage)
    data = random_bytes(11 * MiB + 3, seed=39)
    record = UploadRecord.create(
        protocol=Protocol.TUS,
        now=time.time(),
        lifetime=DAY,
        md5_state=ResumableMD5().to_bytes(),
        max_size=CAP,
        length=len(data),
    )
    await store.create(record)
    for start, end in ((0, 4 * MiB), (4 * MiB, len(data))):
        async with store.hold(record.id) as held:
            current = held.record
            md5 = ResumableMD5.from_bytes(current.md5_state)
            async with held.appender(md5.update) as writer:
                await asyncio.gather(
                    *[
                        writer.write([data[at : min(at + 65536, end)]])
                        for at in range(start, end, 65536)
                    ]
                )
                done = current.appended(
                    end - start,
                    data[start:HEAD_SIZE],
                    md5.to_bytes(),
                    now=time.time(),
                    lifetime=DAY,
                )
                await writer.acknowledge(done)
    async with store.hold(record.id) as held:
        assert held.record.reached_length
        await held.save(held.record.finish())
        assert b"".join([piece async for piece in held.stored_bytes()]) == data
        etag = md5_of(held.record)
        assert etag == hashlib.md5(data).hexdigest()
        info = FileInfo(
            type="application/octet-stream", size=len(data), etag=etag, created=now_utc()
        )
        stored = await held.staged().commit(["free.bin"], info)
        await held.save(held.record.committed({"name": stored.name}))
    assert bucket.store.stored_names() == {"free.bin"}
    assert (
        bucket.store.moto.client.get_object(Bucket=BUCKET, Key=bucket.store.prefix + "free.bin")[
            "Body"
        ].read()
        == data
    )
    prefix = f"{bucket.store.prefix}.uploads/{record.id}/"
    assert bucket.keys(record.id) == [prefix + "info"] and bucket.uploads() == []
    async with store.hold(record.id) as held:
        assert held.record.status is Status.COMMITTED
        await held.remove()
    assert bucket.keys(record.id) == [] and await store.expired(time.time() + 2 * DAY) == []


async def test_a_part_refused_by_s3_keeps_nothing_of_the_request(
    bucket: Bucket, s3_server: S3Server
) -> None:
    """S3 refuses a part (a real refusal, through the suite's fault proxy): the request's
    bytes cannot be acknowledged (its running MD5 covers them all), the record stays at
    the last acknowledged offset, and after discard() the upload goes on."""
    proxy = await FaultProxy(s3_server.port).start()
    storage = S3Storage(
        S3Location(BUCKET, bucket.store.prefix), endpoint=proxy.endpoint, part_size=PART
    )
    await storage.start()
    try:
        area = UploadArea(storage, ttl=TTL, instance="proxied", clock=Clock())
        data = random_bytes(9 * MiB, seed=40)
        record = await new_upload(area, len(data))
        record = await append(area, record.id, data[: 2 * MiB])
        async with area.locked(record.id) as lease:
            appender = await area.appender(lease, lease.record)
            await appender.write(random_bytes(MiB, seed=41))  # the tail is read
            proxy.reject(403, "AccessDenied")
            await appender.write(random_bytes(3 * MiB, seed=42))  # a part starts, and fails
            done = lease.record.appended(4 * MiB, b"", b"", now=T0, lifetime=DAY)
            for _ in range(2):  # and stays failed
                with pytest.raises(StorageError):
                    await appender.acknowledge(done)
            proxy.restore()
            assert (await bucket.two.area.read(record.id)).offset == 2 * MiB
            await appender.discard()
            assert (await appender.acknowledge(lease.record)).offset == 2 * MiB
            await appender.close()
        await append(area, record.id, data[2 * MiB :])
        _, staged = await complete(area, record.id)
        assert staged == data
    finally:
        await storage.close()
        await proxy.close()


async def test_a_take_over_stops_the_older_request_at_its_next_part(bucket: Bucket) -> None:
    """The draft's "stop the older request" across instances: the newer request takes the
    live lease; the older one checks the record before each part and stops; the newer
    one's parts are numbered past the older one's (one may still have been in flight)."""
    one, two = bucket.one, bucket.two
    data = random_bytes(13 * MiB, seed=44)
    record = await new_upload(one.area, None)
    await append(one.area, record.id, data[: 6 * MiB])  # part 1, recorded
    older = await one.area.lock(record.id)
    appender = await one.area.appender(older, older.record)
    await appender.write(random_bytes(6 * MiB, seed=45))  # part 2 goes out, unacknowledged

    newer = await two.area.lock(record.id, take_over=True)
    assert newer.took_over and newer.generation == older.generation + 1
    await appender.write(random_bytes(5 * MiB, seed=46))  # part 3 would start: it stops
    with pytest.raises(problems.Busy):
        await appender.acknowledge(older.record.appended(11 * MiB, b"", b"", now=T0, lifetime=DAY))
    await appender.close()

    stored = await write_and_acknowledge(newer, data[6 * MiB :])
    numbers = [number for number, _, _ in stored.backend["parts"]]
    assert numbers == [1, 4]  # past the older request's part 2, and the one it might send
    prefix = f"{bucket.store.prefix}.uploads/{record.id}/"
    listed = bucket.store.moto.client.list_parts(
        Bucket=BUCKET, Key=prefix + "data", UploadId=stored.backend["upload"]
    )
    assert [part["PartNumber"] for part in listed["Parts"]] == [1, 2, 4]  # no part 3
    await newer.close()
    final, staged = await complete(two.area, record.id)
    assert staged == data and md5_of(final) == hashlib.md5(data).hexdigest()


async def test_parts_a_dead_request_sent_past_the_end_do_not_stop_the_completion(
    bucket: Bucket,
) -> None:
    """A request uploads parts 2-4 and dies unacknowledged; the next one needs only part 2
    and a tail (part 3 at completion), so part 4 stays in S3. moto leaves it out of the
    completion; RGW refuses that (InvalidPart), so the upload is completed with it and
    our own bytes copied out (s3strays.py): either way the file is exactly ours."""
    one, two = bucket.one, bucket.two
    data = random_bytes(12 * MiB + 7, seed=47)
    record = await new_upload(one.area, len(data))
    await append(one.area, record.id, data[:PART])  # part 1, recorded
    dead = await one.area.lock(record.id)
    appender = await one.area.appender(dead, dead.record)
    for seed in (48, 49, 50):  # parts 2-4 go out
        await appender.write(random_bytes(PART, seed=seed))
    await until(lambda: bucket.parts(record.id) == [1, 2, 3, 4])
    await appender.close()  # never acknowledged: the request died
    await dead.close()

    await append(two.area, record.id, data[PART:])  # part 2 and a tail
    final, staged = await complete(two.area, record.id)
    assert staged == data and md5_of(final) == hashlib.md5(data).hexdigest()
    assert bucket.uploads() == []  # no multipart upload left behind
    prefix = f"{bucket.store.prefix}.uploads/{record.id}/"
    assert bucket.keys(record.id) == sorted([final.backend["staged"], prefix + "info"])
