"""The manager: the composition root. It builds the rooms, wires them, and owns no behaviour.

Data flows one way: job file -> :mod:`busmgr.catalog` (``JobClass`` values) ->
:mod:`busmgr.registry` (``Job`` state machines) -> :mod:`busmgr.supervisor` (processes) ->
observers (:mod:`busmgr.observe`: the bus face, the job log). Requests arrive through
:mod:`busmgr.control` (from the bus face and the activation backends) and events through the
event queue and :mod:`busmgr.dispatch`.

:class:`Manager` is the :class:`busmgr.job.JobHost` of every job, and nothing more than glue:
each host call is handed to the room that owns it. The roles around it have rooms of their own:
the bus connection and going live (:mod:`busmgr.presence`), re-execution's hand-over and
take-over (:mod:`busmgr.reexec`), the shutdown order (:mod:`busmgr.shutdown`), the times carried
across a restart (:meth:`busmgr.timeline.Timeline.take_back`) and the frozen heap
(:mod:`busmgr.heap`). Nothing here blocks the loop, and nothing polls: every wait is on a
process exit, a bus message, an event or a timer.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from busmgr import MANAGER_BUS_NAME, shutdown, trace
from busmgr.bus.activation import SYSTEMD, BackendFactory
from busmgr.bus.auth import CallerPolicy
from busmgr.bus.face import Insight, Operations
from busmgr.catalog import Catalog, Sources, load_catalog_sliced
from busmgr.control import Control
from busmgr.desktop import DesktopSession
from busmgr.dispatch import Dispatcher
from busmgr.environment import Environment
from busmgr.eventqueue import Block, EventQueue
from busmgr.events import Event
from busmgr.heap import freeze_heap
from busmgr.job import Job, TimerHandle
from busmgr.jobclass import ProcessKind
from busmgr.joblog import JobLog
from busmgr.logsink import DEFAULT_ROTATION, LogRotation
from busmgr.observe import Observers
from busmgr.options import DesktopOptions, Mode
from busmgr.presence import BusPresence
from busmgr.readiness import BusNameReadiness
from busmgr.reexec import Reexecution
from busmgr.registry import Registry
from busmgr.restore import restore, take_snapshot
from busmgr.snapshot import Saved, SavedBus, SavedProcess
from busmgr.statestore import StateStore, boot_id
from busmgr.supervisor import Supervisor
from busmgr.timeline import Timeline
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
    desktop: DesktopOptions | None = None
    log_dir: Path | None = None  # None: <state_dir>/log
    log_rotation: LogRotation = DEFAULT_ROTATION
    import_dirs: tuple[Path, ...] = ()  # installed D-Bus services (empty: the mode's standard)
    claim_systemd1: bool = True  # False where systemd runs the machine: it owns systemd1

    @property
    def job_log_dir(self) -> Path:
        return self.log_dir or self.state_dir / "log"


class Manager:
    """One manager. Create it inside a running loop; see :mod:`busmgr.runtime` for its life."""

    def __init__(self, config: ManagerConfig) -> None:
        self.loop = asyncio.get_running_loop()
        self.config = config
        self.observers = Observers()
        self.environment = Environment(config.mode, config.environ)
        self.joblog = JobLog(config.job_log_dir, config.log_rotation)
        self.observers.subscribe(self.joblog)
        self.timeline = Timeline()
        self.observers.subscribe(self.timeline)
        self.config_errors: tuple[str, ...] = ()  # of the last load, FILE:LINE: message
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
        self.desktop = (
            DesktopSession(self.control, config.desktop) if config.desktop is not None else None
        )
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
            autostart=self.desktop is not None,
            import_dirs=config.import_dirs,
        )
        self.catalog = Catalog({})
        self.store = StateStore(
            self.loop, config.state_dir, self.snapshot, busy=lambda: not self.queue.idle()
        )
        self.reexecution = Reexecution(
            self.loop,
            self.registry,
            self.queue,
            self.store,
            self.joblog,
            self.triggers.sockets,
            self.request_shutdown,
        )
        self.presence = BusPresence(
            config.mode,
            config.claim_systemd1,
            self.environment,
            self.control,
            self.registry,
            self.observers,
            self.bus_names,
            self.queue.emit,
            self.supervisor.process_rows,
            Insight(self.joblog, self.timeline, lambda: self.config_errors),
            self._operations,
        )
        self.started_up = False  # ``startup`` was emitted (by this manager or before a re-exec)
        # What the runtime records beside the jobs: the private bus and the session command.
        self.bus_record: Callable[[], SavedBus | None] = lambda: None
        self.command_record: Callable[[], SavedProcess | None] = lambda: None
        self._reloading = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self.stopped: asyncio.Future[None] = self.loop.create_future()
        self.exit_status = 0

    # ======================================================== JobHost glue
    def spawn(self, job: Job, kind: ProcessKind, env: Mapping[str, str]) -> int:
        if trace.ON and job.jobclass.dbus_name:
            trace.step(job.jobclass.dbus_name, f"spawn {kind.value}")
            pid = self.supervisor.spawn(job, kind, env)
            trace.step(job.jobclass.dbus_name, f"spawned {kind.value}")
            return pid
        return self.supervisor.spawn(job, kind, env)

    def kill(self, job: Job, signum: int) -> None:
        self.supervisor.kill(job, signum)

    def has_processes(self, job: Job) -> bool:
        return self.supervisor.has_processes(job)

    def emit_job_event(
        self, job: Job, event: Event, on_finished: Callable[[bool], None] | None
    ) -> bool:
        if event.name == "started":
            self.registry.note_started(job)
        self.observers.job_event(job, event)
        if on_finished is not None and self.dispatcher.settle_at_once(event):
            return True
        self.queue.emit(event, None if on_finished is None else lambda b: on_finished(b.failed))
        return False

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        return self.loop.call_later(delay, callback)

    def now(self) -> float:
        return self.loop.time()

    def check_bus_name(self, job: Job) -> None:
        self.bus_names.check_owner(job)

    def watch_readiness(self, job: Job) -> None:
        if "dbus" in job.pending_ready:
            self.bus_names.watch(job)
        if "expect" in job.pending_ready:
            self.supervisor.expect.watch(job)

    def changed(self, job: Job) -> None:
        if trace.ON and job.jobclass.dbus_name:
            trace.step(job.jobclass.dbus_name, job.state.value)
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
        self.config_errors = catalog.errors
        for skipped in catalog.skipped:
            log.info("%s", skipped)
        self.catalog = catalog
        return catalog

    async def reload_configuration(self) -> None:
        """Re-read the job files; running jobs keep running (with their old class until they
        stop). A broken file is reported and its job keeps its previous definition. Reloads
        run one at a time, in the order they were asked for."""
        async with self._reloading:
            self.registry.swap((await self.load()).classes)
            await self.presence.refresh_activation(self.catalog)
            freeze_heap()

    def request_reload(self) -> None:
        """``reload_configuration`` from a signal handler (SIGHUP)."""
        task = self.loop.create_task(self.reload_configuration())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ======================================================== the bus
    def _operations(self, policy: CallerPolicy) -> Operations:
        """What the bus face may do for callers ``policy`` lets in (one per connection)."""
        return Operations(
            self.control,
            policy,
            self.reload_configuration,
            self.reexecution.run,
            skipped=lambda: self.catalog.skipped,
        )

    async def connect(self, address: str) -> None:
        """:meth:`busmgr.presence.BusPresence.connect`: on the bus, the name not owned yet."""
        await self.presence.connect(address)

    async def go_live(self, servicedir: Path | None, *, own_servicedir: bool) -> None:
        """:meth:`busmgr.presence.BusPresence.go_live` with the jobs loaded now."""
        await self.presence.go_live(servicedir, own_servicedir=own_servicedir, catalog=self.catalog)

    # ======================================================== life
    async def begin(
        self,
        servicedir: Path | None,
        *,
        own_servicedir: bool,
        saved: Saved | None = None,
        backend: BackendFactory | None = None,
        handed_over: bool = False,
    ) -> None:
        """Load the jobs and publish them (a slice at a time), take back what ``saved``
        records (a previous image's or manager's jobs; ``handed_over``: this process's
        previous image, whose descriptors it still has), go live on the bus (if connected:
        activation through ``backend``, by default the dbus-daemon one), emit ``startup``
        (unless it was emitted before), and record the state from now on."""
        self.presence.backend = backend
        if saved is not None and handed_over:
            self.reexecution.take_over(saved)
        classes = list((await self.load()).classes.values())
        if trace.ON:
            trace.step("start-up", "jobs loaded")
        deadline = self.loop.time() + INSTALL_SLICE
        for start in range(0, len(classes), INSTALL_BATCH):
            self.registry.add_classes(classes[start : start + INSTALL_BATCH])
            if self.loop.time() > deadline:
                await asyncio.sleep(0)  # nobody can call yet; the loop still has other work
                deadline = self.loop.time() + INSTALL_SLICE
        if saved is not None:
            restore(saved, self.registry, self.supervisor, self.environment)
            self.started_up = saved.started
            self.timeline.take_back(saved, self.registry.instance)
        if trace.ON:
            trace.step("start-up", "jobs added")
        if self.presence.link.connected:
            await self.go_live(servicedir, own_servicedir=own_servicedir)
        if trace.ON:
            trace.step("start-up", "live")
        self.observers.subscribe(self.store)
        self.observers.subscribe(self.reexecution.observer)
        freeze_heap()
        self.store.mark()
        if not self.started_up:
            self.started_up = True
            self.queue.emit(Event.make("startup", {}))
            if self.desktop is not None:
                self.desktop.begin()  # the desktop's phases (not again after a re-exec)

    def snapshot(self) -> Saved:
        """What the state store writes: everything :mod:`busmgr.restore` needs."""
        jobs, order = take_snapshot(self.registry, self.supervisor, self.environment)
        hierarchy = self.supervisor.hierarchy
        log_pipes, sockets = self.reexecution.handed
        return Saved(
            boot_id=boot_id(),
            manager_pid=os.getpid(),
            started=self.started_up,
            jobs=jobs,
            start_order=order,
            activation_env=dict(self.environment.activation),
            cgroup=hierarchy.base if hierarchy is not None else None,
            bus=self.bus_record(),
            command=self.command_record(),
            notify_address=self.supervisor.expect.notify_address,
            log_pipes=log_pipes,
            sockets=sockets,
            since=self.timeline.started,
            times=tuple(self.timeline.saved_times()),
        )

    def request_shutdown(self, status: int = 0) -> None:
        if not self.stopped.done():
            self.exit_status = status
            self.stopped.set_result(None)

    def fatal(self, reason: str) -> None:
        """Something the manager cannot go on with (a bug, a stranded spawn): stop, exit 1."""
        log.critical("stopping: %s", reason)
        self.request_shutdown(1)

    async def stop_everything(self) -> bool:
        """Stop every job, the last started first (:mod:`busmgr.shutdown`); True if clean."""
        return await shutdown.stop_everything(self.registry, self.control)

    async def close(self, *, keep_files: bool = False) -> None:
        """Leave the bus (replies already sent go out first). The activation files go too,
        unless ``keep_files`` (a re-exec: the next image uses them at once)."""
        if self.desktop is not None:
            self.desktop.close()
        if keep_files:
            self.triggers.detach()  # the sockets stay open for the next image
        else:
            self.triggers.close()
        self.bus_names.close()
        await self.presence.close(keep_files=keep_files)
