"""Request ids and the access log: one line per request, each with its id.

A client's `X-Request-Id` is kept when it looks like an id, else one is made;
it is echoed on every response and written in error bodies and log lines, so a
user's report can be matched to the server's log.
"""

from __future__ import annotations

import itertools
import logging
import re
import secrets

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from ..errors import REQUEST_ID
from ..runtime.logs import current_request_id

_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


# New ids: a random prefix per process and a counter, unique without a syscall each.
# Workers are spawned (never forked), so each process draws its own prefix on import.
_PREFIX = secrets.token_hex(6)
_COUNTER = itertools.count(1)


def new_request_id() -> str:
    return f"{_PREFIX}{next(_COUNTER):08x}"


def assign_request_id(request: web.Request) -> str:
    """The client's id when it looks like one, else a new one; kept on the request."""
    request_id = request.get(REQUEST_ID)
    if request_id is None:
        offered = request.headers.get("X-Request-Id")
        request_id = offered if offered and _ID_RE.match(offered) else new_request_id()
        request[REQUEST_ID] = request_id
    current_request_id.set(request_id)  # each request runs in a task of its own
    return request_id


def echo_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """Called as each response is prepared (http/stack.py), downloads a handler prepared
    itself included."""
    request_id = request.get(REQUEST_ID)
    if request_id:
        response.headers["X-Request-Id"] = request_id


class AccessLogger(AbstractAccessLogger):
    """`client "METHOD path" status bytes duration` (the query is left out: it may hold a
    signed link's signature), with the fields also as attributes for JSON lines."""

    @property
    def enabled(self) -> bool:
        """Asked by aiohttp once per connection: off below INFO, so a request on that
        connection is neither timed nor handed here (the level is set at start-up)."""
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        if not self.logger.isEnabledFor(logging.INFO):
            return
        fields = {
            "remote": request.remote,
            "method": request.method,
            "path": request.path,
            "status": response.status,
            "bytes": response.body_length,
            "duration_ms": round(time * 1000, 1),
            "request_id": request.get(REQUEST_ID, "-"),
        }
        self.logger.info(
            '%s "%s %s" %d %d %.1fms',
            request.remote,
            request.method,
            request.path,
            response.status,
            response.body_length,
            time * 1000,
            extra=fields,
        )
