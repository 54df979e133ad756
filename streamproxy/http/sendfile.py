"""Zero-copy file sending that works on asyncio's loop and on uvloop alike.

uvloop has no `loop.sendfile`, and neither loop lets a caller watch a socket that
a transport owns. So the socket is duplicated (`dup(2)`: a new descriptor for
the same socket), the transport's buffer is emptied so bytes stay in order, and
`os.sendfile` moves the file into the socket from the kernel's page cache,
waiting for writability on the duplicate when the socket buffer is full.

The response's head can go the same way, just before the body, with MSG_MORE: the
kernel then sends it in the body's first segment rather than a segment of its own,
which for a 1 MiB range saved the client ~100 us per request and took range GETs from
0.74-0.79x to 0.85-0.91x of nginx (benchmarks/RESULTS.md, history, 2026-12-02 07:03).
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import IO, cast

# Bytes per sendfile call, and how often a fast client must let others run.
_CALL_BYTES = 4 * 1024 * 1024
_YIELD_EVERY = 16 * 1024 * 1024
# Linux's "more is coming" flag (0 elsewhere: the head then goes in a segment of its own).
_MORE = getattr(socket, "MSG_MORE", 0)


class SendfileUnavailable(Exception):
    """This transport cannot take sendfile (TLS, or no socket): send chunks instead."""


def socket_fd(transport: asyncio.BaseTransport | None) -> int:
    if transport is None or transport.is_closing():
        raise ConnectionResetError("the client is gone")
    if transport.get_extra_info("sslcontext") is not None:
        raise SendfileUnavailable("TLS transport")
    sock = transport.get_extra_info("socket")
    if sock is None:
        raise SendfileUnavailable("no socket")
    return int(sock.fileno())


async def _flush(transport: asyncio.WriteTransport, fd: int, timeout: float) -> None:
    """Wait until the transport has handed what it buffered (the headers) to the kernel.

    The transport writes when the socket turns writable, in the same loop turn
    as our own writability callback, so one or two turns normally suffice.
    """
    while transport.get_write_buffer_size():
        if transport.is_closing():
            raise ConnectionResetError("the client is gone")
        await _writable(fd, timeout)
        await asyncio.sleep(0)


async def _writable(fd: int, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_writer(fd, wake)
    try:
        async with asyncio.timeout(timeout):
            await ready
    except TimeoutError:
        raise ConnectionResetError(f"the client took nothing for {timeout:g} seconds") from None
    finally:
        loop.remove_writer(fd)


async def _send_head(sock: socket.socket, head: bytes, timeout: float) -> None:
    """The response's head with MSG_MORE: the kernel holds it for the body's first
    segment, so a small range is one segment fewer for the client to take."""
    view = memoryview(head)
    while view:
        try:
            view = view[sock.send(view, _MORE) :]
        except BlockingIOError:
            await _writable(sock.fileno(), timeout)
        except (BrokenPipeError, ConnectionResetError) as error:
            raise ConnectionResetError("the client is gone") from error


async def sendfile(
    transport: asyncio.BaseTransport | None,
    file: IO[bytes],
    offset: int,
    count: int,
    *,
    idle_timeout: float,
    head: bytes = b"",
) -> None:
    """Send `head`, then `count` bytes of `file` from `offset`, down the transport's socket."""
    fd = socket_fd(transport)
    transport = cast(asyncio.WriteTransport, transport)  # uvloop's is not a subclass
    sock = socket.socket(fileno=os.dup(fd))
    duplicate = sock.fileno()
    try:
        await _flush(transport, duplicate, idle_timeout)
        if head:
            await _send_head(sock, head, idle_timeout)
        since_yield = 0
        while count > 0:
            try:
                sent = os.sendfile(duplicate, file.fileno(), offset, min(count, _CALL_BYTES))
            except BlockingIOError:
                await _writable(duplicate, idle_timeout)
                since_yield = 0
                continue
            except (BrokenPipeError, ConnectionResetError) as error:
                raise ConnectionResetError("the client is gone") from error
            if sent == 0:
                raise OSError("the file ended before the bytes promised")
            offset += sent
            count -= sent
            since_yield += sent
            if since_yield >= _YIELD_EVERY:
                since_yield = 0
                await asyncio.sleep(0)
    finally:
        sock.close()
