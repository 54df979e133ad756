"""Resumable uploads from the connector's side: tus 1.0 at `/files/uploads`.

A large file over a network that drops should not start again from zero. The
file goes out in PATCHes of `chunk_size` bytes; after a network error, a 5xx
or a 409 (the server still holds the broken request's lock, or the offsets
disagree) the client waits (exponential backoff), asks the server for its
offset with HEAD and continues from there. Between runs a small JSON state file
remembers the upload's URL, keyed by the file's absolute path, size and mtime,
so a second run of `streamproxy upload` continues what a killed run started; a
file changed since is uploaded afresh. The result is the JSON `POST /files`
answers (`GET /files/uploads/{id}`), and its ETag is checked against the MD5
this client computed while reading the file.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

import aiohttp
from yarl import URL

from .errors import (
    CHECKSUM_MISMATCH,
    CONNECTION_FAILED,
    INTERRUPTED,
    SOURCE_CHANGED,
    TIMEOUT,
    UNEXPECTED_RESPONSE,
    MediaError,
)
from .sources import ChunkPayload, Progress

T = TypeVar("T")

TUS_VERSION = "1.0.0"
PATCH_TYPE = "application/offset+octet-stream"
MiB = 1024 * 1024
# Below this a single `POST /files` is as good: a retry costs little.
DEFAULT_THRESHOLD = 8 * MiB
# One PATCH: big enough that a request's overhead does not count, small enough
# that a cut loses little (the server keeps what arrived anyway).
DEFAULT_CHUNK_SIZE = 8 * MiB
READ_SIZE = 256 * 1024
# Statuses after which waiting and asking for the offset again may help.
RETRY_STATUSES = frozenset({409, 423, 429, 500, 502, 503, 504})
NETWORK_CODES = frozenset({CONNECTION_FAILED, INTERRUPTED, TIMEOUT})
# Statuses that say "no resumable uploads here" (an older server, a storage without them).
UNSUPPORTED_STATUSES = frozenset({404, 405, 501})


def default_state_dir() -> Path:
    """$XDG_STATE_HOME/streamproxy/uploads, else ~/.local/state/streamproxy/uploads."""
    base = os.environ.get("XDG_STATE_HOME") or ""
    root = Path(base) if os.path.isabs(base) else Path.home() / ".local" / "state"
    return root / "streamproxy" / "uploads"


@dataclass(frozen=True)
class ResumableOptions:
    """When and how uploads go resumably; every field can be set per `MediaClient`."""

    threshold: int = DEFAULT_THRESHOLD
    chunk_size: int = DEFAULT_CHUNK_SIZE
    retries: int = 8  # failures in a row without progress before giving up
    first_delay: float = 0.5
    max_delay: float = 30.0
    state_dir: Path | None = None  # None: default_state_dir() at upload time

    def delay(self, attempt: int) -> float:
        return float(min(self.max_delay, self.first_delay * 2 ** max(0, attempt - 1)))


class NotSupported(Exception):
    """The service has no resumable uploads (creation answered 404, 405 or 501)."""


@dataclass
class SavedUpload:
    """What a state file holds: where the upload lives and what file it is of."""

    url: str
    path: str
    size: int
    mtime_ns: int
    server: str
    conversation_id: str
    file_name: str
    mime_type: str | None = None


class StateFile:
    """One JSON file per upload in progress, named by the server and the file's path."""

    def __init__(self, directory: Path, server: URL, path: Path) -> None:
        key = hashlib.sha256(f"{server}\n{path}".encode()).hexdigest()[:32]
        self.path = directory / f"{key}.json"

    def load(self) -> SavedUpload | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return SavedUpload(**data)
        except (OSError, ValueError, TypeError):
            return None

    def save(self, saved: SavedUpload) -> None:
        """Written to a temporary name and renamed: a kill never leaves half a file."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(saved)), encoding="utf-8")
        os.replace(temporary, self.path)

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def encode_metadata(metadata: dict[str, str]) -> str:
    return ",".join(
        f"{key} {base64.b64encode(value.encode()).decode()}" for key, value in metadata.items()
    )


# (method, url, headers, body) -> an open response; `MediaClient._request` in practice.
Requester = Callable[..., Any]


class ResumableUpload:
    """One file's tus upload: create or resume, PATCH to the end, fetch the result."""

    def __init__(
        self,
        request: Requester,
        uploads_url: URL,
        path: Path,
        *,
        conversation_id: str,
        file_name: str,
        mime_type: str | None,
        options: ResumableOptions,
        progress: Progress | None,
    ) -> None:
        self._request = request
        self.uploads_url = uploads_url
        self.path = path.absolute()
        self.conversation_id = conversation_id
        self.file_name = file_name
        self.mime_type = mime_type
        self.options = options
        self.progress = progress
        self._md5 = hashlib.md5()
        self._hashed = 0  # the MD5 covers the file's bytes [0, _hashed)
        self._source_failure: BaseException | None = None

    def _upload_url(self, location: str) -> URL:
        """The upload on this client's own server: the id from `Location`, whatever host
        `--public-url` put in it (as downloads go to the configured server)."""
        upload_id = URL(location).path.rstrip("/").rsplit("/", 1)[-1]
        return self.uploads_url / upload_id

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {"Tus-Resumable": TUS_VERSION, **(extra or {})}

    async def run(self, file: IO[bytes]) -> dict[str, Any]:
        """Upload `file` (open, at `self.path`); returns the `POST /files` JSON."""
        info = os.fstat(file.fileno())
        size, mtime_ns = info.st_size, info.st_mtime_ns
        directory = self.options.state_dir or default_state_dir()
        state = StateFile(directory, self.uploads_url, self.path)
        url, offset = await self._resume_or_create(state, size, mtime_ns)
        if self.progress is not None:
            self.progress(offset, size)
        answer = await self._send_all(file, url, offset, size)
        await self._check_etag(file, answer, size)
        state.remove()
        return answer

    async def _resume_or_create(
        self, state: StateFile, size: int, mtime_ns: int
    ) -> tuple[URL, int]:
        """The saved upload of this very file and the server's offset, else a new upload."""
        saved = state.load()
        if saved is not None and self._same_upload(saved, size, mtime_ns):
            url = URL(saved.url)
            found = await self._retrying(lambda: self._offset_or_none(url))
            if found is not None:
                return url, found
            # expired, cancelled or unknown to the server: start again
        state.remove()
        url, offset = await self._retrying(lambda: self._create(size))
        state.save(
            SavedUpload(
                str(url),
                str(self.path),
                size,
                mtime_ns,
                str(self.uploads_url),
                self.conversation_id,
                self.file_name,
                self.mime_type,
            )
        )
        return url, offset

    def _same_upload(self, saved: SavedUpload, size: int, mtime_ns: int) -> bool:
        """A changed file (size, mtime) or other metadata is a new upload."""
        return (
            saved.path == str(self.path)
            and saved.size == size
            and saved.mtime_ns == mtime_ns
            and saved.server == str(self.uploads_url)
            and saved.conversation_id == self.conversation_id
            and saved.file_name == self.file_name
            and saved.mime_type == self.mime_type
        )

    async def _create(self, size: int) -> tuple[URL, int]:
        metadata = {"filename": self.file_name, "conversationId": self.conversation_id}
        if self.mime_type:
            metadata["filetype"] = self.mime_type
        headers = self._headers(
            {"Upload-Length": str(size), "Upload-Metadata": encode_metadata(metadata)}
        )
        async with self._request("POST", self.uploads_url, headers=headers) as response:
            if response.status in UNSUPPORTED_STATUSES:
                raise NotSupported(f"{self.uploads_url} answered {response.status}")
            if response.status != 201:
                raise await _refusal(response)
            location = response.headers.get("Location")
            if not location:
                raise MediaError(201, UNEXPECTED_RESPONSE, "the creation has no Location")
            return self._upload_url(location), _offset(response)

    async def _offset_or_none(self, url: URL) -> int | None:
        """The server's offset; None when the upload is gone (404, 410)."""
        async with self._request("HEAD", url, headers=self._headers()) as response:
            if response.status in {404, 410}:
                return None
            if response.status != 200:
                raise await _refusal(response)
            return _offset(response)

    async def _send_all(self, file: IO[bytes], url: URL, offset: int, size: int) -> dict[str, Any]:
        failures = 0
        while True:
            try:
                if offset >= size:
                    return await self._result(url)
                offset = await self._patch(file, url, offset, size)
                failures = 0
            except MediaError as error:
                if not _worth_retrying(error):
                    raise
                failures += 1
                if failures > self.options.retries:
                    raise
                await asyncio.sleep(self.options.delay(failures))
                before = offset
                found = await self._retrying(lambda: self._offset_or_none(url), failures)
                if found is None:
                    raise MediaError(
                        404, "not_found", "the upload is gone from the server; run again"
                    ) from error
                offset = found
                if offset > before:
                    failures = 0  # the broken request still moved the upload on
                if self.progress is not None:
                    self.progress(offset, size)

    async def _retrying(self, attempt: Callable[[], Awaitable[T]], failures: int = 0) -> T:
        """`attempt()` until it answers; `failures` already counted toward the retries."""
        while True:
            try:
                return await attempt()
            except MediaError as error:
                failures += 1
                if not _worth_retrying(error) or failures > self.options.retries:
                    raise
                await asyncio.sleep(self.options.delay(failures))

    async def _patch(self, file: IO[bytes], url: URL, offset: int, size: int) -> int:
        """One PATCH of up to `chunk_size` bytes from `offset`; the server's new offset."""
        length = min(self.options.chunk_size, size - offset)
        payload = ChunkPayload(
            self._read(file, offset, length, size), length, content_type=PATCH_TYPE
        )
        headers = self._headers({"Upload-Offset": str(offset)})
        self._source_failure = None
        try:
            async with self._request("PATCH", url, headers=headers, data=payload) as response:
                if response.status != 204:
                    raise await _refusal(response)
                return _offset(response)
        except MediaError:
            if self._source_failure is not None:  # the file, not the network: no retry
                raise self._source_failure from None
            raise

    async def _read(
        self, file: IO[bytes], offset: int, length: int, size: int
    ) -> AsyncIterator[bytes]:
        """The chunk's bytes from disk, hashed once each, progress reported as they go.

        What the file or the progress callback raises is kept in `_source_failure`:
        aiohttp reports it as a connection error, which must not be retried.
        """
        try:
            await self._hash_up_to(file, offset)
            position, end = offset, offset + length
            while position < end:
                want = min(READ_SIZE, end - position)
                chunk = await asyncio.to_thread(self._read_and_hash, file, position, want)
                position += len(chunk)
                yield chunk
                if self.progress is not None:
                    self.progress(position, size)
        except (GeneratorExit, asyncio.CancelledError):
            raise  # aiohttp closing the body: the connection went, not the source
        except BaseException as error:
            self._source_failure = error
            raise

    def _read_and_hash(self, file: IO[bytes], position: int, length: int) -> bytes:
        """In a worker thread: hashlib lets go of the GIL, so the MD5 runs beside the send."""
        chunk = _read_at(file, position, length)
        if not chunk:
            raise _shorter(self.path)
        if position + len(chunk) > self._hashed:
            self._md5.update(memoryview(chunk)[self._hashed - position :])
            self._hashed = position + len(chunk)
        return chunk

    async def _hash_up_to(self, file: IO[bytes], offset: int) -> None:
        """Bytes the server has from an earlier run are read once here for the MD5."""
        while self._hashed < offset:
            chunk = await asyncio.to_thread(
                _read_at, file, self._hashed, min(4 * MiB, offset - self._hashed)
            )
            if not chunk:
                raise _shorter(self.path)
            self._md5.update(chunk)
            self._hashed += len(chunk)

    async def _result(self, url: URL) -> dict[str, Any]:
        async with self._request("GET", url, headers=self._headers()) as response:
            if response.status != 200:
                raise await _refusal(response)
            try:
                parsed = json.loads(await response.read())
            except ValueError:
                parsed = None
            if not isinstance(parsed, dict):
                raise MediaError(200, UNEXPECTED_RESPONSE, "the answer is not a JSON object")
            return parsed

    async def _check_etag(self, file: IO[bytes], answer: dict[str, Any], size: int) -> None:
        await self._hash_up_to(file, size)  # all on the server already: a lost completion
        mine = self._md5.hexdigest()
        if answer.get("etag") != mine:
            raise MediaError(
                200,
                CHECKSUM_MISMATCH,
                f"the stored file's ETag {answer.get('etag')} is not this file's MD5 {mine}",
            )


def _shorter(path: Path) -> MediaError:
    return MediaError(None, SOURCE_CHANGED, f"{path} got shorter while it was uploading")


def _read_at(file: IO[bytes], position: int, length: int) -> bytes:
    return os.pread(file.fileno(), length, position)


def _offset(response: aiohttp.ClientResponse) -> int:
    raw = response.headers.get("Upload-Offset", "")
    if not raw.isdigit():
        raise MediaError(response.status, UNEXPECTED_RESPONSE, "no valid Upload-Offset")
    return int(raw)


def _worth_retrying(error: MediaError) -> bool:
    if error.status is None:
        return error.code in NETWORK_CODES
    return error.status in RETRY_STATUSES


async def _refusal(response: aiohttp.ClientResponse) -> MediaError:
    body = await response.read() if response.method != "HEAD" else b""
    return MediaError.from_answer(
        response.status, response.reason, body, response.headers.get("X-Request-Id")
    )


async def upload_path_resumably(
    request: Requester,
    uploads_url: URL,
    path: Path,
    *,
    conversation_id: str,
    file_name: str,
    mime_type: str | None,
    options: ResumableOptions,
    progress: Progress | None,
    forced: bool,
) -> dict[str, Any] | None:
    """Upload the file at `path` by tus; the `POST /files` JSON of the stored file.

    None when the service has no resumable uploads (an older one, or a storage without them)
    and they were not asked for: the caller then posts the file.
    """
    upload = ResumableUpload(
        request,
        uploads_url,
        path,
        conversation_id=conversation_id,
        file_name=file_name,
        mime_type=mime_type,
        options=options,
        progress=progress,
    )
    try:
        with path.open("rb") as file:
            return await upload.run(file)
    except NotSupported as refused:
        if forced:
            raise MediaError(501, "not_implemented", f"no resumable uploads: {refused}") from None
        return None


async def resumable_path(source: object, wanted: bool | None, threshold: int) -> Path | None:
    """The path to upload resumably: a file at or above `threshold`, or any with `wanted`."""
    if wanted is False:
        return None
    if not isinstance(source, str | os.PathLike):
        if wanted:
            raise TypeError("a resumable upload needs a path: bytes and iterators cannot resume")
        return None
    path = Path(source)
    size = (await asyncio.to_thread(path.stat)).st_size
    return path if wanted or size >= threshold else None
