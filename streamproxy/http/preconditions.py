"""Validators and conditional requests (RFC 9110 sections 8.8 and 13), on our content ETag.

Pure functions of header values, so the download decides and this module only
answers. The validators are formatted here and nowhere else: the ETag is the
stored MD5, quoted; Last-Modified is the creation time as an HTTP date, made by
`email.utils` and not `strftime`, whose `%a`/`%b` follow the process locale (a
host program that calls `setlocale` would otherwise send "Di, 01 Dez" and break
If-Range). aiohttp parses the ETag lists and the If-(Un)Modified-Since dates
(`request.if_match` and friends, with `email.utils` too); the order of evaluation
and the comparisons are RFC 9110 13.2.2: If-Match, else If-Unmodified-Since;
then If-None-Match, else If-Modified-Since; If-Range last.
"""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime

from aiohttp.helpers import ETAG_ANY, ETag

ETags = tuple[ETag, ...]


def etag_header(etag: str) -> str:
    """The ETag header's value: the MD5, quoted as a strong entity tag."""
    return f'"{etag}"'


def http_date(moment: datetime) -> str:
    """An IMF-fixdate (`Tue, 01 Dec 2026 01:02:03 GMT`) whatever the locale; `moment` in UTC."""
    return email.utils.format_datetime(moment, usegmt=True)


def parse_http_date(value: str) -> datetime | None:
    """The moment an HTTP date names, in UTC; None when it is not a date."""
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:  # "-0000": UTC, says RFC 5322
        return moment.replace(tzinfo=UTC)
    return moment


def _strong_match(tags: ETags, etag: str) -> bool:
    return any(tag.value == ETAG_ANY or (not tag.is_weak and tag.value == etag) for tag in tags)


def _weak_match(tags: ETags, etag: str) -> bool:
    return any(tag.value in (ETAG_ANY, etag) for tag in tags)


def precondition_fails(
    if_match: ETags | None,
    if_unmodified_since: datetime | None,
    etag: str,
    last_modified: datetime,
) -> bool:
    """If-Match (strong comparison), else If-Unmodified-Since, does not hold: 412."""
    if if_match is not None:
        return not _strong_match(if_match, etag)
    return if_unmodified_since is not None and last_modified > if_unmodified_since


def not_modified(
    if_none_match: ETags | None,
    if_modified_since: datetime | None,
    etag: str,
    last_modified: datetime,
) -> bool:
    """If-None-Match (weak comparison), else If-Modified-Since, says the copy is current: 304."""
    if if_none_match is not None:
        return _weak_match(if_none_match, etag)
    return if_modified_since is not None and last_modified <= if_modified_since


def if_range_allows(if_range: str | None, etag: str, last_modified: datetime) -> bool:
    """True when a Range may be honoured: no If-Range, or it still names this content.

    An entity tag must match strongly; a date must equal Last-Modified exactly.
    Anything unparseable means "the client's copy is not this one": send it all.
    """
    if if_range is None:
        return True
    value = if_range.strip()
    if value.startswith('"'):
        return value == etag_header(etag)
    if value.startswith("W/"):
        return False
    return parse_http_date(value) == last_modified
