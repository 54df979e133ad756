"""The cyclic garbage collector's pace, set for a server that allocates per request.

CPython collects its youngest generation after every 700 net allocations of
container objects. A small upload makes a few dozen, and the youngest generation
holds the objects of every request in flight (64 at a time in the small-upload
benchmark), so each collection walks them all and promotes them, and the older
generations' collections follow, the oldest walking everything start-up built:
~55 us of collection per 5 KB upload, timed with `gc.callbacks` (benchmarks/RESULTS.md,
history, 2026-12-02). Once the service is up, what start-up built (modules, the app,
its routes) is frozen out of the collections, and the youngest generation is collected
every 5,000 allocations: ~17 us. Objects freed by reference counting, nearly all, are
freed at once as before; only garbage in cycles waits longer, for at most those 5,000
allocations.
"""

from __future__ import annotations

import gc

YOUNGEST_THRESHOLD = 5000


def pace_collector() -> None:
    """Call once the service is set up: freeze what exists (its garbage collected first),
    collect the young less often."""
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNGEST_THRESHOLD, middle, oldest)
