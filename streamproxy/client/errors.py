"""`MediaError`: the one exception the client raises for what the service or network did.

It carries the contract's error fields (status, `error` code, `detail`, request
id), so a caller can branch on `code` and quote `request_id` in a report. Local
file problems stay `OSError`, as Python programs expect.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

# Codes for failures that have no service response, or a response that is not ours.
CONNECTION_FAILED = "connection_failed"
TIMEOUT = "timeout"
INTERRUPTED = "interrupted"
UNEXPECTED_RESPONSE = "unexpected_response"
CHECKSUM_MISMATCH = "checksum_mismatch"
SOURCE_CHANGED = "source_changed"

# For answers without a JSON body (HEAD, a proxy's error page): the contract's code by status.
_CODES_BY_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    412: "precondition_failed",
    413: "too_large",
    415: "type_not_allowed",
    416: "range_not_satisfiable",
    502: "source_failed",
    503: "busy",
    504: "source_timeout",
    507: "insufficient_storage",
    500: "internal",
}


@dataclass
class MediaError(Exception):
    """A refused or failed request: `status` is None when no HTTP answer came."""

    status: int | None
    code: str
    detail: str
    request_id: str | None = None
    message: str | None = None

    def __str__(self) -> str:
        where = f"{self.status} " if self.status else ""
        text = f"{where}{self.code}: {self.detail}"
        return f"{text} (request id {self.request_id})" if self.request_id else text

    def to_json(self) -> dict[str, Any]:
        """The contract's error shape, plus the status: what `--json` prints."""
        return {
            "status": self.status,
            "error": self.code,
            "detail": self.detail,
            "message": self.message,
            "requestId": self.request_id,
        }

    @classmethod
    def from_answer(
        cls, status: int, reason: str | None, body: bytes, request_id: str | None
    ) -> MediaError:
        """Read the service's JSON error; anything else is described by its status."""
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), str):
            return cls(
                status,
                parsed["error"],
                str(parsed.get("detail") or parsed.get("message") or reason or ""),
                str(parsed.get("requestId") or request_id or "") or None,
                str(parsed["message"]) if parsed.get("message") is not None else None,
            )
        code = _CODES_BY_STATUS.get(status, UNEXPECTED_RESPONSE)
        text = body[:200].decode("utf-8", "replace").strip()
        detail = f"HTTP {status} {reason or ''}".strip() + (f": {text}" if text else "")
        return cls(status, code, detail, request_id)


def network_error(error: aiohttp.ClientError, server: URL) -> MediaError:
    """A failure of the connection to the service, as the client reports it."""
    if isinstance(error, aiohttp.ClientPayloadError):
        return MediaError(None, INTERRUPTED, f"the transfer broke off: {error}")
    if isinstance(error, aiohttp.ClientConnectorError):
        return MediaError(None, CONNECTION_FAILED, f"cannot connect to {server}: {error.os_error}")
    detail = str(error) or type(error).__name__
    return MediaError(None, CONNECTION_FAILED, f"{server}: {detail}")
