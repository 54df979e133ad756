"""Value parsers: text from a flag, a variable or a TOML key to a checked value.

Each raises `ValueError` with a message a user can act on (never Python's own
`invalid literal for int()`); the loader puts the name of the flag, variable or
key in front. Each `format_*` is the inverse used to show defaults in `--help`.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from yarl import URL

from ...intake.scan import ClamdAddress

_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kKmMgGtT]?)(i?[bB])?\s*$")
_SIZE_FACTORS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_DURATION_FACTORS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_size(text: str | int) -> int:
    """Parse a byte count such as `5242880`, `5M`, `512k` or `2G` (binary multiples)."""
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"a size cannot be negative: {text}")
        return text
    match = _SIZE_RE.match(text)
    if not match:
        raise ValueError(f"not a size: {text!r} (use bytes, or a suffix k, M, G: 5M)")
    return int(match.group(1)) * _SIZE_FACTORS[match.group(2).lower()]


def format_size(size: int) -> str:
    """The shortest exact spelling: 5242880 -> `5M`, 524288 -> `512k`, 1000 -> `1000`."""
    for suffix, factor in (("G", 1024**3), ("M", 1024**2), ("k", 1024)):
        if size and size % factor == 0:
            return f"{size // factor}{suffix}"
    return str(size)


def _size_within(text: str | int, low: int, high: int, refusal: str) -> int:
    value = parse_size(text)
    if not low <= value <= high:
        raise ValueError(f"{refusal}: {text}")
    return value


def parse_max_size(text: str | int) -> int:
    """A cap of 0 would refuse every upload: refuse it at start-up instead."""
    value = parse_size(text)
    if value < 1:
        raise ValueError(f"must be at least 1 byte ({text} would refuse every upload)")
    return value


def parse_chunk_size(text: str | int) -> int:
    return _size_within(text, 4096, 16 * 1024 * 1024, "chunk size must be between 4k and 16M")


S3_MIN_PART = 5 * 1024**2
S3_MAX_PART = 4 * 1024**3  # a part may overshoot by a chunk; S3 takes 5 GiB at most


def parse_part_size(text: str | int) -> int:
    """S3 refuses parts under 5 MiB (except the last) and over 5 GiB."""
    return _size_within(text, S3_MIN_PART, S3_MAX_PART, "S3 part size must be between 5M and 4G")


def parse_head_size(text: str | int) -> int:
    """Under 1k hardly a request line fits; over 1M no head is legitimate."""
    return _size_within(text, 1024, 1024**2, "the request head limit must be between 1k and 1M")


def parse_bool(text: str | bool) -> bool:
    if isinstance(text, bool):
        return text
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {text!r} (use true or false)")


def _whole_number(text: str | int, what: str) -> int:
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    try:
        return int(str(text).strip())
    except ValueError:
        raise ValueError(f"not {what}: {text!r}") from None


def parse_port(text: str | int) -> int:
    port = _whole_number(text, "a port number (0 to 65535)")
    if not 0 <= port <= 65535:
        raise ValueError(f"not a port number (0 to 65535): {text}")
    return port


def parse_positive_int(text: str | int) -> int:
    value = _whole_number(text, "a whole number")
    if value < 1:
        raise ValueError(f"must be at least 1: {text}")
    return value


def parse_seconds(text: str | float) -> float:
    try:
        value = float(str(text).strip())
    except ValueError:
        raise ValueError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < math.inf:
        raise ValueError(f"must be a positive number of seconds: {text}")
    return value


def format_seconds(seconds: float) -> str:
    return f"{seconds:g}"


def parse_duration(text: str | float) -> float:
    """Seconds from `30d`, `12h`, `15m`, `45s` or a plain number of seconds."""
    if isinstance(text, int | float):
        value = float(text)
    else:
        match = _DURATION_RE.match(text)
        if not match:
            raise ValueError(f"not a duration: {text!r} (use 30d, 12h, 15m, 45s)")
        value = float(match.group(1)) * _DURATION_FACTORS[match.group(2)]
    if not 0 < value < math.inf:
        raise ValueError(f"a duration must be positive: {text!r}")
    return value


def format_duration(seconds: float) -> str:
    """The largest whole unit: 604800 -> `7d`, 86400 -> `24h` (a day reads as hours)."""
    for suffix, factor in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % factor == 0 and (suffix != "d" or seconds > 86400):
            return f"{int(seconds // factor)}{suffix}"
    return f"{seconds:g}s"


def parse_text(text: str) -> str:
    """A value taken as it is (a host, a key, a region); it must not be empty."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"needs a value, not {text!r}")
    return text


def parse_storage(text: str) -> str:
    """A directory or a storage URL; an existing file in the way is named at once."""
    target = parse_text(text).strip()
    if "://" not in target:
        path = Path(target)
        if path.is_file():
            raise ValueError(f"{target} is a file, not a directory")
        if path.exists() and not path.is_dir():
            raise ValueError(f"{target} is not a directory")
    return target


def parse_base_path(text: str) -> str:
    """Normalise a route prefix to `""` or `/segment[/segment...]` without a trailing slash."""
    stripped = text.strip().strip("/")
    if not stripped:
        return ""
    if any(part in {"", ".", ".."} for part in stripped.split("/")) or "?" in stripped:
        raise ValueError(f"not a usable path prefix: {text!r}")
    return "/" + stripped


def parse_http_url(text: str, what: str = "URL") -> URL:
    """The one check of every URL setting: absolute, http or https, with a host."""
    try:
        url = URL(text.strip())
    except ValueError:
        url = URL()
    if url.scheme not in {"http", "https"} or not url.host:
        raise ValueError(f"not an http(s) {what} with a host: {text!r}")
    return url


def parse_public_url(text: str) -> URL:
    return parse_http_url(text).with_query(None).with_fragment(None)


def parse_proxy_url(text: str) -> URL:
    return parse_http_url(text, "proxy URL")


def parse_endpoint(text: str) -> str:
    return str(parse_http_url(text, "endpoint URL"))


def parse_log_level(text: str) -> str:
    level = text.strip().lower()
    if level not in {"debug", "info", "warning", "error"}:
        raise ValueError(f"not a log level: {text!r} (debug, info, warning or error)")
    return level


def parse_log_format(text: str) -> str:
    value = text.strip().lower()
    if value not in {"text", "json"}:
        raise ValueError(f"not a log format: {text!r} (text or json)")
    return value


def parse_clamd_address(text: str) -> ClamdAddress:
    return ClamdAddress.parse(text)


def parse_secret(text: str) -> str:
    if len(text) < 16:
        raise ValueError("a signing key needs at least 16 characters")
    return text


def parse_webhook_url(text: str) -> str:
    """The operator's own receiver: any http(s) URL, private addresses included."""
    return str(parse_http_url(text, "webhook URL").with_fragment(None))


def parse_webhook_secret(text: str) -> str:
    if len(text) < 16:
        raise ValueError("a webhook secret needs at least 16 characters")
    return text
