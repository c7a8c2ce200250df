"""Observers: what happens to jobs, told to whoever listens (the bus face, the job log, ...).

Model: the core never holds a reference to the bus or to a log; it tells one
:class:`Observers` fan-out, to which each observer subscribed at start-up. An observer
overrides only the hooks it needs (every hook of :class:`JobObserver` does nothing). Hooks run
synchronously, in subscription order, at the moment the change happens: an observer that must
not act in the middle of a transition (the bus face) queues and flushes once per loop turn.

Invariants: a hook never changes a job; a hook that raises is a bug in that observer and
propagates (it is not swallowed here).
"""

from __future__ import annotations

from collections.abc import Iterable

from busmgr.events import Event
from busmgr.job import Job
from busmgr.jobclass import JobClass

__all__ = ["JobObserver", "Observers"]


class JobObserver:
    """The hooks; subclass and override what you need."""

    def classes_changed(self, added: Iterable[JobClass], removed: Iterable[str]) -> None:
        """Job classes were (re)defined (``added``) or went away (``removed``, by name)."""

    def instance_added(self, job: Job) -> None:
        """A job instance now exists (it starts in ``waiting``)."""

    def instance_removed(self, job: Job) -> None:
        """A job instance is gone for good (an ``instance`` job's instance at rest)."""

    def job_changed(self, job: Job) -> None:
        """Some property of ``job`` changed (state, goal, pids, result, ...)."""

    def job_event(self, job: Job, event: Event) -> None:
        """``job`` emitted one of its job events (``starting``, ``started``, ...)."""

    def event_emitted(self, event: Event) -> None:
        """The event queue is handling ``event`` (any event, job events included)."""


class Observers(JobObserver):
    """Every subscribed observer, told in subscription order."""

    def __init__(self) -> None:
        self._all: list[JobObserver] = []

    def subscribe(self, observer: JobObserver) -> None:
        self._all.append(observer)

    def unsubscribe(self, observer: JobObserver) -> None:
        """Stop telling ``observer`` (the bus face of a connection that was lost)."""
        if observer in self._all:
            self._all.remove(observer)

    def classes_changed(self, added: Iterable[JobClass], removed: Iterable[str]) -> None:
        added, removed = list(added), list(removed)
        for o in self._all:
            o.classes_changed(added, removed)

    def instance_added(self, job: Job) -> None:
        for o in self._all:
            o.instance_added(job)

    def instance_removed(self, job: Job) -> None:
        for o in self._all:
            o.instance_removed(job)

    def job_changed(self, job: Job) -> None:
        for o in self._all:
            o.job_changed(job)

    def job_event(self, job: Job, event: Event) -> None:
        for o in self._all:
            o.job_event(job, event)

    def event_emitted(self, event: Event) -> None:
        for o in self._all:
            o.event_emitted(event)
