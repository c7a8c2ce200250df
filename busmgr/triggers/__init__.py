"""On demand beyond D-Bus: sockets, files and timers, as event bridges beside ``dbus-signal``.

Each bridge follows the current job classes and subscribes to exactly what their expressions
(or ``socket`` stanzas) need, and turns what happens into events that go through the ordinary
event queue, so they combine with every other ``start on`` condition (STYLE rule 9):

* :mod:`~busmgr.triggers.sockets`: listening sockets held by busmgr, passed to the job by the
  ``LISTEN_FDS`` protocol; a connection while the job is down is ``socket PROTO=... ...``,
  which the job's ``activated_by`` matches;
* :mod:`~busmgr.triggers.files`: inotify; ``file FILE=... EVENT=created|modified|deleted|nonempty``;
* :mod:`~busmgr.triggers.timers`: ``timer EVERY=...`` (monotonic) and ``timer ON="..."``
  (calendar, wall clock);
* :mod:`~busmgr.triggers.kernel`: inotify and timerfd through ``ctypes``.

:class:`Triggers` is the three as one observer (:mod:`busmgr.observe`), which is all the
composition root wires: it tells the bridges of every change of the job classes that concerns
them (:func:`uses_triggers`), handing them the classes that use triggers and no other, so a
start-up that adds thousands of jobs in slices costs the bridges nothing per unrelated job; and
it tells the socket bridge of every job change (it watches a job's sockets only while the job
is at rest).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping

from busmgr.config.triggers import FILE_EVENT, TIMER_EVENT
from busmgr.events import Event
from busmgr.job import Job
from busmgr.jobclass import JobClass, expr_events
from busmgr.observe import JobObserver
from busmgr.registry import Registry
from busmgr.triggers.files import FileBridge
from busmgr.triggers.sockets import SocketBridge
from busmgr.triggers.timers import LoopClock, TimerBridge

__all__ = ["FileBridge", "SocketBridge", "TimerBridge", "Triggers", "uses_triggers"]

_EVENTS = frozenset({FILE_EVENT, TIMER_EVENT})


def uses_triggers(cls: JobClass) -> bool:
    """Whether a bridge cares about ``cls``: it has sockets, or a ``file`` or ``timer`` leaf
    in its ``stop on`` or (unless ``manual``) its ``start on``."""
    if cls.sockets:
        return True
    leaves = expr_events(cls.stop_on) + ([] if cls.manual else expr_events(cls.start_on))
    return any(leaf.name in _EVENTS for leaf in leaves)


class Triggers(JobObserver):
    """The socket, file and timer bridges of one manager.

    ``emit`` queues an event; ``job_env(cls)`` is a job's environment (``$VAR`` in ``file``
    paths). Timers count from the moment this is made (the manager's start).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        emit: Callable[[Event], object],
        registry: Registry,
        job_env: Callable[[JobClass], Mapping[str, str]],
    ) -> None:
        self._registry = registry
        self._using: set[str] = set()  # names of the classes that use triggers now
        self.sockets = SocketBridge(loop, emit, lambda name: registry.instance(name, ""))
        self.files = FileBridge(loop, emit, job_env)
        self.timers = TimerBridge(emit, LoopClock(loop))

    def classes_changed(self, added: Iterable[JobClass], removed: Iterable[str]) -> None:
        changed = False
        for name in removed:
            if name in self._using:
                self._using.discard(name)
                changed = True
        for cls in added:
            before = cls.name in self._using
            if uses_triggers(cls):
                self._using.add(cls.name)
                changed = True
            elif before:
                self._using.discard(cls.name)
                changed = True
        if not changed:
            return
        classes = [self._registry.classes[n] for n in sorted(self._using)]
        self.sockets.update(classes)
        self.files.update(classes)
        self.timers.update(classes)

    def job_changed(self, job: Job) -> None:
        self.sockets.job_changed(job)

    def detach(self) -> None:
        """The manager is about to exec: the sockets stay open for the next image (see
        :meth:`SocketBridge.detach`); the watches and timers go (the next image sets them up
        again from the job classes)."""
        self.sockets.detach()
        self.files.close()
        self.timers.close()

    def close(self) -> None:
        """Close the sockets (removing their files), the watches and the timers."""
        self.sockets.close()
        self.files.close()
        self.timers.close()
