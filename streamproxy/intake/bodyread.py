"""Reading a request body under the idle timeout, its failures turned into the client's errors.

Every upload route reads its body this way (the multipart reader piece by piece,
the raw upload straight into the pump), so a stalled client gets 408 and a broken
or badly encoded body 400 wherever it is read.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable

from aiohttp import StreamReader

from ..error_table import BAD_REQUEST, client_stalled

# A piece of a body: bytes, or a view of the buffer a large plain body was read into
# (runtime/directbody.py), though aiohttp's reader says bytes.
BodyPiece = bytes | memoryview


async def read_within(read: Awaitable[BodyPiece], idle_timeout: float) -> BodyPiece:
    """One read of the body within the idle timeout; its failures as the client's errors."""
    try:
        async with asyncio.timeout(idle_timeout):
            return await read
    except TimeoutError:
        raise client_stalled(idle_timeout) from None
    except (ConnectionError, asyncio.IncompleteReadError) as error:
        raise BAD_REQUEST(f"the request body broke off: {error}") from error
    except Exception as error:  # aiohttp's payload errors (bad chunking, bad encoding)
        if type(error).__module__.startswith("aiohttp"):
            raise BAD_REQUEST(f"the request body is malformed: {error}") from error
        raise


async def next_chunk(content: StreamReader) -> BodyPiece:
    """aiohttp's next non-empty chunk (it yields empty ones at HTTP chunk ends); b"" at the end."""
    while True:
        data, _ = await content.readchunk()
        if data or content.at_eof():
            return data


async def body_pieces(content: StreamReader, idle_timeout: float) -> AsyncIterator[BodyPiece]:
    """The whole body, as the pieces aiohttp received (decoded when it was compressed)."""
    while data := await read_within(next_chunk(content), idle_timeout):
        yield data
