"""The names in a job's :class:`~busmgr.jobclass.ExecContext` looked up: users, groups,
capabilities and resource limits, for the two paths that apply them (the clone path in
:mod:`busmgr.process.clonepath`, resolved in the manager before the child exists, and the fork
path in :mod:`busmgr.process.forkpath`, resolved in the child).

Invariants: lookups only, nothing is changed; a name that does not exist raises
:class:`LookupError` with the words a :class:`~busmgr.process.spawnbase.SpawnError` then
carries (``no such user``), the same on both paths. A user or group given as a decimal number
is taken as the id.
"""

from __future__ import annotations

import grp
import pwd
import resource

import prctl

from busmgr.jobclass import CAPABILITIES, decimal

__all__ = ["RLIMIT_NAMES", "cap_last", "cap_number", "getgr", "getpw", "rlim"]

#: A resource limit's number -> its name without ``RLIMIT_`` (``NOFILE``), as steps say it.
RLIMIT_NAMES = {
    getattr(resource, n): n.removeprefix("RLIMIT_")
    for n in dir(resource)
    if n.startswith("RLIMIT_")
}


def getpw(name: str) -> pwd.struct_passwd:
    """The password entry of user ``name`` (a name or a decimal uid)."""
    try:
        uid = decimal(name)
        return pwd.getpwuid(uid) if uid is not None else pwd.getpwnam(name)
    except KeyError:
        raise LookupError("no such user") from None


def getgr(name: str) -> int:
    """The gid of group ``name`` (a name or a decimal gid)."""
    try:
        gid = decimal(name)
        return gid if gid is not None else grp.getgrnam(name).gr_gid
    except KeyError:
        raise LookupError("no such group") from None


def rlim(value: int | None) -> int:
    """A limit's value for ``setrlimit``: None (``unlimited``) is ``RLIM_INFINITY``."""
    return resource.RLIM_INFINITY if value is None else value


def cap_number(name: str) -> int:
    """``cap_net_bind_service`` (as ``caps keep`` stores it), ``CAP_NET_BIND_SERVICE`` or
    ``net_bind_service`` -> 10."""
    word = name.strip().lower()
    num = CAPABILITIES.get(word if word.startswith("cap_") else "cap_" + word)
    if num is None:
        raise LookupError(f"unknown capability {name!r}")
    return num


def cap_last() -> int:
    """One past the highest capability the running kernel knows."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read()) + 1
    except OSError:
        return prctl.CAP_LAST_CAP + 1
