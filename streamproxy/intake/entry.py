"""The one way into the pump, shared by every upload path.

A multipart upload, a raw-body upload, a URL import and (to come) a resumable
upload's PATCH differ only in where their bytes come from. What they share lives
here: the checks that need no body, a transfer slot, a `Pump` built from the app's
settings, storage, scanner and metrics (and an upload link's terms), the commit
that uses a link up, and the 200 response. Upload paths depend on this module and
not on each other; a new path (or a pump that resumes from saved state) is one
change here rather than one per caller.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from contextlib import AbstractContextManager, suppress
from dataclasses import replace
from typing import Any, Literal

from aiohttp import web

from ..error_table import over_the_cap
from ..events import EVENTS, file_data
from ..http import signing, uploadlinks
from ..http.auth import check_api_key
from ..http.linktokens import UploadLink
from ..http.preconditions import etag_header
from ..runtime.metrics import METRICS
from ..runtime.settings import SETTINGS, Settings
from ..storage.base import STORAGE, StoredMeta
from .mediatypes import TypePolicy, parse_type_rule
from .naming import BadName, check_conversation_id
from .pump import Progress, Pump, WriterSource
from .scan import SCANNER
from .transfers import TRANSFERS

SUCCESS_MESSAGE = "File uploaded successfully."
_JSON = json.JSONEncoder(ensure_ascii=False)  # what json.dumps would make on every call

# How an upload path is counted: the `kind` label of the transfer and byte metrics.
Kind = Literal["upload", "import"]

# Which download route an upload route's `url` points at: Hybrid Chat's paths
# answer with Hybrid Chat's download path.
DOWNLOAD_ROUTE_FOR = {"upload": "download", "upload-hc": "download-hc", "url-upload": "download"}


def preflight(request: web.Request, declared_overhead: int = 0, *, links: bool = False) -> None:
    """Checks that need no body: API key (or upload link), declared size, free transfer slot.

    `declared_overhead` is what the body may carry besides the file (a form's
    envelope, an import's JSON) before its declared length counts as over the cap.
    `links=True`: the route takes upload links (`uploadlinks`); a request with a valid
    one needs no API key, and the link's terms apply to the rest of the upload.
    """
    link = uploadlinks.admit(request) if links else None
    if link is None:
        check_api_key(request)
    cap = max_size(request)
    declared = request.content_length
    if declared is not None and declared > cap + declared_overhead:
        _announce_early_refusal(request, declared)
        raise over_the_cap(cap)
    request.config_dict[TRANSFERS].check()


def max_size(request: web.Request) -> int:
    """The cap on this upload: the service's, or a smaller one its upload link sets."""
    return _cap(request.config_dict[SETTINGS], uploadlinks.link_of(request))


def _cap(settings: Settings, link: UploadLink | None) -> int:
    return settings.max_size if link is None else min(settings.max_size, link.max_size)


def transfer(request: web.Request, kind: Kind) -> AbstractContextManager[None]:
    """Hold a transfer slot for the whole upload (503 `busy` when none is free)."""
    return request.config_dict[TRANSFERS].slot(kind)


def open_pump(
    request: web.Request,
    kind: Kind,
    *,
    declared_type: str | None,
    filename: str,
    extra_digests: Sequence[Any] = (),
    start: Progress | None = None,
    conversation_id: str | None = None,
    channel: str | None = None,
    storage: WriterSource | None = None,
    scan: bool = True,
) -> Pump:
    """A pump for one file, set up as the app is configured; enter it with `async with`.

    `declared_type` is the client's (normalised) type hint, `filename` the cleaned
    name; `extra_digests` are hash objects fed alongside the MD5; `start` is the
    saved progress of a file that an earlier request began. `conversation_id` and
    `channel`, when known before the file, go into a file.refused event. A resumable
    upload's PATCH passes its held upload as `storage` (the bytes go after its offset)
    and `scan=False`: clamd takes one stream, so that upload is scanned once, whole, at
    completion.
    """
    config = request.config_dict  # a new proxy each time it is asked for: once here
    bus = config.get(EVENTS)
    listener = (
        UploadEvents(request, conversation_id, channel) if bus is not None and bus.enabled else None
    )
    settings = config[SETTINGS]
    policy = TypePolicy(settings.allow_type, settings.deny_type)
    link = uploadlinks.link_of(request)
    if link is not None:
        # The link's types apply on top of the service's; the name it fixes wins.
        policy = replace(policy, also_allow=tuple(map(parse_type_rule, link.allow_type)))
        filename = link.file_name or filename
    return Pump(
        storage if storage is not None else config[STORAGE],
        max_size=_cap(settings, link),
        policy=policy,
        declared_type=declared_type,
        filename=filename,
        extra_digests=extra_digests,
        on_bytes=config[METRICS].received_by(kind),
        on_hashed=config[METRICS].hashed_by(kind),
        scanner=config[SCANNER] if scan else None,
        chunk_size=settings.chunk_size,
        max_batch=config[TRANSFERS].batch_size(settings.chunk_size),
        start=start,
        listener=listener,
    )


async def commit(
    request: web.Request, pump: Pump, conversation_id: str | None, *, channel: str | None = None
) -> StoredMeta:
    """Publish a pumped file; an upload through a link uses the link up first.

    The claim comes after every check on the bytes and before the file is visible
    (uploadlinks' docstring says why there); of uploads racing on one link, the ones
    that lose the claim get 403 and their bytes go with the pump's abort.
    """
    link = uploadlinks.link_of(request)
    if link is None:
        return await pump.commit(conversation_id, channel=channel)
    storage = request.config_dict[STORAGE]
    await uploadlinks.consume(storage, link, conversation_id)
    try:
        return await pump.commit(conversation_id, channel=channel)
    except BaseException:
        await uploadlinks.release(storage, link)
        raise


def download_url(request: web.Request, settings: Settings, meta: StoredMeta) -> str:
    """Absolute URL of the file, from --public-url or else the request's own origin."""
    route_name = DOWNLOAD_ROUTE_FOR.get(request.match_info.route.name or "", "download")
    query = {"filename": meta.name}
    if settings.signing_key:
        query.update(signing.sign(meta.name, settings.signing_key, settings.link_ttl))
    relative = request.app.router[route_name].url_for().with_query(query)
    base = settings.public_url or request.url.origin()
    return str(base).rstrip("/") + str(relative)


def upload_response(request: web.Request, meta: StoredMeta) -> web.Response:
    """The 200 every upload path answers with (API.md: message, name, type, size, etag, url)."""
    settings = request.config_dict[SETTINGS]
    body = {
        "message": SUCCESS_MESSAGE,
        "name": meta.name,
        "type": meta.info.type,
        "size": meta.info.size,
        "etag": meta.info.etag,
        "url": download_url(request, settings, meta),
    }
    return web.Response(
        body=_JSON.encode(body).encode(),
        content_type="application/json",
        headers={"ETag": etag_header(meta.info.etag)},
    )


class UploadEvents:
    """The pump's listener: file.stored after the commit, file.refused for a file
    refused for its size, type or a virus. Both are spooled before the answer."""

    def __init__(
        self, request: web.Request, conversation_id: str | None, channel: str | None
    ) -> None:
        self._request = request
        self._conversation_id = conversation_id
        self._channel = channel

    async def stored(self, pump: Pump, meta: StoredMeta) -> None:
        request = self._request
        url = download_url(request, request.config_dict[SETTINGS], meta)
        # Shielded: the file is stored, so its event must be spooled even if the
        # request is cancelled meanwhile.
        await asyncio.shield(request.config_dict[EVENTS].emit("file.stored", file_data(meta, url)))

    async def refused(self, pump: Pump, reason: str) -> None:
        data = {
            "name": pump.filename or None,  # the client's name: nothing was stored
            "type": pump.media_type,
            "size": pump.size,  # the bytes taken in before the refusal
            "conversationId": self._conversation_id,
            "channel": self._channel,
            "reason": reason,
        }
        await asyncio.shield(self._request.config_dict[EVENTS].emit("file.refused", data))


def _announce_early_refusal(request: web.Request, declared: int) -> None:
    """file.refused for a body declared over the cap (refused before a byte is read)."""
    bus = request.config_dict.get(EVENTS)
    if bus is None or not bus.enabled:
        return
    conversation_id: str | None = None
    with suppress(BadName):
        conversation_id = check_conversation_id(request.query.get("conversationId", ""))
    data = {"size": declared, "conversationId": conversation_id or None, "reason": "size"}
    bus.emit_soon("file.refused", data)
