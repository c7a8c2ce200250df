"""What happened when: the times ``status`` and ``plot`` show, kept by an observer.

Model: :class:`Timeline` watches every job (:mod:`busmgr.observe`) and keeps, by wall-clock
time (``time.time()``, seconds since the epoch, as users read them):

* for each live instance, a :class:`History`: since when it is in its state, since when it is
  running (None unless it is running now), and its most recent failure and when it happened
  (kept after a respawn cleared the job's own ``failure``, so ``status`` of a job that is
  running again still says why it had to respawn);
* for the manager's start-up picture, one :class:`Run` per instance: its first ``starting``,
  its first ``started`` (running) after that, its first ``stopped``, every failure time, and the
  state it was last seen in. A run outlives its instance (a failed instance of an ``instance``
  job is removed at once, and the picture must still show it), up to :data:`MAX_RUNS` runs;
  later instances are counted in :attr:`Timeline.dropped`, never recorded.

Invariants: hooks only record, in O(1); a hook never changes a job. State changes are seen
through ``job_changed``, which the job's host calls right after every state change.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from busmgr.events import Event
from busmgr.job import Failure, Job, State
from busmgr.observe import JobObserver
from busmgr.snapshot import Saved

__all__ = ["MAX_FAILURE_TIMES", "MAX_RUNS", "History", "Run", "Timeline"]

#: Instances whose first run is kept for the start-up picture.
MAX_RUNS = 4096
#: Failure times kept per run.
MAX_FAILURE_TIMES = 64


@dataclass
class History:
    """One live instance's recent past (mutable: the observer updates it in place)."""

    state: State
    state_since: float
    running_since: float | None = None
    last_failure: Failure | None = None
    last_failure_at: float | None = None


@dataclass
class Run:
    """One instance's first run since the manager started (mutable, as :class:`History`)."""

    job: str
    instance: str
    task: bool
    starting: float
    running: float | None = None
    stopped: float | None = None
    state: str = State.STARTING.value
    goal: str = "start"
    result: str = "ok"
    reason: str = ""
    failures: list[float] = field(default_factory=list)


class Timeline(JobObserver):
    """The times of every instance; see the module docstring."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.started = clock()
        self.dropped = 0
        self._history: dict[Job, History] = {}
        self._runs: dict[tuple[str, str], Run] = {}
        self._live: dict[Job, Run] = {}

    # ------------------------------------------------------------------ reading
    def history(self, job: Job) -> History:
        """``job``'s history (an instance never seen changing has been waiting all along)."""
        found = self._history.get(job)
        if found is None:
            found = self._history[job] = History(job.state, self.started)
        return found

    def saved_times(self) -> list[tuple[str, str, float, float | None]]:
        """``(job, instance, state since, running since)`` of every instance seen changing,
        for the state file: a re-exec or a new manager carries them on (:meth:`seed`)."""
        return [
            (job.name, job.instance, h.state_since, h.running_since)
            for job, h in self._history.items()
            if h.state is job.state
        ]

    def seed(self, job: Job, state_since: float, running_since: float | None) -> None:
        """``job`` was taken back from a previous manager: it is in its state since
        ``state_since`` (and running since ``running_since``), not since it was taken back."""
        history = self.history(job)
        history.state_since = state_since
        if job.state is State.RUNNING:
            history.running_since = running_since

    def take_back(self, saved: Saved, instance: Callable[[str, str], Job | None]) -> None:
        """Carry on the times ``saved`` recorded (a previous image's or manager's): the
        manager's start, and the times of every instance ``instance(name, instance)`` finds
        (taken back already: :func:`busmgr.restore.restore`) through :meth:`seed`."""
        if saved.since:
            self.started = saved.since
        for name, inst, since, running in saved.times:
            job = instance(name, inst)
            if job is not None:
                self.seed(job, since, running)

    def runs(self) -> list[Run]:
        """Every recorded run, in the order the instances first started."""
        return sorted(self._runs.values(), key=lambda r: r.starting)

    # ------------------------------------------------------------------ observer
    def job_changed(self, job: Job) -> None:
        now = self.clock()
        history = self.history(job)
        if history.state is not job.state:
            history.state = job.state
            history.state_since = now
            history.running_since = now if job.state is State.RUNNING else None
        failure = job.failure
        if failure is not None and failure is not history.last_failure:
            history.last_failure = failure
            history.last_failure_at = now
            run = self._live.get(job)
            if run is not None and len(run.failures) < MAX_FAILURE_TIMES:
                run.failures.append(now)
        run = self._live.get(job)
        if run is not None:
            run.state = job.state.value
            run.goal = job.goal.public
            if failure is not None:
                run.result, run.reason = "failed", failure.summary()

    def job_event(self, job: Job, event: Event) -> None:
        now = self.clock()
        key = (job.name, job.instance)
        if event.name == "starting" and key not in self._runs:
            if len(self._runs) >= MAX_RUNS:
                self.dropped += 1
                return
            run = Run(job.name, job.instance, job.jobclass.task, now)
            self._runs[key] = run
            self._live[job] = run
        run = self._live.get(job)
        if run is None:
            return
        if event.name == "started" and run.running is None:
            run.running = now
        elif event.name == "stopped":
            if run.stopped is None:
                run.stopped = now
            if job.failure is None:
                run.result, run.reason = "ok", ""

    def instance_removed(self, job: Job) -> None:
        self._history.pop(job, None)
        run = self._live.pop(job, None)
        if run is not None:
            run.state, run.goal = State.WAITING.value, "stop"
