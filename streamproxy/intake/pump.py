"""The pump: one incoming file, piece by piece, from any source into a storage writer.

Every upload path enters it through `intake.open_pump`. It counts bytes
against the cap, hashes (MD5, plus any extra digest such as the SHA-256 a WhatsApp
webhook announces), sniffs the type from the first bytes and checks the type
rules, while the writer stages the bytes. Pieces are handed over in batches of
about `--chunk-size` (larger as a big file goes on while few transfers run: see
`transfers.TransferSlots.batch_size`); at most `WRITES_IN_FLIGHT` batches wait for
the writer while the next is read, which bounds memory per upload, keeps the disk
side busy, and is the backpressure: a slow disk slows the client down, it never
grows a buffer.

As an async context manager, it guarantees that every way out (cap hit, source
broken, client gone, disk full, cancellation) ends in exactly one of commit or abort;
`Stage` names where it is on that way.

What it has taken in (size, the running MD5, the first bytes for the type) is its
`Progress`: a request that brings only part of a file (a resumable upload's PATCH)
pumps with `final=False`, saves the progress, and the next request starts a pump
from it, so every way in shares this one pump.

A `PumpListener` hears how it ended: after a commit, or after a refusal of the
file itself (size, type, virus). That is where every upload path's webhook
events come from (intake builds the listener).
"""

from __future__ import annotations

import asyncio
import collections
import enum
import hashlib
import logging
import time
from collections.abc import AsyncIterable, Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol

from ..error_table import (
    INFECTED,
    SCANNER_UNAVAILABLE,
    TOO_LARGE,
    TYPE_NOT_ALLOWED,
    ApiError,
    over_the_cap,
)
from ..runtime.settings import DEFAULT_CHUNK_SIZE
from ..storage.base import FileInfo, Observer, Piece, StorageWriter, StoredMeta, now_utc
from . import naming
from .mediatypes import TypePolicy
from .scan import ClamdStream, ScanFailed, Scanner, ScannerUnavailable
from .sniff import HEADER_SIZE, choose_type, sniff_bytes

log = logging.getLogger("streamproxy")


# Batches handed to the writer and not yet written: while one is written the next is
# queued, so the worker thread never waits for the event loop. With 512 KiB batches
# that is up to 1.5 MiB per upload, the next batch being read included, plus what
# aiohttp buffers (twice server.READ_BUFFER).
WRITES_IN_FLIGHT = 2


class Stage(enum.Enum):
    """A pump's lifecycle: NEW -> OPEN -> PUMPED -> COMMITTED, or ABORTED from OPEN/PUMPED."""

    NEW = enum.auto()  # made, not entered: nothing open yet
    OPEN = enum.auto()  # entered: a writer (and a scan) open, bytes may flow
    PUMPED = enum.auto()  # every byte written, type and verdict accepted: ready to commit
    COMMITTED = enum.auto()  # published under its name
    ABORTED = enum.auto()  # the temporary removed: nothing left behind


class WriterSource(Protocol):
    """Where a pump gets its writer: a `Storage`, or a resumable upload's held data."""

    async def create_writer(self, observer: Observer) -> StorageWriter: ...


class Digest(Protocol):
    """A running hash: hashlib's, or one whose state can be saved between requests."""

    def update(self, data: Piece, /) -> None: ...

    def hexdigest(self) -> str: ...


def _new_md5() -> Digest:
    return hashlib.md5(usedforsecurity=False)


@dataclass(frozen=True)
class Progress:
    """What a pump has taken in so far; a later request's pump can start from it."""

    size: int = 0
    md5: Digest = field(default_factory=_new_md5)  # goes on hashing: save it, do not share it
    head: bytes = b""  # the file's first bytes, up to sniff.HEADER_SIZE: the type comes from them


# The refusals of the file itself, by error code, as a listener hears of them.
REFUSALS = {TOO_LARGE.code: "size", TYPE_NOT_ALLOWED.code: "type", INFECTED.code: "virus"}


class PumpListener(Protocol):
    """Told how a pump ended (the webhooks' file.stored and file.refused): a pump does
    not know the request, the listener intake builds for it does."""

    async def stored(self, pump: Pump, meta: StoredMeta) -> None: ...

    async def refused(self, pump: Pump, reason: str) -> None: ...


class Pump:
    """One file on its way into storage; see the module docstring."""

    def __init__(
        self,
        storage: WriterSource,
        *,
        max_size: int,
        policy: TypePolicy,
        declared_type: str | None,
        filename: str,
        extra_digests: Sequence[Any] = (),
        on_bytes: Callable[[int], None] | None = None,
        on_hashed: Callable[[float], None] | None = None,
        scanner: Scanner | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        max_batch: int = 0,
        start: Progress | None = None,
        listener: PumpListener | None = None,
    ) -> None:
        self._storage = storage
        self._listener = listener
        self._max_size = max_size
        self._policy = policy
        self._declared_type = declared_type
        self.filename = filename
        start = start or Progress()
        self._md5 = start.md5
        self._digests = (self._md5, *extra_digests)
        self._on_bytes = on_bytes
        self._on_hashed = on_hashed
        self.hashing_seconds = 0.0  # spent in the digests' updates, on whichever thread
        self._chunk_size = chunk_size
        self._max_batch = max(chunk_size, max_batch)
        self._scanner = scanner
        self._scan: ClamdStream | None = None
        self._writer: StorageWriter | None = None
        self.stage = Stage.NEW
        self.size = start.size
        self._head = bytearray(start.head[:HEADER_SIZE])
        self.media_type: str | None = None

    def _observe(self, piece: Piece) -> None:
        """Runs on the storage's worker thread; hashlib releases the GIL for large pieces.
        Timed by the wall clock (a wait for a core counts): hashing bounds one stream's
        rate (MD5 is serial), and the metric shows by how much (benchmarks/targets.py).
        Calls for one pump never overlap: the writer hashes its batches in order."""
        started = time.perf_counter()
        for digest in self._digests:
            digest.update(piece)
        self.hashing_seconds += time.perf_counter() - started

    async def __aenter__(self) -> Pump:
        if self._scanner is not None:
            try:
                self._scan = await self._scanner.open()
            except ScannerUnavailable as error:
                # Fail closed (503), or with --clamd-fail-open go on unscanned, saying so.
                if not self._scanner.fail_open:
                    raise SCANNER_UNAVAILABLE(
                        f"the virus scanner is unavailable: {error}"
                    ) from error
                log.warning("storing %r unscanned: %s", self.filename, error)
        try:
            self._writer = await self._storage.create_writer(self._observe)
        except BaseException:
            if self._scan is not None:
                self._scan.close()
            raise
        self.stage = Stage.OPEN
        return self

    def _scan_failed(self, error: ScanFailed) -> ApiError:
        """clamd took the stream and did not finish it: refused, fail-open or not."""
        note = ""
        if self._scanner is not None and self._scanner.fail_open:
            note = "; --clamd-fail-open covers only a clamd that cannot be reached at the start"
        return SCANNER_UNAVAILABLE(
            f"the virus scanner is unavailable: {error}; the file was not stored{note}"
        )

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._scan is not None:
            self._scan.close()
        if self.stage in (Stage.OPEN, Stage.PUMPED):
            await self._abort()  # the writer's calls are over once it returns
        if self._on_hashed is not None and self.hashing_seconds:
            self._on_hashed(self.hashing_seconds)
        if self._listener is not None and isinstance(exc, ApiError) and exc.code in REFUSALS:
            await self._listener.refused(self, REFUSALS[exc.code])

    async def _abort(self) -> None:
        assert self._writer is not None
        self.stage = Stage.ABORTED
        # Shielded: a second cancellation must not leave the temporary behind.
        await asyncio.shield(self._writer.abort())

    @property
    def progress(self) -> Progress:
        return Progress(self.size, self._md5, bytes(self._head))

    def _take_head(self, piece: Piece) -> None:
        """Keep the file's first bytes; once there are enough, decide the type."""
        missing = HEADER_SIZE - len(self._head)
        if missing > 0:
            self._head += piece[:missing]
        if len(self._head) >= HEADER_SIZE:
            self._decide_type(bytes(self._head))

    def _decide_type(self, first_bytes: bytes) -> None:
        sniffed = sniff_bytes(first_bytes)
        self.media_type = choose_type(self._declared_type, sniffed, self.filename)
        refusal = self._policy.refusal(self.filename, self.media_type, sniffed)
        if refusal:
            raise TYPE_NOT_ALLOWED(refusal)

    async def pump(self, chunks: AsyncIterable[Piece], *, final: bool = True) -> None:
        """Move every piece into storage; raises ApiError for the cap and the type rules.

        Pieces come as the source delivers them (views, no copies); they are handed
        to the writer in batches of about `chunk_size`, so each trip to a worker
        thread moves a worthwhile amount. `final=False`: more of the file comes
        later, so a short file's type and the scanner's verdict wait, and the pump
        stays OPEN rather than ready to commit.
        """
        assert self.stage is Stage.OPEN, f"pump() on a {self.stage.name} pump (one pump() per file)"
        assert self._writer is not None
        writer = self._writer
        in_flight: collections.deque[asyncio.Future[None]] = collections.deque()
        batch: list[Piece] = []
        batched = 0
        target = self._batch_target()  # set again as each batch goes: not per piece
        try:
            async for piece in chunks:
                size = len(piece)
                if not size:
                    continue
                if self.size + size > self._max_size:
                    raise over_the_cap(self._max_size)
                self.size += size
                if self._on_bytes is not None:
                    self._on_bytes(size)
                batch.append(piece)
                batched += size
                if self.media_type is None:
                    self._take_head(piece)
                if batched >= target:
                    await self._hand_over(writer, batch, in_flight)
                    batch, batched = [], 0
                    target = self._batch_target()
                    if len(in_flight) >= WRITES_IN_FLIGHT:
                        await in_flight.popleft()
            if self.media_type is None and final:
                self._decide_type(bytes(self._head))
            if batch:
                await self._hand_over(writer, batch, in_flight)
            while in_flight:
                await in_flight.popleft()
            if final:
                await self._check_verdict()
                self.stage = Stage.PUMPED
        finally:
            for write in in_flight:
                # Let the writes finish (the writer's abort waits for them anyway),
                # and keep their own errors from masking the one that got us here.
                write.add_done_callback(_consume_result)

    def _batch_target(self) -> int:
        """The next batch's size: `chunk_size`, growing with the file (a quarter of what
        came so far) up to `max_batch`: a small file's batches still overlap its
        arrival, a big one makes fewer and larger trips to the worker threads."""
        return max(self._chunk_size, min(self._max_batch, self.size >> 2))

    async def _hand_over(
        self,
        writer: StorageWriter,
        batch: list[Piece],
        in_flight: collections.deque[asyncio.Future[None]],
    ) -> None:
        """Queue a batch for the writer, tracked in `in_flight` before anything else can
        fail, and stream it to the scanner meanwhile."""
        in_flight.append(asyncio.ensure_future(writer.write(batch)))
        if self._scan is not None:
            await self._feed_scanner(batch)

    async def _feed_scanner(self, pieces: list[Piece]) -> None:
        assert self._scan is not None
        try:
            for piece in pieces:
                await self._scan.feed(piece)
        except ScanFailed as error:
            raise self._scan_failed(error) from error

    async def _check_verdict(self) -> None:
        if self._scan is None:
            return
        try:
            signature = await self._scan.verdict()
        except ScanFailed as error:
            raise self._scan_failed(error) from error
        if signature is not None:
            log.warning("refused %r: clamd found %s", self.filename, signature)
            raise INFECTED(f"the file contains malware: {signature}")

    @property
    def etag(self) -> str:
        return self._md5.hexdigest()

    async def commit(
        self,
        conversation_id: str | None,
        *,
        channel: str | None = None,
    ) -> StoredMeta:
        """Publish under `{conversationId}_{name}` or the next free variant of it."""
        assert self.stage is Stage.PUMPED, f"commit() on a {self.stage.name} pump"
        assert self._writer is not None and self.media_type is not None
        info = FileInfo(
            type=self.media_type,
            size=self.size,
            etag=self.etag,
            created=now_utc(),
            conversation_id=conversation_id,
            channel=channel,
            original_name=self.filename or None,
        )
        base = naming.base_name(conversation_id, self.filename, self.media_type)
        try:
            meta = await self._writer.commit(naming.candidates(base), info)
        except BaseException:
            await self._abort()
            raise
        self.stage = Stage.COMMITTED
        if self._listener is not None:
            await self._listener.stored(self, meta)
        return meta


def _consume_result(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()
