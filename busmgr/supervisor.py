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
were sent a signal to stop (``_killing``) are rechecked when an orphan (a process of no known
job) is reaped, so reaping costs nothing per idle job; the reaping of a known process of a
job rechecks that job alone (:meth:`busmgr.job.Job.process_exited` does), so stopping N jobs
at once costs N rechecks, not N squared.

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
import os
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
        # pid -> start time (ticks since boot), while watched; read when a snapshot first needs
        # it, not at the spawn: /proc/PID/stat waits for the new program's address space
        # while it maps its libraries (half a millisecond on an activation's path).
        self.started: dict[int, int] = {}
        self._pidfds: dict[int, int] = {}  # pid -> pidfd, for adopted processes not our children
        self.listen_fds: Callable[[Job], process.Listen | None] = lambda _job: None

    # ------------------------------------------------------------------ life
    def start(
        self, environ: Mapping[str, str], *, cgroup_name: str = "", saved_cgroup: str | None = None
    ) -> None:
        """Reap from now on, and choose the scope model (a cgroup leaf per job if possible):
        ``cgroup_name`` is the stable name of the manager's cgroup directory, ``saved_cgroup``
        the one a previous manager recorded (see :meth:`CgroupHierarchy.create`)."""
        process.set_cloexec_on_inherited_fds()
        self.reaper.start()
        self.hierarchy = CgroupHierarchy.create(environ, name=cgroup_name, saved=saved_cgroup)
        log.debug("job processes: %s", self.hierarchy.base if self.hierarchy else "sessions")

    def saved_processes(self, job: Job) -> dict[ProcessKind, tuple[int, int]]:
        """``kind -> (pid, start time)`` of the job's processes, for a snapshot."""
        return {kind: (pid, self._start_time(pid)) for kind, pid in job.pids.items()}

    def _start_time(self, pid: int) -> int:
        """The start time of a watched process (read once; a zombie still has its own)."""
        started = self.started.get(pid)
        if started is None and pid in self._pid_job:
            started = self.started[pid] = process.proc_start_time(pid)
        return started or 0

    def detach(self) -> None:
        """The manager is about to exec itself: stop reaping here (the new image reaps from its
        start), close the pidfds; every process stays as it is."""
        for pid in list(self._pidfds):
            fd = self._pidfds.pop(pid)
            self.loop.remove_reader(fd)
            os.close(fd)
        self.expect.close()
        self.reaper.stop()

    async def finish(self, timeout: float) -> None:
        """After every job stopped: no child may outlive the manager (PID 1's duty, and a
        subreaper's orphans too). Whatever is left gets TERM, then KILL, and is reaped; then
        the cgroups go."""
        self.expect.close()
        left = await self.reaper.finish(timeout)
        self.joblog.close()
        if left:
            log.warning("terminated processes left at exit: %s", " ".join(map(str, left)))
        if self.hierarchy is not None:
            stuck = await self.hierarchy.remove()
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
        """``pid`` is now the job's main process: in its scope, watched, its exit the job's.

        A child of the manager is watched through the reaper (its exit status is known); any
        other process (left by a previous manager that crashed, now a child of another
        process) through a pidfd: its exit is seen, its status is not."""
        self.scope(job).adopt(pid)
        self._pid_job[pid] = job
        self.started.setdefault(pid, process.proc_start_time(pid))
        if process.parent_pid(pid) == os.getpid():
            self.reaper.watch(pid, self._child_reaped)
        else:
            self._watch_pidfd(pid)

    def adopt_saved(
        self, job: Job, processes: Mapping[ProcessKind, tuple[int, int]]
    ) -> dict[ProcessKind, int]:
        """Take back the processes a previous manager recorded for ``job`` (``kind -> (pid,
        start time)``): only those still alive with the same start time and, where the job has
        a cgroup leaf, inside it (a pid reused since is someone else's; a start time counts
        in ticks of 10 ms, which a process started just before the job's may share). Returns
        the live ones by kind."""
        live: dict[ProcessKind, int] = {}
        scope = self.scope(job)
        in_leaf = scope.exists() and scope.cgroup is not None
        for kind, (pid, started) in processes.items():
            if not started or process.proc_start_time(pid) != started:
                continue
            if in_leaf and not scope.contains(pid):
                continue
            if process.proc_state(pid) in ("Z", "X", "") and process.parent_pid(pid) != os.getpid():
                continue
            live[kind] = pid
            self.started[pid] = started
            self.adopt(job, pid)
        return live

    def watch_exit(self, pid: int, on_exit: Callable[[process.ExitInfo | None], None]) -> None:
        """Call ``on_exit`` once ``pid`` has ended: with its :class:`ExitInfo` if it is the
        manager's child (reaped), else with None (seen through a pidfd; the status is the
        parent's to collect). A process already gone counts as ended now."""
        if process.parent_pid(pid) == os.getpid():
            self.reaper.watch(pid, lambda _pid, info: on_exit(info))
            return
        try:
            fd = os.pidfd_open(pid)
        except OSError:  # gone already: it ended while nobody watched
            self.loop.call_soon(on_exit, None)
            return

        def ended() -> None:
            if self._pidfds.pop(pid, None) is not None:
                self.loop.remove_reader(fd)
                os.close(fd)
                on_exit(None)

        self._pidfds[pid] = fd
        self.loop.add_reader(fd, ended)

    def _watch_pidfd(self, pid: int) -> None:
        self.watch_exit(pid, lambda _info: self._lost_exit(pid))

    def _lost_exit(self, pid: int) -> None:
        """An adopted process that is not our child exited: its status cannot be known."""
        self.started.pop(pid, None)
        job = self._pid_job.pop(pid, None)
        if job is not None:
            log.info(
                "%s: process %d exited (not a child of this manager: status unknown)",
                job.label,
                pid,
            )
            job.process_exited(pid, None, None)
        self._recheck_killed()

    def clear_stale(self) -> None:
        """After restoring: the leaves of jobs not re-adopted are stopped and removed."""
        if self.hierarchy is None:
            return
        mine = {scope.cgroup for scope in self._scopes.values()}
        for leaf in self.hierarchy.leaves():
            if leaf not in mine:
                log.warning("stopping what is left in %s (a job that was not taken back)", leaf)
                self.hierarchy.clear(leaf)

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
        log_fd = self._log_writer(job) if ctx.console is ConsoleMode.LOG else None
        scope = self.scope(job)
        before = process.boot_ticks()
        try:
            pid = process.spawn(
                spec.argv(),
                full_env,
                ctx,
                log_fd=log_fd,
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
        finally:
            if log_fd is not None:
                os.close(log_fd)  # the process has its copy; the manager keeps the read end
        if process.boot_ticks() == before:
            self.started[pid] = before  # else read from /proc when a snapshot needs it
        self._pid_job[pid] = job
        scope.adopt(pid)
        self.reaper.watch(pid, self._child_reaped)
        log.debug("%s: spawned %s process %d", job.label, kind.value, pid)
        return pid

    def _log_writer(self, job: Job) -> int:
        """The write end of a new log pipe for one process of the job (closed here once the
        process has its copy); a log that cannot be opened fails the spawn."""
        try:
            return self.joblog.writer(job)
        except OSError as err:
            path = self.joblog.path(job)
            raise process.SpawnError(
                f'console log "{path}"', err.strerror or str(err), err.errno or 0
            ) from None

    def kill(self, job: Job, signum: int) -> None:
        """``signum`` to every process of the job; then SIGCONT, as a stopped process acts on
        no signal but KILL until it is continued (``expect stop``, or stopped by a user). Each
        process gets each signal once: the scope skips the pids the job knows (signalled
        first)."""
        self._killing[job] = None
        scope = self.scope(job)
        known = set(job.pids.values())
        for sig in (signum, signal.SIGCONT) if signum != signal.SIGKILL else (signum,):
            for pid in known:
                process.kill_pid(pid, sig)
            scope.kill(sig, skip=known)

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
        """``job`` is at rest: forget its readiness; its log pipe, its scope (and cgroup leaf)
        go if nothing of it is left."""
        self.expect.forget(job)
        self._killing.pop(job, None)
        scope = self._scopes.get(job)
        if job.pids or (scope is not None and scope.alive()):
            return
        self.joblog.release(job)
        activatable = bool(job.jobclass.dbus_name) and not job.jobclass.instance
        if scope is not None and scope.release(keep_leaf=activatable):
            del self._scopes[job]

    # ------------------------------------------------------------------ exits
    def _child_reaped(self, pid: int, info: process.ExitInfo) -> None:
        self.started.pop(pid, None)
        job = self._pid_job.pop(pid, None)
        if job is not None:
            self.joblog.drain(job)  # its last words, before anyone quotes the log
            job.process_exited(pid, info.status, info.signal)  # rechecks this job's killed
            self.expect.main_exited(job, pid, info)
            if job.state is not State.KILLED:
                self._killing.pop(job, None)
            return
        self._recheck_killed()

    def _orphan_reaped(self, pid: int, info: process.ExitInfo) -> None:
        """A re-parented descendant was reaped: an intermediate of a double fork, a worker of
        a daemon, or any other orphan."""
        self.started.pop(pid, None)
        job = self._pid_job.pop(pid, None)
        if job is not None:
            self.joblog.drain(job)
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
