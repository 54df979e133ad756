"""The storage protocol: what the HTTP layer needs from any place that keeps files.

A `Storage` hands out writers that stage bytes invisibly and publish them with
`commit` under the first free name (never replacing one), or remove them with
`abort`. Readers open a stored file with its metadata; what only some storages
can offer (a local file to sendfile from, the whole content already in memory)
is a small protocol of its own that the download checks for.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import IO, Any, Protocol, TypeVar

from aiohttp import web

TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # creation times, in metadata and answers (UTC)
_JSON = json.JSONEncoder(ensure_ascii=False)  # what json.dumps would make on every call


class StorageError(Exception):
    """Storage failed in a way the client cannot fix (mapped to 500; subclasses say more)."""


class FileMissing(StorageError):
    """No stored file has that name."""


class StorageFull(StorageError):
    """The disk or bucket refused the write for lack of space or quota (507)."""


class StorageUnavailable(StorageError):
    """The storage cannot be reached or answered with a server error now (503)."""


class NoFreeName(StorageError):
    """Every candidate name was taken; vanishingly rare with random suffixes."""


@dataclass(frozen=True)
class FileInfo:
    """What is known about a file before it has a name: written with it, read back on stat."""

    type: str
    size: int
    etag: str  # MD5 of the content, 32 lowercase hex digits
    created: datetime
    conversation_id: str | None = None
    channel: str | None = None
    original_name: str | None = None

    def to_json(self) -> bytes:
        # Not `asdict`: it deep-copies every value (the datetime the slowest), six times
        # the cost of the dump itself, on the commit's thread and under the GIL.
        data: dict[str, Any] = {name: getattr(self, name) for name in _INFO_FIELDS}
        data["created"] = self.created.strftime(TIME_FORMAT)
        return _JSON.encode(data).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> FileInfo:
        data = json.loads(raw)
        data["created"] = datetime.strptime(data["created"], TIME_FORMAT).replace(tzinfo=UTC)
        return cls(**data)


_INFO_FIELDS = tuple(field.name for field in fields(FileInfo))


@dataclass(frozen=True)
class StoredMeta:
    """A stored file's name and metadata."""

    name: str
    info: FileInfo

    def to_public(self) -> dict[str, Any]:
        """The stat document of API.md."""
        info = self.info
        return {
            "name": self.name,
            "type": info.type,
            "size": info.size,
            "etag": info.etag,
            "created": info.created.strftime(TIME_FORMAT),
            "conversationId": info.conversation_id,
            "channel": info.channel,
            "originalName": info.original_name,
        }


def now_utc() -> datetime:
    """Creation times are kept to the second, the precision of HTTP dates."""
    return datetime.now(UTC).replace(microsecond=0)


# A piece of a file on its way in: bytes, or a view into what the network delivered.
Piece = bytes | bytearray | memoryview
Observer = Callable[[Piece], None]


class StorageWriter(Protocol):
    """Stages one file. Exactly one of `commit` or `abort` ends it."""

    def write(self, pieces: Sequence[Piece]) -> Awaitable[None]:
        """Append pieces in order, calling the observer on each, in order, off the event
        loop (local storage hashes on one thread while another writes). The pieces
        must not be changed until the write has finished, which includes the observer.
        A writer may queue several writes; they are applied in order."""

    async def commit(self, names: Iterable[str], info: FileInfo) -> StoredMeta:
        """Publish under the first name in `names` that is free; never replace a file."""

    async def abort(self) -> None:
        """Remove everything staged; safe to call more than once and after a failed write."""


class StoredFile(Protocol):
    """An open stored file, ready to send. What else it offers, it says by being a
    `LocalFileSource` or an `InMemoryContent` too, checked with isinstance where
    they pay (as tusd checks a data store for ContentServerDataStore)."""

    meta: StoredMeta

    def chunks(self, start: int, length: int) -> AsyncIterator[bytes]:
        """The bytes `start` .. `start + length - 1`, in chunks of bounded size."""


class LocalFileSource:
    """Mixed into a stored file that is an open local file: the download can sendfile
    from it, and no byte passes through Python. (A plain base class, not a runtime
    Protocol: isinstance on one costs tens of microseconds per download.)"""

    local_file: IO[bytes]


class InMemoryContent:
    """Mixed into a stored file small enough to have been read whole with its
    metadata: the download answers it in one response and one write."""

    content: bytes


class OneTimeClaims:
    """Mixed into a storage that can record a claim at most once, across worker
    processes and across instances sharing it: one upload link, one upload. The
    claim is a conditional write in the storage itself (local: an `O_EXCL` create;
    S3: `PutObject` with `If-None-Match: *`), never process memory."""

    async def claim(self, key: str, record: bytes) -> bool:
        """Record `key` with `record` unless it is recorded already; True for the one
        call that recorded it. `key` is `CLAIM_KEY_RE`-shaped (callers make it)."""
        raise NotImplementedError

    async def is_claimed(self, key: str) -> bool:
        """Whether `key` is recorded (a hint for refusing early; `claim` decides)."""
        raise NotImplementedError

    async def release(self, key: str) -> None:
        """Forget a claim this process made and could not use (its commit failed)."""
        raise NotImplementedError

    async def forget_claims_before(self, cutoff: datetime) -> int:
        """Remove claims made before `cutoff` (retention: once what they guard has
        expired they only take room); how many went."""
        raise NotImplementedError


# Claim keys are safe as a file name and as an S3 key part: no dot first, no slash.
CLAIM_KEY_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
CLAIMS_DIR = ".claims"  # where claims live: a hidden directory, or a hidden key prefix


_C = TypeVar("_C")


def capability(storage: object, kind: type[_C]) -> _C | None:
    """`storage` as `kind` when it offers that capability, looking through wrappers
    (a wrapper names what it wraps `inner`, as TimedStorage does); else None."""
    while not isinstance(storage, kind):
        storage = getattr(storage, "inner", None)
        if storage is None:
            return None
    return storage


class Storage(Protocol):
    """A place that keeps files: a local directory or an S3 bucket.

    Deletion, a conversation's listing and erasure are methods here rather than
    optional protocols: both storages implement them, and erasure on request is a
    duty of the service (privacy law), not a feature a storage may lack.
    """

    description: str

    async def start(self) -> None:
        """Prepare for use (create directories, clean leftovers, check access)."""

    async def close(self) -> None:
        """Release resources."""

    async def create_writer(self, observer: Observer) -> StorageWriter:
        """A writer that calls `observer` once on every chunk written through it."""

    async def stat(self, name: str) -> StoredMeta:
        """The metadata of a stored file; raises FileMissing."""

    def open(self, name: str) -> AbstractAsyncContextManager[StoredFile]:
        """Open a stored file for sending; raises FileMissing."""

    async def check_ready(self) -> None:
        """Raise StorageError when the storage cannot take a write now."""

    async def delete_older_than(self, cutoff: datetime) -> int:
        """Retention: delete stored files created before `cutoff`; how many went."""

    async def remove_stale_temporaries(self, cutoff: datetime) -> int:
        """Remove staged data (temporaries, unfinished uploads) older than `cutoff`."""

    async def delete(self, name: str) -> None:
        """Delete one stored file; raises FileMissing. A download already reading it
        finishes with its bytes or fails, never mixes them with a newer file's."""

    async def conversation(self, conversation_id: str) -> list[StoredMeta]:
        """Every stored file whose stored conversationId is exactly this one, in no order."""

    async def delete_conversation(
        self, conversation_id: str, deleted: Callable[[str], None]
    ) -> int:
        """Erase a conversation's files, calling `deleted(name)` on the event loop as each
        goes (to log and count it even if the erasure stops half-way); how many went.
        Safe to run again after a crash half-way: the rerun finishes the job."""

    async def shared_secret(self, purpose: str) -> bytes:
        """A random key kept in the storage, made once (a conditional write), the same
        for every process and instance on it: for what must verify across them."""


STORAGE: web.AppKey[Storage] = web.AppKey("storage", Storage)
