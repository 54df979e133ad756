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

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Literal

from aiohttp import web

from . import signing, uploadlinks
from .auth import check_api_key
from .error_table import over_the_cap
from .mediatypes import TypePolicy, parse_type_rule
from .metrics import METRICS
from .preconditions import etag_header
from .pump import Progress, Pump
from .scan import SCANNER
from .settings import SETTINGS, Settings
from .storage.base import STORAGE, StoredMeta
from .transfers import TRANSFERS

SUCCESS_MESSAGE = "File uploaded successfully."

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
        raise over_the_cap(cap)
    request.config_dict[TRANSFERS].check()


def max_size(request: web.Request) -> int:
    """The cap on this upload: the service's, or a smaller one its upload link sets."""
    cap: int = request.config_dict[SETTINGS].max_size
    link = uploadlinks.link_of(request)
    return cap if link is None else min(cap, link.max_size)


@contextmanager
def transfer(request: web.Request, kind: Kind) -> Iterator[None]:
    """Hold a transfer slot for the whole upload (503 `busy` when none is free)."""
    with request.config_dict[TRANSFERS].slot(kind):
        yield


def open_pump(
    request: web.Request,
    kind: Kind,
    *,
    declared_type: str | None,
    filename: str,
    extra_digests: Sequence[Any] = (),
    start: Progress | None = None,
) -> Pump:
    """A pump for one file, set up as the app is configured; enter it with `async with`.

    `declared_type` is the client's (normalised) type hint, `filename` the cleaned
    name; `extra_digests` are hash objects fed alongside the MD5; `start` is the
    saved progress of a file that an earlier request began.
    """
    settings = request.config_dict[SETTINGS]
    policy = TypePolicy(settings.allow_type, settings.deny_type)
    link = uploadlinks.link_of(request)
    if link is not None:
        # The link's types apply on top of the service's; the name it fixes wins.
        policy = replace(policy, also_allow=tuple(map(parse_type_rule, link.allow_type)))
        filename = link.file_name or filename
    return Pump(
        request.config_dict[STORAGE],
        max_size=max_size(request),
        policy=policy,
        declared_type=declared_type,
        filename=filename,
        extra_digests=extra_digests,
        on_bytes=request.config_dict[METRICS].received.labels(kind).inc,
        scanner=request.config_dict[SCANNER],
        chunk_size=settings.chunk_size,
        start=start,
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
        body=json.dumps(body, ensure_ascii=False).encode(),
        content_type="application/json",
        headers={"ETag": etag_header(meta.info.etag)},
    )
