"""Deletion, a conversation's listing and erasure, and shared secrets, for local storage.

Blocking functions, run on the storage's threads. A commit links the metadata,
then the bytes (`localstaging`), so deletion goes the other way: the bytes
first (the name stops being visible to stat, listings and downloads in one
unlink), then the metadata. A crash in between leaves metadata without bytes,
which still names its conversation: erasure therefore looks for the
conversation's names in `.meta`, so running it again finds and removes them.

A download that opened the file before the unlink keeps the inode through its
descriptor and finishes with the original bytes, even if a new upload takes the
name meanwhile.
"""

from __future__ import annotations

import logging
import os
import secrets
from contextlib import suppress
from pathlib import Path

from .base import FileInfo, FileMissing, StoredMeta
from .localfs import META_DIR, TMP_DIR, fsync_directory

log = logging.getLogger("streamproxy.storage")

KEYS_DIR = ".keys"  # shared secrets; a dot name, so never a stored file
SECRET_BYTES = 32


def _meta_path(root: Path, name: str) -> Path:
    return root / META_DIR / f"{name}.json"


def _read_info(root: Path, name: str) -> FileInfo | None:
    """The metadata of `name`, or None when it is gone or unreadable (logged)."""
    try:
        return FileInfo.from_json(_meta_path(root, name).read_bytes())
    except FileNotFoundError:
        return None
    except (ValueError, TypeError, KeyError) as error:
        log.warning("metadata of %r is unreadable: %s", name, error)
        return None


def _remove(root: Path, name: str, fsync: bool) -> bool:
    """Bytes, then metadata; True when the bytes were there (the file was visible)."""
    try:
        (root / name).unlink()
        existed = True
    except FileNotFoundError:
        existed = False
    with suppress(FileNotFoundError):
        _meta_path(root, name).unlink()
    if fsync:
        fsync_directory(root)
        fsync_directory(root / META_DIR)
    return existed


def delete_file(root: Path, name: str, fsync: bool) -> None:
    """Delete one stored file; FileMissing when no visible file has that name.

    Bytes without metadata are not a stored file (copied in by hand: stat and
    downloads do not see them either) and are left alone. Metadata left by a
    crash (no bytes) is removed, and still answers FileMissing: nobody could
    see that file.
    """
    if not _meta_path(root, name).exists() or not _remove(root, name, fsync):
        raise FileMissing(name)


def _prefixed(directory: Path, prefix: str, suffix: str = "") -> list[str]:
    """Regular files in `directory` whose names start with `prefix` (and end with
    `suffix`), the suffix removed. One pass over the directory, no file opened."""
    found = []
    with os.scandir(directory) as entries:
        for entry in entries:
            name = entry.name
            if name.startswith(prefix) and name.endswith(suffix):
                with suppress(FileNotFoundError):
                    if entry.is_file(follow_symlinks=False):
                        found.append(name.removesuffix(suffix) if suffix else name)
    return found


def conversation_files(root: Path, conversation_id: str) -> list[StoredMeta]:
    """The visible files of a conversation: stored names start with `{id}_`; only
    those sidecars are read, and each must name exactly this conversation."""
    files = []
    for name in _prefixed(root, f"{conversation_id}_"):
        info = _read_info(root, name)
        if info is not None and info.conversation_id == conversation_id:
            files.append(StoredMeta(name, info))
    return files


def erasure_candidates(root: Path, conversation_id: str) -> list[str]:
    """Names that may belong to the conversation: metadata files named `{id}_...`.

    Metadata is the record of which conversation a name belongs to, and it goes
    last, so after a crash half-way a rerun still finds what is left.
    """
    return _prefixed(root / META_DIR, f"{conversation_id}_", ".json")


def erase_if_in(root: Path, name: str, conversation_id: str) -> bool:
    """Remove `name` (bytes, then metadata) if its metadata names this conversation;
    True when its bytes were there (it was a visible file)."""
    info = _read_info(root, name)
    if info is None or info.conversation_id != conversation_id:
        return False
    return _remove(root, name, fsync=False)


def sync_directories(root: Path) -> None:
    """Make the unlinks of an erasure durable, once for all of them."""
    fsync_directory(root)
    fsync_directory(root / META_DIR)


def shared_secret(root: Path, purpose: str, fsync: bool) -> bytes:
    """`.keys/PURPOSE`, made once: written whole in `.tmp`, then linked in, which
    fails if another process (or worker) linked its own first; that one wins."""
    keys = root / KEYS_DIR
    path = keys / purpose
    with suppress(FileNotFoundError):
        return path.read_bytes()
    keys.mkdir(exist_ok=True)
    temporary = root / TMP_DIR / f"key-{os.getpid()}-{secrets.token_hex(8)}"
    try:
        with open(temporary, "xb") as file:
            file.write(secrets.token_bytes(SECRET_BYTES))
            if fsync:
                file.flush()
                os.fsync(file.fileno())
        with suppress(FileExistsError):
            os.link(temporary, path)
            if fsync:
                fsync_directory(keys)
    finally:
        with suppress(FileNotFoundError):
            temporary.unlink()
    return path.read_bytes()
