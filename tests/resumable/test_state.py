"""The upload state machine: each transition, each refusal, and the stored form."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest

from streamproxy.resumable import problems
from streamproxy.resumable.hashstate import ResumableMD5
from streamproxy.resumable.state import (
    HEAD_SIZE,
    CorruptRecord,
    Protocol,
    Status,
    UploadRecord,
    is_valid_id,
    new_id,
)

CAP = 10_000
DAY = 86400.0


def fresh(length: int | None = 100, **kwargs: object) -> UploadRecord:
    return UploadRecord.create(
        protocol=Protocol.TUS,
        now=0.0,
        lifetime=DAY,
        md5_state=ResumableMD5().to_bytes(),
        max_size=CAP,
        length=length,
        metadata={"conversationId": "c1", "filename": "a.txt"},
        **kwargs,  # type: ignore[arg-type]
    )


def append(record: UploadRecord, data: bytes, now: float = 1.0) -> UploadRecord:
    """What the routes do: check, hash on from the saved state, then record the append."""
    record = record.check_append(record.offset, now, max_size=CAP)
    md5 = ResumableMD5.from_bytes(record.md5_state)
    md5.update(data)
    return record.appended(len(data), data[:HEAD_SIZE], md5.to_bytes(), now=now, lifetime=DAY)


def test_created_upload_is_receiving_at_offset_zero_with_an_unguessable_id() -> None:
    record = fresh()
    assert (record.status, record.offset, record.length) == (Status.RECEIVING, 0, 100)
    assert is_valid_id(record.id)
    assert len({new_id() for _ in range(1000)}) == 1000


@pytest.mark.parametrize("bad", ["", "../../etc/passwd", "a" * 21, "a" * 23, "a/" * 11])
def test_ids_that_could_not_come_from_new_id_are_refused(bad: str) -> None:
    assert not is_valid_id(bad)


def test_appends_move_the_offset_keep_the_head_and_complete_at_length() -> None:
    data = bytes(range(256)) * 8  # 2048 bytes: more than the sniffing head
    record = fresh(length=len(data))
    for start in range(0, len(data), 700):
        record = append(record, data[start : start + 700], now=start)
    assert record.offset == len(data) and record.reached_length
    assert record.head == data[:HEAD_SIZE]
    assert record.expires == 1400 + DAY  # renewed by the last write
    done = record.finish()
    assert done.status is Status.COMPLETE
    assert ResumableMD5.from_bytes(done.md5_state).hexdigest() == hashlib.md5(data).hexdigest()
    committed = done.committed({"name": "a.txt"})
    assert committed.status is Status.COMMITTED and committed.result == {"name": "a.txt"}


def test_wrong_offset_is_409_with_the_resources_offset() -> None:
    record = append(fresh(), b"x" * 10)
    with pytest.raises(problems.OffsetMismatch) as caught:
        record.check_append(5, 2.0, max_size=CAP)
    assert caught.value.status == 409
    assert caught.value.members == {"expected-offset": 10, "provided-offset": 5}
    assert caught.value.problem == problems.MISMATCHING_OFFSET


def test_deferred_length_is_set_once_then_never_changes() -> None:
    record = append(fresh(length=None), b"x" * 10)
    assert record.length is None and record.room(CAP) == CAP - 10
    with pytest.raises(problems.LengthMismatch):
        record.check_append(10, 2.0, max_size=CAP, length=9)  # below what arrived
    with pytest.raises(problems.TooLarge):
        record.check_append(10, 2.0, max_size=CAP, length=CAP + 1)
    record = record.check_append(10, 2.0, max_size=CAP, length=50)
    assert record.length == 50 and record.room(CAP) == 40
    assert record.check_append(10, 2.0, max_size=CAP, length=50) is record
    with pytest.raises(problems.LengthMismatch) as caught:
        record.check_append(10, 2.0, max_size=CAP, length=51)
    assert caught.value.status == 400 and caught.value.problem == problems.INCONSISTENT_LENGTH


def test_length_over_the_cap_at_creation_is_413() -> None:
    with pytest.raises(problems.TooLarge) as caught:
        fresh(length=CAP + 1)
    assert caught.value.status == 413
    with pytest.raises(problems.LengthMismatch):
        fresh(length=-1)


def test_bytes_past_the_length_are_refused_and_not_counted() -> None:
    record = append(fresh(length=10), b"x" * 8)
    with pytest.raises(problems.TooLarge):
        record.appended(3, b"abc", record.md5_state, now=2.0, lifetime=DAY)
    assert record.offset == 8


def test_draft_completion_sets_a_deferred_length_and_refuses_a_short_one() -> None:
    record = append(fresh(length=None), b"abc")
    assert record.finish().length == 3
    with pytest.raises(problems.LengthMismatch):
        append(fresh(length=10), b"abc").finish()


def test_complete_upload_answers_offset_mismatch_or_completed_upload() -> None:
    done = append(fresh(length=3), b"abc").finish()
    with pytest.raises(problems.OffsetMismatch):
        done.check_append(0, 2.0, max_size=CAP)
    with pytest.raises(problems.AlreadyComplete) as caught:
        done.check_append(3, 2.0, max_size=CAP)
    assert caught.value.problem == problems.COMPLETED_UPLOAD
    with pytest.raises(problems.AlreadyComplete):
        done.finish()


def test_refused_completion_replays_its_error() -> None:
    failed = append(fresh(length=3), b"abc").finish().failed(422, "infected", "Eicar found")
    with pytest.raises(problems.Refused) as caught:
        failed.check_append(3, 2.0, max_size=CAP)
    assert (caught.value.status, caught.value.code) == (422, "infected")


def test_expired_is_410_and_cancelled_is_404() -> None:
    record = fresh()
    with pytest.raises(problems.Expired) as gone:
        record.check_append(0, DAY, max_size=CAP)
    assert gone.value.status == 410
    assert record.expired(DAY - 1) is None
    expired = record.expired(DAY)
    assert expired is not None and expired.status is Status.EXPIRED
    cancelled = record.cancelled()
    with pytest.raises(problems.NotFound) as missing:
        cancelled.check_live(1.0)
    assert missing.value.status == 404
    with pytest.raises(problems.NotFound):
        cancelled.cancelled()
    assert cancelled.expired(DAY * 2) is None


def test_final_concatenation_takes_no_patch() -> None:
    final = fresh(length=None, parts=(new_id(), new_id()))
    with pytest.raises(problems.Forbidden) as caught:
        final.check_append(0, 1.0, max_size=CAP)
    assert caught.value.status == 403


def test_lease_busy_until_it_runs_out_or_is_taken_over() -> None:
    record = fresh().acquire("worker-1", now=0.0, ttl=30.0)
    assert record.lease is not None and record.lease.generation == 1
    with pytest.raises(problems.Busy) as busy:
        record.acquire("worker-2", now=10.0, ttl=30.0)
    assert busy.value.status == 409
    later = record.acquire("worker-2", now=31.0, ttl=30.0)  # the holder died
    assert later.lease is not None and later.lease.generation == 2
    taken = record.acquire("worker-2", now=10.0, ttl=30.0, take_over=True)  # draft's rule
    with pytest.raises(problems.Busy):
        taken.check_holder("worker-1", 1)  # the older request may not write any more
    taken.check_holder("worker-2", 2)
    assert taken.released("worker-2", 2).lease is None
    renewed = taken.renewed("worker-2", 2, now=20.0, ttl=30.0)
    assert renewed.lease is not None and renewed.lease.until == 50.0


def test_record_round_trips_through_json_with_every_field() -> None:
    record = append(fresh(partial=True), bytes(range(100)))
    record = record.acquire("host:123", now=5.0, ttl=30.0)
    record = dataclasses.replace(record, backend={"upload_id": "abc", "parts": [1, 2]})
    stored = record.to_json()
    assert json.loads(stored)["version"] == 1
    assert UploadRecord.from_json(stored) == record
    final = dataclasses.replace(fresh(parts=("a" * 22, "b" * 22)), result={"etag": "x"})
    assert UploadRecord.from_json(final.to_json()) == final


@pytest.mark.parametrize(
    "stored",
    [
        b"",
        b"[]",
        b'{"version": 2}',
        b'{"version": 1, "id": "x"}',
        fresh().to_json().replace(b'"receiving"', b'"dancing"'),
        fresh().to_json().replace(b'"offset": 0', b'"offset": -1'),
    ],
)
def test_unreadable_records_are_refused(stored: bytes) -> None:
    with pytest.raises(CorruptRecord):
        UploadRecord.from_json(stored)
