"""Unit tests for busmgr.job: the pure state table and the job life cycle, no process, no bus.

The world a :class:`~busmgr.job.Job` sees is a :class:`FakeHost` (the ``JobHost`` seam of STYLE
rule 6): ``spawn`` hands out increasing fake pids and records what was started; ``kill`` records
signals; a process "exits" only when the test says so (:meth:`FakeHost.exit`); blocking job events
(``starting``, ``stopping``) wait until the test finishes them; timers fire only when the test fires
them. The host's clock (``JobHost.now``) is a :class:`FakeClock` the test advances, so nothing
here sleeps or depends on the speed of the machine (STYLE rule 11).

Some tests pin down bugs once found in ``busmgr/job.py`` (or the seam it relies on).
"""

from __future__ import annotations

import itertools
import signal
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import pytest

from busmgr.errors import ManagerError
from busmgr.events import Event
from busmgr.job import (
    ALLOWED_PREVIOUS,
    Failure,
    Goal,
    Job,
    JobStateError,
    State,
    Waiter,
    next_state,
)
from busmgr.jobclass import JobClass, ProcessKind, ProcessSpec, RespawnPolicy
from busmgr.process import SpawnError

PRE_START = ProcessKind.PRE_START
MAIN = ProcessKind.MAIN
POST_START = ProcessKind.POST_START
PRE_STOP = ProcessKind.PRE_STOP
POST_STOP = ProcessKind.POST_STOP
HOOKS = (PRE_START, POST_START, PRE_STOP, POST_STOP)

SIGTERM = int(signal.SIGTERM)
SIGKILL = int(signal.SIGKILL)


# ================================================================== the world, faked
class FakeClock:
    """The host's clock (``JobHost.now``), moved by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    # The job asks its host for the time now (JobHost.now) instead of reading time.monotonic.
    return FakeClock()


class FakeTimer:
    """A ``call_later`` handle: records ``cancel``; the test ``fire``\\ s it."""

    def __init__(self, delay: float, callback: Callable[[], None]) -> None:
        self.delay = delay
        self.callback = callback
        self.cancelled = False
        self.fired = False

    @property
    def pending(self) -> bool:
        return not (self.cancelled or self.fired)

    def cancel(self) -> None:
        self.cancelled = True

    def fire(self) -> None:
        if not self.pending:
            raise AssertionError(f"timer ({self.delay}s) fired after cancel or twice")
        self.fired = True
        self.callback()


@dataclass
class JobEvent:
    """One ``emit_job_event`` call; a blocking one (with ``on_finished``) waits for ``finish``."""

    name: str
    env: dict[str, str]
    on_finished: Callable[[bool], None] | None
    done: bool = False

    @property
    def blocking(self) -> bool:
        return self.on_finished is not None and not self.done

    def finish(self, failed: bool = False) -> None:
        if self.on_finished is None or self.done:
            raise AssertionError(f"event {self.name} is not waiting to be finished")
        self.done = True
        self.on_finished(failed)


@dataclass
class FakeHost:
    """A :class:`busmgr.job.JobHost` for one job; every call is recorded for the test to inspect.

    ``live`` is the set of spawned processes that have not exited; ``strays`` are processes of the
    job it did not spawn itself (a daemon's workers). ``has_processes`` is true while either is not
    empty, so the test drives it by making processes exit.
    """

    next_pid: int = 100
    spawns: list[tuple[ProcessKind, dict[str, str]]] = field(default_factory=list)
    live: dict[int, ProcessKind] = field(default_factory=dict)
    strays: set[int] = field(default_factory=set)
    kills: list[int] = field(default_factory=list)
    events: list[JobEvent] = field(default_factory=list)
    timers: list[FakeTimer] = field(default_factory=list)
    watched: list[Job] = field(default_factory=list)
    checked: list[Job] = field(default_factory=list)
    finished_jobs: list[Job] = field(default_factory=list)
    trail: list[tuple[State, str]] = field(default_factory=list)
    spawn_errors: dict[ProcessKind, Exception] = field(default_factory=dict)
    clock: FakeClock = field(default_factory=FakeClock)
    # True: starting/stopping are settled at once (no job listens to them), as the manager
    # does through Dispatcher.settle_at_once.
    settle_at_once: bool = False

    # ------------------------------------------------------------ JobHost
    def spawn(self, job: Job, kind: ProcessKind, env: Mapping[str, str]) -> int:
        if kind in self.spawn_errors:
            raise self.spawn_errors[kind]
        pid = self.next_pid
        self.next_pid += 1
        self.spawns.append((kind, dict(env)))
        self.live[pid] = kind
        return pid

    def kill(self, job: Job, signum: int) -> None:
        self.kills.append(signum)

    def has_processes(self, job: Job) -> bool:
        return bool(self.live or self.strays)

    def emit_job_event(
        self, job: Job, event: Event, on_finished: Callable[[bool], None] | None
    ) -> bool | None:
        # The job builds the Event itself now (one builder of job events: events.job_event).
        if on_finished is not None and self.settle_at_once:
            self.events.append(JobEvent(event.name, event.env_dict(), None))
            return True
        self.events.append(JobEvent(event.name, event.env_dict(), on_finished))
        return None

    def now(self) -> float:
        return self.clock.monotonic()

    def call_later(self, delay: float, callback: Callable[[], None]) -> FakeTimer:
        timer = FakeTimer(delay, callback)
        self.timers.append(timer)
        return timer

    def watch_readiness(self, job: Job) -> None:
        self.watched.append(job)

    def check_bus_name(self, job: Job) -> None:
        self.checked.append(job)

    def changed(self, job: Job) -> None:
        point = (job.state, job.goal.public)
        if not self.trail or self.trail[-1] != point:
            self.trail.append(point)

    def finished(self, job: Job) -> None:
        self.finished_jobs.append(job)

    # ------------------------------------------------------- test drivers
    def exit(
        self, job: Job, kind: ProcessKind, status: int | None = 0, signum: int | None = None
    ) -> int:
        """The ``kind`` process of ``job`` ends (``signum``: killed by it). Returns its pid."""
        pid = job.pids[kind]
        del self.live[pid]
        job.process_exited(pid, None if signum is not None else status, signum)
        return pid

    def add_stray(self) -> int:
        pid = self.next_pid
        self.next_pid += 1
        self.strays.add(pid)
        return pid

    def stray_exit(self, job: Job, pid: int, signum: int) -> None:
        self.strays.discard(pid)
        job.process_exited(pid, None, signum)

    def kinds(self) -> list[ProcessKind]:
        return [kind for kind, _env in self.spawns]

    def count(self, kind: ProcessKind) -> int:
        return self.kinds().count(kind)

    def env_of(self, kind: ProcessKind) -> dict[str, str]:
        """The env of the latest ``kind`` process spawned."""
        return next(env for k, env in reversed(self.spawns) if k is kind)

    def names(self) -> list[str]:
        return [e.name for e in self.events]

    def event(self, name: str) -> JobEvent:
        """The latest event called ``name``."""
        return next(e for e in reversed(self.events) if e.name == name)

    def blocked(self) -> list[JobEvent]:
        return [e for e in self.events if e.blocking]

    def finish(self, name: str, failed: bool = False) -> None:
        """Finish the one blocking event ``name``."""
        waiting = self.blocked()
        if [e.name for e in waiting] != [name]:
            raise AssertionError(
                f"expected only {name} to block, blocking: {[e.name for e in waiting]}"
            )
        waiting[0].finish(failed)

    def settle(self, limit: int = 100) -> None:
        """Finish blocking events as a loop with nothing else to do would, until none is left."""
        for _ in range(limit):
            waiting = self.blocked()
            if not waiting:
                return
            waiting[0].finish()
        raise AssertionError(f"the job never came to rest: {self.names()[-6:]} ...")

    def pending_timers(self) -> list[FakeTimer]:
        return [t for t in self.timers if t.pending]

    def timer(self) -> FakeTimer:
        """The one pending timer."""
        pending = self.pending_timers()
        if len(pending) != 1:
            raise AssertionError(f"expected one pending timer, got {len(pending)}")
        return pending[0]

    def states(self) -> list[State]:
        """The states the job was seen in, in order, consecutive repeats folded."""
        seen: list[State] = []
        for state, _goal in self.trail:
            if not seen or seen[-1] is not state:
                seen.append(state)
        return seen


class Outcome:
    """The callback of a :class:`Waiter`: records every (failure, how) it is called with."""

    def __init__(self) -> None:
        self.calls: list[tuple[Failure | None, str]] = []

    def __call__(self, failure: Failure | None, how: str) -> None:
        self.calls.append((failure, how))

    @property
    def failure(self) -> Failure | None:
        assert len(self.calls) == 1, self.calls
        return self.calls[0][0]


def waiter(want: Goal = Goal.START) -> tuple[Waiter, Outcome]:
    outcome = Outcome()
    return Waiter(outcome, want=want), outcome


@pytest.fixture
def host(clock: FakeClock) -> FakeHost:
    return FakeHost(clock=clock)


def make_job(
    host: FakeHost,
    *,
    hooks: Iterable[ProcessKind] = HOOKS,
    main: bool = True,
    env: dict[str, str] | None = None,
    **fields: object,
) -> Job:
    """A job ``svc`` with the given hook processes (and main), other JobClass fields as given."""
    processes = {kind: ProcessSpec(f"/usr/lib/svc/{kind.value}") for kind in hooks}
    if main:
        processes[MAIN] = ProcessSpec("/usr/bin/svc --foreground")
    cls = JobClass(name="svc", processes=processes, **fields)  # type: ignore[arg-type]
    return Job(cls, "", dict(env or {}), host)


def run_to_running(host: FakeHost, job: Job, waiter: Waiter | None = None) -> None:
    """Start a job without hooks and let every event finish: it must end up running."""
    job.start(waiter)
    host.settle()
    assert job.state is State.RUNNING


BASE = {"JOB": "svc", "INSTANCE": ""}


# ================================================================== 1. the pure table
# Where each state leads when its work is done, for goal stop / start / respawn (Upstart 0.5's
# job_next_state, with respawn as "a start that first passes through stop").
TABLE_TEXT = """
    state        stop         start        respawn
    waiting      waiting      starting     starting
    starting     stopping     pre-start    pre-start
    pre-start    stopping     spawned      spawned
    spawned      stopping     post-start   post-start
    post-start   stopping     running      running
    running      pre-stop     stopping     pre-stop
    pre-stop     stopping     running      stopping
    stopping     killed       killed       killed
    killed       post-stop    post-stop    post-stop
    post-stop    waiting      starting     starting
"""


def _parse_table(text: str) -> dict[tuple[State, Goal], State]:
    lines = [line.split() for line in text.strip().splitlines()]
    goals = [Goal(word) for word in lines[0][1:]]
    table: dict[tuple[State, Goal], State] = {}
    for state_word, *targets in lines[1:]:
        for goal, target in zip(goals, targets, strict=True):
            table[State(state_word), goal] = State(target)
    return table


EXPECTED = _parse_table(TABLE_TEXT)


def test_table_is_complete() -> None:
    assert set(EXPECTED) == {(s, g) for s in State for g in Goal}
    assert len(EXPECTED) == 30


@pytest.mark.parametrize("goal", list(Goal), ids=lambda g: g.value)
@pytest.mark.parametrize("state", list(State), ids=lambda s: s.value)
def test_next_state(state: State, goal: Goal) -> None:
    assert next_state(state, goal) is EXPECTED[state, goal]


def _walk(state: State, goal: Goal, until: State) -> list[State]:
    path = [state]
    while path[-1] is not until:
        path.append(next_state(path[-1], goal))
        assert len(path) <= len(State) + 1, f"{goal.value} from {state.value} loops: {path}"
    return path


def _assert_path_allowed(path: list[State]) -> None:
    for before, after in itertools.pairwise(path):
        assert before in ALLOWED_PREVIOUS[after], f"{before.value} -> {after.value}"


@pytest.mark.parametrize("state", list(State), ids=lambda s: s.value)
def test_a_start_always_reaches_running(state: State) -> None:
    path = _walk(state, Goal.START, State.RUNNING)
    _assert_path_allowed(path)
    # A start that has to go through stop runs post-stop first (Upstart's guarantee).
    if State.STOPPING in path:
        assert path.index(State.POST_STOP) < path.index(State.STARTING)


@pytest.mark.parametrize("state", list(State), ids=lambda s: s.value)
def test_a_stop_always_reaches_waiting(state: State) -> None:
    path = _walk(state, Goal.STOP, State.WAITING)
    _assert_path_allowed(path)
    assert State.STARTING not in path[1:]


@pytest.mark.parametrize("state", list(State), ids=lambda s: s.value)
def test_a_respawn_reaches_running_through_starting(state: State) -> None:
    # Entering starting turns the goal respawn into start (Job._enter), so walk in two legs.
    to_starting = _walk(state, Goal.RESPAWN, State.STARTING)
    _assert_path_allowed(to_starting)
    _assert_path_allowed(_walk(State.STARTING, Goal.START, State.RUNNING))


def test_every_transition_of_the_table_is_allowed() -> None:
    for (state, _goal), target in EXPECTED.items():
        if target is not state:
            assert state in ALLOWED_PREVIOUS[target], f"{state.value} -> {target.value}"


def test_allowed_previous_holds_nothing_but_the_table() -> None:
    for target in State:
        leading = {s for (s, _g), t in EXPECTED.items() if t is target and s is not target}
        assert ALLOWED_PREVIOUS[target] == leading, target.value
        assert leading, f"{target.value} cannot be reached"


# ================================================================== 2. a full life cycle
def test_service_with_every_hook_starts_and_stops(host: FakeHost) -> None:
    job = make_job(host, env={"LANG": "C"})
    start_waiter, started = waiter(Goal.START)
    job.start(start_waiter)

    # starting blocks the job: nothing is spawned until the event is finished.
    assert (job.goal, job.state) == (Goal.START, State.STARTING)
    assert host.spawns == []
    assert host.event("starting").env == BASE
    host.finish("starting")

    assert job.state is State.PRE_START
    assert host.kinds() == [PRE_START]
    assert host.env_of(PRE_START) == {"LANG": "C"}
    host.exit(job, PRE_START, 0)

    # main spawned (no readiness to wait for), straight on to post-start.
    assert job.state is State.POST_START
    assert host.kinds() == [PRE_START, MAIN, POST_START]
    assert job.main_pid == 101
    assert started.calls == []
    assert "started" not in host.names()
    host.exit(job, POST_START, 0)

    assert (job.goal, job.state) == (Goal.START, State.RUNNING)
    assert host.names() == ["starting", "started"]
    assert host.event("started").env == BASE
    assert host.event("started").on_finished is None
    assert started.calls == [(None, "running")]
    assert job.ready_reached

    stop_waiter, stopped = waiter(Goal.STOP)
    job.stop(stop_waiter, env={"RUNLEVEL": "0"})
    assert (job.goal, job.state) == (Goal.STOP, State.PRE_STOP)
    assert host.env_of(PRE_STOP) == {"LANG": "C", "RUNLEVEL": "0"}
    host.exit(job, PRE_STOP, 0)

    # stopping blocks the job: main is not touched before it is finished.
    assert job.state is State.STOPPING
    assert host.event("stopping").env == {**BASE, "RESULT": "ok"}
    assert host.kills == []
    host.finish("stopping")

    assert job.state is State.KILLED
    assert host.kills == [SIGTERM]
    kill_timer = host.timer()
    assert kill_timer.delay == 5.0
    host.exit(job, MAIN, signum=SIGTERM)

    assert job.state is State.POST_STOP
    assert kill_timer.cancelled
    assert host.env_of(POST_STOP) == {"LANG": "C", **BASE, "RESULT": "ok"}
    assert stopped.calls == []
    host.exit(job, POST_STOP, 0)

    assert (job.goal, job.state) == (Goal.STOP, State.WAITING)
    assert host.event("stopped").env == {**BASE, "RESULT": "ok"}
    assert host.names() == ["starting", "started", "stopping", "stopped"]
    assert stopped.calls == [(None, "stopped")]
    assert started.calls == [(None, "running")]  # released once, never again
    assert host.finished_jobs == [job]
    assert job.pids == {}
    assert job.failure is None and job.result == "ok"

    assert host.kinds() == [PRE_START, MAIN, POST_START, PRE_STOP, POST_STOP]
    assert host.states() == [
        State.WAITING,
        State.STARTING,
        State.PRE_START,
        State.SPAWNED,
        State.POST_START,
        State.RUNNING,
        State.PRE_STOP,
        State.STOPPING,
        State.KILLED,
        State.POST_STOP,
        State.WAITING,
    ]
    assert host.pending_timers() == []


def test_job_without_processes_passes_every_state(host: FakeHost) -> None:
    job = make_job(host, hooks=(), main=False)
    run_to_running(host, job)
    job.stop()
    host.settle()
    assert job.state is State.WAITING
    assert host.spawns == [] and host.kills == []
    assert host.names() == ["starting", "started", "stopping", "stopped"]


# ================================================================== 3-5. failed, cancelled starts
def test_failing_pre_start_fails_the_start(host: FakeHost) -> None:
    job = make_job(host)
    start_waiter, started = waiter()
    job.start(start_waiter)
    host.finish("starting")
    host.exit(job, PRE_START, 1)

    failed = {**BASE, "RESULT": "failed", "PROCESS": "pre-start", "EXIT_STATUS": "1"}
    assert (job.goal, job.state) == (Goal.STOP, State.STOPPING)
    assert host.event("stopping").env == failed
    host.finish("stopping")

    # Nothing left to kill: straight to post-stop, which still runs and sees the failure.
    assert job.state is State.POST_STOP
    assert host.kills == []
    assert host.env_of(POST_STOP) == failed
    host.exit(job, POST_STOP, 0)

    assert job.state is State.WAITING
    assert MAIN not in host.kinds()
    assert host.kinds() == [PRE_START, POST_STOP]
    assert host.event("stopped").env == failed
    assert "started" not in host.names()
    failure = started.failure
    assert failure is not None
    assert (failure.process, failure.status, failure.signal) == ("pre-start", 1, None)
    assert started.calls[0][1] == "failed"
    assert job.result == "failed"


def test_pre_start_killed_by_a_signal_reports_the_signal(host: FakeHost) -> None:
    job = make_job(host)
    job.start()
    host.finish("starting")
    host.exit(job, PRE_START, signum=int(signal.SIGSEGV))
    assert host.event("stopping").env == {
        **BASE,
        "RESULT": "failed",
        "PROCESS": "pre-start",
        "EXIT_SIGNAL": "SEGV",
    }


def test_failing_post_start_fails_the_start_and_kills_main(host: FakeHost) -> None:
    job = make_job(host)
    start_waiter, started = waiter()
    job.start(start_waiter)
    host.finish("starting")
    host.exit(job, PRE_START, 0)
    host.exit(job, POST_START, 2)

    assert (job.goal, job.state) == (Goal.STOP, State.STOPPING)
    assert host.event("stopping").env == {
        **BASE,
        "RESULT": "failed",
        "PROCESS": "post-start",
        "EXIT_STATUS": "2",
    }
    host.finish("stopping")
    assert job.state is State.KILLED
    assert host.kills == [SIGTERM]
    host.exit(job, MAIN, signum=SIGTERM)
    host.exit(job, POST_STOP, 0)

    assert job.state is State.WAITING
    assert host.kinds() == [PRE_START, MAIN, POST_START, POST_STOP]  # no pre-stop
    assert "started" not in host.names()
    failure = started.failure
    assert failure is not None
    assert (failure.process, failure.status) == ("post-start", 2)


def test_stop_during_pre_start_never_spawns_main(host: FakeHost) -> None:
    job = make_job(host)
    start_waiter, started = waiter(Goal.START)
    job.start(start_waiter)
    host.finish("starting")
    assert job.state is State.PRE_START

    stop_waiter, stopped = waiter(Goal.STOP)
    job.stop(stop_waiter)
    assert (job.goal, job.state) == (Goal.STOP, State.PRE_START)  # waits for pre-start
    host.exit(job, PRE_START, 0)

    assert job.state is State.STOPPING
    assert host.event("stopping").env == {**BASE, "RESULT": "ok"}
    host.finish("stopping")
    host.exit(job, POST_STOP, 0)

    assert job.state is State.WAITING
    assert host.kinds() == [PRE_START, POST_STOP]
    assert stopped.calls == [(None, "stopped")]
    failure = started.failure  # the start did not come true
    assert failure is not None and started.calls[0][1] == "stopped"


def test_stop_while_starting_blocks_still_runs_post_stop(host: FakeHost) -> None:
    job = make_job(host)
    job.start()
    job.stop()
    assert job.state is State.STARTING
    host.finish("starting")
    assert job.state is State.STOPPING
    host.finish("stopping")
    host.exit(job, POST_STOP, 0)
    assert job.state is State.WAITING
    assert host.kinds() == [POST_STOP]  # post-stop runs for every time the job left waiting


def test_failing_post_stop_is_the_result(host: FakeHost) -> None:
    job = make_job(host, hooks=(POST_STOP,))
    run_to_running(host, job)
    job.stop()
    host.settle()
    host.exit(job, MAIN, signum=SIGTERM)
    host.exit(job, POST_STOP, 4)
    assert job.state is State.WAITING
    assert host.event("stopped").env == {
        **BASE,
        "RESULT": "failed",
        "PROCESS": "post-stop",
        "EXIT_STATUS": "4",
    }


def test_pre_start_that_cannot_be_spawned_fails_the_start(host: FakeHost) -> None:
    host.spawn_errors[PRE_START] = FileNotFoundError(2, "No such file or directory")
    job = make_job(host)
    start_waiter, started = waiter()
    job.start(start_waiter)
    host.settle()
    host.exit(job, POST_STOP, 0)
    assert job.state is State.WAITING
    failure = started.failure
    assert failure is not None and failure.process == "pre-start"
    assert "No such file" in failure.reason
    assert host.kinds() == [POST_STOP]


def test_main_that_cannot_be_spawned_fails_the_start(host: FakeHost) -> None:
    host.spawn_errors[MAIN] = PermissionError(13, "Permission denied")
    job = make_job(host, hooks=())
    start_waiter, started = waiter()
    job.start(start_waiter)
    host.settle(limit=10)
    assert (job.goal, job.state) == (Goal.STOP, State.WAITING)
    assert host.event("stopped").env == {**BASE, "RESULT": "failed", "PROCESS": "main"}
    failure = started.failure
    assert failure is not None and failure.process == "main"
    assert "Permission denied" in failure.reason


def test_spawn_error_of_the_real_host_fails_the_start(host: FakeHost) -> None:
    host.spawn_errors[PRE_START] = SpawnError(
        'exec "/usr/lib/svc/pre-start"', "No such file or directory", 2
    )
    job = make_job(host)
    start_waiter, started = waiter()
    job.start(start_waiter)
    host.finish("starting")  # raises SpawnError here while the bug lasts
    host.settle()
    host.exit(job, POST_STOP, 0)
    assert job.state is State.WAITING
    failure = started.failure
    assert failure is not None and failure.process == "pre-start"


# ================================================================== 6. restart
def test_restart_from_running(host: FakeHost) -> None:
    job = make_job(host)
    job.start()
    host.finish("starting")
    host.exit(job, PRE_START, 0)
    host.exit(job, POST_START, 0)
    first_main = job.main_pid
    mark = len(host.trail)

    restart_waiter, restarted = waiter(Goal.START)
    job.restart(restart_waiter)
    assert (job.goal, job.state) == (Goal.RESPAWN, State.PRE_STOP)
    assert job.goal.public == "start"
    host.exit(job, PRE_STOP, 0)
    assert host.event("stopping").env == {**BASE, "RESULT": "ok"}
    host.finish("stopping")
    assert host.kills == [SIGTERM]
    host.exit(job, MAIN, signum=SIGTERM)
    host.exit(job, POST_STOP, 0)

    assert (job.goal, job.state) == (Goal.START, State.STARTING)
    host.finish("starting")
    host.exit(job, PRE_START, 0)
    assert restarted.calls == []
    host.exit(job, POST_START, 0)

    assert (job.goal, job.state) == (Goal.START, State.RUNNING)
    assert job.main_pid not in (0, first_main)
    assert restarted.calls == [(None, "running")]
    assert host.kinds() == [
        PRE_START,
        MAIN,
        POST_START,
        PRE_STOP,
        POST_STOP,
        PRE_START,
        MAIN,
        POST_START,
    ]
    # The restart never shows goal stop, and never rests in waiting.
    assert {goal for _state, goal in host.trail[mark:]} == {"start"}
    assert State.WAITING not in {state for state, _goal in host.trail[mark:]}
    assert host.names() == ["starting", "started", "stopping", "starting", "started"]


def test_restart_of_a_stopped_job_starts_it(host: FakeHost) -> None:
    job = make_job(host, hooks=())
    job.restart()
    host.settle()
    assert (job.goal, job.state) == (Goal.START, State.RUNNING)
    assert host.kinds() == [MAIN]


# ================================================================== 7. respawn
def _fail_main(
    host: FakeHost, job: Job, clock: FakeClock, status: int = 1, step: float = 0.1
) -> None:
    clock.advance(step)
    host.exit(job, MAIN, status)
    host.settle()


def test_respawn_stops_after_count_respawns_within_the_interval(
    host: FakeHost, clock: FakeClock
) -> None:
    job = make_job(host, hooks=(), respawn=RespawnPolicy(True, limit=3, interval=5.0))
    run_to_running(host, job)
    for respawns in range(1, 4):
        _fail_main(host, job, clock)
        assert (job.goal, job.state) == (Goal.START, State.RUNNING), respawns
        assert host.count(MAIN) == respawns + 1
        # Each crash is reported as such, even though the job respawns.
        assert host.event("stopping").env == {
            **BASE,
            "RESULT": "failed",
            "PROCESS": "main",
            "EXIT_STATUS": "1",
        }
        assert job.failure is None  # cleared when it started again
    _fail_main(host, job, clock)

    assert (job.goal, job.state) == (Goal.STOP, State.WAITING)
    assert host.count(MAIN) == 4  # COUNT + 1 runs
    assert job.failure is not None
    assert (job.failure.process, job.failure.status) == ("respawn", 1)
    assert host.event("stopping").env == {
        **BASE,
        "RESULT": "failed",
        "PROCESS": "respawn",
        "EXIT_STATUS": "1",
    }
    assert host.event("stopped").env == host.event("stopping").env
    assert job.respawns == 4  # a bounded counter replaced the unbounded respawn_times list


def test_respawn_limit_zero_means_no_limit(host: FakeHost, clock: FakeClock) -> None:
    job = make_job(host, hooks=(), respawn=RespawnPolicy(True, limit=0, interval=5.0))
    run_to_running(host, job)
    for _ in range(25):
        _fail_main(host, job, clock, step=0.0)
        assert (job.goal, job.state) == (Goal.START, State.RUNNING)
    assert host.count(MAIN) == 26
    assert job.failure is None


def test_exits_outside_the_interval_reset_the_count(host: FakeHost, clock: FakeClock) -> None:
    job = make_job(host, hooks=(), respawn=RespawnPolicy(True, limit=3, interval=5.0))
    run_to_running(host, job)
    for _ in range(3):
        _fail_main(host, job, clock)
    clock.advance(10.0)  # the window has passed: counting starts again
    for _ in range(3):
        _fail_main(host, job, clock)
        assert job.state is State.RUNNING
    _fail_main(host, job, clock)
    assert job.state is State.WAITING
    assert job.failure is not None and job.failure.process == "respawn"
    assert host.count(MAIN) == 7


def test_slow_failures_respawn_for_ever(host: FakeHost, clock: FakeClock) -> None:
    job = make_job(host, hooks=(), respawn=RespawnPolicy(True, limit=1, interval=5.0))
    run_to_running(host, job)
    for _ in range(10):
        _fail_main(host, job, clock, step=6.0)
        assert job.state is State.RUNNING
    assert host.count(MAIN) == 11


def test_respawn_runs_post_stop_and_pre_start_again(host: FakeHost, clock: FakeClock) -> None:
    job = make_job(host, respawn=RespawnPolicy(True))
    job.start()
    host.settle()
    host.exit(job, PRE_START, 0)
    host.exit(job, POST_START, 0)
    clock.advance(1)
    host.exit(job, MAIN, 1)
    host.settle()
    # main died on its own: no pre-stop, no kill; post-stop, then the start again.
    assert host.kills == []
    host.exit(job, POST_STOP, 0)
    host.settle()
    assert job.state is State.PRE_START
    assert host.kinds() == [PRE_START, MAIN, POST_START, POST_STOP, PRE_START]


def test_respawn_delay_waits_before_starting_again(host: FakeHost, clock: FakeClock) -> None:
    job = make_job(host, hooks=(), respawn=RespawnPolicy(True, delay=2.5))
    run_to_running(host, job)
    _fail_main(host, job, clock)
    assert (job.goal, job.state) == (Goal.START, State.POST_STOP)
    assert host.count(MAIN) == 1
    delay = host.timer()
    assert delay.delay == 2.5
    delay.fire()
    assert job.state is State.STARTING
    host.settle()
    assert job.state is State.RUNNING
    assert host.count(MAIN) == 2


def test_stop_during_respawn_delay_stops_at_once(host: FakeHost, clock: FakeClock) -> None:
    job = make_job(host, hooks=(), respawn=RespawnPolicy(True, delay=30.0))
    run_to_running(host, job)
    _fail_main(host, job, clock)
    delay = host.timer()
    stop_waiter, stopped = waiter(Goal.STOP)
    job.stop(stop_waiter)
    assert job.state is State.WAITING
    assert stopped.calls == [(None, "stopped")]
    assert delay.cancelled
    assert host.count(MAIN) == 1


# ================================================================== 8. normal exit, tasks
def test_listed_exit_code_is_normal(host: FakeHost) -> None:
    job = make_job(host, hooks=(), respawn=RespawnPolicy(True), normal_exit_codes=frozenset({0, 2}))
    run_to_running(host, job)
    host.exit(job, MAIN, 2)
    host.settle()
    assert (job.goal, job.state) == (Goal.STOP, State.WAITING)
    assert host.count(MAIN) == 1
    assert host.event("stopped").env == {**BASE, "RESULT": "ok"}


def test_listed_signal_is_normal(host: FakeHost) -> None:
    job = make_job(
        host, hooks=(), respawn=RespawnPolicy(True), normal_exit_signals=frozenset({SIGTERM})
    )
    run_to_running(host, job)
    host.exit(job, MAIN, signum=SIGTERM)
    host.settle()
    assert job.state is State.WAITING
    assert host.count(MAIN) == 1
    assert host.event("stopped").env == {**BASE, "RESULT": "ok"}


def test_unlisted_signal_is_a_failure(host: FakeHost) -> None:
    job = make_job(host, hooks=(), normal_exit_signals=frozenset({SIGTERM}))
    run_to_running(host, job)
    host.exit(job, MAIN, signum=int(signal.SIGSEGV))
    host.settle()
    assert job.state is State.WAITING
    assert host.event("stopped").env == {
        **BASE,
        "RESULT": "failed",
        "PROCESS": "main",
        "EXIT_SIGNAL": "SEGV",
    }
    assert job.last_exit == (None, int(signal.SIGSEGV))


def test_exit_zero_of_a_respawning_service_is_a_failure(host: FakeHost, clock: FakeClock) -> None:
    job = make_job(host, hooks=(), respawn=RespawnPolicy(True))
    run_to_running(host, job)
    _fail_main(host, job, clock, status=0)
    assert (job.goal, job.state) == (Goal.START, State.RUNNING)
    assert host.count(MAIN) == 2


def test_exit_zero_of_a_service_without_respawn_is_ok(host: FakeHost) -> None:
    job = make_job(host, hooks=())
    run_to_running(host, job)
    host.exit(job, MAIN, 0)
    host.settle()
    assert job.state is State.WAITING
    assert host.event("stopped").env == {**BASE, "RESULT": "ok"}


def test_exit_one_of_a_service_without_respawn_fails(host: FakeHost) -> None:
    job = make_job(host, hooks=(PRE_STOP,))
    run_to_running(host, job)
    host.exit(job, MAIN, 1)
    host.settle()
    assert job.state is State.WAITING
    assert PRE_STOP not in host.kinds()  # pre-stop runs only on a stop request
    assert host.event("stopped").env == {
        **BASE,
        "RESULT": "failed",
        "PROCESS": "main",
        "EXIT_STATUS": "1",
    }


def test_task_waiter_is_released_only_at_waiting(host: FakeHost) -> None:
    job = make_job(host, hooks=(), task=True)
    start_waiter, started = waiter(Goal.START)
    job.start(start_waiter)
    host.settle()
    assert (job.goal, job.state) == (Goal.START, State.RUNNING)
    assert "started" in host.names()
    assert started.calls == []
    host.exit(job, MAIN, 0)
    assert started.calls == []
    host.settle()
    assert job.state is State.WAITING
    assert started.calls == [(None, "finished")]
    assert host.event("stopped").env == {**BASE, "RESULT": "ok"}


def test_failing_task_fails_its_waiter(host: FakeHost) -> None:
    job = make_job(host, hooks=(), task=True)
    start_waiter, started = waiter(Goal.START)
    job.start(start_waiter)
    host.settle()
    host.exit(job, MAIN, 3)
    host.settle()
    failure = started.failure
    assert failure is not None and (failure.process, failure.status) == ("main", 3)


def test_task_with_respawn_runs_until_it_exits_zero(host: FakeHost, clock: FakeClock) -> None:
    job = make_job(host, hooks=(), task=True, respawn=RespawnPolicy(True))
    start_waiter, started = waiter(Goal.START)
    job.start(start_waiter)
    host.settle()
    _fail_main(host, job, clock, status=1)
    _fail_main(host, job, clock, status=1)
    assert job.state is State.RUNNING and started.calls == []
    _fail_main(host, job, clock, status=0)
    assert job.state is State.WAITING
    assert host.count(MAIN) == 3
    assert started.calls == [(None, "finished")]
    assert job.failure is None


def test_task_without_main_is_done_once_started(host: FakeHost) -> None:
    job = make_job(host, hooks=(PRE_START,), main=False, task=True)
    start_waiter, started = waiter(Goal.START)
    job.start(start_waiter)
    host.finish("starting")
    host.exit(job, PRE_START, 0)
    host.settle()
    assert job.state is State.WAITING
    assert host.names() == ["starting", "started", "stopping", "stopped"]
    assert started.calls == [(None, "finished")]


def test_task_stopped_before_it_ran_fails_its_waiter(host: FakeHost) -> None:
    job = make_job(host, task=True)
    start_waiter, started = waiter(Goal.START)
    job.start(start_waiter)
    host.finish("starting")
    job.stop()
    host.exit(job, PRE_START, 0)
    host.settle()
    host.exit(job, POST_STOP, 0)
    assert job.state is State.WAITING
    assert MAIN not in host.kinds()
    assert started.failure is not None


# ================================================================== 9. kill timeout
def test_kill_timeout_sends_sigkill(host: FakeHost) -> None:
    job = make_job(host, hooks=(), kill_timeout=7.0, kill_signal=int(signal.SIGINT))
    run_to_running(host, job)
    job.stop()
    host.settle()
    assert job.state is State.KILLED
    assert host.kills == [int(signal.SIGINT)]
    timer = host.timer()
    assert timer.delay == 7.0
    timer.fire()
    assert host.kills == [int(signal.SIGINT), SIGKILL]
    assert job.state is State.KILLED
    host.exit(job, MAIN, signum=SIGKILL)
    assert job.state is State.WAITING
    assert host.event("stopped").env == {**BASE, "RESULT": "ok"}


def test_killed_waits_for_processes_it_did_not_spawn(host: FakeHost) -> None:
    job = make_job(host, hooks=())
    run_to_running(host, job)
    worker = host.add_stray()
    job.stop()
    host.settle()
    timer = host.timer()
    host.exit(job, MAIN, signum=SIGTERM)
    assert job.state is State.KILLED  # a worker of the daemon is still alive
    timer.fire()
    assert host.kills == [SIGTERM, SIGKILL]
    host.stray_exit(job, worker, SIGKILL)
    assert job.state is State.WAITING


def test_nothing_left_to_kill_skips_the_kill(host: FakeHost) -> None:
    job = make_job(host, hooks=())
    run_to_running(host, job)
    host.exit(job, MAIN, 0)
    host.settle()
    assert job.state is State.WAITING
    assert host.kills == [] and host.timers == []


# ================================================================== 10. readiness
BUS_NAME = "org.example.Svc"


def test_dbus_job_is_spawned_until_its_name_is_owned(host: FakeHost) -> None:
    job = make_job(host, hooks=(POST_START,), dbus_name=BUS_NAME)
    start_waiter, started = waiter()
    job.start(start_waiter)
    host.settle()
    assert job.state is State.SPAWNED
    assert job.pending_ready == {"dbus"}
    assert host.watched == [job]
    assert host.kinds() == [MAIN]
    ready_timer = host.timer()
    assert ready_timer.delay == 90.0
    assert started.calls == []

    job.ready("dbus")
    assert ready_timer.cancelled
    assert job.state is State.POST_START
    host.exit(job, POST_START, 0)
    assert job.state is State.RUNNING
    assert started.calls == [(None, "running")]


def test_main_exit_before_ready_fails_the_start(host: FakeHost) -> None:
    job = make_job(host, hooks=(POST_START,), dbus_name=BUS_NAME, respawn=RespawnPolicy(True))
    start_waiter, started = waiter()
    job.start(start_waiter)
    host.settle()
    ready_timer = host.timer()
    host.exit(job, MAIN, 3)
    assert ready_timer.cancelled
    assert (job.goal, job.state) == (Goal.STOP, State.STOPPING)
    host.settle()
    assert job.state is State.WAITING
    failure = started.failure
    assert failure is not None
    assert (failure.process, failure.status) == ("main", 3)
    assert "exited before it was ready" in failure.reason
    assert host.event("stopped").env == {
        **BASE,
        "BUS_NAME": BUS_NAME,
        "RESULT": "failed",
        "PROCESS": "main",
        "EXIT_STATUS": "3",
    }
    assert host.kinds() == [MAIN]  # no post-start, no respawn before the job was ready


def test_a_wrapper_that_exits_0_once_its_name_is_owned_ends_the_start_without_failing(
    host: FakeHost,
) -> None:
    # Telepathy's mc-wait-for-name: main waits for another process to own the name and exits
    # 0. The host asks the bus; the name is owned: the start did what it was for.
    job = make_job(host, hooks=(POST_START,), dbus_name=BUS_NAME)
    start_waiter, started = waiter()
    job.start(start_waiter)
    host.settle()
    ready_timer = host.timer()
    host.exit(job, MAIN, 0)
    assert host.checked == [job] and job.state is State.SPAWNED  # decided by the answer
    assert not ready_timer.cancelled
    job.bus_name_checked(True)
    assert ready_timer.cancelled
    assert (job.goal, job.state) == (Goal.STOP, State.STOPPING)
    host.settle()
    assert job.state is State.WAITING and job.failure is None
    assert started.calls == [(None, "served")]
    assert host.event("stopped").env["RESULT"] == "ok"
    assert host.kinds() == [MAIN]  # no post-start: it never was ready
    job.bus_name_checked(True)  # a late answer changes nothing
    assert job.state is State.WAITING


def test_main_exit_0_before_its_name_is_owned_fails_the_start(host: FakeHost) -> None:
    job = make_job(host, hooks=(), dbus_name=BUS_NAME)
    start_waiter, started = waiter()
    job.start(start_waiter)
    host.settle()
    host.exit(job, MAIN, 0)
    job.bus_name_checked(False)
    host.settle()
    failure = started.failure
    assert failure is not None and (failure.process, failure.status) == ("main", 0)
    assert failure.reason == "exited before it was ready"
    assert host.event("stopped").env["RESULT"] == "failed"
    job.start()  # the next start is not served by the last one's answer
    host.settle()
    assert not job.served and job.state is State.SPAWNED


def test_a_stop_while_the_bus_is_asked_wins(host: FakeHost) -> None:
    job = make_job(host, hooks=(), dbus_name=BUS_NAME)
    job.start()
    host.settle()
    host.exit(job, MAIN, 0)
    job.stop()
    host.settle()
    assert job.state is State.WAITING
    job.bus_name_checked(True)  # too late: nothing changes
    assert job.state is State.WAITING and not job.served


def test_ready_timeout_fails_the_start(host: FakeHost) -> None:
    job = make_job(host, hooks=(), dbus_name=BUS_NAME, ready_timeout=12.0)
    start_waiter, started = waiter()
    job.start(start_waiter)
    host.settle()
    ready_timer = host.timer()
    assert ready_timer.delay == 12.0
    ready_timer.fire()
    assert (job.goal, job.state) == (Goal.STOP, State.STOPPING)
    host.settle()
    assert job.state is State.KILLED  # main is still alive
    assert host.kills == [SIGTERM]
    host.exit(job, MAIN, signum=SIGTERM)
    assert job.state is State.WAITING
    failure = started.failure
    assert failure is not None and failure.process == "main"
    assert BUS_NAME in failure.reason
    assert "12s" in failure.reason


def test_stop_while_waiting_for_readiness(host: FakeHost) -> None:
    job = make_job(host, hooks=(), dbus_name=BUS_NAME)
    start_waiter, started = waiter()
    job.start(start_waiter)
    host.settle()
    ready_timer = host.timer()
    job.stop()
    assert ready_timer.cancelled
    assert job.state is State.STOPPING
    host.settle()
    host.exit(job, MAIN, signum=SIGTERM)
    assert job.state is State.WAITING
    assert started.failure is not None


def test_bus_name_lost_while_running_respawns(host: FakeHost) -> None:
    job = make_job(host, hooks=(), dbus_name=BUS_NAME, respawn=RespawnPolicy(True))
    job.start()
    host.settle()
    job.ready("dbus")
    assert job.state is State.RUNNING
    job.bus_name_lost()
    assert (job.goal, job.state) == (Goal.START, State.STOPPING)
    host.settle()
    assert job.state is State.KILLED  # main still runs: it is killed first
    assert host.kills == [SIGTERM]
    host.exit(job, MAIN, signum=SIGTERM)
    host.settle()
    assert job.state is State.SPAWNED
    assert host.count(MAIN) == 2
    assert job.failure is None
    assert job.respawns == 1


def test_bus_name_lost_without_respawn_fails(host: FakeHost) -> None:
    job = make_job(host, hooks=(), dbus_name=BUS_NAME)
    job.start()
    host.settle()
    job.ready("dbus")
    job.bus_name_lost()
    host.settle()
    host.exit(job, MAIN, signum=SIGTERM)
    assert job.state is State.WAITING
    assert job.failure is not None
    assert job.failure.process == "main" and BUS_NAME in job.failure.reason
    assert host.event("stopped").env == {
        **BASE,
        "BUS_NAME": BUS_NAME,
        "RESULT": "failed",
        "PROCESS": "main",
    }


def test_bus_name_lost_outside_running_is_ignored(host: FakeHost) -> None:
    job = make_job(host, hooks=(), dbus_name=BUS_NAME)
    job.bus_name_lost()
    assert job.state is State.WAITING and host.events == []


# ================================================================== 11. singletons
def test_start_twice_is_already_started(host: FakeHost) -> None:
    job = make_job(host, hooks=())
    job.start()
    with pytest.raises(ManagerError) as err:
        job.start()
    assert err.value.name == "AlreadyStarted"
    host.settle()
    with pytest.raises(ManagerError) as err:
        job.start()
    assert err.value.name == "AlreadyStarted"


def test_stop_of_a_stopped_job_is_already_stopped(host: FakeHost) -> None:
    job = make_job(host, hooks=())
    with pytest.raises(ManagerError) as err:
        job.stop()
    assert err.value.name == "AlreadyStopped"
    assert host.events == []
    run_to_running(host, job)
    job.stop()
    with pytest.raises(ManagerError) as err:
        job.stop()
    assert err.value.name == "AlreadyStopped"


def test_start_during_a_stop_starts_again(host: FakeHost) -> None:
    job = make_job(host, hooks=())
    run_to_running(host, job)
    job.stop()
    assert job.state is State.STOPPING
    job.start()
    host.settle()
    host.exit(job, MAIN, signum=SIGTERM)
    host.settle()
    assert (job.goal, job.state) == (Goal.START, State.RUNNING)
    assert host.count(MAIN) == 2


def test_cancelled_stop_does_not_emit_started_again(host: FakeHost) -> None:
    job = make_job(host, hooks=(PRE_STOP,))
    run_to_running(host, job)
    job.stop()
    assert job.state is State.PRE_STOP
    job.start()  # e.g. from the pre-stop script: the stop is cancelled
    host.exit(job, PRE_STOP, 0)
    assert (job.goal, job.state) == (Goal.START, State.RUNNING)
    assert host.names().count("started") == 1


def test_a_cancelled_stop_answers_its_waiter_instead_of_hanging(host: FakeHost) -> None:
    job = make_job(host, hooks=(PRE_STOP,))
    run_to_running(host, job)
    answers: list[tuple[Failure | None, str]] = []
    job.stop(Waiter(lambda f, how: answers.append((f, how)), want=Goal.STOP))
    job.start()
    host.exit(job, PRE_STOP, 0)
    assert job.state is State.RUNNING
    assert len(answers) == 1
    failure, how = answers[0]
    assert how == "cancelled" and failure is not None and "started again" in failure.reason


# ================================================================== 12. invalid transitions
INVALID = [
    (before, after) for after in State for before in State if before not in ALLOWED_PREVIOUS[after]
]


@pytest.mark.parametrize(
    ("before", "after"), INVALID, ids=[f"{b.value}->{a.value}" for b, a in INVALID]
)
def test_invalid_transition_raises(host: FakeHost, before: State, after: State) -> None:
    job = make_job(host)
    job.state = before
    with pytest.raises(JobStateError, match="not a valid transition"):
        job._change_state(after)
    assert job.state is before
    assert host.spawns == [] and host.events == [] and host.trail == []


def test_invalid_transition_from_a_live_job(host: FakeHost) -> None:
    job = make_job(host, hooks=())
    run_to_running(host, job)
    with pytest.raises(JobStateError):
        job._change_state(State.KILLED)
    assert job.state is State.RUNNING


def test_exported_variables_never_replace_the_event_variables(host: FakeHost) -> None:
    # A bug found by the house review: ``export`` let a job's variable overwrite JOB, RESULT and
    # the other variables that describe the event. Exports come after them, and never replace.
    job = make_job(
        host,
        hooks=(),
        dbus_name=BUS_NAME,
        export=("JOB", "RESULT", "BUS_NAME", "COLOR"),
        env={"JOB": "forged", "RESULT": "ok", "BUS_NAME": "x.y", "COLOR": "blue"},
    )
    job.start()
    host.settle()
    job.ready("dbus")
    assert job.state is State.RUNNING
    assert host.event("started").env == {
        "JOB": "svc",
        "INSTANCE": "",
        "BUS_NAME": BUS_NAME,
        "RESULT": "ok",  # not a variable of a started event: the job's own export
        "COLOR": "blue",
    }
    host.exit(job, MAIN, 1)
    host.settle()
    assert host.event("stopped").env == {
        "JOB": "svc",
        "INSTANCE": "",
        "BUS_NAME": BUS_NAME,
        "RESULT": "failed",
        "PROCESS": "main",
        "EXIT_STATUS": "1",
        "COLOR": "blue",
    }


@pytest.mark.parametrize("hook", [PRE_START, POST_START])
def test_a_stop_kills_a_starting_hook_that_holds_it(host: FakeHost, hook: ProcessKind) -> None:
    # A hung pre-start or post-start held a stop (and the manager's shutdown) for ever. Now it
    # gets the kill signal, then KILL after the kill timeout; its death is no failure.
    job = make_job(host)
    job.start()
    host.settle()
    if hook is POST_START:
        host.exit(job, PRE_START, 0)
        host.settle()
    assert job.state is (State.PRE_START if hook is PRE_START else State.POST_START)
    stop_waiter, stopped = waiter(Goal.STOP)
    job.stop(stop_waiter)
    assert host.kills == [SIGTERM]
    host.timers[-1].fire()  # the kill timeout: it ignored TERM
    assert host.kills == [SIGTERM, SIGKILL]
    host.exit(job, hook, signum=SIGKILL)
    assert job.state is State.STOPPING
    host.settle()
    if MAIN in job.pids:
        host.exit(job, MAIN, signum=SIGTERM)
    host.settle()
    host.exit(job, POST_STOP, 0)
    assert job.state is State.WAITING and job.failure is None
    assert stopped.calls == [(None, "stopped")]


def test_events_settled_at_once_take_a_respawn_through_in_one_call(clock: FakeClock) -> None:
    """When the host settles ``starting`` and ``stopping`` at once (no job listens to them,
    no event is pending), a start reaches running and a respawn spawns the next main within
    the call that reported the exit: no loop turn in between."""
    host = FakeHost(clock=clock, settle_at_once=True)
    job = make_job(host, hooks=(), respawn=RespawnPolicy(True, limit=3, interval=5.0))
    job.start()
    assert job.state is State.RUNNING and len(host.spawns) == 1
    host.exit(job, MAIN, signum=9)
    assert (job.goal, job.state) == (Goal.START, State.RUNNING)
    assert len(host.spawns) == 2 and job.main_pid
    names = [e.name for e in host.events]
    assert names == ["starting", "started", "stopping", "starting", "started"]
    assert host.blocked() == []
    job.stop()
    host.exit(job, MAIN, signum=15)
    assert (job.goal, job.state) == (Goal.STOP, State.WAITING)
