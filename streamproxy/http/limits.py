"""`GET /files/limits`: what the service accepts, so a connector can check before sending."""

from __future__ import annotations

from aiohttp import web

from ..runtime.settings import SETTINGS


async def limits(request: web.Request) -> web.Response:
    settings = request.config_dict[SETTINGS]
    return web.json_response(
        {
            "maxSize": settings.max_size,
            "allowTypes": [str(rule) for rule in settings.allow_type],
            "denyTypes": [str(rule) for rule in settings.deny_type],
            "signedLinks": bool(settings.signing_key),
        }
    )
