"""Signed download links (`--signing-key`): an expiry and an HMAC-SHA256 in the query string.

The signature covers the stored name and the expiry, not the path, so the same
link works on `/files/download` and on Hybrid Chat's `/api/downloadFileStream`
(the agent desk rebuilds mediaUrls from the query string alone). Several keys may
be configured: the first signs, any of them verifies, so keys can be rotated
without breaking links already handed out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from ..error_table import FORBIDDEN

EXPIRES = "expires"
SIGNATURE = "signature"


def _mac(key: str, name: str, expires: int) -> str:
    digest = hmac.new(key.encode(), f"{name}\n{expires}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def sign(name: str, keys: Sequence[str], ttl: float, now: float | None = None) -> dict[str, str]:
    """The query parameters that make a download link for `name` valid for `ttl` seconds."""
    expires = int((time.time() if now is None else now) + ttl)
    return {EXPIRES: str(expires), SIGNATURE: _mac(keys[0], name, expires)}


def verify(
    name: str, query: Mapping[str, str], keys: Sequence[str], now: float | None = None
) -> None:
    """403 unless the query carries an unexpired signature of `name` by one of `keys`."""
    expires_text, signature = query.get(EXPIRES), query.get(SIGNATURE)
    if not expires_text or not signature:
        raise FORBIDDEN("downloads need a signed link: use the url an upload returned")
    try:
        expires = int(expires_text)
    except ValueError:
        raise FORBIDDEN("the link's expiry is not a number") from None
    if not any(hmac.compare_digest(signature, _mac(key, name, expires)) for key in keys):
        raise FORBIDDEN("the link's signature is not valid for this file")
    if expires < (time.time() if now is None else now):
        when = datetime.fromtimestamp(expires, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        raise FORBIDDEN(f"the link expired at {when}; ask for a new one")
