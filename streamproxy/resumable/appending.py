"""One request's bytes appended to a held upload, through the one pump.

The pump (intake.open_pump) is started from the upload's saved progress (offset, the
running MD5 restored from the record, the first bytes) and writes into the held
upload instead of a new temporary; it counts the cap and applies the type rules as
soon as the first bytes allow, as for `POST /files`. The virus scan waits for
completion (complete.py): clamd takes one stream.

What happens to the bytes when the request ends:

- it ends well: the tus checksum (if any) is checked, then the new record (offset,
  MD5 state, first bytes, expiry) is acknowledged durably before the answer;
- it is refused (checksum 460, past the length 413, a type refused 415, ...): this
  request's bytes are discarded; offset and MD5 stay as they were;
- the client goes away or stalls, or a newer draft request on the upload stops this
  one (takeover.py: at its next read of the body): what was written is acknowledged
  (the offset a client asks for next is what the server kept), unless a checksum was
  claimed for the whole chunk, which cannot be checked on part of it;
- storage fails: discarded, and the storage error answers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

from aiohttp import web

from ..error_table import BAD_REQUEST, ApiError, client_stalled
from ..intake.bodyread import BodyPiece, next_chunk
from ..intake.entry import max_size, open_pump
from ..intake.mediatypes import normalize_media_type
from ..intake.naming import clean_client_name
from ..intake.pump import Progress
from ..runtime.settings import SETTINGS
from ..storage.base import Observer, StorageError
from .hashstate import ResumableMD5
from .headers import Checksum
from .problems import ResumableError, Superseded, TooLarge
from .state import UploadRecord
from .store import AppendWriter, HeldUpload
from .takeover import AppendStop


class _Stalled(Exception):
    """The client sent nothing for --client-timeout: keep what came, then answer 408."""


class _Stopped(Exception):
    """A newer request on the upload asked this one to let go: keep what came, then 409."""


class _AppendTarget:
    """What the pump takes for a storage: its one writer appends to the held upload."""

    def __init__(self, held: HeldUpload, stack: AsyncExitStack) -> None:
        self._held = held
        self._stack = stack
        self.writer: AppendWriter | None = None

    async def create_writer(self, observer: Observer) -> AppendWriter:
        self.writer = await self._stack.enter_async_context(self._held.appender(observer))
        return self.writer


def file_name(metadata: dict[str, str]) -> str:
    return clean_client_name(metadata.get("filename") or metadata.get("name") or "")


def file_type(metadata: dict[str, str]) -> str | None:
    return normalize_media_type(metadata.get("filetype") or metadata.get("type"))


class _Body:
    """The request body as it arrives; past `room` bytes is 413 (nothing of it kept).

    A body that breaks off (the client went away, or stalled for --client-timeout)
    simply ends, with the reason kept in `broken`: the pump then writes what it holds,
    so every byte received is kept and acknowledged, and the route answers after.
    """

    def __init__(
        self, request: web.Request, offset: int, room: int, idle: float, stop: AppendStop
    ) -> None:
        self._content = request.content
        self._offset = offset
        self._room = room
        self._idle = idle
        self._stop = stop
        self.broken: Exception | None = None

    async def chunks(self) -> AsyncIterator[BodyPiece]:
        received = 0
        while True:
            if self._stop.asked():
                chunk = self._received_already()
                self.broken = _Stopped()
            else:
                try:
                    async with asyncio.timeout(self._idle) as timeout:
                        with self._stop.reading(timeout):  # a stop request ends the wait now
                            chunk = await next_chunk(self._content)  # one read, not joined
                except TimeoutError:
                    if not self._stop.asked():  # (a stop request moves the timeout to now)
                        self.broken = _Stalled()
                        return
                    continue  # stopped: what has come in is still kept
                except Exception as error:  # the connection is gone, or the framing broke
                    self.broken = error
                    return
            if not chunk:
                return
            received += len(chunk)
            if received > self._room:
                raise TooLarge(
                    f"the request carries more than the {self._room} bytes the upload has left",
                    size=self._offset + received,
                )
            yield chunk
            if self.broken is not None:
                return

    def _received_already(self) -> BodyPiece:
        """On a stop: the body this process has received and not yet read (kept too)."""
        try:
            return self._content.read_nowait()
        except Exception:  # the connection broke meanwhile: nothing more to keep
            return b""


async def append_body(
    request: web.Request,
    held: HeldUpload,
    record: UploadRecord,
    *,
    checksum: Checksum | None,
    lifetime: float,
) -> UploadRecord:
    """Append the request's body after `record` (already checked); the acknowledged record.

    A refusal after some bytes came raises as usual; a client that went away raises
    after its bytes were kept (see the module docstring).
    """
    settings = request.config_dict[SETTINGS]
    room = record.room(max_size(request))  # an upload link's cap, if smaller
    if request.content_length is not None and request.content_length > room:
        raise TooLarge(
            f"{request.content_length} bytes, but the upload has {room} left",
            size=record.offset + request.content_length,
        )
    if not request.body_exists:
        return record
    md5 = ResumableMD5.from_bytes(record.md5_state)
    chunk_hash: Any = checksum.new_hash() if checksum is not None else None
    async with AsyncExitStack() as stack:
        target = _AppendTarget(held, stack)
        pump = await stack.enter_async_context(
            open_pump(
                request,
                "upload",
                declared_type=file_type(record.metadata),
                filename=file_name(record.metadata),
                start=Progress(record.offset, md5, record.head),
                extra_digests=(chunk_hash,) if chunk_hash is not None else (),
                storage=target,
                scan=False,
            )
        )
        writer = target.writer
        assert writer is not None
        body = _Body(request, record.offset, room, settings.client_timeout, held.stop)
        try:
            await pump.pump(body.chunks(), final=False)
            if checksum is not None and body.broken is None:
                checksum.verify(chunk_hash.digest())
        except (ResumableError, ApiError, StorageError):
            await asyncio.shield(writer.discard())
            raise
        except BaseException:  # cancelled: keep what was written
            if checksum is None:
                await asyncio.shield(_keep(writer, record, pump.progress.head, md5, lifetime))
            raise
        if body.broken is None:
            return await _keep(writer, record, pump.progress.head, md5, lifetime)
        # Broken off: a checksum names the whole chunk, so part of it cannot be kept.
        kept = record
        if checksum is not None:
            await asyncio.shield(writer.discard())
        else:
            kept = await asyncio.shield(_keep(writer, record, pump.progress.head, md5, lifetime))
        if isinstance(body.broken, _Stalled):
            raise client_stalled(settings.client_timeout) from body.broken
        if isinstance(body.broken, _Stopped):
            raise Superseded(
                "a newer request on this upload stopped this one; "
                f"the upload is at offset {kept.offset}"
            ) from body.broken
        raise BAD_REQUEST("the request body broke off; HEAD for the offset") from body.broken


async def _keep(
    writer: AppendWriter, record: UploadRecord, head: bytes, md5: ResumableMD5, lifetime: float
) -> UploadRecord:
    """Acknowledge what this request wrote (all of it, once the writes settle)."""
    await writer.abort()  # waits for the writes in flight and keeps them
    written = writer.written
    if not written:
        return record
    first = head[len(record.head) : record.offset + written]
    new = record.appended(written, first, md5.to_bytes(), now=time.time(), lifetime=lifetime)
    await writer.acknowledge(new)
    return new
