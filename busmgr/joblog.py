"""Job logs: where a job's output goes with ``console log``, and the tail that failure messages
quote.

Layout, under ``<state dir>/log``: a job without ``instance`` logs to ``<job>.log``; an instance
of an ``instance`` job to ``<job>/<instance>.log``, the instance name percent-encoded where it
could not stand in a file name as it is (``%``, ``/``, a leading ``.``, control characters). So
two instances never share a file (``a/b`` is ``a%2fb``, ``a_b`` stays ``a_b``), and a job name
(which has no ``/`` and no leading ``.``) never collides with another job's directory.

:class:`JobLog` is an observer: it marks where the log ended when a start began (``starting``),
so a failure message quotes the output of the current start attempt only, and forgets an
instance once it is gone.
"""

from __future__ import annotations

import os
from pathlib import Path

from busmgr.events import Event
from busmgr.job import Job
from busmgr.observe import JobObserver

__all__ = ["LOG_TAIL_LINES", "JobLog", "log_name"]

LOG_TAIL_LINES = 5
_TAIL_BYTES = 4096


def _encode(name: str) -> str:
    out = []
    for i, ch in enumerate(name):
        if ch in "%/" or not ch.isprintable() or (i == 0 and ch == "."):
            out.extend(f"%{b:02x}" for b in ch.encode("utf-8", "surrogatepass"))
        else:
            out.append(ch)
    return "".join(out)


def log_name(job: str, instance: str) -> str:
    """The log file of one job instance, relative to the log directory."""
    if not instance:
        return f"{job}.log"
    return f"{job}/{_encode(instance)}.log"


class JobLog(JobObserver):
    """Log paths and tails of every job instance under ``<state_dir>/log``."""

    def __init__(self, state_dir: Path) -> None:
        self.directory = state_dir / "log"
        self._marks: dict[Job, int] = {}  # log size when the current start began

    def path(self, job: Job) -> Path:
        return self.directory / log_name(job.name, job.instance)

    def tail(self, job: Job, lines: int = LOG_TAIL_LINES) -> list[str]:
        """The last non-blank ``lines`` of output since the current start began."""
        try:
            with open(self.path(job), "rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(self._marks.get(job, 0), size - _TAIL_BYTES))
                data = fh.read().decode(errors="replace")
        except OSError:
            return []
        return [ln for ln in data.splitlines() if ln.strip()][-lines:]

    # ------------------------------------------------------------------ observer
    def job_event(self, job: Job, event: Event) -> None:
        if event.name == "starting":
            try:
                self._marks[job] = self.path(job).stat().st_size
            except OSError:
                self._marks[job] = 0

    def instance_removed(self, job: Job) -> None:
        self._marks.pop(job, None)
