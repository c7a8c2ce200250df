"""The manager: wires the registry, the event queue, processes and the bus; owns the loop.

Model: :class:`Manager` is the :class:`busmgr.job.JobHost` of every job. Requests arrive from
the bus face (already translated to plain arguments), from the event queue and from the
activation bridge; each becomes a goal change on a :class:`busmgr.job.Job`. Process exits
arrive from the one :class:`busmgr.process.Reaper`. Nothing here blocks the loop, and nothing
polls: every wait is on a process exit, a bus message, an event or a timer.

The environment of a job process is built in layers, later ones winning: the base (session
mode: the manager's own environment and the session bus address; system mode: PATH and TERM),
the activation environment (``SetEnvironment``), the ``env`` stanzas, the env of the event that
started the job, the start request's env.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from dbus_fast import BusType, NameFlag, RequestNameReply
from dbus_fast.aio import MessageBus

from busmgr import MANAGER_BUS_NAME, process
from busmgr.bus.activation import SYSTEMD, ActivationBridge
from busmgr.bus.client import DEFAULT_SYSTEM_BUS_ADDRESS
from busmgr.bus.daemon import PrivateBus, start_private_bus
from busmgr.bus.face import BusFace, instance_path, job_path
from busmgr.bus.names import NameWatcher
from busmgr.bus.signal_events import SignalEventBridge
from busmgr.bus.transport import harden
from busmgr.config import import_service_dirs, load_directories, xdg_service_dirs
from busmgr.errors import ManagerError
from busmgr.eventqueue import Block, EventQueue
from busmgr.events import Event, expand, validate_event_env, validate_event_name
from busmgr.job import Failure, Goal, Job, State, TimerHandle, Waiter
from busmgr.jobclass import ConsoleMode, ExecContext, JobClass, ProcessKind, is_variable_name
from busmgr.options import (
    DaemonOptions,
    SessionOptions,
    default_services_dirs,
    default_state_dir,
)
from busmgr.readiness import Readiness
from busmgr.registry import Registry
from busmgr.scope import ProcessScope, cleanup_cgroups, setup_cgroups

log = logging.getLogger("busmgr")

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Variables of the manager's own environment that must not leak into jobs.
_PRIVATE_ENV = (
    "BUSMGR_ADDRESS",
    "NOTIFY_SOCKET",
    "DBUS_STARTER_ADDRESS",
    "DBUS_STARTER_BUS_TYPE",
    "LISTEN_PID",
    "LISTEN_FDS",
    "INVOCATION_ID",
)
LOG_TAIL_LINES = 5
COMMAND_GRACE = 10.0  # seconds a session command has to exit after SIGTERM/SIGINT


def unsafe_file(path: str) -> str | None:
    """Why a system-mode job file must not be trusted (root runs what it says), or None: it
    must belong to root and be writable by no one else, like its directory."""
    for target in (Path(path), Path(path).parent):
        try:
            st = target.stat()
        except OSError as err:
            return f"{target}: {err.strerror}"
        if st.st_uid != 0:
            return f"{target} is owned by uid {st.st_uid}, not root"
        if st.st_mode & 0o022:
            return f"{target} is writable by group or others (mode {st.st_mode & 0o777:o})"
    return None


class Mode(enum.Enum):
    SESSION = "session"
    SYSTEM = "system"


class Manager:
    """One manager instance. Create it inside a running loop; :meth:`serve` runs it."""

    def __init__(
        self,
        *,
        mode: Mode,
        services_dirs: Iterable[Path],
        state_dir: Path,
        import_services: bool,
        environ: Mapping[str, str],
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.mode = mode
        self.services_dirs = [Path(d) for d in services_dirs]
        self.state_dir = state_dir
        self.import_services = import_services
        self.environ = dict(environ)
        self.bus_address = ""
        self.activation_env: dict[str, str] = {}
        self.reaper = process.Reaper(self.loop)
        self.reaper.on_orphan = self._orphan_reaped
        self.registry = Registry(
            self, on_removed=self._instance_removed, on_added=self._instance_added
        )
        self.queue = EventQueue(self.loop, self._handle_event)
        self.face: BusFace | None = None
        self.names: NameWatcher | None = None
        self.bridge: ActivationBridge | None = None
        self.bus: MessageBus | None = None
        self.shutting_down = False
        self.stopped = self.loop.create_future()
        self._scopes: dict[Job, ProcessScope] = {}
        self._pid_job: dict[int, Job] = {}
        self._tasks: set[asyncio.Future[object]] = set()
        self.diagnostics: list[str] = []
        self.failed_files: set[str] = set()
        self._log_marks: dict[Job, int] = {}  # log size when the current start began
        self.exit_status = 0

    # ======================================================== configuration
    def load_classes(self) -> dict[str, JobClass]:
        """Parse every job directory (and, in session mode, the installed .service files).
        Problems are logged with their file and line; they never stop the other jobs."""
        result = load_directories(self.services_dirs)
        classes = dict(result.jobs)
        self.failed_files = set(result.failed)
        diags = [str(d) for d in result.diagnostics]
        if self.mode is Mode.SYSTEM:
            for name, cls in list(classes.items()):
                problem = unsafe_file(cls.source)
                if problem:
                    diags.append(f"{cls.source}: refused in system mode: {problem}")
                    del classes[name]
                    self.failed_files.add(name)
        if self.import_services and self.mode is Mode.SESSION:
            imported = import_service_dirs(xdg_service_dirs(self.environ))
            diags += [str(d) for d in imported.diagnostics]
            provided = {c.dbus_name for c in classes.values() if c.dbus_name}
            for cls in imported.jobs.values():
                if cls.dbus_name in provided or cls.dbus_name in (SYSTEMD, MANAGER_BUS_NAME):
                    continue
                if cls.name in classes:
                    continue
                classes[cls.name] = cls
        for line in diags:
            log.warning("%s", line)
        self.diagnostics = diags
        return classes

    def install_classes(self, classes: dict[str, JobClass]) -> None:
        for cls in classes.values():
            if self.face:
                self.face.add_class(cls)
            self.registry.add_class(cls)

    def reload_configuration(self) -> None:
        """Re-read the job files; running jobs keep running (with their old class until they
        stop). A broken file is reported and its job keeps its previous definition."""
        classes = self.load_classes()
        for name in self.failed_files:
            if name not in classes and name in self.registry.classes:
                log.warning("%s: keeping its previous definition", name)
                classes[name] = self.registry.classes[name]
        for name in set(self.registry.classes) - set(classes):
            if self.face:
                self.face.remove_class(name)
        for cls in classes.values():
            if self.face:
                self.face.add_class(cls)
        self.registry.swap(classes)
        self._spawn_task(self._refresh_activation())

    async def _refresh_activation(self) -> None:
        if self.bridge is not None:
            await self.bridge.write_service_files(list(self.registry.classes.values()))
        if self.names is not None:
            for cls in self.registry.classes.values():
                if cls.dbus_name:
                    await self.names.watch(cls.dbus_name)

    # ========================================================= JobHost
    def job_env(self, cls: JobClass, *layers: Mapping[str, str]) -> dict[str, str]:
        if self.mode is Mode.SYSTEM:
            env = {"PATH": DEFAULT_PATH, "TERM": self.environ.get("TERM", "linux")}
        else:
            env = {k: v for k, v in self.environ.items() if k not in _PRIVATE_ENV}
            env.setdefault("PATH", DEFAULT_PATH)
            if self.bus_address:
                env["DBUS_SESSION_BUS_ADDRESS"] = self.bus_address
        env.update(self.activation_env)
        for entry in cls.env:
            if entry.value is None:
                if entry.key in self.environ:
                    env[entry.key] = self.environ[entry.key]
            else:
                env[entry.key] = expand(entry.value, env)
        for layer in layers:
            env.update(layer)
        return env

    def log_path(self, job: Job) -> Path:
        name = job.name if not job.instance else f"{job.name}.{job.instance}"
        return self.state_dir / "log" / (name.replace("/", "_") + ".log")

    def spawn(self, job: Job, kind: ProcessKind, env: Mapping[str, str]) -> int:
        spec = job.jobclass.processes[kind]
        full_env = dict(env)
        full_env["BUSMGR_JOB"] = job.name
        full_env["BUSMGR_INSTANCE"] = job.instance
        ctx = job.jobclass.context
        log_path = str(self.log_path(job)) if ctx.console is ConsoleMode.LOG else None
        proc_name = job.jobclass.proc_name if kind is ProcessKind.MAIN else None

        readiness = Readiness.of(self)
        full_env.update(readiness.spawn_env(job))
        if kind is ProcessKind.MAIN:
            readiness.before_main(job)
        scope = self.scope(job)
        pid = process.spawn(
            spec.argv(),
            full_env,
            ctx,
            log_path=log_path,
            proc_name=proc_name,
            cgroup=scope.cgroup_dir(),
        )
        self._pid_job[pid] = job
        scope.adopt(pid)
        self.reaper.watch(pid, self._child_reaped)
        log.debug("%s: spawned %s process %d", job.label, kind.value, pid)
        return pid

    def scope(self, job: Job) -> ProcessScope:
        scope = self._scopes.get(job)
        if scope is None:
            scope = self._scopes[job] = ProcessScope.for_job(job.label, job.name, job.instance)
        return scope

    def kill(self, job: Job, signum: int) -> None:
        """``signum`` to every process of the job; then SIGCONT, as a stopped process acts on
        no signal but KILL until it is continued (``expect stop``, or stopped by a user)."""
        scope = self.scope(job)
        for sig in (signum, signal.SIGCONT) if signum != signal.SIGKILL else (signum,):
            for pid in job.pids.values():
                process.kill_pid(pid, sig)
            scope.kill(sig)

    def has_processes(self, job: Job) -> bool:
        return bool(job.pids) or self.scope(job).alive()

    def process_rows(self, job: Job) -> list[tuple[str, int]]:
        rows = [(kind.value, pid) for kind, pid in job.pids.items()]
        known = {pid for _, pid in rows}
        return rows + [("other", p) for p in self.scope(job).pids() if p not in known]

    def emit_job_event(
        self,
        job: Job,
        name: str,
        env: dict[str, str],
        on_finished: Callable[[bool], None] | None,
    ) -> None:
        if name == "started":
            self.registry.note_started(job)
        elif name == "starting" and job.jobclass.context.console is ConsoleMode.LOG:
            # A failure message quotes the log from this start attempt on, not older runs.
            try:
                self._log_marks[job] = self.log_path(job).stat().st_size
            except OSError:
                self._log_marks[job] = 0
        if self.face is not None:
            self.face.job_event(job, name, env)
        callback = None
        if on_finished is not None:

            def callback(block: Block) -> None:
                on_finished(block.failed)

        self.queue.emit(Event.make(name, env), callback)

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        return self.loop.call_later(delay, callback)

    def watch_readiness(self, job: Job) -> None:
        if "dbus" in job.pending_ready and job.jobclass.dbus_name:
            name = job.jobclass.dbus_name
            if self.names is None:
                self.loop.call_soon(job.ready, "dbus")  # no bus: nothing to wait for
            else:
                self._spawn_task(self._watch_name(job, name))
        if "expect" in job.pending_ready:
            Readiness.of(self).watch(job)

    async def _watch_name(self, job: Job, name: str) -> None:
        """Watch ``name`` (subscribing first, then asking its owner: no change is missed) and
        check the owner it has now; later owners arrive through :meth:`_owner_changed`."""
        if self.names is None:
            return
        owner = await self.names.watch(name)
        if owner:
            await self._name_ready(job, name, owner)

    async def _name_ready(self, job: Job, name: str, owner: str) -> None:
        """``owner`` (a unique connection name) now owns ``name``, which ``job`` provides.

        The name counts as the job's only if the owner's process is one of the job's: a pid it
        spawned, a member of its process sessions, or a descendant of one of those. If the bus
        cannot tell the pid (the owner is already gone, or the bus does not know pids), the name
        counts as the job's. A job waiting in ``spawned`` becomes ready; a running job whose
        name went to a process that is not its own has lost it (the service failed). Any other
        state, or an owner that changed again meanwhile (that change has its own check), leaves
        the job alone. Idempotent: the same owner may be reported more than once.
        """
        names = self.names
        if names is None or not (
            (job.state is State.SPAWNED and "dbus" in job.pending_ready)
            or (job.state is State.RUNNING and job.goal is Goal.START)
        ):
            return
        pid = await names.owner_pid(owner)
        if names.owner(name) != owner:
            return
        mine = pid is None or pid in job.pids.values() or pid in self.scope(job).pids()
        if not mine:
            import psutil  # imported here: only this rare case (owner left the job) needs it

            with contextlib.suppress(psutil.Error):
                ancestors = {p.pid for p in psutil.Process(pid).parents()}
                mine = bool(ancestors & (set(job.pids.values()) | set(self.scope(job).pids())))
        if job.state is State.SPAWNED and "dbus" in job.pending_ready:
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
        elif job.state is State.RUNNING and job.goal is Goal.START and not mine:
            log.warning("%s: %s went to pid %d, not a process of the job", job.label, name, pid)
            job.bus_name_lost()

    def _owner_changed(self, name: str, owner: str) -> None:
        """The bus reported a new owner of ``name`` (``""``: none). Losing the name while
        running counts as the service failing (respawn rules apply)."""
        for job in list(self.registry.jobs()):
            if job.jobclass.dbus_name != name:
                continue
            if owner:
                self._spawn_task(self._name_ready(job, name, owner))
            else:
                job.bus_name_lost()

    def changed(self, job: Job) -> None:
        if self.face is not None:
            self.face.changed(job)

    def finished(self, job: Job) -> None:
        """``job`` is at rest: its scope (and cgroup leaf) go if nothing of it is left."""

        Readiness.of(self).forget(job)
        scope = self._scopes.get(job)
        if scope is not None and not self.has_processes(job) and scope.release():
            del self._scopes[job]
        self.registry.at_rest(job)

    # ====================================================== process exits
    def _child_reaped(self, pid: int, info: process.ExitInfo) -> None:
        job = self._pid_job.pop(pid, None)
        if job is not None:
            job.process_exited(pid, info.status, info.signal)

            Readiness.of(self).main_exited(job, pid, info)
        self._recheck_killed()

    def _orphan_reaped(self, pid: int, info: process.ExitInfo) -> None:
        """A re-parented descendant was reaped: the daemon an ``expect fork|daemon`` job
        followed (its main now), an intermediate of a double fork, or any other orphan."""
        for job in list(self.registry.jobs()):
            if pid in job.pids.values():
                job.process_exited(pid, info.status, info.signal)
                break

        Readiness.of(self).orphan_exited(pid)
        self._recheck_killed()

    def _recheck_killed(self) -> None:
        for job in list(self.registry.jobs()):
            if job.state is State.KILLED and not self.has_processes(job):
                job.process_exited(0, None, None)

    # ======================================================= events
    def _handle_event(self, event: Event, block: Block) -> None:
        """Apply one event (Upstart's ``event_pending_handle_jobs``).

        First every instance whose ``stop on`` the event completes is stopped, then every class
        whose ``start on`` it completes (or, for ``dbus-activation``, whose bus name it names) is
        started, with the env of the events that completed the expression. Stopping first means
        an event in both expressions of a running job restarts it; the instance a start creates
        has a fresh ``stop on`` state, so the event that started it is never also counted
        towards stopping it. An expression that fired is reset (the re-arming rule) even when
        the job was already where it would have been sent.

        Each job whose goal the event changes holds ``block`` until it got there (running, or
        for a task and a stop, waiting); the blocks it held for earlier goal changes are let go
        first. A ``starting``/``stopping`` event never makes the job it is about hold it: that
        job is blocked by the event, so it could never get anywhere (``stop on starting J`` in
        J itself stops J once its starting event is over, without the event waiting for it).
        Once shutdown began, events still stop jobs but start none: everything is being stopped
        and nothing started now would be waited for.
        """
        if self.face is not None:
            self.face.event_emitted(event.name, event.env_dict())
        subject = (
            (event.get("JOB"), event.get("INSTANCE"))
            if event.name in ("starting", "stopping")
            else None
        )
        interested = sorted(self.registry.interested(event.name))
        affected = [
            job
            for name in interested
            for _, job in sorted(self.registry.instances.get(name, {}).items())
        ]
        for job in affected:
            state = self.registry.stop_on.get(job)
            if state is None or job.goal is Goal.STOP:
                continue
            if state.handle(event, job.env):
                env = state.env()
                state.reset()
                self.queue.release_held(job)
                blocked = (job.name, job.instance) == subject
                job.stop(None if blocked else self._block_waiter(block, job, Goal.STOP), env)
        candidates = [self.registry.classes[n] for n in interested if n in self.registry.classes]
        if event.name == "dbus-activation":
            provider = self.registry.provider(event.get("NAME") or "")
            if provider is not None and provider not in candidates:
                candidates.append(provider)
        for cls in candidates:
            env: dict[str, str] | None = None
            if (
                event.name == "dbus-activation"
                and cls.dbus_name
                and event.get("NAME") == cls.dbus_name
            ):
                env = event.env_dict()
            elif not cls.manual and self.registry.start_on.get(cls.name) is not None:
                state = self.registry.start_on[cls.name]
                if state.handle(event, self.job_env(cls)):
                    env = state.env()
                    state.reset()
            if env is None:
                continue
            if self.shutting_down:
                log.info("%s: event %s ignored: shutting down", cls.name, event.name)
                continue
            try:
                job = self._prepare_start(cls, env, {})
            except ManagerError as err:
                log.warning("%s: event %s: %s", cls.name, event.name, err.message)
                continue
            if job.goal is Goal.STOP:
                self.queue.release_held(job)
                blocked = (job.name, job.instance) == subject
                job.start(None if blocked else self._block_waiter(block, job, Goal.START))

    def _block_waiter(self, block: Block, job: Job, want: Goal) -> Waiter:
        """A waiter through which ``job`` holds ``block`` until it reaches ``want``'s rest state.

        A failure is recorded on the block with the job's name (what ``EmitEvent`` reports).
        """
        release = self.queue.hold(block, job)

        def done(failure: Failure | None, _how: str) -> None:
            release(self.failure_message(job, failure) if failure else None)

        return Waiter(done, want=want)

    # ======================================================= requests
    async def authorize(self, sender: str, member: str) -> None:
        """On the system bus only root may call control methods (SPEC §4: the policy file
        says so too, but the manager does not rely on it). Raises ``AccessDenied``."""
        if self.mode is not Mode.SYSTEM or self.bus is None:
            return
        uid = await self.names.unix_user(sender) if self.names is not None and sender else None
        if uid != 0:
            who = f"uid {uid}" if uid is not None else "an unknown caller"
            raise ManagerError(
                "AccessDenied", f"{member}: only root may control jobs on the system bus ({who})"
            )

    def get_class(self, name: str) -> JobClass:
        cls = self.registry.get_class(name)
        if cls is None:
            raise ManagerError("UnknownJob", f'no job named "{name}"')
        return cls

    def list_rows(self) -> list[tuple[str, str, str, str]]:

        rows = []
        for name in sorted(self.registry.classes):
            insts = self.registry.instances.get(name, {})
            if not insts:
                rows.append((name, "", State.WAITING.value, job_path(name)))
            for inst in sorted(insts):
                job = insts[inst]
                rows.append((name, inst, job.state.value, instance_path(name, inst)))
        return rows

    def _check_env(self, env: Mapping[str, str]) -> dict[str, str]:
        problem = validate_event_env(env)
        if problem:
            raise ManagerError("InvalidArgs", problem)
        return dict(env)

    def _prepare_start(
        self, cls: JobClass, event_env: Mapping[str, str], request_env: Mapping[str, str]
    ) -> Job:
        """The instance a start with these envs refers to, made ready to take them.

        The env is built in SPEC's order (:meth:`job_env`: base, ``env`` stanzas, the event's
        env, the request's env, later ones winning). A job at rest takes it at once, with a
        fresh ``stop on`` state. A job still on its way down (goal stop) takes both when it
        next enters ``starting`` (Upstart's ``start_env``), so a start that overrules the stop
        runs it again with the new env, not the old one. A job heading for start is returned
        unchanged. Raises ``InvalidArgs`` when an instance name expands to nothing.
        """
        env = self.job_env(cls, event_env, request_env)
        instance = expand(cls.instance, env) if cls.instance else ""
        if cls.instance and not instance:
            raise ManagerError(
                "InvalidArgs",
                f"job {cls.name} is an instance job "
                f"(instance {cls.instance}): that expands to nothing here",
            )
        job, _new = self.registry.get_or_create(cls, instance, env)
        if job.goal is Goal.STOP and job.state is State.WAITING:
            job.env = env
            job.start_env = None
            self.registry.reset_stop_on(job)
        elif job.goal is Goal.STOP:
            job.start_env = env
            self.registry.reset_stop_on(job)
        return job

    def _find_instance(self, cls: JobClass, env: Mapping[str, str]) -> Job:
        if not cls.instance:
            job = self.registry.instance(cls.name, "")
        else:
            instance = expand(cls.instance, self.job_env(cls, env))
            job = self.registry.instance(cls.name, instance)
            if job is None:
                raise ManagerError(
                    "UnknownInstance", f'job {cls.name} has no instance "{instance}"'
                )
        if job is None:
            raise ManagerError("UnknownInstance", f"job {cls.name} has no instance")
        return job

    def _waiter(self, want: Goal) -> tuple[Waiter, asyncio.Future[tuple[Failure | None, str]]]:
        fut: asyncio.Future[tuple[Failure | None, str]] = self.loop.create_future()

        def done(failure: Failure | None, how: str) -> None:
            if not fut.done():
                fut.set_result((failure, how))

        return Waiter(done, want=want), fut

    async def _await(self, job: Job, fut: asyncio.Future[tuple[Failure | None, str]]) -> None:
        failure, _how = await fut
        if failure is not None:
            raise ManagerError("JobFailed", self.failure_message(job, failure))

    def failure_message(self, job: Job, failure: Failure) -> str:
        text = f"job {job.label} failed: {failure.describe()}"
        if job.jobclass.context.console is ConsoleMode.LOG:
            tail = self.log_tail(job)
            if tail:
                text += "; last output: " + " | ".join(tail)
        return text

    def log_tail(self, job: Job, lines: int = LOG_TAIL_LINES) -> list[str]:
        try:
            with open(self.log_path(job), "rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(self._log_marks.get(job, 0), size - 4096))
                data = fh.read().decode(errors="replace")
        except OSError:
            return []
        return [ln for ln in data.splitlines() if ln.strip()][-lines:]

    async def start_job(self, name: str, env: Mapping[str, str], wait: bool) -> Job:
        cls = self.get_class(name)
        job = self._prepare_start(cls, {}, self._check_env(env))
        waiter, fut = self._waiter(Goal.START)
        job.start(waiter)
        if wait:
            await self._await(job, fut)
        return job

    async def stop_job(self, name: str, env: Mapping[str, str], wait: bool) -> None:
        cls = self.get_class(name)
        job = self._find_instance(cls, self._check_env(env))
        waiter, fut = self._waiter(Goal.STOP)
        job.stop(waiter, env)
        if wait:
            failure, _how = await fut
            if failure is not None:
                raise ManagerError("JobFailed", f"job {job.label} did not stop: {failure.reason}")

    async def restart_job(self, name: str, env: Mapping[str, str], wait: bool) -> Job:
        cls = self.get_class(name)
        env = self._check_env(env)
        try:
            job = self._find_instance(cls, env)
        except ManagerError:
            job = self._prepare_start(cls, {}, env)
        if job.state is State.WAITING:
            job = self._prepare_start(cls, {}, env)
        waiter, fut = self._waiter(Goal.START)
        job.restart(waiter)
        if wait:
            await self._await(job, fut)
        return job

    def reload_job(self, name: str, env: Mapping[str, str]) -> None:
        cls = self.get_class(name)
        job = self._find_instance(cls, self._check_env(env))
        if not job.main_pid:
            raise ManagerError("AlreadyStopped", f"job {job.label} has no main process to reload")
        process.kill_pid(job.main_pid, cls.reload_signal)

    async def emit_event(self, name: str, env: Mapping[str, str], wait: bool) -> None:
        problem = validate_event_name(name)
        if problem:
            raise ManagerError("InvalidArgs", problem)
        env = self._check_env(env)
        done: asyncio.Future[Block] = self.loop.create_future()
        self.queue.emit(Event.make(name, env), lambda b: done.done() or done.set_result(b))
        if wait:
            block = await done
            if block.failed:
                raise ManagerError("JobFailed", f"event {name}: " + "; ".join(block.failures))

    async def activate_name(self, bus_name: str) -> Job:
        """Start the job that provides ``bus_name``; return once the name has an owner.

        The one path of every activation: the activator's ``ActivationRequest``, the helper's
        and clients' ``ActivateName``. The request is the event ``dbus-activation NAME=...``;
        a job that fails raises ``JobFailed`` as soon as it is back at rest, with the message
        of :meth:`failure_message`, which is also logged (in helper mode the bus daemon only
        tells the caller that the helper exited)."""
        cls = self.registry.provider(bus_name)
        if cls is None:
            raise ManagerError("NoProvider", f"no job provides the bus name {bus_name}")
        done: asyncio.Future[Block] = self.loop.create_future()
        self.queue.emit(
            Event.make("dbus-activation", {"NAME": bus_name}),
            lambda b: done.done() or done.set_result(b),
        )
        block = await done
        job = self._prepare_start(cls, {"NAME": bus_name}, {})
        try:
            if job.state is State.RUNNING and job.goal is Goal.START:
                return job
            if job.goal is Goal.STOP:
                failure = job.failure or Failure(
                    "main", reason="; ".join(block.failures) or "it stopped"
                )
                raise ManagerError("JobFailed", self.failure_message(job, failure))
            waiter, fut = self._waiter(Goal.START)
            job.add_waiter(waiter)
            await self._await(job, fut)
        except ManagerError as err:
            log.warning("activation of %s failed: %s", bus_name, err.message)
            raise
        return job

    def update_activation_env(self, set_vars: Iterable[str], unset: Iterable[str]) -> None:
        for key in unset:
            self.activation_env.pop(key, None)
        for item in set_vars:
            key, sep, value = item.partition("=")
            if sep and is_variable_name(key):
                self.activation_env[key] = value

    async def end_session(self) -> None:
        self.queue.emit(Event.make("desktop-end", {}))
        self.request_shutdown(0)

    # ======================================================= bus objects
    def _instance_added(self, job: Job) -> None:
        if self.face is not None:
            self.face.add_instance(job)

    def _instance_removed(self, job: Job) -> None:
        # Removed at rest, after any waiter was answered on this loop turn... except a waiter
        # awaiting a later turn, which then quotes the whole (short) log tail: acceptable.
        self.loop.call_soon(self._log_marks.pop, job, None)
        if self.face is not None:
            self.face.remove_instance(job)

    # ======================================================= life of the manager
    def _spawn_task(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Future[object]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("internal task failed", exc_info=task.exception())

    async def connect(
        self,
        address: str | None,
        bus_type: BusType = BusType.SESSION,
        servicedir: Path | None = None,
        *,
        own_servicedir: bool = False,
    ) -> None:
        """Connect to the bus, claim the manager's name, export objects, start activation.

        ``servicedir`` receives the activation files; ``own_servicedir`` says it is the private
        bus's own directory (it goes away with the bus, so the files are not removed one by one
        on the way out). Without ``address``, the bus's address still comes from the
        environment, as the helper's ``Exec=`` lines and the jobs need it."""
        bus = MessageBus(bus_address=address, bus_type=bus_type)
        await bus.connect()
        harden(bus)
        self.bus = bus
        if address is None:
            if bus_type is BusType.SYSTEM:
                address = self.environ.get("DBUS_SYSTEM_BUS_ADDRESS", DEFAULT_SYSTEM_BUS_ADDRESS)
            else:
                address = self.environ.get("DBUS_SESSION_BUS_ADDRESS")
        self.bus_address = address or ""
        self.face = BusFace(self, bus)
        self.names = NameWatcher(bus, self._owner_changed)
        # Bus signals some job waits for become ``dbus-signal`` events; the bridge follows the
        # job classes (load and every reload) through the registry's hook.

        self.signal_events = SignalEventBridge(bus, self.queue.emit, self.names)
        self.registry.on_classes_changed = self.signal_events.update
        self.signal_events.update(self.registry.classes.values())
        reply = await bus.request_name(MANAGER_BUS_NAME, NameFlag.DO_NOT_QUEUE)
        if reply not in (RequestNameReply.PRIMARY_OWNER, RequestNameReply.ALREADY_OWNER):
            raise ManagerError(
                "AccessDenied",
                f"{MANAGER_BUS_NAME} is already owned on "
                f"{address or bus_type.name.lower()} bus: is another busmgr "
                "running there?",
            )
        self.bridge = ActivationBridge(
            self, bus, self.bus_address, servicedir, remove_on_close=not own_servicedir
        )
        await self.bridge.start()
        bus_done = asyncio.ensure_future(bus.wait_for_disconnect())
        bus_done.add_done_callback(self._bus_disconnected)

    def _bus_disconnected(self, _fut: asyncio.Future[object]) -> None:
        if not self.shutting_down:
            log.error("lost the connection to the bus; stopping")
            self.request_shutdown(1)

    async def begin(self) -> None:
        """Load jobs, publish them, write activation files and emit ``startup``."""
        classes = self.load_classes()
        self.install_classes(classes)
        await self._refresh_activation()
        self.queue.emit(Event.make("startup", {}))

    def request_shutdown(self, status: int = 0) -> None:
        if not self.stopped.done():
            self.exit_status = status
            self.stopped.set_result(None)

    async def stop_everything(self) -> bool:
        """Stop every job in reverse start order, each to waiting; True if all went clean."""
        self.shutting_down = True
        clean = True
        ordered = list(reversed(self.registry.start_order))
        others = [j for j in self.registry.jobs() if j not in ordered]
        for job in ordered + others:
            if job.goal is Goal.STOP and job.state is State.WAITING:
                continue
            waiter, fut = self._waiter(Goal.STOP)
            if job.goal is Goal.STOP:
                job.add_waiter(waiter)
            else:
                job.stop(waiter)
            await fut
            if job.failure is not None and job.failure.process in ("pre-stop", "post-stop"):
                clean = False
        # jobs started by stopping events while we stopped the others
        for job in list(self.registry.jobs()):
            if job.state is not State.WAITING:
                waiter, fut = self._waiter(Goal.STOP)
                job.stop(waiter) if job.goal is not Goal.STOP else job.add_waiter(waiter)
                await fut
        return clean

    async def close(self) -> None:
        if self.bridge is not None:
            self.bridge.remove_service_files()
        if self.bus is not None and self.bus.connected:
            self.bus.disconnect()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.bus.wait_for_disconnect(), 2)


# ============================================================ entry points
def _setup_process(pidfile: Path | None) -> None:
    try:
        import prctl

        prctl.set_name("busmgr")
    except (ImportError, OSError):  # pragma: no cover - python-prctl is a dependency
        pass
    if pidfile is not None:
        tmp = pidfile.with_name(pidfile.name + ".new")
        pidfile.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w") as fh:
            fh.write(f"{os.getpid()}\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, pidfile)


async def _run(
    manager_args: dict[str, object],
    *,
    private: bool,
    address: str | None,
    bus_type: BusType,
    print_address: bool,
    address_file: Path | None,
    pidfile: Path | None,
    command: tuple[str, ...],
) -> int:
    loop = asyncio.get_running_loop()
    environ = dict(os.environ)
    manager = Manager(environ=environ, **manager_args)  # type: ignore[arg-type]
    process.set_cloexec_on_inherited_fds()
    manager.reaper.start()
    _setup_process(pidfile)

    setup_cgroups(environ)  # a cgroup leaf per job where cgroup2 is writable
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, manager.request_shutdown, 0)
    loop.add_signal_handler(signal.SIGHUP, manager.reload_configuration)
    private_bus: PrivateBus | None = None
    bus_exit: asyncio.Future[process.ExitInfo] = loop.create_future()
    command_exit: asyncio.Future[process.ExitInfo] = loop.create_future()
    status = 1
    try:
        if private:
            private_bus = await start_private_bus(
                environ,
                watch=lambda pid: manager.reaper.watch(
                    pid, lambda _p, info: bus_exit.done() or bus_exit.set_result(info)
                ),
            )
            address = private_bus.address
        try:
            await manager.connect(
                address,
                bus_type,
                private_bus.servicedir if private_bus else _helper_dir(environ),
                own_servicedir=private_bus is not None,
            )
        except (ManagerError, OSError) as err:
            print(f"busmgr: {err}", file=sys.stderr)
            return 1
        await manager.begin()
        if print_address:
            print(manager.bus_address, flush=True)
        if address_file is not None:
            tmp = address_file.with_name(address_file.name + ".new")
            tmp.write_text(manager.bus_address + "\n")
            os.replace(tmp, address_file)
        if command:
            env = manager.job_env(JobClass(name="session-command"))
            try:
                pid = process.spawn(
                    list(command), env, ExecContext(console=ConsoleMode.OUTPUT), foreground=True
                )
            except process.SpawnError as err:
                print(f"busmgr: {err}", file=sys.stderr)
                manager.request_shutdown(127)
            else:
                manager.reaper.watch(pid, lambda _p, info: command_exit.set_result(info))
                command_exit.add_done_callback(
                    lambda f: manager.request_shutdown(_exit_code(f.result()))
                )

                def forward(signum: int) -> None:
                    # The session ends when its command does: pass the signal on, and end
                    # anyway if the command is still there after a grace period.
                    if command_exit.done():
                        manager.request_shutdown(0)
                        return
                    process.kill_pid(pid, signum)
                    loop.call_later(COMMAND_GRACE, manager.request_shutdown, 128 + signum)

                for signum in (signal.SIGTERM, signal.SIGINT):
                    loop.add_signal_handler(signum, forward, signum)
        bus_exit.add_done_callback(lambda _f: manager.request_shutdown(1))
        await manager.stopped
        clean = await manager.stop_everything()
        status = manager.exit_status if clean or manager.exit_status else 1
    finally:
        manager.shutting_down = True
        await manager.close()
        if private_bus is not None:
            if not bus_exit.done():
                process.kill_pid(private_bus.pid, signal.SIGTERM)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(bus_exit), 5)
                if not bus_exit.done():
                    process.kill_pid(private_bus.pid, signal.SIGKILL)
                    await bus_exit
            private_bus.remove()
        if address_file is not None:
            with contextlib.suppress(FileNotFoundError):
                address_file.unlink()
        if pidfile is not None:
            with contextlib.suppress(FileNotFoundError):
                pidfile.unlink()
        Readiness.of(manager).close()
        # No child outlives the manager (PID 1's duty; a subreaper's orphans too): whatever is
        # left after every job stopped gets TERM, then KILL, and is reaped before we exit.
        left = await manager.reaper.finish(5.0)
        if left:
            log.warning("terminated processes left at exit: %s", " ".join(map(str, left)))
        cleanup_cgroups()
        manager.reaper.stop()
    return status


def _exit_code(info: process.ExitInfo) -> int:
    if info.signal is not None:
        return 128 + info.signal
    return info.status or 0


def _helper_dir(environ: Mapping[str, str]) -> Path | None:
    runtime = environ.get("XDG_RUNTIME_DIR")
    return Path(runtime) / "dbus-1" / "services" if runtime else None


def _logging() -> None:
    level = os.environ.get("BUSMGR_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO), format="busmgr: %(message)s", stream=sys.stderr
    )


def run_session(opts: SessionOptions) -> int:
    """``busmgr session``: a private bus, the manager on it, optionally a command inside."""
    _logging()
    environ = os.environ
    mode = Mode.SESSION
    system = False
    args = {
        "mode": mode,
        "services_dirs": list(opts.services_dirs or default_services_dirs(system, environ)),
        "state_dir": opts.state_dir or default_state_dir(system, environ),
        "import_services": not opts.no_import,
    }
    return asyncio.run(
        _run(
            args,
            private=True,
            address=None,
            bus_type=BusType.SESSION,
            print_address=opts.print_address,
            address_file=opts.address_file,
            pidfile=opts.pidfile,
            command=tuple(opts.command),
        )
    )


def run_daemon(opts: DaemonOptions) -> int:
    """``busmgr daemon``: the manager on an existing bus."""
    _logging()
    environ = os.environ
    system = opts.bus == "system"
    mode = Mode.SYSTEM if system else Mode.SESSION
    bus_type = BusType.SYSTEM if opts.bus == "system" else BusType.SESSION
    address = opts.address
    if opts.bus == "system" and environ.get("DBUS_SYSTEM_BUS_ADDRESS"):
        address = environ["DBUS_SYSTEM_BUS_ADDRESS"]
    args = {
        "mode": mode,
        "services_dirs": list(opts.services_dirs or default_services_dirs(system, environ)),
        "state_dir": opts.state_dir or default_state_dir(system, environ),
        "import_services": not opts.no_import and mode is Mode.SESSION,
    }
    return asyncio.run(
        _run(
            args,
            private=False,
            address=address,
            bus_type=bus_type,
            print_address=getattr(opts, "print_address", False),
            address_file=getattr(opts, "address_file", None),
            pidfile=opts.pidfile,
            command=(),
        )
    )
