"""A bounded in-memory cache of local files' metadata, and of small files' bytes.

Chat downloads are many and repeated (a media message is opened by every agent
and every reload), so the work of an open is worth keeping: the parsed metadata
of any file and the whole content of a small one. Stored files never change
under a name, so an entry stays right for as long as the same file is there.
The check that it is the same file is one `stat` of the path on the event loop
(for a large file, the `fstat` of the descriptor the download needs anyway):
a new file under the name (after a retention delete) has a new change time and
usually a new inode, and a deleted one is simply not found. A hit then costs no
trip to a worker thread: a small file needs no read at all, a large one is
opened on the loop (its inode is in the kernel's caches).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import NamedTuple

from .base import StoredMeta

SMALL_FILE = 64 * 1024  # files up to this size are read whole when opened
ENTRY_COST = 1024  # what one entry's metadata is charged against the capacity


class Identity(NamedTuple):
    """What tells one file under a name from another that replaced it (a tuple: made
    and compared on every cached download)."""

    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, status: os.stat_result) -> Identity:
        return cls(status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns)


@dataclass(frozen=True)
class CachedFile:
    identity: Identity
    meta: StoredMeta
    content: bytes | None  # None for a file too large to keep in memory

    @property
    def cost(self) -> int:
        return ENTRY_COST + (len(self.content) if self.content is not None else 0)


class SmallFileCache:
    """Least recently used, bounded by the bytes of content held plus a cost per entry."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[str, CachedFile] = OrderedDict()
        self._bytes = 0

    def peek(self, name: str) -> CachedFile | None:
        """The entry under `name`, unchecked and left where it is in the order: it
        tells whether to stat the path (small) or open it (large) before `get`."""
        return self._entries.get(name)

    def get(self, name: str, identity: Identity) -> CachedFile | None:
        entry = self._entries.get(name)
        if entry is None:
            return None
        if entry.identity != identity:
            self._drop(name)
            return None
        self._entries.move_to_end(name)
        return entry

    def put(self, name: str, entry: CachedFile) -> None:
        if entry.cost > self.capacity:
            return
        self._drop(name)
        self._entries[name] = entry
        self._bytes += entry.cost
        while self._bytes > self.capacity:
            oldest = next(iter(self._entries))
            self._drop(oldest)

    def discard(self, name: str) -> None:
        """Forget `name` (its file was deleted)."""
        self._drop(name)

    def _drop(self, name: str) -> None:
        entry = self._entries.pop(name, None)
        if entry is not None:
            self._bytes -= entry.cost
