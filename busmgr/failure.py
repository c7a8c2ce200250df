"""Why a job failed: the :class:`Failure` value and the ways it is read.

A failure names the process that failed (``pre-start``, ``main``, ``post-stop``..., or
``respawn`` when main failed too often) and how it ended. It is a frozen value: a job holds at
most one per start attempt (:class:`busmgr.job.Job` sets it once and clears it on the next
start), and everyone else (waiters, the job log, the bus, snapshots) only reads it.
"""

from __future__ import annotations

from dataclasses import dataclass

from busmgr.jobclass import signal_name


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a job failed: which process (or ``respawn``) and how it ended."""

    process: str
    status: int | None = None
    signal: int | None = None
    reason: str = ""

    @property
    def how(self) -> str:
        """``killed by signal KILL``, ``exited with status 1``, or ``""``."""
        if self.signal is not None:
            return f"killed by signal {signal_name(self.signal)}"
        if self.status is not None:
            return f"exited with status {self.status}"
        return ""

    def describe(self) -> str:
        how = f" {self.how}" if self.how else ""
        text = f"RESULT=failed PROCESS={self.process}{how}"
        return f"{text}: {self.reason}" if self.reason else text

    def summary(self) -> str:
        """The reason in a few words, for people: ``respawned too fast (3 in 5s), last: main
        exited with status 1``, ``lost bus name org.x.Y``, ``main killed by signal KILL``,
        ``pre-start exited with status 4``, ``not ready after 90s (waited for ...)``."""
        how = self.how
        if self.process == "respawn":
            return f"{self.reason}, last: main {how}" if how else self.reason
        if self.reason and how:
            return f"{self.process} {how}: {self.reason}"
        if self.reason:
            return self.reason if self.process == "main" else f"{self.process}: {self.reason}"
        return f"{self.process} {how}" if how else f"{self.process} failed"
