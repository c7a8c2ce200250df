"""Step timestamps of the activation path: a debug option to find where the time goes.

Off by default. ``BUSMGR_TRACE=1`` in the manager's environment turns it on (the runtime calls
:func:`enable` once, before the loop runs). While it is off, every call site costs one test of
a module attribute and nothing else::

    if trace.ON:
        trace.step(bus_name, "spawned")

Model: an activation is traced from its request (:func:`begin`, keyed by the bus name) to its
outcome (:func:`end`). Each :func:`step` in between appends ``(what, monotonic ns)``; a step
for a key no activation began is ignored, so jobs started any other way are never traced. At
the end one log line gives each step's offset from the request, in milliseconds::

    busmgr: trace org.bench.Echo: request 0 | starting 0.08 | spawn 0.12 | spawned 0.31 |
    running 4.4 | owned 4.0 ... | done 4.5 ms: ok

A key is traced once at a time: a request for a key already traced is a step of the
activation under way. Nothing here does I/O but the final log line.
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger("busmgr")

__all__ = ["ON", "begin", "enable", "end", "step"]

#: Whether tracing is on; call sites test it before calling anything here.
ON = False

_open: dict[str, list[tuple[str, int]]] = {}


def enable() -> None:
    """Turn tracing on (the runtime does, when ``BUSMGR_TRACE`` is set)."""
    global ON
    ON = True
    log.info("tracing activations (BUSMGR_TRACE): one line per activation")


def begin(key: str, what: str = "request") -> bool:
    """An activation of ``key`` begins with ``what``; True if this call began it (the caller
    then ends it), False if one was being traced (``what`` is then one of its steps)."""
    steps = _open.get(key)
    if steps is not None:
        steps.append((what, time.monotonic_ns()))
        return False
    _open[key] = [(what, time.monotonic_ns())]
    return True


def step(key: str, what: str) -> None:
    """``what`` happened in the activation of ``key`` (ignored if none is traced, and if it is
    the step recorded last: a state reported twice is one step)."""
    steps = _open.get(key)
    if steps is not None and steps[-1][0] != what:
        steps.append((what, time.monotonic_ns()))


def end(key: str, outcome: str) -> None:
    """The activation of ``key`` is over: log its steps (offsets in ms) and forget it."""
    steps = _open.pop(key, None)
    if steps is None:
        return
    steps.append(("done", time.monotonic_ns()))
    t0 = steps[0][1]
    text = " | ".join(f"{what} {(t - t0) / 1e6:.3g}" for what, t in steps)
    log.info("trace %s: %s ms: %s", key, text, outcome)
