"""Storage implementations behind one protocol (see `base`)."""

from __future__ import annotations

from ..runtime.settings import Settings, SettingsError
from .base import Storage
from .local import LocalStorage


def open_storage(settings: Settings) -> Storage:
    """The storage `--storage` names: a directory (default) or `s3://bucket/prefix`."""
    target = settings.storage
    if target.startswith("s3://"):
        try:
            from .s3 import S3Storage
        except ImportError as error:
            if (error.name or "").partition(".")[0] not in {"aiobotocore", "botocore"}:
                raise
            raise SettingsError(
                f"--storage {target}: S3 support is not installed ({error.name} is missing): "
                "pip install 'streamproxy[s3]'"
            ) from None
        return S3Storage.from_settings(settings)
    if "://" in target:
        raise SettingsError(
            f"--storage {target}: unsupported storage URL (use a directory or s3://bucket/prefix)"
        )
    return LocalStorage(
        target,
        fsync=settings.fsync,
        chunk_size=settings.chunk_size,
        cache_size=settings.cache_size,
        clean_on_start=not settings.storage_prepared,
    )
