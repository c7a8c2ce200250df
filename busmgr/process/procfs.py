"""Processes as ``/proc`` shows them, and signalling one process or one process group.

Pure look-ups and ``kill``: nothing here forks, waits or keeps state. A process that is gone
is never an error: the functions answer "no such process" with an empty value or False.
"""

from __future__ import annotations

import contextlib
import os
import time

__all__ = [
    "boot_ticks",
    "child_pids",
    "kill_pid",
    "kill_process_group",
    "parent_pid",
    "proc_start_time",
    "proc_state",
    "session_processes",
]


def kill_process_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to process group ``pgid``; False if the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def kill_pid(pid: int, sig: int) -> bool:
    """Send ``sig`` to one process; False if it no longer exists."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def session_processes(sid: int) -> list[int]:
    """Every live (or zombie) process whose session id is ``sid``, in pid order.

    The fallback to find a job's processes without a cgroup: each job process starts a session
    of its own, and its descendants stay in it unless they call ``setsid`` themselves (a daemon
    that does so escapes; that is what cgroups are for).
    """
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            pid = int(entry)
            with contextlib.suppress(OSError):  # gone meanwhile
                if os.getsid(pid) == sid:
                    found.append(pid)
    found.sort()
    return found


def child_pids(ppid: int) -> list[int]:
    """Every live or zombie process whose parent is ``ppid``, sorted."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields and int(fields[1]) == ppid:
                found.append(int(entry))
    found.sort()
    return found


def parent_pid(pid: int) -> int:
    """The parent of ``pid`` (0 if it is gone)."""
    fields = _stat_fields(pid)
    return int(fields[1]) if fields else 0


def proc_state(pid: int) -> str:
    """The one-letter state of ``pid`` (``R``, ``S``, ``T`` stopped, ``Z`` zombie...); ``""``
    if it is gone."""
    fields = _stat_fields(pid)
    return fields[0] if fields else ""


def _stat_fields(pid: int) -> list[str]:
    """``/proc/PID/stat`` after the command name: ``[state, ppid, pgrp, session, ...]``."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read()
    except OSError:
        return []
    return text[text.rindex(b")") + 2 :].decode().split()


def proc_age() -> float:
    """Seconds since this process started (exec'd), to the clock tick (10 ms)."""
    ticks = proc_start_time(os.getpid())
    return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK"))


_TICK_NS = 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def boot_ticks() -> int:
    """Now, in the clock ticks since boot that :func:`proc_start_time` counts in (the kernel
    takes a new process's start time from the same clock, rounded down alike). A process
    created between two readings that agree started in that tick: its start time is known
    without reading ``/proc/PID/stat``, which waits while the new program maps its
    libraries."""
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME) // _TICK_NS


def proc_start_time(pid: int) -> int:
    """When ``pid`` started, in clock ticks since boot (``/proc/PID/stat`` field 22); 0 if it
    is gone. With the pid, it names one process for good: a reused pid has a later start."""
    fields = _stat_fields(pid)
    return int(fields[19]) if len(fields) > 19 else 0
