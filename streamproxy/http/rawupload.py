"""The raw-body upload: `PUT /files?conversationId=ID&fileName=NAME`, the body being the file.

As S3 and nginx take a file: no multipart envelope to parse, so the body goes
straight from aiohttp's reader into the pump. The same request through `POST
/files` with a Content-Type that is not `multipart/*` lands here too. Everything
else is `POST /files`'s: the checks before the body (key, declared size, 413 in
answer to `Expect: 100-continue`), the cap on decoded bytes, the type rules, the
idle timeout, the naming and the response, all through `intake`.

The file's type is the request's `Content-Type`, unless that says nothing about
the file: `application/octet-stream`, or `application/x-www-form-urlencoded`
(what `curl --data-binary` sends unless told otherwise); then the bytes are sniffed.
"""

from __future__ import annotations

from aiohttp import web

from ..error_table import BAD_REQUEST
from ..intake.bodyread import body_pieces
from ..intake.entry import commit, open_pump, preflight, transfer, upload_response
from ..intake.mediatypes import essence, normalize_media_type
from ..intake.naming import check_conversation_id, clean_client_name
from ..runtime.settings import SETTINGS
from .uploadlinks import refuse_used_link

# Content-Types that say how a client sent bytes, not what they are.
_NO_TYPE = frozenset({"application/octet-stream", "application/x-www-form-urlencoded"})


def is_raw(content_type: str | None) -> bool:
    """Whether a `POST /files` carries the file itself: any declared type but `multipart/*`."""
    return bool(content_type) and not essence(content_type or "").startswith("multipart/")


def declared_type(content_type: str | None) -> str | None:
    """The file's type as the request declares it, or None when the bytes must say."""
    declared = normalize_media_type(content_type)
    if declared is None or essence(declared) in _NO_TYPE:
        return None
    return declared


async def raw_upload(request: web.Request) -> web.Response:
    settings = request.config_dict[SETTINGS]
    preflight(request, links=True)
    await refuse_used_link(request)
    if not request.query.get("conversationId"):
        raise BAD_REQUEST("conversationId is required in the query: ?conversationId=ID")
    conversation_id = check_conversation_id(request.query["conversationId"])
    filename = clean_client_name(request.query.get("fileName", ""))
    with transfer(request, "upload"):
        async with open_pump(
            request,
            "upload",
            declared_type=declared_type(request.headers.get("Content-Type")),
            filename=filename,
        ) as pump:
            await pump.pump(body_pieces(request.content, settings.client_timeout))
            if not pump.size and not pump.filename:
                raise BAD_REQUEST(
                    "no file was sent: the body is empty and the query names no fileName"
                )
            meta = await commit(request, pump, conversation_id)
    return upload_response(request, meta)
