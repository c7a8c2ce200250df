"""The two kernel interfaces the bridges use, through ``ctypes``: inotify and timerfd.

Both are descriptors the event loop watches with ``add_reader``; nothing here starts a thread,
forks or blocks (every descriptor is non-blocking and close-on-exec).

Why not a library: the small inotify libraries made for asyncio (``inotify_simple``,
``asyncinotify``) find libc with ``ctypes.util.find_library("c")``, which on Linux runs
``/sbin/ldconfig -p`` as a child process (seen with ``strace``: one ``execve`` of ldconfig per
``INotify()``). In the manager that child would be reaped by the manager's own reaper (it is a
child subreaper) behind ``subprocess``'s back, and the loop would wait for it (1.3-4.9 ms
measured). ``ctypes.CDLL(None)`` is libc already mapped into the process (0.04 ms), and the
structures are two ``struct`` formats.

* :class:`Inotify`: ``inotify_init1``, ``inotify_add_watch``, ``inotify_rm_watch``, and
  :meth:`Inotify.read` parsing every ``struct inotify_event`` available now.
* :class:`WallTimer`: a ``CLOCK_REALTIME`` timerfd armed at an absolute wall-clock time with
  ``TFD_TIMER_CANCEL_ON_SET``: it fires at that time even across a suspend or a clock step (a
  monotonic loop timer would be late by the time suspended), and it also wakes its reader when
  someone sets the clock, so a calendar schedule can be recomputed.
"""

from __future__ import annotations

import ctypes
import errno
import math
import os
import struct
from dataclasses import dataclass

__all__ = [
    "IN_ATTRIB",
    "IN_CLOSE_WRITE",
    "IN_CREATE",
    "IN_DELETE",
    "IN_DELETE_SELF",
    "IN_IGNORED",
    "IN_MOVED_FROM",
    "IN_MOVED_TO",
    "IN_MOVE_SELF",
    "IN_ONLYDIR",
    "IN_Q_OVERFLOW",
    "IN_UNMOUNT",
    "Inotify",
    "InotifyEvent",
    "WallTimer",
]

_libc = ctypes.CDLL(None, use_errno=True)

# <sys/inotify.h>
IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_UNMOUNT = 0x00002000
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of NUL-padded name
_READ_SIZE = 64 * 1024


def _check(result: int, what: str, path: str | None = None) -> int:
    """``result``, or an ``OSError`` from errno when it is negative (the C convention)."""
    if result < 0:
        code = ctypes.get_errno()
        if path is not None:
            raise OSError(code, os.strerror(code), path)
        raise OSError(code, f"{what}: {os.strerror(code)}")
    return result


@dataclass(frozen=True, slots=True)
class InotifyEvent:
    """One ``struct inotify_event``: ``name`` is the entry's name in the watched directory
    as bytes (empty for an event about the directory itself)."""

    wd: int
    mask: int
    cookie: int
    name: bytes


class Inotify:
    """One inotify instance. Invariant: ``fd`` is open until :meth:`close`."""

    def __init__(self) -> None:
        self.fd = _check(_libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC), "inotify_init1")

    def add_watch(self, path: str, mask: int) -> int:
        """Watch ``path`` for ``mask`` (replacing the mask of an existing watch of the same
        inode, which keeps its descriptor); the watch descriptor. Raises ``OSError``."""
        raw = os.fsencode(path)
        return _check(_libc.inotify_add_watch(self.fd, raw, ctypes.c_uint32(mask)), path, path)

    def rm_watch(self, wd: int) -> None:
        """Stop a watch; one already gone (its directory was deleted) is not an error."""
        if _libc.inotify_rm_watch(self.fd, wd) < 0 and ctypes.get_errno() != errno.EINVAL:
            code = ctypes.get_errno()
            raise OSError(code, f"inotify_rm_watch: {os.strerror(code)}")

    def read(self) -> list[InotifyEvent]:
        """The events waiting now (at most one read of 64 KiB; empty when none)."""
        try:
            data = os.read(self.fd, _READ_SIZE)
        except BlockingIOError:
            return []
        events = []
        pos = 0
        while pos + _EVENT.size <= len(data):
            wd, mask, cookie, length = _EVENT.unpack_from(data, pos)
            pos += _EVENT.size
            name = data[pos : pos + length].rstrip(b"\0")
            pos += length
            events.append(InotifyEvent(wd, mask, cookie, name))
        return events

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# <sys/timerfd.h>
_CLOCK_REALTIME = 0
_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = os.O_CLOEXEC
_TFD_TIMER_ABSTIME = 1
_TFD_TIMER_CANCEL_ON_SET = 2


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class WallTimer:
    """A one-shot ``CLOCK_REALTIME`` timerfd (see the module docstring).

    :meth:`set` arms it for an absolute time in seconds since the epoch (a time already past
    fires at once); :meth:`clear` disarms it. When ``fd`` is readable, :meth:`take` says what
    happened: ``"due"`` (the time came), ``"clock-set"`` (the clock was set: recompute) or
    None (nothing, a spurious wake-up).
    """

    def __init__(self) -> None:
        flags = _TFD_NONBLOCK | _TFD_CLOEXEC
        self.fd = _check(_libc.timerfd_create(_CLOCK_REALTIME, flags), "timerfd_create")

    def set(self, when: float) -> None:
        seconds = math.floor(when)
        nanos = min(int((when - seconds) * 1e9), 999_999_999)
        if seconds <= 0 and nanos == 0:
            nanos = 1  # an all-zero value would disarm the timer instead of firing at once
        spec = _Itimerspec(_Timespec(0, 0), _Timespec(seconds, nanos))
        flags = _TFD_TIMER_ABSTIME | _TFD_TIMER_CANCEL_ON_SET
        _check(_libc.timerfd_settime(self.fd, flags, ctypes.byref(spec), None), "timerfd_settime")

    def clear(self) -> None:
        spec = _Itimerspec(_Timespec(0, 0), _Timespec(0, 0))
        _check(_libc.timerfd_settime(self.fd, 0, ctypes.byref(spec), None), "timerfd_settime")

    def take(self) -> str | None:
        try:
            os.read(self.fd, 8)
        except BlockingIOError:
            return None
        except OSError as err:
            if err.errno == errno.ECANCELED:
                return "clock-set"
            raise
        return "due"

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
