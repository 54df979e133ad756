"""Virus scanning with clamd's INSTREAM command, fed by the pump as the bytes pass.

Each chunk goes to clamd while the previous one is being written, so a scan adds
no buffering and little time; the verdict is read before the file is committed.
INSTREAM frames are a 4-byte big-endian length and the bytes; a zero length
ends the stream, and clamd answers `stream: OK` or `stream: NAME FOUND`.
clamd's own `StreamMaxLength` must be at least `--max-size`, or it gives up on
large files (which then count as a scanner failure).
"""

from __future__ import annotations

import asyncio
import logging
import struct
from dataclasses import dataclass

from aiohttp import web

log = logging.getLogger("streamproxy.scan")

_CONNECT_TIMEOUT = 5.0
_MAX_REPLY = 4096


class ScannerUnavailable(Exception):
    """clamd could not be reached or failed mid-scan."""


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
    """One INSTREAM session: `feed` chunks, then `verdict`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float):
        self._reader = reader
        self._writer = writer
        self._timeout = timeout

    async def feed(self, chunk: bytes | bytearray | memoryview) -> None:
        try:
            self._writer.write(struct.pack(">I", len(chunk)))
            self._writer.write(chunk)
            async with asyncio.timeout(self._timeout):
                await self._writer.drain()
        except (OSError, TimeoutError) as error:
            raise ScannerUnavailable(f"clamd stopped reading: {error or 'timeout'}") from error

    async def verdict(self) -> str | None:
        """The signature found, or None when the file is clean."""
        try:
            self._writer.write(struct.pack(">I", 0))
            async with asyncio.timeout(self._timeout):
                await self._writer.drain()
                reply = await self._reader.readuntil(b"\0")
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
            raise ScannerUnavailable(f"no verdict from clamd: {e or 'timeout'}") from e
        text = reply.rstrip(b"\0").decode("utf-8", "replace").strip()
        if text.endswith(" FOUND"):
            return text.removeprefix("stream:").removesuffix(" FOUND").strip()
        if text.endswith(" OK"):
            return None
        raise ScannerUnavailable(f"clamd answered {text!r}")

    def close(self) -> None:
        self._writer.close()


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
