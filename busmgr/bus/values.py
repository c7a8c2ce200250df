"""What job state looks like on the bus: object paths, timestamps, property values and rows.

Owns the object paths of jobs and instances (:func:`job_path`, :func:`instance_path`, under
:data:`JOB_ROOT`), the ``t`` timestamps (:func:`usec`: microseconds since the epoch, 0 for
never, as systemd's timestamps), the value of every ``Instance1`` property
(:func:`instance_properties`), the rows of ``GetTimeline`` (:func:`run_row`), and
:class:`Insight`: what the face shows beyond the jobs themselves, the log files
(:mod:`busmgr.joblog`), the times of :mod:`busmgr.timeline` (``status`` and ``plot``) and the
problems of the last configuration load (``busmgr reload-configuration``).

Invariants: pure functions of the jobs and the insight, no I/O and no state of their own; the
keys of :func:`instance_properties` are exactly the ``Instance1`` properties (the face diffs
them to send ``PropertiesChanged``, :mod:`busmgr.bus.instance1` reads them); a path is built
only here, from escaped names (:func:`busmgr.escape.escape`).
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from dbus_fast import Variant

from busmgr import MANAGER_PATH
from busmgr.escape import escape
from busmgr.job import Job
from busmgr.jobclass import ConsoleMode, signal_name
from busmgr.joblog import JobLog
from busmgr.timeline import Run, Timeline

__all__ = [
    "JOB_ROOT",
    "NO_INSIGHT",
    "Insight",
    "ProcessRowsOf",
    "instance_path",
    "instance_properties",
    "job_path",
    "run_row",
    "usec",
]

#: ``(kind, pid)`` of every process of a job (the supervisor's ``process_rows``).
ProcessRowsOf = Callable[[Job], list[tuple[str, int]]]

JOB_ROOT = MANAGER_PATH + "/job"


def job_path(name: str) -> str:
    return f"{JOB_ROOT}/{escape(name)}"


def instance_path(name: str, instance: str) -> str:
    return f"{JOB_ROOT}/{escape(name)}/{escape(instance)}"


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


#: The insight of a face that shows nothing beyond the jobs (the default).
NO_INSIGHT = Insight()


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


def instance_properties(
    job: Job, processes: ProcessRowsOf, insight: Insight = NO_INSIGHT
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
