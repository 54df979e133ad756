"""A streaming, bounded multipart/form-data reader (RFC 7578 on RFC 2046).

Why not aiohttp's `MultipartReader`: it keeps no bound on the number of part
headers or on the preamble, and it hands out small chunks; this reader bounds
every part of the envelope (parts, header bytes, preamble, field sizes) and hands
on file data as the pieces aiohttp received, found with `bytes.find` over each
piece instead of line by line. The grammar lives in `multipart_parser` (no I/O);
this module is its async driver: it reads the body within the idle timeout, feeds
the parser and turns its events into parts. Header values are parsed with
aiohttp's own helpers, but for the one shape nearly every client sends (see
`parse_disposition`), read with a regular expression at a fifth of the cost.
"""

from __future__ import annotations

import collections
import re
from collections.abc import AsyncIterator
from urllib.parse import unquote

from aiohttp import StreamReader
from aiohttp.helpers import parse_mimetype
from aiohttp.multipart import parse_content_disposition
from multidict import CIMultiDictProxy

from ..error_table import BAD_REQUEST
from .bodyread import BodyPiece, next_chunk, read_within
from .multipart_parser import (
    At,
    Event,
    FormEnd,
    FormLimits,
    FormParser,
    MalformedForm,
    PartData,
    PartEnd,
    PartStart,
)

__all__ = ["FormLimits", "FormPart", "FormReader", "boundary_from"]

# `form-data; name="..."` with an optional `; filename="..."`, values free of what
# aiohttp's parser would change or treat apart (quotes, backslashes, semicolons, a
# leading slash): for these it returns exactly the values between the quotes.
_PLAIN_DISPOSITION = re.compile(
    r'form-data; name="((?:[^"\\;/][^"\\;]*)?)"(?:; filename="((?:[^"\\;/][^"\\;]*)?)")?'
)


def parse_disposition(header: str | None) -> tuple[str | None, dict[str, str]]:
    """aiohttp's `parse_content_disposition`, by a shortcut for the plain shape."""
    if header is not None and (plain := _PLAIN_DISPOSITION.fullmatch(header)) is not None:
        name, filename = plain.groups()
        params = {"name": name} if filename is None else {"name": name, "filename": filename}
        return "form-data", params
    return parse_content_disposition(header)


def boundary_from(content_type: str | None) -> bytes:
    """The boundary of a `multipart/form-data` Content-Type; 400 for anything else."""
    if not content_type:
        raise BAD_REQUEST("Content-Type must be multipart/form-data with a file part")
    mime = parse_mimetype(content_type)
    if (mime.type, mime.subtype) != ("multipart", "form-data"):
        raise BAD_REQUEST(
            f"Content-Type must be multipart/form-data, not {content_type.split(';')[0]!r}"
        )
    boundary = mime.parameters.get("boundary", "")
    if not 1 <= len(boundary) <= 70 or not boundary.isascii() or boundary.endswith(" "):
        raise BAD_REQUEST("the multipart boundary is missing or invalid")
    return boundary.encode("ascii")


class FormPart:
    """One part of the form; read it with `chunks()`, `text()` or `discard()`."""

    def __init__(self, form: FormReader, headers: CIMultiDictProxy[str]) -> None:
        self._form = form
        self.headers = headers
        disposition, params = parse_disposition(headers.get("Content-Disposition"))
        if (disposition or "").lower() != "form-data":
            raise BAD_REQUEST("each part needs Content-Disposition: form-data")
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
        data = await self._form.field_bytes(self)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise BAD_REQUEST(f"form field {self.name!r} is not valid UTF-8") from None

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


class FormReader:
    """Parts of a multipart body, one after the other, read from aiohttp's StreamReader."""

    def __init__(
        self,
        content: StreamReader,
        boundary: bytes,
        *,
        limits: FormLimits,
        idle_timeout: float,
    ) -> None:
        self._content = content
        self._parser = FormParser(boundary, limits)
        self._events: collections.deque[Event] = collections.deque()
        self._eof = False  # the request body has ended
        self.limits = limits
        self._idle_timeout = idle_timeout
        self._open: FormPart | None = None  # the part whose body is not read to its end

    async def _next_event(self) -> Event:
        """The parser's next event, feeding it the body as it arrives."""
        while not self._events:
            await self._feed_parser()
        return self._events.popleft()

    async def _feed_parser(self) -> None:
        """Feed the parser the next piece of the body; queue the events it completes."""
        piece = await self._piece()
        try:
            self._events.extend(self._parser.feed(piece))
        except MalformedForm as error:
            raise BAD_REQUEST(str(error)) from None

    async def _piece(self) -> BodyPiece:
        """The next piece of the body as aiohttp received it (no joining); b"" at the end."""
        if self._eof:
            return b""
        data = await read_within(next_chunk(self._content), self._idle_timeout)
        if not data:
            self._eof = True
        return data

    async def next_part(self) -> FormPart | None:
        """The next part, after draining what is left of the previous one; None at the end."""
        if self._open is not None:
            await self._open.discard()
        if self._parser.at is At.CLOSED and not self._events:
            return None
        event = await self._next_event()
        if isinstance(event, FormEnd):
            return None
        assert isinstance(event, PartStart), event
        self._open = FormPart(self, event.headers)
        return self._open

    async def field_bytes(self, part: FormPart) -> bytearray:
        """A field's bytes, joined; 400 past the field limit. `body_chunks`' loop without
        an async generator: asyncio registers every one that starts (a weak set and a
        finaliser, ~2 us), and a form's small fields are read once per upload."""
        data = bytearray()
        if part is not self._open:
            return data  # read already: its bytes are behind the reader
        events = self._events
        while True:
            while not events:
                await self._feed_parser()
            event = events.popleft()
            if type(event) is PartData:
                data += event.data
                if len(data) > self.limits.max_field_bytes:
                    raise BAD_REQUEST(
                        f"form field {part.name!r} is larger than "
                        f"{self.limits.max_field_bytes} bytes"
                    )
            else:
                assert isinstance(event, PartEnd), event
                self._open = None
                return data

    async def body_chunks(self, part: FormPart) -> AsyncIterator[bytes | memoryview]:
        """A part's bytes up to the next delimiter, as views of what aiohttp received."""
        if part is not self._open:
            return  # read already: its bytes are behind the reader
        events = self._events
        while True:
            # The hot loop of an upload: no coroutine per event, only one per piece read.
            while not events:
                await self._feed_parser()
            event = events.popleft()
            if type(event) is PartData:
                yield event.data
            else:
                assert isinstance(event, PartEnd), event
                self._open = None
                return
