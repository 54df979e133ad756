"""The spool: events not yet delivered, kept where the files are kept.

One record per (event, webhook URL), so each receiver's retries are its own. An
event is spooled before the request that caused it is answered: once a client has
its 200, neither a restart nor a crash loses the event.

A storage offers the spool as a capability (`Spool`), as it offers resumable
uploads: local storage keeps one file per record in `<root>/.events/`, S3 one
object per record under `<prefix>.events/` (`s3spool`). A storage without one gets
a `MemorySpool`, which keeps nothing across a restart (and says so at start-up).

Several processes (`--workers`, or instances on one bucket) scan the same spool:
a record is delivered by whoever holds its claim, and only while holding it.
Local storage claims with `flock(2)` on the record's file (non-blocking: a record
another process holds is skipped; the kernel releases it when a holder dies, even by
SIGKILL); after locking, the path must still name the same file, else the record was
delivered and removed meanwhile. The time of the last attempt is the file's mtime
(0 until the first), set with `futimens` on the locked descriptor, so every process
follows one retry schedule.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar

from ..storage.base import StorageError
from ..storage.localfs import fsync_directory, storage_error
from .model import Event

log = logging.getLogger("streamproxy.events")

EVENTS_DIR: Final = ".events"
_NEW: Final = ".new-"
_SUFFIX: Final = ".json"
STALE_PUT: Final = 3600.0  # seconds after which a half-written record is a crash's leftover
_T = TypeVar("_T")


@dataclass(frozen=True)
class Pending:
    """One event on its way to one webhook."""

    key: str  # the record's name in the spool: its creation time first, so scans go oldest first
    url: str
    created: float
    body: bytes
    attempted: float = 0.0  # UNIX time of the last attempt; 0 before the first

    @classmethod
    def of(cls, event: Event, url: str) -> Pending:
        url_hash = hashlib.sha256(url.encode()).hexdigest()[:12]
        key = f"{int(event.created * 1000):013d}-{event.id.removeprefix('evt_')}-{url_hash}"
        return cls(key, url, event.created, event.body)

    @property
    def label(self) -> str:
        """For the log: the event's id and type, as the receiver sees them."""
        try:
            document = json.loads(self.body)
            return f"{document['id']} ({document['type']})"
        except (ValueError, KeyError, TypeError):
            return self.key

    def to_json(self) -> bytes:
        document = {
            "url": self.url,
            "created": self.created,
            "attempted": self.attempted,
            "body": self.body.decode(),
        }
        return json.dumps(document, ensure_ascii=False).encode()

    @classmethod
    def from_json(cls, key: str, raw: bytes) -> Pending:
        document: dict[str, Any] = json.loads(raw)
        return cls(
            key,
            str(document["url"]),
            float(document["created"]),
            str(document["body"]).encode(),
            float(document.get("attempted", 0.0)),
        )


class Claim(Protocol):
    """The right to deliver one record, held until the `claim` context ends."""

    pending: Pending

    async def attempted(self, at: float) -> None:
        """Record a failed attempt made at `at` (the schedule counts from it)."""

    async def done(self) -> None:
        """Remove the record: delivered, or given up."""


class Spool(Protocol):
    """Where pending events wait; see the module docstring."""

    description: str
    durable: bool  # kept across a restart

    async def start(self) -> None:
        """Prepare (create the directory); runs after the storage has started."""

    async def put(self, pending: Pending) -> None:
        """Keep a record durably; raises StorageError."""

    async def keys(self) -> list[str]:
        """Every record's key, oldest first."""

    def claim(self, key: str) -> AbstractAsyncContextManager[Claim | None]:
        """Claim a record: None when another holder has it or it is gone."""


# --- local storage ---------------------------------------------------------------------


class _LocalClaim:
    def __init__(self, spool: LocalSpool, fd: int, pending: Pending) -> None:
        self._spool = spool
        self._fd = fd
        self.pending = pending

    async def attempted(self, at: float) -> None:
        await self._spool.run(os.utime, self._fd, (at, at))
        self.pending = replace(self.pending, attempted=at)

    async def done(self) -> None:
        await self._spool.run(self._spool.remove_sync, self.pending.key)


class LocalSpool:
    """`<root>/.events/KEY.json`, one file per record; see the module docstring."""

    durable = True

    def __init__(
        self,
        root: Path,
        run_blocking: Callable[..., asyncio.Future[Any]],
        *,
        fsync: bool = True,
    ) -> None:
        self.directory = root / EVENTS_DIR
        self._run_blocking = run_blocking
        self._fsync = fsync
        self.description = f"local directory {self.directory}"

    def run(self, function: Callable[..., _T], *args: Any) -> asyncio.Future[_T]:
        return self._run_blocking(function, *args)

    def path(self, key: str) -> Path:
        return self.directory / (key + _SUFFIX)

    async def start(self) -> None:
        await self.run(self._start_sync)

    def _start_sync(self) -> None:
        """Make the directory; remove puts that a crash cut short (never records). Only
        old ones: another worker may be writing one now. ctime, since mtime is ours."""
        try:
            self.directory.mkdir(exist_ok=True)
        except OSError as error:
            raise StorageError(f"cannot create {self.directory}: {error.strerror}") from error
        cutoff = time.time() - STALE_PUT
        for entry in os.scandir(self.directory):
            with contextlib.suppress(FileNotFoundError):
                if entry.name.startswith(_NEW) and entry.stat().st_ctime < cutoff:
                    os.unlink(entry.path)

    async def put(self, pending: Pending) -> None:
        await self.run(self._put_sync, pending)

    def _put_sync(self, pending: Pending) -> None:
        staged = self.directory / (_NEW + pending.key)
        try:
            fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                view = memoryview(pending.to_json())
                while view:
                    view = view[os.write(fd, view) :]
                os.utime(fd, (0, 0))  # never attempted
                if self._fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(staged, self.path(pending.key))
            if self._fsync:
                fsync_directory(self.directory)
        except OSError as error:
            with contextlib.suppress(OSError):
                staged.unlink()
            raise storage_error(error, "spooling an event") from error

    async def keys(self) -> list[str]:
        return await self.run(self._keys_sync)

    def _keys_sync(self) -> list[str]:
        try:
            names = os.listdir(self.directory)
        except OSError as error:
            raise storage_error(error, "listing pending events") from error
        return sorted(
            name.removesuffix(_SUFFIX)
            for name in names
            if name.endswith(_SUFFIX) and not name.startswith(".")
        )

    @asynccontextmanager
    async def claim(self, key: str) -> AsyncIterator[Claim | None]:
        opened = await self.run(self._claim_sync, key)
        if opened is None:
            yield None
            return
        fd, pending = opened
        try:
            yield _LocalClaim(self, fd, pending)
        finally:
            os.close(fd)  # releases the flock

    def _claim_sync(self, key: str) -> tuple[int, Pending] | None:
        path = self.path(key)
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as error:
            raise storage_error(error, "opening a pending event") from error
        try:
            pending = self._read_locked(fd, path, key)
        except BaseException:
            os.close(fd)
            raise
        if pending is None:
            os.close(fd)
            return None
        return fd, pending

    def _read_locked(self, fd: int, path: Path, key: str) -> Pending | None:
        """Lock, check the path still names this file, read it; None if not ours to send."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None
        try:
            held = os.fstat(fd)
            current = os.stat(path, follow_symlinks=False)
            if (current.st_dev, current.st_ino) != (held.st_dev, held.st_ino):
                return None
            raw = _read_all(fd)
        except FileNotFoundError:
            return None
        except OSError as error:
            raise storage_error(error, "reading a pending event") from error
        try:
            return replace(Pending.from_json(key, raw), attempted=held.st_mtime)
        except (ValueError, KeyError, TypeError) as error:
            # Not a record this code wrote (or a disk's damage): it can never be sent.
            log.error("removing unreadable pending event %s: %s", path, error)
            self.remove_sync(key)
            return None

    def remove_sync(self, key: str) -> None:
        try:
            self.path(key).unlink()
        except FileNotFoundError:
            return
        except OSError as error:
            raise storage_error(error, "removing a delivered event") from error


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


# --- memory (a storage without a spool of its own) ------------------------------------------


class _MemoryClaim:
    def __init__(self, spool: MemorySpool, pending: Pending) -> None:
        self._spool = spool
        self.pending = pending

    async def attempted(self, at: float) -> None:
        self.pending = replace(self.pending, attempted=at)
        if self.pending.key in self._spool.records:
            self._spool.records[self.pending.key] = self.pending

    async def done(self) -> None:
        self._spool.records.pop(self.pending.key, None)


class MemorySpool:
    """Records in this process's memory: lost on exit. For a storage that offers no
    spool, and as the fallback when the storage refuses a record (disk full)."""

    durable = False
    description = "memory (lost on restart)"

    def __init__(self) -> None:
        self.records: dict[str, Pending] = {}
        self._held: set[str] = set()

    async def start(self) -> None:
        return None

    async def put(self, pending: Pending) -> None:
        self.records[pending.key] = pending

    async def keys(self) -> list[str]:
        return sorted(self.records)

    @asynccontextmanager
    async def claim(self, key: str) -> AsyncIterator[Claim | None]:
        pending = self.records.get(key)
        if pending is None or key in self._held:
            yield None
            return
        self._held.add(key)
        try:
            yield _MemoryClaim(self, pending)
        finally:
            self._held.discard(key)
