"""API keys (`--api-key`): uploads and stat need `Authorization: Bearer KEY`.

Downloads stay open so that browsers and agent desks can follow a mediaUrl.
"""

from __future__ import annotations

import hmac

from aiohttp import web

from ..error_table import FORBIDDEN, UNAUTHORIZED
from ..runtime.settings import SETTINGS


def check_api_key(request: web.Request) -> None:
    """401 without a key, 403 with a wrong one; keys compared in constant time."""
    keys = request.config_dict[SETTINGS].api_key
    if not keys:
        return
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UNAUTHORIZED("this service needs an API key: send Authorization: Bearer KEY")
    presented = token.strip().encode()
    if not any(hmac.compare_digest(presented, key.encode()) for key in keys):
        raise FORBIDDEN("the API key is not valid")
