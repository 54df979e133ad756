"""The resumable routes: `/files/uploads` and `/files/uploads/{id}`, both protocols.

Each handler detects the protocol (`Tus-Resumable: 1.0.0`, or the draft's
`Upload-Draft-Interop-Version` 6 or 8; else 412 with `Tus-Version`), checks the API
key, and hands the request to its protocol's thin translation (tus.py, draft.py)
onto the one state machine (state.py) and the storage's `UploadStore`. Refusals are
the upload routes' JSON error; for the draft they are also RFC 9457 problems where
the draft names a type, and for tus they carry `Tus-Resumable`.

A storage without the resumable capability (no `UploadStore`) keeps the routes and
answers 501 `not_implemented` on them: a client learns the reason in one request,
rather than a 404 that looks like a wrong base path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from ..error_table import NOT_IMPLEMENTED, ApiError
from ..errors import REQUEST_ID, UPLOAD_MESSAGE, as_api_error, send_and_close
from ..http import uploadlinks
from ..http.auth import check_api_key
from ..runtime.metrics import METRICS
from ..runtime.settings import SETTINGS, Settings
from ..storage.base import STORAGE, Storage, StorageError
from ..storage.local import LocalStorage
from . import draft, tus
from .assembly import settle
from .concat import final_state
from .headers import (
    CHECKSUM_ALGORITHMS,
    TUS_VERSION,
    detect_protocol,
    format_extensions,
    format_upload_limit,
    interop_version_value,
    problem_fields,
)
from .localupload import LocalUploadStore
from .problems import OffsetMismatch, ResumableError
from .state import CorruptRecord, Protocol
from .store import UPLOAD_STORE, UploadStore

Handler = Callable[[web.Request, Protocol, UploadStore], Awaitable[web.StreamResponse]]

log = logging.getLogger("streamproxy")


def upload_store_for(storage: Storage, settings: Settings) -> UploadStore | None:
    """The storage's resumable capability, if it has one (checked where used)."""
    inner = getattr(storage, "inner", storage)  # TimedStorage wraps the real one
    if isinstance(inner, LocalStorage):
        return LocalUploadStore(inner)
    try:  # the s3 extra is optional: local storage never imports aiobotocore
        from ..storage.s3 import S3Storage
        from .s3adapter import S3UploadStore
    except ImportError:
        return None
    if isinstance(inner, S3Storage):
        return S3UploadStore(inner, ttl=settings.upload_lease)
    return None


async def resumable_lifecycle(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx, after the storage's: the uploads area is ready before the first request."""
    store = app[UPLOAD_STORE]
    if store is not None:
        try:
            await store.prepare(time.time())
        except (OSError, StorageError) as error:
            # Storage that takes no writes now (read-only, bucket away) still serves
            # downloads; each resumable request answers for itself (503) meanwhile.
            log.warning("resumable uploads area not ready: %s", error)
    yield


def add_resumable_routes(app: web.Application, base_path: str) -> None:
    app[UPLOAD_STORE] = upload_store_for(app[STORAGE], app[SETTINGS])
    app.cleanup_ctx.append(resumable_lifecycle)
    collection = app.router.add_resource(base_path + "/files/uploads", name="resumable-create")
    collection.add_route("OPTIONS", options)
    collection.add_route("POST", _wrap(_create))
    upload = app.router.add_resource(base_path + "/files/uploads/{upload_id}", name="resumable")
    upload.add_route("OPTIONS", options)
    upload.add_route("HEAD", _wrap(_head))
    upload.add_route("PATCH", _wrap(_patch))
    upload.add_route("DELETE", _wrap(_delete))
    upload.add_route("GET", _wrap(_get))


def tus_extensions() -> str:
    """What OPTIONS advertises in `Tus-Extension` (the OpenAPI document shows the same)."""
    return format_extensions(checksum_trailer=False, unfinished=True)


async def options(request: web.Request) -> web.Response:
    """tus discovery (no API key, no version needed: CORS preflights carry neither)."""
    settings = request.config_dict[SETTINGS]
    response = web.Response(status=204)
    response.headers.update(
        {
            "Tus-Resumable": TUS_VERSION,
            "Tus-Version": TUS_VERSION,
            "Tus-Extension": tus_extensions(),
            "Tus-Max-Size": str(settings.max_size),
            "Tus-Checksum-Algorithm": ",".join(CHECKSUM_ALGORITHMS),
            "Upload-Limit": format_upload_limit(settings.max_size),
        }
    )
    return response


async def _create(request: web.Request, protocol: Protocol, store: UploadStore) -> web.Response:
    if protocol is Protocol.TUS:
        return await tus.create(request, store)
    return await draft.create(request, protocol, store)


async def _head(request: web.Request, protocol: Protocol, store: UploadStore) -> web.Response:
    """tus: the acknowledged offset, lock-free. The draft: the offset once no older
    append runs on the upload (it is stopped: takeover.py), so the next PATCH can use it.
    A final upload is assembled now if its parts are finished (assembly.py)."""
    upload_id = request.match_info["upload_id"]
    if protocol is Protocol.TUS:
        record = await store.read(upload_id)
    else:
        record = await store.settled(upload_id)
    record.check_live(time.time())
    final_length = None
    if record.is_final:
        record, final_length = await final_state(request, store, record)
    if protocol is Protocol.TUS:
        return tus.head_response(request, record, final_length=final_length)
    return draft.head_response(request, protocol, record)


async def _patch(request: web.Request, protocol: Protocol, store: UploadStore) -> web.Response:
    if protocol is Protocol.TUS:
        return await tus.patch(request, store)
    return await draft.patch(request, protocol, store)


async def _delete(request: web.Request, protocol: Protocol, store: UploadStore) -> web.Response:
    """tus termination, draft cancellation: the upload's bytes and record go at once
    (a file it already committed stays stored). A draft cancellation stops an append
    still running on it first, as the draft asks (takeover.py)."""
    take_over = protocol is not Protocol.TUS
    async with store.hold(request.match_info["upload_id"], take_over=take_over) as held:
        await held.remove()
    return web.Response(status=204)


async def _get(request: web.Request, protocol: Protocol, store: UploadStore) -> web.Response:
    """After completion: the JSON `POST /files` answers; a refused completion's error."""
    record = await store.read(request.match_info["upload_id"])
    if record.is_final:  # assembled now if its parts are finished (assembly.py)
        record = await settle(request, store, record)
    return tus.final_response(request, record)


def _wrap(handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        protocol: Protocol | None = None
        try:
            protocol = detect_protocol(
                request.headers.get("Tus-Resumable"),
                request.headers.get("Upload-Draft-Interop-Version"),
            )
            store = request.config_dict[UPLOAD_STORE]
            await _authorize(request, store)
            if store is None:
                raise NOT_IMPLEMENTED(
                    "this storage has no resumable uploads; upload with POST /files"
                )
            response = await _outliving_cancellation(handler(request, protocol, store))
        except ResumableError as error:
            response = refusal(request, error, protocol)
        except web.HTTPException:
            raise
        except Exception as error:
            if request.writer.output_size:
                raise
            response = refusal(request, as_api_error(request, error), protocol)
        if protocol is Protocol.TUS or protocol is None:
            response.headers["Tus-Resumable"] = TUS_VERSION
        if response.keep_alive is False and not request.content.is_eof():
            # A refusal that ends the connection (a stalled client, an append stopped by
            # a newer request): answer now, and read none of the rest of the body.
            with contextlib.suppress(ConnectionError):  # the client left already
                await send_and_close(request, response)
        return response

    return wrapped


async def _authorize(request: web.Request, store: UploadStore | None) -> None:
    """The API key, or an upload link: a creation with a valid `uploadToken` needs no
    key (its terms then apply, flow.create); the later requests of an upload created
    through a link need none either (its id is unguessable, and its record names the
    link). Anything else is checked as before."""
    if request.match_info.route.name == "resumable-create":
        if uploadlinks.admit(request) is None:
            check_api_key(request)
        return
    try:
        check_api_key(request)
    except ApiError:
        if store is None or not await _made_through_link(store, request.match_info["upload_id"]):
            raise


async def _made_through_link(store: UploadStore, upload_id: str) -> bool:
    try:
        return (await store.read(upload_id)).upload_link is not None
    except (ResumableError, CorruptRecord):  # unknown: the key's refusal answers
        return False


async def _outliving_cancellation(
    work: Awaitable[web.StreamResponse],
) -> web.StreamResponse:
    """Run a handler to its end even if aiohttp cancels it (`handler_cancellation`, when
    the client goes away): the append then sees the broken body, keeps and acknowledges
    what arrived, and lets go of the upload's lock only after that."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        if not task.cancelled() and task.exception() is not None:
            # Nobody is left to answer (the client went away): the append's own error
            # (the body broke off) is expected, and retrieving it keeps it out of the log.
            log.debug("a resumable request ended after its client left: %s", task.exception())
        raise


def refusal(
    request: web.Request, error: ResumableError | ApiError, protocol: Protocol | None
) -> web.Response:
    """The upload routes' JSON error, with what each protocol adds to a refusal."""
    metrics = request.config_dict.get(METRICS)
    if metrics is not None:
        metrics.refusals.labels(error.code).inc()
    body = {"message": UPLOAD_MESSAGE, "error": error.code, "detail": error.detail}
    if request.get(REQUEST_ID):
        body["requestId"] = request[REQUEST_ID]
    headers: dict[str, str] = {}
    content_type = "application/json"
    if isinstance(error, ApiError):
        headers.update(error.headers)
    else:
        if protocol is not None and protocol is not Protocol.TUS:
            problem = problem_fields(error, protocol)
            if problem:
                body.update(problem)
                content_type = "application/problem+json"
        if isinstance(error, OffsetMismatch):
            headers["Upload-Offset"] = str(error.expected)
        if error.status == 412:
            headers["Tus-Version"] = TUS_VERSION
    if protocol is not None and protocol is not Protocol.TUS:
        headers["Upload-Complete"] = "?0"
        headers["Upload-Draft-Interop-Version"] = interop_version_value(protocol) or ""
    response = web.Response(
        status=error.status,
        body=json.dumps(body).encode(),
        content_type=content_type,
        headers=headers,
    )
    if error.close:
        response.force_close()
    return response
