"""Event dispatch: what one event does to the jobs (Upstart's ``event_pending_handle_jobs``).

The event queue hands each event to :meth:`Dispatcher.handle`, in emission order. Only the
jobs whose expressions name the event are looked at (the registry's index). First every
instance whose ``stop on`` the event completes is stopped, then every class whose ``start on``
it completes, or that it activates (``activated_by``: a ``dbus-activation`` of the class's bus
name), is started with the env of the events that completed the expression. Stopping first
means an event in both expressions of a running job restarts it; the instance a start creates
has a fresh ``stop on`` state, so the event that started it is never also counted towards
stopping it. An expression that fired is reset (the re-arming rule) even when the job was
already where it would have been sent.

Blocking: each job whose goal the event changes holds the event's block until it got there
(running, or for a task and a stop, waiting); the blocks it held for earlier goal changes are
let go first. A ``starting``/``stopping`` event never makes the job it is about hold it: that
job is blocked by the event, so it could never get anywhere (``stop on starting J`` in J itself
stops J once its starting event is over, without the event waiting for it). Once shutdown
began, events still stop jobs but start none: everything is being stopped and nothing started
now would be waited for.
"""

from __future__ import annotations

import logging

from busmgr.control import Control
from busmgr.errors import ManagerError
from busmgr.eventqueue import Block
from busmgr.events import Event, job_env_of, match_event
from busmgr.job import Failure, Goal, Job, Waiter
from busmgr.jobclass import JobClass
from busmgr.observe import JobObserver

log = logging.getLogger("busmgr")

__all__ = ["Dispatcher"]


class Dispatcher:
    """Applies events to jobs; see the module docstring."""

    def __init__(self, control: Control, observers: JobObserver) -> None:
        self.control = control
        self.registry = control.registry
        self.queue = control.queue
        self.observers = observers

    def handle(self, event: Event, block: Block) -> None:
        """Apply ``event``; jobs it changes hold ``block`` until they got where it sent them."""
        self.observers.event_emitted(event)
        registry = self.registry
        subject = (
            (event.get("JOB"), event.get("INSTANCE"))
            if event.name in ("starting", "stopping")
            else None
        )
        interested = sorted(registry.interested(event.name))
        for name in interested:
            for _, job in sorted(registry.instances.get(name, {}).items()):
                self._maybe_stop(job, event, block, subject)
        for name in interested:
            cls = registry.classes.get(name)
            if cls is not None:
                self._maybe_start(cls, event, block, subject)

    def settle_at_once(self, event: Event) -> bool:
        """Handle ``event`` now, without the queue, if that is exactly what the queue would do:
        no job's expression names it (so handling it changes no job and nothing waits on it)
        and the queue is idle (so no earlier event is still to be handled before it). Then it
        is only shown to the observers, and True says it is finished. False: emit it through
        the queue. This is how a job's ``stopping``/``starting`` that no job listens to costs
        no loop turn (a respawn goes from the exit to the next spawn in one callback)."""
        if not self.queue.idle() or self.registry.interested(event.name):
            return False
        self.observers.event_emitted(event)
        return True

    def _maybe_stop(
        self, job: Job, event: Event, block: Block, subject: tuple[str | None, ...] | None
    ) -> None:
        state = self.registry.stop_on.get(job)
        if state is None or job.goal is Goal.STOP:
            return
        if state.handle(event, job.env):
            env = state.env()
            state.reset()
            self.queue.release_held(job)
            blocked = (job.name, job.instance) == subject
            job.stop(None if blocked else self._block_waiter(block, job, Goal.STOP), env)

    def _start_env(self, cls: JobClass, event: Event) -> dict[str, str] | None:
        """The env a start of ``cls`` by ``event`` gets, or None if the event does not start
        it: an ``activated_by`` match alone, else a completed ``start on`` (ignored for
        ``manual`` jobs)."""
        if any(match_event(leaf, event, {}) for leaf in cls.activated_by):
            return job_env_of(event)
        state = self.registry.start_on.get(cls.name)
        if cls.manual or state is None:
            return None
        if state.handle(event, self.control.environment.job_env(cls)):
            env = state.env()
            state.reset()
            return env
        return None

    def _maybe_start(
        self, cls: JobClass, event: Event, block: Block, subject: tuple[str | None, ...] | None
    ) -> None:
        env = self._start_env(cls, event)
        if env is None:
            return
        if self.control.shutting_down:
            log.info("%s: event %s ignored: shutting down", cls.name, event.name)
            return
        try:
            job = self.control.prepare_start(cls, env, {})
        except ManagerError as err:
            log.warning("%s: event %s: %s", cls.name, event.name, err.message)
            return
        if job.goal is Goal.STOP:
            self.queue.release_held(job)
            blocked = (job.name, job.instance) == subject
            job.start(None if blocked else self._block_waiter(block, job, Goal.START))

    def _block_waiter(self, block: Block, job: Job, want: Goal) -> Waiter:
        """A waiter through which ``job`` holds ``block`` until it reaches ``want``'s rest state.

        A failure is recorded on the block with the job's name (what ``EmitEvent`` reports).
        """
        release = self.queue.hold(block, job)

        def done(failure: Failure | None, _how: str) -> None:
            release(self.control.failure_message(job, failure) if failure else None)

        return Waiter(done, want=want)
