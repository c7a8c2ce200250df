"""The manager's objects on the bus, exported on one connection, and their signals.

This module translates only. :class:`BusFace` is an observer of the jobs
(:mod:`busmgr.observe`): it hears of every change and never holds a lifecycle decision. It
owns which objects are exported: ``org.busmgr.Manager1`` (:mod:`busmgr.bus.manager1`), a
``Job1`` per job class (:mod:`busmgr.bus.job1`) and an ``Instance1`` per instance
(:mod:`busmgr.bus.instance1`); it turns what happens to jobs into signals and
``PropertiesChanged``, sent through its :class:`busmgr.bus.signal_queue.SignalQueue` (once per
loop turn, in order, held while a ``dbus`` job rises); and it puts the check of every call
(:class:`busmgr.bus.calls.CallCheck`: caller, argument types, shutting down) on the
connection. A method call becomes one :class:`busmgr.control.Control` operation (after the
caller policy, :mod:`busmgr.bus.auth`, allowed it: :class:`busmgr.bus.calls.Operations`).

Invariants: an object is exported exactly while its class or instance exists; a redefined job
keeps its object; ``PropertiesChanged`` carries the new values of just the properties that
changed since the last flush; the ``ListJobs`` rows are rebuilt after any change.

The names other modules import from here (:class:`Insight`, :class:`Operations`,
:func:`instance_path`, :func:`job_path`, :data:`HOLD`) are re-exported from their modules.
"""

from collections.abc import Iterable
from typing import Any

from dbus_fast import Message

from busmgr import MANAGER_INTERFACE, MANAGER_PATH
from busmgr.bus.calls import CallCheck, Operations
from busmgr.bus.instance1 import InstanceInterface
from busmgr.bus.job1 import JobInterface
from busmgr.bus.link import BusLink
from busmgr.bus.manager1 import ManagerInterface
from busmgr.bus.signal_queue import HOLD, SignalQueue, on_its_way_up
from busmgr.bus.values import (
    NO_INSIGHT,
    Insight,
    ProcessRowsOf,
    instance_path,
    instance_properties,
    job_path,
)
from busmgr.events import Event
from busmgr.job import Job
from busmgr.jobclass import JobClass
from busmgr.observe import JobObserver

__all__ = ["HOLD", "BusFace", "Insight", "Operations", "instance_path", "job_path"]

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
        insight: Insight = NO_INSIGHT,
    ) -> None:
        self._ops = ops
        self._processes = processes
        self._insight = insight
        self.link = link
        self.manager_iface = ManagerInterface(ops, insight)
        self._jobs: dict[str, JobInterface] = {}
        self._instances: dict[Job, tuple[str, InstanceInterface]] = {}
        self._queue = SignalQueue(self._send_signal, self._send_properties)
        check = CallCheck(ops.control, (self.manager_iface, JobInterface(ops, JobClass(name="x"))))
        link.export(MANAGER_PATH, self.manager_iface)
        link.add_handler(check)

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
        self._queue.forget(job)
        if entry is not None:
            self.link.unexport(entry[0], entry[1])

    # ------------------------------------------------------------- signals
    def job_event(self, job: Job, event: Event) -> None:
        member = _SIGNALS.get(event.name)
        if member is not None:
            self._queue.signal(member, [job.name, job.instance, event.env_dict()])

    def event_emitted(self, event: Event) -> None:
        self._queue.signal("EventEmitted", [event.name, event.env_dict()])

    def job_changed(self, job: Job) -> None:
        self.manager_iface.rows = None
        exported = job in self._instances
        if exported and on_its_way_up(job):
            self._queue.hold_for(job)
        else:
            self._queue.release(job)
        if exported:
            self._queue.changed(job)

    def flush(self) -> None:
        """Send what is queued now (see :meth:`SignalQueue.flush`)."""
        self._queue.flush()

    def _send_signal(self, member: str, body: list[Any]) -> None:
        signature = "sa{ss}" if member == "EventEmitted" else "ssa{ss}"
        self.link.send(Message.new_signal(MANAGER_PATH, MANAGER_INTERFACE, member, signature, body))

    def _send_properties(self, job: Job) -> None:
        """The ``PropertiesChanged`` of ``job``: the properties changed since the last one."""
        entry = self._instances.get(job)
        if entry is None:
            return
        iface = entry[1]
        now = instance_properties(job, self._processes, self._insight)
        diff = {k: v for k, v in now.items() if iface.sent.get(k) != v}
        iface.sent = now
        if diff:
            iface.emit_properties_changed(diff)
