"""The manager's bus connection: sends corked per loop turn, and patient when the buffer is full.

dbus-fast 5.x writes each message with its own ``send`` on its non-blocking socket and treats
``EAGAIN`` as a fatal error. Both hurt a manager that emits bursts of signals (one event
starting 200 jobs sends over a thousand messages): one system call, and one wake-up of the bus
daemon, per message; and when the kernel's send buffer fills before the daemon drains it (a
client listening to every signal slows the daemon down), the connection is closed and the
manager loses the bus. :func:`harden` wraps the connection's socket in a :class:`_CorkedSocket`:
it accepts every byte at once (so dbus-fast's writer never waits and never sees EAGAIN) and
writes what it took on the next loop turn, in as few ``send`` calls as the kernel allows,
waiting for the socket to become writable when the buffer is full.

Invariant: bytes are never dropped or reordered while the connection lives; only the moment
they are written changes (at most one loop turn later, or once the daemon has read).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from typing import Any

from dbus_fast.aio import MessageBus

SEND_BUFFER = 4 * 1024 * 1024


class _CorkedSocket:
    """A socket whose ``send`` takes everything now and writes it at the end of the loop turn.

    Invariants: ``_out`` holds the bytes taken and not yet written, in order; a flush is
    scheduled (``_scheduled``) or the socket is watched for writability (``_watch_fd``, a
    duplicate of its descriptor, so that the writer dbus-fast registers on the original is
    left alone) whenever ``_out`` is not empty. A send error other than EAGAIN means the
    connection is gone: what is left is dropped and dbus-fast's reader reports the loss.
    """

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        self._sock = sock
        self._loop = loop
        self._out = bytearray()
        self._scheduled = False
        self._watch_fd = -1

    def send(self, data: Any, *args: Any) -> int:
        self._out += data
        if not self._scheduled and self._watch_fd < 0:
            self._scheduled = True
            self._loop.call_soon(self._flush)
        return len(data)

    def sendmsg(self, buffers: Any, *args: Any) -> int:
        # Only reached with unix fds attached, which busmgr never sends. Bytes taken before
        # must go first: until they are written, nothing is sent (dbus-fast tries again).
        if self._out:
            return 0
        try:
            return self._sock.sendmsg(buffers, *args)
        except BlockingIOError:
            return 0

    def pending(self) -> int:
        """Bytes taken and not written yet."""
        return len(self._out)

    def _flush(self) -> None:
        self._scheduled = False
        while self._out:
            try:
                sent = self._sock.send(self._out)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self._out.clear()  # the connection is gone; the reader will say so
                return
            if sent == 0:
                self._watch_fd = os.dup(self._sock.fileno())
                self._loop.add_writer(self._watch_fd, self._writable)
                return
            del self._out[:sent]

    def _writable(self) -> None:
        self._loop.remove_writer(self._watch_fd)
        os.close(self._watch_fd)
        self._watch_fd = -1
        self._flush()

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
    writer.sock = _CorkedSocket(sock, asyncio.get_running_loop())
