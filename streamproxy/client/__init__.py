"""The connector's side: `MediaClient` for Python programs, and the client commands.

async with MediaClient("http://127.0.0.1:8080", api_key=KEY) as media:
    uploaded = await media.upload("photo.png", conversation_id="13318")
    message = media.media_message(uploaded, caption="Screenshot")
"""

from __future__ import annotations

from .errors import MediaError
from .media_client import MediaClient
from .message import build_media_message, message_type
from .results import DownloadResult, FileStat, ListedFile, UploadLink, UploadResult
from .sources import Progress

__all__ = [
    "DownloadResult",
    "FileStat",
    "ListedFile",
    "MediaClient",
    "MediaError",
    "Progress",
    "UploadLink",
    "UploadResult",
    "build_media_message",
    "message_type",
]
