"""One-time claims in a local directory: `.claims/KEY`, created with `O_CREAT | O_EXCL`.

The kernel makes the create atomic, so of any number of processes on the host
(every `--workers` process, or several services on one directory over a local
file system) exactly one creates the file. The claim is fsynced with its
directory before it counts, so a claim that answered survives a power cut.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from .base import CLAIM_KEY_RE, CLAIMS_DIR
from .localfs import fsync_directory


def claims_dir(root: Path) -> Path:
    return root / CLAIMS_DIR


def _path(root: Path, key: str) -> Path:
    if not CLAIM_KEY_RE.match(key):
        raise ValueError(f"not a claim key: {key!r}")
    return claims_dir(root) / key


def claim(root: Path, key: str, record: bytes, durable: bool) -> bool:
    path = _path(root, key)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o644)
    except FileExistsError:
        return False
    except FileNotFoundError:
        # The first claim makes the directory (not start-up: a read-only store must start).
        path.parent.mkdir(exist_ok=True)
        if durable:
            fsync_directory(root)
        return claim(root, key, record, durable)
    try:
        os.write(fd, record)
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    if durable:
        fsync_directory(path.parent)
    return True


def is_claimed(root: Path, key: str) -> bool:
    return _path(root, key).exists()  # False while the directory does not exist yet


def forget_before(root: Path, cutoff: float) -> int:
    """Remove claims whose files are older than `cutoff` (a UNIX time)."""
    removed = 0
    try:
        entries = list(os.scandir(claims_dir(root)))
    except FileNotFoundError:
        return 0  # no claim made yet
    for entry in entries:
        with contextlib.suppress(FileNotFoundError):
            if entry.stat().st_mtime < cutoff:
                os.unlink(entry.path)
                removed += 1
    return removed


def release(root: Path, key: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        _path(root, key).unlink()
