"""Local storage's resumable capability: partial bytes and the record, under the root.

    <root>/.uploads/<id>/data    the bytes received so far (maybe more than acknowledged)
    <root>/.uploads/<id>/info    the UploadRecord (state.py) as JSON: the truth
    <root>/.uploads/<id>/lock    flock(2)ed by the one request writing this upload
    <root>/.uploads/<id>/final.<final id>   a final upload waits for this partial one
    <root>/.uploads/.stop/<id>   touched by a newer draft request: the holder, whatever
                                 process it is in, lets go (takeover.py)
    <root>/.uploads/.new-<id>/   a creation in progress, renamed into place when whole
    <root>/.uploads/.new-<id>-removed/   a removal in progress (renamed, then deleted)

The directory starts with a dot, so no download can reach it (as `.meta` and `.tmp`).

Durability: an append is acknowledged (its offset answered) only after the data file is
fdatasync'ed and then the info file is replaced atomically (write, fsync, rename, fsync
of the directory). A crash or SIGKILL at any point leaves the last acknowledged record,
and data at least that long; the next appender truncates the unacknowledged tail, so
the offset the client hears is always the offset the next append continues from.

Locking: `flock(LOCK_EX | LOCK_NB)` on the lock file, per upload. It holds across
`--workers` processes (each open file description is its own owner, so also between
two requests in one process), a second writer gets 409 busy at once instead of waiting,
and the kernel drops it when the holder dies (even by SIGKILL): a resumed request needs
no lease timeout on local storage. After locking, the lock file must still be the one
in the upload's directory, else the upload was removed meanwhile (404).

A newer draft request (takeover.py) touches `.stop/<id>` and tries the lock again for a
few seconds. The markers share one directory so that a process's watcher lists it once
per look, whatever the number of appends it runs (a marker per upload directory took a
stat per running append per look); only a marker of an upload the process holds is
stat'ed, for its mtime (newer than the holder's lock time: a marker left behind stops
nobody). The holder ends its append at the next read of the body and lets go. The
marker is removed by the newer request once it holds the lock or gives up, by a holder
that was asked as it lets go, with the upload, and, if all of those missed it (a
process killed meanwhile), by retention's sweep (`remove_orphans`).

A removal renames the upload's directory to `.new-<id>-removed` and deletes it. A link
(`final.<id>`, written without the lock) whose path was looked up before the rename
lands in that directory; if it lands after the delete listed the directory, the last
rmdir fails and the directory stays (so does one whose removal's process died).
Retention's sweep deletes such a directory once untouched for `STALE_REMOVAL` seconds
(`remove_leftovers`); start-up deletes old ones too (`prepare`).

The calls block (file I/O and fsync): the routes run them on the storage's worker thread.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from ..storage.localfs import WRITEBACK_EVERY, fsync_directory, start_writeback
from .problems import Busy, NotFound
from .state import CorruptRecord, Status, UploadRecord, is_valid_id

UPLOADS_DIR: Final = ".uploads"
_STAGING: Final = ".new-"
_FINAL_LINK: Final = "final."
STOPS_DIR: Final = ".stop"
_REMOVED: Final = "-removed"
STALE_REMOVAL: Final = 60.0
"""Seconds after which a removed upload's directory still there is swept: its removal
deletes it right after the rename. (Were the sweep to meet one still being deleted, two
`rmtree`s that ignore a missing entry would only share the work.)"""
STALE_STOP: Final = 60.0
"""Seconds after which a stop marker nobody touched is swept: a waiting request touches
its marker every few hundredths of a second, and waits for seconds (TAKE_OVER_WAIT)."""
_CREATE: Final = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC


class UploadLock:
    """The exclusive right to write one upload, held until close()."""

    def __init__(self, upload_id: str, fd: int) -> None:
        self.upload_id = upload_id
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor releases the flock
            self._fd = None


class Appender:
    """Writes one request's bytes after the acknowledged offset, and acknowledges them."""

    def __init__(self, area: UploadArea, lock: UploadLock, record: UploadRecord) -> None:
        if not lock.held or lock.upload_id != record.id:
            raise Busy("appending needs this upload's lock")
        self._area = area
        self._lock = lock
        self.record = record
        self.written = 0
        self._written_back = 0  # of `written`: handed to the disk already
        self._fd = os.open(area.path(record.id) / "data", os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.ftruncate(self._fd, record.offset)  # drop what was never acknowledged
            os.lseek(self._fd, record.offset, os.SEEK_SET)
        except BaseException:
            os.close(self._fd)
            raise

    def write(self, piece: bytes | bytearray | memoryview) -> None:
        view = memoryview(piece).cast("B")
        while view:
            done = os.write(self._fd, view)
            view = view[done:]
            self.written += done
        self._start_writeback()

    def _start_writeback(self) -> None:
        """Hand each 8 MiB to the disk as it is written, as `POST /files` does, so the
        acknowledgement's fdatasync finds little left instead of the whole PATCH."""
        pending = self.written - self._written_back
        if self._area.fsync and start_writeback is not None and pending >= WRITEBACK_EVERY:
            start_writeback(self._fd, self.record.offset + self._written_back, pending)
            self._written_back = self.written

    def discard(self) -> None:
        """Forget this request's bytes (tus checksum mismatch): back to the record's offset."""
        os.ftruncate(self._fd, self.record.offset)
        os.lseek(self._fd, self.record.offset, os.SEEK_SET)
        self.written = self._written_back = 0

    def acknowledge(self, record: UploadRecord) -> None:
        """Make `record` (offset + written) the truth: data durable first, then the info."""
        if record.id != self.record.id or record.offset != self.record.offset + self.written:
            raise ValueError(
                f"record at offset {record.offset} does not follow "
                f"{self.record.offset} + {self.written} written bytes"
            )
        if not self._lock.held:
            raise Busy("the lock was released before the append was acknowledged")
        if self._area.fsync:
            os.fdatasync(self._fd)
        self._area.write_info(record)
        self.record = record
        self.written = self._written_back = 0

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> Appender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class UploadArea:
    """The `.uploads` directory of one local storage root."""

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.dir = root / UPLOADS_DIR
        self.stops = self.dir / STOPS_DIR
        self.fsync = fsync

    def prepare(self, now: float, *, stale_after: float = 3600.0) -> None:
        """At start-up: make the area, and drop creations and removals that never
        finished (only old ones: another worker may be creating one right now)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        for entry in self.dir.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if entry.name.startswith(_STAGING) and entry.stat().st_mtime < now - stale_after:
                    shutil.rmtree(entry, ignore_errors=True)

    def path(self, upload_id: str) -> Path:
        if not is_valid_id(upload_id):
            raise NotFound("no such upload")
        return self.dir / upload_id

    def create(self, record: UploadRecord) -> None:
        """A new upload, whole or not at all: staged, then renamed into place."""
        target = self.path(record.id)
        staging = self.dir / f"{_STAGING}{record.id}"
        staging.mkdir(parents=True)  # the area too, if start-up could not make it
        try:
            (staging / "data").touch()
            (staging / "lock").touch()
            self._write_file(staging / "info", record.to_json())
            if self.fsync:
                fsync_directory(staging)
            os.rename(staging, target)  # fails if the id exists: ids are never reused
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        if self.fsync:
            fsync_directory(self.dir)

    def read(self, upload_id: str) -> UploadRecord:
        """The acknowledged record; 404 if there is none. Needs no lock (atomic replace)."""
        try:
            data = (self.path(upload_id) / "info").read_bytes()
        except FileNotFoundError as error:
            raise NotFound("no such upload") from error
        return UploadRecord.from_json(data)

    def write_info(self, record: UploadRecord) -> None:
        directory = self.path(record.id)
        temporary = directory / "info.tmp"
        try:
            self._write_file(temporary, record.to_json())
            os.replace(temporary, directory / "info")
        except FileNotFoundError as error:  # cancelled or expired meanwhile
            raise NotFound("the upload was removed") from error
        if self.fsync:
            fsync_directory(directory)

    def _write_file(self, path: Path, data: bytes) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)

    def lock(self, upload_id: str) -> UploadLock:
        """The upload's lock now, or 409 busy; 404 if the upload is not (or no longer) there."""
        path = self.path(upload_id) / "lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError as error:
            raise NotFound("no such upload") from error
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise Busy("another request is writing this upload") from error
            raise
        try:
            still_there = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            still_there = False
        if not still_there:
            os.close(fd)
            raise NotFound("the upload was removed")
        return UploadLock(upload_id, fd)

    @contextlib.contextmanager
    def locked(self, upload_id: str) -> Iterator[UploadLock]:
        lock = self.lock(upload_id)
        try:
            yield lock
        finally:
            lock.close()

    def ask_to_stop(self, upload_id: str) -> None:
        """Touch the upload's stop marker: the holder's process sees a time after its
        lock's. NotFound if the upload is gone (a marker made meanwhile is withdrawn by
        the caller, or swept)."""
        if not (self.path(upload_id) / "lock").exists():
            raise NotFound("no such upload")
        path = self.stops / upload_id
        try:
            fd = os.open(path, _CREATE, 0o644)
        except FileNotFoundError:  # made at the first take-over, not before
            self.stops.mkdir(exist_ok=True)
            fd = os.open(path, _CREATE, 0o644)
        os.close(fd)
        os.utime(path)

    def stops_asked(self, held: dict[str, float]) -> list[str]:
        """Of `held` (upload id: the holder's lock time, wall clock), the uploads whose
        marker was touched after that time: one listing, a stat only for a match. (An
        mtime comes from the kernel's coarse clock, a few ms behind: a touch just after
        the lock can read as older; the asker touches again at each try.)"""
        try:
            names = os.listdir(self.stops)
        except FileNotFoundError:
            return []
        asked = []
        for upload_id in held.keys() & set(names):
            with contextlib.suppress(FileNotFoundError):
                if (self.stops / upload_id).stat().st_mtime > held[upload_id]:
                    asked.append(upload_id)
        return asked

    def withdraw_stop(self, upload_id: str) -> None:
        if is_valid_id(upload_id):
            with contextlib.suppress(FileNotFoundError):
                (self.stops / upload_id).unlink()

    def remove_orphans(self, now: float) -> int:
        """Retention: stop markers of uploads that are gone, or that nobody has touched
        for `STALE_STOP` seconds (their asker was killed before it withdrew them)."""
        try:
            entries = list(os.scandir(self.stops))
        except FileNotFoundError:
            return 0
        removed = 0
        for entry in entries:
            with contextlib.suppress(FileNotFoundError):
                gone = not is_valid_id(entry.name) or not (self.dir / entry.name).exists()
                if gone or entry.stat().st_mtime < now - STALE_STOP:
                    os.unlink(entry.path)
                    removed += 1
        return removed

    def remove_leftovers(self, now: float) -> int:
        """Retention: directories of removed uploads their removal could not delete (a
        link landed in one meanwhile, or the process died), untouched for
        `STALE_REMOVAL` seconds; how many went. Creations in progress are not touched."""
        try:
            entries = list(os.scandir(self.dir))
        except FileNotFoundError:
            return 0
        removed = 0
        for entry in entries:
            if not (entry.name.startswith(_STAGING) and entry.name.endswith(_REMOVED)):
                continue
            with contextlib.suppress(FileNotFoundError):
                if entry.stat(follow_symlinks=False).st_mtime < now - STALE_REMOVAL:
                    shutil.rmtree(entry.path, ignore_errors=True)
                    removed += not os.path.lexists(entry.path)
        return removed

    def appender(self, lock: UploadLock, record: UploadRecord) -> Appender:
        return Appender(self, lock, record)

    def remove(self, lock: UploadLock) -> None:
        """Cancel or expire: the directory goes (holding the lock, so no writer is inside)."""
        directory = self.path(lock.upload_id)
        doomed = self.dir / f"{_STAGING}{lock.upload_id}{_REMOVED}"
        os.rename(directory, doomed)  # gone for readers at once, then deleted
        self.withdraw_stop(lock.upload_id)
        shutil.rmtree(doomed, ignore_errors=True)
        if self.fsync:
            fsync_directory(self.dir)

    def link(self, part_id: str, final_id: str) -> None:
        """Note beside partial upload `part_id` that final upload `final_id` waits for it
        (concatenation-unfinished); it goes with the part. Needs no lock: an empty file
        of its own, never the record a PATCH in flight holds."""
        if not is_valid_id(final_id):
            raise ValueError(f"not an upload id: {final_id!r}")
        directory = self.path(part_id)
        try:
            os.close(os.open(directory / f"{_FINAL_LINK}{final_id}", _CREATE, 0o644))
        except FileNotFoundError as error:
            raise NotFound("the partial upload was removed") from error
        if self.fsync:
            fsync_directory(directory)

    def linked(self, part_id: str) -> list[str]:
        """The final uploads that wait for partial upload `part_id` (see link)."""
        try:
            names = os.listdir(self.path(part_id))
        except FileNotFoundError:
            return []
        finals = (name.removeprefix(_FINAL_LINK) for name in names if name.startswith(_FINAL_LINK))
        return sorted(final_id for final_id in finals if is_valid_id(final_id))

    def ids(self) -> list[str]:
        try:
            return sorted(e.name for e in self.dir.iterdir() if is_valid_id(e.name))
        except FileNotFoundError:
            return []

    def expired(self, now: float) -> list[str]:
        """Uploads for retention to remove: past their expiry, cancelled, or unreadable."""
        due = []
        for upload_id in self.ids():
            try:
                record = self.read(upload_id)
            except NotFound:
                continue  # removed meanwhile
            except CorruptRecord:
                due.append(upload_id)
                continue
            if now >= record.expires or record.status is Status.CANCELLED:
                due.append(upload_id)
        return due
