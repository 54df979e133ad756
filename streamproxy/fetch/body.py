"""The JSON request of a URL import, read with a bound and checked field by field.

The body is read here rather than with `request.json()` so that its size is bounded
whatever `client_max_size` says, and every refusal names the field at fault. Only
`application/json` is accepted: a browser can send a cross-site `text/plain` POST
without asking, and this call makes the server fetch what it is told.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web
from yarl import URL

from ..error_table import BAD_REQUEST, client_stalled
from ..intake.mediatypes import normalize_media_type
from ..intake.naming import BadName, check_conversation_id, clean_client_name

MAX_BODY: Final = 64 * 1024
MAX_URL: Final = 8 * 1024
MAX_CREDENTIAL: Final = 8 * 1024

_CHANNEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}$")
_VISIBLE_ASCII = re.compile(r"^[\x21-\x7e]+$")  # what a header value can carry as is
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$")  # RFC 9110 token
_HEX_SHA256 = re.compile(r"^[0-9A-Fa-f]{64}$")


@dataclass(frozen=True)
class ImportRequest:
    """A checked URL import request."""

    source_url: URL
    channel: str
    conversation_id: str | None = None
    file_name: str = ""  # cleaned; "" when not given
    mime_type: str | None = None
    sha256: bytes | None = None
    # Headers for the source; repr=False keeps them out of any log or traceback.
    credentials: dict[str, str] = field(default_factory=dict, repr=False)


async def read_import_request(request: web.Request, idle_timeout: float) -> ImportRequest:
    if request.content_type != "application/json" and not request.content_type.endswith("+json"):
        raise BAD_REQUEST("send the request as a JSON object with Content-Type: application/json")
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise BAD_REQUEST(f"the JSON body is larger than {MAX_BODY} bytes")
    raw = await _read_bounded(request, idle_timeout)
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise BAD_REQUEST("the body is not valid JSON") from None
    if not isinstance(document, dict):
        raise BAD_REQUEST("the JSON body must be an object")
    return parse_import_request(document)


async def _read_bounded(request: web.Request, idle_timeout: float) -> bytes:
    body = bytearray()
    while True:
        try:
            async with asyncio.timeout(idle_timeout):
                chunk = await request.content.readany()
        except TimeoutError:
            raise client_stalled(idle_timeout) from None
        if not chunk:
            return bytes(body)
        body += chunk
        if len(body) > MAX_BODY:
            raise BAD_REQUEST(f"the JSON body is larger than {MAX_BODY} bytes")


def parse_import_request(document: dict[str, Any]) -> ImportRequest:
    """Check each field (unknown fields are ignored, for forward compatibility)."""
    source = _string(document, "sourceUrl", required=True, limit=MAX_URL)
    assert source is not None
    try:
        source_url = URL(source).with_fragment(None)
    except (ValueError, TypeError):
        raise BAD_REQUEST("sourceUrl is not a valid URL") from None
    channel = _string(document, "channel", required=True)
    assert channel is not None
    if not _CHANNEL.match(channel):
        raise BAD_REQUEST(
            "channel may contain only letters, digits and . _ : @ - (at most 64), "
            "starting with a letter or digit"
        )
    return ImportRequest(
        source_url=source_url,
        channel=channel,
        conversation_id=_conversation_id(document.get("conversationId")),
        file_name=_file_name(document),
        mime_type=_mime_type(document),
        sha256=_sha256(document),
        credentials=_credentials(document),
    )


def _string(
    document: dict[str, Any], name: str, *, required: bool = False, limit: int = 1024
) -> str | None:
    value = document.get(name)
    if value is None or (value == "" and not required):
        if required:
            raise BAD_REQUEST(f"{name} is required")
        return None
    if not isinstance(value, str):
        raise BAD_REQUEST(f"{name} must be a string")
    if not value:
        raise BAD_REQUEST(f"{name} is empty")
    if len(value) > limit:
        raise BAD_REQUEST(f"{name} is longer than {limit} characters")
    return value


def _conversation_id(value: Any) -> str | None:
    """Optional here; a number is accepted too (web clients use a random 5-digit one)."""
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise BAD_REQUEST("conversationId must be a string")
    return check_conversation_id(value)


def _file_name(document: dict[str, Any]) -> str:
    name = _string(document, "fileName", limit=1024)
    if name is None:
        return ""
    try:
        return clean_client_name(name)
    except BadName as error:
        raise BadName(f"fileName: {error}") from None


def _mime_type(document: dict[str, Any]) -> str | None:
    declared = _string(document, "mime_type", limit=255)
    if declared is None:
        return None
    media_type = normalize_media_type(declared)
    if media_type is None:
        raise BAD_REQUEST("mime_type is not a media type such as image/png")
    return media_type


def _sha256(document: dict[str, Any]) -> bytes | None:
    """Hex, as Graph API media objects give it, or base64, as WhatsApp webhooks do."""
    text = _string(document, "sha256", limit=128)
    if text is None:
        return None
    if _HEX_SHA256.match(text):
        return bytes.fromhex(text)
    standard = text.replace("-", "+").replace("_", "/")
    try:
        digest = base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
    except (binascii.Error, ValueError):
        digest = b""
    if len(digest) != 32:
        raise BAD_REQUEST("sha256 must be 64 hex digits or the base64 of 32 bytes")
    return digest


def _credentials(document: dict[str, Any]) -> dict[str, str]:
    """`APIKey360` as D360-API-KEY; `oauth` as Authorization (see the README for shapes)."""
    headers: dict[str, str] = {}
    api_key = _string(document, "APIKey360", limit=MAX_CREDENTIAL)
    if api_key is not None:
        if not _VISIBLE_ASCII.match(api_key):
            raise BAD_REQUEST("APIKey360 may contain only visible ASCII characters")
        headers["D360-API-KEY"] = api_key
    oauth = document.get("oauth")
    if oauth is None or oauth == "":
        return headers
    token_type = "Bearer"
    if isinstance(oauth, str):
        token: Any = oauth
    elif isinstance(oauth, dict):
        token = oauth.get("access_token")
        declared_type = oauth.get("token_type")
        if declared_type is not None:
            if not isinstance(declared_type, str) or not _TOKEN.match(declared_type):
                raise BAD_REQUEST("oauth.token_type must be a word such as Bearer")
            token_type = declared_type
    else:
        raise BAD_REQUEST('oauth must be an object {"access_token": ..., "token_type": ...}')
    if not isinstance(token, str) or not token:
        raise BAD_REQUEST("oauth.access_token is required and must be a string")
    if len(token) > MAX_CREDENTIAL or not _VISIBLE_ASCII.match(token):
        raise BAD_REQUEST("oauth.access_token must be visible ASCII, at most 8 KiB")
    headers["Authorization"] = f"{token_type} {token}"
    return headers
