"""``org.busmgr.Manager1`` at ``/org/busmgr/Manager1``: the manager's object on the bus.

Owns the methods, properties and signals of the manager's interface. It translates only: a
method call becomes one :class:`busmgr.control.Control` operation through
:meth:`busmgr.bus.calls.Operations.run` (after the caller policy allowed it), a read answers
from the control, the registry or :class:`busmgr.bus.values.Insight`. Its signals are declared
here for the introspection data; :class:`busmgr.bus.face.BusFace` sends them.

Invariants: no life-cycle decision and no state of its own but :attr:`ManagerInterface.rows`,
the ``ListJobs`` rows as last built, which the face clears whenever a job or class changes.

(No ``from __future__ import annotations`` here: dbus-fast reads the D-Bus signatures from
the annotations at class creation.)
"""

from typing import Annotated, Any

from dbus_fast import introspection as intr
from dbus_fast.annotations import DBusBool, DBusObjectPath, DBusSignature, DBusStr, DBusUInt64
from dbus_fast.service import (
    PropertyAccess,
    ServiceInterface,
    dbus_method,
    dbus_property,
    dbus_signal,
)

from busmgr import MANAGER_INTERFACE
from busmgr.bus.calls import Operations, translate_now
from busmgr.bus.signatures import Env, JobRows, SkippedRows, StrList, TimelineReply, named
from busmgr.bus.values import NO_INSIGHT, Insight, instance_path, job_path, run_row, usec
from busmgr.control import Control
from busmgr.errors import ManagerError

__all__ = ["ManagerInterface"]


def _variable(control: Control, name: str) -> str:
    value = control.environment.base().get(name)
    if value is None:
        raise ManagerError("UnknownVariable", f"{name} is not set in the session's environment")
    return value


class ManagerInterface(ServiceInterface):
    """``org.busmgr.Manager1`` at ``/org/busmgr/Manager1``."""

    def __init__(self, ops: Operations, insight: Insight = NO_INSIGHT) -> None:
        super().__init__(MANAGER_INTERFACE)
        self._ops = ops
        self._c = ops.control
        self._insight = insight
        # The rows of ListJobs as last built; None once any job changed since (the face clears
        # it), so a client that lists often costs one build per change, not one per call.
        self.rows: list[list[str]] | None = None

    def introspect(self) -> intr.Interface:
        return named(super().introspect())

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
        cls = translate_now(lambda: self._c.get_class(job))
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
