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
import contextlib
import gc
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from busmgr import MANAGER_BUS_NAME, process, trace
from busmgr.bus.activation import (
    SYSTEMD,
    ActivationBackend,
    ActivationRequests,
    BackendFactory,
    DbusDaemonActivation,
)
from busmgr.bus.auth import CallerGate, CallerPolicy
from busmgr.bus.face import BusFace, Insight, Operations
from busmgr.bus.link import BusLink
from busmgr.bus.names import NameWatcher
from busmgr.bus.patience import patience
from busmgr.bus.signal_events import SignalEventBridge
from busmgr.catalog import Catalog, Sources, load_catalog_sliced
from busmgr.control import Control
from busmgr.desktop import DesktopSession
from busmgr.dispatch import Dispatcher
from busmgr.environment import Environment
from busmgr.errors import ManagerError
from busmgr.eventqueue import Block, EventQueue
from busmgr.events import Event
from busmgr.job import Goal, Job, State, TimerHandle
from busmgr.jobclass import ProcessKind
from busmgr.joblog import JobLog
from busmgr.logsink import DEFAULT_ROTATION, LogRotation
from busmgr.observe import JobObserver, Observers
from busmgr.options import DesktopOptions, Mode
from busmgr.readiness import BusNameReadiness
from busmgr.registry import Registry
from busmgr.restore import restorable, restore, take_snapshot
from busmgr.snapshot import Saved, SavedBus, SavedFd, SavedProcess, SavedSocket
from busmgr.statestore import StateStore, boot_id
from busmgr.supervisor import Supervisor
from busmgr.timeline import Timeline
from busmgr.triggers import Triggers

log = logging.getLogger("busmgr")

__all__ = ["Manager", "ManagerConfig"]

INSTALL_BATCH = 25  # job classes added per step at start-up
REEXEC_WAIT = 10.0  # seconds Reexec waits for every job to be at rest
INSTALL_SLICE = 0.02  # seconds of installing before the loop gets a turn
# The collector's thresholds (CPython's default: 700, 10, 10): a burst allocates a lot, and
# most of it is freed by reference counting; fewer young collections promote less to the
# old generations, whose full scans are what cost (see _freeze_heap).
GC_THRESHOLDS = (10_000, 20, 20)


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


def _freeze_heap() -> None:
    """Keep what the manager loaded out of the cyclic garbage collector's scans.

    The job classes, the jobs and their bus objects (most of the manager's objects) live as
    long as the configuration. CPython's collector scans every tracked object in a full
    collection, and a burst (one event starting thousands of jobs) triggers several: with
    5,000 jobs loaded they took 3 s of a 27 s start, one of them holding the loop for 0.8 s.
    ``gc.freeze`` moves the objects alive now into a generation that is never scanned (they
    are still freed by reference counting); a reload unfreezes them first, collects what the
    old configuration left in cycles, and freezes what is left."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class _Moved(JobObserver):
    """Sets an event whenever a job changes or an event is handled (what Reexec waits on)."""

    def __init__(self, moved: asyncio.Event) -> None:
        self._moved = moved

    def job_changed(self, job: Job) -> None:
        self._moved.set()

    def event_emitted(self, event: Event) -> None:
        self._moved.set()


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
        self.link = BusLink()
        self._bus_observers: list[JobObserver] = []
        # What to do when the bus connection is lost (the runtime's policy: reconnect, or
        # restart the private bus); the core never learns about it.
        self.on_bus_lost: Callable[[], None] | None = None
        self.requests = ActivationRequests(self.control, self._has_owner)
        self.activation: ActivationBackend | None = None
        self._backend: BackendFactory | None = None  # None: the dbus-daemon backend
        self.names: NameWatcher | None = None
        self.store = StateStore(
            self.loop, config.state_dir, self.snapshot, busy=lambda: not self.queue.idle()
        )
        self.started_up = False  # ``startup`` was emitted (by this manager or before a re-exec)
        self.reexec_requested = False
        self.reexec_wait = REEXEC_WAIT
        self.reexec_refusal = ""  # why this manager cannot re-execute, if it cannot
        # What the runtime records beside the jobs: the private bus and the session command.
        self.bus_record: Callable[[], SavedBus | None] = lambda: None
        self.command_record: Callable[[], SavedProcess | None] = lambda: None
        self._moved = asyncio.Event()  # set whenever a job changes or an event is handled
        # The descriptors recorded for the next image (set only by hand_over, right before
        # the exec: descriptors do not outlive a crash).
        self._handed: tuple[tuple[tuple[str, SavedFd], ...], tuple[SavedSocket, ...]] = ((), ())
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
            await self._refresh_activation()
            _freeze_heap()

    def request_reload(self) -> None:
        """``reload_configuration`` from a signal handler (SIGHUP)."""
        task = self.loop.create_task(self.reload_configuration())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _refresh_activation(self) -> None:
        """Write the activation files and follow the provided names (after every load)."""
        classes = list(self.registry.classes.values())
        if self.activation is not None:
            await self.activation.refresh(classes, self.catalog.units, self.catalog.skipped)
        names = self.names
        if names is not None:
            # Follow every provided name now: a start later finds its owner known already. The
            # round trips (a match rule and the owner, per name) go out together.
            provided = {cls.dbus_name for cls in classes if cls.dbus_name}
            await asyncio.gather(*(names.watch(name) for name in sorted(provided)))

    # ======================================================== the bus
    async def connect(self, address: str) -> None:
        """Connect to the bus at ``address`` and put the manager's objects on it; raises
        :class:`busmgr.bus.link.LinkError` with one line. The manager's name is owned later,
        by :meth:`go_live`, once the jobs are loaded (owning it is the manager's readiness).

        Called again after the connection was lost: everything of the old connection is let go
        first, so the new one starts clean (objects exported again, match rules added again,
        name owners asked again)."""
        self._detach()
        link = self.link = BusLink()
        link.on_lost = self._link_lost
        await link.connect(address)
        self.environment.bus_address = address
        names = self.names = NameWatcher(link, self._owner_changed)
        self.bus_names.attach(names)
        policy = CallerPolicy(self.config.mode, names)
        # Before any handler that acts on a method call: every call to every name we own.
        link.add_handler(CallerGate(link, policy))
        ops = Operations(
            self.control,
            policy,
            self.reload_configuration,
            self.reexec,
            skipped=lambda: self.catalog.skipped,
        )
        insight = Insight(self.joblog, self.timeline, lambda: self.config_errors)
        face = BusFace(link, ops, self.supervisor.process_rows, insight)
        face.publish(self.registry.classes.values(), self.registry.jobs())
        # Bus signals some job waits for become ``dbus-signal`` events.
        signals = SignalEventBridge(link, self.queue.emit, names)
        signals.update(self.registry.classes.values())
        self._bus_observers = [face, _ClassFollower(self.registry, signals.update)]
        for observer in self._bus_observers:
            self.observers.subscribe(observer)

    def _detach(self) -> None:
        """Forget the rooms of the previous connection (after a loss, before a new one)."""
        for observer in self._bus_observers:
            self.observers.unsubscribe(observer)
        self._bus_observers = []
        self.bus_names.attach(None)
        self.names = None
        self.activation = None

    def _link_lost(self) -> None:
        self._detach()
        if self.on_bus_lost is not None:
            self.on_bus_lost()

    async def go_live(self, servicedir: Path | None, *, own_servicedir: bool) -> None:
        """Own the manager's name and start activation: its files go to ``servicedir``
        (``own_servicedir``: the private bus's own directory, which goes away with the bus).
        After a reconnection, the jobs' bus names are checked again: a name that lost its owner
        meanwhile fails its job (respawn applies)."""
        link = self.link
        await link.own(MANAGER_BUS_NAME)
        if self._backend is not None:
            self.activation = self._backend(link, self.requests, self.environment)
        else:
            self.activation = DbusDaemonActivation(
                link,
                self.requests,
                self.environment,
                link.address,
                servicedir,
                remove_on_close=not own_servicedir,
                claim=self.config.claim_systemd1,
            )
        await self.activation.start()
        await self._refresh_activation()
        for job in list(self.registry.jobs()):
            self.bus_names.recheck(job)

    def set_bus_timeout(self, seconds: float | None) -> None:
        """The bus gives an activation ``seconds`` (its ``service_start_timeout``; None: not
        known, or none): from it, how long busmgr lets one take before it fails the request
        with its own reason (:mod:`busmgr.bus.patience`)."""
        self.control.activation_patience = patience(seconds)
        log.debug(
            "activation requests fail after %gs (the bus allows %s)",
            self.control.activation_patience,
            "?" if seconds is None else f"{seconds:g}s",
        )

    async def _has_owner(self, name: str) -> bool:
        """Whether the bus says ``name`` has an owner now (False without a bus)."""
        names = self.names
        return names is not None and bool(await names.current_owner(name))

    def _owner_changed(self, name: str, owner: str) -> None:
        """A watched bus name has a new owner (``""``: none): readiness, then activation."""
        if trace.ON:
            trace.step(name, "owned" if owner else "unowned")
        self.bus_names.owner_changed(name, owner)
        if owner:
            self.requests.name_owned(name)

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
        self._backend = backend
        if saved is not None and handed_over:
            self._take_over(saved)
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
            if saved.since:
                self.timeline.started = saved.since
            for name, instance, since, running in saved.times:
                job = self.registry.instance(name, instance)
                if job is not None:
                    self.timeline.seed(job, since, running)
        if trace.ON:
            trace.step("start-up", "jobs added")
        if self.link.connected:
            await self.go_live(servicedir, own_servicedir=own_servicedir)
        if trace.ON:
            trace.step("start-up", "live")
        self.observers.subscribe(self.store)
        self.observers.subscribe(_Moved(self._moved))
        _freeze_heap()
        self.store.mark()
        if not self.started_up:
            self.started_up = True
            self.queue.emit(Event.make("startup", {}))
            if self.desktop is not None:
                self.desktop.begin()  # the desktop's phases (not again after a re-exec)

    def _take_over(self, saved: Saved) -> None:
        """The log pipes and sockets the previous image handed over, each checked to be what
        was recorded (a descriptor that is not is left alone, and said)."""
        for name, pipe in saved.log_pipes:
            if process.same_file(pipe.fd, pipe.file):
                self.joblog.sinks.adopt(name, pipe.fd)
            else:
                log.warning("re-exec: the log pipe of %s was not handed over", name)
        for sock in saved.sockets:
            if process.same_file(sock.fd.fd, sock.fd.file):
                self.triggers.sockets.adopt(sock.key, sock.fd.fd, sock.path_file)
            else:
                log.warning("re-exec: the socket %s was not handed over", "/".join(
                    str(part) for part in sock.key if part))  # fmt: skip

    def hand_over(self) -> list[int]:
        """The last state write before the manager execs itself: everything, and the
        descriptors the next image takes over (log pipes, sockets), which are returned so the
        runtime keeps them open across the exec. Nothing changes after this."""
        log_pipes = tuple(
            (name, SavedFd(fd, process.identity(fd)))
            for name, fds in self.joblog.sinks.fds().items()
            for fd in fds
        )
        sockets = tuple(
            SavedSocket(key, SavedFd(fd, process.identity(fd)), path_file)
            for key, fd, path_file in self.triggers.sockets.held()
        )
        self._handed = (log_pipes, sockets)
        self.store.save(sync=True)
        return [f.fd for _name, f in log_pipes] + [s.fd.fd for s in sockets]

    def snapshot(self) -> Saved:
        """What the state store writes: everything :mod:`busmgr.restore` needs."""
        jobs, order = take_snapshot(self.registry, self.supervisor, self.environment)
        hierarchy = self.supervisor.hierarchy
        log_pipes, sockets = self._handed
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

    async def reexec(self) -> None:
        """``Reexec``: wait (at most ``reexec_wait`` seconds) until every job can be
        saved as it is and no event is being handled, save the state, and have the runtime
        exec the manager again. Raises ``Busy`` naming the jobs still between states."""
        if self.reexec_refusal:
            raise ManagerError("NotSupported", self.reexec_refusal)
        deadline = self.loop.time() + self.reexec_wait
        while True:
            busy = [
                f"{j.label} ({j.state.value})" for j in self.registry.jobs() if not restorable(j)
            ]
            if not busy and not len(self.queue):
                break
            left = deadline - self.loop.time()
            if left <= 0:
                what = ", ".join(busy) or "events being handled"
                raise ManagerError("Busy", f"not re-executing: jobs between states: {what}")
            self._moved.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._moved.wait(), left)
        self.store.save(sync=True)
        self.store.enabled = False  # nothing may change the file between here and the exec
        self.reexec_requested = True
        self.request_shutdown(0)

    def request_reexec(self) -> None:
        """``reexec`` from a signal handler (SIGUSR2); a refusal is logged."""

        async def reexec() -> None:
            try:
                await self.reexec()
            except ManagerError as err:
                log.warning("%s", err.message)

        task = self.loop.create_task(reexec())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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
        others = [j for j in self.registry.jobs() if j not in self.registry.start_order]
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
        if self.activation is not None and not keep_files:
            self.activation.close()
        await self.link.close()
