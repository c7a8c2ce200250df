"""The dbus-broker launcher's pure parts and its controller connection, without a broker.

The controller connection is driven by a fake broker on the other end of a ``socketpair`` in
this test's loop: it speaks the server side of the handshake and reads and writes messages
with dbus-fast, so every byte busmgr sends is checked as the broker would see it (no sender,
no destination, no signal, the right reply serial). The real broker is in ``test_broker.py``.
"""

from __future__ import annotations

import asyncio
import io
import os
import socket
from pathlib import Path

import pytest
from dbus_fast import Message, MessageFlag, MessageType, Variant
from dbus_fast._private.unmarshaller import Unmarshaller
from hypothesis import given, settings
from hypothesis import strategies as st

from busmgr import ERROR_PREFIX
from busmgr.bus.activation.broker import RESET_ERRORS, UNIT_FAILURE, name_path, reset_error
from busmgr.bus.activation.requests import Failed
from busmgr.bus.broker_launch import (
    address_of,
    bus_policy,
    machine_id,
    parse_version,
    standard_socket,
)
from busmgr.bus.broker_policy import ANY_UID, POLICY_SIGNATURE, session_policy
from busmgr.bus.controller import ControllerConnection, ControllerError
from busmgr.options import Mode
from busmgr.process import SpawnError

TIMEOUT = 5.0
#: The error names dbus-broker 33 accepts in ``Reset`` (its ``controller.h``).
BROKER_RESET_ERRORS = {
    "org.bus1.DBus.Name.Error." + n
    for n in (
        "DestructiveTransaction",
        "UnknownUnit",
        "MaskedUnit",
        "InvalidUnit",
        "UnitFailure",
        "StartupFailure",
        "StartupSkipped",
        "NameReleased",
    )
}


# ------------------------------------------------------------------ pure parts
@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("dbus-broker 33\n", 33),
        ("dbus-broker 36\n+apparmor +selinux\n", 36),
        ("  dbus-broker 9", 9),
        ("dbus-daemon 1.14.10", None),
        ("", None),
        ("dbus-broker thirty", None),
    ],
)
def test_the_version_is_read_from_the_first_line(text: str, version: int | None) -> None:
    assert parse_version(text) == version


def test_addresses_escape_what_the_spec_says() -> None:
    assert address_of(Path("/run/user/1000/bus")) == "unix:path=/run/user/1000/bus"
    assert address_of(Path("/tmp/a b,c=d")) == "unix:path=/tmp/a%20b%2cc%3dd"


def test_machine_id_is_read_or_made(tmp_path: Path) -> None:
    good = tmp_path / "machine-id"
    good.write_text("0123456789ABCDEF0123456789abcdef\n")
    bad = tmp_path / "bad"
    bad.write_text("not an id\n")
    assert machine_id((tmp_path / "missing", bad, good)) == "0123456789abcdef0123456789abcdef"
    made = machine_id((tmp_path / "missing",))
    assert len(made) == 32 and int(made, 16) >= 0


def _round_trip(msg: Message) -> Message:
    data = bytes(msg._marshall(False))
    parsed = Unmarshaller(io.BytesIO(data), None, False).unmarshall()
    assert parsed is not None
    return parsed


def test_the_session_policy_has_the_brokers_signature_and_survives_the_wire() -> None:
    policy = session_policy(1000)
    msg = Message(
        path="/org/bus1/DBus/Broker",
        interface="org.bus1.DBus.Broker",
        member="AddListener",
        signature="ohv",
        body=["/org/bus1/DBus/Listener/0", 0, policy.variant()],
    )
    variant: Variant = _round_trip(msg).body[2]
    assert variant.signature == POLICY_SIGNATURE
    uids, ranges, selinux, apparmor, bus_type = variant.value
    assert (ranges, selinux, apparmor, bus_type) == ([], [], False, "session")
    by_uid = {uid: batch for uid, batch in uids}
    assert by_uid[ANY_UID][0] is False  # no one else may connect
    assert by_uid[1000][0] is True  # the bus's user may
    _connect, _prio, own, send, receive = by_uid[1000]
    assert [list(o) for o in own] == [[True, 2, True, ""]]  # any name
    assert list(send[0])[:8] == [True, 3, "", "", "", "", 0, 0]  # any message
    assert send[0][9] == 2**64 - 1 and receive[0][0] is True


def test_every_reset_error_is_one_the_broker_accepts() -> None:
    assert set(RESET_ERRORS.values()) <= BROKER_RESET_ERRORS
    assert UNIT_FAILURE in BROKER_RESET_ERRORS
    for error in ("JobFailed", "NoProvider", "InvalidArgs", "Something.New", ""):
        assert reset_error(Failed(ERROR_PREFIX + error, "why")) in BROKER_RESET_ERRORS


def test_name_paths_are_object_paths() -> None:
    assert name_path("org.test.Echo") == "/org/bus1/DBus/Name/org_2etest_2eEcho"
    assert name_path("a-b.c_d") == "/org/bus1/DBus/Name/a_2db_2ec_5fd"


# ------------------------------------------------------------------ a fake broker
class FakeBroker:
    """The server end of the controller socket: the handshake, then messages both ways."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        sock.setblocking(False)
        self.loop = asyncio.get_running_loop()
        self.received: asyncio.Queue[Message] = asyncio.Queue()
        self.fds: list[int] = []
        self.serial = 0

    async def handshake(self) -> None:
        assert await self._line() == b"\0AUTH EXTERNAL " + str(os.getuid()).encode().hex().encode()
        await self.loop.sock_sendall(self.sock, b"OK 0123456789abcdef0123456789abcdef\r\n")
        assert await self._line() == b"NEGOTIATE_UNIX_FD"
        await self.loop.sock_sendall(self.sock, b"AGREE_UNIX_FD\r\n")
        assert await self._line() == b"BEGIN"
        unmarshaller = Unmarshaller(None, self.sock, True)

        def readable() -> None:
            while True:
                try:
                    msg = unmarshaller.unmarshall()
                except (EOFError, OSError):
                    self.loop.remove_reader(self.sock.fileno())
                    return
                if msg is None:
                    return
                self.fds += msg.unix_fds
                self.received.put_nowait(msg)

        self.loop.add_reader(self.sock.fileno(), readable)

    async def _line(self) -> bytes:
        buf = b""
        while not buf.endswith(b"\r\n"):
            buf += await self.loop.sock_recv(self.sock, 1)
        return buf[:-2]

    async def next(self) -> Message:
        return await asyncio.wait_for(self.received.get(), TIMEOUT)

    def send(self, msg: Message) -> None:
        self.serial += 1
        msg.serial = self.serial
        self.sock.send(bytes(msg._marshall(True)))

    def reply(self, call: Message, error: str = "") -> None:
        # The broker's replies carry serial 0xffffffff and no-reply-expected.
        data = Message(
            message_type=MessageType.ERROR if error else MessageType.METHOD_RETURN,
            reply_serial=call.serial,
            error_name=error or None,
            flags=MessageFlag.NO_REPLY_EXPECTED,
            serial=0xFFFFFFFF,
        )._marshall(True)
        self.sock.send(bytes(data))

    def close(self) -> None:
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
        for fd in self.fds:
            os.close(fd)


async def connected() -> tuple[ControllerConnection, FakeBroker, list[str]]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    closed: list[str] = []
    controller = ControllerConnection(ours, on_closed=closed.append)
    broker = FakeBroker(theirs)
    await asyncio.gather(controller.authenticate(), broker.handshake())
    return controller, broker, closed


async def test_calls_carry_no_sender_or_destination_and_get_their_replies() -> None:
    controller, broker, _ = await connected()
    try:
        call = asyncio.ensure_future(
            controller.call(
                "/org/bus1/DBus/Broker",
                "org.bus1.DBus.Broker",
                "AddName",
                "osu",
                ["/org/bus1/DBus/Name/x", "org.test.X", 1000],
            )
        )
        got = await broker.next()
        assert (got.message_type, got.member, got.body) == (
            MessageType.METHOD_CALL,
            "AddName",
            ["/org/bus1/DBus/Name/x", "org.test.X", 1000],
        )
        assert got.sender is None and got.destination is None and got.serial != 0
        broker.reply(got)
        assert (await asyncio.wait_for(call, TIMEOUT)).message_type is MessageType.METHOD_RETURN

        call = asyncio.ensure_future(
            controller.call("/org/bus1/DBus/Name/y", "org.bus1.DBus.Name", "Release")
        )
        got = await broker.next()
        broker.reply(got, "org.bus1.DBus.Name.NotFound")
        with pytest.raises(ControllerError) as err:
            await asyncio.wait_for(call, TIMEOUT)
        assert err.value.error_name == "org.bus1.DBus.Name.NotFound"
        assert "Release /org/bus1/DBus/Name/y" in str(err.value)
    finally:
        controller.close()
        broker.close()


async def test_a_unix_fd_travels_with_its_call(tmp_path: Path) -> None:
    controller, broker, _ = await connected()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
    listener.bind(str(tmp_path / "bus"))
    try:
        call = asyncio.ensure_future(
            controller.call(
                "/org/bus1/DBus/Broker",
                "org.bus1.DBus.Broker",
                "AddListener",
                "ohv",
                ["/org/bus1/DBus/Listener/0", 0, session_policy(0).variant()],
                unix_fds=(listener.fileno(),),
            )
        )
        got = await broker.next()
        assert len(got.unix_fds) == 1
        passed = socket.socket(fileno=os.dup(got.unix_fds[0]))
        assert passed.getsockname() == str(tmp_path / "bus")
        passed.close()
        broker.reply(got)
        await asyncio.wait_for(call, TIMEOUT)
    finally:
        listener.close()
        controller.close()
        broker.close()


async def test_what_the_broker_says_before_attach_is_kept_and_calls_get_one_reply() -> None:
    controller, broker, _ = await connected()
    try:
        broker.send(
            Message(
                message_type=MessageType.SIGNAL,
                path="/org/bus1/DBus/Name/x",
                interface="org.bus1.DBus.Name",
                member="Activate",
                signature="t",
                body=[7],
            )
        )
        reload_call = Message(
            path="/org/bus1/DBus/Controller",
            interface="org.bus1.DBus.Controller",
            member="ReloadConfig",
        )
        broker.send(reload_call)
        quiet = Message(
            path="/org/bus1/DBus/Controller",
            interface="org.bus1.DBus.Controller",
            member="ReloadConfig",
            flags=MessageFlag.NO_REPLY_EXPECTED,
        )
        broker.send(quiet)
        # Nobody listens yet: nothing is answered, nothing is lost.
        barrier = asyncio.ensure_future(controller.call("/org/bus1/DBus/Broker", "i.f", "Ping"))
        ping = await broker.next()
        broker.reply(ping)
        await asyncio.wait_for(barrier, TIMEOUT)
        assert broker.received.empty()

        signals: list[Message] = []
        calls: list[Message] = []

        async def on_call(call: Message) -> Message:
            calls.append(call)
            return Message(message_type=MessageType.METHOD_RETURN, reply_serial=call.serial)

        controller.attach(signals.append, on_call)
        reply = await broker.next()
        assert [s.body for s in signals] == [[7]]
        assert [c.serial for c in calls] == [reload_call.serial, quiet.serial]
        assert reply.message_type is MessageType.METHOD_RETURN
        assert reply.reply_serial == reload_call.serial
        assert reply.destination is None and reply.sender is None and reply.serial != 0
        # the no-reply-expected call got none
        barrier = asyncio.ensure_future(controller.call("/org/bus1/DBus/Broker", "i.f", "Ping"))
        ping = await broker.next()
        assert ping.member == "Ping"
        broker.reply(ping)
        await asyncio.wait_for(barrier, TIMEOUT)
    finally:
        controller.close()
        broker.close()


async def test_the_broker_going_away_fails_waiting_calls_and_is_reported_once() -> None:
    controller, broker, closed = await connected()
    call = asyncio.ensure_future(controller.call("/org/bus1/DBus/Broker", "i.f", "AddName"))
    await broker.next()
    broker.close()
    with pytest.raises(ControllerError) as err:
        await asyncio.wait_for(call, TIMEOUT)
    assert "closed the controller connection" in str(err.value)
    assert closed == ["dbus-broker closed the controller connection"]
    with pytest.raises(ControllerError):
        await controller.call("/org/bus1/DBus/Broker", "i.f", "AddName")
    controller.close()
    assert closed == ["dbus-broker closed the controller connection"]


async def test_a_broker_that_refuses_the_handshake_is_one_line() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    controller = ControllerConnection(ours)
    theirs.send(b"REJECTED EXTERNAL\r\n")
    with pytest.raises(ControllerError) as err:
        await controller.authenticate()
    assert str(err.value) == "dbus-broker refused EXTERNAL authentication: b'REJECTED EXTERNAL'"
    controller.close()
    theirs.close()


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=1, max_size=300))
def test_garbage_from_the_broker_closes_the_connection_with_a_reason(data: bytes) -> None:
    async def feed() -> tuple[list[str], list[Message]]:
        controller, broker, closed = await connected()
        seen: list[Message] = []

        async def on_call(call: Message) -> None:
            seen.append(call)

        controller.attach(seen.append, on_call)
        broker.sock.send(data)
        broker.sock.shutdown(socket.SHUT_WR)
        done = asyncio.get_running_loop().create_future()
        controller.on_closed = lambda reason: (closed.append(reason), done.set_result(None))
        await asyncio.wait_for(done, TIMEOUT)
        controller.close()
        broker.close()
        return closed, seen

    closed, _seen = asyncio.run(feed())
    assert len(closed) == 1 and "\n" not in closed[0]


# ------------------------------------------------------------------ a user's bus
def test_standard_buses_listen_where_clients_look(tmp_path: Path) -> None:
    assert standard_socket(Mode.SYSTEM, {}) == (Path("/run/dbus/system_bus_socket"), 0o666)
    assert standard_socket(Mode.SESSION, {"XDG_RUNTIME_DIR": str(tmp_path)}) == (
        tmp_path / "bus",
        0o600,
    )
    with pytest.raises(SpawnError) as err:
        standard_socket(Mode.SESSION, {"XDG_RUNTIME_DIR": "relative"})
    assert str(err.value) == "XDG_RUNTIME_DIR is not set: no place for the user's bus socket"


def test_standard_bus_policies(tmp_path: Path) -> None:
    assert bus_policy(Mode.SESSION) == session_policy(os.getuid())
    config = tmp_path / "system.conf"
    config.write_text(
        "<busconfig><type>system</type>"
        '<policy context="default"><allow user="*"/><deny own="*"/></policy></busconfig>'
    )
    policy = bus_policy(Mode.SYSTEM, config)
    assert policy.bus_type == "system"
    default = dict(policy.uids)[ANY_UID]
    assert default.connect.allow and [o.allow for o in default.own] == [False]
