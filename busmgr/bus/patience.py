"""How long a caller waits for an activation, and how long busmgr lets one take.

A client's call to a name that has no owner is held by the bus daemon while the name is being
activated. Two clocks run out on it: the daemon's ``service_start_timeout`` (dbus-daemon: 25 s
built in; Debian's ``session.conf`` says 120 s; ``<limit name="service_start_timeout">`` in
milliseconds), after which the daemon fails every held call with its own ``TimedOut`` and no
reason, and the caller's own method call timeout (25 s in libdbus, GDBus and sd-bus;
dbus-broker has no activation timeout at all, so only this one). busmgr's answer must come
first: :func:`patience` is the time it gives an activation before it fails the request itself,
with its reason, while the job goes on following its own ``ready timeout``.

:func:`service_start_timeout` reads the daemon's limit from its configuration files as the
daemon does: in document order, an ``<include>`` at its place (relative to the including file,
``ignore_missing``), an ``<includedir>`` as its ``*.conf`` files in name order, the last
``<limit>`` winning. A file that cannot be read or parsed counts as saying nothing (the daemon
would refuse it, and the bus would not be running).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from xml.parsers import expat

__all__ = ["CALLER_TIMEOUT", "DAEMON_DEFAULT", "patience", "service_start_timeout"]

#: dbus-daemon's ``service_start_timeout`` when its configuration sets none (bus/config-parser.c).
DAEMON_DEFAULT = 25.0
#: The method call timeout of libdbus, GDBus and sd-bus clients, seconds.
CALLER_TIMEOUT = 25.0
#: The part of the time left to the caller that busmgr keeps for its answer to travel: its
#: share of the timeout, and at least :data:`MIN_MARGIN` seconds.
MARGIN = 0.1
MIN_MARGIN = 0.5
MAX_DEPTH = 16


def patience(bus_timeout: float | None) -> float:
    """Seconds busmgr gives an activation before it fails the request itself: a margin before
    the earlier of the bus's ``bus_timeout`` (None: the daemon default, or a bus without one)
    and the callers' own timeout."""
    limit = min(DAEMON_DEFAULT if bus_timeout is None else bus_timeout, CALLER_TIMEOUT)
    return max(limit - max(MIN_MARGIN, limit * MARGIN), limit / 2)


def service_start_timeout(config: Path) -> float | None:
    """The ``service_start_timeout`` (seconds) the daemon reading ``config`` uses, or None
    when its files set none."""
    found: list[float] = []
    _read(config, found, 0)
    return found[-1] if found else None


def _read(path: Path, found: list[float], depth: int) -> None:
    """Append every ``service_start_timeout`` of ``path`` and its includes to ``found``."""
    if depth > MAX_DEPTH:
        return
    try:
        data = path.read_bytes()
    except OSError:
        return  # a missing include the daemon ignored, or a file it could read and we cannot
    parser = expat.ParserCreate()
    stack: list[tuple[str, dict[str, str]]] = []
    text: list[str] = []

    def start(name: str, attrs: dict[str, str]) -> None:
        stack.append((name, attrs))
        text.clear()

    def chars(data: str) -> None:
        text.append(data)

    def end(name: str) -> None:
        _, attrs = stack.pop()
        value = "".join(text).strip()
        text.clear()
        if name == "limit" and attrs.get("name") == "service_start_timeout":
            with contextlib.suppress(ValueError):
                found.append(int(value) / 1000)
        elif name == "include" and value and attrs.get("if_selinux_enabled") != "yes":
            _read(_locate(path, value), found, depth + 1)
        elif name == "includedir" and value:
            directory = _locate(path, value)
            with contextlib.suppress(OSError):
                for entry in sorted(directory.glob("*.conf")):
                    _read(entry, found, depth + 1)

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chars
    with contextlib.suppress(expat.ExpatError):
        parser.Parse(data, True)


def _locate(base: Path, name: str) -> Path:
    target = Path(name)
    return target if target.is_absolute() else base.parent / target
