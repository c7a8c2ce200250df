"""The manager: the composition root. It builds the rooms, wires them, and owns no behaviour.

Data flows one way: job file -> :mod:`busmgr.catalog` (``JobClass`` values) ->
:mod:`busmgr.registry` (``Job`` state machines) -> :mod:`busmgr.supervisor` (processes) ->
observers (:mod:`busmgr.observe`: the bus face, the job log). Requests arrive through
:mod:`busmgr.control` (from the bus face and the activation backends) and events through the
event queue and :mod:`busmgr.dispatch`.

:class:`Manager` is the :class:`busmgr.job.JobHost` of every job, and nothing more than glue:
each host call is handed to the room that owns it. Nothing here blocks the loop, and nothing
polls: every wait is on a process exit, a bus message, an event or a timer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from busmgr import MANAGER_BUS_NAME
from busmgr.bus.activation import SYSTEMD, ActivationRequests, DbusDaemonActivation
from busmgr.bus.auth import CallerPolicy
from busmgr.bus.face import BusFace, Operations
from busmgr.bus.link import BusLink
from busmgr.bus.names import NameWatcher
from busmgr.bus.signal_events import SignalEventBridge
from busmgr.catalog import Catalog, Sources, load_catalog_sliced
from busmgr.control import Control
from busmgr.dispatch import Dispatcher
from busmgr.environment import Environment
from busmgr.eventqueue import Block, EventQueue
from busmgr.events import Event
from busmgr.job import Goal, Job, State, TimerHandle
from busmgr.jobclass import ProcessKind
from busmgr.joblog import JobLog
from busmgr.observe import JobObserver, Observers
from busmgr.options import Mode
from busmgr.readiness import BusNameReadiness
from busmgr.registry import Registry
from busmgr.supervisor import Supervisor
from busmgr.triggers import Triggers

log = logging.getLogger("busmgr")

__all__ = ["Manager", "ManagerConfig"]

INSTALL_BATCH = 25  # job classes added per step at start-up
INSTALL_SLICE = 0.02  # seconds of installing before the loop gets a turn


@dataclass(frozen=True)
class ManagerConfig:
    """What one manager is: its mode, where its jobs and state live, and its environment."""

    mode: Mode
    services_dirs: tuple[Path, ...]
    state_dir: Path
    import_services: bool
    environ: Mapping[str, str]


class _ClassFollower(JobObserver):
    """Keeps a callable told of every job class after each change (the signal bridge)."""

    def __init__(self, registry: Registry, update: Callable[..., None]) -> None:
        self._registry = registry
        self._update = update

    def classes_changed(self, added: object, removed: object) -> None:
        self._update(self._registry.classes.values())


class Manager:
    """One manager. Create it inside a running loop; see :mod:`busmgr.runtime` for its life."""

    def __init__(self, config: ManagerConfig) -> None:
        self.loop = asyncio.get_running_loop()
        self.config = config
        self.observers = Observers()
        self.environment = Environment(config.mode, config.environ)
        self.joblog = JobLog(config.state_dir)
        self.observers.subscribe(self.joblog)
        self.registry = Registry(self, self.observers)
        self.queue = EventQueue(self.loop, self._handle_event, self._event_failed)
        self.supervisor = Supervisor(
            self.loop, self.registry.jobs, self.joblog, self.observers, self.fatal
        )
        self.bus_names = BusNameReadiness(self.loop, self.registry.jobs, self.supervisor.scope)
        self.control = Control(
            self.loop,
            self.registry,
            self.queue,
            self.environment,
            self.joblog,
            self.supervisor,
            self.request_shutdown,
        )
        self.dispatcher = Dispatcher(self.control, self.observers)
        # On demand beyond the bus: sockets, files and timers become events.
        self.triggers = Triggers(
            self.loop, self.queue.emit, self.registry, self.environment.job_env
        )
        self.observers.subscribe(self.triggers)
        self.supervisor.listen_fds = self.triggers.sockets.listen_fds
        self.sources = Sources(
            config.services_dirs,
            config.mode,
            config.import_services,
            config.environ,
            frozenset({SYSTEMD, MANAGER_BUS_NAME}),
        )
        self.link = BusLink()
        self.activation: DbusDaemonActivation | None = None
        self.names: NameWatcher | None = None
        self._reloading = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self.stopped: asyncio.Future[None] = self.loop.create_future()
        self.exit_status = 0

    # ======================================================== JobHost glue
    def spawn(self, job: Job, kind: ProcessKind, env: Mapping[str, str]) -> int:
        return self.supervisor.spawn(job, kind, env)

    def kill(self, job: Job, signum: int) -> None:
        self.supervisor.kill(job, signum)

    def has_processes(self, job: Job) -> bool:
        return self.supervisor.has_processes(job)

    def emit_job_event(
        self, job: Job, event: Event, on_finished: Callable[[bool], None] | None
    ) -> None:
        if event.name == "started":
            self.registry.note_started(job)
        self.observers.job_event(job, event)
        self.queue.emit(event, None if on_finished is None else lambda b: on_finished(b.failed))

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        return self.loop.call_later(delay, callback)

    def now(self) -> float:
        return self.loop.time()

    def watch_readiness(self, job: Job) -> None:
        if "dbus" in job.pending_ready:
            self.bus_names.watch(job)
        if "expect" in job.pending_ready:
            self.supervisor.expect.watch(job)

    def changed(self, job: Job) -> None:
        self.observers.job_changed(job)

    def finished(self, job: Job) -> None:
        self.supervisor.release(job)
        self.registry.at_rest(job)

    # ======================================================== events
    def _handle_event(self, event: Event, block: Block) -> None:
        self.dispatcher.handle(event, block)

    def _event_failed(self, event: Event, err: Exception) -> None:
        log.error("internal error while handling event %s: %s", event, err, exc_info=err)
        self.fatal(f"internal error while handling event {event.name}")

    # ======================================================== configuration
    async def load(self) -> Catalog:
        """Read the job files (keeping the previous definition of a broken one), a slice at a
        time; every problem is logged with its file and line."""
        catalog = await load_catalog_sliced(self.sources, self.registry.classes)
        for line in catalog.diagnostics:
            log.warning("%s", line)
        return catalog

    async def reload_configuration(self) -> None:
        """Re-read the job files; running jobs keep running (with their old class until they
        stop). A broken file is reported and its job keeps its previous definition. Reloads
        run one at a time, in the order they were asked for."""
        async with self._reloading:
            self.registry.swap((await self.load()).classes)
            await self._refresh_activation()

    def request_reload(self) -> None:
        """``reload_configuration`` from a signal handler (SIGHUP)."""
        task = self.loop.create_task(self.reload_configuration())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _refresh_activation(self) -> None:
        """Write the activation files and follow the provided names (after every load)."""
        classes = list(self.registry.classes.values())
        if self.activation is not None:
            await self.activation.write_service_files(classes)
        if self.names is not None:
            # Follow every provided name now: a start later finds its owner known already.
            for cls in classes:
                if cls.dbus_name:
                    await self.names.watch(cls.dbus_name)

    # ======================================================== the bus
    async def connect(self, address: str) -> None:
        """Connect to the bus at ``address`` and put the manager's objects on it; raises
        :class:`busmgr.bus.link.LinkError` with one line. The manager's name is owned later,
        by :meth:`begin`, once the jobs are loaded (owning it is the manager's readiness)."""
        link = self.link
        await link.connect(address)
        self.environment.bus_address = address
        names = self.names = NameWatcher(link, self.bus_names.owner_changed)
        self.bus_names.attach(names)
        ops = Operations(
            self.control, CallerPolicy(self.config.mode, names), self.reload_configuration
        )
        face = BusFace(link, ops, self.supervisor.process_rows)
        face.publish(self.registry.classes.values(), self.registry.jobs())
        self.observers.subscribe(face)
        # Bus signals some job waits for become ``dbus-signal`` events.
        signals = SignalEventBridge(link, self.queue.emit, names)
        signals.update(self.registry.classes.values())
        self.observers.subscribe(_ClassFollower(self.registry, signals.update))

    # ======================================================== life
    async def begin(self, servicedir: Path | None, *, own_servicedir: bool) -> None:
        """Load the jobs and publish them (a slice at a time), own the manager's name, start
        activation (its files go to ``servicedir``; ``own_servicedir`` says it is the private
        bus's own directory, which goes away with the bus), and emit ``startup``."""
        classes = list((await self.load()).classes.values())
        deadline = self.loop.time() + INSTALL_SLICE
        for start in range(0, len(classes), INSTALL_BATCH):
            self.registry.add_classes(classes[start : start + INSTALL_BATCH])
            if self.loop.time() > deadline:
                await asyncio.sleep(0)  # nobody can call yet; the loop still has other work
                deadline = self.loop.time() + INSTALL_SLICE
        if self.link.connected:
            await self.link.own(MANAGER_BUS_NAME)
            self.activation = DbusDaemonActivation(
                self.link,
                ActivationRequests(self.control),
                self.environment,
                self.link.address,
                servicedir,
                remove_on_close=not own_servicedir,
            )
            await self.activation.start()
            await self._refresh_activation()
        self.queue.emit(Event.make("startup", {}))

    def request_shutdown(self, status: int = 0) -> None:
        if not self.stopped.done():
            self.exit_status = status
            self.stopped.set_result(None)

    def fatal(self, reason: str) -> None:
        """Something the manager cannot go on with (a bug, a stranded spawn): stop, exit 1."""
        log.critical("stopping: %s", reason)
        self.request_shutdown(1)

    async def stop_everything(self) -> bool:
        """Stop every job in reverse start order, each to waiting; True if all went clean."""
        self.control.shutting_down = True
        clean = True
        ordered = list(reversed(self.registry.start_order))
        others = [j for j in self.registry.jobs() if j not in ordered]
        for job in ordered + others:
            if job.goal is Goal.STOP and job.state is State.WAITING:
                continue
            clean = await self._stop_one(job) and clean
        # jobs started by stopping events while we stopped the others
        for job in list(self.registry.jobs()):
            if job.state is not State.WAITING:
                await self._stop_one(job)
        return clean

    async def _stop_one(self, job: Job) -> bool:
        waiter, fut = self.control.waiter(Goal.STOP)
        if job.goal is Goal.STOP:
            job.add_waiter(waiter)
        else:
            job.stop(waiter)
        await fut
        return not (job.failure is not None and job.failure.process in ("pre-stop", "post-stop"))

    async def close(self) -> None:
        self.triggers.close()
        self.bus_names.close()
        if self.activation is not None:
            self.activation.remove_service_files()
        await self.link.close()
