"""Every error the service answers, declared once: status, code, message and when.

Each entry is an `ErrorKind`; calling it with a detail gives the `ApiError` to
raise (`raise NOT_FOUND(f"no file named {name!r}")`). Everything else that
names a code is derived from `TABLE`: the `message` of error bodies, the codes
aiohttp's own errors map to, the OpenAPI document's error schemas, and the
README's list (a test compares them). A new code is one new line here.

This module holds data only (no aiohttp), so any layer may raise from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


@dataclass
class ApiError(Exception):
    """An error with its place in the table: status, code and a detail to act on."""

    status: int
    code: str
    detail: str
    headers: Mapping[str, str] = field(default_factory=dict)
    close: bool = False  # end the connection after answering (the client stalled)

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.detail}"


@dataclass(frozen=True)
class ErrorKind:
    """One row of API.md's error table; call it with a detail to get the error to raise."""

    status: int
    code: str
    message: str  # the body's `message` (off the upload routes, which use Hybrid Chat's)
    when: str  # what causes it, in the words of API.md
    headers: Mapping[str, str] = field(default_factory=dict)  # sent with every instance
    close: bool = False  # every instance ends the connection

    def __call__(self, detail: str, headers: Mapping[str, str] | None = None) -> ApiError:
        merged = {**self.headers, **headers} if headers else dict(self.headers)
        return ApiError(self.status, self.code, detail, merged, self.close)


# In status order; the first entry of a status is what aiohttp's own errors of that status become.
BAD_REQUEST = ErrorKind(
    400,
    "bad_request",
    "Bad request.",
    "malformed multipart or JSON, a missing or invalid field, a bad name",
)
SOURCE_NOT_ALLOWED = ErrorKind(
    400,
    "source_not_allowed",
    "The source URL is not allowed.",
    "the source URL's scheme, host or address is refused",
)
UNAUTHORIZED = ErrorKind(
    401,
    "unauthorized",
    "Authentication required.",
    "API keys are configured and the request has none",
    headers={"WWW-Authenticate": 'Bearer realm="streamproxy"'},
)
FORBIDDEN = ErrorKind(
    403,
    "forbidden",
    "Access denied.",
    "a wrong API key, or a download without a valid signed link (--signing-key)",
)
NOT_FOUND = ErrorKind(404, "not_found", "Not found.", "download or stat of an unknown name")
METHOD_NOT_ALLOWED = ErrorKind(
    405, "method_not_allowed", "Method not allowed.", "a method the route does not serve"
)
TIMEOUT = ErrorKind(
    408,
    "timeout",
    "The request took too long.",
    "the client stopped sending mid-request",
    close=True,
)
OFFSET_MISMATCH = ErrorKind(
    409,
    "offset_mismatch",
    "The upload is at another offset.",
    "a resumable upload's PATCH at the wrong offset (or the upload is busy)",
)
EXPIRED = ErrorKind(
    410, "expired", "The upload has expired.", "a resumable upload that has expired"
)
PRECONDITION_FAILED = ErrorKind(
    412,
    "precondition_failed",
    "Precondition failed.",
    "a download's If-Match or If-Unmodified-Since does not hold",
)
UNSUPPORTED_VERSION = ErrorKind(
    412,
    "unsupported_version",
    "Unsupported protocol version.",
    "a resumable request with no (or another) protocol version; `Tus-Version` says which",
    headers={"Tus-Version": "1.0.0"},
)
TOO_LARGE = ErrorKind(413, "too_large", "File too large.", "declared or streamed size over the cap")
TYPE_NOT_ALLOWED = ErrorKind(
    415,
    "type_not_allowed",
    "File type not accepted.",
    "type outside the configured allow list, or in the deny list",
)
RANGE_NOT_SATISFIABLE = ErrorKind(
    416,
    "range_not_satisfiable",
    "Range not satisfiable.",
    "no requested range overlaps the file (Content-Range: bytes */SIZE)",
)
INFECTED = ErrorKind(
    422,
    "infected",
    "The file contains malware.",
    "the virus scanner found malware (its signature in detail)",
)
HEADERS_TOO_LARGE = ErrorKind(
    431,
    "headers_too_large",
    "Request headers too large.",
    "the request's header block is over the limit",
)
CHECKSUM_MISMATCH = ErrorKind(
    460,
    "checksum_mismatch",
    "Checksum mismatch.",
    "a tus PATCH whose `Upload-Checksum` does not match its bytes (discarded)",
)
INTERNAL = ErrorKind(500, "internal", "Internal error.", "anything else (logged with a request id)")
NOT_IMPLEMENTED = ErrorKind(
    501,
    "not_implemented",
    "Not implemented.",
    "a transfer coding other than chunked, or resumable uploads on storage without them",
    close=True,  # the body's framing is not understood: nothing after it can be read
)
SOURCE_FAILED = ErrorKind(
    502,
    "source_failed",
    "The source could not be fetched.",
    "the source answered non-2xx, broke off, or sent a bad encoding or the wrong bytes",
)
BUSY = ErrorKind(
    503,
    "busy",
    "The service is busy; try again shortly.",
    "over the configured limit of transfers in flight",
    headers={"Retry-After": "1"},
)
NOT_READY = ErrorKind(
    503, "not_ready", "Storage is not available.", "readiness: the storage takes no write now"
)
SCANNER_UNAVAILABLE = ErrorKind(
    503,
    "scanner_unavailable",
    "The virus scanner is not available.",
    "the virus scanner cannot be reached (fail closed)",
)
STORAGE_UNAVAILABLE = ErrorKind(
    503,
    "storage_unavailable",
    "Storage is not available; try again shortly.",
    "the storage cannot be reached or written (read-only, bucket gone); nothing was kept",
    headers={"Retry-After": "5"},
)
SOURCE_TIMEOUT = ErrorKind(
    504, "source_timeout", "The source was too slow.", "the source was too slow"
)
INSUFFICIENT_STORAGE = ErrorKind(
    507, "insufficient_storage", "Storage is full.", "the disk or bucket refused the write"
)

# Every entry above, in the order declared (API.md's order: by status).
TABLE: tuple[ErrorKind, ...] = tuple(
    v for v in dict(globals()).values() if isinstance(v, ErrorKind)
)
BY_CODE: Mapping[str, ErrorKind] = MappingProxyType({kind.code: kind for kind in TABLE})
# aiohttp's own errors (no route, wrong method, body over client_max_size, ...).
BY_STATUS: Mapping[int, ErrorKind] = MappingProxyType(
    {kind.status: kind for kind in reversed(TABLE)}
)


def codes_of(status: int) -> list[str]:
    return [kind.code for kind in TABLE if kind.status == status]


# Details worded once because several paths raise them.


def over_the_cap(limit: int) -> ApiError:
    return TOO_LARGE(f"the file is larger than the limit of {limit} bytes")


def client_stalled(seconds: float) -> ApiError:
    return TIMEOUT(f"no data from the client for {seconds:g} seconds")
