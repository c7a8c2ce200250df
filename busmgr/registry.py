"""Job classes and their instances, by name; the one place that creates and drops instances.

Invariants:

* ``classes`` holds the current class of every known job name. A job without ``instance`` has
  exactly one instance, named ``""``, which exists for as long as its class does (it rests in
  ``waiting``). An ``instance`` job has one :class:`Job` per live instance name, and none
  while it is stopped.
* A reload (:meth:`Registry.swap`) never changes the class of a running instance: an instance
  keeps the class it was started with until it reaches ``waiting``, and takes the new one (or
  goes away, if its job file went) then. (Upstart's ``job_class_consider``.)
* Start order is remembered so shutdown can stop jobs in reverse.
* Event expression state: ``start_on`` holds one :class:`ExprState` per class (an event starts
  a new instance of an ``instance`` job), ``stop_on`` one per instance, because ``stop on``
  may reference the instance's own environment (``stop on tty-removed TTY=$TTY``). A class's
  ``start_on`` state survives a reload that leaves its expression unchanged (a half-complete
  ``a-up and b-up`` is not forgotten by an unrelated edit); an instance's ``stop_on`` state is
  made afresh whenever the instance starts from rest (see the manager's ``_prepare_start``).
* Every change is told to the observers (:mod:`busmgr.observe`): instances added and removed,
  and after each change of the set of classes, the classes added (or redefined) and removed
  (the bus face and the bus-signal bridge follow the jobs this way).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from busmgr.events import ExprState
from busmgr.job import Job, JobHost, State
from busmgr.jobclass import JobClass, expr_events
from busmgr.observe import JobObserver

__all__ = ["Registry"]


class Registry:
    """Job classes and instances; see the module docstring for the invariants."""

    def __init__(self, host: JobHost[Job], observers: JobObserver) -> None:
        self._host = host
        self._observers = observers
        self.classes: dict[str, JobClass] = {}
        self.instances: dict[str, dict[str, Job]] = {}
        self.start_on: dict[str, ExprState | None] = {}
        self.stop_on: dict[Job, ExprState] = {}
        self._retired: dict[str, JobClass | None] = {}  # name -> class to take at rest
        # The running jobs in the order they started (an insertion-ordered set: a job that
        # starts again moves to the end; adding and removing cost O(1), not O(jobs)).
        self.start_order: dict[Job, None] = {}
        self._index: dict[str, frozenset[str]] | None = None
        self._added: list[JobClass] = []  # since the last _classes_changed
        self._removed: list[str] = []

    def interested(self, event_name: str) -> frozenset[str]:
        """Names of the jobs whose ``start on``, ``activated_by`` or ``stop on`` (of the class,
        or of an instance still running with a retired class) mentions ``event_name``: the only
        ones an event of that name can affect, so dispatch does not look at every job for every
        event."""
        if self._index is None:
            index: dict[str, set[str]] = {}
            exprs = [(c.name, c.start_on) for c in self.classes.values()]
            exprs += [(c.name, c.stop_on) for c in self.classes.values()]
            exprs += [(j.name, j.jobclass.stop_on) for j in self.jobs()]
            leaves = [(c.name, leaf) for c in self.classes.values() for leaf in c.activated_by]
            leaves += [(name, leaf) for name, expr in exprs for leaf in expr_events(expr)]
            for name, leaf in leaves:
                index.setdefault(leaf.name, set()).add(name)
            self._index = {k: frozenset(v) for k, v in index.items()}
        return self._index.get(event_name, frozenset())

    def _classes_changed(self) -> None:
        self._index = None
        added, self._added = self._added, []
        removed, self._removed = self._removed, []
        self._observers.classes_changed(added, removed)

    # ------------------------------------------------------------------ reading
    def get_class(self, name: str) -> JobClass | None:
        return self.classes.get(name)

    def jobs(self) -> Iterator[Job]:
        for name in sorted(self.instances):
            yield from (self.instances[name][k] for k in sorted(self.instances[name]))

    def instance(self, name: str, instance: str) -> Job | None:
        return self.instances.get(name, {}).get(instance)

    def provider(self, bus_name: str) -> JobClass | None:
        """The job class that provides ``bus_name`` (files win over imports at load time)."""
        return next((c for c in self.classes.values() if c.dbus_name == bus_name), None)

    # ------------------------------------------------------------------ changing
    def add_class(self, cls: JobClass) -> None:
        """Add a new job class (and the one instance of a job without ``instance``)."""
        self.add_classes([cls])

    def add_classes(self, classes: Iterable[JobClass]) -> None:
        """Add new job classes (names not known yet), with one notification for all."""
        for cls in classes:
            self._add(cls)
        self._classes_changed()

    def _add(self, cls: JobClass) -> None:
        """A class for a name that has none. Instances still running under the name (their file
        was deleted, now it is back) take the new class when they are at rest, as on any
        reload; the one instance of a job without ``instance`` is never made twice."""
        self.classes[cls.name] = cls
        self._added.append(cls)
        insts = self.instances.setdefault(cls.name, {})
        self.start_on[cls.name] = ExprState(cls.start_on) if cls.start_on else None
        if cls.name in self._retired:
            self._retired[cls.name] = cls
        if not cls.instance and "" not in insts:
            self._create(cls, "", {})

    def get_or_create(self, cls: JobClass, instance: str, env: dict[str, str]) -> tuple[Job, bool]:
        """The instance named ``instance`` of ``cls``; a new one (with ``env``) if none."""
        existing = self.instances.setdefault(cls.name, {}).get(instance)
        if existing is not None:
            return existing, False
        return self._create(cls, instance, env), True

    def _create(self, cls: JobClass, instance: str, env: dict[str, str]) -> Job:
        job = Job(cls, instance, env, self._host)
        self.instances.setdefault(cls.name, {})[instance] = job
        if cls.stop_on is not None:
            self.stop_on[job] = ExprState(cls.stop_on)
        self._observers.instance_added(job)
        return job

    def reset_stop_on(self, job: Job) -> None:
        """Give ``job`` a fresh ``stop on`` state (it starts a new run)."""
        if job.jobclass.stop_on is not None:
            self.stop_on[job] = ExprState(job.jobclass.stop_on)
        else:
            self.stop_on.pop(job, None)

    def note_started(self, job: Job) -> None:
        self.start_order.pop(job, None)
        self.start_order[job] = None

    def at_rest(self, job: Job) -> None:
        """``job`` reached waiting: drop it (instance jobs) or give it its new class."""
        self.start_order.pop(job, None)
        job.start_env = None  # a start from rest builds its env afresh
        name = job.name
        if name in self._retired:
            new = self._retired.pop(name)
            if new is None:
                self._remove(job)
                if not self.instances.get(name):
                    self.instances.pop(name, None)
                return
            job.jobclass = new
            job.name = new.name
            self._index = None
            if new.stop_on is not None:
                self.stop_on[job] = ExprState(new.stop_on)
            else:
                self.stop_on.pop(job, None)
        if job.jobclass.instance and job.state is State.WAITING:
            self._remove(job)

    def _remove(self, job: Job) -> None:
        insts = self.instances.get(job.name, {})
        if insts.get(job.instance) is job:
            del insts[job.instance]
        self.stop_on.pop(job, None)
        self._observers.instance_removed(job)

    def swap(self, new_classes: dict[str, JobClass]) -> None:
        """Install a reloaded set of classes; running instances keep theirs until at rest."""
        old_names = set(self.classes)
        for name in old_names - set(new_classes):
            self._replace(name, None)
        for name, cls in new_classes.items():
            if name in self.classes:
                self._replace(name, cls)
            else:
                self._add(cls)
        self._classes_changed()

    def _replace(self, name: str, new: JobClass | None) -> None:
        busy = [j for j in self.instances.get(name, {}).values() if j.state is not State.WAITING]
        if new is None:
            del self.classes[name]
            self.start_on.pop(name, None)
            self._removed.append(name)
        else:
            old = self.classes[name]
            self.classes[name] = new
            self._added.append(new)
            if new.start_on != old.start_on or self.start_on.get(name) is None:
                self.start_on[name] = ExprState(new.start_on) if new.start_on else None
        if busy:
            self._retired[name] = new
            return
        for job in list(self.instances.get(name, {}).values()):
            self._retired[name] = new
            self.at_rest(job)
        if new is not None and not new.instance and "" not in self.instances.get(name, {}):
            self._create(new, "", {})
