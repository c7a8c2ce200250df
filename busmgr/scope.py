"""The set of processes that belong to one job instance, and how to signal all of them.

Model: every process a job spawns leads a new session (``setsid``), so the job's processes are
the members of those sessions, plus whatever its processes forked into sessions of their own.
This module is the one place that answers "which processes are this job's?"; the state
machine only asks :meth:`ProcessScope.alive` and :meth:`ProcessScope.kill`.

Invariant: a scope never names a process it was not given or that did not descend from one it
was given, so stopping a job can never touch a process started outside it (seed ``000_*``:
another script of the same interpreter is never killed).
"""

from __future__ import annotations

from busmgr import process


class ProcessScope:
    """The processes of one job instance (sessions of the processes it spawned)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._sessions: set[int] = set()

    def adopt(self, pid: int) -> None:
        """``pid`` was just spawned for this job (it leads its own session)."""
        self._sessions.add(pid)

    def pids(self) -> list[int]:
        """Every live (or unreaped) process of the job, sorted."""
        found: set[int] = set()
        for sid in list(self._sessions):
            members = process.session_processes(sid)
            if members:
                found.update(members)
            else:
                self._sessions.discard(sid)
        return sorted(found)

    def alive(self) -> bool:
        return bool(self.pids())

    def kill(self, signum: int) -> None:
        """Send ``signum`` to every process of the job."""
        for sid in list(self._sessions):
            process.kill_process_group(sid, signum)
        for pid in self.pids():
            process.kill_pid(pid, signum)

    def release(self) -> None:
        """The job is at rest and has no processes: forget it."""
        self._sessions.clear()
