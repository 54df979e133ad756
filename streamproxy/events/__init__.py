"""Signed webhook events (API.md, "Events"): the model and signature (`model`), the
spool that keeps pending ones in storage (`spool`, `s3spool`), and delivery (`delivery`).

Other modules emit with `await emit(request.app, "file.deleted", file_data(meta))`.
"""

from .delivery import EVENTS, EventBus, Schedule, emit, events_lifecycle
from .model import SIGNATURE_HEADER, Event, file_data, new_event, sign, verify

__all__ = [
    "EVENTS",
    "SIGNATURE_HEADER",
    "Event",
    "EventBus",
    "Schedule",
    "emit",
    "events_lifecycle",
    "file_data",
    "new_event",
    "sign",
    "verify",
]
