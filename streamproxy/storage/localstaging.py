"""The staging area of local storage: where an upload waits, and how it is published.

An upload's bytes go to an unnamed file (`O_TMPFILE`) in `.tmp` where the file
system allows it: nothing to clean up after a crash, and no name to create and
remove (on this project's test machine that made the whole commit six times
cheaper). Elsewhere a named file in `.tmp` stands in. Publishing (`claim`) links
the metadata, then the bytes, under a name that must be free.
"""

from __future__ import annotations

import itertools
import logging
import os
from contextlib import suppress
from pathlib import Path

from .localfs import META_DIR, TMP_DIR, fsync_directory, storage_error

log = logging.getLogger("streamproxy.storage")


class StagingArea:
    """`.tmp` under a storage root, and the commit into the root; blocking calls only."""

    def __init__(self, root: Path, *, fsync: bool) -> None:
        self.root = root
        self.meta_dir = root / META_DIR
        self.tmp_dir = root / TMP_DIR
        self.fsync = fsync
        self.unnamed = False  # unnamed temporaries work here: decided by `probe`
        self._proc_fd: int | None = None
        self._temporaries = itertools.count(1)

    def temporary_name(self) -> str:
        """Unique among the processes sharing the directory: pid and a counter
        (files are created with O_EXCL, so a clash would fail, never overwrite)."""
        return f"{os.getpid()}-{next(self._temporaries)}"

    def probe(self) -> None:
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

    def claim(self, name: str, metadata: bytes, fd: int, path: Path | None) -> bool:
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
            if path is None:  # an unnamed temporary: link it through /proc/self/fd
                os.link(str(fd), self.root / name, src_dir_fd=self._proc_fd)
            else:
                os.link(path, self.root / name)
        except FileExistsError:
            # Bytes without metadata under that name (copied in by hand): leave them be.
            meta_path.unlink()
            return False
        except BaseException:
            meta_path.unlink()
            raise
        if self.fsync:
            fsync_directory(self.meta_dir)
            fsync_directory(self.root)
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
