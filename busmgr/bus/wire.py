"""A small blocking D-Bus client: one Unix socket, no event loop, no dbus-fast.

Why: ``busmgr status`` is one or two round trips. Importing asyncio and dbus-fast costs a
command line more than the whole exchange with the manager (see ``docs/PERFORMANCE.md``), so the
command line's client verbs speak the wire protocol themselves, blocking, with this module;
it imports nothing beyond the standard library's ``socket`` and ``struct``.

What it does (the D-Bus specification's wire format and SASL ``EXTERNAL`` authentication):

* :func:`marshal` / :func:`unmarshal` for every type but Unix fds (``h`` is a plain index);
  variants come back unwrapped (their plain value), go out as ``(signature, value)``;
* :class:`BlockingBus`: connect to a ``unix:path=`` or ``unix:abstract=`` address, authenticate,
  ``Hello``; send method calls (several at once, pipelined, then wait for all replies), and read
  signals after ``AddMatch``. Every wait has a deadline (:class:`TimeoutError`); the bus closing
  the connection is :class:`EOFError`; an error reply is :class:`ErrorReply`, whose ``type`` and
  ``text`` are those of dbus-fast's ``DBusError``.

Invariants: messages are read whole, in order; a reply for a call nobody waits for any more is
dropped; signals that arrive while a reply is awaited are queued, not lost.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import time
from collections import deque

TYPE_CHECKING = False  # (not typing's: importing typing costs a command line 3 ms)
if TYPE_CHECKING:  # no typing at run time: this module is on the command line's fast path
    from collections.abc import Iterable, Sequence
    from typing import Any

__all__ = [
    "BlockingBus",
    "Call",
    "ErrorReply",
    "WireError",
    "WireMessage",
    "marshal",
    "parse_address",
    "split_signature",
    "unmarshal",
]

METHOD_CALL, METHOD_RETURN, ERROR, SIGNAL = 1, 2, 3, 4
NO_REPLY_EXPECTED = 0x1

_FIXED = {"y": "B", "b": "I", "n": "h", "q": "H", "i": "i", "u": "I", "x": "q", "t": "Q", "d": "d"}
_FIXED["h"] = "I"
_ALIGN = {"y": 1, "b": 4, "n": 2, "q": 2, "i": 4, "u": 4, "x": 8, "t": 8, "d": 8, "h": 4}
_ALIGN.update({"s": 4, "o": 4, "g": 1, "a": 4, "(": 8, "{": 8, "v": 1})

# Header fields: code -> (name, signature).
_FIELDS = {
    1: ("path", "o"),
    2: ("interface", "s"),
    3: ("member", "s"),
    4: ("error_name", "s"),
    5: ("reply_serial", "u"),
    6: ("destination", "s"),
    7: ("sender", "s"),
    8: ("signature", "g"),
    9: ("unix_fds", "u"),
}
_FIELD_CODES = {name: (code, sig) for code, (name, sig) in _FIELDS.items()}

MAX_MESSAGE = 128 * 1024 * 1024  # the specification's limit


class WireError(Exception):
    """Something on the wire is not D-Bus (a bad signature, a malformed message, a refused
    authentication): one line."""


class ErrorReply(Exception):
    """An error reply: ``type`` is the error name, ``text`` its message (may be empty)."""

    def __init__(self, name: str, text: str = "") -> None:
        super().__init__(f"{name}: {text}" if text else name)
        self.type = name  # as dbus-fast's DBusError has it
        self.text = text


# ------------------------------------------------------------------------------ signatures
def _type_end(sig: str, i: int, depth: int = 0, array: bool = False) -> int:
    """The index just after the single complete type starting at ``sig[i]`` (a dict entry
    ``{...}`` only as the element of an array)."""
    if depth > 64 or i >= len(sig):
        raise WireError(f'bad signature "{sig}"')
    c = sig[i]
    if c == "a":
        return _type_end(sig, i + 1, depth + 1, array=True)
    if c == "{" and not array:
        raise WireError(f'bad signature "{sig}"')
    if c in "({":
        close = ")" if c == "(" else "}"
        i += 1
        count = 0
        while i < len(sig) and sig[i] != close:
            i = _type_end(sig, i, depth + 1)
            count += 1
        if i >= len(sig) or count == 0 or (c == "{" and count != 2):
            raise WireError(f'bad signature "{sig}"')
        return i + 1
    if c in _ALIGN and c not in ")}":
        return i + 1
    raise WireError(f'bad signature "{sig}"')


def split_signature(sig: str) -> list[str]:
    """``"sa{ss}b"`` -> ``["s", "a{ss}", "b"]``; raises :class:`WireError` if it is not one."""
    out, i = [], 0
    while i < len(sig):
        end = _type_end(sig, i)
        out.append(sig[i:end])
        i = end
    return out


# ------------------------------------------------------------------------------ marshalling
class _Writer:
    def __init__(self) -> None:
        self.buf = bytearray()

    def align(self, n: int) -> None:
        self.buf += b"\0" * (-len(self.buf) % n)

    def write(self, t: str, v: Any) -> None:
        c = t[0]
        if c in _FIXED:
            self.align(_ALIGN[c])
            if c == "b":
                v = 1 if v else 0
            self.buf += struct.pack("<" + _FIXED[c], v)
        elif c in "so":
            data = str(v).encode()
            self.align(4)
            self.buf += struct.pack("<I", len(data)) + data + b"\0"
        elif c == "g":
            data = str(v).encode()
            self.buf += struct.pack("<B", len(data)) + data + b"\0"
        elif c == "v":
            sig, value = v
            self.write("g", sig)
            self.write(sig, value)
        elif c == "a":
            self.align(4)
            at = len(self.buf)
            self.buf += b"\0\0\0\0"
            elem = t[1:]
            self.align(_ALIGN[elem[0]])
            start = len(self.buf)
            items = v.items() if elem[0] == "{" else v
            for item in items:
                self.write(elem, item)
            struct.pack_into("<I", self.buf, at, len(self.buf) - start)
        elif c in "({":
            self.align(8)
            for sub, value in zip(split_signature(t[1:-1]), v, strict=True):
                self.write(sub, value)
        else:  # pragma: no cover - split_signature refuses anything else
            raise WireError(f'cannot write type "{t}"')


def marshal(signature: str, values: Sequence[Any]) -> bytes:
    """The body ``values`` of ``signature`` in little-endian wire format (starting aligned)."""
    types = split_signature(signature)
    if len(types) != len(values):
        raise WireError(f'"{signature}" takes {len(types)} values, got {len(values)}')
    writer = _Writer()
    for t, v in zip(types, values, strict=True):
        writer.write(t, v)
    return bytes(writer.buf)


class _Reader:
    def __init__(self, data: bytes | memoryview, pos: int, big: bool) -> None:
        self.data = data
        self.pos = pos
        self.e = ">" if big else "<"

    def align(self, n: int) -> None:
        self.pos += -self.pos % n

    def _take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise WireError("truncated message")
        chunk = bytes(self.data[self.pos : end])
        self.pos = end
        return chunk

    def read(self, t: str, depth: int = 0) -> Any:
        if depth > 64:
            raise WireError("message nested too deeply")
        c = t[0]
        if c in _FIXED:
            self.align(_ALIGN[c])
            fmt = self.e + _FIXED[c]
            (v,) = struct.unpack(fmt, self._take(struct.calcsize(fmt)))
            return bool(v) if c == "b" else v
        if c in "so":
            self.align(4)
            (n,) = struct.unpack(self.e + "I", self._take(4))
            text = self._take(n + 1)[:-1]
            return text.decode("utf-8", "replace")
        if c == "g":
            (n,) = struct.unpack("B", self._take(1))
            return self._take(n + 1)[:-1].decode("ascii", "replace")
        if c == "v":
            sig = self.read("g")
            types = split_signature(sig)
            if len(types) != 1:
                raise WireError(f'bad variant signature "{sig}"')
            return self.read(sig, depth + 1)
        if c == "a":
            self.align(4)
            (n,) = struct.unpack(self.e + "I", self._take(4))
            elem = t[1:]
            self.align(_ALIGN[elem[0]])
            end = self.pos + n
            if n > MAX_MESSAGE or end > len(self.data):
                raise WireError("truncated message")
            if elem[0] == "{":
                out: dict[Any, Any] = {}
                while self.pos < end:
                    key, value = self.read(elem, depth + 1)
                    out[key] = value
                return out
            items = []
            while self.pos < end:
                items.append(self.read(elem, depth + 1))
            return items
        if c in "({":
            self.align(8)
            return [self.read(sub, depth + 1) for sub in split_signature(t[1:-1])]
        raise WireError(f'cannot read type "{t}"')  # pragma: no cover


def unmarshal(signature: str, data: bytes, big: bool = False) -> list[Any]:
    """The values of ``signature`` in ``data`` (a body, starting aligned). Variants are
    unwrapped; structs are lists; dict entries make dicts."""
    reader = _Reader(data, 0, big)
    values = [reader.read(t) for t in split_signature(signature)]
    if reader.pos != len(data):
        raise WireError("extra bytes after the body")
    return values


# ------------------------------------------------------------------------------ messages
class WireMessage:
    """One message as read: the header fields that matter, and the body's values.

    (A plain class, not a dataclass: this module is on the command line's fast path.)
    """

    def __init__(self, type: int, flags: int = 0, serial: int = 0) -> None:
        self.type = type
        self.flags = flags
        self.serial = serial
        self.path = ""
        self.interface = ""
        self.member = ""
        self.error_name = ""
        self.reply_serial = 0
        self.destination = ""
        self.sender = ""
        self.signature = ""
        self.unix_fds = 0
        self.body: list[Any] = []


def encode_message(
    kind: int,
    serial: int,
    *,
    signature: str = "",
    body: Sequence[Any] = (),
    flags: int = 0,
    **fields: Any,
) -> bytes:
    """A whole message: header (``fields`` by name: ``path``, ``member``...) and body."""
    payload = marshal(signature, body) if signature else b""
    header = _Writer()
    header.buf += struct.pack("<cBBBII", b"l", kind, flags, 1, len(payload), serial)
    entries = []
    if signature:
        fields["signature"] = signature
    for name, value in fields.items():
        if value:
            code, sig = _FIELD_CODES[name]
            entries.append((code, (sig, value)))
    header.write("a(yv)", entries)
    header.align(8)
    return bytes(header.buf) + payload


def decode_message(data: bytes) -> WireMessage:
    """One whole message (as :meth:`BlockingBus` reads it) -> :class:`WireMessage`."""
    if len(data) < 16 or data[:1] not in (b"l", b"B"):
        raise WireError("not a D-Bus message")
    big = data[:1] == b"B"
    reader = _Reader(data, 1, big)
    kind = reader.read("y")
    flags = reader.read("y")
    reader.read("y")  # protocol version
    body_len = reader.read("u")
    serial = reader.read("u")
    message = WireMessage(kind, flags, serial)
    for code, value in reader.read("a(yv)"):
        name = _FIELDS.get(code, (None, None))[0]
        if name is not None:
            setattr(message, name, value)
    reader.align(8)
    body = data[reader.pos : reader.pos + body_len]
    if message.signature:
        message.body = unmarshal(message.signature, body, big)
    return message


def _message_length(head: bytes) -> int:
    """The whole length of the message whose first 16 bytes are ``head``."""
    e = ">" if head[:1] == b"B" else "<"
    body_len, _serial, fields_len = struct.unpack(e + "III", head[4:16])
    header = 16 + fields_len
    total = header + (-header % 8) + body_len
    if total > MAX_MESSAGE:
        raise WireError("message too long")
    return total


# ------------------------------------------------------------------------------ addresses
def _unescape(value: str) -> str:
    out = bytearray()
    i = 0
    raw = value.encode()
    while i < len(raw):
        if raw[i : i + 1] == b"%" and i + 3 <= len(raw):
            try:
                out.append(int(raw[i + 1 : i + 3], 16))
                i += 3
                continue
            except ValueError:
                pass
        out.append(raw[i])
        i += 1
    return out.decode(errors="surrogateescape")


def parse_address(address: str) -> list[tuple[str, dict[str, str]]]:
    """``unix:path=/run/bus;tcp:host=x`` -> ``[("unix", {"path": "/run/bus"}), ...]``."""
    out = []
    for part in address.split(";"):
        if not part:
            continue
        transport, sep, rest = part.partition(":")
        if not sep:
            raise WireError(f'bad D-Bus address "{address}"')
        options = {}
        for pair in rest.split(","):
            if pair:
                key, _, value = pair.partition("=")
                options[key] = _unescape(value)
        out.append((transport, options))
    return out


def unix_socket_path(options: dict[str, str]) -> str | None:
    """The ``connect()`` path of a ``unix:`` address (abstract names start with NUL)."""
    if "path" in options:
        return options["path"]
    if "abstract" in options:
        return "\0" + options["abstract"]
    return None


def supported(address: str) -> bool:
    """Whether :class:`BlockingBus` can connect to ``address`` (a Unix socket address)."""
    try:
        return any(
            t == "unix" and unix_socket_path(o) is not None for t, o in parse_address(address)
        )
    except WireError:
        return False


# ------------------------------------------------------------------------------ the bus
def _wait_readable(fd: int, timeout: float | None, hangup_fd: int | None) -> bool:
    """Wait until ``fd`` is readable (True) or ``timeout`` seconds passed (False); raise
    BrokenPipeError if ``hangup_fd`` reports that its reader went away."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    if hangup_fd is not None:
        poller.register(hangup_fd, 0)  # POLLERR and POLLHUP are always reported
    for ready, events in poller.poll(None if timeout is None else max(timeout, 0) * 1000):
        if ready == hangup_fd and ready != fd and events & (select.POLLERR | select.POLLHUP):
            raise BrokenPipeError("the reader of our output went away")
    return any(ready == fd for ready, _ in poller.poll(0))


class Call:
    """One method call to send (a plain class: see :class:`WireMessage`)."""

    __slots__ = ("body", "destination", "interface", "member", "path", "signature")

    def __init__(
        self,
        destination: str,
        path: str,
        interface: str,
        member: str,
        signature: str = "",
        body: Sequence[Any] = (),
    ) -> None:
        self.destination = destination
        self.path = path
        self.interface = interface
        self.member = member
        self.signature = signature
        self.body = body


class BlockingBus:
    """A connection to a message bus, used synchronously; see the module docstring."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.unique_name = ""
        self._serial = 0
        self._buffer = bytearray()
        self._replies: dict[int, WireMessage] = {}
        self._signals: deque[WireMessage] = deque()
        self._waiting: set[int] = set()

    # -------------------------------------------------------------- connecting
    @classmethod
    def connect(cls, address: str, timeout: float) -> BlockingBus:
        """Connect, authenticate, say ``Hello``; OSError / WireError / TimeoutError."""
        deadline = time.monotonic() + timeout
        problem: Exception = WireError(f'no Unix socket in the address "{address}"')
        for transport, options in parse_address(address):
            path = unix_socket_path(options) if transport == "unix" else None
            if path is None:
                continue
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            try:
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                sock.connect(path)
                bus = cls(sock)
                bus._authenticate(deadline)
                return bus
            except (OSError, WireError) as err:
                sock.close()
                problem = err
        raise problem

    def _authenticate(self, deadline: float) -> None:
        uid = str(os.geteuid()).encode().hex().encode()
        self.sock.sendall(b"\0AUTH EXTERNAL " + uid + b"\r\n")
        line = self._read_line(deadline)
        if not line.startswith(b"OK "):
            raise WireError(f"the bus refused authentication: {line.decode(errors='replace')}")
        hello = self._next_serial()
        self._waiting.add(hello)
        self.sock.sendall(
            b"BEGIN\r\n"
            + encode_message(
                METHOD_CALL,
                hello,
                path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus",
                member="Hello",
                destination="org.freedesktop.DBus",
            )
        )
        reply = self._wait_reply(hello, deadline)
        if reply.type == ERROR or not reply.body:
            raise WireError("the bus did not accept Hello")
        self.unique_name = str(reply.body[0])

    def _read_line(self, deadline: float) -> bytes:
        while b"\r\n" not in self._buffer:
            self._fill(deadline)
        line, _, rest = bytes(self._buffer).partition(b"\r\n")
        self._buffer = bytearray(rest)
        return line

    # -------------------------------------------------------------- low level
    def _next_serial(self) -> int:
        self._serial += 1
        return self._serial

    def _fill(self, deadline: float | None) -> None:
        """Read more bytes; TimeoutError at the deadline, EOFError if the bus hung up."""
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no reply in time")
            self.sock.settimeout(left)
        else:
            self.sock.settimeout(None)
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            raise TimeoutError("no reply in time") from None
        if not chunk:
            raise EOFError("the bus closed the connection")
        self._buffer += chunk

    def _read_message(self, deadline: float | None) -> WireMessage:
        while len(self._buffer) < 16:
            self._fill(deadline)
        total = _message_length(bytes(self._buffer[:16]))
        while len(self._buffer) < total:
            self._fill(deadline)
        data = bytes(self._buffer[:total])
        del self._buffer[:total]
        return decode_message(data)

    def _dispatch(self, message: WireMessage) -> None:
        if message.type in (METHOD_RETURN, ERROR):
            if message.reply_serial in self._waiting:
                self._replies[message.reply_serial] = message
        elif message.type == SIGNAL:
            self._signals.append(message)
        # Method calls to us are not answered: nobody has a reason to call a command line.

    def _wait_reply(self, serial: int, deadline: float | None) -> WireMessage:
        try:
            while serial not in self._replies:
                self._dispatch(self._read_message(deadline))
            return self._replies.pop(serial)
        finally:
            self._waiting.discard(serial)

    def _send(self, call: Call, flags: int = 0) -> int:
        serial = self._next_serial()
        if not flags & NO_REPLY_EXPECTED:
            self._waiting.add(serial)
        self.sock.settimeout(None)
        self.sock.sendall(
            encode_message(
                METHOD_CALL,
                serial,
                signature=call.signature,
                body=call.body,
                flags=flags,
                path=call.path,
                interface=call.interface,
                member=call.member,
                destination=call.destination,
            )
        )
        return serial

    # -------------------------------------------------------------- calls
    @staticmethod
    def _result(reply: WireMessage) -> list[Any]:
        if reply.type == ERROR:
            text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
            raise ErrorReply(reply.error_name or "org.freedesktop.DBus.Error.Failed", text)
        return list(reply.body)

    def call(self, call: Call, timeout: float | None) -> list[Any]:
        """Call and return the reply's body; :class:`ErrorReply` for an error reply."""
        deadline = None if timeout is None else time.monotonic() + timeout
        return self._result(self._wait_reply(self._send(call), deadline))

    def call_many(
        self, calls: Iterable[Call], timeout: float | None
    ) -> list[list[Any] | ErrorReply]:
        """Send every call at once, then collect the replies: one round trip for all. Each
        result is the reply's body or the :class:`ErrorReply`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        serials = [self._send(c) for c in calls]
        results: list[list[Any] | ErrorReply] = []
        for serial in serials:
            try:
                results.append(self._result(self._wait_reply(serial, deadline)))
            except ErrorReply as err:
                results.append(err)
        return results

    def next_signal(
        self, timeout: float | None, hangup_fd: int | None = None
    ) -> WireMessage | None:
        """The next signal (after an ``AddMatch``), or None after ``timeout`` seconds without
        one (None: wait as long as it takes). EOFError when the bus goes away;
        BrokenPipeError as soon as ``hangup_fd`` (the write end of a pipe: our stdout) has no
        reader any more, as ``tail -f`` notices a closed pipe without writing to it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._signals:
            try:
                if not self._buffer:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return None
                    if not _wait_readable(self.sock.fileno(), left, hangup_fd):
                        return None
                self._dispatch(self._read_message(deadline))
            except TimeoutError:
                return None
        return self._signals.popleft()

    def close(self) -> None:
        self.sock.close()
