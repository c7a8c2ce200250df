"""Naming a bus in messages, and the error for a bus that cannot be reached.

A leaf of the bus package with no dbus-fast import: the command line's fast path
(:mod:`busmgr.bus.client` over :mod:`busmgr.bus.wire`) and the manager's link
(:mod:`busmgr.bus.link`) report an unreachable bus the same way.

An address is a D-Bus address string; ``None`` (or dbus-fast's ``BusType.SESSION``) stands for
"the session bus, whose address nobody told us", and ``BusType.SYSTEM`` for the system bus.
"""

from __future__ import annotations

__all__ = ["ConnectError", "describe_address", "without_guid"]


def describe_address(address: object) -> str:
    """A human phrase for ``address``, as used in error messages."""
    if address is None or getattr(address, "name", None) == "SESSION":
        return "the session bus (DBUS_SESSION_BUS_ADDRESS is not set)"
    if getattr(address, "name", None) == "SYSTEM":
        return "the system bus"
    return str(address)


class ConnectError(Exception):
    """The bus could not be reached; ``str()`` is one line naming the address and the reason."""

    def __init__(self, address: object, reason: str) -> None:
        super().__init__(f"cannot connect to {describe_address(address)}: {reason}")
        self.address = address
        self.reason = reason


def without_guid(address: str) -> str:
    """``address`` without the ``guid=`` of its entries: the address of a bus the manager
    starts again where it listened. The restarted daemon has a new guid, and libdbus and
    sd-bus refuse a server whose guid is not the one the address names, so the address handed
    to jobs and clients names none."""
    entries = []
    for entry in address.split(";"):
        transport, colon, pairs = entry.partition(":")
        kept = [p for p in pairs.split(",") if p and not p.startswith("guid=")]
        entries.append(transport + colon + ",".join(kept))
    return ";".join(entries)
