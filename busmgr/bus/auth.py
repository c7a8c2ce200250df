"""Caller policy: who may call what on the names the manager owns.

On the system bus only root may call methods that change anything (SPEC §4): the shipped policy
file says so too, but the manager does not rely on it and checks each caller's uid itself,
asking the bus daemon (``GetConnectionUnixUser``). In session mode the bus is the user's own and
every caller is trusted. Reading (introspection, properties, ``ListJobs``, ``GetJob``) is open to
everyone in both modes.
"""

from __future__ import annotations

from typing import Protocol

from busmgr.errors import ManagerError
from busmgr.options import Mode

__all__ = ["CallerPolicy", "Credentials"]


class Credentials(Protocol):
    async def unix_user(self, connection: str) -> int | None:
        """The uid behind a connection (a unique name), or None when the daemon cannot tell."""
        ...


class CallerPolicy:
    """Decides whether ``sender`` may call the control method ``member``."""

    def __init__(self, mode: Mode, credentials: Credentials) -> None:
        self.mode = mode
        self._credentials = credentials

    async def authorize(self, sender: str, member: str) -> None:
        """Return if ``sender`` may call ``member``; raise ``AccessDenied`` otherwise."""
        if self.mode is not Mode.SYSTEM:
            return
        uid = await self._credentials.unix_user(sender) if sender else None
        if uid != 0:
            who = f"uid {uid}" if uid is not None else "an unknown caller"
            raise ManagerError(
                "AccessDenied", f"{member}: only root may control jobs on the system bus ({who})"
            )
