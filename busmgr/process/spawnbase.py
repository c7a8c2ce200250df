"""What every spawn path shares: its errors, the sockets it hands over, the program it runs.

:mod:`busmgr.process.spawning` chooses a path (``posix_spawn``, the clone library in
:mod:`busmgr.process.clonepath`, the Python fork in :mod:`busmgr.process.forkpath`); all of them
speak in the values defined here, so none imports another:

* :class:`SpawnError`: a process could not be started, named by the setup step that failed, in
  the same words on every path;
* :class:`StrandedError`: the manager could not leave a job's cgroup (fatal, not an
  ``OSError``, so no handler of failed spawns swallows it);
* :class:`Listen` and :func:`fd_moves`: the listening sockets of ``LISTEN_FDS``, and the
  ``dup2``/``close`` steps that put them at 3, 4, ... (see "Socket activation" in
  :mod:`busmgr.process.spawning`);
* :data:`RESET_SIGNALS`: every signal a child gets back to its default disposition;
* :func:`which`: the file ``execvpe`` would run, searched in the job's ``PATH``.

Invariants: nothing here forks, execs or changes the manager's state; :func:`fd_moves`,
:func:`spare_fd` and :meth:`Listen.env` are pure.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = [
    "LISTEN_FDS_START",
    "RESET_SIGNALS",
    "FdMove",
    "Listen",
    "SpawnError",
    "StrandedError",
    "fd_moves",
    "spare_fd",
    "which",
]

#: Descriptor number of the first passed socket (SD_LISTEN_FDS_START).
LISTEN_FDS_START = 3

# Every signal whose disposition a child must get back to SIG_DFL (the manager ignores SIGPIPE,
# as Python does, and catches SIGCHLD/SIGTERM/SIGINT/SIGHUP).
RESET_SIGNALS = frozenset(signal.valid_signals()) - {signal.SIGKILL, signal.SIGSTOP}


class SpawnError(OSError):
    """A process could not be started; ``str()`` names the step and the error.

    ``step`` is what was being done (``exec "/usr/bin/foo"``, ``setuid "nobody"``), ``detail``
    why it failed (``No such file or directory``), ``errno`` the error number when there is one.
    """

    def __init__(self, step: str, detail: str | None = None, errno: int = 0) -> None:
        # A single argument is a complete message (callers outside this module use that form).
        super().__init__(step if detail is None else f"{step}: {detail}")
        self.step = step
        self.detail = detail or ""
        self.errno = errno


@dataclass(frozen=True, slots=True)
class Listen:
    """Listening sockets for a main process: their descriptors (in the manager) and names.

    Invariant: ``names`` has one entry per descriptor, none containing ``:``.
    """

    fds: tuple[int, ...]
    names: tuple[str, ...]

    def env(self) -> dict[str, str]:
        """``LISTEN_FDS`` and ``LISTEN_FDNAMES`` (``LISTEN_PID`` is set by the spawn path)."""
        return {"LISTEN_FDS": str(len(self.fds)), "LISTEN_FDNAMES": ":".join(self.names)}


FdMove = tuple[int, int, int]  # (POSIX_SPAWN_DUP2, source, target) or (POSIX_SPAWN_CLOSE, fd, 0)


def fd_moves(sources: tuple[int, ...], first: int, spare: int) -> list[FdMove]:
    """The ``dup2``/``close`` steps that put ``sources`` at ``first``, ``first + 1``, ...

    Done in order, a ``dup2`` onto a target must not destroy a source still to be moved; when
    one would, every source is first copied to ``spare``, ``spare + 1``, ... (above every
    descriptor involved), moved from there and the copies closed. A source already at its
    target is ``dup2``'d onto itself, which clears its close-on-exec flag in ``posix_spawn``.
    Pure: tested without descriptors.
    """
    targets = [first + i for i in range(len(sources))]
    clash = any(
        sources[j] == targets[i] for i in range(len(sources)) for j in range(i + 1, len(sources))
    )
    dup2, close = os.POSIX_SPAWN_DUP2, os.POSIX_SPAWN_CLOSE
    if not clash:
        return [(dup2, src, dst) for src, dst in zip(sources, targets, strict=True)]
    staged = [spare + i for i in range(len(sources))]
    moves: list[FdMove] = [(dup2, src, tmp) for src, tmp in zip(sources, staged, strict=True)]
    moves += [(dup2, tmp, dst) for tmp, dst in zip(staged, targets, strict=True)]
    moves += [(close, tmp, 0) for tmp in staged]
    return moves


def spare_fd(*groups: Iterable[int]) -> int:
    """The first descriptor number above every one in ``groups`` (3 when they are empty)."""
    return max((fd for group in groups for fd in group), default=2) + 1


class StrandedError(Exception):
    """The manager moved itself into a job's cgroup to spawn and could not move back.

    Fatal for the manager (see "Cgroups" in :mod:`busmgr.process.spawning`). ``pid`` is the
    process that was spawned (0 if the spawn itself failed too): it exists and must be watched
    like any other.
    """

    def __init__(self, message: str, pid: int) -> None:
        super().__init__(message)
        self.pid = pid


def which(name: str, env: Mapping[str, str], cwd: str | None) -> str:
    """The file ``execvpe`` would run for ``name``, searching the job's ``PATH``, not ours.

    A name with a slash is returned as is (joined to ``cwd`` when relative). If nothing is
    found the name itself is returned, so exec fails with the natural error.
    """
    if "/" in name:
        return os.path.join(cwd, name) if cwd and not name.startswith("/") else name
    for d in env.get("PATH", os.defpath).split(os.pathsep):
        candidate = os.path.join(d or ".", name)
        with contextlib.suppress(OSError):
            st = os.stat(candidate)
            if stat.S_ISREG(st.st_mode) and os.access(candidate, os.X_OK):
                return candidate
    return name
