"""Retention and clean-up for local storage: expired files and stale staged data.

Blocking functions, run on the storage's threads. `.tmp` is the storage's own:
anything stale there goes, a directory too (this code never makes one, so it is
a leftover of something else). An entry that cannot be removed stops the sweep
with a StorageError; retention logs and counts it and sweeps again later.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import TypeVar

from .base import StorageError
from .localfs import META_DIR, TMP_DIR, mtime, read_attached

_T = TypeVar("_T")

log = logging.getLogger("streamproxy.storage")


def sweeping(doing: str, function: Callable[[Path, float], _T], root: Path, cutoff: float) -> _T:
    """Run a sweep; any OS error becomes a StorageError that says what was being done."""
    try:
        return function(root, cutoff)
    except OSError as error:
        where = f" {error.filename}" if error.filename else ""
        raise StorageError(f"{doing} failed at{where}: {error.strerror}") from error


def _remove(entry: os.DirEntry[str]) -> None:
    if entry.is_dir(follow_symlinks=False):
        shutil.rmtree(entry.path)
    else:
        os.unlink(entry.path)


def delete_older_than(root: Path, cutoff: float) -> int:
    """Delete stored files last written before `cutoff` (a timestamp). A stored file
    has metadata, attached or in a sidecar; files copied in by hand are left alone."""
    deleted = 0
    meta_dir = root / META_DIR
    with os.scandir(root) as entries:
        for entry in entries:
            if (
                entry.name.startswith(".")
                or not entry.is_file(follow_symlinks=False)
                or mtime(entry) >= cutoff
            ):
                continue
            sidecar = meta_dir / f"{entry.name}.json"
            with suppress(FileNotFoundError):
                if read_attached(Path(entry.path)) is None and not sidecar.exists():
                    continue
                # Bytes first: the name stops being visible before its metadata goes.
                os.unlink(entry.path)
                deleted += 1
                log.info("retention: deleted %s", entry.name)
            with suppress(FileNotFoundError):
                sidecar.unlink()
    return deleted


def remove_stale(root: Path, cutoff: float) -> int:
    """Remove temporaries, and metadata whose bytes never arrived, older than `cutoff`."""
    removed = 0
    with os.scandir(root / TMP_DIR) as entries:
        for entry in entries:
            if mtime(entry) < cutoff:
                with suppress(FileNotFoundError):
                    _remove(entry)
                    removed += 1
    # Metadata whose bytes never arrived (a crash between the two links).
    with os.scandir(root / META_DIR) as entries:
        for entry in entries:
            name = entry.name.removesuffix(".json")
            if mtime(entry) < cutoff and not (root / name).exists():
                with suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
    return removed


def remove_temporaries(tmp_dir: Path) -> int:
    """Delete what an earlier run left half-written; nothing there was ever visible."""
    removed = 0
    with suppress(FileNotFoundError):
        for entry in tmp_dir.iterdir():
            with suppress(FileNotFoundError, IsADirectoryError):
                entry.unlink()
                removed += 1
    return removed
