"""The supervisor: the processes of every job, from spawn to reap.

It is the job host's hands (:class:`busmgr.job.JobHost`'s ``spawn``, ``kill`` and
``has_processes`` end here): it spawns a job's processes into the job's scope (its cgroup leaf,
else its sessions, :mod:`busmgr.scope`), watches each pid through the one
:class:`~busmgr.process.Reaper`, and tells the job when one exits. Orphans (re-parented
descendants of jobs, reaped because the manager is a child subreaper) end a job's ``killed``
state once nothing of the job is left. ``expect`` readiness (:mod:`busmgr.readiness.expect`)
lives beside it, as a plain member.

Invariants: ``_pid_job`` maps every pid the supervisor watches for a job (spawned, or adopted:
the daemon of ``expect fork|daemon``, a ``MAINPID``) to that job, until it is reaped. A job's
scope exists from its first spawn until it is at rest with no process left. Only jobs that
were sent a signal to stop (``_killing``) are rechecked when an orphan is reaped, so reaping
costs nothing per idle job.

Sockets: ``listen_fds(job)`` (wired by the manager to the socket bridge,
:mod:`busmgr.triggers.sockets`) gives the listening sockets a job's main process gets by the
``LISTEN_FDS`` protocol, or None; it may raise ``SpawnError`` (a socket that cannot be opened),
which fails that start like any other spawn failure.

A manager stranded in a job's cgroup (see :class:`busmgr.process.StrandedError`) is fatal:
``on_fatal`` is called with the reason and the spawned pid is still watched.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Iterable, Mapping

from busmgr import process
from busmgr.job import Job, State
from busmgr.jobclass import ConsoleMode, ProcessKind
from busmgr.joblog import JobLog
from busmgr.observe import JobObserver
from busmgr.readiness.expect import ExpectReadiness
from busmgr.scope import CgroupHierarchy, ProcessScope

log = logging.getLogger("busmgr")

__all__ = ["Supervisor"]


class Supervisor:
    """Spawns, signals and reaps the processes of the jobs ``jobs()`` returns."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        jobs: Callable[[], Iterable[Job]],
        joblog: JobLog,
        observers: JobObserver,
        on_fatal: Callable[[str], None],
    ) -> None:
        self.loop = loop
        self._jobs = jobs
        self.joblog = joblog
        self.observers = observers
        self.on_fatal = on_fatal
        self.reaper = process.Reaper(loop)
        self.reaper.on_orphan = self._orphan_reaped
        self.hierarchy: CgroupHierarchy | None = None
        self.expect = ExpectReadiness(self)
        self._scopes: dict[Job, ProcessScope] = {}
        self._pid_job: dict[int, Job] = {}
        self._killing: dict[Job, None] = {}  # insertion-ordered set
        self.listen_fds: Callable[[Job], process.Listen | None] = lambda _job: None

    # ------------------------------------------------------------------ life
    def start(self, environ: Mapping[str, str]) -> None:
        """Reap from now on, and choose the scope model (a cgroup leaf per job if possible)."""
        process.set_cloexec_on_inherited_fds()
        self.reaper.start()
        self.hierarchy = CgroupHierarchy.create(environ)
        log.debug("job processes: %s", self.hierarchy.base if self.hierarchy else "sessions")

    async def finish(self, timeout: float) -> None:
        """After every job stopped: no child may outlive the manager (PID 1's duty, and a
        subreaper's orphans too). Whatever is left gets TERM, then KILL, and is reaped; then
        the cgroups go."""
        self.expect.close()
        left = await self.reaper.finish(timeout)
        if left:
            log.warning("terminated processes left at exit: %s", " ".join(map(str, left)))
        if self.hierarchy is not None:
            stuck = self.hierarchy.remove()
            if stuck:
                log.warning("cgroups still populated at exit: %s", ", ".join(stuck))
            self.hierarchy = None
        self.reaper.stop()

    # ------------------------------------------------------------------ ExpectHost
    def jobs(self) -> Iterable[Job]:
        return self._jobs()

    def changed(self, job: Job) -> None:
        self.observers.job_changed(job)

    def scope(self, job: Job) -> ProcessScope:
        scope = self._scopes.get(job)
        if scope is None:
            scope = ProcessScope.for_job(job.label, job.name, job.instance, self.hierarchy)
            self._scopes[job] = scope
        return scope

    def adopt(self, job: Job, pid: int) -> None:
        """``pid`` is now the job's main process: in its scope, watched, its exit the job's."""
        self.scope(job).adopt(pid)
        self._pid_job[pid] = job
        self.reaper.watch(pid, self._child_reaped)

    # ------------------------------------------------------------------ the job host's hands
    def spawn(self, job: Job, kind: ProcessKind, env: Mapping[str, str]) -> int:
        """Start ``kind``'s process of ``job`` with ``env`` (plus ``BUSMGR_JOB``,
        ``BUSMGR_INSTANCE`` and what readiness adds); raises ``SpawnError``."""
        cls = job.jobclass
        spec = cls.processes[kind]
        full_env = dict(env)
        full_env["BUSMGR_JOB"] = job.name
        full_env["BUSMGR_INSTANCE"] = job.instance
        full_env.update(self.expect.spawn_env(job))
        listen = None
        if kind is ProcessKind.MAIN:
            listen = self.listen_fds(job)
            self.expect.before_main(job)
        ctx = cls.context
        scope = self.scope(job)
        try:
            pid = process.spawn(
                spec.argv(),
                full_env,
                ctx,
                log_path=str(self.joblog.path(job)) if ctx.console is ConsoleMode.LOG else None,
                proc_name=cls.proc_name if kind is ProcessKind.MAIN else None,
                cgroup=scope.cgroup_dir(),
                listen=listen,
            )
        except process.StrandedError as err:
            log.critical("%s", err)
            self.on_fatal(str(err))
            if not err.pid:
                raise process.SpawnError("spawn", str(err)) from None
            pid = err.pid
        self._pid_job[pid] = job
        scope.adopt(pid)
        self.reaper.watch(pid, self._child_reaped)
        log.debug("%s: spawned %s process %d", job.label, kind.value, pid)
        return pid

    def kill(self, job: Job, signum: int) -> None:
        """``signum`` to every process of the job; then SIGCONT, as a stopped process acts on
        no signal but KILL until it is continued (``expect stop``, or stopped by a user)."""
        self._killing[job] = None
        scope = self.scope(job)
        for sig in (signum, signal.SIGCONT) if signum != signal.SIGKILL else (signum,):
            for pid in job.pids.values():
                process.kill_pid(pid, sig)
            scope.kill(sig)

    def signal_main(self, job: Job, signum: int) -> bool:
        """``signum`` to the main process alone (``reload``); False if there is none."""
        return bool(job.main_pid) and process.kill_pid(job.main_pid, signum)

    def has_processes(self, job: Job) -> bool:
        return bool(job.pids) or self.scope(job).alive()

    def process_rows(self, job: Job) -> list[tuple[str, int]]:
        """``(kind, pid)`` of every live process of the job: the ones it spawned by kind, then
        every other process of its scope as ``other``."""
        rows = [(kind.value, pid) for kind, pid in job.pids.items()]
        scope = self._scopes.get(job)
        if scope is None:
            return rows
        known = {pid for _, pid in rows}
        return rows + [("other", p) for p in scope.pids() if p not in known]

    def release(self, job: Job) -> None:
        """``job`` is at rest: forget its readiness; its scope (and cgroup leaf) go if nothing
        of it is left."""
        self.expect.forget(job)
        self._killing.pop(job, None)
        scope = self._scopes.get(job)
        if scope is not None and not self.has_processes(job) and scope.release():
            del self._scopes[job]

    # ------------------------------------------------------------------ exits
    def _child_reaped(self, pid: int, info: process.ExitInfo) -> None:
        job = self._pid_job.pop(pid, None)
        if job is not None:
            job.process_exited(pid, info.status, info.signal)
            self.expect.main_exited(job, pid, info)
        self._recheck_killed()

    def _orphan_reaped(self, pid: int, info: process.ExitInfo) -> None:
        """A re-parented descendant was reaped: an intermediate of a double fork, a worker of
        a daemon, or any other orphan."""
        job = self._pid_job.pop(pid, None)
        if job is not None:
            job.process_exited(pid, info.status, info.signal)
        self.expect.orphan_exited(pid)
        self._recheck_killed()

    def _recheck_killed(self) -> None:
        """A job in ``killed`` moves on once none of its processes is left."""
        for job in list(self._killing):
            if job.state is not State.KILLED:
                del self._killing[job]
            elif not self.has_processes(job):
                job.process_exited(0, None, None)
