"""The test page at `{base}/`: plain HTML, JavaScript and CSS shipped in the package.

An operator opens it to see the service work: upload, import from a URL, play
what was stored. The files are read once when the app is built and served from
memory under a strict Content-Security-Policy; the script and style live in
their own files so the policy needs no `'unsafe-inline'`. Every URL in the page
is relative to the page, so it follows `--base-path` and sub-application mounts.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from aiohttp import web

# Same-origin only: the page talks to its own service, previews its downloads,
# and no stored file can be framed into it or run script in it.
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "media-src 'self'; connect-src 'self'; form-action 'none'; base-uri 'none'; "
    "frame-ancestors 'none'"
)

_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
}

# Served at `{base}/ui/NAME`; nothing else from the package directory is reachable.
# The page links its own icon, so browsers do not ask for `/favicon.ico` (a 404).
ASSETS = ("app.js", "app.css", "icon.svg")


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str

    @classmethod
    def load(cls, name: str) -> Asset:
        body = resources.files(__package__).joinpath(name).read_bytes()
        suffix = name[name.rindex(".") :]
        return cls(body, _TYPES[suffix], '"' + hashlib.sha256(body).hexdigest()[:32] + '"')

    def response(self, request: web.Request) -> web.Response:
        headers = {
            "ETag": self.etag,
            "Cache-Control": "no-cache",
            "Content-Security-Policy": PAGE_POLICY,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        }
        if self.etag in request.headers.get("If-None-Match", ""):
            return web.Response(status=304, headers=headers)
        return web.Response(
            body=self.body, content_type=self.content_type, charset="utf-8", headers=headers
        )


def add_page_routes(router: web.UrlDispatcher, base_path: str) -> None:
    """`{base}/` (and `{base}` redirecting to it) and the page's own assets."""
    index = Asset.load("index.html")
    assets = {name: Asset.load(name) for name in ASSETS}

    async def page(request: web.Request) -> web.Response:
        return index.response(request)

    async def asset(request: web.Request) -> web.Response:
        found = assets.get(request.match_info["asset"])
        if found is None:
            raise web.HTTPNotFound()
        return found.response(request)

    async def to_page(request: web.Request) -> web.Response:
        raise web.HTTPPermanentRedirect(request.app.router["page"].url_for())

    router.add_get(base_path + "/", page, name="page")
    if base_path:
        # The page's relative URLs need the trailing slash.
        router.add_get(base_path, to_page, name="page-redirect")
    router.add_get(base_path + "/ui/{asset}", asset, name="page-asset")
