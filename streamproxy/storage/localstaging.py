"""The staging area of local storage: where an upload waits, and how it is published.

An upload's bytes go to an unnamed file (`O_TMPFILE`) in `.tmp` where the file
system allows it: nothing to clean up after a crash, and no name to create and
remove (on this project's test machine that made the whole commit six times
cheaper). Elsewhere a named file in `.tmp` stands in.

The metadata goes into an extended attribute of the staged file (`attach`) where
the file system has them: the fsync of the file then makes bytes and metadata
durable together, and publishing (`link_attached`) is one `link` that fails if the
name is taken, then one directory fsync, shared by the commits waiting for it at
the same time (`QueuedSync`: the writer's commit hears of it on the event loop, so
that no thread sits waiting). Where there are no extended attributes (or the metadata does
not fit in one), and for a completed resumable upload (which links its own data
file), a sidecar `.meta/NAME.json` is written, fsynced and linked first, claiming
the name (`claim_with_sidecar`, its directory fsyncs grouped by `GroupSync`); the
bytes follow, so a visible file always has its metadata either way.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import threading
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

from .localfs import META_DIR, META_XATTR, TMP_DIR, fsync_directory, storage_error

log = logging.getLogger("streamproxy.storage")

# The attribute cannot be set: none on this file system, or the metadata too big for it.
_NO_XATTR = {errno.ENOTSUP, errno.EOPNOTSUPP, errno.E2BIG, errno.ERANGE, errno.ENOSPC, errno.EPERM}


class GroupSync:
    """Group commit of one directory's fsyncs: a caller whose link is done waits for an
    fsync of the directory that started after it; one fsync serves every caller that
    arrived before it began, and the callers who come while it runs share the next."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._changes = threading.Condition()
        self._arrived = 0  # callers so far, each after its own change
        self._synced = 0  # callers covered by a finished fsync
        self._running = False

    def sync(self) -> None:
        with self._changes:
            self._arrived += 1
            ticket = self._arrived
            while self._synced < ticket:
                if self._running:
                    self._changes.wait()
                    continue
                self._running, covers = True, self._arrived
                self._changes.release()
                try:
                    fsync_directory(self._path)
                finally:
                    self._changes.acquire()
                    self._running = False
                    self._changes.notify_all()
                # Only reached when the fsync succeeded; a failure reaches the caller that
                # ran it, and the others covered by it try again themselves.
                self._synced = covers


SyncReport = Callable[[BaseException | None], None]
"""Told, on a storage thread, that an fsync covering a change has finished (None) or
failed (its error)."""


class QueuedSync:
    """Group commit of one directory's fsyncs without a waiting thread per caller.

    `GroupSync` keeps each caller's thread blocked until the shared fsync is done;
    among dozens of small uploads that is dozens of threads woken together, each
    taking the GIL back only to return. Here a caller whose link is done queues a
    report and its thread moves on; one call on the storage threads runs the fsyncs,
    each covering every report queued before it began, and calls those reports (with
    its error, if it failed: none is told its link is durable when it is not). A
    writer's report is the last part of its commit's `Settler`, so the event loop
    hears of a commit once, when it is durable.
    """

    def __init__(self, path: Path, submit: Callable[[Callable[[], None]], None]) -> None:
        self._path = path
        self._submit = submit
        self._lock = threading.Lock()
        self._queued: list[SyncReport] = []
        self._running = False

    def after_next_sync(self, report: SyncReport) -> None:
        """Call `report` once an fsync of the directory that started after this call has
        finished. Called on a worker thread, after the change to cover."""
        with self._lock:
            self._queued.append(report)
            if self._running:
                return
            self._running = True
        try:
            self._submit(self._run)
        except Exception:  # the storage is closing: run the fsync on this thread
            self._run()

    def _run(self) -> None:
        while True:
            with self._lock:
                queued, self._queued = self._queued, []
                if not queued:
                    self._running = False
                    return
            error: BaseException | None = None
            try:
                fsync_directory(self._path)
            except OSError as failure:
                error = failure
            for report in queued:
                with suppress(RuntimeError):  # its loop is closed: nobody waits any more
                    report(error)


class StagingArea:
    """`.tmp` under a storage root, and the commit into the root; blocking calls only."""

    def __init__(
        self, root: Path, *, fsync: bool, submit: Callable[[Callable[[], None]], None]
    ) -> None:
        self.root = root
        self.meta_dir = root / META_DIR
        self.tmp_dir = root / TMP_DIR
        self.fsync = fsync
        self.unnamed = False  # unnamed temporaries work here: decided by `probe`
        self.xattrs = False  # metadata goes in an extended attribute: decided by `probe`
        self._root_sync = GroupSync(root)
        self.root_synced = QueuedSync(root, submit)  # for `link_attached`
        self._meta_sync = GroupSync(self.meta_dir)
        self._proc_fd: int | None = None
        self._temporaries = itertools.count(1)

    def temporary_name(self) -> str:
        """Unique among the processes sharing the directory: pid and a counter
        (files are created with O_EXCL, so a clash would fail, never overwrite)."""
        return f"{os.getpid()}-{next(self._temporaries)}"

    def probe(self) -> None:
        """What this file system offers: unnamed temporaries, extended attributes."""
        self._probe_unnamed()
        self._probe_xattrs()

    def _probe_xattrs(self) -> None:
        """Can a staged file carry the metadata in a user extended attribute? (ext4, XFS,
        btrfs, tmpfs since Linux 6.6; not every NFS.) Otherwise sidecar files are used."""
        self.xattrs = False
        probe = self.tmp_dir / f"xattr-{self.temporary_name()}.probe"
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except OSError:
            log.info("cannot probe %s for extended attributes; using metadata files", self.tmp_dir)
            return
        try:
            os.setxattr(fd, META_XATTR, b"{}")
            self.xattrs = os.getxattr(fd, META_XATTR) == b"{}"
        except (OSError, AttributeError):
            log.info("no extended attributes in %s; using metadata files", self.tmp_dir)
        finally:
            os.close(fd)
            with suppress(OSError):
                probe.unlink()

    def _probe_unnamed(self) -> None:
        """Can this file system create an unnamed file and link it in? (Linux, most local
        file systems; not NFS.) Otherwise named temporaries in `.tmp` are used."""
        self.unnamed = False
        try:
            self._proc_fd = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            fd = os.open(self.tmp_dir, os.O_WRONLY | os.O_TMPFILE | os.O_CLOEXEC, 0o644)
        except (OSError, AttributeError):
            log.info("unnamed temporary files unavailable in %s; using named ones", self.tmp_dir)
            return
        probe = self.tmp_dir / f"probe-{self.temporary_name()}"
        try:
            os.link(str(fd), probe, src_dir_fd=self._proc_fd)
            probe.unlink()
            self.unnamed = True
        except OSError:
            log.info("cannot link unnamed files in %s; using named temporaries", self.tmp_dir)
        finally:
            os.close(fd)

    def close(self) -> None:
        if self._proc_fd is not None:
            os.close(self._proc_fd)
            self._proc_fd = None

    def create_temporary(self) -> tuple[int, Path | None]:
        """A new temporary open for writing, and its path (None when it has no name)."""
        try:
            if self.unnamed:
                flags = os.O_WRONLY | os.O_TMPFILE | os.O_CLOEXEC
                return os.open(self.tmp_dir, flags, 0o644), None
            path = self.tmp_dir / f"{self.temporary_name()}.part"
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
            return os.open(path, flags, 0o644), path
        except OSError as error:
            raise storage_error(error, "creating a temporary file") from error

    def attach(self, fd: int, metadata: bytes) -> bool:
        """Put the metadata on the staged file, before its fsync; False where it cannot
        go there (the commit then writes a sidecar)."""
        if not self.xattrs:
            return False
        try:
            os.setxattr(fd, META_XATTR, metadata)
        except OSError as error:
            if error.errno in _NO_XATTR:
                return False
            raise
        return True

    def link_attached(self, name: str, fd: int, path: Path | None) -> bool:
        """Publish a staged file whose metadata is attached (`attach`, before its fsync)
        under `name`: one link; False if the name is taken. Less the directory fsync:
        the caller has `root_synced` cover the link (with fsync on) before it answers."""
        try:
            self._link(fd, path, name)
        except FileExistsError:
            return False
        return True

    def _link(self, fd: int, path: Path | None, name: str) -> None:
        """Give the staged file its name; fails rather than replace a file."""
        if path is None:  # an unnamed temporary: link it through /proc/self/fd
            os.link(str(fd), self.root / name, src_dir_fd=self._proc_fd)
        else:
            os.link(path, self.root / name)

    def claim_with_sidecar(self, name: str, metadata: bytes, fd: int, path: Path | None) -> bool:
        """Publish metadata then bytes under `name`; False if the name is taken.

        Creating the metadata file with O_EXCL claims the name atomically; the bytes
        are linked in only once it is complete, so a visible file always has its
        metadata. Linking fails rather than replace a file that is already there.
        """
        meta_path = self.meta_dir / f"{name}.json"
        try:
            meta_fd = os.open(meta_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            return False
        try:
            try:
                os.write(meta_fd, metadata)
                if self.fsync:
                    os.fsync(meta_fd)
            finally:
                os.close(meta_fd)
            self._link(fd, path, name)
        except FileExistsError:
            # Bytes without metadata under that name (copied in by hand): leave them be.
            meta_path.unlink()
            return False
        except BaseException:
            meta_path.unlink()
            raise
        if self.fsync:
            self._meta_sync.sync()
            self._root_sync.sync()
        return True

    def check_writable(self) -> None:
        """Write and remove a small file in `.tmp`; raises a StorageError when that fails."""
        probe = self.tmp_dir / f"ready-{self.temporary_name()}.probe"
        try:
            with open(probe, "xb") as file:
                file.write(b"ok")
        except OSError as error:
            raise storage_error(error, f"writing to {self.tmp_dir}") from error
        finally:
            with suppress(OSError):
                probe.unlink()
