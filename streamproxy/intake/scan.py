"""Virus scanning with clamd's INSTREAM command, fed by the pump as the bytes pass.

Each chunk goes to clamd while the previous one is being written, so a scan adds
no buffering and little time; the verdict is read before the file is committed.
INSTREAM frames are a 4-byte big-endian length and the bytes; a zero length
ends the stream, and clamd answers `stream: OK` or `stream: NAME FOUND`.
clamd's own `StreamMaxLength` must be at least `--max-size`, or it gives up on
large files (which then count as a scanner failure).

Failing open (`--clamd-fail-open`) is for a clamd that cannot be reached when an
upload starts (`ScannerUnavailable`). Once clamd took a stream, a failure to finish
it (`ScanFailed`: dropped, stalled, or its StreamMaxLength error) refuses the upload
always: a stream clamd refused to finish is not a clean file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
from dataclasses import dataclass

from aiohttp import web

log = logging.getLogger("streamproxy.scan")

_CONNECT_TIMEOUT = 5.0
_MAX_REPLY = 4096


class ScannerUnavailable(Exception):
    """clamd could not be used: unreachable at the start, or (`ScanFailed`) mid-scan."""


class ScanFailed(ScannerUnavailable):
    """clamd accepted the stream and then failed to finish it (dropped, stalled, refused)."""


def _hint(reply: str) -> str:
    if "size limit" in reply.lower():
        return " (clamd's StreamMaxLength is below this file's size; set it to at least --max-size)"
    return ""


@dataclass(frozen=True)
class ClamdAddress:
    """`tcp://host:port`, or a unix socket path (`/run/clamav/clamd.ctl`, `unix:///...`)."""

    host: str | None = None
    port: int | None = None
    path: str | None = None

    @classmethod
    def parse(cls, text: str) -> ClamdAddress:
        text = text.strip()
        if text.startswith("tcp://"):
            host, colon, port = text[len("tcp://") :].rpartition(":")
            if not colon or not host or not port.isdigit():
                raise ValueError(f"not a clamd address: {text!r} (tcp://host:port)")
            return cls(host=host.strip("[]"), port=int(port))
        path = text.removeprefix("unix://")
        if not path.startswith("/"):
            raise ValueError(f"not a clamd address: {text!r} (tcp://host:port or /path/to/socket)")
        return cls(path=path)

    def __str__(self) -> str:
        return self.path or f"tcp://{self.host}:{self.port}"


class ClamdStream:
    """One INSTREAM session: `feed` chunks, then `verdict`.

    clamd's one answer is awaited from the start, so an answer it gives before the
    stream ends (its StreamMaxLength error, just before it hangs up) is kept to say
    why; a second handle on the socket reads it even when a write error made
    asyncio close its own before reading. Every failure after the session opened
    is a `ScanFailed`: clamd took the stream and did not finish it, which is never
    a reason to store the file unscanned.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float):
        self._writer = writer
        self._timeout = timeout
        self._answer = asyncio.ensure_future(reader.readuntil(b"\0"))
        self._answer.add_done_callback(_consume_error)
        self._spare = socket.socket(fileno=os.dup(writer.get_extra_info("socket").fileno()))
        self._spare.setblocking(False)
        self.sent = 0  # bytes of the file handed to clamd so far

    async def feed(self, chunk: bytes | bytearray | memoryview) -> None:
        if self._answer.done():
            raise self._failure("clamd dropped the stream")
        try:
            self._writer.write(struct.pack(">I", len(chunk)))
            self._writer.write(chunk)
            async with asyncio.timeout(self._timeout):
                await self._writer.drain()
        except TimeoutError:
            raise ScanFailed(
                f"clamd read nothing for {self._timeout:g} seconds (--clamd-timeout) "
                f"after {self.sent} bytes"
            ) from None
        except OSError as error:
            # If clamd said something before it hung up, it is on its way: wait briefly.
            await asyncio.wait([self._answer], timeout=1)
            raise self._failure(f"clamd dropped the stream ({error})") from error
        self.sent += len(chunk)

    def _failure(self, otherwise: str) -> ScanFailed:
        """clamd's early answer as the reason, if it gave one, else `otherwise`."""
        text = _answer_text(self._answer) if self._answer.done() else ""
        if not text:
            with contextlib.suppress(OSError):  # nothing there, or the socket is gone
                text = _decode(self._spare.recv(_MAX_REPLY))
        reason = f"clamd answered {text!r}" if text else otherwise
        return ScanFailed(f"{reason} after {self.sent} bytes{_hint(text)}")

    async def verdict(self) -> str | None:
        """The signature found, or None when the file is clean."""
        try:
            self._writer.write(struct.pack(">I", 0))
            async with asyncio.timeout(self._timeout):
                await self._writer.drain()
                await asyncio.shield(self._answer)
        except TimeoutError:
            raise ScanFailed(
                f"clamd gave no verdict within {self._timeout:g} seconds (--clamd-timeout) "
                f"for {self.sent} bytes"
            ) from None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as error:
            raise self._failure(f"clamd dropped the stream before its verdict ({error})") from error
        text = _answer_text(self._answer)
        if text.endswith(" FOUND"):
            return text.removeprefix("stream:").removesuffix(" FOUND").strip()
        if text.endswith(" OK"):
            return None
        raise ScanFailed(f"clamd answered {text!r} after {self.sent} bytes{_hint(text)}")

    def close(self) -> None:
        self._answer.cancel()
        self._writer.close()
        self._spare.close()


def _answer_text(answer: asyncio.Future[bytes]) -> str:
    """clamd's answer without its NUL; "" when it hung up without one."""
    if answer.cancelled():
        return ""
    error = answer.exception()
    if isinstance(error, asyncio.IncompleteReadError):
        raw = error.partial
    elif error is not None:
        return ""
    else:
        raw = answer.result()
    return _decode(raw)


def _decode(raw: bytes) -> str:
    return raw.rstrip(b"\0").decode("utf-8", "replace").strip()


def _consume_error(answer: asyncio.Future[bytes]) -> None:
    if not answer.cancelled():
        answer.exception()


class Scanner:
    """Opens an INSTREAM session per upload; knows whether to fail open or closed."""

    def __init__(self, address: ClamdAddress, *, fail_open: bool, timeout: float) -> None:
        self.address = address
        self.fail_open = fail_open
        self.timeout = timeout

    async def open(self) -> ClamdStream:
        try:
            async with asyncio.timeout(_CONNECT_TIMEOUT):
                if self.address.path is not None:
                    reader, writer = await asyncio.open_unix_connection(
                        self.address.path, limit=_MAX_REPLY
                    )
                else:
                    reader, writer = await asyncio.open_connection(
                        self.address.host, self.address.port, limit=_MAX_REPLY
                    )
                writer.write(b"zINSTREAM\0")
                await writer.drain()
        except (OSError, TimeoutError) as error:
            raise ScannerUnavailable(
                f"cannot connect to clamd at {self.address}: {error or 'timeout'}"
            ) from error
        return ClamdStream(reader, writer, self.timeout)


SCANNER: web.AppKey[Scanner | None] = web.AppKey("scanner", Scanner)
