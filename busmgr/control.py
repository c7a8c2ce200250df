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
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Protocol, TypeVar

from busmgr import trace
from busmgr.environment import Environment
from busmgr.errors import ManagerError
from busmgr.escape import escape
from busmgr.eventqueue import Block, EventQueue
from busmgr.events import Event, expand, validate_event_env, validate_event_name
from busmgr.job import Failure, Goal, Job, State, Waiter
from busmgr.jobclass import DBUS_ACTIVATION, ConsoleMode, JobClass
from busmgr.joblog import JobLog, log_name
from busmgr.registry import Registry

log = logging.getLogger("busmgr")

__all__ = ["Control", "Signaller", "instance_problem"]

#: The longest path element a job instance may need: its cgroup leaf (``<job>.<instance>``,
#: escaped) and its log file name (``<instance>.log``, encoded) are file names.
MAX_NAME_ELEMENT = 255


def instance_problem(job: str, instance: str) -> str | None:
    """Why ``instance`` cannot name an instance of ``job``, or None.

    It must not be empty, must have no control characters (it is shown in lists, one per
    line), and must fit in a file name once escaped (its cgroup leaf and its log file)."""
    if not instance:
        return "the instance name expands to nothing here"
    if any(not ch.isprintable() for ch in instance):
        return f"the instance name {instance!r} contains control characters"
    log_file = log_name(job, instance).rsplit("/", 1)[-1]
    longest = max(len(escape(job)) + 1 + len(escape(instance)), len(log_file))
    if longest > MAX_NAME_ELEMENT:
        return (
            f"the instance name is too long ({len(instance)} characters; "
            f"escaped, it must fit in {MAX_NAME_ELEMENT})"
        )
    return None


Outcome = asyncio.Future[tuple[Failure | None, str]]
_T = TypeVar("_T")

#: Seconds ``EndSession`` waits for what ``desktop-end`` started or stopped before the manager
#: shuts down all the same.
END_SESSION_WAIT = 5.0


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
        # Seconds an activation may take before it fails with busmgr's reason, before the bus
        # or the caller gives up (None: no limit); the manager sets it from the bus
        # (busmgr.bus.patience). The job itself goes on, up to its own ready timeout.
        self.activation_patience: float | None = None
        self._ending: asyncio.Future[None] | None = None

    # ------------------------------------------------------------------ looking up
    def get_class(self, name: str) -> JobClass:
        """The current class of job ``name``; raises ``UnknownJob``."""
        if not name:
            raise ManagerError("InvalidArgs", "the job name is empty")
        cls = self.registry.get_class(name)
        if cls is None:
            raise ManagerError("UnknownJob", f'no job named "{name}"')
        return cls

    def live_class(self, name: str) -> JobClass:
        """The class to find instances of ``name`` with: the current one, or, for a job whose
        file went away, the class its still running instances keep until they stop (so they
        stay controllable). Raises ``UnknownJob``."""
        cls = self.registry.get_class(name)
        if cls is None:
            live = next(iter(self.registry.instances.get(name, {}).values()), None)
            if live is None:
                raise ManagerError("UnknownJob", f'no job named "{name}"')
            cls = live.jobclass
        return cls

    def list_rows(self) -> list[tuple[str, str, str, bool]]:
        """``(job, instance, state, placeholder)`` per instance; an ``instance`` job with none
        has one placeholder row with instance ``""`` and state ``waiting`` (SPEC §3
        ``ListJobs``)."""
        rows = []
        for name in sorted(set(self.registry.classes) | set(self.registry.instances)):
            insts = self.registry.instances.get(name, {})
            if not insts and name in self.registry.classes:
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
        if cls.instance:
            problem = instance_problem(cls.name, instance)
            if problem is not None:
                raise ManagerError(
                    "InvalidArgs", f"job {cls.name} (instance {cls.instance}): {problem}"
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

    def start_waiter(self, job: Job) -> tuple[Waiter, asyncio.Future[str | None]]:
        """A waiter for the start of ``job``, and a future that gets None once it is running
        (a task: has run), else the ``JobFailed`` message.

        The message is written when the job reports the failure, not when the caller resumes:
        by then a failed instance of an ``instance`` job has been removed, and its log (the
        output the message quotes) forgotten with it."""
        fut: asyncio.Future[str | None] = self.loop.create_future()

        def done(failure: Failure | None, _how: str) -> None:
            if fut.done():
                return
            if failure is None:
                fut.set_result(None)
            elif self.shutting_down and failure.status is None:
                fut.set_result(f"job {job.label}: the manager is shutting down")
            else:
                fut.set_result(self.failure_message(job, failure))

        return Waiter(done, want=Goal.START), fut

    async def _until(self, fut: asyncio.Future[_T], deadline: float | None) -> _T:
        """``await fut``, or ``TimeoutError`` at loop time ``deadline`` (``fut`` is then
        cancelled: whoever would resolve it checks ``done()`` first)."""
        if deadline is None:
            return await fut
        return await asyncio.wait_for(fut, max(0.0, deadline - self.loop.time()))

    async def _await(self, fut: asyncio.Future[str | None]) -> None:
        """Wait for a :meth:`start_waiter`'s future; a failure raises ``JobFailed``."""
        message = await fut
        if message is not None:
            raise ManagerError("JobFailed", message)

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
        waiter, fut = self.start_waiter(job)
        job.start(waiter)
        if wait:
            await self._await(fut)
        return job

    async def stop_job(self, name: str, env: Mapping[str, str], wait: bool) -> None:
        cls = self.live_class(name)
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
        waiter, fut = self.start_waiter(job)
        job.restart(waiter)
        if wait:
            await self._await(fut)
        return job

    def reload_job(self, name: str, env: Mapping[str, str]) -> None:
        cls = self.live_class(name)
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

    async def activate_name(self, bus_name: str, *, quiet: bool = False) -> tuple[str, str]:
        """Start the job that provides ``bus_name``; return ``(job, instance)`` once the name
        has an owner.

        The one path of every activation (every backend, and clients' ``ActivateName``). The
        request is the event ``dbus-activation NAME=...``, which starts the provider through
        its ``activated_by`` (and any job whose ``start on`` names it), and which finishes
        when the provider got there. The event's outcome decides: a job that reached running
        (it owned the name: the bus delivered the callers' messages) is a success even if it
        was stopped right after, and so is a wrapper that exited once another process owned
        the name (:meth:`busmgr.job.Job.bus_name_checked`); a job that failed on the way is a
        failure with its reason, once (``JobFailed``, logged unless ``quiet``: an activation
        backend logs what it reports itself). A job that has not got there
        :attr:`activation_patience` seconds after the request fails the request with what it
        is doing (:meth:`not_claimed_message`), before the bus and the caller give up; the
        job goes on. The instance is looked up afterwards, never created, so one that failed
        and was removed leaves nothing behind.
        """
        if not bus_name:
            raise ManagerError("InvalidArgs", "the bus name is empty")
        cls = self.registry.provider(bus_name)
        if cls is None:
            raise ManagerError("NoProvider", f'no job provides the bus name "{bus_name}"')
        env = {"NAME": bus_name}
        instance = self.instance_name(cls, env)
        traced = trace.ON and trace.begin(bus_name, "activate")
        patience = self.activation_patience
        deadline = None if patience is None else self.loop.time() + patience
        try:
            try:
                await self._activation(cls, instance, env, deadline)
            except TimeoutError:
                job = self.registry.instance(cls.name, instance)
                text = self.not_claimed_message(cls, job, bus_name, patience or 0.0)
                raise ManagerError("JobFailed", text) from None
        except ManagerError as err:
            if traced:
                trace.end(bus_name, err.message)
            if not quiet:
                log.warning("activation of %s failed: %s", bus_name, err.message)
            raise
        if traced:
            trace.end(bus_name, "ok")
        return cls.name, instance

    async def _activation(
        self, cls: JobClass, instance: str, env: dict[str, str], deadline: float | None
    ) -> None:
        """Emit ``dbus-activation`` and wait until the provider got there; raises
        ``ManagerError``, or ``TimeoutError`` at ``deadline``.

        A start that was under way before the request (the event joined it) may belong to a
        process that died a moment ago, its exit not yet seen: the bus asks again as soon as
        the name is free. So when a start this event did not make fails, or the job went down
        between the event and the look at it, the event is emitted once more, which starts
        the job anew; a second failure is the answer."""
        for again in (True, False):
            done: asyncio.Future[Block] = self.loop.create_future()
            self.queue.emit(
                Event.make(DBUS_ACTIVATION, env),
                lambda b, done=done: done.done() or done.set_result(b),
            )
            block = await self._until(done, deadline)
            if block.failed:
                raise ManagerError("JobFailed", "; ".join(block.failures))
            job = self.registry.instance(cls.name, instance)
            if job is not None and job.goal is not Goal.STOP:
                if job.state is State.RUNNING:
                    return
                # A start already under way, not made by this event: wait for it.
                waiter, fut = self.start_waiter(job)
                job.add_waiter(waiter)
                message = await self._until(fut, deadline)
                if message is None:
                    return
                if again and not block.held and not self.shutting_down:
                    continue
                raise ManagerError("JobFailed", message)
            if block.held:  # started by this event, at rest since (stopped right after)
                return
            if job is not None and again and not self.shutting_down:
                continue  # on its way up at the event, down since: start it anew
            problem = instance_problem(cls.name, instance) if cls.instance else None
            if self.shutting_down:
                problem = "the manager is shutting down"
            raise ManagerError(
                "JobFailed", f"job {cls.name} was not started: {problem or 'refused'}"
            )

    def not_claimed_message(
        self, cls: JobClass, job: Job | None, bus_name: str, waited: float
    ) -> str:
        """Why an activation of ``bus_name`` is not done after ``waited`` seconds: ``job
        silent did not claim org.x.Y within 22.5s: its main process 4242 is running and has
        not claimed it; the job goes on (ready timeout 90s); last output: ...``"""
        label = job.label if job is not None else cls.name
        if job is None or job.goal is Goal.STOP:
            what = "it is not starting (any more)"
        elif job.state is State.SPAWNED and job.main_pid:
            what = f"its main process {job.main_pid} is running and has not claimed it"
        elif job.state in (State.PRE_START, State.POST_START):
            what = f"its {job.state.value} process is still running"
        elif job.state is State.STARTING:
            what = "it is still starting: jobs its starting event started are not there yet"
        else:
            what = f"it is {job.goal.public}/{job.state.value}"
        text = f"job {label} did not claim {bus_name} within {waited:g}s: {what}"
        if job is not None and job.goal is not Goal.STOP:
            text += f"; the job goes on (ready timeout {job.jobclass.ready_timeout:g}s)"
        if job is not None and job.jobclass.context.console is ConsoleMode.LOG:
            self.joblog.drain(job)  # what it wrote by now, not only what was read by now
            tail = self.joblog.tail(job)
            if tail:
                text += "; last output: " + " | ".join(tail)
        return text

    @property
    def ending(self) -> bool:
        """True once ``EndSession`` was called: the session is on its way out."""
        return self._ending is not None

    async def end_session(self) -> None:
        """``EndSession``: emit ``desktop-end`` (once) and wait until the jobs it started or
        stopped got there (at most :data:`END_SESSION_WAIT` seconds: a ``start on desktop-end``
        task runs, a ``stop on desktop-end`` job stops), then shut down (every job stops, in
        reverse start order, then the bus; the manager exits 0)."""
        if self._ending is None:
            ending = self._ending = self.loop.create_future()
            self.queue.emit(
                Event.make("desktop-end", {}), lambda _b: ending.done() or ending.set_result(None)
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._ending), END_SESSION_WAIT)
        self._request_shutdown(0)
