"""`GET /files?conversationId=ID`: a conversation's files, newest first, a page at a time.

The cursor is opaque and tamper-evident: the position it stands for (the last
file's creation time and name) and the conversation, in base64url, with an
HMAC. Any process and any instance must accept a cursor another one issued, so
the key is derived from a stable secret: the signing key when `--signing-key`
is set (the first signs, any verifies, as for links), else a random key the
storage keeps (`Storage.shared_secret`, made once with a conditional write).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import weakref
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from ..error_table import BAD_REQUEST
from ..intake.entry import download_url
from ..intake.naming import check_conversation_id
from ..runtime.settings import SETTINGS
from ..storage.base import STORAGE, TIME_FORMAT, StoredMeta
from .auth import check_api_key

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
CURSOR_PURPOSE = "cursor"
_MAC_BYTES = 16
# The storage's own key, read once per storage object (an app's storage lives as long as it).
_STORED_KEYS: weakref.WeakKeyDictionary[object, bytes] = weakref.WeakKeyDictionary()

Position = tuple[int, str]  # (created as a UNIX time, name): the order, newest first


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, b"streamproxy cursor\n" + payload, hashlib.sha256).digest()[:_MAC_BYTES]


def make_cursor(key: bytes, conversation_id: str, position: Position) -> str:
    payload = json.dumps([conversation_id, *position], ensure_ascii=False).encode()
    return f"{_b64(payload)}.{_b64(_mac(key, payload))}"


def read_cursor(keys: Sequence[bytes], conversation_id: str, cursor: str) -> Position:
    """The position a cursor stands for; 400 unless this service issued it for this
    conversation."""
    refused = BAD_REQUEST("cursor is not one this service issued for this conversation")
    encoded, dot, signature = cursor.partition(".")
    try:
        payload, mac = _unb64(encoded), _unb64(signature)
    except (binascii.Error, ValueError):
        raise refused from None
    if not dot or not any(hmac.compare_digest(mac, _mac(key, payload)) for key in keys):
        raise refused
    try:
        owner, created, name = json.loads(payload)
    except ValueError:
        raise refused from None
    if owner != conversation_id or not isinstance(created, int) or not isinstance(name, str):
        raise refused
    return created, name


async def cursor_keys(request: web.Request) -> list[bytes]:
    """The keys cursors are made (first) and checked (any) with."""
    signing = request.config_dict[SETTINGS].signing_key
    if signing:
        return [key.encode() for key in signing]
    storage = request.config_dict[STORAGE]
    key = _STORED_KEYS.get(storage)
    if key is None:
        key = _STORED_KEYS[storage] = await storage.shared_secret(CURSOR_PURPOSE)
    return [key]


def _position(meta: StoredMeta) -> Position:
    return int(meta.info.created.timestamp()), meta.name


def _limit(request: web.Request) -> int:
    text = request.query.get("limit")
    if text is None:
        return DEFAULT_LIMIT
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise BAD_REQUEST(f"limit must be a whole number from 1 to {MAX_LIMIT}")
    return int(text)


def _entry(request: web.Request, meta: StoredMeta) -> dict[str, Any]:
    info = meta.info
    return {
        "name": meta.name,
        "type": info.type,
        "size": info.size,
        "etag": info.etag,
        "created": info.created.strftime(TIME_FORMAT),
        "url": download_url(request, request.config_dict[SETTINGS], meta),
    }


async def list_files(request: web.Request) -> web.Response:
    check_api_key(request)
    conversation_id = check_conversation_id(request.query.get("conversationId", ""))
    limit = _limit(request)
    keys = await cursor_keys(request)
    cursor = request.query.get("cursor")
    after = read_cursor(keys, conversation_id, cursor) if cursor is not None else None
    files = await request.config_dict[STORAGE].conversation(conversation_id)
    files.sort(key=_position, reverse=True)
    if after is not None:
        files = [meta for meta in files if _position(meta) < after]
    page = files[:limit]
    more = len(files) > limit
    body = {
        "files": [_entry(request, meta) for meta in page],
        "next": make_cursor(keys[0], conversation_id, _position(page[-1])) if more else None,
    }
    return web.json_response(body)
