"""The pump: one incoming file, chunk by chunk, from any source into a storage writer.

Both upload paths (multipart and URL import) go through `Intake`. It counts bytes
against the cap, hashes (MD5, plus any extra digest such as the SHA-256 a WhatsApp
webhook announces), sniffs the type from the first chunk and checks the type
rules, while the writer stages the bytes. At most one write is in flight while the
next chunk is read: that bounds memory to two chunks and lets the network read
overlap the disk write, and awaiting it is the backpressure.

As an async context manager, it guarantees that every way out (cap hit, source
broken, client gone, disk full, cancellation) ends in exactly one of commit or abort.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterable, Callable, Sequence
from types import TracebackType
from typing import Any

from . import naming
from .errors import infected, scanner_unavailable, too_large, type_not_allowed
from .mediatypes import TypePolicy
from .scan import ClamdStream, Scanner, ScannerUnavailable
from .sniff import choose_type, sniff_bytes
from .storage.base import FileInfo, Storage, StorageWriter, StoredMeta, now_utc

log = logging.getLogger("streamproxy")


class Intake:
    """One file on its way into storage; see the module docstring."""

    def __init__(
        self,
        storage: Storage,
        *,
        max_size: int,
        policy: TypePolicy,
        declared_type: str | None,
        filename: str,
        extra_digests: Sequence[Any] = (),
        on_bytes: Callable[[int], None] | None = None,
        scanner: Scanner | None = None,
    ) -> None:
        self._storage = storage
        self._max_size = max_size
        self._policy = policy
        self._declared_type = declared_type
        self.filename = filename
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._digests = (self._md5, *extra_digests)
        self._on_bytes = on_bytes
        self._scanner = scanner
        self._scan: ClamdStream | None = None
        self._writer: StorageWriter | None = None
        self._finished = False
        self.size = 0
        self.media_type: str | None = None

    def _observe(self, chunk: bytes) -> None:
        """Runs on the storage's worker thread; hashlib releases the GIL for large chunks."""
        for digest in self._digests:
            digest.update(chunk)

    async def __aenter__(self) -> Intake:
        if self._scanner is not None:
            try:
                self._scan = await self._scanner.open()
            except ScannerUnavailable as error:
                self._scanner_failed(error)
        try:
            self._writer = await self._storage.create_writer(self._observe)
        except BaseException:
            if self._scan is not None:
                self._scan.close()
            raise
        return self

    def _scanner_failed(self, error: ScannerUnavailable) -> None:
        """Fail closed (503), or with --clamd-fail-open go on unscanned, saying so."""
        if self._scan is not None:
            self._scan.close()
            self._scan = None
        assert self._scanner is not None
        if not self._scanner.fail_open:
            raise scanner_unavailable(str(error)) from error
        log.warning("storing %r unscanned: %s", self.filename, error)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._scan is not None:
            self._scan.close()
        if not self._finished and self._writer is not None:
            self._finished = True
            # Shielded: a second cancellation must not leave the temporary behind.
            await asyncio.shield(self._writer.abort())

    def _decide_type(self, first_chunk: bytes) -> None:
        sniffed = sniff_bytes(first_chunk)
        self.media_type = choose_type(self._declared_type, sniffed, self.filename)
        refusal = self._policy.refusal(self.filename, self.media_type, sniffed)
        if refusal:
            raise type_not_allowed(refusal)

    async def pump(self, chunks: AsyncIterable[bytes]) -> None:
        """Move every chunk into storage; raises ApiError for the cap and the type rules."""
        assert self._writer is not None, "use Intake as an async context manager"
        writer = self._writer
        in_flight: asyncio.Future[None] | None = None
        try:
            async for chunk in chunks:
                if not chunk:
                    continue
                if self.size + len(chunk) > self._max_size:
                    raise too_large(self._max_size)
                if self.media_type is None:
                    self._decide_type(chunk)
                self.size += len(chunk)
                if self._on_bytes is not None:
                    self._on_bytes(len(chunk))
                if in_flight is not None:
                    await in_flight
                in_flight = asyncio.ensure_future(writer.write(chunk))
                if self._scan is not None:
                    await self._feed_scanner(chunk)
            if in_flight is not None:
                await in_flight
                in_flight = None
            if self.media_type is None:
                self._decide_type(b"")
            await self._check_verdict()
        finally:
            if in_flight is not None and not in_flight.done():
                # Let the write finish (the writer's abort waits for it anyway),
                # and keep its own error from masking the one that got us here.
                in_flight.add_done_callback(_consume_result)

    async def _feed_scanner(self, chunk: bytes) -> None:
        assert self._scan is not None
        try:
            await self._scan.feed(chunk)
        except ScannerUnavailable as error:
            self._scanner_failed(error)

    async def _check_verdict(self) -> None:
        if self._scan is None:
            return
        try:
            signature = await self._scan.verdict()
        except ScannerUnavailable as error:
            self._scanner_failed(error)
            return
        if signature is not None:
            log.warning("refused %r: clamd found %s", self.filename, signature)
            raise infected(signature)

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
        self._finished = True
        try:
            return await self._writer.commit(naming.candidates(base), info)
        except BaseException:
            await asyncio.shield(self._writer.abort())
            raise


def _consume_result(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()
