"""``BUSMGR_LOOP_DEBUG=SECONDS`` (a debug option, off by default; the tests use 0.1): every
callback that holds the manager's event loop longer than SECONDS is logged as ``Executing
<callback> took N seconds``.

What counts is the time the callback kept the loop from serving anyone *by its own doing*:
its wall time less the time the thread waited for a CPU meanwhile (``run_delay`` in
``/proc/thread-self/schedstat``). On a loaded machine the kernel may leave a runnable manager
off the CPU for a tenth of a second; that is the machine's state, not a callback blocking the
loop, and asyncio's own debug mode (wall time only) reports it all the same. A callback that
computes for long, or waits in a system call (a blocking read, an fsync, a lock in the
kernel), is reported: those are the bugs this option exists to find.

Invariant: off by default, and then costs nothing (nothing is wrapped).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable

log = logging.getLogger("busmgr")

__all__ = ["watch"]

_SCHEDSTAT = "/proc/thread-self/schedstat"


def _run_delay_reader() -> Callable[[], int]:
    """A function giving the calling thread's run-queue wait so far in nanoseconds (0 where
    the kernel keeps no such count)."""
    try:
        fd = os.open(_SCHEDSTAT, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return lambda: 0

    def run_delay() -> int:
        try:
            return int(os.pread(fd, 64, 0).split()[1])
        except (OSError, IndexError, ValueError):
            return 0

    return run_delay


def _log(text: str) -> None:
    log.warning("%s", text)


def watch(limit: float, report: Callable[[str], None] = _log) -> Callable[[], None]:
    """Report every callback of the process's event loops that holds its loop for ``limit``
    seconds or more (not counting the time it waited for a CPU) to ``report`` (default: the
    ``busmgr`` log, as a warning); returns the undo."""
    run_delay = _run_delay_reader()
    original = asyncio.events.Handle._run

    def _run(handle: asyncio.Handle) -> None:
        began, waited = time.monotonic(), run_delay()
        try:
            original(handle)
        finally:
            wall = time.monotonic() - began
            if wall >= limit:
                held = wall - (run_delay() - waited) / 1e9
                if held >= limit:
                    with contextlib.suppress(Exception):
                        report(f"Executing {handle!r} took {held:.3f} seconds")

    def unwatch() -> None:
        asyncio.events.Handle._run = original  # type: ignore[method-assign]

    asyncio.events.Handle._run = _run  # type: ignore[method-assign]
    return unwatch
