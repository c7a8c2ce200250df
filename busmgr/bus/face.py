"""The manager's objects on the bus: ``org.busmgr.Manager1``, ``Job1`` and ``Instance1``.

This module translates only. A method call becomes one :class:`busmgr.control.Control`
operation (after the caller policy, :mod:`busmgr.bus.auth`, allowed it); a
:class:`busmgr.errors.ManagerError` becomes the D-Bus error ``org.busmgr.Error.<name>``; job
state becomes properties and signals. :class:`BusFace` is an observer of the jobs
(:mod:`busmgr.observe`): it hears of every change and never holds a lifecycle decision.

Signals are not sent in the middle of a transition: :class:`BusFace` queues lifecycle signals
and marks changed instances, and flushes once per loop turn, in the order things happened
(systemd's ``unit_add_to_dbus_queue``). ``PropertiesChanged`` carries the new values of just
the properties that changed since the last flush. One exception to "once per loop turn": while
a ``dbus`` job is on its way up (goal start, from ``waiting`` to ``spawned``), the flush waits
until no such job is left, at most :data:`HOLD` seconds. An activation's caller waits for the
service to claim its name, and the bus daemon must route the service's ``Hello`` and
``RequestName`` meanwhile: signals sent then (building them, and the daemon routing them) would
take the cores the spawn and the service need. They go out a few milliseconds later, in order,
with the values of that moment.

Beyond the jobs themselves, the face shows what :class:`Insight` offers: the log files
(:mod:`busmgr.joblog`), the times of :mod:`busmgr.timeline` (``status`` and ``plot``), and the
problems of the last configuration load (``busmgr reload-configuration``). Times are ``t``,
microseconds since the epoch, 0 for never (as systemd's timestamps). Every method and signal
argument is named in the introspection data (:data:`OUT_ARGS`, :data:`SIGNAL_ARGS`).

(No ``from __future__ import annotations`` here: dbus-fast reads the D-Bus signatures from
the annotations at class creation.)
"""

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Annotated, Any

from dbus_fast import Message, MessageType, Variant
from dbus_fast import introspection as intr
from dbus_fast.annotations import (
    DBusBool,
    DBusInt32,
    DBusObjectPath,
    DBusSignature,
    DBusStr,
    DBusUInt32,
    DBusUInt64,
)
from dbus_fast.errors import DBusError
from dbus_fast.service import (
    PropertyAccess,
    ServiceInterface,
    dbus_method,
    dbus_property,
    dbus_signal,
)

from busmgr import (
    ERROR_PREFIX,
    INSTANCE_INTERFACE,
    JOB_INTERFACE,
    MANAGER_INTERFACE,
    MANAGER_PATH,
)
from busmgr.bus.auth import CallerPolicy
from busmgr.bus.link import BusLink
from busmgr.config import Skipped
from busmgr.control import Control
from busmgr.errors import ManagerError
from busmgr.escape import escape
from busmgr.events import Event
from busmgr.job import Goal, Job, State
from busmgr.jobclass import ConsoleMode, JobClass, signal_name
from busmgr.joblog import JobLog
from busmgr.observe import JobObserver
from busmgr.timeline import Run, Timeline

__all__ = ["BusFace", "Insight", "instance_path", "job_path"]

#: ``(kind, pid)`` of every process of a job (the supervisor's ``process_rows``).
ProcessRowsOf = Callable[[Job], list[tuple[str, int]]]

Env = Annotated[dict[str, str], DBusSignature("a{ss}")]
JobRows = Annotated[list[list[str]], DBusSignature("a(ssso)")]
SkippedRows = Annotated[list[list[str]], DBusSignature("a(sss)")]
ProcessRows = Annotated[list[list[Any]], DBusSignature("a(su)")]
StrList = Annotated[list[str], DBusSignature("as")]
TimelineReply = Annotated[list[Any], DBusSignature("taa{sv}")]

#: Names of the output arguments of every method (dbus-fast names only the inputs).
OUT_ARGS: dict[str, tuple[str, ...]] = {
    "ActivateName": ("instance",),
    "GetJob": ("job",),
    "ListJobs": ("instances",),
    "RestartJob": ("instance",),
    "StartJob": ("instance",),
    "Start": ("instance",),
    "Restart": ("instance",),
    "GetInstance": ("instance",),
    "GetInstanceByName": ("instance",),
    "GetTimeline": ("startup", "runs"),
    "GetEnv": ("value",),
    "ListEnv": ("env",),
    "ListSkipped": ("entries",),
}
#: Names of the arguments of every signal.
SIGNAL_ARGS: dict[str, tuple[str, ...]] = {
    "JobStarting": ("job", "instance", "env"),
    "JobStarted": ("job", "instance", "env"),
    "JobStopping": ("job", "instance", "env"),
    "JobStopped": ("job", "instance", "env"),
    "EventEmitted": ("name", "env"),
}


def _named(interface: intr.Interface) -> intr.Interface:
    """``interface`` with its output and signal arguments named (see :data:`OUT_ARGS`)."""
    for method in interface.methods:
        for arg, name in zip(method.out_args, OUT_ARGS.get(method.name, ()), strict=False):
            arg.name = name
    for sig in interface.signals:
        for arg, name in zip(sig.args, SIGNAL_ARGS.get(sig.name, ()), strict=False):
            arg.name = name
    return interface


def usec(wall: float | None) -> int:
    """Seconds since the epoch -> the ``t`` of a timestamp property (0: never)."""
    return int(wall * 1_000_000) if wall else 0


@dataclass(frozen=True)
class Insight:
    """What the face shows beyond the jobs: their logs, their times, the last load's errors
    (``FILE:LINE: message`` each). Any of them may be missing (a manager without logs...)."""

    joblog: JobLog | None = None
    timeline: Timeline | None = None
    config_errors: Callable[[], Sequence[str]] = tuple


def run_row(run: Run) -> dict[str, Variant]:
    """One run of :meth:`Timeline.runs` as the ``a{sv}`` of ``GetTimeline``."""
    return {
        "Job": Variant("s", run.job),
        "Instance": Variant("s", run.instance),
        "Task": Variant("b", run.task),
        "Starting": Variant("t", usec(run.starting)),
        "Running": Variant("t", usec(run.running)),
        "Stopped": Variant("t", usec(run.stopped)),
        "State": Variant("s", run.state),
        "Goal": Variant("s", run.goal),
        "Result": Variant("s", run.result),
        "Reason": Variant("s", run.reason),
        "Failures": Variant("at", [usec(t) for t in run.failures]),
    }


JOB_ROOT = MANAGER_PATH + "/job"


def job_path(name: str) -> str:
    return f"{JOB_ROOT}/{escape(name)}"


def instance_path(name: str, instance: str) -> str:
    return f"{JOB_ROOT}/{escape(name)}/{escape(instance)}"


# The unique name of the caller of the method call being dispatched. The bus face's message
# handler sets it just before dbus-fast dispatches the call, and the task running an async
# method copies it then: so a control method knows who called it (for the system bus's uid
# check) without reaching into dbus-fast's dispatch.
CALLER: ContextVar[str] = ContextVar("busmgr_caller", default="")


class Operations:
    """What the bus face calls: the control operations, behind the caller policy."""

    def __init__(
        self,
        control: Control,
        policy: CallerPolicy,
        reload_configuration: Callable[[], Awaitable[None] | None],
        reexec: Callable[[], Awaitable[None]],
        *,
        skipped: Callable[[], Iterable[Skipped]] = tuple,
    ) -> None:
        self.control = control
        self.policy = policy
        self.reload_configuration = reload_configuration
        self.reexec = reexec
        self.skipped = skipped

    async def run(self, member: str, call: Callable[[], Any]) -> Any:
        """Run a control method: check the caller may call it, then translate errors."""
        try:
            await self.policy.authorize(CALLER.get(), member)
            result = call()
            if inspect.isawaitable(result):
                result = await result
            return result
        except ManagerError as err:
            raise DBusError(ERROR_PREFIX + err.name, err.message) from None


def _translate_now(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except ManagerError as err:
        raise DBusError(ERROR_PREFIX + err.name, err.message) from None


def _variable(control: Control, name: str) -> str:
    value = control.environment.base().get(name)
    if value is None:
        raise ManagerError("UnknownVariable", f"{name} is not set in the session's environment")
    return value


class ManagerInterface(ServiceInterface):
    """``org.busmgr.Manager1`` at ``/org/busmgr/Manager1``."""

    def __init__(self, ops: Operations, insight: Insight = Insight()) -> None:
        super().__init__(MANAGER_INTERFACE)
        self._ops = ops
        self._c = ops.control
        self._insight = insight
        # The rows of ListJobs as last built; None once any job changed since (the face clears
        # it), so a client that lists often costs one build per change, not one per call.
        self.rows: list[list[str]] | None = None

    def introspect(self) -> intr.Interface:
        return _named(super().introspect())

    @dbus_method()
    def ListJobs(self) -> JobRows:
        if self.rows is None:
            self.rows = [
                [j, i, s, job_path(j) if placeholder else instance_path(j, i)]
                for j, i, s, placeholder in self._c.list_rows()
            ]
        return self.rows

    @dbus_method()
    def GetJob(self, job: DBusStr) -> DBusObjectPath:
        cls = _translate_now(lambda: self._c.get_class(job))
        return job_path(cls.name)

    @dbus_method()
    async def StartJob(self, job: DBusStr, env: Env, wait: DBusBool) -> DBusObjectPath:
        inst = await self._ops.run("StartJob", lambda: self._c.start_job(job, env, wait))
        return instance_path(inst.name, inst.instance)

    @dbus_method()
    async def StopJob(self, job: DBusStr, env: Env, wait: DBusBool) -> None:
        await self._ops.run("StopJob", lambda: self._c.stop_job(job, env, wait))

    @dbus_method()
    async def RestartJob(self, job: DBusStr, env: Env, wait: DBusBool) -> DBusObjectPath:
        inst = await self._ops.run("RestartJob", lambda: self._c.restart_job(job, env, wait))
        return instance_path(inst.name, inst.instance)

    @dbus_method()
    async def EmitEvent(self, name: DBusStr, env: Env, wait: DBusBool) -> None:
        await self._ops.run("EmitEvent", lambda: self._c.emit_event(name, env, wait))

    @dbus_method()
    async def ReloadJob(self, job: DBusStr, env: Env) -> None:
        await self._ops.run("ReloadJob", lambda: self._c.reload_job(job, env))

    @dbus_method()
    async def ActivateName(self, bus_name: DBusStr) -> DBusObjectPath:
        job, instance = await self._ops.run("ActivateName", lambda: self._c.activate_name(bus_name))
        return instance_path(job, instance)

    @dbus_method()
    async def ReloadConfiguration(self) -> None:
        await self._ops.run("ReloadConfiguration", self._ops.reload_configuration)

    @dbus_method()
    async def Reexec(self) -> None:
        await self._ops.run("Reexec", self._ops.reexec)

    @dbus_method()
    async def EndSession(self) -> None:
        await self._ops.run("EndSession", self._c.end_session)

    @dbus_method()
    def ListSkipped(self) -> SkippedRows:
        """The entries found that are not jobs (autostart entries skipped or refused): job
        name, file, reason."""
        return [[s.name, s.source, s.reason] for s in self._ops.skipped()]

    # The session environment (the activation layer of busmgr.environment), as Upstart's
    # set-env / unset-env / get-env / list-env. Changing it is control; reading it too on the
    # system bus (it may hold what only root should see).
    @dbus_method()
    async def SetEnv(self, name: DBusStr, value: DBusStr) -> None:
        await self._ops.run("SetEnv", lambda: self._c.environment.set(name, value))

    @dbus_method()
    async def UnsetEnv(self, name: DBusStr) -> None:
        await self._ops.run("UnsetEnv", lambda: self._c.environment.remove(name))

    @dbus_method()
    async def GetEnv(self, name: DBusStr) -> DBusStr:
        return await self._ops.run("GetEnv", lambda: _variable(self._c, name))

    @dbus_method()
    async def ListEnv(self) -> Env:
        return await self._ops.run("ListEnv", self._c.environment.base)

    @dbus_method()
    def GetTimeline(self) -> TimelineReply:
        """When the manager started, and the first run of every instance since then."""
        timeline = self._insight.timeline
        if timeline is None:
            return [0, []]
        return [usec(timeline.started), [run_row(r) for r in timeline.runs()]]

    @dbus_property(access=PropertyAccess.READ)
    def LogDirectory(self) -> DBusStr:
        joblog = self._insight.joblog
        return str(joblog.directory) if joblog is not None else ""

    @dbus_property(access=PropertyAccess.READ)
    def ConfigurationErrors(self) -> StrList:
        return list(self._insight.config_errors())

    @dbus_property(access=PropertyAccess.READ)
    def StartupTimestamp(self) -> DBusUInt64:
        timeline = self._insight.timeline
        return usec(timeline.started) if timeline is not None else 0

    @dbus_signal()
    def JobStarting(
        self, job: str, instance: str, env: dict[str, str]
    ) -> Annotated[list[Any], DBusSignature("ssa{ss}")]:
        return [job, instance, env]

    @dbus_signal()
    def JobStarted(
        self, job: str, instance: str, env: dict[str, str]
    ) -> Annotated[list[Any], DBusSignature("ssa{ss}")]:
        return [job, instance, env]

    @dbus_signal()
    def JobStopping(
        self, job: str, instance: str, env: dict[str, str]
    ) -> Annotated[list[Any], DBusSignature("ssa{ss}")]:
        return [job, instance, env]

    @dbus_signal()
    def JobStopped(
        self, job: str, instance: str, env: dict[str, str]
    ) -> Annotated[list[Any], DBusSignature("ssa{ss}")]:
        return [job, instance, env]

    @dbus_signal()
    def EventEmitted(
        self, name: str, env: dict[str, str]
    ) -> Annotated[list[Any], DBusSignature("sa{ss}")]:
        return [name, env]


class JobInterface(ServiceInterface):
    """``org.busmgr.Job1``: one job class (its file), at ``.../job/<escaped name>``."""

    def __init__(self, ops: Operations, cls: JobClass) -> None:
        super().__init__(JOB_INTERFACE)
        self._ops = ops
        self._c = ops.control
        self.cls = cls

    def introspect(self) -> intr.Interface:
        return _named(super().introspect())

    @dbus_method()
    def GetInstance(self, env: Env) -> DBusObjectPath:
        """The instance ``env`` selects (as ``StopJob`` finds it); ``UnknownInstance``."""
        inst = _translate_now(lambda: self._c.find_instance(self.cls, self._c.check_env(env)))
        return instance_path(inst.name, inst.instance)

    @dbus_method()
    def GetInstanceByName(self, name: DBusStr) -> DBusObjectPath:
        """The instance called ``name`` (``""`` for a job without ``instance``)."""
        inst = self._c.registry.instance(self.cls.name, name)
        if inst is None:
            raise DBusError(
                ERROR_PREFIX + "UnknownInstance", f'job {self.cls.name} has no instance "{name}"'
            )
        return instance_path(inst.name, inst.instance)

    @dbus_method()
    async def Start(self, env: Env, wait: DBusBool) -> DBusObjectPath:
        inst = await self._ops.run("Start", lambda: self._c.start_job(self.cls.name, env, wait))
        return instance_path(inst.name, inst.instance)

    @dbus_method()
    async def Stop(self, env: Env, wait: DBusBool) -> None:
        await self._ops.run("Stop", lambda: self._c.stop_job(self.cls.name, env, wait))

    @dbus_method()
    async def Restart(self, env: Env, wait: DBusBool) -> DBusObjectPath:
        inst = await self._ops.run("Restart", lambda: self._c.restart_job(self.cls.name, env, wait))
        return instance_path(inst.name, inst.instance)

    @dbus_property(access=PropertyAccess.READ)
    def Name(self) -> DBusStr:
        return self.cls.name

    @dbus_property(access=PropertyAccess.READ)
    def Description(self) -> DBusStr:
        return self.cls.description

    @dbus_property(access=PropertyAccess.READ)
    def BusName(self) -> DBusStr:
        return self.cls.dbus_name or ""

    @dbus_property(access=PropertyAccess.READ)
    def StartOn(self) -> DBusStr:
        return str(self.cls.start_on) if self.cls.start_on else ""

    @dbus_property(access=PropertyAccess.READ)
    def StopOn(self) -> DBusStr:
        return str(self.cls.stop_on) if self.cls.stop_on else ""

    @dbus_property(access=PropertyAccess.READ)
    def Emits(self) -> StrList:
        return list(self.cls.emits)

    @dbus_property(access=PropertyAccess.READ)
    def Source(self) -> DBusStr:
        return self.cls.source

    @dbus_property(access=PropertyAccess.READ)
    def Origin(self) -> DBusStr:
        return self.cls.origin.value

    @dbus_property(access=PropertyAccess.READ)
    def Task(self) -> DBusBool:
        return self.cls.task

    @dbus_property(access=PropertyAccess.READ)
    def InstanceTemplate(self) -> DBusStr:
        return self.cls.instance

    @dbus_property(access=PropertyAccess.READ)
    def Respawn(self) -> DBusBool:
        return self.cls.respawn.enabled


def instance_properties(
    job: Job, processes: ProcessRowsOf, insight: Insight = Insight()
) -> dict[str, Any]:
    """The current value of every ``Instance1`` property of ``job``."""
    status, signum = job.last_exit
    failure = job.failure
    if failure is not None and (failure.status is not None or failure.signal is not None):
        status, signum = failure.status, failure.signal
    history = insight.timeline.history(job) if insight.timeline is not None else None
    last = history.last_failure if history is not None else None
    logs = insight.joblog is not None and job.jobclass.context.console is ConsoleMode.LOG
    return {
        "Job": job.name,
        "Instance": job.instance,
        "Goal": job.goal.public,
        "State": job.state.value,
        "ActiveState": job.active.value,
        "MainPID": job.main_pid,
        "Processes": [[kind, pid] for kind, pid in processes(job)],
        "Result": job.result,
        "ExitStatus": -1 if status is None else status,
        "ExitSignal": "" if signum is None else signal_name(signum),
        "BusName": job.jobclass.dbus_name or "",
        "FailureMessage": failure.describe() if failure else "",
        "StatusText": job.status_text,
        "ResultReason": failure.summary() if failure else "",
        "LastFailure": last.summary() if last else "",
        "LastFailureTimestamp": usec(history.last_failure_at) if history else 0,
        "StateTimestamp": usec(history.state_since) if history else 0,
        "RunningTimestamp": usec(history.running_since) if history else 0,
        "Respawns": job.respawns,
        "LogPath": insight.joblog.path_text(job) if logs and insight.joblog else "",
        "Source": job.jobclass.source,
    }


class InstanceInterface(ServiceInterface):
    """``org.busmgr.Instance1``: one job instance, at ``.../job/<job>/<instance or _>``."""

    def __init__(self, job: Job, processes: ProcessRowsOf, insight: Insight = Insight()) -> None:
        super().__init__(INSTANCE_INTERFACE)
        self.job = job
        self._processes = processes
        self._insight = insight
        self.sent: dict[str, Any] = instance_properties(job, processes, insight)

    def _p(self, key: str) -> Any:
        return instance_properties(self.job, self._processes, self._insight)[key]

    @dbus_property(access=PropertyAccess.READ)
    def Job(self) -> DBusStr:
        return self.job.name

    @dbus_property(access=PropertyAccess.READ)
    def Instance(self) -> DBusStr:
        return self.job.instance

    @dbus_property(access=PropertyAccess.READ)
    def Goal(self) -> DBusStr:
        return self.job.goal.public

    @dbus_property(access=PropertyAccess.READ)
    def State(self) -> DBusStr:
        return self.job.state.value

    @dbus_property(access=PropertyAccess.READ)
    def ActiveState(self) -> DBusStr:
        return self.job.active.value

    @dbus_property(access=PropertyAccess.READ)
    def MainPID(self) -> DBusUInt32:
        return self.job.main_pid

    @dbus_property(access=PropertyAccess.READ)
    def Processes(self) -> ProcessRows:
        return self._p("Processes")

    @dbus_property(access=PropertyAccess.READ)
    def Result(self) -> DBusStr:
        return self.job.result

    @dbus_property(access=PropertyAccess.READ)
    def ExitStatus(self) -> DBusInt32:
        return self._p("ExitStatus")

    @dbus_property(access=PropertyAccess.READ)
    def ExitSignal(self) -> DBusStr:
        return self._p("ExitSignal")

    @dbus_property(access=PropertyAccess.READ)
    def BusName(self) -> DBusStr:
        return self.job.jobclass.dbus_name or ""

    @dbus_property(access=PropertyAccess.READ)
    def FailureMessage(self) -> DBusStr:
        return self._p("FailureMessage")

    @dbus_property(access=PropertyAccess.READ)
    def StatusText(self) -> DBusStr:
        return self.job.status_text

    @dbus_property(access=PropertyAccess.READ)
    def ResultReason(self) -> DBusStr:
        return self._p("ResultReason")

    @dbus_property(access=PropertyAccess.READ)
    def LastFailure(self) -> DBusStr:
        return self._p("LastFailure")

    @dbus_property(access=PropertyAccess.READ)
    def LastFailureTimestamp(self) -> DBusUInt64:
        return self._p("LastFailureTimestamp")

    @dbus_property(access=PropertyAccess.READ)
    def StateTimestamp(self) -> DBusUInt64:
        return self._p("StateTimestamp")

    @dbus_property(access=PropertyAccess.READ)
    def RunningTimestamp(self) -> DBusUInt64:
        return self._p("RunningTimestamp")

    @dbus_property(access=PropertyAccess.READ)
    def Respawns(self) -> DBusUInt32:
        return self.job.respawns

    @dbus_property(access=PropertyAccess.READ)
    def LogPath(self) -> DBusStr:
        return self._p("LogPath")

    @dbus_property(access=PropertyAccess.READ)
    def Source(self) -> DBusStr:
        return self.job.jobclass.source


#: Methods a manager that is shutting down still answers (they change nothing).
_READS = frozenset(
    {"ListJobs", "GetJob", "GetTimeline", "GetInstance", "GetInstanceByName", "ListSkipped"}
)

#: Seconds of signal sending per loop turn (see :meth:`BusFace.flush`).
FLUSH_SLICE = 0.02
#: Seconds at most that signals wait while a ``dbus`` job is on its way up (module docstring).
HOLD = 0.05
#: The states of a job on its way up to running, before it is ready.
_ON_THE_WAY = frozenset({State.WAITING, State.STARTING, State.PRE_START, State.SPAWNED})

_SIGNALS = {
    "starting": "JobStarting",
    "started": "JobStarted",
    "stopping": "JobStopping",
    "stopped": "JobStopped",
}


class BusFace(JobObserver):
    """Exports the objects on one connection and sends their signals, once per loop turn."""

    def __init__(
        self,
        link: BusLink,
        ops: Operations,
        processes: ProcessRowsOf,
        insight: Insight = Insight(),
    ) -> None:
        self._ops = ops
        self._control = ops.control
        self._processes = processes
        self._insight = insight
        self.link = link
        self.manager_iface = ManagerInterface(ops, insight)
        self._jobs: dict[str, JobInterface] = {}
        self._instances: dict[Job, tuple[str, InstanceInterface]] = {}
        self._queue: list[tuple[str, Any]] = []
        self._dirty: set[Job] = set()
        self._scheduled = False
        self._rising: set[Job] = set()  # dbus jobs on their way up: the flush is held
        self._hold_until: float | None = None  # loop time the hold ends at the latest
        self._held: asyncio.TimerHandle | None = None  # the held flush
        self._signatures = self._method_signatures()
        link.export(MANAGER_PATH, self.manager_iface)
        link.add_handler(self._check_call)

    def publish(self, classes: Iterable[JobClass], instances: Iterable[Job]) -> None:
        """Export what exists already (the face subscribes after jobs were loaded)."""
        self.classes_changed(classes, ())
        for job in instances:
            self.instance_added(job)

    # ------------------------------------------------------------- objects
    def classes_changed(self, added: Iterable[JobClass], removed: Iterable[str]) -> None:
        self.manager_iface.rows = None
        for name in removed:
            self.remove_class(name)
        for cls in added:
            self.add_class(cls)

    def add_class(self, cls: JobClass) -> None:
        """Export the job object of ``cls``; a redefined job keeps its object, which shows the
        new definition from now on (no re-export: a reload costs no signal per job)."""
        iface = self._jobs.get(cls.name)
        if iface is not None:
            iface.cls = cls
            return
        iface = JobInterface(self._ops, cls)
        self._jobs[cls.name] = iface
        self.link.export(job_path(cls.name), iface)

    def remove_class(self, name: str) -> None:
        iface = self._jobs.pop(name, None)
        if iface is not None:
            self.link.unexport(job_path(name), iface)

    def instance_added(self, job: Job) -> None:
        self.manager_iface.rows = None
        path = instance_path(job.name, job.instance)
        iface = InstanceInterface(job, self._processes, self._insight)
        self._instances[job] = (path, iface)
        self.link.export(path, iface)

    def instance_removed(self, job: Job) -> None:
        self.manager_iface.rows = None
        entry = self._instances.pop(job, None)
        self._dirty.discard(job)
        self._risen(job)
        if entry is not None:
            self.link.unexport(entry[0], entry[1])

    # ------------------------------------------------------------- signals
    def job_event(self, job: Job, event: Event) -> None:
        member = _SIGNALS.get(event.name)
        if member is not None:
            self._enqueue("signal", (member, [job.name, job.instance, event.env_dict()]))

    def event_emitted(self, event: Event) -> None:
        self._enqueue("signal", ("EventEmitted", [event.name, event.env_dict()]))

    def job_changed(self, job: Job) -> None:
        self.manager_iface.rows = None
        if (
            job.jobclass.dbus_name
            and job.goal is not Goal.STOP
            and job.state in _ON_THE_WAY
            and job in self._instances
        ):
            if not self._rising:
                self._hold_until = asyncio.get_running_loop().time() + HOLD
            self._rising.add(job)
        else:
            self._risen(job)
        if job not in self._dirty and job in self._instances:
            self._dirty.add(job)
            self._enqueue("props", job)

    def _risen(self, job: Job) -> None:
        """``job`` is no longer on its way up: the last one lets the held flush go."""
        if job not in self._rising:
            return
        self._rising.discard(job)
        if not self._rising:
            self._hold_until = None
            if self._held is not None:
                self._held.cancel()
                self._held = None
                asyncio.get_running_loop().call_soon(self.flush)

    def _enqueue(self, kind: str, item: Any) -> None:
        self._queue.append((kind, item))
        if not self._scheduled:
            self._scheduled = True
            loop = asyncio.get_running_loop()
            if self._hold_until is not None:
                self._held = loop.call_at(self._hold_until, self.flush)
            else:
                loop.call_soon(self.flush)

    def flush(self) -> None:
        """Send everything queued, in order. Runs once per loop turn that queued something
        (or when a hold ends, see the module docstring), for at most :data:`FLUSH_SLICE`
        seconds: the rest goes out on the next turn, in order."""
        self._scheduled = False
        self._held = None
        queue, self._queue = self._queue, []
        deadline = time.monotonic() + FLUSH_SLICE
        for index, (kind, item) in enumerate(queue):
            if time.monotonic() > deadline:
                self._queue = queue[index:] + self._queue
                self._scheduled = True
                asyncio.get_running_loop().call_soon(self.flush)
                return
            if kind == "signal":
                member, body = item
                self._send_signal(member, body)
            else:
                self._dirty.discard(item)
                entry = self._instances.get(item)
                if entry is None:
                    continue
                iface = entry[1]
                now = instance_properties(item, self._processes, self._insight)
                diff = {k: v for k, v in now.items() if iface.sent.get(k) != v}
                iface.sent = now
                if diff:
                    iface.emit_properties_changed(diff)

    def _send_signal(self, member: str, body: list[Any]) -> None:
        signature = "sa{ss}" if member == "EventEmitted" else "ssa{ss}"
        self.link.send(Message.new_signal(MANAGER_PATH, MANAGER_INTERFACE, member, signature, body))

    # ------------------------------------------------------------- bad input
    def _method_signatures(self) -> dict[tuple[str, str], str]:
        sigs: dict[tuple[str, str], str] = {}
        for iface in (self.manager_iface, JobInterface(self._ops, JobClass(name="x"))):
            intro = iface.introspect()
            for m in intro.methods:
                sigs[(intro.name, m.name)] = "".join(a.signature for a in m.in_args)
        return sigs

    def _check_call(self, msg: Message) -> Message | bool | None:
        """Answer a call with the right member but wrong argument types with
        ``org.busmgr.Error.InvalidArgs`` (dbus-fast would say UnknownMethod)."""
        if msg.message_type is not MessageType.METHOD_CALL or not msg.path:
            return None
        if not msg.path.startswith(MANAGER_PATH):
            return None
        CALLER.set(msg.sender or "")
        ifaces = [msg.interface] if msg.interface else [MANAGER_INTERFACE, JOB_INTERFACE]
        for iface in ifaces:
            want = self._signatures.get((iface, msg.member))
            if want is not None and want != msg.signature:
                return Message.new_error(
                    msg,
                    ERROR_PREFIX + "InvalidArgs",
                    f"{iface}.{msg.member} takes arguments ({want}), got ({msg.signature})",
                )
        if (
            self._control.shutting_down
            and msg.interface in (MANAGER_INTERFACE, JOB_INTERFACE)
            and msg.member not in _READS
        ):
            return Message.new_error(
                msg, ERROR_PREFIX + "ShuttingDown", "the manager is shutting down"
            )
        return None
