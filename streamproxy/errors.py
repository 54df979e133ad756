"""The one place where failures become responses: every error is JSON, as API.md says.

Handlers raise an `ApiError` from error_table.py's table (or let storage and parsing
errors escape); `error_response`, called by the one middleware (http/stack.py), turns
each into `{"message", "error", "detail"}` with the right status, applies
`--compat-status`, and turns anything unexpected into a logged 500 with a request id.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

from aiohttp import web

from .error_table import (
    BAD_REQUEST,
    BY_CODE,
    BY_STATUS,
    INSUFFICIENT_STORAGE,
    INTERNAL,
    NOT_FOUND,
    STORAGE_UNAVAILABLE,
    ApiError,
)
from .intake.naming import BadName
from .runtime.metrics import METRICS
from .runtime.settings import SETTINGS
from .storage.base import FileMissing, StorageFull, StorageUnavailable

log = logging.getLogger("streamproxy")

UPLOAD_MESSAGE = "An error occurred while uploading file."

# Set by the request stack (http/stack.py) first thing; errors and log lines carry it.
REQUEST_ID: web.RequestKey[str] = web.RequestKey("request_id", str)

# Route names whose errors carry Hybrid Chat's upload message and obey --compat-status.
UPLOAD_ROUTES = frozenset({"upload", "upload-hc", "url-upload"})


def json_error(
    status: int,
    code: str,
    detail: str,
    *,
    upload_route: bool = False,
    compat_status: bool = False,
    request_id: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """Build the JSON error response; the single formatter for every error the service sends."""
    if upload_route and compat_status and 400 <= status < 500:
        status = 404
    body: dict[str, str] = {
        "message": UPLOAD_MESSAGE if upload_route else _message(code),
        "error": code,
        "detail": detail,
    }
    if request_id:
        body["requestId"] = request_id
    return web.Response(
        status=status,
        body=json.dumps(body).encode(),
        content_type="application/json",
        headers=headers,
    )


def _message(code: str) -> str:
    kind = BY_CODE.get(code)
    return kind.message if kind else "Error."


def is_upload_route(request: web.Request) -> bool:
    return request.match_info.route.name in UPLOAD_ROUTES


def response_for(request: web.Request, error: ApiError) -> web.Response:
    """Render an ApiError for this request (its route decides the message and compat status)."""
    metrics = request.config_dict.get(METRICS)
    if metrics is not None:
        metrics.refusals.labels(error.code).inc()
    settings = request.config_dict.get(SETTINGS)
    compat = bool(settings and settings.compat_status)
    response = json_error(
        error.status,
        error.code,
        error.detail,
        upload_route=is_upload_route(request),
        compat_status=compat,
        request_id=request.get(REQUEST_ID),
        headers=error.headers,
    )
    if error.close:
        response.force_close()
    return response


async def send_and_close(request: web.Request, response: web.StreamResponse) -> None:
    """Send the whole response now, then drop the connection instead of reading on.

    aiohttp otherwise keeps reading an unfinished request body for up to ten
    seconds after answering; that is pointless when the client stalled or was
    told not to send its body at all.
    """
    response.force_close()
    await response.prepare(request)
    await response.write_eof()
    request.protocol.force_close()


def _from_http_exception(request: web.Request, error: web.HTTPException) -> ApiError:
    """aiohttp's own errors (no route, wrong method, ...) in our shape."""
    kind = BY_STATUS.get(error.status, INTERNAL if error.status >= 500 else BAD_REQUEST)
    detail = error.text or error.reason
    if error.status == 404:
        detail = f"no route for {request.method} {request.path}"
    elif error.status == 405:
        detail = f"{request.method} is not allowed on {request.path}"
    allow = {"Allow": error.headers["Allow"]} if "Allow" in error.headers else {}
    # The status stays aiohttp's (417, say, has no row of its own: it is a bad_request).
    return ApiError(error.status, kind.code, detail, {**kind.headers, **allow})


def as_api_error(request: web.Request, error: Exception) -> ApiError:
    if isinstance(error, ApiError):
        if error.status >= 500:
            log.warning("%s %s: %s", request.method, request.path, error)
        return error
    if isinstance(error, StorageFull):
        log.warning("%s %s: storage full: %s", request.method, request.path, error)
        return INSUFFICIENT_STORAGE(str(error))
    if isinstance(error, StorageUnavailable):
        # An object store that is away or failing: the client may retry, nothing was kept.
        log.warning("%s %s: storage unavailable: %s", request.method, request.path, error)
        return STORAGE_UNAVAILABLE(str(error))
    if isinstance(error, FileMissing):
        return NOT_FOUND(f"no file named {str(error)!r}")
    if isinstance(error, BadName):  # a name or conversationId the client gave
        return BAD_REQUEST(str(error))
    log.exception(
        "internal error on %s %s [%s]", request.method, request.path, request.get(REQUEST_ID)
    )
    return INTERNAL("an unexpected error happened; it was logged with this request's id")


async def error_response(request: web.Request, error: Exception) -> web.Response:
    """The JSON answer to an error a handler raised before any of its response went out
    (the request stack's job); a refusal that must close the connection is sent now."""
    if isinstance(error, web.HTTPException):
        return response_for(request, _from_http_exception(request, error))
    api_error = as_api_error(request, error)
    response = response_for(request, api_error)
    if api_error.close:
        await send_and_close(request, response)
    return response
