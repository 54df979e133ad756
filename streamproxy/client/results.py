"""Typed results of the client's calls, each convertible back to the service's JSON."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def _text(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str):
        raise ValueError(f"the answer has no text field {key!r}")
    return value


def _int(body: dict[str, Any], key: str) -> int:
    value = body.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"the answer has no integer field {key!r}")
    return value


def _optional(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class UploadResult:
    """A stored file, as `POST /files` and `POST /files/from-url` answer.

    `original_name` is the name the service recorded (`stat`'s `originalName`):
    what the client sent, or for an import without a file name, what the service
    derived; `conversation_id` is what the client sent. Media messages use the
    original name as the label, whatever path stored the file.
    """

    name: str
    type: str
    size: int
    etag: str
    url: str
    message: str = "File uploaded successfully."
    original_name: str | None = None
    conversation_id: str | None = None

    @classmethod
    def from_json(
        cls,
        body: dict[str, Any],
        original_name: str | None = None,
        conversation_id: str | None = None,
    ) -> UploadResult:
        return cls(
            name=_text(body, "name"),
            type=_text(body, "type"),
            size=_int(body, "size"),
            etag=_text(body, "etag"),
            url=_text(body, "url"),
            message=_optional(body, "message") or "",
            original_name=original_name,
            conversation_id=conversation_id,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "message": self.message,
            "name": self.name,
            "type": self.type,
            "size": self.size,
            "etag": self.etag,
            "url": self.url,
        }


@dataclass(frozen=True)
class FileStat:
    """A stored file's metadata, as `GET /files/stat` answers."""

    name: str
    type: str
    size: int
    etag: str
    created: datetime | None = None
    conversation_id: str | None = None
    channel: str | None = None
    original_name: str | None = None

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> FileStat:
        created = _optional(body, "created")
        return cls(
            name=_text(body, "name"),
            type=_text(body, "type"),
            size=_int(body, "size"),
            etag=_text(body, "etag"),
            created=_parse_time(created) if created else None,
            conversation_id=_optional(body, "conversationId"),
            channel=_optional(body, "channel"),
            original_name=_optional(body, "originalName"),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "size": self.size,
            "etag": self.etag,
            "created": _format_time(self.created),
            "conversationId": self.conversation_id,
            "channel": self.channel,
            "originalName": self.original_name,
        }


@dataclass(frozen=True)
class ListedFile:
    """One file of a conversation's listing (`GET /files?conversationId=`)."""

    name: str
    type: str
    size: int
    etag: str
    created: datetime | None
    url: str

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> ListedFile:
        created = _optional(body, "created")
        return cls(
            name=_text(body, "name"),
            type=_text(body, "type"),
            size=_int(body, "size"),
            etag=_text(body, "etag"),
            created=_parse_time(created) if created else None,
            url=_text(body, "url"),
        )

    def to_json(self) -> dict[str, Any]:
        created = _format_time(self.created)
        return {"name": self.name, "type": self.type, "size": self.size,
                "etag": self.etag, "created": created, "url": self.url}  # fmt: skip


def _format_time(moment: datetime | None) -> str | None:
    """The service's own form of a time (UTC, to the second), as `_parse_time` reads it."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


def _parse_time(text: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True)
class DownloadResult:
    """What a download left at `path`.

    `received` counts the bytes of this call; `resumed_from` is where it took
    over from an earlier, interrupted download (0 when it started afresh).
    `verified` says the whole file's MD5 matched the service's ETag. `status` is
    the answer's (200, or 206 for a resume or a range), None when the file was
    complete already and nothing had to be fetched.
    """

    path: Path
    size: int
    received: int
    status: int | None
    etag: str | None
    type: str | None
    resumed_from: int = 0
    verified: bool = False
    content_range: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "size": self.size,
            "received": self.received,
            "resumedFrom": self.resumed_from,
            "status": self.status,
            "etag": self.etag,
            "type": self.type,
            "verified": self.verified,
            "contentRange": self.content_range,
        }


@dataclass(frozen=True)
class UploadLink:
    """A one-time upload link, as `POST /files/upload-links` answers: hand `url` to
    whoever uploads (a form POST, a PUT of the file, or a resumable creation)."""

    url: str
    expires: datetime

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> UploadLink:
        return cls(
            url=_text(body, "url"), expires=datetime.fromtimestamp(_int(body, "expires"), UTC)
        )

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "expires": int(self.expires.timestamp())}
