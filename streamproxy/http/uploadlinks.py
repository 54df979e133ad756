"""Upload links (`--signing-key`): `POST /files/upload-links` issues them; uploads honour them.

A link lets whoever holds it make one upload without an API key (a browser
widget, a customer's phone), within the link's terms: its conversation, its file
name if it fixes one, its size cap (never above the service's) and its types
(on top of the service's rules), until it expires. The link is
`{base}/files?conversationId=ID[&fileName=NAME]&uploadToken=TOKEN` (`linktokens`);
the same query works for a multipart `POST /files`, a raw `PUT /files`, and a
resumable creation (`POST /files/uploads?...`).

When a link is used up, exactly: at the commit, once every byte is in and the
size, type and scan checks have passed, and before the file is published, the
upload makes the link's one-time claim (a conditional write in storage,
`OneTimeClaims`). So an upload refused for its size, its type, a virus, a broken
connection or a timeout leaves the link usable; of uploads racing on one link,
across workers and instances, exactly one publishes and the others get 403. If
publishing fails after the claim (storage trouble), the claim is released and the
link may be tried again.

For the routes that use links (multipart, raw, resumable creation):
- `intake.preflight(request, links=True)` calls `admit`: a request with a valid token
  needs no API key, and its declared size is checked against the link's cap;
- `intake.open_pump` then applies the link's cap, types and file name by itself;
- `refuse_used_link(request)` answers 403 before the body when the link is spent;
- `intake.commit(request, pump, conversation_id)` consumes the link and publishes.
A resumable upload's creation request (`/files/uploads` with the link's query) admits
the link and keeps `token_of(request)` in its record (the later requests carry no
token and need no API key); each later request puts the link back on itself with
`attach(request, token)` (`linktokens.read(token, keys, now=0)`: the expiry was
checked at creation), so the cap, types and name apply as above; the completion
calls `consume(storage, link, conversation_id)` right before its commit, and
`release` if that commit fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from aiohttp import web

from ..error_table import BAD_REQUEST, FORBIDDEN
from ..intake.mediatypes import parse_type_rule
from ..intake.naming import check_conversation_id, clean_client_name
from ..runtime.settings import SETTINGS
from ..storage.base import STORAGE, OneTimeClaims, Storage, capability
from . import linktokens
from .auth import check_api_key
from .linktokens import UploadLink

TOKEN_PARAM = "uploadToken"
DEFAULT_EXPIRES_IN = 3600
MAX_EXPIRES_IN = 7 * 24 * 3600  # as S3's presigned URLs
MAX_ALLOW_TYPES = 32

UPLOAD_LINK: web.RequestKey[UploadLink] = web.RequestKey("upload_link", UploadLink)
_TOKEN: web.RequestKey[str] = web.RequestKey("upload_link_token", str)


# --- issuing -------------------------------------------------------------------------


def _field(body: dict[str, Any], name: str, kind: type, default: Any) -> Any:
    """An optional field of the request (absent or null: `default`), of JSON type `kind`."""
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise BAD_REQUEST(f"{name} must be a {'list' if kind is list else kind.__name__}")
    return value


async def _request_body(request: web.Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError):
        raise BAD_REQUEST("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise BAD_REQUEST("the body must be a JSON object")
    return body


async def create_link(request: web.Request) -> web.Response:
    """`POST /files/upload-links`: API key first, then 403 without `--signing-key`."""
    settings = request.config_dict[SETTINGS]
    check_api_key(request)
    if not settings.signing_key:
        raise FORBIDDEN("upload links need a signing key: start the service with --signing-key")
    body = await _request_body(request)
    conversation = body.get("conversationId")
    if isinstance(conversation, int) and not isinstance(conversation, bool):
        conversation = str(conversation)  # Hybrid Chat's ids are often numbers
    if not isinstance(conversation, str):
        raise BAD_REQUEST("conversationId is required (a string)")
    conversation_id = check_conversation_id(conversation)
    file_name = _field(body, "fileName", str, None)
    if file_name is not None and not (file_name := clean_client_name(file_name)):
        raise BAD_REQUEST("fileName is empty")
    max_size = _field(body, "maxSize", int, settings.max_size)
    if not 0 <= max_size <= settings.max_size:
        raise BAD_REQUEST(f"maxSize must be 0 to {settings.max_size} bytes (the service's cap)")
    allow = _field(body, "allowType", list, [])
    if len(allow) > MAX_ALLOW_TYPES or not all(isinstance(rule, str) for rule in allow):
        raise BAD_REQUEST(f"allowType must be a list of at most {MAX_ALLOW_TYPES} type rules")
    try:
        rules = [str(parse_type_rule(rule)) for rule in allow]
    except ValueError as error:
        raise BAD_REQUEST(f"allowType: {error}") from None
    expires_in = _field(body, "expiresIn", int, DEFAULT_EXPIRES_IN)
    if not 1 <= expires_in <= MAX_EXPIRES_IN:
        raise BAD_REQUEST(f"expiresIn must be 1 to {MAX_EXPIRES_IN} seconds")
    link = linktokens.new_link(conversation_id, file_name, max_size, rules, expires_in)
    token = linktokens.sign(link, settings.signing_key)
    query = {"conversationId": conversation_id}
    if file_name:
        query["fileName"] = file_name
    query[TOKEN_PARAM] = token
    relative = request.app.router["upload"].url_for().with_query(query)
    base = str(settings.public_url or request.url.origin()).rstrip("/")
    return web.json_response({"url": base + str(relative), "expires": link.expires})


# --- honouring -----------------------------------------------------------------------


def admit(request: web.Request) -> UploadLink | None:
    """The request's upload link when its token is valid (kept on the request); None
    when it carries none; 403 for a bad, expired or altered one, or for a query that
    names another conversation or file name than the link."""
    if UPLOAD_LINK in request:  # attached from a resumable upload's record
        return request[UPLOAD_LINK]
    token = request.query.get(TOKEN_PARAM)
    if token is None:
        return None
    keys = request.config_dict[SETTINGS].signing_key
    if not keys:
        raise FORBIDDEN("this service issues no upload links (it has no --signing-key)")
    link = linktokens.read(token, keys)
    for param, signed in (("conversationId", link.conversation_id), ("fileName", link.file_name)):
        given = request.query.get(param)
        if given is not None and signed is not None and given != signed:
            raise FORBIDDEN(f"the upload link is for another {param}")
    request[UPLOAD_LINK] = link
    request[_TOKEN] = token
    return link


def attach(request: web.Request, token: str | None) -> UploadLink | None:
    """The link a resumable upload was created through (`token` from its record), put
    on this request so its terms apply as at creation; the expiry was checked then."""
    if token is None:
        return None
    keys = request.config_dict[SETTINGS].signing_key
    if not keys:  # restarted without the key: nothing can vouch for the link now
        raise FORBIDDEN("this service issues no upload links (it has no --signing-key)")
    link = linktokens.read(token, keys, now=0)
    request[UPLOAD_LINK] = link
    request[_TOKEN] = token
    return link


def link_of(request: web.Request) -> UploadLink | None:
    return request.get(UPLOAD_LINK)


def token_of(request: web.Request) -> str | None:
    """The admitted link's token, for a resumable upload to keep in its record."""
    return request.get(_TOKEN)


def _claims(storage: Storage) -> OneTimeClaims:
    claims = capability(storage, OneTimeClaims)
    if claims is None:
        raise FORBIDDEN(f"upload links are not available on {storage.description}")
    return claims


async def refuse_used_link(request: web.Request) -> None:
    """403 before the body for a link already used (the claim at commit still decides)."""
    link = link_of(request)
    if link is not None and await _claims(request.config_dict[STORAGE]).is_claimed(link.nonce):
        raise _used()


def _used() -> Exception:
    return FORBIDDEN("this upload link has been used; ask for a new one")


async def consume(storage: Storage, link: UploadLink, conversation_id: str | None) -> None:
    """Make the link's one-time claim for an upload to `conversation_id`; 403 if it is
    for another conversation or another upload claimed it first."""
    if conversation_id != link.conversation_id:
        raise FORBIDDEN("the upload link is for another conversationId")
    record = json.dumps(
        {"conversationId": conversation_id, "expires": link.expires, "claimed": int(time.time())}
    ).encode()
    if not await _claims(storage).claim(link.nonce, record):
        raise _used()


async def release(storage: Storage, link: UploadLink) -> None:
    """Undo this upload's claim when its commit failed; never masks that failure."""
    with contextlib.suppress(Exception):  # the commit's error is the one to report
        await asyncio.shield(_claims(storage).release(link.nonce))
