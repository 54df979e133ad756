"""One resumable upload as an explicit state machine, with no I/O (h11 style).

The record is what storage keeps beside the partial bytes (local: `info`; S3: the info
object), so any process or instance can take the next request. Each transition is a
method that checks the request against the record and returns the next record (frozen:
nothing changes until storage has written the new one), or raises the refusal the
protocols name (problems.py).

    RECEIVING --finish()--> COMPLETE --committed()--> COMMITTED
        |                      \\--failed()-------> FAILED
        |--(now >= expires)--> EXPIRED       any --cancelled()--> CANCELLED

Decisions, from tus 1.0.0 and the draft (interop 6 = draft -05, interop 8 = -09 to -11):

- Created is RECEIVING at offset 0: both protocols treat creation as the first append.
- Offsets: an append at any other offset is 409 with the resource's offset (tus core;
  the draft's mismatching-upload-offset), also on a complete upload, so a client that
  lost the final response learns the end offset. At the right offset, a complete upload
  answers 400 completed-upload (draft -05) and the routes may replay the final response
  (the draft allows it); a refused completion replays its refusal (415, 422).
- Length: tus fixes it at creation or with the first PATCH after `Upload-Defer-Length`;
  the draft from `Upload-Length` or `Upload-Complete: ?1` (offset + content). Once known
  it never changes: another value is 400 (inconsistent-upload-length), and so is a
  length below the bytes already received. Over the cap is 413, at creation or while
  a deferred-length upload grows (the routes then call failed(): the file can never be
  stored). Bytes past the length are 413 and not appended (tus leaves the upload as it
  was; the draft has the resource reject them, and a client not resume after a 4xx:
  the routes call failed() for draft uploads).
- Completion: tus completes when the offset reaches the length; the draft when a request
  carries `Upload-Complete: ?1` (finish() sets a deferred length to the offset). A tus
  partial upload (concatenation) completes but is never committed on its own.
- Expiry: every write renews `expires` (API.md: after the last write). Past it the upload
  answers 410 (tus `expiration`: the server still knows it) until retention removes it.
- Cancel (tus termination, draft DELETE): CANCELLED, then 404; the routes delete the
  bytes. A committed file stays stored: cancelling the resource is not deleting the file.
- Lease: one writer at a time across workers and instances. A live lease held by another
  request is 409 busy (API.md); past `until` anyone may take it; the draft's "terminate
  the previous request" takes it at once (take_over). Each acquisition bumps
  `generation`, a fencing token: a writer whose lease was taken over fails check_holder()
  before it writes the record, so a stale request never moves the offset.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import secrets
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from .problems import (
    AlreadyComplete,
    Busy,
    Expired,
    Forbidden,
    LengthMismatch,
    NotFound,
    OffsetMismatch,
    Refused,
    TooLarge,
)

FORMAT_VERSION: Final = 1
HEAD_SIZE: Final = 1445
"""The first bytes kept for sniffing the type at completion (sniff.py reads no more)."""

_ID = re.compile(r"[A-Za-z0-9_-]{22}")


class CorruptRecord(ValueError):
    """A stored record this code cannot read: the upload is lost, answer it as gone."""


class Status(StrEnum):
    RECEIVING = "receiving"
    COMPLETE = "complete"
    COMMITTED = "committed"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


class Protocol(StrEnum):
    TUS = "tus"
    DRAFT_6 = "draft-6"
    DRAFT_8 = "draft-8"


def new_id() -> str:
    """128 random bits, URL-safe: unguessable, and safe as a file or key name."""
    return secrets.token_urlsafe(16)


def is_valid_id(text: str) -> bool:
    """True for ids new_id() can make: anything else is 404 before touching storage."""
    return _ID.fullmatch(text) is not None


@dataclass(frozen=True)
class Lease:
    holder: str
    until: float
    generation: int


@dataclass(frozen=True)
class UploadRecord:
    id: str
    protocol: Protocol
    status: Status
    offset: int
    length: int | None
    """None while deferred (tus `Upload-Defer-Length`, or a draft upload not yet complete)."""
    metadata: dict[str, str]
    md5_state: bytes
    """hashstate.ResumableMD5.to_bytes() after `offset` bytes."""
    head: bytes
    created: float
    expires: float
    partial: bool = False
    """tus `Upload-Concat: partial`: never committed on its own."""
    parts: tuple[str, ...] = ()
    """tus `Upload-Concat: final;...`: the partial uploads' ids, in order."""
    lease: Lease | None = None
    generation: int = 0
    result: dict[str, Any] | None = None
    """After COMMITTED: the JSON `POST /files` answers, replayed by GET."""
    error: dict[str, Any] | None = None
    """After FAILED: {status, code, detail}, replayed on later requests."""
    backend: dict[str, Any] = field(default_factory=dict)
    """The storage's own bookkeeping (S3: multipart upload id, parts, tail key)."""
    upload_link: str | None = None
    """The token of the upload link the upload was created through (uploadlinks): later
    requests need no API key, the link's terms apply, and completion uses the link up.
    Absent from records written before links (read as None: created with an API key)."""

    @classmethod
    def create(
        cls,
        *,
        protocol: Protocol,
        now: float,
        lifetime: float,
        md5_state: bytes,
        max_size: int,
        length: int | None = None,
        metadata: dict[str, str] | None = None,
        partial: bool = False,
        parts: tuple[str, ...] = (),
        upload_id: str | None = None,
        upload_link: str | None = None,
    ) -> UploadRecord:
        if length is not None:
            _check_length(length, max_size)
        return cls(
            id=upload_id or new_id(),
            protocol=protocol,
            status=Status.RECEIVING,
            offset=0,
            length=length,
            metadata=dict(metadata or {}),
            md5_state=md5_state,
            head=b"",
            created=now,
            expires=now + lifetime,
            partial=partial,
            parts=parts,
            upload_link=upload_link,
        )

    @property
    def is_final(self) -> bool:
        return bool(self.parts)

    @property
    def reached_length(self) -> bool:
        return self.length is not None and self.offset == self.length

    def room(self, max_size: int) -> int:
        """How many more bytes this upload may take: the reader stops there."""
        limit = self.length if self.length is not None else max_size
        return max(0, limit - self.offset)

    def check_live(self, now: float) -> None:
        """For every request: 404 once cancelled, 410 once expired."""
        if self.status is Status.CANCELLED:
            raise NotFound("the upload was cancelled")
        if self.status is Status.EXPIRED or now >= self.expires:
            raise Expired("the upload has expired; start a new one")

    def check_append(
        self, offset: int, now: float, *, max_size: int, length: int | None = None
    ) -> UploadRecord:
        """Whether an append at `offset` (declaring `length`, if it does) may go ahead."""
        self.check_live(now)
        if self.is_final:
            raise Forbidden("a final concatenated upload takes no PATCH")
        if offset != self.offset:
            raise OffsetMismatch(self.offset, offset)
        if self.status is Status.FAILED:
            error = self.error or {"status": 400, "code": "bad_request", "detail": "failed"}
            raise Refused(int(error["status"]), str(error["code"]), str(error["detail"]))
        if self.status is not Status.RECEIVING:
            raise AlreadyComplete("the upload is already complete")
        if length is None or length == self.length:
            return self
        if self.length is not None:
            raise LengthMismatch(f"the upload's length is {self.length}, not {length}")
        if length < self.offset:
            raise LengthMismatch(f"length {length} is below the {self.offset} bytes received")
        _check_length(length, max_size)
        return dataclasses.replace(self, length=length)

    def appended(
        self, count: int, first: bytes, md5_state: bytes, *, now: float, lifetime: float
    ) -> UploadRecord:
        """After `count` bytes (beginning with `first`) are durable at the offset."""
        if self.status is not Status.RECEIVING:
            raise AlreadyComplete("the upload is already complete")
        offset = self.offset + count
        if self.length is not None and offset > self.length:
            raise TooLarge(
                f"{offset - self.length} bytes past the upload's length {self.length}", size=offset
            )
        head = self.head
        if len(head) < HEAD_SIZE and len(head) == self.offset:
            head = (head + first[: HEAD_SIZE - len(head)])[:HEAD_SIZE]
        return dataclasses.replace(
            self, offset=offset, md5_state=md5_state, head=head, expires=now + lifetime
        )

    def finish(self) -> UploadRecord:
        """All bytes are in (tus: offset == length; draft: `Upload-Complete: ?1`)."""
        if self.status is not Status.RECEIVING:
            raise AlreadyComplete("the upload is already complete")
        if self.length is not None and self.length != self.offset:
            raise LengthMismatch(
                f"the upload ends at {self.offset} bytes, but its length is {self.length}"
            )
        return dataclasses.replace(self, status=Status.COMPLETE, length=self.offset)

    def committed(self, result: dict[str, Any]) -> UploadRecord:
        if self.status is not Status.COMPLETE:
            raise AlreadyComplete(f"cannot commit an upload that is {self.status}")
        return dataclasses.replace(self, status=Status.COMMITTED, result=result, lease=None)

    def failed(self, status: int, code: str, detail: str) -> UploadRecord:
        error = {"status": status, "code": code, "detail": detail}
        return dataclasses.replace(self, status=Status.FAILED, error=error, lease=None)

    def cancelled(self) -> UploadRecord:
        if self.status is Status.CANCELLED:
            raise NotFound("the upload was cancelled")
        return dataclasses.replace(self, status=Status.CANCELLED, lease=None)

    def expired(self, now: float) -> UploadRecord | None:
        """The EXPIRED record if the upload is past its time (retention then removes it)."""
        if now < self.expires or self.status in (Status.EXPIRED, Status.CANCELLED):
            return None
        return dataclasses.replace(self, status=Status.EXPIRED, lease=None)

    def acquire(
        self, holder: str, now: float, ttl: float, *, take_over: bool = False
    ) -> UploadRecord:
        """Take the lease: 409 busy while another holder's lease runs, unless take_over."""
        lease = self.lease
        if lease is not None and lease.holder != holder and lease.until > now and not take_over:
            raise Busy("another request is writing this upload; ask for its offset again")
        generation = self.generation + 1
        return dataclasses.replace(
            self, lease=Lease(holder, now + ttl, generation), generation=generation
        )

    def check_holder(self, holder: str, generation: int) -> None:
        """Before writing the record: still ours? (a fencing token, not a clock)."""
        lease = self.lease
        if lease is None or lease.holder != holder or lease.generation != generation:
            raise Busy("a newer request took this upload over")

    def renewed(self, holder: str, generation: int, now: float, ttl: float) -> UploadRecord:
        self.check_holder(holder, generation)
        return dataclasses.replace(self, lease=Lease(holder, now + ttl, generation))

    def released(self, holder: str, generation: int) -> UploadRecord:
        self.check_holder(holder, generation)
        return dataclasses.replace(self, lease=None)

    def to_json(self) -> bytes:
        fields = dataclasses.asdict(self)
        fields["md5_state"] = base64.b64encode(self.md5_state).decode()
        fields["head"] = base64.b64encode(self.head).decode()
        fields["parts"] = list(self.parts)
        return json.dumps({"version": FORMAT_VERSION, **fields}, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> UploadRecord:
        try:
            fields = json.loads(data)
            if not isinstance(fields, dict) or fields.pop("version", None) != FORMAT_VERSION:
                raise CorruptRecord("not an upload record of this version")
            fields["protocol"] = Protocol(fields["protocol"])
            fields["status"] = Status(fields["status"])
            fields["md5_state"] = base64.b64decode(fields["md5_state"], validate=True)
            fields["head"] = base64.b64decode(fields["head"], validate=True)
            fields["parts"] = tuple(fields["parts"])
            if fields["lease"] is not None:
                fields["lease"] = Lease(**fields["lease"])
            record = cls(**fields)
        except CorruptRecord:
            raise
        except (ValueError, TypeError, KeyError) as error:
            raise CorruptRecord(f"unreadable upload record: {error}") from error
        if not is_valid_id(record.id) or record.offset < 0:
            raise CorruptRecord("upload record with a bad id or offset")
        return record


def _check_length(length: int, max_size: int) -> None:
    if length < 0:
        raise LengthMismatch(f"a length cannot be negative ({length})")
    if length > max_size:
        raise TooLarge(f"{length} bytes is over the limit of {max_size} bytes", size=length)
