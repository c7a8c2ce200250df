"""The desktop's phases (busmgr.desktop) against a real event queue, without processes or a bus:
the order of the events, each phase waiting for the one before it (or for a bounded time), the
variables they carry, the delayed starts, and nothing emitted once the session ends."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from types import SimpleNamespace

import pytest

from busmgr.config.desktop import PHASES
from busmgr.desktop import DesktopSession, phase_delays
from busmgr.environment import Environment
from busmgr.eventqueue import Block, EventQueue, Release
from busmgr.events import Event
from busmgr.jobclass import EventArg, EventMatch, EventOp, JobClass
from busmgr.options import DesktopOptions, Mode

TIMEOUT = 10.0


class RecordingQueue(EventQueue):
    """An event queue that notes when each event was emitted (a phase begins then)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, handler: Callable[[Event, Block], None]):
        super().__init__(loop, handler)
        self.emitted: list[tuple[float, Event]] = []

    def emit(self, event: Event, on_finished: Callable[[Block], None] | None = None) -> Block:
        self.emitted.append((self._loop.time(), event))
        return super().emit(event, on_finished)


class FakeControl:
    """What :class:`DesktopSession` uses of :class:`busmgr.control.Control`: the loop, the
    event queue, the environment, the classes, and whether the session is over. Events whose
    label (their ``PHASE``, else their name) is in ``hold`` are held like a job that is not
    ready yet, until the test releases them."""

    def __init__(self, classes: Iterable[JobClass] = (), hold: Iterable[str] = ()) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue = RecordingQueue(self.loop, self._handle)
        self.environment = Environment(
            Mode.SESSION, {"HOME": "/home/u", "DISPLAY": ":5", "XDG_CURRENT_DESKTOP": "TEST"}
        )
        self.registry = SimpleNamespace(classes={c.name: c for c in classes})
        self.shutting_down = False
        self.ending = False
        self.hold = set(hold)
        self.releases: dict[str, Release] = {}
        self.seen: list[tuple[float, Event]] = []
        self._changed = asyncio.Event()

    def _handle(self, event: Event, block: Block) -> None:
        self.seen.append((self.loop.time(), event))
        label = event.get("PHASE") if event.name == "desktop-phase" else event.name
        if label in self.hold:
            self.releases[str(label)] = self.queue.hold(block, label)
        self._changed.set()

    def labels(self) -> list[str]:
        return [f"{e.name} {e.get('PHASE')}" if e.get("PHASE") else e.name for _t, e in self.seen]

    def when(self, label: str) -> float:
        return next(t for t, e in self.seen if label in (e.name, f"{e.name} {e.get('PHASE')}"))

    async def wait_for(self, condition: Callable[[], bool]) -> None:
        async def until() -> None:
            while not condition():
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(until(), TIMEOUT)


def session(control: FakeControl, phase_timeout: float = TIMEOUT) -> DesktopSession:
    return DesktopSession(control, DesktopOptions("TEST", phase_timeout))  # type: ignore[arg-type]


ALL = ["desktop-start", *(f"desktop-phase {p}" for p in PHASES)]


async def test_the_events_in_order() -> None:
    control = FakeControl()
    await asyncio.wait_for(session(control).begin(), TIMEOUT)
    assert control.labels() == ALL


async def test_a_phase_begins_when_the_one_before_is_ready() -> None:
    control = FakeControl(hold={"WindowManager"})
    desktop = session(control)
    task = desktop.begin()
    await control.wait_for(lambda: "WindowManager" in control.releases)
    released: list[float] = []

    def ready() -> None:  # the window manager's service gets ready a little later
        released.append(control.loop.time())
        control.releases["WindowManager"](None)

    control.loop.call_later(0.1, ready)
    await asyncio.wait_for(task, TIMEOUT)
    assert control.labels() == ALL
    assert control.when("desktop-phase Panel") >= released[0]


async def test_a_phase_goes_on_after_the_bounded_wait(caplog: pytest.LogCaptureFixture) -> None:
    control = FakeControl(hold={"Desktop"})  # a service of the Desktop phase never gets ready
    with caplog.at_level(logging.WARNING, logger="busmgr"):
        await asyncio.wait_for(session(control, phase_timeout=0.2).begin(), TIMEOUT)
    assert control.labels() == ALL
    began = {e.get("PHASE"): t for t, e in control.queue.emitted if e.name == "desktop-phase"}
    waited = began["Applications"] - began["Desktop"]
    assert 0.2 <= waited < TIMEOUT
    assert "phase Desktop: its services are not all ready after 0.2s; going on" in caplog.text


async def test_a_failure_is_logged_and_the_phases_go_on(caplog: pytest.LogCaptureFixture) -> None:
    control = FakeControl(hold={"Panel"})
    task = session(control).begin()
    await control.wait_for(lambda: "Panel" in control.releases)
    with caplog.at_level(logging.WARNING, logger="busmgr"):
        control.releases["Panel"]("job panel failed: main exited with status 1")
        await asyncio.wait_for(task, TIMEOUT)
    assert control.labels() == ALL
    assert "phase Panel: job panel failed" in caplog.text


async def test_the_events_carry_the_display_variables_as_they_are_then() -> None:
    control = FakeControl(hold={"desktop-start"})
    task = session(control).begin()
    await control.wait_for(lambda: "desktop-start" in control.releases)
    # the display server tells where it is (SetEnvironment) before it is ready
    control.environment.update_activation(["WAYLAND_DISPLAY=wayland-0", "DISPLAY=:6"], [])
    control.releases["desktop-start"](None)
    await asyncio.wait_for(task, TIMEOUT)
    start, first = control.seen[0][1], control.seen[1][1]
    assert start.env == (("DISPLAY", ":5"), ("XDG_CURRENT_DESKTOP", "TEST"))
    assert first.env == (
        ("PHASE", "Initialization"),
        ("DISPLAY", ":6"),
        ("WAYLAND_DISPLAY", "wayland-0"),
        ("XDG_CURRENT_DESKTOP", "TEST"),
    )


def delayed(name: str, *args: EventArg) -> JobClass:
    return JobClass(name=name, start_on=EventMatch("desktop-delay", args))


def phase(value: str) -> EventArg:
    return EventArg(value, key="PHASE")


def delay(value: str) -> EventArg:
    return EventArg(value, key="DELAY")


CLASSES = [
    delayed("a", phase("Panel"), delay("0.1")),
    delayed("b", phase("Panel"), delay("0.1")),  # the same delay: one event for both
    delayed("c", delay("0.2"), phase("Panel")),
    delayed("d", phase("Applications"), delay("0.05")),
    delayed("e", phase("Panel"), delay("*")),  # a glob names no time
    delayed("f", phase("Panel"), delay("$WHEN")),
    delayed("g", phase("Panel"), EventArg("0.3", key="DELAY", negate=True)),
    delayed("h", phase("Panel"), delay("1e9")),  # too long to be meant
    JobClass(
        name="i",
        start_on=EventOp(
            "or",
            EventMatch("startup"),
            EventMatch("desktop-delay", (phase("Panel"), delay("0.2"))),
        ),
    ),
]


def test_phase_delays() -> None:
    assert phase_delays(CLASSES, "Panel") == {"0.1": 0.1, "0.2": 0.2}
    assert phase_delays(CLASSES, "Applications") == {"0.05": 0.05}
    assert phase_delays(CLASSES, "Desktop") == {}


async def test_delayed_starts_come_after_their_phase_and_hold_nothing_back() -> None:
    control = FakeControl(CLASSES)
    await asyncio.wait_for(session(control).begin(), TIMEOUT)
    assert control.labels() == ALL  # the last phase did not wait for any delay
    await control.wait_for(lambda: len(control.labels()) == len(ALL) + 3)
    delays = {e.env[:2]: t for t, e in control.seen if e.name == "desktop-delay"}
    began = {e.get("PHASE"): t for t, e in control.queue.emitted if e.name == "desktop-phase"}
    panel, apps = began["Panel"], began["Applications"]
    assert delays.keys() == {
        (("PHASE", "Panel"), ("DELAY", "0.1")),
        (("PHASE", "Panel"), ("DELAY", "0.2")),
        (("PHASE", "Applications"), ("DELAY", "0.05")),
    }
    assert delays[(("PHASE", "Panel"), ("DELAY", "0.1"))] - panel >= 0.1
    assert delays[(("PHASE", "Panel"), ("DELAY", "0.2"))] - panel >= 0.2
    assert delays[(("PHASE", "Applications"), ("DELAY", "0.05"))] - apps >= 0.05
    assert all(
        e.env[2:] == (("DISPLAY", ":5"), ("XDG_CURRENT_DESKTOP", "TEST"))
        for _t, e in control.seen
        if e.name == "desktop-delay"
    )


async def test_nothing_is_emitted_once_the_session_ends() -> None:
    control = FakeControl(CLASSES, hold={"Panel"})
    task = session(control).begin()
    await control.wait_for(lambda: "Panel" in control.releases)
    control.ending = True  # EndSession
    control.releases["Panel"](None)
    await asyncio.wait_for(task, TIMEOUT)
    # The Panel phase's delays (0.1 s, 0.2 s) were scheduled when it began; a marker emitted
    # by a later timer comes after them, had they emitted anything.
    control.loop.call_later(0.3, control.queue.emit, Event.make("marker"))
    await control.wait_for(lambda: control.labels()[-1:] == ["marker"])
    assert control.labels() == [*ALL[:4], "marker"]


async def test_close_cancels_the_delays() -> None:
    control = FakeControl(CLASSES)
    desktop = session(control)
    await asyncio.wait_for(desktop.begin(), TIMEOUT)
    desktop.close()
    control.loop.call_later(0.3, control.queue.emit, Event.make("marker"))
    await control.wait_for(lambda: control.labels()[-1:] == ["marker"])
    assert control.labels() == [*ALL, "marker"]


async def test_close_cancels_a_sequence_under_way() -> None:
    control = FakeControl(hold={"Initialization"})
    desktop = session(control)
    task = desktop.begin()
    assert desktop.begin() is task  # begins once
    await control.wait_for(lambda: "Initialization" in control.releases)
    desktop.close()
    with pytest.raises(asyncio.CancelledError):
        await task
    control.releases["Initialization"](None)
    control.queue.emit(Event.make("marker"))  # handled after anything emitted before it
    await control.wait_for(lambda: control.labels()[-1:] == ["marker"])
    assert control.labels() == ["desktop-start", "desktop-phase Initialization", "marker"]
