"""Job logs: where a job's output goes with ``console log`` (the default), the tail that
failure messages quote, and the manager's own line for every failure.

Layout, under the log directory (``$XDG_STATE_HOME/busmgr/log`` in session mode,
``/var/log/busmgr`` in system mode; see :func:`busmgr.options.default_log_dir`): one file per
instance, named by :func:`busmgr.logsink.log_name`, written by the manager through a pipe and
rotated by size (:mod:`busmgr.logsink`).

:class:`JobLog` is an observer:

* it marks how much output a log had received when a start began (``starting``), so a failure
  message quotes the output of the current start attempt only;
* when a job fails (its ``stopping``, or its ``stopped`` for a failed post-stop), it writes one
  line to the manager's log: the job, the reason, what happens next (it respawns, or it stops)
  and the last lines of its output. A failure is told once however many events follow it;
* it forgets an instance once it is gone, and keeps nothing about it if asked afterwards.

The supervisor asks it for an instance's pipe (:meth:`JobLog.writer`) at each spawn, drains the
pipe when a process of the job exits (so the tail holds its last words), and releases the pipe
once the instance is at rest with no process left.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from busmgr.events import Event
from busmgr.job import Failure, Goal, Job
from busmgr.jobclass import ConsoleMode
from busmgr.logsink import DEFAULT_ROTATION, LogRotation, LogSinks, log_name
from busmgr.observe import JobObserver

__all__ = ["LOG_TAIL_LINES", "JobLog", "log_name"]

log = logging.getLogger("busmgr")

LOG_TAIL_LINES = 5
_TAIL_BYTES = 4096


class JobLog(JobObserver):
    """Log files, pipes and tails of every job instance under ``directory``."""

    def __init__(self, directory: Path, rotation: LogRotation = DEFAULT_ROTATION) -> None:
        self.directory = directory
        self.sinks = LogSinks(directory, rotation)
        self._marks: dict[Job, int] = {}  # output received when the current start began
        self._told: dict[Job, Failure] = {}  # the failure last written to the manager's log
        self._names: dict[Job, str] = {}  # log names of the live instances, computed once

    def name(self, job: Job) -> str:
        """``job``'s log file, relative to the log directory.

        Kept from :meth:`instance_added` to :meth:`instance_removed` only (an instance keeps
        its job's name and its own for ever); asked about an instance that is gone (a caller
        quoting a failure late), it is computed again and never stored: stored, it would
        hold the instance for the manager's lifetime."""
        found = self._names.get(job)
        return found if found is not None else log_name(job.name, job.instance)

    def path(self, job: Job) -> Path:
        return self.directory / self.name(job)

    def path_text(self, job: Job) -> str:
        """:meth:`path` as text (what the bus shows, for every property read)."""
        return f"{self.directory}/{self.name(job)}"

    # ------------------------------------------------------------------ the supervisor's
    def writer(self, job: Job) -> int:
        """The write end of ``job``'s pipe (made on its first spawn); raises OSError when its
        log file cannot be opened."""
        return self.sinks.writer(self.name(job))

    def drain(self, job: Job) -> None:
        self.sinks.drain(self.name(job))

    def release(self, job: Job) -> None:
        self.sinks.release(self.name(job))

    def close(self) -> None:
        self.sinks.close()

    # ------------------------------------------------------------------ reading
    def tail(self, job: Job, lines: int = LOG_TAIL_LINES) -> list[str]:
        """The last non-blank ``lines`` of output since the current start began."""
        name = self.name(job)
        self.sinks.drain(name)
        since = self.sinks.written(name) - self._marks.get(job, 0)
        if since <= 0:
            return []
        try:
            with open(self.path(job), "rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - min(since, _TAIL_BYTES)))
                data = fh.read().decode(errors="replace")
        except OSError:
            return []
        return [ln for ln in data.splitlines() if ln.strip()][-lines:]

    def failure_line(self, job: Job, failure: Failure) -> str:
        """``job flapper failed: main exited with status 1; it respawns; last output: ...``"""
        if job.goal is not Goal.STOP and failure.process != "respawn":
            what_next = "it respawns"
        else:
            what_next = "it stops"
        text = f"job {job.label} failed: {failure.summary()}; {what_next}"
        tail = self.tail(job, 3) if job.jobclass.context.console is ConsoleMode.LOG else []
        if tail:
            text += "; last output: " + " | ".join(tail)
        return text

    # ------------------------------------------------------------------ observer
    def job_event(self, job: Job, event: Event) -> None:
        if event.name == "starting":
            self._marks[job] = self.sinks.written(self.name(job))
        elif event.name in ("stopping", "stopped"):
            failure = job.failure
            if failure is not None and self._told.get(job) is not failure:
                self._told[job] = failure
                log.warning("%s", self.failure_line(job, failure))

    def instance_added(self, job: Job) -> None:
        self._names[job] = log_name(job.name, job.instance)

    def instance_removed(self, job: Job) -> None:
        self._marks.pop(job, None)
        self._told.pop(job, None)
        self.sinks.forget(self.name(job))
        self._names.pop(job, None)
