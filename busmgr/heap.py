"""The manager's heap and the cyclic garbage collector: what is loaded is frozen.

The job classes, the jobs and their bus objects (most of the manager's objects) live as long as
the configuration. CPython's collector scans every tracked object in a full collection, and a
burst (one event starting thousands of jobs) triggers several: with 5,000 jobs loaded they took
3 s of a 27 s start, one of them holding the loop for 0.8 s. :func:`freeze_heap` runs after
every load (start-up, reload); nothing else here touches the collector.
"""

from __future__ import annotations

import gc

__all__ = ["GC_THRESHOLDS", "freeze_heap"]

# The collector's thresholds (CPython's default: 700, 10, 10): a burst allocates a lot, and
# most of it is freed by reference counting; fewer young collections promote less to the
# old generations, whose full scans are what cost (see freeze_heap).
GC_THRESHOLDS = (10_000, 20, 20)


def freeze_heap() -> None:
    """Keep what the manager loaded out of the cyclic garbage collector's scans.

    ``gc.freeze`` moves the objects alive now into a generation that is never scanned (they
    are still freed by reference counting); a reload unfreezes them first, collects what the
    old configuration left in cycles, and freezes what is left."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
