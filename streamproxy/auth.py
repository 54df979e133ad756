"""API keys (`--api-key`): uploads and stat need `Authorization: Bearer KEY`.

Downloads stay open so that browsers and agent desks can follow a mediaUrl.
"""

from __future__ import annotations

import hmac

from aiohttp import web

from .errors import ApiError
from .settings import SETTINGS


def check_api_key(request: web.Request) -> None:
    """401 without a key, 403 with a wrong one; keys compared in constant time."""
    keys = request.config_dict[SETTINGS].api_key
    if not keys:
        return
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(
            401,
            "unauthorized",
            "this service needs an API key: send Authorization: Bearer KEY",
            {"WWW-Authenticate": 'Bearer realm="streamproxy"'},
        )
    presented = token.strip().encode()
    if not any(hmac.compare_digest(presented, key.encode()) for key in keys):
        raise ApiError(403, "forbidden", "the API key is not valid")
