"""`DELETE /files?filename=NAME` and `DELETE /files?conversationId=ID`.

Erasing a conversation's media is what privacy law asks of the operator, so it
must not be open to anyone: without `--api-key` configured the route refuses
(an open service cannot tell the operator from a stranger). Every deleted file
is logged with the request id (the log's context carries it) and counted as it
goes, so a log cut short by a crash, or an erasure stopped by a storage error,
still shows and counts what went. Each deleted file also sends a `file.deleted`
event (when webhooks are configured), spooled before the answer; the metadata it
carries is read before the bytes go.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

from ..error_table import BAD_REQUEST, FORBIDDEN, NOT_FOUND
from ..events import EVENTS, emit, file_data
from ..intake.naming import check_conversation_id
from ..runtime.metrics import METRICS
from ..runtime.settings import SETTINGS
from ..storage.base import STORAGE, FileMissing
from .auth import check_api_key
from .download import requested_name

log = logging.getLogger("streamproxy")


def check_may_delete(request: web.Request) -> None:
    """403 on a service without API keys; else the keyed routes' 401 and 403."""
    if not request.config_dict[SETTINGS].api_key:
        raise FORBIDDEN(
            "deletion needs an API key, and this service has none: "
            "start it with --api-key to allow DELETE"
        )
    check_api_key(request)


async def delete_files(request: web.Request) -> web.Response:
    check_may_delete(request)
    query = request.query
    if ("filename" in query) == ("conversationId" in query):
        raise BAD_REQUEST("give either filename (one file) or conversationId (all its files)")
    storage, erased = request.config_dict[STORAGE], request.config_dict[METRICS].erased
    announce = request.config_dict[EVENTS].enabled
    if "filename" in query:
        name = requested_name(request)
        try:
            meta = await storage.stat(name) if announce else None
            await storage.delete(name)
        except FileMissing:
            raise NOT_FOUND(f"no file named {name!r}") from None
        erased.labels("file").inc()
        log.info("deleted %s", name)
        if meta is not None:
            await emit(request.app, "file.deleted", file_data(meta))
        return web.Response(status=204)
    conversation_id = check_conversation_id(query["conversationId"])
    of_conversation = erased.labels("conversation")
    known = (
        {meta.name: meta for meta in await storage.conversation(conversation_id)}
        if announce
        else {}
    )
    announcing: list[asyncio.Future[Any]] = []

    def deleted(name: str) -> None:
        of_conversation.inc()
        log.info("deleted %s (conversation %s)", name, conversation_id)
        if announce:
            meta = known.get(name)
            data = file_data(meta) if meta else {"name": name, "conversationId": conversation_id}
            announcing.append(asyncio.ensure_future(emit(request.app, "file.deleted", data)))

    try:
        count = await storage.delete_conversation(conversation_id, deleted)
    finally:
        await asyncio.gather(*announcing)  # every deletion's event spooled before answering
    log.info("erased conversation %s: %d files", conversation_id, count)
    return web.json_response({"deleted": count})
