"""Storage implementations behind one protocol (see `base`)."""

from __future__ import annotations

from ..settings import Settings, SettingsError
from .base import Storage
from .local import LocalStorage


def open_storage(settings: Settings) -> Storage:
    """The storage `--storage` names: a directory (default) or, later, an S3 URL."""
    target = settings.storage
    if "://" in target:
        raise SettingsError(f"--storage {target}: unsupported storage URL (use a directory)")
    return LocalStorage(target, fsync=settings.fsync, chunk_size=settings.chunk_size)
