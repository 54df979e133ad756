"""Request framing the service refuses: a transfer coding other than `chunked`.

aiohttp reads `Transfer-Encoding: gzip, chunked` as chunked and leaves the gzip
undone, so the upload would be stored as compressed bytes under the client's
name. RFC 9112 section 6.1: a server that receives a transfer coding it does not
understand answers 501. The check runs before any handler reads the body, and the
connection is closed, since the rest of that body cannot be framed safely.
(Two Transfer-Encoding lines, or a coding list not ending in `chunked`, already
get aiohttp's own 400.)
"""

from __future__ import annotations

from aiohttp import hdrs, web

from ..error_table import NOT_IMPLEMENTED


def transfer_codings(request: web.BaseRequest) -> list[str]:
    """The request's transfer codings, lower-cased, in order (parameters kept)."""
    return [
        coding.strip().lower()
        for value in request.headers.getall(hdrs.TRANSFER_ENCODING, [])
        for coding in value.split(",")
        if coding.strip()
    ]


def refuse_codings(request: web.BaseRequest) -> None:
    """Raise 501 for any transfer coding but a lone `chunked` (the request stack calls
    this only when the request has a `Transfer-Encoding`)."""
    codings = transfer_codings(request)
    if codings and codings != ["chunked"]:
        raise NOT_IMPLEMENTED(
            f"transfer coding {', '.join(codings)!r} is not supported; send the body "
            "chunked or with a Content-Length"
        )
