"""The resumable capability of a storage, as an async protocol of its own.

A storage that can keep an unfinished upload between requests offers an `UploadStore`
(local storage: localupload.py over localstore.UploadArea; S3 plugs in with the same
method names). The routes only ever see this protocol; a storage without one has no
resumable routes to offer, and they answer 501 `not_implemented` (routes.py).

The shape follows localstore's API, made async:

- `create(record)` makes an upload whole or not at all; `read(id)` is the acknowledged
  record, lock-free; `expired(now)` lists what retention removes; `link` / `linked`
  note beside a partial upload which final uploads wait for it (assembly.py).
- `hold(id)` is the exclusive right to write one upload (409 busy for a second writer,
  across workers and, on S3, instances); `hold(id, take_over=True)` and `settled(id)`
  first stop an older append still running on it (the draft's rule, takeover.py).
  Under it, a `HeldUpload` appends one request's bytes through a writer the pump can
  drive (`appender`), acknowledges them durably, saves records that move no bytes
  (finish, commit, fail), removes the upload, reads the stored bytes back once (the
  virus scan), and turns the completed data into a staged file (`staged`) that
  `StorageWriter.commit(names, info)` publishes: naming, metadata and never-replace
  are the very code `POST /files` commits with.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from aiohttp import web

from ..storage.base import Observer, Piece, StorageWriter
from .state import UploadRecord
from .takeover import AppendStop


class AppendWriter(StorageWriter, Protocol):
    """One request's bytes after the acknowledged offset; what the pump writes into.

    `write` calls the observer on each piece in the same trip off the loop (the running
    MD5 is saved only for bytes written). `commit` is not for appends; `abort` waits for
    the writes in flight and keeps them (the route decides: acknowledge or discard).
    """

    @property
    def written(self) -> int:
        """Bytes of this request written so far (not yet acknowledged)."""

    def write(self, pieces: Sequence[Piece]) -> Awaitable[None]: ...

    async def discard(self) -> None:
        """Forget this request's bytes: back to the record's offset."""

    async def acknowledge(self, record: UploadRecord) -> None:
        """Make `record` (offset + written) the truth, durably, before it is answered."""


class HeldUpload(Protocol):
    """One upload under its lock; see the module docstring."""

    @property
    def record(self) -> UploadRecord:
        """The acknowledged record, as read under the lock (and as saved since)."""

    @property
    def stop(self) -> AppendStop:
        """Set when a newer request asks this one to let go (an append's body reads watch it)."""

    def appender(self, observer: Observer) -> AbstractAsyncContextManager[AppendWriter]:
        """A writer after the record's offset; closed on leaving."""

    async def save(self, record: UploadRecord) -> None:
        """Replace the record (no bytes move: finish, commit, fail, cancel)."""

    def staged(self) -> StorageWriter:
        """The completed data as a staged file, for the normal commit."""

    def stored_bytes(self) -> AsyncIterator[bytes]:
        """The bytes received, read once from the start (the virus scan)."""

    async def remove(self) -> None:
        """Delete the upload: its record, bytes and lock (cancel, expiry)."""


class UploadStore(Protocol):
    """A storage's resumable capability."""

    async def prepare(self, now: float) -> None:
        """At start-up: the area exists; creations that never finished are dropped."""

    async def create(self, record: UploadRecord) -> None:
        """A new upload, durable before its Location is sent."""

    async def read(self, upload_id: str) -> UploadRecord:
        """The acknowledged record (NotFound if there is none)."""

    def hold(
        self, upload_id: str, *, take_over: bool = False
    ) -> AbstractAsyncContextManager[HeldUpload]:
        """The upload's lock now, or Busy (409); NotFound if it is gone. With `take_over`
        (draft requests), an append holding it is stopped first and waited for, briefly."""

    async def settled(self, upload_id: str) -> UploadRecord:
        """The acknowledged record once no append of it is running (the draft's offset
        retrieval): one still running is stopped and waited for; Busy if it holds on."""

    async def expired(self, now: float) -> list[str]:
        """Uploads for retention to remove: expired, cancelled or unreadable."""

    async def link(self, part_id: str, final_id: str) -> None:
        """Note beside a partial upload that a final upload waits for it (tus
        concatenation-unfinished), durably; removed with the part. Takes no lock, so a
        PATCH in flight on the part neither blocks it nor is blocked. NotFound if the
        part is gone."""

    async def linked(self, part_id: str) -> list[str]:
        """The final uploads linked to a partial upload (none once it is removed)."""

    async def remove_orphans(self, now: float) -> dict[str, int]:
        """Retention: remove what a removal or a take-over raced past and left behind
        once its upload is gone; how many went, by the metric's label: `marker` (stop
        markers, links), `leftover` (S3: parts, tails, multipart uploads a fenced writer
        wrote; local: a removed upload's directory its removal could not delete)."""

    async def remove_unreadable(self, upload_id: str) -> bool:
        """Remove an upload whose record cannot be read (`hold` raises CorruptRecord on
        it), under its lock; False when it is busy, gone or readable after all."""


UPLOAD_STORE: web.AppKey[UploadStore | None] = web.AppKey("upload_store")
"""The app's upload store; None when its storage has no resumable capability."""
