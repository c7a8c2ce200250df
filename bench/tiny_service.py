"""The smallest D-Bus service the soak benchmark can activate a thousand times: standard library
only, so that it starts in a few milliseconds (a dbus-fast service needs ~80 ms to import).

``python -I -S tiny_service.py NAME`` connects to ``$DBUS_SESSION_BUS_ADDRESS`` (a ``unix:path=``
or ``unix:abstract=`` address), authenticates with EXTERNAL, says ``Hello``, claims NAME (with
``DO_NOT_QUEUE``; exits 1 if it is not the primary owner) and then answers every method call
that expects a reply with an empty return (``org.freedesktop.DBus.Peer.Ping`` included) until it
is signalled or the bus goes away. Little-endian messages only (all this module sends; the
daemon answers in the sender's byte order).
"""

from __future__ import annotations

import os
import socket
import struct
import sys

BUS = "org.freedesktop.DBus"
METHOD_CALL, METHOD_RETURN = 1, 2
NO_REPLY_EXPECTED = 0x1
PATH, INTERFACE, MEMBER, REPLY_SERIAL, DESTINATION, SENDER, SIGNATURE = 1, 2, 3, 5, 6, 7, 8


def _pad(buf: bytearray, align: int) -> None:
    buf.extend(b"\0" * (-len(buf) % align))


def _field(buf: bytearray, code: int, sig: str, value: str | int) -> None:
    _pad(buf, 8)
    buf.extend(bytes([code, 1]) + sig.encode() + b"\0")
    if sig == "u":
        _pad(buf, 4)
        buf.extend(struct.pack("<I", value))
    elif sig == "g":
        data = str(value).encode()
        buf.extend(bytes([len(data)]) + data + b"\0")
    else:  # "s", "o"
        data = str(value).encode()
        _pad(buf, 4)
        buf.extend(struct.pack("<I", len(data)) + data + b"\0")


def message(kind: int, serial: int, fields: list[tuple[int, str, str | int]], body: bytes) -> bytes:
    buf = bytearray()
    for code, sig, value in fields:
        _field(buf, code, sig, value)
    head = struct.pack("<cBBBIII", b"l", kind, 0, 1, len(body), serial, len(buf))
    out = bytearray(head + buf)
    _pad(out, 8)
    return bytes(out + body)


def call(serial: int, member: str, sig: str = "", body: bytes = b"") -> bytes:
    fields: list[tuple[int, str, str | int]] = [
        (PATH, "o", "/org/freedesktop/DBus"),
        (INTERFACE, "s", BUS),
        (MEMBER, "s", member),
        (DESTINATION, "s", BUS),
    ]
    if sig:
        fields.append((SIGNATURE, "g", sig))
    return message(METHOD_CALL, serial, fields, body)


def parse_fields(data: bytes, end: int) -> dict[int, str | int]:
    """Header fields of one little- or big-endian message, from offset 16 up to ``end``."""
    order = "<" if data[0:1] == b"l" else ">"
    fields: dict[int, str | int] = {}
    i = 16
    while i < end:
        i += -i % 8
        code, siglen = data[i], data[i + 1]
        sig = data[i + 2 : i + 2 + siglen].decode()
        i += 3 + siglen
        if sig == "u":
            i += -i % 4
            fields[code] = struct.unpack_from(order + "I", data, i)[0]
            i += 4
        elif sig == "g":
            n = data[i]
            fields[code] = data[i + 1 : i + 1 + n].decode()
            i += 2 + n
        else:  # "s", "o"
            i += -i % 4
            (n,) = struct.unpack_from(order + "I", data, i)
            fields[code] = data[i + 4 : i + 4 + n].decode()
            i += 5 + n
    return fields


def connect(address: str) -> socket.socket:
    for part in address.split(";"):
        kind, _, params = part.partition(":")
        if kind != "unix":
            continue
        opts = dict(p.split("=", 1) for p in params.split(",") if "=" in p)
        if "path" in opts:
            where: str | bytes = opts["path"]
        elif "abstract" in opts:
            where = b"\0" + opts["abstract"].encode()
        else:
            continue
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(where)
        return sock
    raise SystemExit(f"tiny_service: no unix address in {address!r}")


def main() -> int:
    name = sys.argv[1]
    sock = connect(os.environ["DBUS_SESSION_BUS_ADDRESS"])
    uid = str(os.getuid()).encode().hex()
    sock.sendall(b"\0AUTH EXTERNAL " + uid.encode() + b"\r\n")
    reply = b""
    while b"\r\n" not in reply:
        chunk = sock.recv(256)
        if not chunk:
            return 1
        reply += chunk
    if not reply.startswith(b"OK"):
        return 1
    sock.sendall(b"BEGIN\r\n")
    encoded = name.encode()
    request = struct.pack("<I", len(encoded)) + encoded + b"\0"
    request += b"\0" * (-len(request) % 4) + struct.pack("<I", 4)  # DO_NOT_QUEUE
    sock.sendall(call(1, "Hello") + call(2, "RequestName", "su", request))
    serial = 2
    buf = b""
    while True:
        while True:
            if len(buf) >= 16:
                order = "<" if buf[0:1] == b"l" else ">"
                body_len, _, fields_len = struct.unpack_from(order + "III", buf, 4)
                head_end = 16 + fields_len
                total = head_end + (-head_end % 8) + body_len
                if len(buf) >= total:
                    break
            chunk = sock.recv(65536)
            if not chunk:
                return 0  # the bus went away
            buf += chunk
        msg, buf = buf[:total], buf[total:]
        kind, flags = msg[1], msg[2]
        fields = parse_fields(msg, head_end)
        if kind == METHOD_RETURN and fields.get(REPLY_SERIAL) == 2:
            (code,) = struct.unpack_from(order + "I", msg, head_end + (-head_end % 8))
            if code != 1:  # not the primary owner
                return 1
        elif kind == METHOD_CALL and not flags & NO_REPLY_EXPECTED:
            serial += 1
            (their_serial,) = struct.unpack_from(order + "I", msg, 8)
            back: list[tuple[int, str, str | int]] = [(REPLY_SERIAL, "u", their_serial)]
            if SENDER in fields:
                back.append((DESTINATION, "s", fields[SENDER]))
            sock.sendall(message(METHOD_RETURN, serial, back, b""))


if __name__ == "__main__":
    sys.exit(main())
