"""``org.busmgr.Job1``: one job class (its file), at ``/org/busmgr/Manager1/job/<name>``.

Owns the methods and properties of a job's interface: its definition as properties, its
instances found by environment or by name, and ``Start``/``Stop``/``Restart`` as the control
operations of the manager's ``StartJob``/``StopJob``/``RestartJob``, through
:meth:`busmgr.bus.calls.Operations.run`.

Invariants: it translates only; :attr:`JobInterface.cls` is the job's current definition (the
face replaces it when a reload redefines the job: the object stays, no re-export).

(No ``from __future__ import annotations`` here: dbus-fast reads the D-Bus signatures from
the annotations at class creation.)
"""

from dbus_fast import introspection as intr
from dbus_fast.annotations import DBusBool, DBusObjectPath, DBusStr
from dbus_fast.errors import DBusError
from dbus_fast.service import PropertyAccess, ServiceInterface, dbus_method, dbus_property

from busmgr import ERROR_PREFIX, JOB_INTERFACE
from busmgr.bus.calls import Operations, translate_now
from busmgr.bus.signatures import Env, StrList, named
from busmgr.bus.values import instance_path
from busmgr.jobclass import JobClass

__all__ = ["JobInterface"]


class JobInterface(ServiceInterface):
    """``org.busmgr.Job1``: one job class (its file), at ``.../job/<escaped name>``."""

    def __init__(self, ops: Operations, cls: JobClass) -> None:
        super().__init__(JOB_INTERFACE)
        self._ops = ops
        self._c = ops.control
        self.cls = cls

    def introspect(self) -> intr.Interface:
        return named(super().introspect())

    @dbus_method()
    def GetInstance(self, env: Env) -> DBusObjectPath:
        """The instance ``env`` selects (as ``StopJob`` finds it); ``UnknownInstance``."""
        inst = translate_now(lambda: self._c.find_instance(self.cls, self._c.check_env(env)))
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
