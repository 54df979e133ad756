"""CORS (`--cors-origin`): lets a page on another origin (a chat widget) call the service.

One object, `CorsPolicy`, owns the whole decision, so no handler has to think
about browsers. It answers preflights (`OPTIONS` carrying `Origin` and
`Access-Control-Request-Method`) for every route before any handler or API-key
check runs, since preflights never carry a key; and it adds its headers to
every actual response as it is prepared, the one place that also sees error
responses and downloads a handler prepared itself (sendfile); http/stack.py calls
both.

An origin not listed gets no CORS header and its request runs as if the flag
were not given; the browser then blocks the page from reading the answer.
Without the flag nothing here is installed: `OPTIONS` behaves as before.
"""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import hdrs, web
from prometheus_client import Counter
from yarl import URL

from ..runtime.metrics import METRICS

ANY_ORIGIN = "*"

# API.md's lists: what a page may send (the If-* validators, and the tus and
# resumable-upload draft headers) and what it may read of an answer.
ALLOW_HEADERS = ", ".join(
    (
        "Authorization",
        "Content-Type",
        "Range",
        "If-Match",
        "If-None-Match",
        "If-Modified-Since",
        "If-Unmodified-Since",
        "If-Range",
        "Tus-Resumable",
        "Upload-Offset",
        "Upload-Length",
        "Upload-Defer-Length",
        "Upload-Metadata",
        "Upload-Checksum",
        "Upload-Concat",
        "Upload-Complete",
        "Upload-Draft-Interop-Version",
    )
)
EXPOSE_HEADERS = ", ".join(
    (
        "ETag",
        "Location",
        "Content-Range",
        "Content-Disposition",
        "X-Request-Id",
        "Upload-Offset",
        "Upload-Length",
        "Upload-Expires",
        "Upload-Limit",
        "Tus-Resumable",
        "Tus-Version",
        "Tus-Max-Size",
        "Tus-Extension",
    )
)

# Seconds a browser may reuse a preflight's answer. Ten minutes saves a round
# trip per request for a busy widget, yet a changed `--cors-origin` reaches open
# pages soon (Chromium caps this at 7,200 anyway).
MAX_AGE = 600


def parse_cors_origin(text: str) -> str:
    """`*`, or an origin as browsers send it in `Origin`: `scheme://host[:port]`.

    Scheme and host are lower-cased, an IDN host is punycode, and a default port
    (80 for http, 443 for https) is dropped, so the comparison with the header is
    a plain string match.
    """
    stripped = text.strip()
    if stripped == ANY_ORIGIN:
        return ANY_ORIGIN
    usage = "use scheme://host[:port], such as https://chat.example, or *"
    if any(mark in stripped for mark in "?#@") or "://" not in stripped:
        raise ValueError(f"not an origin: {text!r} ({usage})")
    try:
        url = URL(stripped)
    except ValueError as error:
        raise ValueError(f"not an origin: {text!r} ({error})") from None
    if url.scheme not in {"http", "https"} or not url.raw_host:
        raise ValueError(f"not an http(s) origin: {text!r} ({usage})")
    if url.raw_path not in {"", "/"}:
        raise ValueError(f"an origin has no path: {text!r} ({usage})")
    return str(url.origin())


def _add_vary(response: web.StreamResponse, token: str) -> None:
    """Add a token to `Vary`, keeping what the handler put there."""
    vary = response.headers.get(hdrs.VARY)
    if vary is None:
        response.headers[hdrs.VARY] = token
    elif vary.strip() != "*" and token.lower() not in (
        part.strip().lower() for part in vary.split(",")
    ):
        response.headers[hdrs.VARY] = f"{vary}, {token}"


def is_preflight(request: web.BaseRequest) -> bool:
    """An OPTIONS without `Access-Control-Request-Method` is not one: the route answers it
    (tus's own `OPTIONS`, for one)."""
    return (
        request.method == hdrs.METH_OPTIONS
        and hdrs.ORIGIN in request.headers
        and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers
    )


class CorsPolicy:
    """The listed origins (or `*`), and how requests and responses follow them."""

    def __init__(self, origins: Iterable[str], preflights: Counter | None = None) -> None:
        self.origins = frozenset(origins)
        self.any_origin = ANY_ORIGIN in self.origins
        self.preflights = preflights

    def allowed_origin(self, request: web.BaseRequest) -> str | None:
        """The value of `Access-Control-Allow-Origin` for this request, None for none."""
        if self.any_origin:
            return ANY_ORIGIN
        origin = request.headers.get(hdrs.ORIGIN, "").lower()
        return origin if origin in self.origins else None

    async def preflight(
        self, request: web.Request, router: web.UrlDispatcher
    ) -> web.Response | None:
        """The answer to a preflight from an allowed origin for a path the service has,
        else None (the request then goes on as any other, and gets no CORS headers)."""
        if self.allowed_origin(request) is None:
            self._count("refused")
            return None
        methods = await _methods_for(request, router)
        if not methods:
            self._count("no_route")
            return None  # no such path: the router's 404
        self._count("answered")
        headers = {
            hdrs.ACCESS_CONTROL_ALLOW_METHODS: ", ".join(sorted(methods)),
            hdrs.ACCESS_CONTROL_ALLOW_HEADERS: ALLOW_HEADERS,
            hdrs.ACCESS_CONTROL_MAX_AGE: str(MAX_AGE),
        }
        return web.Response(status=204, headers=headers)

    def decorate(self, request: web.BaseRequest, response: web.StreamResponse) -> None:
        """Add the CORS headers to any response, preflight or actual, error or download.

        With a list of origins every answer depends on `Origin`, so every answer
        says `Vary: Origin`: a cache must not give a listed origin the answer it
        stored for another (or for none). `*` is the same for all, so no Vary.
        """
        allowed = self.allowed_origin(request)
        if not self.any_origin:
            _add_vary(response, hdrs.ORIGIN)
        if allowed is None:
            return
        response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = allowed
        if not is_preflight(request):
            response.headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = EXPOSE_HEADERS

    def _count(self, result: str) -> None:
        if self.preflights is not None:
            self.preflights.labels(result).inc()


async def _methods_for(request: web.Request, router: web.UrlDispatcher) -> set[str]:
    """Every method some route of this app takes at the request's path."""
    methods: set[str] = set()
    for resource in router.resources():
        _, allowed = await resource.resolve(request)
        methods |= allowed
    methods.discard(hdrs.METH_ANY)
    return methods


CORS: web.AppKey[CorsPolicy] = web.AppKey("cors", CorsPolicy)


def install_cors(app: web.Application, origins: Iterable[str]) -> CorsPolicy | None:
    """The policy for these origins, kept on the app; no origins: None, and nothing here
    runs. The request stack (http/stack.py) answers preflights and adds the headers."""
    origins = tuple(origins)
    if not origins:
        return None
    preflights = Counter(
        "streamproxy_cors_preflights",
        "CORS preflights: answered, refused (origin not listed) or no_route; the last two "
        "are left to the router.",
        ["result"],
        registry=app[METRICS].registry if METRICS in app else None,
    )
    policy = app[CORS] = CorsPolicy(origins, preflights)
    return policy
