"""``dbus NAME`` readiness: a job is ready once NAME has an owner that is one of its processes.

Model: the bus layer reports owners through :class:`NameOwners` (subscribe-then-ask, so no
change is missed) and calls :meth:`BusNameReadiness.owner_changed` for every later change. For
each report, :meth:`BusNameReadiness._check` asks which process is behind the owner and decides:

* the owner's pid is one of the job's (a pid it spawned, a member of its scope, or a descendant
  of one of those), or the bus cannot tell the pid: the name is the job's. A job waiting in
  ``spawned`` becomes ready; a running job keeps running.
* another process owns it: a job in ``spawned`` keeps waiting (with a warning), a running job
  has lost its name (the service failed: respawn rules apply).
* no owner any more: a running job has lost its name.

Any other state, or an owner that changed again meanwhile (that change has its own check),
leaves the job alone; the same owner may be reported more than once. A check never fails
silently: a bus that cannot answer counts as "cannot tell", and anything else that goes wrong
fails the job's start with the reason instead of leaving it to its ready timeout.

Without a bus (no :class:`NameOwners` attached) there is nothing to wait for: the job is ready
on the next loop turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import Protocol

from busmgr.job import Goal, Job, State
from busmgr.scope import ProcessScope

log = logging.getLogger("busmgr")

__all__ = ["BusNameReadiness", "NameOwners"]


class NameOwners(Protocol):
    """Who owns which bus name, as the bus daemon says (the bus layer's ``NameWatcher``)."""

    async def watch(self, name: str) -> str:
        """Start following ``name``; its current owner (a unique name) or ``""``."""
        ...

    def owner(self, name: str) -> str:
        """The owner last reported for ``name``, or ``""``."""
        ...

    async def owner_pid(self, owner: str) -> int | None:
        """The pid behind the connection ``owner``, or None when the bus cannot tell."""
        ...

    async def current_owner(self, name: str) -> str:
        """The owner of ``name`` as the bus says now (``""``: none), asked, not remembered."""
        ...


class BusNameReadiness:
    """Decides, for ``dbus NAME`` jobs, whether the current owner of NAME is the job's."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        jobs: Callable[[], Iterable[Job]],
        scope_of: Callable[[Job], ProcessScope],
    ) -> None:
        self._loop = loop
        self._jobs = jobs
        self._scope_of = scope_of
        self.names: NameOwners | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def attach(self, names: NameOwners | None) -> None:
        """Read owners from ``names`` from now on (None: no bus)."""
        self.names = names

    # ------------------------------------------------------------------ from the job host
    def watch(self, job: Job) -> None:
        """``job`` waits in ``spawned`` for its bus name: follow the name and check the owner
        it has now (later owners arrive through :meth:`owner_changed`)."""
        name = job.jobclass.dbus_name
        if not name:
            return
        if self.names is None:
            self._loop.call_soon(job.ready, "dbus")  # no bus: nothing to wait for
            return
        self._run(job, self._watch(job, name))

    def check_owner(self, job: Job) -> None:
        """Main exited 0 while ``job`` waited for its bus name (see
        :meth:`busmgr.job.Job.bus_name_checked`): ask the bus whether the name has an owner
        now. The bus decides, not the owner last reported here: the process may have exited
        on seeing the name owned before that report reached the manager."""
        name = job.jobclass.dbus_name
        if not name or self.names is None:
            self._loop.call_soon(job.bus_name_checked, False)
            return
        self._run(job, self._check_owner(job, name))

    async def _check_owner(self, job: Job, name: str) -> None:
        names = self.names
        owner = await names.current_owner(name) if names is not None else ""
        job.bus_name_checked(bool(owner))

    def owner_changed(self, name: str, owner: str) -> None:
        """The bus reported a new owner of ``name`` (``""``: none)."""
        for job in list(self._jobs()):
            if job.jobclass.dbus_name != name:
                continue
            if owner:
                self._run(job, self._check(job, name, owner))
            else:
                job.bus_name_lost()

    def recheck(self, job: Job) -> None:
        """Ask again who owns ``job``'s name (a new connection to the bus): a job waiting for
        it is checked as at its start; a running job whose name has no owner now lost it."""
        name = job.jobclass.dbus_name
        if not name or self.names is None or not self._interested(job):
            return
        self._run(job, self._recheck(job, name))

    async def _recheck(self, job: Job, name: str) -> None:
        names = self.names
        if names is None:
            return
        owner = await names.watch(name)
        if owner:
            await self._check(job, name, owner)
        elif job.state is State.RUNNING:
            job.bus_name_lost()

    def close(self) -> None:
        """Cancel the checks in flight (manager exit)."""
        for task in list(self._tasks):
            task.cancel()

    # ------------------------------------------------------------------ checks
    def _run(self, job: Job, coro: object) -> None:
        task: asyncio.Task[None] = self._loop.create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._done(job, t))

    def _done(self, job: Job, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        err = task.exception()
        log.error("%s: checking its bus name failed: %s", job.label, err, exc_info=err)
        job.ready_failed(f"cannot check the owner of {job.jobclass.dbus_name}: {err}")

    async def _watch(self, job: Job, name: str) -> None:
        names = self.names
        if names is None:
            return
        owner = await names.watch(name)
        if owner:
            await self._check(job, name, owner)

    def _interested(self, job: Job) -> bool:
        return (job.state is State.SPAWNED and "dbus" in job.pending_ready) or (
            job.state is State.RUNNING and job.goal is Goal.START
        )

    async def _owner_pid(self, owner: str) -> int | None:
        names = self.names
        if names is None:
            return None
        try:
            return await names.owner_pid(owner)
        except Exception as err:  # the bus cannot answer: that is "cannot tell"
            log.warning("cannot ask the bus for the process of %s: %s", owner, err)
            return None

    async def _check(self, job: Job, name: str, owner: str) -> None:
        """``owner`` (a unique connection name) now owns ``name``, which ``job`` provides."""
        names = self.names
        if names is None or not self._interested(job):
            return
        pid = await self._owner_pid(owner)
        if names.owner(name) != owner or not self._interested(job):
            return
        mine = pid is None or self._is_mine(job, pid)
        if job.state is State.SPAWNED:
            if mine:
                job.ready("dbus")
            else:
                log.warning(
                    "%s: %s is owned by pid %d, which is not a process of the job; "
                    "still waiting for the job to own it",
                    job.label,
                    name,
                    pid,
                )
        elif not mine:
            log.warning("%s: %s went to pid %d, not a process of the job", job.label, name, pid)
            job.bus_name_lost()

    def _is_mine(self, job: Job, pid: int) -> bool:
        scope = self._scope_of(job)
        own = set(job.pids.values())
        if pid in own or scope.contains(pid):
            return True
        import psutil  # only this rare case (the owner is not a known process) needs it

        with contextlib.suppress(psutil.Error):
            ancestors = {p.pid for p in psutil.Process(pid).parents()}
            return bool(ancestors & (own | set(scope.pids())))
        return False
