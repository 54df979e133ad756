"""A bounded in-memory cache of small local files, for the many small downloads of chat.

Stored files never change under a name, so a copy stays right for as long as the
same file is there. The check that it is the same file is one `stat` of the path
on the event loop: a new file under the name (after a retention delete) has a new
change time and usually a new inode, and a deleted one is simply not found. A hit
then costs no trip to a worker thread and no read.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass

from .base import StoredMeta

SMALL_FILE = 64 * 1024  # files up to this size are read whole when opened


@dataclass(frozen=True)
class Identity:
    """What tells one file under a name from another that replaced it."""

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
    content: bytes


class SmallFileCache:
    """Least recently used, bounded by the total bytes of content held."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[str, CachedFile] = OrderedDict()
        self._bytes = 0

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
        if len(entry.content) > self.capacity:
            return
        self._drop(name)
        self._entries[name] = entry
        self._bytes += len(entry.content)
        while self._bytes > self.capacity:
            oldest = next(iter(self._entries))
            self._drop(oldest)

    def _drop(self, name: str) -> None:
        entry = self._entries.pop(name, None)
        if entry is not None:
            self._bytes -= len(entry.content)
