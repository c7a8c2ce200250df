"""dbus-broker's policy: the value a launcher hands the broker with each listening socket.

dbus-broker reads no configuration file: its launcher translates the bus's policy into one
D-Bus value and passes it with ``AddListener`` (and ``SetPolicy``). Its shape (dbus-broker
32 and later) is::

    (a(u(BATCH))  a(buu(BATCH))  a(ss)  b  s)
     per uid       per uid/gid     SELinux  AppArmor  bus type
                   range            names    on

    BATCH = b t             connect: verdict, priority
            a(btbs)         own:     verdict, priority, prefix?, name
            a(btssssuutt)   send:    verdict, priority, name, path, interface, member,
            a(btssssuutt)   receive:   message type, broadcast, min fds, max fds

The uid entry ``0xffffffff`` is the default for every uid without one of its own. In an
own, send or receive rule an empty string matches anything, type 0 any message type, and
broadcast 0 any message; of all the rules that match a message or a name, the one with the
highest priority decides (a higher context — mandatory over user over default — always gets
higher priorities). Connect has one verdict per batch.

This module holds that model (frozen values) and its translation to the wire value, and the
policies busmgr builds itself: :func:`session_policy`, the session bus's (everything allowed
to the bus's own user, no one else may connect), which is what ``session.conf`` says.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dbus_fast import Variant

__all__ = [
    "ANY_UID",
    "POLICY_SIGNATURE",
    "Batch",
    "Connect",
    "Own",
    "Policy",
    "Xmit",
    "session_policy",
]

ANY_UID = 0xFFFFFFFF
MAX_FDS = 0xFFFFFFFFFFFFFFFF
_BATCH = "bta(btbs)a(btssssuutt)a(btssssuutt)"
POLICY_SIGNATURE = f"(a(u({_BATCH}))a(buu({_BATCH}))a(ss)bs)"


@dataclass(frozen=True, slots=True)
class Connect:
    """Whether a peer may connect at all."""

    allow: bool
    priority: int


@dataclass(frozen=True, slots=True)
class Own:
    """Who may own a name: ``name`` exactly, or (``prefix``) it and the names below it
    (``name=""`` with ``prefix``: every name)."""

    allow: bool
    priority: int
    name: str = ""
    prefix: bool = True


@dataclass(frozen=True, slots=True)
class Xmit:
    """A send or receive rule; empty strings and zeros match anything.

    ``name`` is the destination (send) or the sender (receive), ``message_type`` the D-Bus
    type number (1 call, 2 return, 3 error, 4 signal), ``broadcast`` 0 any, 1 only
    unicast... as the broker numbers its tristate (see :mod:`busmgr.bus.busconfig`)."""

    allow: bool
    priority: int
    name: str = ""
    path: str = ""
    interface: str = ""
    member: str = ""
    message_type: int = 0
    broadcast: int = 0
    min_fds: int = 0
    max_fds: int = MAX_FDS

    def wire(self) -> list[object]:
        return [
            self.allow,
            self.priority,
            self.name,
            self.path,
            self.interface,
            self.member,
            self.message_type,
            self.broadcast,
            self.min_fds,
            self.max_fds,
        ]


@dataclass(frozen=True, slots=True)
class Batch:
    """Every rule that applies to one uid (or uid/gid range)."""

    connect: Connect = Connect(False, 0)
    own: tuple[Own, ...] = ()
    send: tuple[Xmit, ...] = ()
    receive: tuple[Xmit, ...] = ()

    def wire(self) -> list[object]:
        return [
            self.connect.allow,
            self.connect.priority,
            [[o.allow, o.priority, o.prefix, o.name] for o in self.own],
            [x.wire() for x in self.send],
            [x.wire() for x in self.receive],
        ]


@dataclass(frozen=True, slots=True)
class Range:
    """A batch for the uids ``first``..``last`` (``group``: the members of those gids)."""

    group: bool
    first: int
    last: int
    batch: Batch


@dataclass(frozen=True, slots=True)
class Policy:
    """One listener's whole policy. ``uids`` maps a uid (or :data:`ANY_UID`, the default) to
    its batch; ``ranges`` are the group and console rules."""

    uids: tuple[tuple[int, Batch], ...]
    ranges: tuple[Range, ...] = ()
    selinux: tuple[tuple[str, str], ...] = ()
    apparmor: bool = False
    bus_type: str = "session"
    notes: tuple[str, ...] = field(default=(), compare=False)

    def wire(self) -> list[object]:
        """The body of the ``POLICY_SIGNATURE`` struct."""
        return [
            [[uid, batch.wire()] for uid, batch in self.uids],
            [[r.group, r.first, r.last, r.batch.wire()] for r in self.ranges],
            [list(pair) for pair in self.selinux],
            self.apparmor,
            self.bus_type,
        ]

    def variant(self) -> Variant:
        """The ``v`` argument of ``AddListener`` and ``SetPolicy``."""
        return Variant(POLICY_SIGNATURE, self.wire())


def session_policy(uid: int) -> Policy:
    """A session bus's policy: the bus's user may connect, own any name and send and receive
    anything (as ``session.conf`` allows); other users may not connect (dbus-daemon's rule
    for a session bus without ``<allow user=...>``)."""
    rules = Batch(
        connect=Connect(False, 1),
        own=(Own(True, 2),),
        send=(Xmit(True, 3),),
        receive=(Xmit(True, 4),),
    )
    mine = Batch(connect=Connect(True, 5), own=rules.own, send=rules.send, receive=rules.receive)
    return Policy(uids=((ANY_UID, rules), (uid, mine)), bus_type="session")
