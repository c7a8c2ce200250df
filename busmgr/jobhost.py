"""The job host: everything a job needs from the world, and nothing else.

:class:`busmgr.job.Job` spawns, signals, reads the clock, sets timers, emits its job events and
publishes its changes only through a :class:`JobHost`; the manager is the host of every job
(:mod:`busmgr.manager`), and the state machine's tests use a fake one. This seam is what keeps
:mod:`busmgr.job` free of I/O. The protocol is generic in the job type, so this module does not
import the job it serves (the job module imports it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol, TypeVar

from busmgr.events import Event
from busmgr.jobclass import ProcessKind

JobT = TypeVar("JobT", contravariant=True)


class TimerHandle(Protocol):
    """A timer the host set for a job: cancelling it means its callback never runs."""

    def cancel(self) -> None: ...


class JobHost(Protocol[JobT]):
    """What a job (``JobT``: :class:`busmgr.job.Job`) needs from the world. The manager
    implements it; tests fake it.

    Every callback into the job (``process_exited``, ``event_finished``...) arrives from the
    event loop, never re-entrantly from inside one of these calls, except where noted.
    """

    def spawn(self, job: JobT, kind: ProcessKind, env: Mapping[str, str]) -> int:
        """Start ``kind``'s process for ``job``; returns its pid. Raises ``OSError``-like
        :class:`busmgr.process.SpawnError` with a message when it cannot be started."""
        ...

    def kill(self, job: JobT, signum: int) -> None:
        """Send ``signum`` to every process of the job."""
        ...

    def has_processes(self, job: JobT) -> bool:
        """Whether any process of the job (tracked or not) is still alive or unreaped."""
        ...

    def emit_job_event(
        self, job: JobT, event: Event, on_finished: Callable[[bool], None] | None
    ) -> bool | None:
        """Queue the job event ``event`` (``starting``, ...). With ``on_finished``, the event
        blocks the job: the callback runs (later, from the loop) once every job it started or
        stopped is done; or the host handled the event at once (no job listens to it and no
        other event is pending) and returns True, and ``on_finished`` is never called: the
        job goes on at once, as a successful event would let it."""
        ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle: ...

    def now(self) -> float:
        """Monotonic seconds (the respawn limit's clock)."""
        ...

    def watch_readiness(self, job: JobT) -> None:
        """Begin watching what ``job.pending_ready`` names (``dbus``, ``expect``); the host
        calls :meth:`busmgr.job.Job.ready` for each as it happens."""
        ...

    def check_bus_name(self, job: JobT) -> None:
        """The main process of ``job`` exited 0 while the job waited for its bus name: find
        out whether the name has an owner now (asking the bus, which decides) and call
        :meth:`busmgr.job.Job.bus_name_checked` with the answer (later, from the loop)."""
        ...

    def changed(self, job: JobT) -> None:
        """Some property of the job changed: publish it (coalesced per loop turn)."""
        ...

    def finished(self, job: JobT) -> None:
        """The job reached ``waiting``: an instance of an ``instance`` job may be removed."""
        ...
