"""`MediaClient`: the connector's side of the API, async, on aiohttp.

One object per service: it holds the base URL (with any `--base-path`), the API
key and a connection pool. Every call returns a typed result or raises
`MediaError`; uploads stream from disk, downloads stream to disk and resume.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
from yarl import URL

from .. import __version__
from . import downloads
from .downloads import RangeSpec
from .errors import (
    CONNECTION_FAILED,
    INTERRUPTED,
    TIMEOUT,
    UNEXPECTED_RESPONSE,
    MediaError,
)
from .message import build_media_message, label_for
from .results import DownloadResult, FileStat, ListedFile, UploadLink, UploadResult
from .sources import DEFAULT_CHUNK, ChunkPayload, Counted, Progress, UploadSource, open_body

# Connecting should be quick; a transfer may pause (a slow disk, a busy server) but not stall.
DEFAULT_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=30, sock_connect=30, sock_read=300)

# What `download()` and `media_message()` accept as "a stored file".
Stored = UploadResult | FileStat | str


def parse_server(server: str | URL) -> URL:
    """The service's base URL (scheme, host, port and base path), without a trailing slash."""
    url = URL(server)
    if url.scheme not in {"http", "https"} or not url.host:
        raise ValueError(f"not an http(s) URL of a streamproxy service: {str(server)!r}")
    return url.with_path(url.path.rstrip("/")).with_query(None).with_fragment(None)


class MediaClient:
    """Upload, import, stat, download, list and delete files of one streamproxy service.

    Use it as an async context manager (or call `close()`); pass `session` to
    share a pool you own, which is then left open.
    """

    def __init__(
        self,
        server: str | URL,
        *,
        api_key: str | None = None,
        session: aiohttp.ClientSession | None = None,
        timeout: aiohttp.ClientTimeout = DEFAULT_TIMEOUT,
        chunk_size: int = DEFAULT_CHUNK,
    ) -> None:
        self.server = parse_server(server)
        self.api_key = api_key or None
        self.chunk_size = chunk_size
        self._timeout = timeout
        self._session = session
        self._owns_session = session is None

    async def __aenter__(self) -> MediaClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                headers={"User-Agent": f"streamproxy-client/{__version__}"},
            )
        return self._session

    # URLs

    def endpoint(self, path: str) -> URL:
        """A route of the service: `files`, `files/download`, ... under its base path."""
        return self.server.joinpath(*path.split("/"))

    def download_url(self, item: Stored) -> str:
        """The URL a chat message carries: the service's own `url` when known, as given.

        An upload's `url` is returned untouched, so whatever its query string
        holds (a signed link's expiry and signature) is kept. A bare name gets
        the service's download route; a URL is returned as it is.
        """
        if isinstance(item, UploadResult):
            return item.url
        name = item.name if isinstance(item, FileStat) else item
        if "://" in name:
            return name
        return str(self.endpoint("files/download").with_query(filename=name))

    def fetch_url(self, item: Stored) -> URL:
        """Where this client downloads `item` from: its own server, the `url`'s query string.

        Like Hybrid Chat's agent desk, the download goes to the configured server
        with the original query string, so a `--public-url` this client cannot
        reach does not matter and a signature in the query string still applies.
        """
        if isinstance(item, UploadResult):
            query = URL(item.url).raw_query_string
            if query:
                return URL(f"{self.endpoint('files/download')}?{query}", encoded=True)
            item = item.name
        if isinstance(item, FileStat):
            item = item.name
        if "://" in item:
            return URL(item, encoded=True)
        return self.endpoint("files/download").with_query(filename=item)

    # Requests

    def _headers(self, auth: bool, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = dict(extra or {})
        if auth and self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    @asynccontextmanager
    async def _request(
        self,
        method: str,
        url: URL,
        *,
        auth: bool = True,
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A request whose network failures come out as `MediaError`."""
        try:
            async with self.session.request(
                method, url, headers=self._headers(auth, headers), **kwargs
            ) as response:
                yield response
        except aiohttp.ClientError as error:
            raise _network_error(error, self.server) from error
        except TimeoutError as error:
            raise MediaError(None, TIMEOUT, f"{self.server} took too long to answer") from error

    @staticmethod
    async def _refusal(response: aiohttp.ClientResponse) -> MediaError:
        body = await response.read() if response.method != "HEAD" else b""
        return MediaError.from_answer(
            response.status, response.reason, body, response.headers.get("X-Request-Id")
        )

    async def _json(self, response: aiohttp.ClientResponse) -> dict[str, Any]:
        if response.status != 200:
            raise await self._refusal(response)
        try:
            parsed = json.loads(await response.read())
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise MediaError(
                response.status, UNEXPECTED_RESPONSE, "the answer is not a JSON object"
            )
        return parsed

    # Uploads

    async def upload(
        self,
        source: UploadSource,
        *,
        conversation_id: str | int,
        file_name: str | None = None,
        mime_type: str | None = None,
        size: int | None = None,
        progress: Progress | None = None,
    ) -> UploadResult:
        """Upload a file (a path, bytes, or an async iterator of chunks) to `POST /files`.

        A path is streamed from disk; its name is the file name unless `file_name`
        is given. Without `mime_type` the service sniffs the type from the bytes.
        `size` declares an iterator's length (paths and bytes know theirs).
        """
        conversation = str(conversation_id)
        body = open_body(source, file_name, size, self.chunk_size)
        try:
            form = aiohttp.MultipartWriter("form-data")
            field = form.append(conversation, {"Content-Type": "text/plain; charset=utf-8"})
            field.set_content_disposition("form-data", name="conversationId")
            sent = Counted(body.chunks, body.size, progress)
            payload = ChunkPayload(
                sent, body.size, content_type=mime_type or "application/octet-stream"
            )
            if body.file_name is None:
                payload.set_content_disposition("form-data", name="file")
            else:
                payload.set_content_disposition("form-data", name="file", filename=body.file_name)
            form.append_payload(payload)
            # Expect: 100-continue lets the service refuse (size, key, busy) before the body.
            try:
                async with self._request(
                    "POST", self.endpoint("files"), data=form, expect100=True
                ) as response:
                    answer = await self._json(response)
            except MediaError:
                if sent.failure is not None:
                    raise sent.failure from None
                raise
        finally:
            body.close()
        return UploadResult.from_json(answer, body.file_name, conversation)

    async def upload_from_url(
        self,
        source_url: str,
        *,
        channel: str,
        conversation_id: str | int | None = None,
        file_name: str | None = None,
        mime_type: str | None = None,
        oauth_token: str | Mapping[str, str] | None = None,
        api_key_360: str | None = None,
        sha256: str | None = None,
    ) -> UploadResult:
        """Have the service fetch `source_url` and store it (`POST /files/from-url`)."""
        job: dict[str, Any] = {"sourceUrl": source_url, "channel": channel}
        optional: dict[str, Any] = {
            "conversationId": None if conversation_id is None else str(conversation_id),
            "fileName": file_name,
            "mime_type": mime_type,
            "APIKey360": api_key_360,
            "sha256": sha256,
            "oauth": dict(oauth_token) if isinstance(oauth_token, Mapping) else oauth_token,
        }
        job.update({key: value for key, value in optional.items() if value is not None})
        async with self._request("POST", self.endpoint("files/from-url"), json=job) as response:
            answer = await self._json(response)
        conversation = None if conversation_id is None else str(conversation_id)
        result = UploadResult.from_json(answer, file_name, conversation)
        if file_name is None:
            result = await self._with_recorded_name(result)
        return result

    async def upload_link(
        self,
        *,
        conversation_id: str | int,
        file_name: str | None = None,
        max_size: int | None = None,
        allow_type: Sequence[str] = (),
        expires_in: int | None = None,
    ) -> UploadLink:
        """A one-time link for someone without the API key to upload one file
        (`POST /files/upload-links`; the service needs `--signing-key`)."""
        given = {"fileName": file_name, "maxSize": max_size, "expiresIn": expires_in,
                 "allowType": list(allow_type) or None}  # fmt: skip
        terms: dict[str, Any] = {"conversationId": str(conversation_id)}
        terms |= {key: value for key, value in given.items() if value is not None}
        async with self._request("POST", self.endpoint("files/upload-links"), json=terms) as answer:
            return UploadLink.from_json(await self._json(answer))

    async def _with_recorded_name(self, result: UploadResult) -> UploadResult:
        """The original name the service derived (Content-Disposition, URL path) and keeps.

        The answer carries only the stored name, which may hold a uniqueness
        suffix (`report-cbe2ed.pdf`); `stat` has the name the service recorded,
        so a media message labels the file as `stat` and `message` do. Should
        the stat fail, the import still stands and the label falls back to the
        stored name.
        """
        try:
            found = await self.stat(result.name)
        except MediaError:
            return result
        return dataclasses.replace(result, original_name=found.original_name)

    # Metadata and messages

    async def stat(self, item: UploadResult | str) -> FileStat:
        """The stored file's metadata (`GET /files/stat`)."""
        name = item.name if isinstance(item, UploadResult) else item
        url = self.endpoint("files/stat").with_query(filename=name)
        async with self._request("GET", url) as response:
            return FileStat.from_json(await self._json(response))

    async def list_page(
        self, conversation_id: str | int, *, limit: int | None = None, cursor: str | None = None
    ) -> tuple[list[ListedFile], str | None]:
        """One page of a conversation's files, newest first, and the next page's cursor."""
        query = {"conversationId": str(conversation_id)}
        query |= {"limit": str(limit)} if limit is not None else {}
        query |= {"cursor": cursor} if cursor is not None else {}
        url = self.endpoint("files").with_query(query)
        async with self._request("GET", url) as response:
            answer = await self._json(response)
        files, following = answer.get("files"), answer.get("next")
        if not isinstance(files, list) or not isinstance(following, str | None):
            raise MediaError(200, UNEXPECTED_RESPONSE, "the listing has no files or next")
        return [ListedFile.from_json(entry) for entry in files], following

    async def list_files(
        self, conversation_id: str | int, *, page_size: int | None = None
    ) -> AsyncIterator[ListedFile]:
        """Every file of a conversation, newest first, page after page."""
        cursor: str | None = None
        while True:
            files, cursor = await self.list_page(conversation_id, limit=page_size, cursor=cursor)
            for listed in files:
                yield listed
            if cursor is None:
                return

    async def delete(self, item: UploadResult | FileStat | str) -> None:
        """Delete one stored file (`DELETE /files?filename=`); needs an API key."""
        name = item if isinstance(item, str) else item.name
        url = self.endpoint("files").with_query(filename=name)
        async with self._request("DELETE", url) as response:
            if response.status != 204:
                raise await self._refusal(response)

    async def delete_conversation(self, conversation_id: str | int) -> int:
        """Erase all of a conversation's files; how many went (0 for an unknown one)."""
        url = self.endpoint("files").with_query(conversationId=str(conversation_id))
        async with self._request("DELETE", url) as response:
            deleted = (await self._json(response)).get("deleted")
        if not isinstance(deleted, int):
            raise MediaError(200, UNEXPECTED_RESPONSE, "the answer has no deleted count")
        return deleted

    def media_message(
        self, item: UploadResult | FileStat, caption: str | None = None
    ) -> dict[str, Any]:
        """Hybrid Chat's media message body for a stored file, every attachment field filled."""
        label = label_for(item.name, item.original_name, item.conversation_id)
        return build_media_message(
            media_url=self.download_url(item),
            mime_type=item.type,
            size=item.size,
            media_name=item.name,
            media_label=label,
            caption=caption,
        )

    # Downloads

    async def head(self, item: Stored) -> tuple[int, str | None, str | None]:
        """(size, bare ETag, type) of a stored file, from a `HEAD` of its download."""
        async with self._request("HEAD", self.fetch_url(item), auth=False) as response:
            if response.status != 200:
                raise await self._refusal(response)
            length = response.content_length
            if length is None:
                raise MediaError(200, UNEXPECTED_RESPONSE, "the download has no Content-Length")
            etag = response.headers.get("ETag")
            return length, etag.strip('"') if etag else None, response.content_type

    async def download(
        self,
        item: Stored,
        path: str | Path,
        *,
        byte_range: RangeSpec | None = None,
        resume: bool = True,
        progress: Progress | None = None,
    ) -> DownloadResult:
        """Download a stored file to `path`; `item` is a result, a stat, a name or a URL.

        With `byte_range` only those bytes are written (`path` is replaced).
        Otherwise, when `path` already holds the start of the file (an interrupted
        download) and `resume` is on, only the rest is fetched, with `Range` and
        `If-Range`; the finished file is checked against the service's MD5 ETag.
        """
        target = Path(path)
        url = self.fetch_url(item)
        if byte_range is not None:
            value = downloads.range_header(byte_range)
            return await self._download_range(url, target, value, progress)
        offset = downloads.existing_size(target) if resume else 0
        headers: dict[str, str] = {}
        if offset:
            etag: str | None
            media_type: str | None
            if isinstance(item, UploadResult | FileStat):
                size, etag, media_type = item.size, item.etag, item.type
            else:
                size, etag, media_type = await self.head(item)
            if offset == size and etag:
                return await downloads.check_complete(target, size, etag, media_type)
            if offset < size and etag:
                headers = {"Range": f"bytes={offset}-", "If-Range": downloads.quoted(etag)}
            else:
                offset = 0
        async with self._request("GET", url, auth=False, headers=headers) as response:
            if response.status == 206 and offset:
                start = downloads.content_range_start(response.headers.get("Content-Range"))
                if start is None or start[0] != offset:
                    raise MediaError(
                        206, UNEXPECTED_RESPONSE, "the service sent another range than asked"
                    )
            elif response.status == 200:
                offset = 0  # If-Range: the file changed, or no resume was asked for
            else:
                raise await self._refusal(response)
            return await downloads.receive(response, target, offset, progress, self.chunk_size)

    async def _download_range(
        self, url: URL, target: Path, range_value: str, progress: Progress | None
    ) -> DownloadResult:
        """Only the asked bytes, written to `target` from its start; nothing to verify."""
        headers = {"Range": range_value}
        async with self._request("GET", url, auth=False, headers=headers) as response:
            if response.status != 206:
                if response.status == 200:
                    raise MediaError(
                        200, UNEXPECTED_RESPONSE, "the service sent the whole file, not the range"
                    )
                raise await self._refusal(response)
            return await downloads.receive(
                response, target, 0, progress, self.chunk_size, whole_file=False
            )


def _network_error(error: aiohttp.ClientError, server: URL) -> MediaError:
    if isinstance(error, aiohttp.ClientPayloadError):
        return MediaError(None, INTERRUPTED, f"the transfer broke off: {error}")
    if isinstance(error, aiohttp.ClientConnectorError):
        return MediaError(None, CONNECTION_FAILED, f"cannot connect to {server}: {error.os_error}")
    detail = str(error) or type(error).__name__
    return MediaError(None, CONNECTION_FAILED, f"{server}: {detail}")
