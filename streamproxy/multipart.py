"""A streaming, bounded multipart/form-data reader (RFC 7578 on RFC 2046).

Why not aiohttp's `MultipartReader`: it keeps no bound on the number of part
headers or on the preamble, and it hands out small chunks; this reader bounds
every part of the envelope (parts, header bytes, preamble, field sizes) and yields
file data in chunks of the configured size, found with `bytes.find` over a buffer
instead of line by line. Header values are parsed with aiohttp's own helpers.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from urllib.parse import unquote

from aiohttp import StreamReader
from aiohttp.helpers import parse_mimetype
from aiohttp.multipart import parse_content_disposition
from multidict import CIMultiDict, CIMultiDictProxy

from .errors import ApiError, bad_request

CRLF = b"\r\n"
_MAX_PADDING = 256  # transport padding (spaces) allowed after a boundary line


@dataclass(frozen=True)
class FormLimits:
    """Bounds on everything around the file bytes; generous for any real client."""

    max_parts: int = 16
    max_header_bytes: int = 8 * 1024  # all headers of one part together
    max_preamble: int = 8 * 1024
    max_field_bytes: int = 64 * 1024  # a non-file field's value

    @property
    def overhead(self) -> int:
        """How much a body may exceed the file cap before its declared size is refused."""
        return 64 * 1024


def boundary_from(content_type: str | None) -> bytes:
    """The boundary of a `multipart/form-data` Content-Type; 400 for anything else."""
    if not content_type:
        raise bad_request("Content-Type must be multipart/form-data with a file part")
    mime = parse_mimetype(content_type)
    if (mime.type, mime.subtype) != ("multipart", "form-data"):
        raise bad_request(
            f"Content-Type must be multipart/form-data, not {content_type.split(';')[0]!r}"
        )
    boundary = mime.parameters.get("boundary", "")
    if not 1 <= len(boundary) <= 70 or not boundary.isascii() or boundary.endswith(" "):
        raise bad_request("the multipart boundary is missing or invalid")
    return boundary.encode("ascii")


class FormPart:
    """One part of the form; read it with `chunks()`, `text()` or `discard()`."""

    def __init__(self, form: FormReader, headers: CIMultiDictProxy[str]) -> None:
        self._form = form
        self.headers = headers
        disposition, params = parse_content_disposition(headers.get("Content-Disposition"))
        if (disposition or "").lower() != "form-data":
            raise bad_request("each part needs Content-Disposition: form-data")
        self.name: str | None = params.get("name")
        self.filename: str | None = (
            params["filename*"]
            if "filename*" in params
            else _decode_filename(params.get("filename"))
        )
        self.content_type: str | None = headers.get("Content-Type")

    def chunks(self) -> AsyncIterator[bytes | memoryview]:
        return self._form.body_chunks(self)

    async def text(self) -> str:
        """A small field's value; 400 when it is larger than the field limit."""
        data = bytearray()
        async for chunk in self.chunks():
            data += chunk
            if len(data) > self._form.limits.max_field_bytes:
                raise bad_request(
                    f"form field {self.name!r} is larger than "
                    f"{self._form.limits.max_field_bytes} bytes"
                )
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise bad_request(f"form field {self.name!r} is not valid UTF-8") from None

    async def discard(self) -> None:
        await self.text()


def _decode_filename(filename: str | None) -> str | None:
    """Undo percent-encoding in a plain `filename` parameter when it decodes as UTF-8.

    Browsers escape `"`, CR and LF this way (WHATWG), and aiohttp's client and some
    others escape every non-ASCII byte; a name decoded here is still checked in full
    afterwards, so `%2F` or `%00` cannot smuggle a path or a NUL.
    """
    if filename is None or "%" not in filename:
        return filename
    try:
        return unquote(filename, errors="strict")
    except UnicodeDecodeError:
        return filename


class At(enum.Enum):
    """Where the reader is in the form: PREAMBLE -> (DELIMITER -> PART)* -> CLOSED."""

    PREAMBLE = enum.auto()  # nothing read yet: the body starts with a preamble to skip
    DELIMITER = enum.auto()  # just past a delimiter: the rest of its boundary line comes next
    PART = enum.auto()  # a part's headers are read; its body may still be unread
    CLOSED = enum.auto()  # the closing delimiter is read: no more parts


class FormReader:
    """Parts of a multipart body, one after the other, read from aiohttp's StreamReader."""

    def __init__(
        self,
        content: StreamReader,
        boundary: bytes,
        *,
        chunk_size: int,
        limits: FormLimits,
        idle_timeout: float,
    ) -> None:
        self._content = content
        self._delimiter = CRLF + b"--" + boundary
        # The first boundary has no CRLF before it: pretend it does.
        self._buffer = bytearray(CRLF)
        self._at = At.PREAMBLE
        self._eof = False  # the request body has ended (the form may still be in the buffer)
        self._chunk_size = chunk_size
        self.limits = limits
        self._idle_timeout = idle_timeout
        self._parts = 0
        self._current: FormPart | None = None

    async def _fill(self) -> bool:
        """Read more of the body into the buffer; False at the end of the body."""
        if self._eof:
            return False
        data = await self._read(self._content.readany())
        if not data:
            self._eof = True
            return False
        self._buffer += data
        return True

    async def _read(self, read: Awaitable[bytes]) -> bytes:
        """One read of the body within the idle timeout; its failures as the client's errors."""
        try:
            async with asyncio.timeout(self._idle_timeout):
                return await read
        except TimeoutError:
            raise ApiError(
                408,
                "timeout",
                f"no data from the client for {self._idle_timeout:g} seconds",
                close=True,
            ) from None
        except (ConnectionError, asyncio.IncompleteReadError) as error:
            raise bad_request(f"the request body broke off: {error}") from error
        except Exception as error:  # aiohttp's payload errors (bad chunking, bad encoding)
            if type(error).__module__.startswith("aiohttp"):
                raise bad_request(f"the request body is malformed: {error}") from error
            raise

    async def _skip_preamble(self) -> None:
        while True:
            index = self._buffer.find(self._delimiter)
            if index >= 0:
                del self._buffer[: index + len(self._delimiter)]
                self._at = At.DELIMITER
                return
            if len(self._buffer) > self.limits.max_preamble + len(self._delimiter):
                raise bad_request("no multipart boundary found at the start of the body")
            if not await self._fill():
                raise bad_request("the body does not contain the multipart boundary")

    async def _after_delimiter(self) -> bool:
        """Consume the rest of a boundary line; False when it was the closing one."""
        while len(self._buffer) < 2 and await self._fill():
            pass
        if self._buffer[:2] == b"--":
            self._at = At.CLOSED
            return False
        while True:
            padding = len(self._buffer) - len(self._buffer.lstrip(b" \t"))
            rest = self._buffer[padding : padding + 2]
            if rest == CRLF:
                del self._buffer[: padding + 2]
                return True
            if len(rest) == 2 or padding > _MAX_PADDING:
                raise bad_request("malformed multipart boundary line")
            if not await self._fill():
                raise bad_request("the body ended inside a multipart boundary line")

    async def _read_headers(self) -> CIMultiDictProxy[str]:
        limit = self.limits.max_header_bytes
        while True:
            if self._buffer.startswith(CRLF):
                end, block = 0, b""
                break
            end = self._buffer.find(b"\r\n\r\n", 0, limit + 4)
            if end >= 0:
                block = bytes(self._buffer[:end])
                break
            if len(self._buffer) > limit:
                raise bad_request(f"the headers of a form part exceed {limit} bytes")
            if not await self._fill():
                raise bad_request("the body ended inside the headers of a form part")
        del self._buffer[: end + (4 if block else 2)]
        headers: CIMultiDict[str] = CIMultiDict()
        for line in block.split(CRLF):
            name, colon, value = line.decode("utf-8", "replace").partition(":")
            if not colon or not name or name != name.strip():
                raise bad_request("malformed header in a form part")
            headers.add(name, value.strip())
        return CIMultiDictProxy(headers)

    async def next_part(self) -> FormPart | None:
        """The next part, after draining what is left of the previous one; None at the end."""
        if self._at is At.PART:
            assert self._current is not None
            await self._current.discard()
        if self._at is At.PREAMBLE:
            await self._skip_preamble()
        if self._at is At.CLOSED or not await self._after_delimiter():
            return None
        self._parts += 1
        if self._parts > self.limits.max_parts:
            raise bad_request(f"the form has more than {self.limits.max_parts} parts")
        self._current = FormPart(self, await self._read_headers())
        self._at = At.PART
        return self._current

    async def _piece(self) -> bytes:
        """The next piece of the body as aiohttp received it (no joining); b"" at the end."""
        if self._eof:
            return b""
        data = await self._read(self._next_chunk())
        if not data:
            self._eof = True
        return data

    async def _next_chunk(self) -> bytes:
        """aiohttp's next non-empty chunk (it yields empty ones at HTTP chunk ends)."""
        while True:
            data, _ = await self._content.readchunk()
            if data or self._content.at_eof():
                return data

    async def body_chunks(self, part: FormPart) -> AsyncIterator[bytes | memoryview]:
        """A part's bytes up to the next delimiter, as pieces of what aiohttp received.

        Large bodies are not copied: each piece aiohttp hands over is searched for the
        delimiter where it lies and passed on as a view. Only the last few bytes of a
        piece (where a delimiter might begin) wait for the next one.
        """
        if part is not self._current or self._at is not At.PART:
            return  # read already: its bytes are behind the reader
        delimiter = self._delimiter
        keep = len(delimiter) - 1
        # What is buffered already (read along with the headers) comes first.
        index = self._buffer.find(delimiter)
        if index >= 0:
            self._at = At.DELIMITER
            if index:
                yield bytes(self._buffer[:index])
            del self._buffer[: index + len(delimiter)]
            return
        if len(self._buffer) > keep:
            yield bytes(self._buffer[: len(self._buffer) - keep])
            del self._buffer[: len(self._buffer) - keep]
        tail = bytes(self._buffer)  # at most `keep` bytes that may begin a delimiter
        self._buffer.clear()
        while True:
            piece = await self._piece()
            if not piece:
                raise bad_request("the body ended before the closing multipart boundary")
            # A delimiter that begins in the tail and ends in this piece?
            index = (tail + piece[:keep]).find(delimiter) if tail else -1
            if 0 <= index < len(tail):
                if index:
                    yield tail[:index]
                rest = index + len(delimiter) - len(tail)
            else:
                index = piece.find(delimiter)
                if index < 0:
                    # None here: pass on all but the last `keep` bytes, which wait.
                    if len(piece) >= keep:
                        if tail:
                            yield tail
                        yield memoryview(piece)[: len(piece) - keep]
                        tail = piece[len(piece) - keep :]
                    else:
                        joint = tail + piece
                        if len(joint) > keep:
                            yield joint[: len(joint) - keep]
                        tail = joint[-keep:]
                    continue
                if tail:
                    yield tail
                if index:
                    yield memoryview(piece)[:index]
                rest = index + len(delimiter)
            self._at = At.DELIMITER
            self._buffer += piece[rest:]
            return
