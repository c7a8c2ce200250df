"""Caller policy: who may call what on the names the manager owns.

On the system bus only root may call a method that changes anything (SPEC §4). The shipped
policy files say so too, but the manager does not rely on them: it checks each caller's uid
itself, asking the bus daemon (``GetConnectionUnixUser``). In session mode the bus is the user's
own and every caller is trusted.

The check covers every method of every name the manager owns (``org.busmgr.Manager1``, and
``org.freedesktop.systemd1`` in activator mode, whose ``SetEnvironment`` changes what root's
jobs run): all of them arrive on one connection, and :class:`CallerGate` is the first handler
there that looks at method calls. A call is let through when it is one of :data:`OPEN_METHODS`
(reading: introspection, ``Peer``, property reads, ``ListJobs``, ``GetJob``, ``GetTimeline``,
``ListSkipped``, ``GetInstance``, ``GetInstanceByName``; not ``GetEnv``/``ListEnv``: the
activation environment may carry credentials), when it comes from
the bus daemon itself (which forwards ``UpdateActivationEnvironment`` after its own check; see
:mod:`busmgr.environment` for what is done with it), or when its sender is root. Every other
call gets ``org.busmgr.Error.AccessDenied``, whatever its object, interface or member, so a
method added later is closed until it is added to :data:`OPEN_METHODS` on purpose.

The uid of a connection never changes and a unique name is never reused on a bus, so answers
are cached (a bounded number of senders). A call from a sender not known yet is held, in
arrival order, until the daemon answered, and then either delivered as if it had just arrived
or refused. :meth:`CallerPolicy.authorize` makes the same decision for code that runs a control
operation, as a second line behind the gate.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import Protocol

from dbus_fast import Message, MessageFlag, MessageType

from busmgr import ERROR_PREFIX, JOB_INTERFACE, MANAGER_INTERFACE
from busmgr.bus.link import DBUS, BusLink
from busmgr.errors import ManagerError
from busmgr.options import Mode

log = logging.getLogger("busmgr")

__all__ = ["OPEN_METHODS", "CallerGate", "CallerPolicy", "Credentials"]

#: (interface, member) of the methods anyone may call: they only read.
OPEN_METHODS = frozenset(
    {
        ("org.freedesktop.DBus.Introspectable", "Introspect"),
        ("org.freedesktop.DBus.Peer", "Ping"),
        ("org.freedesktop.DBus.Peer", "GetMachineId"),
        ("org.freedesktop.DBus.Properties", "Get"),
        ("org.freedesktop.DBus.Properties", "GetAll"),
        (MANAGER_INTERFACE, "ListJobs"),
        (MANAGER_INTERFACE, "GetJob"),
        (MANAGER_INTERFACE, "GetTimeline"),
        (MANAGER_INTERFACE, "ListSkipped"),
        (JOB_INTERFACE, "GetInstance"),
        (JOB_INTERFACE, "GetInstanceByName"),
    }
)

#: Senders whose uid is remembered (least recently used ones are forgotten first).
CACHE_SIZE = 4096

_UNKNOWN = -1  # not a uid: "not asked yet"


class Credentials(Protocol):
    async def unix_user(self, connection: str) -> int | None:
        """The uid behind a connection (a unique name), or None when the daemon cannot tell."""
        ...


class CallerPolicy:
    """Decides whether a sender may call a method (see the module docstring)."""

    def __init__(self, mode: Mode, credentials: Credentials) -> None:
        self.mode = mode
        self._credentials = credentials
        self._uids: OrderedDict[str, int | None] = OrderedDict()
        self._asking: dict[str, asyncio.Future[int | None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @staticmethod
    def is_open(interface: str | None, member: str | None) -> bool:
        """Whether anyone may call ``interface.member`` (a call without an interface is not:
        the member alone does not say what it would do)."""
        return (interface or "", member or "") in OPEN_METHODS

    @property
    def checks(self) -> bool:
        """Whether callers are checked at all (system mode)."""
        return self.mode is Mode.SYSTEM

    def known_uid(self, sender: str) -> int | None:
        """The cached uid of ``sender``: None if the daemon could not tell, ``-1`` if not
        asked yet."""
        if sender not in self._uids:
            return _UNKNOWN
        self._uids.move_to_end(sender)
        return self._uids[sender]

    def lookup(self, sender: str) -> asyncio.Future[int | None]:
        """The uid of ``sender`` (cached, or asked once however many calls wait for it)."""
        pending = self._asking.get(sender)
        if pending is not None:
            return pending
        fut: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        uid = self.known_uid(sender)
        if uid != _UNKNOWN:
            fut.set_result(uid)
            return fut
        self._asking[sender] = fut
        task = asyncio.get_running_loop().create_task(self._ask(sender, fut))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return fut

    async def _ask(self, sender: str, fut: asyncio.Future[int | None]) -> None:
        uid: int | None = None
        try:
            uid = await self._credentials.unix_user(sender) if sender else None
        except Exception as err:  # no answer is an answer: the caller is refused
            log.info("cannot learn who %s is: %s", sender, err)
        self._asking.pop(sender, None)
        self._uids[sender] = uid
        while len(self._uids) > CACHE_SIZE:
            self._uids.popitem(last=False)
        if not fut.done():
            fut.set_result(uid)

    @staticmethod
    def refusal(member: str | None, uid: int | None) -> str:
        who = f"uid {uid}" if uid is not None else "an unknown caller"
        return f"{member}: only root may control busmgr on the system bus ({who})"

    async def authorize(self, sender: str, member: str) -> None:
        """Return if ``sender`` may call the control method ``member``; raise
        ``AccessDenied`` otherwise."""
        if not self.checks:
            return
        uid = await self.lookup(sender)
        if uid != 0:
            raise ManagerError("AccessDenied", self.refusal(member, uid))


class CallerGate:
    """The message handler that judges every method call before anything else acts on it.

    Add it to the link before any handler that acts on method calls. It returns None (let
    the call through), an error reply, or True (the call is held until its sender is known,
    then delivered with :meth:`BusLink.redeliver` or refused).
    """

    def __init__(self, link: BusLink, policy: CallerPolicy) -> None:
        self._link = link
        self._policy = policy

    def __call__(self, msg: Message) -> Message | bool | None:
        policy = self._policy
        if msg.message_type is not MessageType.METHOD_CALL or not policy.checks:
            return None
        sender = msg.sender or ""
        if sender == DBUS or policy.is_open(msg.interface, msg.member):
            return None
        uid = policy.known_uid(sender)
        if uid == 0:
            return None
        if uid != _UNKNOWN:
            return self._refuse(msg, uid)
        policy.lookup(sender).add_done_callback(lambda fut: self._decided(msg, fut))
        return True

    def _decided(self, msg: Message, fut: asyncio.Future[int | None]) -> None:
        uid = fut.result()
        if uid == 0:
            self._link.redeliver(msg)
            return
        reply = self._refuse(msg, uid)
        if reply is not True:
            self._link.send(reply)

    def _refuse(self, msg: Message, uid: int | None) -> Message | bool:
        """The AccessDenied reply (True, nothing to send, for a call that wants no reply)."""
        log.debug("refused %s.%s from %s (uid %s)", msg.interface, msg.member, msg.sender, uid)
        if msg.flags & MessageFlag.NO_REPLY_EXPECTED:
            return True
        text = self._policy.refusal(msg.member, uid)
        return Message.new_error(msg, ERROR_PREFIX + "AccessDenied", text)
