"""The controller connection: peer-to-peer D-Bus between busmgr and the dbus-broker it launched.

dbus-broker takes its orders from one already connected socket (``--controller FD``, one end of
a ``socketpair``). On it the broker is the D-Bus *server* and the launcher the client: SASL
``EXTERNAL``, ``NEGOTIATE_UNIX_FD``, ``BEGIN`` and then messages, but no ``Hello``, no bus
daemon, no sender or destination fields. :class:`ControllerConnection` is that client.

Why not dbus-fast's ``MessageBus``: it connects to an address itself (it cannot take a
connected socket), always sends ``Hello`` and waits for a unique name, and answers every method
call nobody handles with ``UnknownMethod``. On the controller socket each of those is a
protocol violation, and the broker answers *any* protocol violation by shutting the whole bus
down (exit 0). Subclassing would mean overriding its private connect, authenticate and dispatch
paths, which change between releases. So this module keeps dbus-fast for what it does well and
stable — :class:`dbus_fast.Message` and its marshaller for every byte we send, its
unmarshaller for every byte we read — and owns the little that differs: the socket, the
handshake, serials, replies, and unix fds (``AddListener`` passes the listening socket).

Invariants (the broker's rules, kept exactly):

* we never send a signal, and never a message with a sender or destination;
* every reply or error we send answers a method call the broker made (its only one is
  ``ReloadConfig``), exactly once, and only when the call expects a reply: the ``on_call``
  handler builds it, and the connection never invents an error of its own (an unhandled call
  stays unanswered and is reported, never answered with ``UnknownMethod``);
* serials of our calls are unique and never 0;
* when the broker closes the connection (it exits), every call still waiting fails with
  :class:`ControllerError` and ``on_closed`` is called once.

Nothing here blocks the loop: the socket is non-blocking, reads happen when it is readable,
and writes that would block wait for it to be writable, in order.
"""

from __future__ import annotations

import array
import asyncio
import collections
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable

from dbus_fast import Message, MessageFlag, MessageType
from dbus_fast._private.unmarshaller import Unmarshaller

log = logging.getLogger("busmgr")

__all__ = ["ControllerConnection", "ControllerError"]

#: Seconds the broker has to answer the SASL handshake.
AUTH_TIMEOUT = 10.0
_MAX_SERIAL = 0xFFFFFFFF

SignalHandler = Callable[[Message], None]
CallHandler = Callable[[Message], Awaitable[Message | None]]


class ControllerError(Exception):
    """The controller connection failed, or the broker refused a call: one line."""

    def __init__(self, message: str, error_name: str = "") -> None:
        super().__init__(message)
        self.error_name = error_name


class ControllerConnection:
    """The launcher's side of the controller socket.

    ``sock`` is our end of the socketpair; this object owns it from now on. ``on_closed`` is
    called once with the reason when the broker goes away without :meth:`close` being called.
    What the broker sends before :meth:`attach` gave its handlers is kept, in order, and
    handed to them then: nothing it says is lost while the manager is still starting.
    """

    def __init__(
        self, sock: socket.socket, *, on_closed: Callable[[str], None] | None = None
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._sock = sock
        sock.setblocking(False)
        self._on_signal: SignalHandler | None = None
        self._on_call: CallHandler | None = None
        self._early: list[Message] = []
        self.on_closed = on_closed
        self._serial = 0
        self._replies: dict[int, asyncio.Future[Message]] = {}
        self._out: collections.deque[tuple[memoryview, list[int]]] = collections.deque()
        self._writing = False
        self._reading = False
        self._closed = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._unmarshaller: Unmarshaller | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    def attach(self, on_signal: SignalHandler, on_call: CallHandler) -> None:
        """From now on ``on_signal`` gets every signal from the broker and ``on_call`` every
        method call, returning the reply to send (``None``: none, for a call that expects
        none). Messages that arrived before are handed over first, in order."""
        self._on_signal, self._on_call = on_signal, on_call
        early, self._early = self._early, []
        for msg in early:
            self._dispatch(msg)

    # ================================================================ handshake
    async def authenticate(self, timeout: float = AUTH_TIMEOUT) -> None:
        """SASL ``EXTERNAL`` with unix fd passing, then ``BEGIN``; start reading messages.

        Raises :class:`ControllerError` naming the step the broker did not take."""
        try:
            await asyncio.wait_for(self._handshake(), timeout)
        except TimeoutError:
            raise ControllerError(
                f"dbus-broker did not answer the handshake in {timeout:g}s"
            ) from None
        except OSError as err:
            raise ControllerError(f"controller handshake: {err.strerror or err}") from None
        self._unmarshaller = Unmarshaller(None, self._sock, True)
        self._loop.add_reader(self._sock.fileno(), self._readable)
        self._reading = True

    async def _handshake(self) -> None:
        uid = str(os.getuid()).encode().hex().encode()
        await self._loop.sock_sendall(self._sock, b"\0AUTH EXTERNAL " + uid + b"\r\n")
        line = await self._line()
        if not line.startswith(b"OK "):
            raise ControllerError(f"dbus-broker refused EXTERNAL authentication: {line!r}")
        await self._loop.sock_sendall(self._sock, b"NEGOTIATE_UNIX_FD\r\n")
        line = await self._line()
        if line != b"AGREE_UNIX_FD":
            raise ControllerError(f"dbus-broker refused unix fd passing: {line!r}")
        await self._loop.sock_sendall(self._sock, b"BEGIN\r\n")

    async def _line(self) -> bytes:
        """One ``\\r\\n``-terminated handshake line. Read a byte at a time: the broker sends
        nothing after a handshake reply until we speak again, so nothing is over-read."""
        buf = b""
        while not buf.endswith(b"\r\n"):
            chunk = await self._loop.sock_recv(self._sock, 1)
            if not chunk:
                raise ControllerError("dbus-broker closed the controller during the handshake")
            buf += chunk
            if len(buf) > 512:
                raise ControllerError("dbus-broker sent an overlong handshake line")
        return buf[:-2]

    # ================================================================ calls
    def _next_serial(self) -> int:
        self._serial = self._serial + 1 if self._serial < _MAX_SERIAL else 1
        return self._serial

    async def call(
        self,
        path: str,
        interface: str,
        member: str,
        signature: str = "",
        body: list[object] | None = None,
        *,
        unix_fds: tuple[int, ...] = (),
    ) -> Message:
        """Call ``member`` on the broker and return its (method return) reply.

        ``unix_fds`` travel with the message (a ``h`` argument is an index into them); they
        are duplicated into the broker when the message is written, and stay ours to close.
        Raises :class:`ControllerError` with the broker's error name for an error reply, or
        when the connection is gone."""
        if self._closed:
            raise ControllerError(f"{member}: the controller connection is closed")
        serial = self._next_serial()
        msg = Message(
            path=path,
            interface=interface,
            member=member,
            signature=signature,
            body=body or [],
            unix_fds=list(unix_fds),
            serial=serial,
        )
        reply: asyncio.Future[Message] = self._loop.create_future()
        self._replies[serial] = reply
        self._send(msg)
        try:
            answer = await reply
        finally:
            self._replies.pop(serial, None)
        if answer.message_type is MessageType.ERROR:
            text = answer.body[0] if answer.body and isinstance(answer.body[0], str) else ""
            raise ControllerError(
                f"{member} {path}: {answer.error_name}" + (f": {text}" if text else ""),
                answer.error_name or "",
            )
        return answer

    # ================================================================ writing
    def _send(self, msg: Message) -> None:
        data = memoryview(bytes(msg._marshall(True)))
        self._out.append((data, list(msg.unix_fds)))
        if not self._writing:
            self._flush()

    def _flush(self) -> None:
        """Write what is queued, in order, until the socket would block."""
        while self._out:
            data, fds = self._out[0]
            try:
                if fds:
                    ancillary = [
                        (socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())
                    ]
                    sent = self._sock.sendmsg([data], ancillary)
                else:
                    sent = self._sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError as err:
                self._lost(f"writing to the controller: {err.strerror or err}")
                return
            if sent == len(data):
                self._out.popleft()
                continue
            self._out[0] = (data[sent:], [])  # the fds went with the first byte
            if not self._writing:
                self._writing = True
                self._loop.add_writer(self._sock.fileno(), self._writable)
            return
        if self._writing:
            self._writing = False
            self._loop.remove_writer(self._sock.fileno())

    def _writable(self) -> None:
        self._flush()

    # ================================================================ reading
    def _readable(self) -> None:
        unmarshaller = self._unmarshaller
        if unmarshaller is None:
            return
        while not self._closed:
            try:
                msg = unmarshaller.unmarshall()
            except EOFError:
                self._lost("dbus-broker closed the controller connection")
                return
            except OSError as err:
                self._lost(f"reading from the controller: {err.strerror or err}")
                return
            except Exception as err:  # the broker sent bytes that are not D-Bus
                self._lost(f"dbus-broker sent an unreadable message: {err}")
                return
            if msg is None:
                return
            for fd in msg.unix_fds:  # the broker sends none; never leak one if it did
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._dispatch(msg)

    def _dispatch(self, msg: Message) -> None:
        kind = msg.message_type
        if kind in (MessageType.METHOD_RETURN, MessageType.ERROR):
            waiter = self._replies.get(msg.reply_serial)
            if waiter is not None and not waiter.done():
                waiter.set_result(msg)
            else:
                log.warning("dbus-broker answered a call not made (%d)", msg.reply_serial)
        elif self._on_signal is None:
            self._early.append(msg)
        elif kind is MessageType.SIGNAL:
            self._on_signal(msg)
        elif kind is MessageType.METHOD_CALL:
            task = self._loop.create_task(self._answer(msg))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _answer(self, call: Message) -> None:
        """Run ``on_call`` and send the reply it built (exactly one, if one is expected)."""
        if self._on_call is None:  # attach() hands early calls over; never reached
            return
        reply = await self._on_call(call)
        if reply is None or call.flags & MessageFlag.NO_REPLY_EXPECTED or self._closed:
            return
        if (
            reply.reply_serial != call.serial
            or reply.message_type not in (MessageType.METHOD_RETURN, MessageType.ERROR)
            or reply.destination
            or reply.sender
        ):
            # A bug of ours; sending it would end the bus. Never send it.
            raise ControllerError(f"refusing to send a malformed reply to {call.member}")
        reply.serial = self._next_serial()
        self._send(reply)

    # ================================================================ the end
    def _lost(self, reason: str) -> None:
        if self._closed:
            return
        self._shutdown(reason)
        if self.on_closed is not None:
            self.on_closed(reason)

    def _shutdown(self, reason: str) -> None:
        self._closed = True
        fd = self._sock.fileno()
        if fd >= 0:
            if self._reading:
                self._loop.remove_reader(fd)
            if self._writing:
                self._loop.remove_writer(fd)
        self._reading = self._writing = False
        self._out.clear()
        for waiter in self._replies.values():
            if not waiter.done():
                waiter.set_exception(ControllerError(reason))
        self._replies.clear()
        for task in list(self._tasks):
            task.cancel()
        self._sock.close()

    def close(self) -> None:
        """Close the connection (the broker exits when it sees that); no ``on_closed``."""
        if not self._closed:
            self._shutdown("busmgr closed the controller connection")
