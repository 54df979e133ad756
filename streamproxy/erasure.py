"""`DELETE /files?filename=NAME` and `DELETE /files?conversationId=ID`.

Erasing a conversation's media is what privacy law asks of the operator, so it
must not be open to anyone: without `--api-key` configured the route refuses
(an open service cannot tell the operator from a stranger). Every deleted file
is logged with the request id (the log's context carries it) and counted as it
goes, so a log cut short by a crash, or an erasure stopped by a storage error,
still shows and counts what went.
"""

from __future__ import annotations

import logging

from aiohttp import web

from .auth import check_api_key
from .download import requested_name
from .error_table import BAD_REQUEST, FORBIDDEN, NOT_FOUND
from .metrics import METRICS
from .naming import check_conversation_id
from .settings import SETTINGS
from .storage.base import STORAGE, FileMissing

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
    if "filename" in query:
        name = requested_name(request)
        try:
            await storage.delete(name)
        except FileMissing:
            raise NOT_FOUND(f"no file named {name!r}") from None
        erased.labels("file").inc()
        log.info("deleted %s", name)
        return web.Response(status=204)
    conversation_id = check_conversation_id(query["conversationId"])
    of_conversation = erased.labels("conversation")

    def deleted(name: str) -> None:
        of_conversation.inc()
        log.info("deleted %s (conversation %s)", name, conversation_id)

    count = await storage.delete_conversation(conversation_id, deleted)
    log.info("erased conversation %s: %d files", conversation_id, count)
    return web.json_response({"deleted": count})
