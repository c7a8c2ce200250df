"""The operations callers ask of the manager: start, stop, restart, reload, emit, activate.

Every caller goes through here: the bus face (``StartJob``, ``Job1.Start``...), the activation
backends (``activate_name``), the event dispatcher (``prepare_start``). Arguments arrive as plain
values, already translated from D-Bus; refusals and failures leave as
:class:`~busmgr.errors.ManagerError` with the SPEC §3 error name and a message that names the
job, the instance or the bad argument.

Waiting: an operation with ``wait`` hands the job a :class:`~busmgr.job.Waiter` whose future
is resolved when the job reaches the rest state of the new goal; a failure then raises
``JobFailed`` with :meth:`Control.failure_message` (the failure, and the last lines of the
job's output from this start attempt).

Nothing here touches a process or the bus: sending a reload signal goes through the
:class:`Signaller` protocol, which the supervisor implements.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Protocol

from busmgr.environment import Environment
from busmgr.errors import ManagerError
from busmgr.eventqueue import Block, EventQueue
from busmgr.events import Event, expand, validate_event_env, validate_event_name
from busmgr.job import Failure, Goal, Job, State, Waiter
from busmgr.jobclass import DBUS_ACTIVATION, ConsoleMode, JobClass
from busmgr.joblog import JobLog
from busmgr.registry import Registry

log = logging.getLogger("busmgr")

__all__ = ["Control", "Signaller"]

Outcome = asyncio.Future[tuple[Failure | None, str]]


class Signaller(Protocol):
    """Sends a signal to a job's main process (the supervisor)."""

    def signal_main(self, job: Job, signum: int) -> bool:
        """``signum`` to the main process of ``job``; False if it has none (any more)."""
        ...


class Control:
    """The manager's operations. ``shutting_down`` is set once shutdown began."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        registry: Registry,
        queue: EventQueue,
        environment: Environment,
        joblog: JobLog,
        signaller: Signaller,
        request_shutdown: Callable[[int], None],
    ) -> None:
        self.loop = loop
        self.registry = registry
        self.queue = queue
        self.environment = environment
        self.joblog = joblog
        self.signaller = signaller
        self._request_shutdown = request_shutdown
        self.shutting_down = False

    # ------------------------------------------------------------------ looking up
    def get_class(self, name: str) -> JobClass:
        if not name:
            raise ManagerError("InvalidArgs", "the job name is empty")
        cls = self.registry.get_class(name)
        if cls is None:
            raise ManagerError("UnknownJob", f'no job named "{name}"')
        return cls

    def list_rows(self) -> list[tuple[str, str, str, bool]]:
        """``(job, instance, state, placeholder)`` per instance; an ``instance`` job with none
        has one placeholder row with instance ``""`` and state ``waiting`` (SPEC §3
        ``ListJobs``)."""
        rows = []
        for name in sorted(self.registry.classes):
            insts = self.registry.instances.get(name, {})
            if not insts:
                rows.append((name, "", State.WAITING.value, True))
            for inst in sorted(insts):
                rows.append((name, inst, insts[inst].state.value, False))
        return rows

    def find_instance(self, cls: JobClass, env: Mapping[str, str]) -> Job:
        """The instance ``env`` selects (an ``instance`` job's name template expanded with the
        job's environment and ``env``); raises ``UnknownInstance``."""
        if not cls.instance:
            job = self.registry.instance(cls.name, "")
            if job is None:
                raise ManagerError("UnknownInstance", f"job {cls.name} has no instance")
            return job
        instance = self.instance_name(cls, env)
        job = self.registry.instance(cls.name, instance)
        if job is None:
            raise ManagerError("UnknownInstance", f'job {cls.name} has no instance "{instance}"')
        return job

    def instance_name(self, cls: JobClass, *layers: Mapping[str, str]) -> str:
        """The instance name a start of ``cls`` with these env layers refers to."""
        if not cls.instance:
            return ""
        return expand(cls.instance, self.environment.job_env(cls, *layers))

    # ------------------------------------------------------------------ starting
    def check_env(self, env: Mapping[str, str]) -> dict[str, str]:
        problem = validate_event_env(env)
        if problem:
            raise ManagerError("InvalidArgs", problem)
        return dict(env)

    def prepare_start(
        self, cls: JobClass, event_env: Mapping[str, str], request_env: Mapping[str, str]
    ) -> Job:
        """The instance a start with these envs refers to, made ready to take them.

        The env is built in SPEC's order (:meth:`Environment.job_env`: base, ``env`` stanzas,
        the event's env, the request's env, later ones winning). A job at rest takes it at
        once, with a fresh ``stop on`` state. A job still on its way down (goal stop) takes both
        when it next enters ``starting`` (Upstart's ``start_env``), so a start that overrules
        the stop runs it again with the new env, not the old one. A job heading for start is
        returned unchanged. Raises ``InvalidArgs`` when an instance name expands to nothing.
        """
        env = self.environment.job_env(cls, event_env, request_env)
        instance = expand(cls.instance, env) if cls.instance else ""
        if cls.instance and not instance:
            raise ManagerError(
                "InvalidArgs",
                f"job {cls.name} is an instance job "
                f"(instance {cls.instance}): that expands to nothing here",
            )
        job, _new = self.registry.get_or_create(cls, instance, env)
        if job.goal is Goal.STOP and job.state is State.WAITING:
            job.env = env
            job.start_env = None
            self.registry.reset_stop_on(job)
        elif job.goal is Goal.STOP:
            job.start_env = env
            self.registry.reset_stop_on(job)
        return job

    # ------------------------------------------------------------------ waiting
    def waiter(self, want: Goal) -> tuple[Waiter, Outcome]:
        """A waiter for ``want``'s rest state and the future it resolves."""
        fut: Outcome = self.loop.create_future()

        def done(failure: Failure | None, how: str) -> None:
            if not fut.done():
                fut.set_result((failure, how))

        return Waiter(done, want=want), fut

    async def _await(self, job: Job, fut: Outcome) -> None:
        failure, _how = await fut
        if failure is not None:
            raise ManagerError("JobFailed", self.failure_message(job, failure))

    def failure_message(self, job: Job, failure: Failure) -> str:
        """``job X failed: RESULT=failed PROCESS=main exited with status 1; last output: ...``"""
        text = f"job {job.label} failed: {failure.describe()}"
        if job.jobclass.context.console is ConsoleMode.LOG:
            tail = self.joblog.tail(job)
            if tail:
                text += "; last output: " + " | ".join(tail)
        return text

    # ------------------------------------------------------------------ operations
    async def start_job(self, name: str, env: Mapping[str, str], wait: bool) -> Job:
        cls = self.get_class(name)
        job = self.prepare_start(cls, {}, self.check_env(env))
        waiter, fut = self.waiter(Goal.START)
        job.start(waiter)
        if wait:
            await self._await(job, fut)
        return job

    async def stop_job(self, name: str, env: Mapping[str, str], wait: bool) -> None:
        cls = self.get_class(name)
        job = self.find_instance(cls, self.check_env(env))
        waiter, fut = self.waiter(Goal.STOP)
        job.stop(waiter, env)
        if wait:
            failure, _how = await fut
            if failure is not None:
                raise ManagerError("JobFailed", f"job {job.label} did not stop: {failure.reason}")

    async def restart_job(self, name: str, env: Mapping[str, str], wait: bool) -> Job:
        cls = self.get_class(name)
        env = self.check_env(env)
        try:
            job = self.find_instance(cls, env)
        except ManagerError:
            job = self.prepare_start(cls, {}, env)
        if job.state is State.WAITING:
            job = self.prepare_start(cls, {}, env)
        waiter, fut = self.waiter(Goal.START)
        job.restart(waiter)
        if wait:
            await self._await(job, fut)
        return job

    def reload_job(self, name: str, env: Mapping[str, str]) -> None:
        cls = self.get_class(name)
        job = self.find_instance(cls, self.check_env(env))
        if not self.signaller.signal_main(job, cls.reload_signal):
            raise ManagerError("AlreadyStopped", f"job {job.label} has no main process to reload")

    async def emit_event(self, name: str, env: Mapping[str, str], wait: bool) -> None:
        problem = validate_event_name(name)
        if problem:
            raise ManagerError("InvalidArgs", problem)
        env = self.check_env(env)
        done: asyncio.Future[Block] = self.loop.create_future()
        self.queue.emit(Event.make(name, env), lambda b: done.done() or done.set_result(b))
        if wait:
            block = await done
            if block.failed:
                raise ManagerError("JobFailed", f"event {name}: " + "; ".join(block.failures))

    async def activate_name(self, bus_name: str) -> Job:
        """Start the job that provides ``bus_name``; return once the name has an owner.

        The one path of every activation (every backend, and clients' ``ActivateName``). The
        request is the event ``dbus-activation NAME=...``, which starts the provider through
        its ``activated_by`` (and any job whose ``start on`` names it). The event finishes when
        the provider is running or has failed; only then is its instance looked up, never
        created, so an instance that failed and was removed leaves nothing behind. Failure
        raises ``JobFailed`` with :meth:`failure_message`, which is also logged.
        """
        if not bus_name:
            raise ManagerError("InvalidArgs", "the bus name is empty")
        cls = self.registry.provider(bus_name)
        if cls is None:
            raise ManagerError("NoProvider", f'no job provides the bus name "{bus_name}"')
        env = {"NAME": bus_name}
        done: asyncio.Future[Block] = self.loop.create_future()
        self.queue.emit(
            Event.make(DBUS_ACTIVATION, env), lambda b: done.done() or done.set_result(b)
        )
        block = await done
        try:
            job = self.registry.instance(cls.name, self.instance_name(cls, env))
            if job is not None and job.state is State.RUNNING and job.goal is Goal.START:
                return job
            if job is None or job.goal is Goal.STOP:
                if job is not None and job.failure is not None:
                    raise ManagerError("JobFailed", self.failure_message(job, job.failure))
                reason = "; ".join(block.failures) or f"job {cls.name} did not start"
                if self.shutting_down:
                    reason = "the manager is shutting down"
                raise ManagerError("JobFailed", reason)
            # Started by someone else meanwhile and not there yet: wait with them.
            waiter, fut = self.waiter(Goal.START)
            job.add_waiter(waiter)
            await self._await(job, fut)
        except ManagerError as err:
            log.warning("activation of %s failed: %s", bus_name, err.message)
            raise
        return job

    async def end_session(self) -> None:
        """``EndSession``: emit ``desktop-end``, then shut down (every job stops, in reverse
        start order, then the bus; the manager exits 0)."""
        self.queue.emit(Event.make("desktop-end", {}))
        self._request_shutdown(0)
