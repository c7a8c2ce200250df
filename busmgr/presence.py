"""The manager's presence on the bus: the connection, the objects on it, and going live.

A :class:`BusPresence` owns what lasts as long as one bus connection: the link, the name
watcher, the caller gate, the bus face and the signal bridge (observers of the jobs), and the
activation backend. :meth:`BusPresence.connect` puts the objects on a bus;
:meth:`BusPresence.go_live` owns the manager's name and starts activation, once the jobs are
loaded (owning the name is the manager's readiness). A lost connection lets go of everything of
it (:meth:`BusPresence.detach`) and tells ``on_bus_lost``: what to do then (reconnect, restart
the private bus) is the runtime's policy, never this room's.

Invariant: the bus observers, ``names`` and ``activation`` belong to the current ``link``; after
a loss they are None or empty until the next ``connect``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from busmgr import MANAGER_BUS_NAME, trace
from busmgr.bus.activation import (
    ActivationBackend,
    ActivationRequests,
    BackendFactory,
    DbusDaemonActivation,
)
from busmgr.bus.auth import CallerGate, CallerPolicy
from busmgr.bus.face import BusFace, Insight, Operations, ProcessRowsOf
from busmgr.bus.link import BusLink
from busmgr.bus.names import NameWatcher
from busmgr.bus.patience import patience
from busmgr.bus.signal_events import SignalEventBridge
from busmgr.catalog import Catalog
from busmgr.control import Control
from busmgr.environment import Environment
from busmgr.events import Event
from busmgr.observe import JobObserver, Observers
from busmgr.options import Mode
from busmgr.readiness import BusNameReadiness
from busmgr.registry import Registry

log = logging.getLogger("busmgr")

__all__ = ["BusPresence"]


class _ClassFollower(JobObserver):
    """Keeps a callable told of every job class after each change (the signal bridge)."""

    def __init__(self, registry: Registry, update: Callable[..., None]) -> None:
        self._registry = registry
        self._update = update

    def classes_changed(self, added: object, removed: object) -> None:
        self._update(self._registry.classes.values())


class BusPresence:
    """One manager's bus connection and what lives on it (see the module docstring)."""

    def __init__(
        self,
        mode: Mode,
        claim_systemd1: bool,
        environment: Environment,
        control: Control,
        registry: Registry,
        observers: Observers,
        bus_names: BusNameReadiness,
        emit: Callable[[Event], object],
        rows: ProcessRowsOf,
        insight: Insight,
        operations: Callable[[CallerPolicy], Operations],
    ) -> None:
        self._mode = mode
        self._claim_systemd1 = claim_systemd1
        self._environment = environment
        self._registry = registry
        self._observers = observers
        self._bus_names = bus_names
        self._emit = emit
        self._rows = rows
        self._insight = insight
        self._operations = operations
        self._control = control
        self.link = BusLink()
        self._bus_observers: list[JobObserver] = []
        # What to do when the bus connection is lost (the runtime's policy: reconnect, or
        # restart the private bus); the core never learns about it.
        self.on_bus_lost: Callable[[], None] | None = None
        self.requests = ActivationRequests(control, self._has_owner)
        self.activation: ActivationBackend | None = None
        self.backend: BackendFactory | None = None  # None: the dbus-daemon backend
        self.names: NameWatcher | None = None

    async def connect(self, address: str) -> None:
        """Connect to the bus at ``address`` and put the manager's objects on it; raises
        :class:`busmgr.bus.link.LinkError` with one line. The manager's name is owned later,
        by :meth:`go_live`, once the jobs are loaded (owning it is the manager's readiness).

        Called again after the connection was lost: everything of the old connection is let go
        first, so the new one starts clean (objects exported again, match rules added again,
        name owners asked again)."""
        self.detach()
        link = self.link = BusLink()
        link.on_lost = self._link_lost
        await link.connect(address)
        self._environment.bus_address = address
        names = self.names = NameWatcher(link, self._owner_changed)
        self._bus_names.attach(names)
        policy = CallerPolicy(self._mode, names)
        # Before any handler that acts on a method call: every call to every name we own.
        link.add_handler(CallerGate(link, policy))
        face = BusFace(link, self._operations(policy), self._rows, self._insight)
        face.publish(self._registry.classes.values(), self._registry.jobs())
        # Bus signals some job waits for become ``dbus-signal`` events.
        signals = SignalEventBridge(link, self._emit, names)
        signals.update(self._registry.classes.values())
        self._bus_observers = [face, _ClassFollower(self._registry, signals.update)]
        for observer in self._bus_observers:
            self._observers.subscribe(observer)

    def detach(self) -> None:
        """Forget the rooms of the previous connection (after a loss, before a new one)."""
        for observer in self._bus_observers:
            self._observers.unsubscribe(observer)
        self._bus_observers = []
        self._bus_names.attach(None)
        self.names = None
        self.activation = None

    def _link_lost(self) -> None:
        self.detach()
        if self.on_bus_lost is not None:
            self.on_bus_lost()

    async def go_live(
        self, servicedir: Path | None, *, own_servicedir: bool, catalog: Catalog
    ) -> None:
        """Own the manager's name and start activation: its files go to ``servicedir``
        (``own_servicedir``: the private bus's own directory, which goes away with the bus).
        After a reconnection, the jobs' bus names are checked again: a name that lost its owner
        meanwhile fails its job (respawn applies)."""
        link = self.link
        await link.own(MANAGER_BUS_NAME)
        if self.backend is not None:
            self.activation = self.backend(link, self.requests, self._environment)
        else:
            self.activation = DbusDaemonActivation(
                link,
                self.requests,
                self._environment,
                link.address,
                servicedir,
                remove_on_close=not own_servicedir,
                claim=self._claim_systemd1,
            )
        await self.activation.start()
        await self.refresh_activation(catalog)
        for job in list(self._registry.jobs()):
            self._bus_names.recheck(job)

    async def refresh_activation(self, catalog: Catalog) -> None:
        """Write the activation files and follow the provided names (after every load)."""
        classes = list(self._registry.classes.values())
        if self.activation is not None:
            await self.activation.refresh(classes, catalog.units, catalog.skipped)
        names = self.names
        if names is not None:
            # Follow every provided name now: a start later finds its owner known already. The
            # round trips (a match rule and the owner, per name) go out together.
            provided = {cls.dbus_name for cls in classes if cls.dbus_name}
            await asyncio.gather(*(names.watch(name) for name in sorted(provided)))

    def set_bus_timeout(self, seconds: float | None) -> None:
        """The bus gives an activation ``seconds`` (its ``service_start_timeout``; None: not
        known, or none): from it, how long busmgr lets one take before it fails the request
        with its own reason (:mod:`busmgr.bus.patience`)."""
        self._control.activation_patience = patience(seconds)
        log.debug(
            "activation requests fail after %gs (the bus allows %s)",
            self._control.activation_patience,
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
        self._bus_names.owner_changed(name, owner)
        if owner:
            self.requests.name_owned(name)

    async def close(self, *, keep_files: bool) -> None:
        """Stop activation (its files go too, unless ``keep_files``: a re-exec's next image
        uses them at once) and leave the bus (replies already sent go out first)."""
        if self.activation is not None and not keep_files:
            self.activation.close()
        await self.link.close()
