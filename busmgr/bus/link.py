"""The manager's link to its bus: connect, own names, export objects, subscribe, disconnect.

Everything that talks to the bus daemon about the connection itself goes through
:class:`BusLink`; the rest of the bus layer asks it. Errors a user can cause (a bad address, a
missing socket, a name the policy refuses) become :class:`LinkError` with one line naming the
address or the name, never a traceback. Match rules added through :meth:`BusLink.add_match` are
remembered, and a failed ``AddMatch`` is reported to the caller (and logged), not dropped.

Bus loss: :attr:`BusLink.on_lost` is called once when the connection ends without the manager
asking (the core never learns about the bus going away; what to do is the runtime's policy).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from dbus_fast import BusType, Message, MessageType, NameFlag, RequestNameReply
from dbus_fast.aio import MessageBus
from dbus_fast.errors import DBusError
from dbus_fast.service import ServiceInterface

from busmgr.bus.address import ConnectError, describe_address
from busmgr.bus.transport import harden

log = logging.getLogger("busmgr")

__all__ = [
    "DBUS",
    "DBUS_PATH",
    "BusLink",
    "ConnectError",
    "LinkError",
    "connect",
    "describe_address",
]

DBUS = "org.freedesktop.DBus"
DBUS_PATH = "/org/freedesktop/DBus"

Handler = Callable[[Message], Message | bool | None]


class LinkError(Exception):
    """The manager cannot use its bus (connect, or own a name): one line, for the user."""


async def connect(address: str | BusType) -> MessageBus:
    """A connected :class:`MessageBus` for ``address``.

    Raises :class:`ConnectError` for anything that keeps us off the bus: a bad address, a
    missing or refusing socket, failed authentication. The caller disconnects the bus.
    """
    try:
        if isinstance(address, BusType):
            bus = MessageBus(bus_type=address)
        else:
            bus = MessageBus(bus_address=address)
        return await bus.connect()
    except OSError as e:
        reason = e.strerror or str(e) or type(e).__name__
        raise ConnectError(address, reason) from None
    except Exception as e:
        # dbus-fast documents "any other connection error" as plain Exception (bad address,
        # authentication, the daemon hanging up during the handshake); all of them mean the
        # same thing to a caller, and the message says which one it was.
        raise ConnectError(address, str(e) or type(e).__name__) from None


class BusLink:
    """One connection of the manager to its bus. ``address`` is where it is (empty until
    :meth:`connect`); ``bus`` the dbus-fast connection."""

    def __init__(self) -> None:
        self.bus: MessageBus | None = None
        self.address = ""
        self.on_lost: Callable[[], None] | None = None
        self._closing = False
        self._matches: list[str] = []

    @property
    def connected(self) -> bool:
        return self.bus is not None and self.bus.connected

    @property
    def unique_name(self) -> str:
        return (self.bus.unique_name or "") if self.bus is not None else ""

    def require(self) -> MessageBus:
        if self.bus is None:
            raise LinkError("not connected to a bus")
        return self.bus

    async def connect(self, address: str) -> None:
        """Connect to ``address``; raises :class:`LinkError` naming it and the reason."""
        try:
            bus = await connect(address)
        except ConnectError as e:
            raise LinkError(str(e)) from None
        harden(bus)
        self.bus = bus
        self.address = address
        done = asyncio.ensure_future(bus.wait_for_disconnect())
        done.add_done_callback(self._disconnected)

    def _disconnected(self, fut: asyncio.Future[object]) -> None:
        if not fut.cancelled():
            fut.exception()  # consumed: a lost connection is reported below, not as a traceback
        if not self._closing and self.on_lost is not None:
            self.on_lost()

    async def own(self, name: str, *, required: bool = True) -> bool:
        """Own ``name`` (no queueing). True if we own it. When another connection owns it:
        False, or :class:`LinkError` if ``required``. A refusal by the bus policy is always a
        :class:`LinkError` when ``required``, and False (with its reason logged) otherwise."""
        reason = await self.try_own(name)
        if reason is None:
            return True
        if required:
            raise LinkError(f"cannot own {name} on {self.address}: {reason}")
        log.info("cannot own %s: %s", name, reason)
        return False

    async def try_own(self, name: str) -> str | None:
        """Own ``name`` (no queueing): None if we own it now, else why not, in one line (the
        bus policy's refusal, or that another connection owns it)."""
        bus = self.require()
        try:
            reply = await bus.request_name(name, NameFlag.DO_NOT_QUEUE)
        except DBusError as e:
            return e.text
        if reply in (RequestNameReply.PRIMARY_OWNER, RequestNameReply.ALREADY_OWNER):
            return None
        return "another connection owns it: is another busmgr running there?"

    def redeliver(self, msg: Message) -> None:
        """Handle ``msg`` again as if it had just arrived (every handler, then the exported
        objects): a call that :class:`busmgr.bus.auth.CallerGate` held until its sender was
        known. dbus-fast has no public way in; ``_process_message`` is the one its reader
        calls for every message (pinned by the ``dbus-fast<6`` requirement)."""
        if self.connected:
            self.require()._process_message(msg)

    def export(self, path: str, interface: ServiceInterface) -> None:
        self.require().export(path, interface)

    def unexport(self, path: str, interface: ServiceInterface) -> None:
        if self.bus is not None:
            self.bus.unexport(path, interface)

    def add_handler(self, handler: Handler) -> None:
        self.require().add_message_handler(handler)

    def send(self, msg: Message) -> None:
        """Send without waiting; a write that fails is the link's to report (on_lost)."""
        if not self.connected:
            return
        written = self.require().send(msg)
        written.add_done_callback(_consume)

    async def call(self, msg: Message) -> Message:
        """One method call and its reply (an error reply is returned, not raised)."""
        reply = await self.require().call(msg)
        if reply is None:  # only a NO_REPLY_EXPECTED call gets none, and we never send one
            raise LinkError(f"no reply to {msg.member}")
        return reply

    async def call_daemon(
        self, member: str, signature: str = "", body: list[object] | None = None
    ) -> Message:
        """A method of the bus daemon itself (``org.freedesktop.DBus``)."""
        return await self.call(
            Message(
                destination=DBUS,
                path=DBUS_PATH,
                interface=DBUS,
                member=member,
                signature=signature,
                body=body or [],
            )
        )

    async def add_match(self, rule: str) -> None:
        """Subscribe to the signals ``rule`` matches; raises :class:`LinkError` with the bus
        daemon's reason if it refuses."""
        reply = await self.call_daemon("AddMatch", "s", [rule])
        if reply.message_type is MessageType.ERROR:
            reason = reply.body[0] if reply.body else reply.error_name
            raise LinkError(f"AddMatch {rule}: {reason}")
        self._matches.append(rule)

    async def close(self, timeout: float = 2.0) -> None:
        """Disconnect (the manager is leaving); ``on_lost`` is not called.

        Everything sent before (replies to callers above all) is written out first: a call to
        the bus daemon is answered only after the messages queued before it went out."""
        self._closing = True
        bus = self.bus
        if bus is not None and bus.connected:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.call_daemon("GetId"), timeout)
            bus.disconnect()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(bus.wait_for_disconnect(), timeout)


def _consume(written: asyncio.Future[object]) -> None:
    if not written.cancelled():
        written.exception()
