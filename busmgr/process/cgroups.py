"""The cgroup v2 files: the only code that reads or writes them.

Where a writable cgroup v2 hierarchy exists, every job instance gets a leaf cgroup (the layout is
:mod:`busmgr.scope`'s business) and its processes are born inside it (see
:mod:`busmgr.process.spawning`). These helpers find the hierarchy, list, kill, create and remove
cgroups, and move the calling process in and out of one. Errors that a caller must act on raise
:class:`CgroupError`; a cgroup that is already gone is never an error.
"""

from __future__ import annotations

import errno as errno_mod
import os
import re

__all__ = [
    "CgroupError",
    "cgroup2_mount",
    "cgroup_create",
    "cgroup_join",
    "cgroup_kill",
    "cgroup_of",
    "cgroup_pids",
    "cgroup_populated",
    "cgroup_remove",
    "cgroup_return",
    "own_cgroup_procs",
]


class CgroupError(OSError):
    """A cgroup operation that must succeed did not (creating a job's leaf, joining it)."""


def cgroup2_mount() -> tuple[str, str] | None:
    """``(mount point, own path)`` of the cgroup v2 hierarchy this process is in, or None.

    The own path is what ``/proc/self/cgroup`` says (``0::/PATH``), relative to the mount's
    root as ``/proc/self/mountinfo`` gives it (a container may mount only a subtree).
    """
    own = cgroup_of(os.getpid())
    if own is None:
        return None
    try:
        with open("/proc/self/mountinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        left, sep, right = line.partition(" - ")
        if not sep or right.split()[0] != "cgroup2":
            continue
        fields = left.split()
        root, mountpoint = _unoctal(fields[3]), _unoctal(fields[4])
        if root == "/" or own == root or own.startswith(root.rstrip("/") + "/"):
            rel = own if root == "/" else own[len(root.rstrip("/")) :] or "/"
            return mountpoint, rel
    return None


def _unoctal(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as ``\\ooo``."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def cgroup_of(pid: int) -> str | None:
    """The cgroup v2 path of ``pid`` (``/a/b``), or None if it is gone or there is no v2 line."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            for line in f:
                if line.startswith("0::"):
                    return line[3:].rstrip("\n").removesuffix(" (deleted)")
    except OSError:
        pass
    return None


def cgroup_pids(path: str) -> list[int]:
    """The processes in cgroup directory ``path`` (not its children), sorted; [] if it is gone.

    Exited processes are not listed, even before they are reaped."""
    try:
        with open(os.path.join(path, "cgroup.procs")) as f:
            return sorted(int(x) for x in f.read().split())
    except (FileNotFoundError, ProcessLookupError):
        return []


def cgroup_populated(path: str) -> bool:
    """Whether any live process is in ``path`` or below (``cgroup.events``)."""
    try:
        with open(os.path.join(path, "cgroup.events")) as f:
            for line in f:
                key, _, value = line.partition(" ")
                if key == "populated":
                    return value.strip() == "1"
    except FileNotFoundError:
        return False
    return bool(cgroup_pids(path))


def cgroup_kill(path: str) -> bool:
    """SIGKILL every process in ``path`` and below at once (``cgroup.kill``, Linux 5.14);
    False where that file does not exist (the caller then signals pid by pid)."""
    try:
        with open(os.path.join(path, "cgroup.kill"), "w") as f:
            f.write("1")
    except FileNotFoundError:
        return False
    return True


def cgroup_create(path: str) -> None:
    """Make the directory ``path`` (a leaf, or the manager's own parent of them)."""
    try:
        os.mkdir(path, 0o755)
    except FileExistsError:
        pass
    except OSError as e:
        raise CgroupError(e.errno, f'cgroup "{path}": {e.strerror}') from None


def cgroup_remove(path: str) -> bool:
    """Remove an empty cgroup directory; False if it still has processes or children."""
    try:
        os.rmdir(path)
    except FileNotFoundError:
        return True
    except OSError as e:
        if e.errno in (errno_mod.EBUSY, errno_mod.ENOTEMPTY):
            return False
        raise
    return True


_mount_cache: dict[int, tuple[str, str]] = {}


def own_cgroup_procs() -> str:
    """The ``cgroup.procs`` file of the caller's current cgroup, to move back to.

    The mount is looked up once per process (mountinfo is long); the own cgroup is read each
    time, so a manager that an administrator moved elsewhere is moved back *there*."""
    pid = os.getpid()
    cached = _mount_cache.get(pid)
    if cached is None:
        found = cgroup2_mount()
        if found is None:
            raise CgroupError(errno_mod.ENOENT, "this process is in no cgroup v2 hierarchy")
        mount, rel = found
        full = cgroup_of(pid) or rel
        cached = _mount_cache[pid] = (mount, full[: len(full) - len(rel)] if rel != "/" else "")
    mount, root = cached
    own = (cgroup_of(pid) or "/")[len(root) :] or "/"
    return os.path.join(mount + own.rstrip("/"), "cgroup.procs")


def cgroup_join(path: str) -> None:
    """Move the calling process into the cgroup directory ``path``; raises :class:`CgroupError`."""
    try:
        with open(os.path.join(path, "cgroup.procs"), "w") as f:
            f.write("0")
    except OSError as e:
        raise CgroupError(e.errno, f'cgroup "{path}": {e.strerror or e}') from None


def cgroup_return(procs: str) -> None:
    """Move the calling process back to the cgroup whose ``cgroup.procs`` is ``procs`` (from
    :func:`own_cgroup_procs`). Raises ``OSError``: a caller that cannot get home is stranded
    in a job's leaf, which it must treat as fatal."""
    with open(procs, "w") as f:
        f.write("0")
