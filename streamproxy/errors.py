"""The one place where failures become responses: every error is JSON, as API.md says.

Handlers raise `ApiError` (or let storage and parsing errors escape); the middleware
here turns each into `{"message", "error", "detail"}` with the right status, applies
`--compat-status`, and turns anything unexpected into a logged 500 with a request id.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from aiohttp import web

from .metrics import METRICS, Handler
from .naming import BadName
from .settings import SETTINGS
from .storage.base import FileMissing, StorageFull, StorageUnavailable

log = logging.getLogger("streamproxy")

UPLOAD_MESSAGE = "An error occurred while uploading file."

# Set by the request-id middleware; errors and log lines carry it.
REQUEST_ID: web.RequestKey[str] = web.RequestKey("request_id", str)

# Route names whose errors carry Hybrid Chat's upload message and obey --compat-status.
UPLOAD_ROUTES = frozenset({"upload", "upload-hc", "url-upload"})

_MESSAGES = {
    "bad_request": "Bad request.",
    "unauthorized": "Authentication required.",
    "forbidden": "Access denied.",
    "not_found": "Not found.",
    "method_not_allowed": "Method not allowed.",
    "precondition_failed": "Precondition failed.",
    "range_not_satisfiable": "Range not satisfiable.",
    "too_large": "File too large.",
    "type_not_allowed": "File type not accepted.",
    "timeout": "The request took too long.",
    "busy": "The service is busy; try again shortly.",
    "insufficient_storage": "Storage is full.",
    "not_ready": "Storage is not available.",
    "storage_unavailable": "Storage is not available; try again shortly.",
    "source_not_allowed": "The source URL is not allowed.",
    "source_failed": "The source could not be fetched.",
    "source_timeout": "The source was too slow.",
    "internal": "Internal error.",
}


@dataclass
class ApiError(Exception):
    """An error with its place in API.md's table: status, code and a detail to act on."""

    status: int
    code: str
    detail: str
    headers: Mapping[str, str] = field(default_factory=dict)
    close: bool = False  # end the connection after answering (the client stalled)

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.detail}"


def bad_request(detail: str) -> ApiError:
    return ApiError(400, "bad_request", detail)


def not_found(detail: str) -> ApiError:
    return ApiError(404, "not_found", detail)


def too_large(limit: int) -> ApiError:
    return ApiError(413, "too_large", f"the file is larger than the limit of {limit} bytes")


def type_not_allowed(detail: str) -> ApiError:
    return ApiError(415, "type_not_allowed", detail)


def busy(retry_after: int = 1) -> ApiError:
    return ApiError(
        503,
        "busy",
        "too many transfers in flight; retry shortly",
        {"Retry-After": str(retry_after)},
    )


def infected(signature: str) -> ApiError:
    return ApiError(422, "infected", f"the file contains malware: {signature}")


def scanner_unavailable(reason: str) -> ApiError:
    return ApiError(503, "scanner_unavailable", f"the virus scanner is unavailable: {reason}")


def insufficient_storage(detail: str) -> ApiError:
    return ApiError(507, "insufficient_storage", detail)


def storage_unavailable(detail: str) -> ApiError:
    return ApiError(503, "storage_unavailable", detail, {"Retry-After": "5"})


def source_not_allowed(detail: str) -> ApiError:
    """The URL import's scheme, host or address is refused (server-side request forgery)."""
    return ApiError(400, "source_not_allowed", detail)


def source_failed(detail: str) -> ApiError:
    """The source answered non-2xx, broke off, or sent a bad encoding or the wrong bytes."""
    return ApiError(502, "source_failed", detail)


def source_timeout(detail: str) -> ApiError:
    return ApiError(504, "source_timeout", detail)


_AIOHTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "timeout",
    412: "precondition_failed",
    413: "too_large",
    415: "type_not_allowed",
    416: "range_not_satisfiable",
}


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
        "message": UPLOAD_MESSAGE if upload_route else _MESSAGES.get(code, "Error."),
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
    code = _AIOHTTP_CODES.get(error.status, "internal" if error.status >= 500 else "bad_request")
    detail = error.text or error.reason
    if error.status == 404:
        detail = f"no route for {request.method} {request.path}"
    elif error.status == 405:
        detail = f"{request.method} is not allowed on {request.path}"
    allow = {"Allow": error.headers["Allow"]} if "Allow" in error.headers else {}
    return ApiError(error.status, code, detail, allow)


def _to_api_error(request: web.Request, error: Exception) -> ApiError:
    if isinstance(error, ApiError):
        if error.status >= 500:
            log.warning("%s %s: %s", request.method, request.path, error)
        return error
    if isinstance(error, StorageFull):
        log.warning("%s %s: storage full: %s", request.method, request.path, error)
        return insufficient_storage(str(error))
    if isinstance(error, StorageUnavailable):
        # An object store that is away or failing: the client may retry, nothing was kept.
        log.warning("%s %s: storage unavailable: %s", request.method, request.path, error)
        return storage_unavailable(str(error))
    if isinstance(error, FileMissing):
        return not_found(f"no file named {str(error)!r}")
    if isinstance(error, BadName):  # a name or conversationId the client gave
        return bad_request(str(error))
    log.exception(
        "internal error on %s %s [%s]", request.method, request.path, request.get(REQUEST_ID)
    )
    return ApiError(
        500, "internal", "an unexpected error happened; it was logged with this request's id"
    )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as error:
        if error.status < 400 or request.writer.output_size:
            raise
        return response_for(request, _from_http_exception(request, error))
    except Exception as error:
        if request.writer.output_size:
            # Headers are out, so no error response can follow: aiohttp drops the
            # connection, which tells the client the body is incomplete.
            raise
        api_error = _to_api_error(request, error)
        response = response_for(request, api_error)
        if api_error.close:
            await send_and_close(request, response)
        return response
