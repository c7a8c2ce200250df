"""Errors the manager reports to its callers, by their ``org.busmgr.Error`` short name.

The bus layer turns a :class:`ManagerError` into a D-Bus error ``org.busmgr.Error.<name>``;
the CLI prints its message. Names are fixed by SPEC §3: UnknownJob, UnknownInstance,
AlreadyStarted, AlreadyStopped, JobFailed, NoProvider, AccessDenied, InvalidArgs; beside them
ShuttingDown (a control call while the manager stops) and UnknownVariable (``GetEnv``).
"""

from __future__ import annotations

ERROR_NAMES = frozenset(
    {
        "UnknownJob",
        "UnknownInstance",
        "AlreadyStarted",
        "AlreadyStopped",
        "JobFailed",
        "NoProvider",
        "AccessDenied",
        "InvalidArgs",
        "ShuttingDown",
        "Busy",
        "NotSupported",
        "UnknownVariable",
    }
)


class ManagerError(Exception):
    """A refused or failed request. ``name`` is one of :data:`ERROR_NAMES`."""

    def __init__(self, name: str, message: str) -> None:
        if name not in ERROR_NAMES:
            raise ValueError(f"unknown error name {name!r}")
        super().__init__(message)
        self.name = name
        self.message = message

    def __str__(self) -> str:
        return f"{self.name}: {self.message}"
