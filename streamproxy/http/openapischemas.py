"""The OpenAPI document's component schemas: the JSON bodies of API.md.

Kept apart from the operations (`openapi`) so each module stays one size to read;
the error codes' enum comes from error_table.py like the rest of the errors.
"""

from __future__ import annotations

from typing import Any

from ..error_table import TABLE
from ..intake.naming import MAX_CONVERSATION_ID
from .uploadlinks import DEFAULT_EXPIRES_IN, MAX_ALLOW_TYPES, MAX_EXPIRES_IN

JSON = "application/json"
Schema = dict[str, Any]

CONVERSATION_ID: Schema = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_CONVERSATION_ID,
    "pattern": "^[A-Za-z0-9][A-Za-z0-9._:@-]*$",
    "examples": ["11111"],
}

SCHEMAS: dict[str, Schema] = {
    "Error": {
        "type": "object",
        "required": ["message", "error", "detail"],
        "properties": {
            "message": {"type": "string"},
            "error": {"type": "string", "enum": [kind.code for kind in TABLE]},
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
    "FileList": {
        "type": "object",
        "required": ["files", "next"],
        "properties": {
            "files": {"type": "array", "items": {"$ref": "#/components/schemas/FileEntry"}},
            "next": {"type": ["string", "null"], "description": "the next page's cursor, or null"},
        },
    },
    "Deleted": {
        "type": "object",
        "required": ["deleted"],
        "properties": {"deleted": {"type": "integer", "minimum": 0}},
    },
    "UploadLinkRequest": {
        "type": "object",
        "required": ["conversationId"],
        "properties": {
            "conversationId": {"oneOf": [CONVERSATION_ID, {"type": "integer", "minimum": 0}]},
            "fileName": {
                "type": "string",
                "minLength": 1,
                "maxLength": 100,
                "pattern": r"^[^./\\\x00-\x1f\x7f][^/\\\x00-\x1f\x7f]*$",
                "description": "the stored file's name (the upload's own is ignored)",
            },
            "maxSize": {
                "type": "integer",
                "minimum": 0,
                "description": "bytes; at most the service's cap, which is the default",
            },
            "allowType": {
                "type": "array",
                "maxItems": MAX_ALLOW_TYPES,
                "items": {"type": "string", "examples": ["image/*", ".pdf"]},
                "description": "type rules the file must match, besides the service's",
            },
            "expiresIn": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_EXPIRES_IN,
                "default": DEFAULT_EXPIRES_IN,
                "description": "seconds",
            },
        },
    },
    "UploadLink": {
        "type": "object",
        "required": ["url", "expires"],
        "properties": {
            "url": {
                "type": "string",
                "format": "uri",
                "description": "POST a form to it, PUT the file to it, or create a "
                "resumable upload with its query; once, without an API key",
            },
            "expires": {"type": "integer", "description": "UNIX seconds"},
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


# A listing's entry: the stat document's first fields, and the download url.
SCHEMAS["FileEntry"] = {
    "type": "object",
    "required": [*SCHEMAS["Stat"]["required"], "url"],
    "properties": {
        **{key: SCHEMAS["Stat"]["properties"][key] for key in SCHEMAS["Stat"]["required"]},
        "url": {"type": "string", "format": "uri"},
    },
}
