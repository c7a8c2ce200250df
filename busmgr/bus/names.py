"""Who owns which bus name: the readiness signal of ``dbus NAME`` jobs.

For each watched name we first subscribe to ``NameOwnerChanged`` for it (``arg0`` match) and
only then ask ``GetNameOwner``, so an owner that appears in between is never missed. The
callback gets the new owner's unique name, or ``""`` when the name lost its owner; it runs
from the message handler, once per change, in the order the bus daemon reported them.

:meth:`NameWatcher.owner_pid` asks the daemon which process is behind a connection: the
manager counts a name as its job's only when the owner is one of the job's processes.
"""

from __future__ import annotations

from collections.abc import Callable

from dbus_fast import Message, MessageType

from busmgr.bus.link import DBUS, BusLink

__all__ = ["NameWatcher"]

OwnerCallback = Callable[[str, str], None]  # (name, owner or "")


class NameWatcher:
    """Tracks the owners of the names it was asked to watch (the readiness layer's
    :class:`~busmgr.readiness.busname.NameOwners`, and the caller policy's credentials)."""

    def __init__(self, link: BusLink, callback: OwnerCallback) -> None:
        self._link = link
        self._callback = callback
        self.owners: dict[str, str] = {}
        self._watched: set[str] = set()
        link.add_handler(self._on_message)

    def owner(self, name: str) -> str:
        return self.owners.get(name, "")

    async def watch(self, name: str) -> str:
        """Start watching ``name``; returns its current owner (``""`` if none)."""
        if name in self._watched:
            return self.owner(name)
        self._watched.add(name)
        rule = (
            f"type='signal',sender='{DBUS}',interface='{DBUS}',"
            f"member='NameOwnerChanged',arg0='{name}'"
        )
        try:
            await self._link.add_match(rule)
        except Exception:
            self._watched.discard(name)  # not watched after all: a later watch tries again
            raise
        reply = await self._link.call_daemon("GetNameOwner", "s", [name])
        if reply.message_type is MessageType.METHOD_RETURN:
            self._set(name, reply.body[0])
        return self.owner(name)

    async def current_owner(self, name: str) -> str:
        """The owner of ``name`` now, as the daemon answers ``GetNameOwner`` (``""``: none)."""
        reply = await self._link.call_daemon("GetNameOwner", "s", [name])
        if reply.message_type is MessageType.METHOD_RETURN and reply.body:
            return str(reply.body[0])
        return ""

    async def owner_pid(self, owner: str) -> int | None:
        """The pid of the process behind the connection ``owner`` (a unique name), or None
        when the daemon cannot tell (the connection is gone, or the bus does not know pids)."""
        reply = await self._link.call_daemon("GetConnectionUnixProcessID", "s", [owner])
        if reply.message_type is MessageType.METHOD_RETURN and reply.body:
            return int(reply.body[0])
        return None

    async def unix_user(self, connection: str) -> int | None:
        """The uid behind a connection (a unique name), or None when the daemon cannot tell."""
        reply = await self._link.call_daemon("GetConnectionUnixUser", "s", [connection])
        if reply.message_type is MessageType.METHOD_RETURN and reply.body:
            return int(reply.body[0])
        return None

    def _set(self, name: str, owner: str) -> None:
        if self.owners.get(name, "") == owner:
            return
        if owner:
            self.owners[name] = owner
        else:
            self.owners.pop(name, None)
        self._callback(name, owner)

    def _on_message(self, msg: Message) -> None:
        if (
            msg.message_type is MessageType.SIGNAL
            and msg.member == "NameOwnerChanged"
            and msg.sender == DBUS
            and msg.body
            and msg.body[0] in self._watched
        ):
            self._set(msg.body[0], msg.body[2])
