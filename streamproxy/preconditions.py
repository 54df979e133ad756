"""Conditional requests (RFC 9110 section 13), evaluated on our content ETag.

aiohttp parses the headers (`request.if_match` and friends); the order of
evaluation and the comparisons are RFC 9110 13.2.2: If-Match, else
If-Unmodified-Since; then If-None-Match, else If-Modified-Since; If-Range last.
"""

from __future__ import annotations

import enum
from datetime import datetime

from aiohttp import web
from aiohttp.helpers import ETAG_ANY, ETag, parse_http_date


class Outcome(enum.Enum):
    PROCEED = "proceed"
    NOT_MODIFIED = "not_modified"  # 304
    FAILED = "failed"  # 412


def _strong_match(tags: tuple[ETag, ...], etag: str) -> bool:
    return any(tag.value == ETAG_ANY or (not tag.is_weak and tag.value == etag) for tag in tags)


def _weak_match(tags: tuple[ETag, ...], etag: str) -> bool:
    return any(tag.value in (ETAG_ANY, etag) for tag in tags)


def evaluate(request: web.BaseRequest, etag: str, last_modified: datetime) -> Outcome:
    """What the conditional headers of a GET or HEAD ask for, given the stored file."""
    if_match = request.if_match
    if if_match is not None:
        if not _strong_match(if_match, etag):
            return Outcome.FAILED
    else:
        unmodified_since = request.if_unmodified_since
        if unmodified_since is not None and last_modified > unmodified_since:
            return Outcome.FAILED
    if_none_match = request.if_none_match
    if if_none_match is not None:
        if _weak_match(if_none_match, etag):
            return Outcome.NOT_MODIFIED
    else:
        modified_since = request.if_modified_since
        if modified_since is not None and last_modified <= modified_since:
            return Outcome.NOT_MODIFIED
    return Outcome.PROCEED


def if_range_allows(request: web.BaseRequest, etag: str, last_modified: datetime) -> bool:
    """True when a Range may be honoured: no If-Range, or it still names this content.

    An entity tag must match strongly; a date must equal Last-Modified exactly.
    Anything unparseable means "the client's copy is not this one": send it all.
    """
    value = request.headers.get("If-Range")
    if value is None:
        return True
    value = value.strip()
    if value.startswith('"'):
        return value == f'"{etag}"'
    if value.startswith("W/"):
        return False
    date = parse_http_date(value)
    return date is not None and date == last_modified
