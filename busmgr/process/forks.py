"""Following forks: the kernel's process events connector (netlink), read through the loop.

Used by ``expect fork|daemon`` to know each descendant's generation exactly (see
:mod:`busmgr.readiness.expect`). Unavailable without ``CAP_NET_ADMIN``, outside the initial pid
namespace, or on a kernel without ``CONFIG_PROC_EVENTS``; callers then fall back to watching
which processes survive.
"""

from __future__ import annotations

import asyncio
import errno as errno_mod
import logging
import socket
import struct
from collections.abc import Callable

__all__ = ["ForkEvents"]

log = logging.getLogger("busmgr")

_NETLINK_CONNECTOR = 11
_CN_IDX_PROC = 1
_CN_VAL_PROC = 1
_PROC_CN_MCAST_LISTEN = 1
_PROC_EVENT_FORK = 0x00000001
_NLMSG_DONE = 3
_NLMSG_HDR = struct.Struct("=IHHII")
_CN_MSG = struct.Struct("=IIIIHH")
_PROC_EVENT = struct.Struct("=IIQ")
_FORK_DATA = struct.Struct("=IIII")


def _subscribed(sock: socket.socket) -> bool:
    """Whether the acknowledgement of a subscription (event 0, error 0) is queued on ``sock``."""
    for _ in range(256):  # other events may already be queued ahead of it
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return False
        body = _NLMSG_HDR.size + _CN_MSG.size
        if len(data) >= body + _PROC_EVENT.size + 4:
            what = _PROC_EVENT.unpack_from(data, body)[0]
            if what == 0:
                return struct.unpack_from("=I", data, body + _PROC_EVENT.size)[0] == 0
    return False


class ForkEvents:
    """Every ``fork`` on the machine, as the kernel's process events connector reports it.

    ``ForkEvents.open(callback)`` returns None where the connector is unavailable: it needs
    ``CAP_NET_ADMIN`` and the initial pid namespace (the kernel ignores the subscription of a
    process in any other, so busmgr as a container's PID 1 never gets events), or a kernel
    built without ``CONFIG_PROC_EVENTS``. The callback gets ``(parent, child)`` process ids
    (thread creation is filtered out) for every process fork, in the order they happened.
    :meth:`drain` reads what is queued without waiting, so a caller that just reaped a process
    sees every fork that happened before that exit (the kernel queues the fork event during
    ``fork`` itself, before the parent can exit).
    """

    def __init__(self, sock: socket.socket, callback: Callable[[int, int], None]) -> None:
        self._sock = sock
        self._callback = callback
        self._loop: asyncio.AbstractEventLoop | None = None
        self.broken = False  # set when reading failed for good (the socket is closed then)

    @classmethod
    def open(
        cls, loop: asyncio.AbstractEventLoop, callback: Callable[[int, int], None]
    ) -> ForkEvents | None:
        """Subscribe and start reading through ``loop``; None where it is not possible."""
        if not hasattr(socket, "AF_NETLINK"):
            return None
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_CONNECTOR)
        except OSError:
            return None
        try:
            sock.setblocking(False)
            sock.bind((0, _CN_IDX_PROC))
            op = struct.pack("=I", _PROC_CN_MCAST_LISTEN)
            cn = _CN_MSG.pack(_CN_IDX_PROC, _CN_VAL_PROC, 0, 0, len(op), 0) + op
            sock.send(_NLMSG_HDR.pack(_NLMSG_HDR.size + len(cn), _NLMSG_DONE, 0, 0, 0) + cn)
            # The kernel handles the request during send() and acknowledges it with an event
            # of type 0 carrying the error; from another pid or user namespace it ignores the
            # request without an answer. No answer (or an error): no events.
            if not _subscribed(sock):
                sock.close()
                return None
        except OSError:
            sock.close()
            return None
        events = cls(sock, callback)
        events._loop = loop
        loop.add_reader(sock.fileno(), events.drain)
        return events

    def drain(self) -> None:
        """Hand every queued fork to the callback; never blocks. A lost message (the socket
        overflowed) is lost: the callers' other rules still apply."""
        while self._sock.fileno() >= 0:
            try:
                data = self._sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno == errno_mod.ENOBUFS:
                    continue  # events were dropped; the next recv has the rest
                # Anything else will not go away by reading again: stop following forks
                # (callers fall back to the survival rule) instead of spinning on it.
                log.warning("process events connector failed (%s): no longer following forks", e)
                self.close()
                self.broken = True
                return
            offset = 0
            while offset + _NLMSG_HDR.size <= len(data):
                length = _NLMSG_HDR.unpack_from(data, offset)[0]
                if length < _NLMSG_HDR.size:
                    break
                body = offset + _NLMSG_HDR.size + _CN_MSG.size
                if body + _PROC_EVENT.size + _FORK_DATA.size <= offset + length:
                    what = _PROC_EVENT.unpack_from(data, body)[0]
                    if what == _PROC_EVENT_FORK:
                        _pp, ptgid, cpid, ctgid = _FORK_DATA.unpack_from(
                            data, body + _PROC_EVENT.size
                        )
                        if cpid == ctgid:
                            self._callback(ptgid, ctgid)
                offset += (length + 3) & ~3

    def close(self) -> None:
        """Unsubscribe (closing the socket is enough). Idempotent."""
        if self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._loop = None
        self._sock.close()
