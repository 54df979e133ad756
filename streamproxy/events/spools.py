"""Which spool a storage offers: its own directory, its bucket prefix, else memory.

Apart from `spool` so that the S3 spool (which builds on `spool`) is imported only
when the storage is S3, and only where the S3 extra is installed.
"""

from __future__ import annotations

from ..storage.base import Storage
from ..storage.local import LocalStorage
from ..storage.timed import TimedStorage
from .spool import LocalSpool, MemorySpool, Spool


def open_spool(storage: Storage, *, fsync: bool = True) -> Spool:
    """The spool the storage offers: its own directory or bucket prefix, else memory."""
    inner = storage.inner if isinstance(storage, TimedStorage) else storage
    if isinstance(inner, LocalStorage):
        return LocalSpool(inner.root, inner.run_blocking, fsync=fsync)
    s3_spool = _s3_spool(inner)
    return s3_spool if s3_spool is not None else MemorySpool()


def _s3_spool(storage: Storage) -> Spool | None:
    """An S3 storage's spool; without the S3 extra there is no S3 storage either."""
    try:
        from ..storage.s3 import S3Storage
    except ImportError:
        return None
    if not isinstance(storage, S3Storage):
        return None
    from .s3spool import S3Spool

    return S3Spool(storage)
