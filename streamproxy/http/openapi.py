"""The OpenAPI 3.1 document of API.md, served at `{base}/openapi.json`.

Written out by hand from the contract rather than generated from the handlers
(which stream bodies and so declare nothing), except the errors: their codes,
and which code goes with which status, come from error_table.py. The document
follows the settings it is served with (API keys, signed links,
`--compat-status`); the schemathesis tests run it against live servers with
each of those, which keeps the two in step.
"""

from __future__ import annotations

from aiohttp import web

from .. import __version__
from ..intake.naming import MAX_STORED_NAME_BYTES
from ..page import ASSETS
from ..runtime.settings import SETTINGS, Settings
from .listing import MAX_LIMIT
from .openapiparts import errors, header, key_required, ref
from .openapiresumable import RESUMABLE_SCHEMAS, resumable_paths
from .openapischemas import CONVERSATION_ID, JSON, SCHEMAS, Schema
from .uploadlinks import TOKEN_PARAM

ETAG_HEADER = {"ETag": {"description": "the quoted MD5", "schema": {"type": "string"}}}
FILENAME: Schema = {
    "name": "filename",
    "in": "query",
    "required": True,
    "description": "a stored name, as an upload returned it",
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_STORED_NAME_BYTES // 4,  # characters: up to 4 bytes each in UTF-8
        "pattern": r"^[^./\\\x00-\x1f\x7f][^/\\\x00-\x1f\x7f]*$",
        "examples": ["11111_photo.png"],
    },
}
UPLOAD_ERRORS = (400, 408, 413, 415, 422, 501, 503, 507)
COMPAT_NOTE = (
    " With --compat-status (on here) every 4xx of this route is answered as 404, "
    "as Hybrid Chat documents; the body's error code still says which."
)


def _upload_responses(settings: Settings, *statuses: int) -> Schema:
    return {
        "200": {
            "description": "stored",
            "headers": ETAG_HEADER,
            "content": {JSON: {"schema": ref("UploadResult")}},
        },
        **errors(*statuses, *key_required(settings), compat_status=settings.compat_status),
    }


def _upload_operation(settings: Settings, summary: str) -> Schema:
    return {
        "summary": summary,
        "description": "Streams the file part to storage."
        + (COMPAT_NOTE if settings.compat_status else ""),
        "parameters": [
            {
                "name": "conversationId",
                "in": "query",
                "description": "may be sent here instead of as a form field",
                "schema": CONVERSATION_ID,
            },
            *_link_parameters(settings),
        ],
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {
                            "file": {"type": "string", "format": "binary"},
                            "conversationId": CONVERSATION_ID,
                        },
                    },
                    "encoding": {"file": {"contentType": "application/octet-stream"}},
                }
            },
        },
        "responses": _upload_responses(settings, *UPLOAD_ERRORS, *_link_statuses(settings)),
    }


def _link_parameters(settings: Settings) -> list[Schema]:
    """The upload link's token, on the routes that take links (only with --signing-key)."""
    if not settings.signing_key:
        return []
    return [{"name": TOKEN_PARAM, "in": "query",
             "description": "an upload link's token: no API key needed; 403 when it is "
             "altered, expired, used, or names another conversationId or fileName",
             "schema": {"type": "string"}}]  # fmt: skip


def _link_statuses(settings: Settings) -> tuple[int, ...]:
    return (403,) if settings.signing_key else ()


def _raw_upload_operation(settings: Settings) -> Schema:
    return {
        "summary": "Upload the request body itself as the file",
        "description": "The body is the file (no multipart), as S3 and nginx take it; the "
        "same answers and rules as POST /files. The type is the Content-Type unless that "
        "is application/octet-stream (then sniffed). POST /files with a Content-Type that "
        "is not multipart does the same." + (COMPAT_NOTE if settings.compat_status else ""),
        "parameters": [
            {"name": "conversationId", "in": "query", "required": True,
             "schema": CONVERSATION_ID},
            {"name": "fileName", "in": "query", "description": "the file's name (a hint)",
             "schema": {"type": "string", "maxLength": 100}},
            *_link_parameters(settings),
        ],
        "requestBody": {
            "required": True,
            "content": {"application/octet-stream": {"schema": {"type": "string",
                                                                "format": "binary"}}},
        },
        "responses": _upload_responses(settings, *UPLOAD_ERRORS, *_link_statuses(settings)),
    }  # fmt: skip


def _upload_links_operation(settings: Settings) -> Schema:
    refused = (403,) if not settings.signing_key else ()
    return {
        "summary": "Issue a one-time upload link",
        "description": "A signed link for one upload without an API key, within its terms."
        + ("" if settings.signing_key else " This service has no --signing-key: 403."),
        "requestBody": {"required": True,
                        "content": {JSON: {"schema": ref("UploadLinkRequest")}}},
        "responses": {
            "200": {"description": "the link",
                    "content": {JSON: {"schema": ref("UploadLink")}}},
            **errors(400, *refused, *key_required(settings)),
        },
    }  # fmt: skip


def _import_operation(settings: Settings) -> Schema:
    return {
        "summary": "Fetch a URL and store it",
        "description": "The server fetches sourceUrl and streams it to storage."
        + (COMPAT_NOTE if settings.compat_status else ""),
        "requestBody": {"required": True, "content": {JSON: {"schema": ref("ImportRequest")}}},
        "responses": _upload_responses(settings, *UPLOAD_ERRORS, 502, 504),
    }


def _download_operation(settings: Settings, summary: str) -> Schema:
    file_content = {"*/*": {"schema": {"type": "string", "format": "binary"}}}
    signed = bool(settings.signing_key)
    link = "part of the signed link an upload returned" + (
        " (required: this service signs its links)"
        if signed
        else " (ignored: links are not signed)"
    )
    return {
        "summary": summary,
        "parameters": [
            FILENAME,
            {"name": "download", "in": "query", "description": "1 asks for an attachment",
             "schema": {"type": "string", "enum": ["1"]}},
            {"name": "expires", "in": "query", "required": signed, "description": link,
             "schema": {"type": "string"}},
            {"name": "signature", "in": "query", "required": signed, "description": link,
             "schema": {"type": "string"}},
            header("Range", "bytes=FIRST-LAST, -SUFFIX or FIRST-, comma-separated"),
            header("If-Range", "an ETag or a date: the range only if the file still matches"),
            header("If-None-Match", "ETags: 304 when one matches"),
            header("If-Modified-Since", "an HTTP date: 304 unless modified since"),
            header("If-Match", "ETags: 412 unless one matches"),
            header("If-Unmodified-Since", "an HTTP date: 412 if modified since"),
        ],
        "responses": {
            "200": {"description": "the whole file", "headers": ETAG_HEADER,
                    "content": file_content},
            "206": {"description": "one range, or several as multipart/byteranges",
                    "content": file_content},
            "304": {"description": "not modified"},
            # Downloads stay open to browsers: only a signed link's check refuses (403).
            **errors(400, *((403,) if signed else ()), 404, 412, 416, 503),
        },
    }  # fmt: skip


def _stat_operation(settings: Settings, summary: str) -> Schema:
    return {
        "summary": summary,
        "parameters": [FILENAME],
        "responses": {
            "200": {"description": "the metadata", "content": {JSON: {"schema": ref("Stat")}}},
            **errors(400, *key_required(settings), 404, 503),
        },
    }


def _list_operation(settings: Settings) -> Schema:
    conversation = {
        "name": "conversationId",
        "in": "query",
        "required": True,
        "schema": CONVERSATION_ID,
    }
    return {
        "summary": "A conversation's files, newest first",
        "parameters": [
            conversation,
            {"name": "limit", "in": "query", "description": "files per page (default 100)",
             "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}},
            {"name": "cursor", "in": "query", "description": "the `next` of the page before",
             "schema": {"type": "string"}},
        ],
        "responses": {
            "200": {"description": "a page", "content": {JSON: {"schema": ref("FileList")}}},
            **errors(400, *key_required(settings), 503),
        },
    }  # fmt: skip


def _delete_operation(settings: Settings) -> Schema:
    # Not the other operations' examples: generated requests must not erase the file
    # (or the conversation) that the downloads they generate look for.
    filename = {
        **FILENAME,
        "required": False,
        "description": "one stored file to delete",
        "schema": {**FILENAME["schema"], "examples": ["22222_old.png"]},
    }
    conversation = {
        "name": "conversationId",
        "in": "query",
        "description": "delete all of this conversation's files (instead of filename)",
        "schema": {**CONVERSATION_ID, "examples": ["22222"]},
    }
    return {
        "summary": "Delete a file, or erase a conversation's files",
        "description": "Exactly one of filename and conversationId. Needs an API key: "
        "without --api-key configured the service answers 403.",
        "parameters": [filename, conversation],
        "responses": {
            "200": {"description": "the conversation's files deleted",
                    "content": {JSON: {"schema": ref("Deleted")}}},
            "204": {"description": "the file deleted"},
            **errors(400, *key_required(settings), 403, 404, 503),
        },
    }  # fmt: skip


def _page_paths(settings: Settings) -> dict[str, Schema]:
    """The upload page (--ui): HTML and its assets, open to browsers without a key."""

    def page(summary: str, content: Schema, *parameters: Schema) -> Schema:
        operation = {
            "summary": summary,
            "parameters": list(parameters),
            "responses": {
                "200": {"description": "the page's file", "content": content},
                "304": {"description": "not modified (If-None-Match)"},
                **errors(404),
            },
        }
        return {"get": operation, "head": operation}

    html = {"text/html": {"schema": {"type": "string"}}}
    asset = {
        "name": "asset",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "enum": list(ASSETS)},
    }
    paths = {
        "/": page("The upload page", html),
        "/ui/{asset}": page(
            "The page's script, style and icon", {"*/*": {"schema": {"type": "string"}}}, asset
        ),
    }
    if settings.base_path:  # the page's relative URLs need the trailing slash
        redirect = {
            "summary": "To the upload page",
            "responses": {"308": {"description": "to {base}/"}, **errors()},
        }
        paths[""] = {"get": redirect, "head": redirect}
    return paths  # fmt: skip


def _paths(settings: Settings) -> dict[str, Schema]:
    plain = {JSON: {"schema": ref("Status")}}
    paths: dict[str, Schema] = {
        "/files": {
            "post": _upload_operation(settings, "Upload a file stream"),
            "put": _raw_upload_operation(settings),
            "get": _list_operation(settings),
            "delete": _delete_operation(settings),
        },
        "/files/upload-links": {"post": _upload_links_operation(settings)},
        "/api/uploadFileStream": {
            "post": _upload_operation(settings, "Upload (Hybrid Chat's path)")
        },
        "/files/from-url": {"post": _import_operation(settings)},
        "/files/download": {
            "get": _download_operation(settings, "Download"),
            "head": _download_operation(settings, "Download headers"),
        },
        "/api/downloadFileStream": {
            "get": _download_operation(settings, "Download (Hybrid Chat's path)"),
            "head": _download_operation(settings, "Download headers (Hybrid Chat's path)"),
        },
        "/files/stat": {"get": _stat_operation(settings, "A stored file's metadata")},
        "/api/getFileStat": {"get": _stat_operation(settings, "Metadata (Hybrid Chat's path)")},
        "/files/limits": {
            "get": {
                "summary": "What the service accepts",
                "responses": {"200": {"description": "limits",
                                      "content": {JSON: {"schema": ref("Limits")}}},
                              **errors()},
            }
        },
        "/healthz": {method: {"summary": "Liveness",
                              "responses": {"200": {"description": "serving", "content": plain},
                                            **errors()}} for method in ("get", "head")},
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3.1, for these settings",
                                      "content": {JSON: {"schema": {"type": "object"}}}},
                              **errors()},
            }
        },
        "/readyz": {
            "get": {
                "summary": "Readiness: storage takes writes",
                "responses": {"200": {"description": "ready", "content": plain},
                              **errors(503)},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {"200": {"description": "text exposition format",
                                      "content": {"text/plain": {"schema": {"type": "string"}}}},
                              **errors()},
            }
        },
    }  # fmt: skip
    paths.update(resumable_paths(settings))
    if settings.ui:
        paths.update(_page_paths(settings))
    if settings.api_key:
        # What needs `Authorization: Bearer KEY` (API.md: downloads stay open to browsers).
        keyed: list[Schema] = [{"apiKey": []}]
        for path in ("/files", "/api/uploadFileStream", "/files/from-url", "/files/upload-links"):
            paths[path]["post"]["security"] = keyed
        paths["/files"]["put"]["security"] = keyed
        for path in ("/files/stat", "/api/getFileStat", "/files"):
            paths[path]["get"]["security"] = keyed
        paths["/files"]["delete"]["security"] = keyed
    return paths


def document(settings: Settings, server_url: str) -> Schema:
    """The whole document, with every path under the configured base path."""
    components: Schema = {"schemas": {**SCHEMAS, **RESUMABLE_SCHEMAS}}
    if settings.api_key:
        components["securitySchemes"] = {
            "apiKey": {"type": "http", "scheme": "bearer", "description": "an --api-key"}
        }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "streamproxy",
            "version": __version__,
            "description": "Streaming media transfer service, compatible with Hybrid Chat's "
            "file service.",
        },
        "servers": [{"url": server_url}],
        "paths": {settings.base_path + path: item for path, item in _paths(settings).items()},
        "components": components,
    }


def server_url(request: web.Request, settings: Settings) -> str:
    """Where the paths hang: --public-url (or the request's origin) plus any mount prefix.

    Built as upload's `url` is, so a client that follows the document reaches the
    same place as one that follows a returned link.
    """
    served_at = request.app.router["openapi"].url_for().path  # mount + base path + name
    mount = served_at[: len(served_at) - len(settings.base_path + "/openapi.json")]
    origin = str(settings.public_url or request.url.origin()).rstrip("/")
    return origin + mount


async def openapi_json(request: web.Request) -> web.Response:
    settings = request.config_dict[SETTINGS]
    return web.json_response(document(settings, server_url(request, settings)))
