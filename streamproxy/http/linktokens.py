"""Upload link tokens: what a link allows, signed with `--signing-key`, checked without state.

A token is `BASE64URL(JSON).BASE64URL(HMAC-SHA256)`: the JSON names the
conversation, the file name if the link fixes one, the size cap, the accepted
types, the expiry (UNIX seconds) and a random nonce; the MAC covers the JSON's
encoded form under a label of its own, so no download signature (signing.py)
can pass for one. The first key signs, any configured key verifies (rotation),
as for download links. The nonce is what the one-time claim records: the
token itself only says the link is genuine and unexpired.

This module holds no HTTP (the routes are in `uploadlinks`), so any layer may use it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..error_table import FORBIDDEN

_LABEL = b"streamproxy upload link v1\n"


@dataclass(frozen=True)
class UploadLink:
    """One upload link's terms, as signed."""

    conversation_id: str
    file_name: str | None  # the stored file's name when the link fixes it
    max_size: int  # bytes, never above the service's cap when issued
    allow_type: tuple[str, ...]  # type rules (`image/*`, `.pdf`); empty: the service's rules only
    expires: int  # UNIX seconds
    nonce: str  # 128 random bits: the key of the link's one-time claim

    def to_json(self) -> dict[str, Any]:
        return {
            "c": self.conversation_id,
            "f": self.file_name,
            "m": self.max_size,
            "t": list(self.allow_type),
            "e": self.expires,
            "n": self.nonce,
        }


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: str, payload: str) -> str:
    return _b64(hmac.new(key.encode(), _LABEL + payload.encode(), hashlib.sha256).digest())


def new_link(
    conversation_id: str,
    file_name: str | None,
    max_size: int,
    allow_type: Sequence[str],
    expires_in: int,
    now: float | None = None,
) -> UploadLink:
    expires = int((time.time() if now is None else now) + expires_in)
    nonce = secrets.token_urlsafe(16)  # 22 characters of [A-Za-z0-9_-]: a claim key
    return UploadLink(conversation_id, file_name, max_size, tuple(allow_type), expires, nonce)


def sign(link: UploadLink, keys: Sequence[str]) -> str:
    """The token for `link`, signed with the first key."""
    payload = _b64(json.dumps(link.to_json(), separators=(",", ":")).encode())
    return f"{payload}.{_mac(keys[0], payload)}"


def read(token: str, keys: Sequence[str], now: float | None = None) -> UploadLink:
    """The link a token carries; 403 unless one of `keys` signed it and it has not expired.

    `now=None` checks the expiry against the clock; a resumable upload that checked
    it at creation and reads its saved token again at completion passes `now=0`.
    """
    payload, dot, signature = token.partition(".")
    if not dot or not any(hmac.compare_digest(signature, _mac(key, payload)) for key in keys):
        raise FORBIDDEN("the upload link is not valid: it was altered or not issued here")
    try:
        data = json.loads(_unb64(payload))
        link = UploadLink(
            conversation_id=data["c"],
            file_name=data["f"],
            max_size=data["m"],
            allow_type=tuple(data["t"]),
            expires=data["e"],
            nonce=data["n"],
        )
    except (ValueError, KeyError, TypeError, binascii.Error):
        # Signed by our key yet unreadable: only a key shared with other software does that.
        raise FORBIDDEN("the upload link is not valid: its terms cannot be read") from None
    if link.expires < (time.time() if now is None else now):
        when = datetime.fromtimestamp(link.expires, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        raise FORBIDDEN(f"the upload link expired at {when}; ask for a new one")
    return link
