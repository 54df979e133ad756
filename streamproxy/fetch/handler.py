"""`POST /files/from-url`: fetch a source and store it through the upload's own pump.

Everything that needs no connection is refused first (key, body, URL, policy);
then the source's head decides the name, the type and whether the declared size
fits; then the body flows through the pump exactly as a multipart file part does,
with an optional SHA-256 checked before anything is committed.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from contextlib import AsyncExitStack

from aiohttp import ClientResponse, web
from yarl import URL

from ..error_table import SOURCE_FAILED, SOURCE_TIMEOUT
from ..intake.entry import open_pump, preflight, transfer, upload_response
from ..intake.mediatypes import normalize_media_type
from ..intake.naming import BadName, clean_client_name
from ..runtime.settings import SETTINGS
from .body import MAX_BODY, read_import_request
from .client import FETCH_CLIENT, SourceBody, check_response


async def from_url(request: web.Request) -> web.Response:
    settings = request.config_dict[SETTINGS]
    client = request.config_dict[FETCH_CLIENT]
    # The body is a small JSON document, bounded by read_import_request; the file's
    # size is checked against the source's own headers and bytes.
    preflight(request, declared_overhead=MAX_BODY)
    job = await read_import_request(request, settings.client_timeout)
    with transfer(request, "import"):
        async with AsyncExitStack() as cleanup:
            sha256 = hashlib.sha256()
            try:
                async with asyncio.timeout(settings.fetch_timeout):
                    response = await client.open(job.source_url, job.credentials)
                    cleanup.push_async_callback(_close, response)
                    check_response(response, settings.max_size)
                    pump = await cleanup.enter_async_context(
                        open_pump(
                            request,
                            "import",
                            declared_type=job.mime_type
                            or normalize_media_type(response.headers.get("Content-Type")),
                            filename=job.file_name or name_from_source(response, job.source_url),
                            extra_digests=[sha256],
                            conversation_id=job.conversation_id,
                            channel=job.channel,
                        )
                    )
                    await pump.pump(SourceBody(response, settings.chunk_size, settings))
            except TimeoutError:
                raise SOURCE_TIMEOUT(
                    f"the import took longer than {settings.fetch_timeout:g} seconds"
                ) from None
            if job.sha256 is not None and not hmac.compare_digest(sha256.digest(), job.sha256):
                raise SOURCE_FAILED("the content's SHA-256 does not match the sha256 given")
            meta = await pump.commit(job.conversation_id, channel=job.channel)
    return upload_response(request, meta)


async def _close(response: ClientResponse) -> None:
    """Give the connection back when the body was read to its end, else drop it."""
    if response.content.at_eof():
        response.release()
    else:
        response.close()


def name_from_source(response: ClientResponse, source_url: URL) -> str:
    """Content-Disposition's filename (filename* first), else the URL's last segment.

    The URL is the one that served the bytes, after redirects, else the one given.

    A source's name is a hint: a path in it is cut to its last segment, and a name
    that still fails the upload rules is skipped rather than refused. `""` lets
    naming fall back to `file.<ext>`.
    """
    disposition = response.content_disposition
    for hint in (
        disposition.filename if disposition else None,
        response.url.name,  # what served the bytes, as a browser names a download
        source_url.name,
    ):
        if not hint:
            continue
        last = hint.replace("\\", "/").rsplit("/", 1)[-1]
        try:
            name = clean_client_name(last)
        except BadName:
            continue
        if name:
            return name
    return ""
