"""The resumable upload routes in the OpenAPI document: tus 1.0.0 and the IETF draft.

Both protocols share `/files/uploads` and `/files/uploads/{upload_id}`; which one a
request speaks is a header (`Tus-Resumable` or `Upload-Draft-Interop-Version`), so
each operation lists both protocols' headers and answers. What cannot be said in
OpenAPI (the draft's `104` interim response, which answers differ by protocol) is in
the descriptions. The values OPTIONS advertises come from the code that sends them
(resumable/routes.py, headers.py), and the error codes from error_table.py: only the
rows these routes raise (resumable/problems.py's refusals, the key, the storage).
"""

from __future__ import annotations

from ..error_table import (
    BAD_REQUEST,
    BUSY,
    CHECKSUM_MISMATCH,
    EXPIRED,
    FORBIDDEN,
    INFECTED,
    INSUFFICIENT_STORAGE,
    NOT_FOUND,
    NOT_IMPLEMENTED,
    OFFSET_MISMATCH,
    SCANNER_UNAVAILABLE,
    STORAGE_UNAVAILABLE,
    TIMEOUT,
    TOO_LARGE,
    TYPE_NOT_ALLOWED,
    UNAUTHORIZED,
    UNSUPPORTED_VERSION,
    ErrorKind,
)
from ..resumable.headers import (
    CHECKSUM_ALGORITHMS,
    DRAFT_PATCH_TYPE,
    TUS_PATCH_TYPE,
    TUS_VERSION,
    format_upload_limit,
)
from ..resumable.problems import COMPLETED_UPLOAD, INCONSISTENT_LENGTH, MISMATCHING_OFFSET
from ..resumable.routes import tus_extensions
from ..runtime.settings import Settings
from .openapiparts import error_response, errors_of, header, ref
from .openapischemas import CONVERSATION_ID, JSON, Schema
from .uploadlinks import TOKEN_PARAM

PROBLEM = "application/problem+json"
EXAMPLE_METADATA = "conversationId MTExMTE=,filename cGhvdG8ucG5n"  # 11111, photo.png
UPLOAD_ID: Schema = {
    "name": "upload_id",
    "in": "path",
    "required": True,
    "description": "the id in the creation's Location (128 random bits)",
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{22}$"},
}
BINARY: Schema = {"type": "string", "format": "binary"}
DIGITS: Schema = {"type": "string", "pattern": "^[0-9]+$"}
SF_BOOLEAN: Schema = {"type": "string", "enum": ["?0", "?1"]}
LENGTH: Schema = {"type": "integer", "minimum": 0, "maximum": 10**15 - 1}

# The protocol of each request: one of the two, else 412 (OPTIONS needs neither).
PROTOCOL_HEADERS = [
    header("Tus-Resumable", f"tus: {TUS_VERSION}. Send this or Upload-Draft-Interop-Version; "
           "neither (or another version) is 412 with Tus-Version",
           {"type": "string", "enum": [TUS_VERSION]}),
    header("Upload-Draft-Interop-Version", "the draft: 6 (draft -05, what tus-js-client's "
           "ietf-draft-05 and iOS 18 send) or 8 (drafts -09 to -11); wins over Tus-Resumable",
           {"type": "string", "enum": ["6", "8"]}),
]  # fmt: skip


def _out(description: str, schema: Schema | None = None, required: bool = False) -> Schema:
    """A response header."""
    return {"description": description, "schema": schema or {"type": "string"},
            **({"required": True} if required else {})}  # fmt: skip


PROTOCOL_OUT = {
    "Tus-Resumable": _out("on tus answers (and on a 412)", {"const": TUS_VERSION}),
    "Upload-Draft-Interop-Version": _out("on draft answers: the request's version",
                                         {"type": "string", "enum": ["6", "8"]}),
}  # fmt: skip
OFFSET_OUT = {"Upload-Offset": _out("the bytes received and kept", DIGITS, required=True)}
# tus concatenation-unfinished: a final upload waiting for its parts has no offset yet.
FINAL_OFFSET_OUT = {
    "Upload-Offset": _out(
        "the bytes received and kept; none on a tus final upload waiting for its parts", DIGITS
    )
}
EXPIRES_OUT = {"Upload-Expires": _out("tus, while unfinished: when it expires (HTTP date)")}
ETAG_OUT = {"ETag": _out("once complete: the quoted MD5 of the whole file")}
COMPLETE_OUT = {"Upload-Complete": _out("draft: ?1 once every byte arrived", SF_BOOLEAN)}
LIMIT_OUT = {"Upload-Limit": _out("draft: max-size=<bytes> (the cap, or an upload link's)")}


def _problem_content(codes: list[str]) -> Schema:
    """The draft's RFC 9457 problem document: the JSON error with `type` and `title`."""
    return {PROBLEM: {"schema": {"allOf": [
        ref("Error"), {"properties": {"error": {"enum": codes}}}, ref("UploadProblem"),
    ]}}}  # fmt: skip


# A HEAD or GET of a final concatenation may assemble and commit it (resumable/assembly.py):
# what that refuses, besides what the stored refusal of a failed upload replays.
ASSEMBLY = (BAD_REQUEST, TOO_LARGE, TYPE_NOT_ALLOWED, INFECTED, BUSY, SCANNER_UNAVAILABLE,
            INSUFFICIENT_STORAGE)  # fmt: skip


APPEND_ERRORS = (BAD_REQUEST, FORBIDDEN, NOT_FOUND, TIMEOUT, OFFSET_MISMATCH, EXPIRED,
                 TOO_LARGE, TYPE_NOT_ALLOWED, INFECTED, CHECKSUM_MISMATCH, BUSY,
                 SCANNER_UNAVAILABLE, INSUFFICIENT_STORAGE)  # fmt: skip
"""What a request carrying bytes may answer: a creation with them, or an append."""


def _errors(settings: Settings, *kinds: ErrorKind) -> dict[str, Schema]:
    """These refusals (and the ones every resumable request may get) as responses; 400
    and 409 may be draft problem documents; every refusal carries the protocol's headers."""
    common = (UNSUPPORTED_VERSION, NOT_IMPLEMENTED, STORAGE_UNAVAILABLE)
    keyed = (UNAUTHORIZED, FORBIDDEN) if settings.api_key else ()
    responses: dict[str, Schema] = {}
    for status, codes in errors_of((*kinds, *common, *keyed)).items():
        problem = _problem_content(codes) if status in (400, 409) else None
        response = error_response(status, codes, extra_content=problem)
        response["headers"] = {
            **response.get("headers", {}),
            **PROTOCOL_OUT,
            "Upload-Complete": _out("draft: ?0", SF_BOOLEAN),
            **({"Upload-Offset": _out("the upload's offset", DIGITS)} if status == 409 else {}),
        }
        responses[str(status)] = response
    return responses


def _options(settings: Settings, *parameters: Schema) -> Schema:
    return {
        "parameters": list(parameters),
        "summary": "tus discovery: versions, extensions, limits",
        "description": "Needs no API key and no protocol header (CORS preflights carry "
        "neither). Tus-Extension lists exactly what is implemented.",
        "responses": {
            "204": {
                "description": "what this server speaks",
                "headers": {
                    "Tus-Resumable": _out("", {"const": TUS_VERSION}, required=True),
                    "Tus-Version": _out("", {"const": TUS_VERSION}, required=True),
                    "Tus-Extension": _out("", {"const": tus_extensions()}, required=True),
                    "Tus-Max-Size": _out("the cap, in bytes",
                                         {"const": str(settings.max_size)}, required=True),
                    "Tus-Checksum-Algorithm": _out(
                        "", {"const": ",".join(CHECKSUM_ALGORITHMS)}, required=True),
                    "Upload-Limit": _out("the draft's limit", {
                        "const": format_upload_limit(settings.max_size)}, required=True),
                },
            },
            **{str(s): error_response(s, c) for s, c in errors_of(()).items()},
        },
    }  # fmt: skip


def _upload_links() -> Schema:
    """OpenAPI links from a creation to the upload resource (schemathesis follows them)."""
    upload_id = "$response.header.Location#regex:/files/uploads/([A-Za-z0-9_-]+)$"
    links: Schema = {
        name: {"operationId": operation, "parameters": {"upload_id": upload_id}}
        for name, operation in (("Offset", "resumableOffset"), ("Cancel", "resumableCancel"),
                                ("Result", "resumableResult"))
    }  # fmt: skip
    links["Append"] = {
        "operationId": "resumableAppend",
        "parameters": {"upload_id": upload_id,
                       "header.Upload-Offset": "$response.header.Upload-Offset"},
    }  # fmt: skip
    return links


def _metadata_query(settings: Settings) -> list[Schema]:
    """The draft's metadata as the creation's query (wins over Upload-Metadata)."""

    def query(name: str, description: str, schema: Schema | None = None) -> Schema:
        return {"name": name, "in": "query", "description": description,
                "schema": schema or {"type": "string"}}  # fmt: skip

    token = (
        [
            query(
                TOKEN_PARAM,
                "an upload link's token: no API key needed, its terms apply to the whole upload",
            )
        ]
        if settings.signing_key
        else []
    )
    return [
        query("conversationId", "draft metadata: required (here or in Upload-Metadata)",
              CONVERSATION_ID),
        query("filename", "draft metadata: the file's name (also `name`)",
              {"type": "string", "maxLength": 100, "examples": ["photo.png"]}),
        query("filetype", "draft metadata: the file's type (also `type`)"),
        query("channel", "draft metadata"),
        *token,
    ]  # fmt: skip


def _create(settings: Settings) -> Schema:
    return {
        "operationId": "resumableCreate",
        "summary": "Create a resumable upload (tus creation, or the draft's upload creation)",
        "description": "tus: Upload-Length (or Upload-Defer-Length: 1) and Upload-Metadata "
        "(base64 values: conversationId required, filename, filetype, channel); a body "
        f"({TUS_PATCH_TYPE}) is creation-with-upload; Upload-Concat: partial makes a part, "
        "`final;URL ...` joins parts, finished or still uploading (concatenation, "
        "concatenation-unfinished: the final upload is assembled once its last part "
        "finishes, by that PATCH or by a HEAD or GET of the final upload). The draft: "
        "Upload-Complete says whether the body is the whole file; metadata in the query "
        "or Upload-Metadata. "
        "As soon as the upload exists, before its body is read, a draft creation gets the "
        "interim response `104 Upload Resumption Supported` with its Location, "
        "Upload-Draft-Interop-Version and Upload-Limit (HTTP/1.1), so a client cut off "
        "mid-body can resume. Completion commits the file like POST /files (type rules, "
        "scan, naming, MD5 ETag).",
        "parameters": [
            *PROTOCOL_HEADERS,
            header("Upload-Length", "the whole file's bytes (tus; the draft at interop 8)",
                   LENGTH),
            header("Upload-Defer-Length", "tus: 1 when the length comes later",
                   {"type": "string", "enum": ["1"]}),
            header("Upload-Metadata", "tus: `key base64,key base64`",
                   {"type": "string", "examples": [EXAMPLE_METADATA]}),
            header("Upload-Concat", "tus concatenation: `partial`, or `final;URL URL ...`"),
            header("Upload-Checksum", "tus, with a body: `md5|sha1|sha256 <base64 digest>`"),
            header("Upload-Complete", "the draft: ?1 when the body is the whole file",
                   SF_BOOLEAN),
            *_metadata_query(settings),
        ],
        "requestBody": {
            "required": False,
            "description": "the first bytes (or all of them)",
            "content": {kind: {"schema": BINARY} for kind in (
                TUS_PATCH_TYPE, DRAFT_PATCH_TYPE, "application/octet-stream")},
        },
        "responses": {
            "201": {
                "description": "created (tus: complete when Upload-Offset is the length)",
                "headers": {"Location": _out("the upload's absolute URL", required=True),
                            **FINAL_OFFSET_OUT, **EXPIRES_OUT, **ETAG_OUT, **COMPLETE_OUT,
                            **LIMIT_OUT, **PROTOCOL_OUT},
                "links": _upload_links(),
            },
            "200": {
                "description": "the draft, completed by this request: what POST /files answers",
                "headers": {"Location": _out("the upload's absolute URL", required=True),
                            **OFFSET_OUT, **ETAG_OUT, **COMPLETE_OUT, **PROTOCOL_OUT},
                "content": {JSON: {"schema": ref("UploadResult")}},
                "links": _upload_links(),
            },
            **_errors(settings, *APPEND_ERRORS),
        },
    }  # fmt: skip


def _head(settings: Settings) -> Schema:
    return {
        "operationId": "resumableOffset",
        "summary": "The upload's offset (tus HEAD, the draft's offset retrieval)",
        "description": "A final concatenation whose parts are all finished is assembled "
        "first (a part gone: 410); a tus HEAD of one still waiting has no Upload-Length "
        "unless its parts' lengths are known.",
        "parameters": [UPLOAD_ID, *PROTOCOL_HEADERS],
        "responses": {
            "200": {"description": "tus", "headers": {
                **FINAL_OFFSET_OUT, **EXPIRES_OUT,
                "Upload-Length": _out("when known", DIGITS),
                "Upload-Defer-Length": _out("1 while the length is unknown", {"const": "1"}),
                "Upload-Metadata": _out("as created"),
                "Upload-Concat": _out("`partial`, or `final;URL ...`"),
                "Cache-Control": _out("", {"const": "no-store"}),
                **PROTOCOL_OUT}},
            "204": {"description": "the draft", "headers": {
                **OFFSET_OUT, **COMPLETE_OUT, **LIMIT_OUT,
                "Upload-Length": _out("interop 8, when known", DIGITS),
                "Cache-Control": _out("", {"const": "no-store"}),
                **PROTOCOL_OUT}},
            **_errors(settings, NOT_FOUND, EXPIRED, *ASSEMBLY),
        },
    }  # fmt: skip


def _patch(settings: Settings) -> Schema:
    return {
        "operationId": "resumableAppend",
        "summary": "Append bytes at Upload-Offset (tus PATCH, the draft's append)",
        "description": f"tus: Content-Type {TUS_PATCH_TYPE}; the upload completes when its "
        f"offset reaches its length. The draft: {DRAFT_PATCH_TYPE} (required at interop 8), "
        "Upload-Complete: ?1 on the last append. At the wrong offset: 409 with the upload's "
        "Upload-Offset, nothing changed. A chunk whose Upload-Checksum does not match is "
        "460 and discarded (the offset unchanged). A final concatenation takes none: 403.",
        "parameters": [
            UPLOAD_ID,
            *PROTOCOL_HEADERS,
            header("Upload-Offset", "where these bytes go: the upload's offset", LENGTH),
            header("Upload-Length", "tus with a deferred length, or the draft at interop 8",
                   LENGTH),
            header("Upload-Checksum", "tus: `md5|sha1|sha256 <base64 digest>` of this chunk"),
            header("Upload-Complete", "the draft: ?1 when this is the last append", SF_BOOLEAN),
        ],
        "requestBody": {
            "required": False,
            "content": {kind: {"schema": BINARY} for kind in (
                TUS_PATCH_TYPE, DRAFT_PATCH_TYPE, "application/octet-stream")},
        },
        "responses": {
            "204": {"description": "kept (tus: complete when Upload-Offset is the length)",
                    "headers": {**OFFSET_OUT, **EXPIRES_OUT, **ETAG_OUT, **COMPLETE_OUT,
                                **LIMIT_OUT, **PROTOCOL_OUT}},
            "200": {"description": "the draft, completed by this request: what POST /files "
                    "answers", "headers": {**OFFSET_OUT, **ETAG_OUT, **COMPLETE_OUT,
                                           **PROTOCOL_OUT},
                    "content": {JSON: {"schema": ref("UploadResult")}}},
            **_errors(settings, *APPEND_ERRORS),
        },
    }  # fmt: skip


def _delete(settings: Settings) -> Schema:
    return {
        "operationId": "resumableCancel",
        "summary": "Cancel an upload (tus termination, the draft's cancellation)",
        "description": "Its bytes and record go at once (a file it already stored stays); "
        "later requests get 404.",
        "parameters": [UPLOAD_ID, *PROTOCOL_HEADERS],
        "responses": {
            "204": {"description": "removed", "headers": PROTOCOL_OUT},
            **_errors(settings, NOT_FOUND, OFFSET_MISMATCH),
        },
    }


def _get(settings: Settings) -> Schema:
    return {
        "operationId": "resumableResult",
        "summary": "A completed upload's result",
        "description": "After completion, what POST /files answers, until the upload "
        "expires. A completion refused by the type rules, the scanner or the length answers "
        "that refusal again; an unfinished upload is 404 (HEAD it for its offset). A final "
        "upload whose parts are all finished is assembled first (a part gone: 410).",
        "parameters": [UPLOAD_ID, *PROTOCOL_HEADERS],
        "responses": {
            "200": {"description": "stored", "headers": {**ETAG_OUT, **PROTOCOL_OUT},
                    "content": {JSON: {"schema": ref("UploadResult")}}},
            **_errors(settings, NOT_FOUND, EXPIRED, *ASSEMBLY),
        },
    }  # fmt: skip


def resumable_paths(settings: Settings) -> dict[str, Schema]:
    """`/files/uploads` and `/files/uploads/{upload_id}`, without the base path."""
    paths = {
        "/files/uploads": {"options": _options(settings), "post": _create(settings)},
        "/files/uploads/{upload_id}": {
            "options": _options(settings, UPLOAD_ID),
            "head": _head(settings),
            "patch": _patch(settings),
            "delete": _delete(settings),
            "get": _get(settings),
        },
    }
    if settings.api_key:  # every request but OPTIONS (API.md), or an upload link's
        for item in paths.values():
            for method, operation in item.items():
                if method != "options":
                    operation["security"] = [{"apiKey": []}]
    return paths


RESUMABLE_SCHEMAS: dict[str, Schema] = {
    "UploadProblem": {
        "type": "object",
        "description": "RFC 9457 members the draft adds to the JSON error",
        "properties": {
            "type": {"type": "string",
                     "enum": [MISMATCHING_OFFSET, INCONSISTENT_LENGTH, COMPLETED_UPLOAD]},
            "title": {"type": "string"},
            "expected-offset": {"type": "integer", "minimum": 0},
            "provided-offset": {"type": "integer", "minimum": 0},
        },
    },
}  # fmt: skip
