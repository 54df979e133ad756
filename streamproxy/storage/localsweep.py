"""Retention and clean-up for local storage: expired files and stale staged data.

Blocking functions, run on the storage's threads.
"""

from __future__ import annotations

import logging
import os
from contextlib import suppress
from pathlib import Path

from .localfs import META_DIR, TMP_DIR, mtime

log = logging.getLogger("streamproxy.storage")


def delete_older_than(root: Path, cutoff: float) -> int:
    """Delete stored files whose metadata is older than `cutoff` (a timestamp)."""
    deleted = 0
    with os.scandir(root / META_DIR) as entries:
        for entry in entries:
            if not entry.name.endswith(".json") or mtime(entry) >= cutoff:
                continue
            name = entry.name.removesuffix(".json")
            # Bytes first: the name stops being visible before its metadata goes.
            with suppress(FileNotFoundError):
                (root / name).unlink()
                deleted += 1
                log.info("retention: deleted %s", name)
            with suppress(FileNotFoundError):
                os.unlink(entry.path)
    return deleted


def remove_stale(root: Path, cutoff: float) -> int:
    """Remove temporaries, and metadata whose bytes never arrived, older than `cutoff`."""
    removed = 0
    with os.scandir(root / TMP_DIR) as entries:
        for entry in entries:
            if mtime(entry) < cutoff:
                with suppress(FileNotFoundError):
                    os.unlink(entry.path)
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
