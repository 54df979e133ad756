"""Download helpers: range specs, validators, and the local file a download lands in.

A resumed download appends to the bytes already at the target path, asking for
the rest with `Range` + `If-Range` so the service sends the whole file again if
it is no longer the same one. Since the service's ETag is the content's MD5, the
finished file is checked against it: a resume onto bytes that were not the start
of this file is caught instead of silently producing a corrupt file, and the
bytes this download wrote are taken back.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from pathlib import Path
from typing import IO, TYPE_CHECKING

import aiohttp

from .errors import CHECKSUM_MISMATCH, INTERRUPTED, MediaError
from .results import DownloadResult
from .sources import Progress

if TYPE_CHECKING:
    from _hashlib import HASH

_RANGE_RE = re.compile(r"^\s*(?:bytes=)?(\d*)-(\d*)\s*$")
_CONTENT_RANGE_RE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_MD5_ETAG_RE = re.compile(r'^"?([0-9a-f]{32})"?$')

RangeSpec = str | tuple[int, int | None]


def range_header(spec: RangeSpec) -> str:
    """`Range` for `(start, end)` (end inclusive, None for open) or `START-END`, `START-`, `-N`."""
    if isinstance(spec, tuple):
        start, end = spec
        if start < 0 or (end is not None and end < start):
            raise ValueError(f"not a byte range: {spec!r}")
        return f"bytes={start}-{'' if end is None else end}"
    match = _RANGE_RE.match(spec)
    if not match or not (match.group(1) or match.group(2)):
        raise ValueError(f"not a byte range: {spec!r} (use START-END, START- or -SUFFIX)")
    first, last = match.groups()
    if first and last and int(last) < int(first):
        raise ValueError(f"not a byte range: {spec!r} (the end is before the start)")
    return f"bytes={first}-{last}"


def content_range_start(header: str | None) -> tuple[int, int | None] | None:
    """(first byte, complete length) from a `Content-Range` header, or None."""
    match = _CONTENT_RANGE_RE.match((header or "").strip())
    if not match:
        return None
    total = match.group(3)
    return int(match.group(1)), None if total == "*" else int(total)


def md5_etag(header: str | None) -> str | None:
    """The bare MD5 when an ETag is one (the service's always is), else None."""
    match = _MD5_ETAG_RE.match((header or "").strip())
    return match.group(1) if match else None


def existing_size(path: Path) -> int:
    """Bytes already at `path` from an earlier attempt (0 when there is no such file)."""
    try:
        return path.stat().st_size if path.is_file() else 0
    except OSError:
        return 0


def quoted(etag: str) -> str:
    return etag if etag.startswith(('"', 'W/"')) else f'"{etag}"'


async def md5_of_prefix(path: Path, length: int) -> HASH:
    """The running MD5 of the first `length` bytes of `path` (read in a worker thread)."""

    def read() -> HASH:
        digest = hashlib.md5()
        if not length:
            return digest
        remaining = length
        with path.open("rb") as file:
            while remaining > 0:
                block = file.read(min(1 << 20, remaining))
                if not block:
                    break
                digest.update(block)
                remaining -= len(block)
        return digest

    return await asyncio.to_thread(read) if length else read()


def write_and_hash(file: IO[bytes], digest: HASH | None, chunk: bytes) -> None:
    """One trip off the event loop per chunk: write it and hash it."""
    file.write(chunk)
    if digest is not None:
        digest.update(chunk)


def safe_local_name(name: str) -> str:
    """A stored name used as a local file name must not point anywhere else."""
    if not name or "/" in name or "\\" in name or name in {".", ".."} or "\0" in name:
        raise ValueError(f"{name!r} cannot be used as a file name here; give -o PATH")
    return name


async def receive(
    response: aiohttp.ClientResponse,
    target: Path,
    offset: int,
    progress: Progress | None,
    chunk_size: int,
    *,
    whole_file: bool = True,
) -> DownloadResult:
    """Write the body after the first `offset` bytes of `target`, hashing the whole file.

    Each chunk is written before the next is read, so an interruption leaves
    on disk everything that arrived: the start a later call resumes from.
    """
    etag = response.headers.get("ETag")
    expected = md5_etag(etag) if whole_file else None
    digest = await md5_of_prefix(target, offset) if expected else None
    length = response.content_length
    total = None if length is None else offset + length
    received = 0
    file = target.open("r+b") if offset else target.open("wb")
    try:
        file.seek(offset)
        file.truncate()
        if progress is not None:
            progress(offset, total)
        try:
            async for chunk in response.content.iter_chunked(chunk_size):
                await asyncio.to_thread(write_and_hash, file, digest, chunk)
                received += len(chunk)
                if progress is not None:
                    progress(offset + received, total)
        except (aiohttp.ClientError, TimeoutError) as error:
            raise MediaError(
                None,
                INTERRUPTED,
                f"the download broke off ({error or type(error).__name__}); "
                f"{offset + received} bytes are in {target}: download again to resume",
            ) from error
    finally:
        file.close()
    if expected and digest is not None and digest.hexdigest() != expected:
        await asyncio.to_thread(undo_write, target, offset)
        raise mismatch(target, resumed=bool(offset))
    return DownloadResult(
        path=target,
        size=offset + received,
        received=received,
        status=response.status,
        etag=md5_etag(etag) or etag,
        type=response.content_type,
        resumed_from=offset,
        verified=bool(expected),
        content_range=response.headers.get("Content-Range"),
    )


async def check_complete(
    target: Path, size: int, etag: str, media_type: str | None
) -> DownloadResult:
    """The file is all there already (a finished earlier run): check it, fetch nothing."""
    expected = md5_etag(etag)
    if expected and (await md5_of_prefix(target, size)).hexdigest() != expected:
        raise mismatch(target, resumed=True)
    return DownloadResult(
        path=target,
        size=size,
        received=0,
        status=None,
        etag=expected or etag,
        type=media_type,
        resumed_from=size,
        verified=bool(expected),
    )


def undo_write(target: Path, offset: int) -> None:
    """A file that failed its MD5 is not left behind: what this call wrote goes.

    A resume restores the bytes that were there before (they may be someone's
    own file of the same name, not a download of ours); a fresh download is removed.
    """
    if offset:
        os.truncate(target, offset)
    else:
        target.unlink(missing_ok=True)


def mismatch(target: Path, *, resumed: bool) -> MediaError:
    if resumed:
        detail = (
            f"the bytes already in {target} were not the start of this file, so it is "
            "left as it was; download again without resuming (--no-resume) to replace it, "
            "or save elsewhere with -o"
        )
    else:
        detail = (
            f"the bytes received do not match the service's ETag (MD5), so {target} "
            "was removed; download again"
        )
    return MediaError(None, CHECKSUM_MISMATCH, detail)
