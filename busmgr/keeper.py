"""Keeping the manager on its bus: the private bus's life, and getting back after a loss.

Policy (the reliability issue): losing the bus never stops a job by itself.

* ``busmgr daemon`` (someone else's bus): when the connection drops, the jobs keep running and
  the keeper reconnects with a growing delay (0.1 s doubling to 5 s); once back, the manager
  owns its names again, adds its match rules again, asks the name owners again (readiness) and
  exports its objects again (:meth:`busmgr.manager.Manager.connect` and ``go_live``).
* ``busmgr session`` (its own private bus, ``dbus-daemon``, or ``dbus-broker`` with busmgr as
  its launcher): a bus that dies is started again at the same socket, so at the same address
  (the jobs' ``DBUS_SESSION_BUS_ADDRESS`` stays valid), and the manager reconnects to it.
  ``dbus`` jobs lost their names with the old bus: they count as failed, and respawn applies.
  A bus that keeps dying (more than :data:`RESTARTS` times in :data:`RESTART_WINDOW` seconds)
  stops the manager.
* ``busmgr daemon --launch-bus`` (the mode's bus, launched by busmgr from the machine's
  configuration, :mod:`busmgr.bus.launch`): the same as a private bus. The launcher starts it
  again where the configuration says it listens, so clients and jobs find it at the same
  address; the activation files stay in their directory.

Invariant: at most one recovery runs at a time, and none once the manager is stopping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from busmgr import process
from busmgr.bus.activation import (
    ActivationBackend,
    ActivationRequests,
    BackendFactory,
    BrokerActivation,
)
from busmgr.bus.address import without_guid
from busmgr.bus.daemon import PrivateBus, start_private_bus
from busmgr.bus.launch import BusLauncher, LaunchedBus
from busmgr.bus.link import BusLink, LinkError
from busmgr.bus.patience import service_start_timeout
from busmgr.environment import Environment
from busmgr.manager import Manager
from busmgr.options import Mode
from busmgr.snapshot import SavedBus, SavedProcess

if TYPE_CHECKING:  # imported when a broker is launched: a dbus-daemon session never needs it
    from busmgr.bus.broker_launch import LaunchedBroker

log = logging.getLogger("busmgr")

__all__ = ["BusKeeper"]

RESTARTS = 5
RESTART_WINDOW = 60.0
FIRST_DELAY = 0.1
MAX_DELAY = 5.0
STOP_TIMEOUT = 5.0  # seconds the private bus has between TERM and KILL


class BusKeeper:
    """The manager's bus: ``address`` (an existing bus), the bus ``launcher`` starts, or else
    a private one (``address`` None)."""

    def __init__(
        self,
        manager: Manager,
        address: str | None,
        environ: Mapping[str, str],
        helper_dir: Path | None,
        saved: SavedBus | None = None,
        *,
        broker: bool = False,
        launcher: BusLauncher | None = None,
        standard: Mode | None = None,
        bus_config: Path | None = None,
    ) -> None:
        self.manager = manager
        self._saved = None if broker else saved  # a broker dies with its controller
        self.broker = broker
        self.loop = manager.loop
        self.address = address
        self.launcher = launcher
        # With ``broker``: the mode's own bus (``daemon --launch-bus --broker``), configured by
        # ``bus_config`` (system mode), rather than a private one.
        self.standard = standard
        self.bus_config = bus_config
        # The session's own bus (its own activation directory, gone with it); a launched bus
        # is restarted the same way, but its activation directory is the machine's.
        self.private = address is None and launcher is None and standard is None
        self.owns_bus = address is None
        self.environ = dict(environ)
        self._helper_dir = helper_dir
        self.bus: PrivateBus | LaunchedBroker | LaunchedBus | None = None
        self._bus_exit: asyncio.Future[process.ExitInfo | None] | None = None
        self._restarts: list[float] = []
        self._recovering: asyncio.Task[None] | None = None
        self._closing = False
        self._again = asyncio.Event()  # set when a recovery under way should try again now
        # The newest bus process: set at its spawn, so a stop while a restart is still waiting
        # for it to listen stops it too (``bus`` is still the dead one then).
        self._pid = 0
        self._started = 0  # the private bus's start time
        # Called once the manager is back on the bus after a loss (the runtime writes the
        # address file again: what tells a waiting client the session is usable again).
        self.on_back: Callable[[str], None] | None = None
        manager.presence.on_bus_lost = self._lost
        manager.bus_record = self.record

    @property
    def backend(self) -> BackendFactory | None:
        """The activation backend of the bus (None: the dbus-daemon one, the default)."""
        if not self.broker:
            return None
        manager = self.manager

        def broker_activation(
            _link: BusLink, requests: ActivationRequests, environment: Environment
        ) -> ActivationBackend:
            # The broker of now: after a restart, the new one's controller.
            bus = self._broker()
            if bus is None:
                raise LinkError("no dbus-broker running")
            return BrokerActivation(
                bus.controller, requests, environment, manager.reload_configuration
            )

        return broker_activation

    def _broker(self) -> LaunchedBroker | None:
        """The broker busmgr launched, if that is the bus."""
        bus = self.bus
        if not self.broker or bus is None or isinstance(bus, PrivateBus | LaunchedBus):
            return None
        return bus

    @property
    def servicedir(self) -> Path | None:
        """Where activation files go: the private or launched bus's directory, else the
        helper's."""
        return self.bus.servicedir if self.bus is not None else self._helper_dir

    async def start(self) -> str:
        """Start the private bus (if any) and connect; returns the bus address. Raises
        ``LinkError``, ``SpawnError`` or ``OSError`` with one line."""
        if self.owns_bus and not self._take_back():
            saved = Path(self._saved.directory) if self._saved is not None else None
            await self._start_bus(saved if saved is not None and saved.is_dir() else None)
        if self.address is None:
            raise LinkError("no bus address")
        self.manager.presence.set_bus_timeout(self.activation_timeout())
        await self.manager.connect(self.address)
        return self.address

    def activation_timeout(self) -> float | None:
        """The bus daemon's ``service_start_timeout``, seconds, as the configuration busmgr
        started it with says; None where busmgr cannot know (someone else's bus) or there is
        none (dbus-broker: only the callers' own timeout)."""
        bus = self.bus
        if isinstance(bus, PrivateBus):
            return service_start_timeout(bus.config)
        if isinstance(bus, LaunchedBus):
            return service_start_timeout(bus.config_file)
        return None

    async def go_live(self) -> None:
        await self.manager.go_live(self.servicedir, own_servicedir=self.private)

    def _take_back(self) -> bool:
        """The private bus a previous image or manager left running (same pid and start time,
        its socket still there): keep using it, at its address."""
        saved = self._saved
        if saved is None:
            return False
        alive = process.proc_start_time(saved.process.pid) == saved.process.started
        directory = Path(saved.directory)
        if not (alive and saved.process.started):
            return False
        if self.launcher is not None:
            self.bus = self.launcher.taken_back(saved.address, saved.process.pid)
        elif (directory / "bus").exists():
            self.bus = PrivateBus(
                saved.address, saved.process.pid, directory, directory / "services"
            )
        else:
            return False
        self.address = without_guid(saved.address)
        self._started = saved.process.started
        self._watch_bus(saved.process.pid)
        log.info("using the bus left running at %s", saved.address)
        return True

    def _watch_bus(self, pid: int) -> None:
        self._pid = pid
        exited: asyncio.Future[process.ExitInfo | None] = self.loop.create_future()
        self._bus_exit = exited
        self.manager.supervisor.watch_exit(
            pid, lambda info: exited.done() or exited.set_result(info)
        )
        exited.add_done_callback(self._bus_exited)

    async def _start_bus(self, directory: Path | None) -> None:
        if self.broker:
            await self._start_broker()
            return
        if self.launcher is not None:
            launched = await self.launcher.launch(self.environ, self._watch_bus)
            self.bus, self.address = launched, without_guid(launched.address)
            self._started = process.proc_start_time(launched.pid)
            log.info("launched the bus: %s (pid %d)", self.address, launched.pid)
            return
        bus = await start_private_bus(self.environ, watch=self._watch_bus, directory=directory)
        self.bus, self.address = bus, without_guid(bus.address)
        self._started = process.proc_start_time(bus.pid)

    async def _start_broker(self) -> None:
        """dbus-broker, busmgr its launcher; again at the same socket after a restart."""
        from busmgr.bus.broker_launch import launch_broker, standard_bus
        from busmgr.bus.broker_policy import session_policy

        old = self._broker()
        if old is not None:
            with contextlib.suppress(FileNotFoundError):
                old.socket_path.unlink()
        exited: asyncio.Future[process.ExitInfo | None] = self.loop.create_future()
        self._bus_exit = exited
        if self.standard is not None:
            policy, socket_path, socket_mode = standard_bus(
                self.standard, self.environ, self.bus_config
            )
        else:
            policy, socket_mode = session_policy(os.getuid()), 0o600
            socket_path = old.socket_path if old is not None else None
        bus = await launch_broker(
            self.environ,
            policy,
            watch=self._watch_broker,
            on_exit=lambda _p, info: exited.done() or exited.set_result(info),
            socket_path=socket_path,
            socket_mode=socket_mode,
        )
        if old is not None:
            bus.directory = old.directory  # the directory is the first broker's: removed at the end
        exited.add_done_callback(self._bus_exited)
        self.bus, self.address = bus, without_guid(bus.address)
        self._started = process.proc_start_time(bus.pid)
        self.manager.reexecution.refusal = (
            "not re-executing with --broker: dbus-broker exits when its launcher's controller "
            "connection closes, which an exec does"
        )

    def _watch_broker(self, pid: int, on_exit: process.ExitCallback) -> None:
        self._pid = pid
        self.manager.supervisor.reaper.watch(pid, on_exit)

    def record(self) -> SavedBus | None:
        """The private bus, for the state store (None on someone else's bus, or a broker:
        it does not outlive its launcher)."""
        bus = self.bus
        if bus is None or self.address is None or self._broker() is not None:
            return None
        directory = bus.servicedir if isinstance(bus, LaunchedBus) else bus.directory
        if directory is None:
            return None
        return SavedBus(SavedProcess(bus.pid, self._started), self.address, str(directory))

    # ------------------------------------------------------------------ losses
    def _stopping(self) -> bool:
        return self._closing or self.manager.stopped.done()

    def _bus_exited(self, fut: asyncio.Future[process.ExitInfo | None]) -> None:
        """The bus process exited: say so and start it again. The recovery of the lost
        connection may have seen the exit first (this callback runs a loop turn after it) and
        started the next bus already: the exit is still told and counted, not recovered twice."""
        if self._stopping():
            return
        now = self.loop.time()
        self._restarts = [t for t in self._restarts if now - t < RESTART_WINDOW] + [now]
        info = fut.result()
        how = info.describe() if info is not None else "exited"
        broker = self._broker()
        name = broker.name if broker is not None else "dbus-daemon"
        name = f"the private {name}" if self.private else f"the {name} busmgr launched"
        if len(self._restarts) > RESTARTS:
            self.manager.fatal(f"{name} {how}, {RESTARTS} restarts in {RESTART_WINDOW:g}s")
            return
        log.warning("%s %s; starting it again at %s", name, how, self.address)
        if fut is self._bus_exit:
            self._recover()

    def _lost(self) -> None:
        if not self._stopping():
            log.warning("lost the connection to the bus at %s; getting back", self.address)
            self._recover()

    def _recover(self) -> None:
        if self._recovering is None or self._recovering.done():
            self._recovering = self.loop.create_task(self._recovery())
        else:
            self._again.set()  # news (the bus process exited): try again now, not after a delay

    async def _recovery(self) -> None:
        delay = FIRST_DELAY
        while not self._stopping():
            try:
                if self.owns_bus and self._bus_exit is not None and self._bus_exit.done():
                    bus = self.bus
                    directory = bus.directory if isinstance(bus, PrivateBus) else None
                    await self._start_bus(directory)
                if self.address is None:
                    raise LinkError("no bus address")
                await self.manager.connect(self.address)
                await self.go_live()
            except (LinkError, process.SpawnError, OSError) as err:
                log.warning("not back on the bus yet (%s); next try in %gs", err, delay)
            else:
                log.info("back on the bus at %s", self.address)
                if self.on_back is not None:
                    self.on_back(self.address)
                return
            self._again.clear()
            again = asyncio.ensure_future(self._again.wait())
            try:
                await asyncio.wait(
                    [again, asyncio.shield(self.manager.stopped)],
                    timeout=delay,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                again.cancel()
            delay = min(delay * 2, MAX_DELAY)

    # ------------------------------------------------------------------ the end
    async def stop(self, *, keep_bus: bool = False) -> None:
        """Stop recovering, and stop the private bus (TERM, then KILL) and remove its
        directory (``keep_bus``: leave it running, for the manager's next image)."""
        self._closing = True  # from now on a bus that exits is not started again
        if self._recovering is not None:
            self._recovering.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._recovering
        if keep_bus:
            return
        bus, exited, pid = self.bus, self._bus_exit, self._pid
        if bus is None or exited is None or not pid:
            return
        broker = self._broker()
        if broker is not None and not exited.done():
            broker.close()  # the broker exits when its controller goes away
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(exited), STOP_TIMEOUT)
        if not exited.done():
            process.kill_pid(pid, signal.SIGTERM)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(exited), STOP_TIMEOUT)
            if not exited.done():
                process.kill_pid(pid, signal.SIGKILL)
                await exited
        bus.remove()
