"""The multipart/form-data grammar (RFC 7578 on RFC 2046) with no I/O, as h11 parses HTTP.

`FormParser.feed(bytes)` returns the events those bytes complete: a part's
headers, pieces of its body, its end, the end of the form. It never reads,
waits or times out; `multipart.FormReader` is the thin async driver that feeds
it what the client sends. That keeps every framing rule (and every bound on the
envelope) in one place that a test can drive byte by byte.

Body bytes are not copied: each piece fed in is searched for the delimiter where
it lies and handed back as itself or views of it. Only the last bytes of a piece
that may begin a delimiter wait for the next one: rarely any, as they must begin
with CR and match the delimiter's start.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from multidict import CIMultiDict, CIMultiDictProxy

from .bytesearch import find

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


class MalformedForm(ValueError):
    """The body breaks the multipart grammar or a bound; the message says how."""


# Events. Not frozen: a frozen dataclass's __init__ costs four times as much, and
# a PartData is made for every piece of every upload.
@dataclass(slots=True)
class PartStart:
    headers: CIMultiDictProxy[str]


@dataclass(slots=True)
class PartData:
    data: bytes | memoryview


@dataclass(slots=True)
class PartEnd:
    pass


@dataclass(slots=True)
class FormEnd:
    pass


Event = PartStart | PartData | PartEnd | FormEnd
_PART_END = PartEnd()
_FORM_END = FormEnd()


class At(enum.Enum):
    """Where the parser is: PREAMBLE -> (DELIMITER -> HEADERS -> BODY)* -> CLOSED."""

    PREAMBLE = enum.auto()  # before the first delimiter
    DELIMITER = enum.auto()  # just past a delimiter: the rest of its boundary line
    HEADERS = enum.auto()  # a part's header block
    BODY = enum.auto()  # a part's bytes, up to the next delimiter
    CLOSED = enum.auto()  # past the closing delimiter: the epilogue is ignored


_BODY = At.BODY  # checked for every piece: a global is faster than an enum lookup


class FormParser:
    """Events from the bytes of one multipart body; see the module docstring."""

    def __init__(self, boundary: bytes, limits: FormLimits) -> None:
        self._delimiter = CRLF + b"--" + boundary
        self._keep = len(self._delimiter) - 1  # bytes that may hold a delimiter's start
        self.limits = limits
        # Envelope bytes not parsed yet. The first boundary has no CRLF before it:
        # pretend it does.
        self._buffer = bytearray(CRLF)
        # In a body: its last bytes when they may begin a delimiter, held back for the next piece.
        self._tail = b""
        self.at = At.PREAMBLE
        self._parts = 0

    def feed(self, data: bytes | memoryview) -> list[Event]:
        """Parse the next bytes of the body; `b""` says the body ended."""
        ended = not data
        events: list[Event] = []
        while True:
            if self.at is _BODY:
                if not data:
                    if ended:
                        raise MalformedForm("the body ended before the closing multipart boundary")
                    return events
                data = self._body(data, events)
                if self.at is _BODY:
                    return events
            if self.at is At.CLOSED:
                return events
            self._buffer += data
            if not self._envelope(events, ended):
                return events
            # A part's body begins: what is buffered already is its first bytes.
            data = bytes(self._buffer)
            self._buffer.clear()

    def _envelope(self, events: list[Event], ended: bool) -> bool:
        """Parse boundary lines and headers from the buffer; True when a body begins."""
        while True:
            if self.at is At.PREAMBLE:
                if not self._skip_preamble(ended):
                    return False
            elif self.at is At.DELIMITER:
                if not self._boundary_line(events, ended):
                    return False
            elif self.at is At.HEADERS:
                return self._headers(events, ended)
            else:  # CLOSED
                self._buffer.clear()
                return False

    def _skip_preamble(self, ended: bool) -> bool:
        index = self._buffer.find(self._delimiter)
        if index >= 0:
            del self._buffer[: index + len(self._delimiter)]
            self.at = At.DELIMITER
            return True
        if len(self._buffer) > self.limits.max_preamble + len(self._delimiter):
            raise MalformedForm("no multipart boundary found at the start of the body")
        if ended:
            raise MalformedForm("the body does not contain the multipart boundary")
        return False

    def _boundary_line(self, events: list[Event], ended: bool) -> bool:
        """The rest of a boundary line: `--` closes the form, else padding and CRLF."""
        buffer = self._buffer
        if buffer[:2] == b"--":
            self.at = At.CLOSED
            events.append(_FORM_END)
            return True
        if len(buffer) < 2 and not ended:
            return False
        padding = len(buffer) - len(buffer.lstrip(b" \t"))
        rest = buffer[padding : padding + 2]
        if rest == CRLF:
            del buffer[: padding + 2]
            self._parts += 1
            if self._parts > self.limits.max_parts:
                raise MalformedForm(f"the form has more than {self.limits.max_parts} parts")
            self.at = At.HEADERS
            return True
        if len(rest) == 2 or padding > _MAX_PADDING:
            raise MalformedForm("malformed multipart boundary line")
        if ended:
            raise MalformedForm("the body ended inside a multipart boundary line")
        return False

    def _headers(self, events: list[Event], ended: bool) -> bool:
        buffer = self._buffer
        limit = self.limits.max_header_bytes
        if buffer.startswith(CRLF):
            end, block = 0, b""
        else:
            end = buffer.find(b"\r\n\r\n", 0, limit + 4)
            if end < 0:
                if len(buffer) > limit:
                    raise MalformedForm(f"the headers of a form part exceed {limit} bytes")
                if ended:
                    raise MalformedForm("the body ended inside the headers of a form part")
                return False
            block = bytes(buffer[:end])
        del buffer[: end + (4 if block else 2)]
        headers: CIMultiDict[str] = CIMultiDict()
        for line in block.split(CRLF):
            name, colon, value = line.decode("utf-8", "replace").partition(":")
            if not colon or not name or name != name.strip():
                raise MalformedForm("malformed header in a form part")
            headers.add(name, value.strip())
        events.append(PartStart(CIMultiDictProxy(headers)))
        self.at = At.BODY
        return True

    def _body(self, piece: bytes | memoryview, events: list[Event]) -> bytes | memoryview:
        """Body bytes of `piece`, whole or as views; at the delimiter, the part ends and the rest
        of the piece is returned for the envelope (else b"")."""
        delimiter, tail = self._delimiter, self._tail
        # A delimiter that begins in the tail and ends in this piece?
        index = (tail + piece[: self._keep]).find(delimiter) if tail else -1
        if 0 <= index < len(tail):
            if index:
                events.append(PartData(tail[:index]))
            rest = index + len(delimiter) - len(tail)
        else:
            index = find(piece, delimiter)
            if index < 0:
                # None here: pass on all but the bytes that may begin one, which wait.
                if len(piece) < self._keep:
                    piece, tail = tail + piece, b""
                elif tail:
                    events.append(PartData(tail))
                held = self._held(piece)
                if held == len(piece):
                    events.append(PartData(piece))  # nearly always: the piece itself, whole
                elif held:
                    events.append(PartData(memoryview(piece)[:held]))
                self._tail = bytes(piece[held:])
                return b""
            if tail:
                events.append(PartData(tail))
            if index:
                events.append(PartData(memoryview(piece)[:index]))
            rest = index + len(delimiter)
        self._tail = b""
        events.append(_PART_END)
        self.at = At.DELIMITER
        return piece[rest:]

    def _held(self, data: bytes | memoryview) -> int:
        """Where the end of `data` that may begin a delimiter starts (len(data): none).

        Only a suffix that is a prefix of the delimiter (so it starts with CR) must
        wait for the next piece; in most pieces there is none, and the piece goes on
        whole, as one event.
        """
        delimiter = self._delimiter
        start = max(0, len(data) - self._keep)
        end = bytes(data[start:])  # a few dozen bytes; a memoryview piece has no find
        at = end.find(b"\r")
        while at >= 0:
            if delimiter.startswith(end[at:]):
                return start + at
            at = end.find(b"\r", at + 1)
        return len(data)
