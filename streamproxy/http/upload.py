"""The multipart upload: `POST /files` and Hybrid Chat's `POST /api/uploadFileStream`.

(A `POST` whose Content-Type is not `multipart/*` carries the file itself: it goes
to `rawupload`, as `PUT /files` does.)

The form is read part by part; the `file` part is pumped straight into storage
while it arrives, and `conversationId` may come before it, after it, or in the
query string. What can be refused without reading the body (key, declared size,
a full house) is refused first, also in answer to `Expect: 100-continue`.
"""

from __future__ import annotations

from aiohttp import HttpVersion11, web

from ..error_table import BAD_REQUEST, ApiError
from ..errors import response_for, send_and_close
from ..intake.entry import commit, open_pump, preflight, transfer, upload_response
from ..intake.mediatypes import normalize_media_type
from ..intake.multipart import FormLimits, FormPart, FormReader, boundary_from
from ..intake.naming import check_conversation_id, clean_client_name
from ..runtime.settings import SETTINGS
from ..storage.base import StoredMeta
from .rawupload import is_raw, raw_upload
from .requestlog import assign_request_id
from .uploadlinks import refuse_used_link

FORM_LIMITS = FormLimits()


async def expect_handler(request: web.Request) -> web.StreamResponse | None:
    """Answer `Expect: 100-continue` with the final error before the client sends the body."""
    assign_request_id(request)  # this runs before the middlewares do
    if request.headers.get("Expect", "").lower() != "100-continue":
        raise web.HTTPExpectationFailed(text="only Expect: 100-continue is understood")
    try:
        preflight(request, _overhead(request), links=True)
        await refuse_used_link(request)
    except ApiError as error:
        response = response_for(request, error)
        await send_and_close(request, response)  # the body never comes; do not wait for it
        return response
    if request.version >= HttpVersion11:
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the interim response is not the body
    return None


def _overhead(request: web.Request) -> int:
    """What the body may carry besides the file: a form's envelope, or nothing."""
    raw = request.method == "PUT" or is_raw(request.headers.get("Content-Type"))
    return 0 if raw else FORM_LIMITS.overhead


async def upload(request: web.Request) -> web.Response:
    if is_raw(request.headers.get("Content-Type")):
        return await raw_upload(request)
    settings = request.config_dict[SETTINGS]
    preflight(request, FORM_LIMITS.overhead, links=True)
    await refuse_used_link(request)
    boundary = boundary_from(request.headers.get("Content-Type"))
    conversation_id: str | None = None
    if "conversationId" in request.query:
        conversation_id = check_conversation_id(request.query["conversationId"])
    with transfer(request, "upload"):
        form = FormReader(
            request.content,
            boundary,
            limits=FORM_LIMITS,
            idle_timeout=settings.client_timeout,
        )
        while (part := await form.next_part()) is not None:
            if part.name == "file":
                meta = await _store(request, form, part, conversation_id)
                break
            conversation_id = await _field(part, conversation_id)
        else:
            raise BAD_REQUEST("the form has no part named 'file'")
    return upload_response(request, meta)


async def _store(
    request: web.Request, form: FormReader, file: FormPart, conversation_id: str | None
) -> StoredMeta:
    """Pump the file part into storage, read the parts after it, and commit; the pump is
    open from the file part to the commit, so every way out of here aborts it."""
    async with open_pump(
        request,
        "upload",
        declared_type=normalize_media_type(file.content_type),
        filename=clean_client_name(file.filename or ""),
        conversation_id=conversation_id,  # for a refusal's event
    ) as pump:
        await pump.pump(file.chunks())
        if not pump.size and not pump.filename:
            # What a browser sends for a file input left empty.
            raise BAD_REQUEST("no file was sent: the file part has no name and no bytes")
        while (part := await form.next_part()) is not None:
            if part.name == "file":
                raise BAD_REQUEST("the form has more than one part named 'file'")
            conversation_id = await _field(part, conversation_id)
        if conversation_id is None:
            raise BAD_REQUEST("conversationId is required, as a form field or in the query")
        return await commit(request, pump, conversation_id)


async def _field(part: FormPart, conversation_id: str | None) -> str | None:
    """A part other than the file: `conversationId` read (it wins over the query's),
    anything else read past; the conversation id so far."""
    if part.name == "conversationId":
        return check_conversation_id(await part.text())
    await part.discard()
    return conversation_id
