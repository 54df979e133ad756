"""Events: what a webhook receives, and how a receiver knows it came from us.

An event is `{"id", "type", "created", "data": {...}}` (API.md, "Events"). Its body
is encoded once, when it is emitted, and kept as bytes: every retry sends the very
same bytes, so a receiver that deduplicates by `id` sees one event, and a signature
is always over what travels.

The signature follows Stripe's scheme: `Streamproxy-Signature: t=UNIX,v1=HEX`,
HEX the HMAC-SHA256 of `"{t}.{body}"` with `--webhook-secret`. The timestamp is
taken at each attempt and is inside the MAC, so a receiver can refuse a replayed
old delivery (`verify`'s `tolerance`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal, get_args

from ..storage.base import TIME_FORMAT, StoredMeta

EventType = Literal["file.stored", "file.refused", "file.deleted", "upload.expired"]
EVENT_TYPES: Final = frozenset(get_args(EventType))
RefusalReason = Literal["type", "virus", "size"]
REFUSAL_REASONS: Final = frozenset(get_args(RefusalReason))
# Every event's data has these keys (null when unknown); `reason` only on file.refused.
DATA_KEYS: Final = ("name", "type", "size", "etag", "url", "conversationId", "channel")

SIGNATURE_HEADER: Final = "Streamproxy-Signature"
DEFAULT_TOLERANCE: Final = 300.0  # seconds a receiver should accept a signature's t


@dataclass(frozen=True)
class Event:
    """One event, its body already encoded (the bytes every attempt sends)."""

    id: str
    type: str
    created: float  # UNIX seconds: the retry schedule counts from here
    body: bytes


def new_event(event_type: str, data: Mapping[str, Any], *, now: float | None = None) -> Event:
    """An event of a known type; raises ValueError for an unknown type or reason.

    `data` may leave out keys it does not know (they are sent as null); keys outside
    API.md's list are refused, so a caller's typo does not reach every receiver.
    """
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r} (one of {sorted(EVENT_TYPES)})")
    unknown = set(data) - set(DATA_KEYS) - {"reason"}
    if unknown:
        raise ValueError(f"unknown event data keys: {sorted(unknown)}")
    payload: dict[str, Any] = {key: data.get(key) for key in DATA_KEYS}
    if event_type == "file.refused":
        reason = data.get("reason")
        if reason not in REFUSAL_REASONS:
            raise ValueError(f"file.refused needs a reason in {sorted(REFUSAL_REASONS)}")
        payload["reason"] = reason
    elif "reason" in data:
        raise ValueError("only file.refused carries a reason")
    created = time.time() if now is None else now
    event_id = "evt_" + uuid.uuid4().hex
    document = {
        "id": event_id,
        "type": event_type,
        "created": datetime.fromtimestamp(created, UTC).strftime(TIME_FORMAT),
        "data": payload,
    }
    body = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
    return Event(event_id, event_type, created, body)


def file_data(meta: StoredMeta, url: str | None = None) -> dict[str, Any]:
    """An event's data for a stored file (file.stored, file.deleted)."""
    info = meta.info
    return {
        "name": meta.name,
        "type": info.type,
        "size": info.size,
        "etag": info.etag,
        "url": url,
        "conversationId": info.conversation_id,
        "channel": info.channel,
    }


def _mac(body: bytes, secret: str, timestamp: int) -> str:
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(body: bytes, secret: str, timestamp: int | None = None) -> str:
    """The `Streamproxy-Signature` value for `body`, signed now (or at `timestamp`)."""
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},v1={_mac(body, secret, t)}"


def verify(
    header: str,
    body: bytes,
    secret: str,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> bool:
    """What a receiver runs: is `header` a signature of `body` with `secret`, made
    within `tolerance` seconds of `now`? Several `v1=` (a key being rotated) may come."""
    timestamp: int | None = None
    candidates: list[str] = []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        return False
    expected = _mac(body, secret, timestamp)
    return any(hmac.compare_digest(expected, candidate) for candidate in candidates)
