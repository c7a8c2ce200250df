"""The set of processes that belong to one job instance, and how to signal all of them.

This module is the one place that answers "which processes are this job's?"; the state machine
only asks :meth:`ProcessScope.alive` and :meth:`ProcessScope.kill`, the bus asks
:meth:`ProcessScope.pids`, readiness asks :meth:`ProcessScope.contains`.

Two models, chosen once per manager process by :func:`setup_cgroups`:

* **cgroup v2** (wherever this process sits in a writable cgroup2 hierarchy): the manager makes
  ``<mount><its own cgroup>/busmgr-<pid>/`` and, per job instance, a leaf ``<escaped
  job>[.<escaped instance>]`` (:func:`busmgr.escape.escape`: every byte outside ``[A-Za-z0-9]``
  and a leading digit become ``_xx``, so ``.`` cannot occur inside a part). Every process of the
  job is born in its leaf (:func:`busmgr.process.spawn` with ``cgroup=``), and so is everything
  it forks, double-forked and re-parented daemons included: no process can leave except by
  writing to another cgroup's ``cgroup.procs``, which needs privileges over both. Only leaves
  hold processes and no controller is enabled, so cgroup v2's "no internal processes" rule never
  applies; the manager itself stays in its own cgroup. A leaf is made on the job's first spawn
  and removed when the job is at rest and empty, except the leaf of a job that provides a bus
  name without ``instance``, which waits empty for the next activation (making a cgroup takes the
  kernel's cgroup lock, which migrations elsewhere on the machine may hold for milliseconds);
  ``busmgr-<pid>`` is removed when the manager exits (:meth:`CgroupHierarchy.remove`). The
  hierarchy is a value the supervisor holds (:meth:`CgroupHierarchy.create`), not a module
  global.
* **sessions** (no writable cgroup2: another user's hierarchy, a v1-only machine, or
  ``BUSMGR_CGROUPS=0``): every process a job spawns leads a new session (``setsid``), so the
  job's processes are the members of those sessions; the manager is a child subreaper, so what
  they orphan stays the manager's child. A daemon that calls ``setsid`` itself leaves this
  scope unless it is adopted (:meth:`ProcessScope.adopt`, which expect fork/daemon does for the
  daemon it follows).

Invariant (both models): a scope never names a process it was not given or that did not
descend from one it was given, so stopping a job can never touch a process started outside it
(seed ``000_*``: another script of the same interpreter is never killed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Iterable, Mapping

from busmgr import process
from busmgr.escape import escape

log = logging.getLogger("busmgr")

__all__ = ["CgroupHierarchy", "ProcessScope"]

# Passes over cgroup.procs when signalling pid by pid: a process that forks while being
# signalled adds a pid the previous pass did not see.
_KILL_PASSES = 8


class CgroupHierarchy:
    """The manager's ``busmgr-<pid>`` cgroup directory and the job leaves under it.

    ``base`` is the directory's path in the file system, ``relative`` its path as
    ``/proc/PID/cgroup`` shows it (to tell whether a pid is in a leaf without listing it).
    """

    def __init__(self, base: str, relative: str) -> None:
        self.base = base
        self.relative = relative

    @classmethod
    def create(
        cls, environ: Mapping[str, str] | None = None, *, name: str = "", saved: str | None = None
    ) -> CgroupHierarchy | None:
        """The manager's directory under its own cgroup; None if that is impossible, or if
        ``BUSMGR_CGROUPS=0`` in ``environ`` forces the session model (tests of the fallback
        use it).

        ``name`` is stable for one state directory (``busmgr-<hash>``), so a manager started
        again after a crash finds its predecessor's leaves; ``saved`` is the path a previous
        manager recorded, used first if it still exists (the new manager may sit in another
        cgroup). An existing directory is taken over: the state directory's lock guarantees
        that its manager is gone. Without ``name``, ``busmgr-<pid>`` with a suffix if taken.
        """
        env = os.environ if environ is None else environ
        if env.get("BUSMGR_CGROUPS", "1") == "0":
            return None
        found = process.cgroup2_mount()
        if found is None:
            return None
        mount, own = found
        if saved and saved.startswith(mount + "/") and os.path.isdir(saved):
            return cls(saved, saved[len(mount) :])
        parent = mount + own.rstrip("/")
        if not os.access(parent, os.W_OK):
            return None
        stem = name or f"busmgr-{os.getpid()}"
        for attempt in range(100):
            dirname = stem if attempt == 0 else f"{stem}.{attempt}"
            try:
                os.mkdir(os.path.join(parent, dirname), 0o755)
            except FileExistsError:
                if name:  # ours: a previous manager of the same state directory left it
                    return cls(os.path.join(parent, dirname), own.rstrip("/") + "/" + dirname)
                continue
            except OSError as e:
                log.info("no cgroup for jobs (%s): following sessions instead", e.strerror)
                return None
            return cls(os.path.join(parent, dirname), own.rstrip("/") + "/" + dirname)
        return None

    def leaves(self) -> list[str]:
        """The paths of the leaves that exist now."""
        with contextlib.suppress(FileNotFoundError):
            return sorted(e.path for e in os.scandir(self.base) if e.is_dir(follow_symlinks=False))
        return []

    def clear(self, leaf: str) -> None:
        """Kill every process of a leaf nobody owns any more (a job not re-adopted) and remove
        the leaf if it is empty already (else at exit, or by the next manager)."""
        if process.cgroup_populated(leaf):
            process.cgroup_kill(leaf)
        with contextlib.suppress(OSError):
            process.cgroup_remove(leaf)

    def leaf(self, job: str, instance: str) -> tuple[str, str]:
        """``(path, relative path)`` of the leaf of one job instance (not created here)."""
        name = escape(job) + ("." + escape(instance) if instance else "")
        return os.path.join(self.base, name), f"{self.relative}/{name}"

    async def remove(self) -> list[str]:
        """Remove every empty leaf, then the directory itself; returns what could not be
        removed because it still has processes (SIGKILLed first: the manager is exiting).
        One removal per loop turn: each takes the kernel's cgroup lock, which a migration
        elsewhere on the machine holds for an RCU grace period, and the leaves of jobs that
        provide bus names are all still there at exit."""
        left = []
        for leaf in self.leaves():
            if not process.cgroup_remove(leaf):
                process.cgroup_kill(leaf)
                left.append(leaf)
            await asyncio.sleep(0)
        if not left:
            process.cgroup_remove(self.base)
        return left


class ProcessScope:
    """The processes of one job instance: its cgroup leaf, else the sessions it spawned.

    Invariants: ``cgroup`` is fixed at construction (the leaf's path, or None for the session
    model); the leaf exists between the first :meth:`cgroup_dir` and :meth:`release`.
    """

    def __init__(self, label: str, cgroup: tuple[str, str] | None = None) -> None:
        self.label = label
        self.cgroup = cgroup[0] if cgroup else None
        self._relative = cgroup[1] if cgroup else None
        self._created = False
        self._sessions: set[int] = set()

    @classmethod
    def for_job(
        cls, label: str, job: str, instance: str, tree: CgroupHierarchy | None
    ) -> ProcessScope:
        """The scope of one job instance, with a leaf if the manager has a hierarchy."""
        return cls(label, tree.leaf(job, instance) if tree else None)

    def cgroup_dir(self) -> str | None:
        """The leaf to spawn into, created on first use; None in the session model (also
        when the leaf cannot be made, after a warning: the job then runs on sessions)."""
        if self.cgroup is not None and not self._created:
            try:
                process.cgroup_create(self.cgroup)
            except process.CgroupError as e:
                log.warning("%s: %s; following its sessions instead", self.label, e)
                self.cgroup = self._relative = None
                return None
            self._created = True
        return self.cgroup

    def exists(self) -> bool:
        """Whether the leaf is there (a re-adopted job's, made by a previous manager); marks
        it created if so."""
        if self.cgroup is not None and os.path.isdir(self.cgroup):
            self._created = True
        return self._created

    def adopt(self, pid: int) -> None:
        """``pid`` belongs to this job: one it just spawned (a session leader), or the daemon
        a fork led to (whose session, if it made one, joins the scope)."""
        self._sessions.add(pid)
        with contextlib.suppress(OSError):
            self._sessions.add(os.getsid(pid))

    def pids(self) -> list[int]:
        """Every live process of the job, sorted. In the session model, unreaped zombies are
        included; in a cgroup, a process is gone from the list as soon as it exited."""
        if self.cgroup is not None:
            return process.cgroup_pids(self.cgroup)
        found: set[int] = set()
        for sid in list(self._sessions):
            members = process.session_processes(sid)
            if members:
                found.update(members)
            else:
                self._sessions.discard(sid)
        return sorted(found)

    def alive(self) -> bool:
        """Whether any process of the job is still alive."""
        if self.cgroup is not None:
            return self._created and process.cgroup_populated(self.cgroup)
        return bool(self.pids())

    def contains(self, pid: int) -> bool:
        """Whether the (live or zombie) process ``pid`` is one of the job's."""
        if self._relative is not None:
            return process.cgroup_of(pid) == self._relative
        try:
            return os.getsid(pid) in self._sessions
        except OSError:
            return False

    def kill(self, signum: int, skip: Iterable[int] = ()) -> None:
        """Send ``signum`` to every process of the job (SIGKILL through ``cgroup.kill``, which
        also gets what forks meanwhile; any other signal pid by pid, until a pass over the
        cgroup finds no process it has not signalled), except the pids in ``skip`` (the
        caller signalled those already)."""
        if self.cgroup is not None:
            if not self._created:
                return
            if signum == signal.SIGKILL and process.cgroup_kill(self.cgroup):
                return
            done: set[int] = set(skip)
            for _ in range(_KILL_PASSES):
                todo = [p for p in process.cgroup_pids(self.cgroup) if p not in done]
                if not todo:
                    break
                for pid in todo:
                    process.kill_pid(pid, signum)
                done.update(todo)
            return
        for sid in list(self._sessions):
            process.kill_process_group(sid, signum)
        skipped = set(skip)
        for pid in self.pids():
            if pid not in skipped:
                process.kill_pid(pid, signum)

    def release(self, *, keep_leaf: bool = False) -> bool:
        """The job is at rest: remove its leaf if empty (``keep_leaf``: leave the empty leaf
        for the job's next start, which then finds it made). True if nothing is left of the
        scope (False: processes remain, the scope must be kept)."""
        if self.cgroup is not None and self._created:
            if keep_leaf:
                if process.cgroup_populated(self.cgroup):
                    return False
            elif not process.cgroup_remove(self.cgroup):
                return False
            self._created = False
        self._sessions.clear()
        return True
