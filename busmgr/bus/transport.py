"""Make the manager's bus connection survive a full socket send buffer.

dbus-fast 5.x writes to its non-blocking socket and treats ``EAGAIN`` as a fatal error: when a
burst of signals (say, one event starting 200 jobs, with a client listening to every signal)
fills the kernel's send buffer before the bus daemon drains it, the connection is closed and
the manager loses the bus. :func:`harden` wraps the connection's socket so that a send that
would block sends nothing instead; the writer then sees an incomplete message and, as it does
for a short write, waits until the socket is writable again.

Invariant: messages are never dropped or reordered; only the moment they are written changes.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any

from dbus_fast.aio import MessageBus

SEND_BUFFER = 4 * 1024 * 1024


class _PatientSocket:
    """A socket whose ``send``/``sendmsg`` return 0 where the real one raises EAGAIN."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def send(self, data: Any, *args: Any) -> int:
        try:
            return self._sock.send(data, *args)
        except BlockingIOError:
            return 0

    def sendmsg(self, buffers: Any, *args: Any) -> int:
        # Only reached with unix fds attached, which busmgr never sends; a would-block here
        # still must not kill the connection.
        try:
            return self._sock.sendmsg(buffers, *args)
        except BlockingIOError:
            return 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def harden(bus: MessageBus) -> None:
    """Apply the fix to a connected bus (a no-op if dbus-fast's internals have changed)."""
    writer = getattr(bus, "_writer", None)
    sock = getattr(writer, "sock", None)
    if writer is None or not isinstance(sock, socket.socket):
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
    writer.sock = _PatientSocket(sock)
