"""The outbound side of a URL import: one shared session, redirects, and the source's failures.

Redirects are followed here rather than by aiohttp so that each hop goes through
`FetchPolicy.check_url` again and so that credentials go only to the first origin
(aiohttp would strip `Authorization` but forward `D360-API-KEY`). Failures of the
source become the contract's 502 `source_failed` and 504 `source_timeout`; their
details name the origin only, because paths and queries often carry tokens
(Telegram puts the bot token in the path, signed URLs in the query).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from typing import Final

import aiohttp
from aiohttp import ClientRequest, ClientResponse, ClientTimeout, hdrs, web
from yarl import URL

from .. import __version__
from ..error_table import SOURCE_FAILED, SOURCE_NOT_ALLOWED, SOURCE_TIMEOUT, over_the_cap
from ..runtime.settings import Settings
from .resolver import CheckingResolver
from .safety import FetchPolicy, Refused

MAX_REDIRECTS: Final = 5
REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})
# Per-connection read buffer: aiohttp pauses the socket when twice this is waiting,
# and decompresses at most about this much per step, so it bounds memory per fetch.
READ_BUFFER: Final = 256 * 1024
# The encodings aiohttp advertises are the ones it decodes; anything else is refused.
DECODED_ENCODINGS: Final = frozenset(
    token.strip() for token in ClientRequest.DEFAULT_HEADERS[hdrs.ACCEPT_ENCODING].split(",")
)


def origin_of(url: URL) -> str:
    """What error details may say about a source: never its path or query."""
    try:
        return str(url.origin())
    except ValueError:  # no scheme or no host: refused before any use
        return "the source"


class FetchClient:
    """The application's one `ClientSession`, built around the checking resolver.

    Made with the application; the session itself opens on start-up (it needs the
    running loop) and closes on clean-up.
    """

    def __init__(self, settings: Settings) -> None:
        self.policy = FetchPolicy.from_rules(settings.fetch_allow)
        self._proxy = settings.fetch_proxy
        self._settings = settings
        proxy_host = self._proxy.raw_host if self._proxy is not None else None
        self._resolver = CheckingResolver(self.policy, trusted_host=proxy_host)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        settings = self._settings
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(resolver=self._resolver, limit=0),
            timeout=ClientTimeout(
                total=None,  # the handler bounds the whole import, redirects and body
                connect=settings.fetch_connect_timeout,
                sock_connect=settings.fetch_connect_timeout,
                sock_read=settings.fetch_read_timeout,
            ),
            headers={hdrs.USER_AGENT: f"streamproxy/{__version__}"},
            cookie_jar=aiohttp.DummyCookieJar(),  # one session serves every client: no cookies
            trust_env=False,  # HTTP_PROXY and .netrc are never used implicitly
            read_bufsize=READ_BUFFER,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def open(self, url: URL, credentials: Mapping[str, str]) -> ClientResponse:
        """GET `url`, following up to MAX_REDIRECTS checked redirects; the last response.

        Credentials go out while the chain stays on the first origin; once it has
        left, they are not sent again, even on a way back (the redirecting party
        must not choose where our credentials go).
        """
        first_origin: URL | None = None
        on_first_origin = True
        for _ in range(MAX_REDIRECTS + 1):
            with source_errors(url, self._settings):
                self.policy.check_url(url)
            first_origin = first_origin or url.origin()
            on_first_origin = on_first_origin and url.origin() == first_origin
            response = await self._get(url, credentials if on_first_origin else {})
            location = response.headers.get(hdrs.LOCATION)
            if response.status not in REDIRECT_STATUSES or location is None:
                return response
            response.release()
            try:
                url = url.join(URL(location)).with_fragment(None)
            except (ValueError, TypeError):
                raise SOURCE_FAILED(
                    f"the source at {origin_of(url)} redirected to an invalid URL"
                ) from None
        raise SOURCE_FAILED(f"the source redirected more than {MAX_REDIRECTS} times")

    async def _get(self, url: URL, headers: Mapping[str, str]) -> ClientResponse:
        with source_errors(url, self._settings):
            if self._proxy is not None:
                # The proxy resolves the name again; vetting it here still keeps
                # internal names and addresses out, short of DNS rebinding.
                assert url.raw_host is not None and url.port is not None
                await self._resolver.resolve_checked(url.raw_host, url.port)
            assert self._session is not None, "FetchClient.start() runs on application start-up"
            return await self._session.get(
                url, headers=headers, allow_redirects=False, proxy=self._proxy
            )


@contextmanager
def source_errors(url: URL, settings: Settings) -> Iterator[None]:
    """Turn what aiohttp raises about a source into the contract's errors."""
    origin = origin_of(url)
    try:
        yield
    except Refused as error:
        raise SOURCE_NOT_ALLOWED(str(error)) from None
    except aiohttp.ConnectionTimeoutError:
        raise SOURCE_TIMEOUT(
            f"could not connect to {origin} within {settings.fetch_connect_timeout:g} seconds"
        ) from None
    except TimeoutError:
        # aiohttp's read timeout (first byte or idle), not the handler's total.
        raise SOURCE_TIMEOUT(
            f"the source at {origin} sent nothing for {settings.fetch_read_timeout:g} seconds"
        ) from None
    except aiohttp.ClientConnectorDNSError:
        raise SOURCE_FAILED(f"the name {url.host} could not be resolved") from None
    except aiohttp.ClientConnectorCertificateError:
        raise SOURCE_FAILED(f"the TLS certificate of {origin} is not valid") from None
    except aiohttp.ClientSSLError:
        raise SOURCE_FAILED(f"the TLS handshake with {origin} failed") from None
    except aiohttp.ClientProxyConnectionError:
        raise SOURCE_FAILED("could not connect to the outbound proxy") from None
    except aiohttp.ClientHttpProxyError as error:
        raise SOURCE_FAILED(f"the outbound proxy refused with status {error.status}") from None
    except aiohttp.ClientConnectorError as error:
        reason = error.os_error.strerror or "connection failed"
        raise SOURCE_FAILED(f"could not connect to {origin}: {reason}") from None
    except aiohttp.ClientPayloadError:
        raise SOURCE_FAILED(f"the body from {origin} broke off or has a corrupt encoding") from None
    except aiohttp.ClientResponseError as error:
        raise SOURCE_FAILED(
            f"the source at {origin} sent a malformed response ({error.message})"
        ) from None
    except aiohttp.ClientError:
        raise SOURCE_FAILED(f"the connection to {origin} failed before the end") from None


class SourceBody:
    """The response's decoded body as chunks for `Intake.pump`, errors translated."""

    def __init__(self, response: ClientResponse, chunk_size: int, settings: Settings) -> None:
        self._response = response
        self._chunk_size = chunk_size
        self._settings = settings

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        with source_errors(self._response.url, self._settings):
            chunk = await self._response.content.read(self._chunk_size)
        if not chunk:
            raise StopAsyncIteration
        return chunk


def check_response(response: ClientResponse, max_size: int) -> None:
    """What can be refused from the head alone: the status, the encoding, the length."""
    origin = origin_of(response.url)
    if not 200 <= response.status < 300:
        raise SOURCE_FAILED(f"the source at {origin} answered {response.status}")
    encoding = response.headers.get(hdrs.CONTENT_ENCODING, "identity").strip().lower()
    if encoding not in DECODED_ENCODINGS | {"identity", ""}:
        raise SOURCE_FAILED(f"the source at {origin} sent Content-Encoding {encoding!r}")
    declared = response.content_length
    if encoding in {"identity", ""} and declared is not None and declared > max_size:
        raise over_the_cap(max_size)


FETCH_CLIENT: web.AppKey[FetchClient] = web.AppKey("fetch_client", FetchClient)


async def fetch_client_lifecycle(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: one session for the application's life, closed on shutdown."""
    client = app[FETCH_CLIENT]
    await client.start()
    yield
    await client.close()
