"""Hybrid Chat's media message body (CIM), as a connector sends it after an upload.

Every attachment field is filled, so an agent desk can show the file without a
second call: the URL, type, size, the label people see and the stored name.
"""

from __future__ import annotations

from typing import Any

_TYPES = {"image": "IMAGE", "video": "VIDEO", "audio": "AUDIO"}


def message_type(mime_type: str) -> str:
    """IMAGE, VIDEO or AUDIO from the MIME family; FILE for anything else."""
    family = mime_type.split("/", 1)[0].strip().lower()
    return _TYPES.get(family, "FILE")


def label_for(name: str, original_name: str | None, conversation_id: str | None) -> str:
    """The name people see: the original one, else the stored one without its prefix."""
    if original_name:
        return original_name
    if conversation_id and name.startswith(conversation_id + "_"):
        return name[len(conversation_id) + 1 :]
    return name


def build_media_message(
    *,
    media_url: str,
    mime_type: str,
    size: int,
    media_name: str,
    media_label: str,
    caption: str | None = None,
) -> dict[str, Any]:
    """The message body of EXPERTFLOW.md, field for field."""
    return {
        "type": message_type(mime_type),
        "caption": caption,
        "markdownText": None,
        "additionalDetails": {"fileName": media_label},
        "attachment": {
            "mediaUrl": media_url,
            "mimeType": mime_type,
            "size": size,
            "thumbnail": None,
            "mediaLabel": media_label,
            "mediaName": media_name,
        },
    }
