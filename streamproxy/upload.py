"""The multipart upload: `POST /files` and Hybrid Chat's `POST /api/uploadFileStream`.

The form is read part by part; the `file` part is pumped straight into storage
while it arrives, and `conversationId` may come before it, after it, or in the
query string. What can be refused without reading the body (key, declared size,
a full house) is refused first, also in answer to `Expect: 100-continue`.
"""

from __future__ import annotations

import json
from contextlib import AsyncExitStack

from aiohttp import HttpVersion11, web

from . import naming, signing
from .auth import check_api_key
from .errors import ApiError, bad_request, response_for, send_and_close, too_large
from .mediatypes import TypePolicy, normalize_media_type
from .metrics import METRICS
from .multipart import FormLimits, FormReader, boundary_from
from .pump import Intake
from .requestlog import assign_request_id
from .scan import SCANNER
from .settings import SETTINGS, Settings
from .storage.base import STORAGE, StoredMeta
from .transfers import TRANSFERS

SUCCESS_MESSAGE = "File uploaded successfully."
FORM_LIMITS = FormLimits()

# Which download route an upload route's `url` points at: Hybrid Chat's paths
# answer with Hybrid Chat's download path.
DOWNLOAD_ROUTE_FOR = {"upload": "download", "upload-hc": "download-hc", "url-upload": "download"}


def preflight(request: web.Request, declared_overhead: int = 0) -> None:
    """Checks that need no body: API key, declared size, free transfer slot."""
    settings = request.config_dict[SETTINGS]
    check_api_key(request)
    declared = request.content_length
    if declared is not None and declared > settings.max_size + declared_overhead:
        raise too_large(settings.max_size)
    request.config_dict[TRANSFERS].check()


async def expect_handler(request: web.Request) -> web.StreamResponse | None:
    """Answer `Expect: 100-continue` with the final error before the client sends the body."""
    assign_request_id(request)  # this runs before the middlewares do
    if request.headers.get("Expect", "").lower() != "100-continue":
        raise web.HTTPExpectationFailed(text="only Expect: 100-continue is understood")
    try:
        preflight(request, FORM_LIMITS.overhead)
    except ApiError as error:
        response = response_for(request, error)
        await send_and_close(request, response)  # the body never comes; do not wait for it
        return response
    if request.version >= HttpVersion11:
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the interim response is not the body
    return None


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
        headers={"ETag": f'"{meta.info.etag}"'},
    )


def conversation_id_or_400(value: str) -> str:
    try:
        return naming.check_conversation_id(value)
    except naming.BadName as error:
        raise bad_request(str(error)) from None


def client_name_or_400(filename: str | None) -> str:
    try:
        return naming.clean_client_name(filename or "")
    except naming.BadName as error:
        raise bad_request(str(error)) from None


async def upload(request: web.Request) -> web.Response:
    settings = request.config_dict[SETTINGS]
    preflight(request, FORM_LIMITS.overhead)
    boundary = boundary_from(request.headers.get("Content-Type"))
    conversation_id: str | None = None
    if "conversationId" in request.query:
        conversation_id = conversation_id_or_400(request.query["conversationId"])
    with request.config_dict[TRANSFERS].slot("upload"):
        form = FormReader(
            request.content,
            boundary,
            chunk_size=settings.chunk_size,
            limits=FORM_LIMITS,
            idle_timeout=settings.client_timeout,
        )
        async with AsyncExitStack() as cleanup:
            intake: Intake | None = None
            while (part := await form.next_part()) is not None:
                if part.name == "file":
                    if intake is not None:
                        raise bad_request("the form has more than one part named 'file'")
                    intake = Intake(
                        request.config_dict[STORAGE],
                        max_size=settings.max_size,
                        policy=TypePolicy(settings.allow_type, settings.deny_type),
                        declared_type=normalize_media_type(part.content_type),
                        filename=client_name_or_400(part.filename),
                        on_bytes=request.config_dict[METRICS].received.labels("upload").inc,
                        scanner=request.config_dict[SCANNER],
                        chunk_size=settings.chunk_size,
                    )
                    await cleanup.enter_async_context(intake)
                    await intake.pump(part.chunks())
                    if not intake.size and not intake.filename:
                        # What a browser sends for a file input left empty.
                        raise bad_request(
                            "no file was sent: the file part has no name and no bytes"
                        )
                elif part.name == "conversationId":
                    conversation_id = conversation_id_or_400(await part.text())
                else:
                    await part.discard()
            if intake is None:
                raise bad_request("the form has no part named 'file'")
            if conversation_id is None:
                raise bad_request("conversationId is required, as a form field or in the query")
            meta = await intake.commit(conversation_id)
    return upload_response(request, meta)
