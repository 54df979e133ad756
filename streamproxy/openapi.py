"""The OpenAPI 3.1 document of API.md, served at `{base}/openapi.json`.

Written out by hand from the contract rather than generated from the handlers
(which stream bodies and so declare nothing); the schemathesis test against the
live server keeps the two in step.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from . import __version__
from .naming import MAX_CONVERSATION_ID, MAX_STORED_NAME_BYTES
from .settings import SETTINGS, Settings

JSON = "application/json"
Schema = dict[str, Any]

ERROR_CODES = [
    "bad_request", "source_not_allowed", "unauthorized", "forbidden", "not_found",
    "method_not_allowed", "timeout", "precondition_failed", "too_large", "type_not_allowed",
    "range_not_satisfiable", "infected", "source_failed", "busy", "not_ready",
    "scanner_unavailable", "source_timeout", "insufficient_storage", "internal",
]  # fmt: skip

SCHEMAS: dict[str, Schema] = {
    "Error": {
        "type": "object",
        "required": ["message", "error", "detail"],
        "properties": {
            "message": {"type": "string"},
            "error": {"type": "string", "enum": ERROR_CODES},
            "detail": {"type": "string"},
            "requestId": {"type": "string"},
        },
    },
    "UploadResult": {
        "type": "object",
        "required": ["message", "name", "type", "size", "etag", "url"],
        "properties": {
            "message": {"const": "File uploaded successfully."},
            "name": {"type": "string"},
            "type": {"type": "string"},
            "size": {"type": "integer", "minimum": 0},
            "etag": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
            "url": {"type": "string", "format": "uri"},
        },
    },
    "Stat": {
        "type": "object",
        "required": ["name", "type", "size", "etag", "created"],
        "properties": {
            "name": {"type": "string"},
            "type": {"type": "string"},
            "size": {"type": "integer", "minimum": 0},
            "etag": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
            "created": {"type": "string", "format": "date-time"},
            "conversationId": {"type": ["string", "null"]},
            "channel": {"type": ["string", "null"]},
            "originalName": {"type": ["string", "null"]},
        },
    },
    "ImportRequest": {
        "type": "object",
        "required": ["sourceUrl", "channel"],
        "properties": {
            "sourceUrl": {
                "type": "string",
                "pattern": "^https?://",
                "description": "http(s) URL without user-info",
            },
            "channel": {"type": "string", "minLength": 1},
            "conversationId": {"type": ["string", "integer"]},
            "fileName": {"type": "string"},
            "mime_type": {"type": "string"},
            "APIKey360": {"type": "string"},
            "oauth": {
                "oneOf": [
                    {"type": "string"},
                    {
                        "type": "object",
                        "required": ["access_token"],
                        "properties": {
                            "access_token": {"type": "string"},
                            "token_type": {"type": "string"},
                        },
                    },
                ]
            },
            "sha256": {"type": "string", "description": "64 hex digits, or base64 of 32 bytes"},
        },
    },
    "Limits": {
        "type": "object",
        "required": ["maxSize", "allowTypes", "denyTypes", "signedLinks"],
        "properties": {
            "maxSize": {"type": "integer"},
            "allowTypes": {"type": "array", "items": {"type": "string"}},
            "denyTypes": {"type": "array", "items": {"type": "string"}},
            "signedLinks": {"type": "boolean"},
        },
    },
    "Status": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string"}},
    },
}


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _errors(*statuses: int) -> dict[str, Schema]:
    return {
        str(status): {
            "description": "an error, as API.md's table describes it",
            "content": {JSON: {"schema": _ref("Error")}},
        }
        for status in (*statuses, 500)
    }


ETAG_HEADER = {"ETag": {"description": "the quoted MD5", "schema": {"type": "string"}}}
FILENAME = {
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
CONVERSATION_ID = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_CONVERSATION_ID,
    "pattern": "^[A-Za-z0-9][A-Za-z0-9._:@-]*$",
    "examples": ["11111"],
}
UPLOAD_ERRORS = (400, 401, 403, 408, 413, 415, 422, 503, 507)


def _upload_operation(summary: str) -> Schema:
    return {
        "summary": summary,
        "parameters": [
            {
                "name": "conversationId",
                "in": "query",
                "description": "may be sent here instead of as a form field",
                "schema": CONVERSATION_ID,
            }
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
        "responses": {
            "200": {
                "description": "stored",
                "headers": ETAG_HEADER,
                "content": {JSON: {"schema": _ref("UploadResult")}},
            },
            **_errors(*UPLOAD_ERRORS),
        },
    }


def _download_operation(summary: str) -> Schema:
    file_content = {"*/*": {"schema": {"type": "string", "format": "binary"}}}
    return {
        "summary": summary,
        "parameters": [
            FILENAME,
            {"name": "download", "in": "query", "schema": {"type": "string", "enum": ["1"]}},
            {"name": "expires", "in": "query", "schema": {"type": "string"}},
            {"name": "signature", "in": "query", "schema": {"type": "string"}},
            {"name": "Range", "in": "header", "schema": {"type": "string"}},
            {"name": "If-Range", "in": "header", "schema": {"type": "string"}},
            {"name": "If-None-Match", "in": "header", "schema": {"type": "string"}},
            {"name": "If-Match", "in": "header", "schema": {"type": "string"}},
        ],
        "responses": {
            "200": {"description": "the whole file", "headers": ETAG_HEADER,
                    "content": file_content},
            "206": {"description": "one range, or several as multipart/byteranges",
                    "content": file_content},
            "304": {"description": "not modified"},
            **_errors(400, 403, 404, 412, 416, 503),
        },
    }  # fmt: skip


def _stat_operation(summary: str) -> Schema:
    return {
        "summary": summary,
        "parameters": [FILENAME],
        "responses": {
            "200": {"description": "the metadata", "content": {JSON: {"schema": _ref("Stat")}}},
            **_errors(400, 401, 403, 404),
        },
    }


def document(settings: Settings) -> Schema:
    """The whole document, with every path under the configured base path."""
    base = settings.base_path
    plain = {JSON: {"schema": _ref("Status")}}
    paths: dict[str, Schema] = {
        "/files": {"post": _upload_operation("Upload a file stream")},
        "/api/uploadFileStream": {"post": _upload_operation("Upload (Hybrid Chat's path)")},
        "/files/from-url": {
            "post": {
                "summary": "Fetch a URL and store it",
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": _ref("ImportRequest")}},
                },
                "responses": {
                    "200": {
                        "description": "stored",
                        "headers": ETAG_HEADER,
                        "content": {JSON: {"schema": _ref("UploadResult")}},
                    },
                    **_errors(*UPLOAD_ERRORS, 502, 504),
                },
            }
        },
        "/files/download": {
            "get": _download_operation("Download"),
            "head": _download_operation("Download headers"),
        },
        "/api/downloadFileStream": {
            "get": _download_operation("Download (Hybrid Chat's path)"),
            "head": _download_operation("Download headers (Hybrid Chat's path)"),
        },
        "/files/stat": {"get": _stat_operation("A stored file's metadata")},
        "/api/getFileStat": {"get": _stat_operation("Metadata (Hybrid Chat's path)")},
        "/files/limits": {
            "get": {
                "summary": "What the service accepts",
                "responses": {"200": {"description": "limits",
                                      "content": {JSON: {"schema": _ref("Limits")}}}},
            }
        },
        "/healthz": {"get": {"summary": "Liveness",
                             "responses": {"200": {"description": "serving", "content": plain}}}},
        "/readyz": {
            "get": {
                "summary": "Readiness: storage takes writes",
                "responses": {"200": {"description": "ready", "content": plain},
                              **_errors(503)},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {"200": {"description": "text exposition format",
                                      "content": {"text/plain": {"schema": {"type": "string"}}}}},
            }
        },
    }  # fmt: skip
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "streamproxy",
            "version": __version__,
            "description": "Streaming media transfer service, compatible with Hybrid Chat's "
            "file service.",
        },
        "paths": {base + path: item for path, item in paths.items()},
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
        },
    }


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(document(request.config_dict[SETTINGS]))
