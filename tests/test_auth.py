"""The caller policy's decisions (busmgr.bus.auth) without a bus: which methods are open, the
uid asked once per sender, calls held in order until the answer, refusals.

What the daemon would answer to ``GetConnectionUnixUser`` is a table here; the end-to-end
behaviour (every method of every object, as ``nobody``, on a real bus) is in
``test_system_mode.py``.
"""

from __future__ import annotations

import asyncio

import pytest
from dbus_fast import Message, MessageFlag, MessageType

from busmgr.bus.auth import OPEN_METHODS, CallerGate, CallerPolicy
from busmgr.errors import ManagerError
from busmgr.options import Mode


class Daemon:
    """Answers ``GetConnectionUnixUser`` from a table, when told to; counts the questions."""

    def __init__(self, uids: dict[str, int | None]) -> None:
        self.uids = uids
        self.asked: list[str] = []
        self.go = asyncio.Event()

    async def unix_user(self, connection: str) -> int | None:
        self.asked.append(connection)
        await self.go.wait()
        return self.uids.get(connection)


class Link:
    """What the gate does with a held call: deliver it again, or send the refusal."""

    def __init__(self) -> None:
        self.delivered: list[Message] = []
        self.sent: list[Message] = []
        self.done = asyncio.Event()

    def redeliver(self, msg: Message) -> None:
        self.delivered.append(msg)
        self.done.set()

    def send(self, msg: Message) -> None:
        self.sent.append(msg)
        self.done.set()


def call(
    sender: str, member: str, interface: str | None = "org.busmgr.Manager1", **kw: object
) -> Message:
    return Message(
        destination="org.busmgr.Manager1", path="/org/busmgr/Manager1", interface=interface,
        member=member, sender=sender, serial=1, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def test_open_methods_only_read() -> None:
    members = {m for _i, m in OPEN_METHODS}
    assert members == {
        "Introspect", "Ping", "GetMachineId", "Get", "GetAll", "ListJobs", "GetJob",
        "GetTimeline", "ListSkipped", "GetInstance", "GetInstanceByName",
    }  # fmt: skip
    assert CallerPolicy.is_open("org.freedesktop.DBus.Properties", "Get")
    assert not CallerPolicy.is_open("org.freedesktop.DBus.Properties", "Set")
    assert not CallerPolicy.is_open(None, "ListJobs")  # no interface: not judged by member alone


async def test_the_uid_is_asked_once_per_sender() -> None:
    daemon = Daemon({":1.5": 0, ":1.6": 65534})
    policy = CallerPolicy(Mode.SYSTEM, daemon)
    first, second = policy.lookup(":1.5"), policy.lookup(":1.5")
    assert first is second
    daemon.go.set()
    assert await first == 0
    assert await policy.lookup(":1.5") == 0
    await policy.authorize(":1.5", "StartJob")
    with pytest.raises(ManagerError) as info:
        await policy.authorize(":1.6", "StartJob")
    assert info.value.name == "AccessDenied"
    assert str(info.value.message) == (
        "StartJob: only root may control busmgr on the system bus (uid 65534)"
    )
    assert daemon.asked == [":1.5", ":1.6"]


async def test_session_mode_trusts_everyone() -> None:
    daemon = Daemon({})
    policy = CallerPolicy(Mode.SESSION, daemon)
    await policy.authorize(":1.9", "StartJob")
    assert CallerGate(Link(), policy)(call(":1.9", "StartJob")) is None  # type: ignore[arg-type]
    assert daemon.asked == []


async def test_the_gate_holds_calls_in_order_until_it_knows_the_sender() -> None:
    daemon = Daemon({":1.7": 0})
    link = Link()
    gate = CallerGate(link, CallerPolicy(Mode.SYSTEM, daemon))  # type: ignore[arg-type]
    start, stop = call(":1.7", "StartJob"), call(":1.7", "StopJob")
    assert gate(call(":1.7", "ListJobs")) is None  # open: never held
    assert gate(start) is True and gate(stop) is True
    assert link.delivered == []
    daemon.go.set()
    while len(link.delivered) < 2:
        link.done.clear()
        await asyncio.wait_for(link.done.wait(), 5)
    assert link.delivered == [start, stop]
    assert gate(call(":1.7", "Set", "org.freedesktop.DBus.Properties")) is None  # known root
    assert daemon.asked == [":1.7"]


async def test_the_gate_refuses_strangers_and_the_unknown() -> None:
    daemon = Daemon({":1.8": 65534})
    link = Link()
    gate = CallerGate(link, CallerPolicy(Mode.SYSTEM, daemon))  # type: ignore[arg-type]
    assert gate(call(":1.8", "SetEnvironment", "org.freedesktop.systemd1.Manager")) is True
    assert gate(call(":1.9", "Anything", None)) is True  # the daemon cannot tell who it is
    daemon.go.set()
    while len(link.sent) < 2:
        link.done.clear()
        await asyncio.wait_for(link.done.wait(), 5)
    assert [m.message_type for m in link.sent] == [MessageType.ERROR] * 2
    assert {m.error_name for m in link.sent} == {"org.busmgr.Error.AccessDenied"}
    assert "(uid 65534)" in link.sent[0].body[0] and "(an unknown caller)" in link.sent[1].body[0]
    # Known now: refused at once. A call that wants no reply gets none.
    reply = gate(call(":1.8", "StartJob"))
    assert isinstance(reply, Message) and reply.error_name == "org.busmgr.Error.AccessDenied"
    assert gate(call(":1.8", "StartJob", flags=MessageFlag.NO_REPLY_EXPECTED)) is True
    # The bus daemon itself forwards UpdateActivationEnvironment: it is let through.
    assert gate(call("org.freedesktop.DBus", "SetEnvironment", None)) is None
    assert link.delivered == []
