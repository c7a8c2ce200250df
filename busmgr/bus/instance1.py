"""``org.busmgr.Instance1``: one job instance, at ``.../job/<job>/<instance or _>``.

Owns the properties of an instance's object, read from the job when asked, and
:attr:`InstanceInterface.sent`: the values last sent, against which the face
(:class:`busmgr.bus.face.BusFace`) diffs to send ``PropertiesChanged``.

Invariants: read-only (no methods); a property's value is the one
:func:`busmgr.bus.values.instance_properties` gives, so a ``Get`` and a ``PropertiesChanged``
never disagree.

(No ``from __future__ import annotations`` here: dbus-fast reads the D-Bus signatures from
the annotations at class creation.)
"""

from typing import Any

from dbus_fast.annotations import DBusInt32, DBusStr, DBusUInt32, DBusUInt64
from dbus_fast.service import PropertyAccess, ServiceInterface, dbus_property

from busmgr import INSTANCE_INTERFACE
from busmgr.bus.signatures import ProcessRows
from busmgr.bus.values import NO_INSIGHT, Insight, ProcessRowsOf, instance_properties
from busmgr.job import Job

__all__ = ["InstanceInterface"]


class InstanceInterface(ServiceInterface):
    """``org.busmgr.Instance1``: one job instance, at ``.../job/<job>/<instance or _>``."""

    def __init__(self, job: Job, processes: ProcessRowsOf, insight: Insight = NO_INSIGHT) -> None:
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
