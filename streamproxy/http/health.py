"""Liveness and readiness, for load balancers and orchestrators."""

from __future__ import annotations

from aiohttp import web

from ..error_table import NOT_READY
from ..storage.base import STORAGE, StorageError


async def healthz(request: web.Request) -> web.Response:
    """200 while the process serves requests."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """200 when storage takes a write now, else 503 with the reason."""
    storage = request.config_dict[STORAGE]
    try:
        await storage.check_ready()
    except StorageError as error:
        raise NOT_READY(f"{storage.description}: {error}") from None
    return web.json_response({"status": "ready", "storage": storage.description})
