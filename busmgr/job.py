"""One job instance's life cycle: goals, states, and the entry action of each state.

The model is Upstart 0.5's (seed ``002_*``, "Job Lifecycle"):

* A :class:`Job` has a **goal** (``start`` or ``stop``; ``respawn`` is an internal goal for a
  restart: a start that first passes through stop) and a **state**. :func:`next_state` is the
  pure table of where a state leads for a goal; :meth:`Job._change_state` is the only place a
  state is set, and it runs the new state's entry action.
* The rest states are ``waiting`` (goal stop) and ``running`` (goal start). Every other state is
  left when what its entry action started has finished: an event (``starting``/``stopping``
  block the job), a process (pre-start, post-start, pre-stop, post-stop), readiness (spawned),
  or the death of every process of the job (killed).
* Guarantees: post-stop runs once for every time the job left ``waiting``; main runs only after
  pre-start succeeded; a failing pre-start, post-start or a main that dies before the job is
  ready fails the start; a restart runs pre-stop, kills main, runs post-stop, then pre-start
  and main again.

Everything that touches the outside world (spawning, signalling, timers, the clock, events, the
bus) goes through the :class:`~busmgr.jobhost.JobHost` protocol, so this module is tested without
processes or a bus, and does no I/O of its own. Its values live beside it: why a job failed
(:mod:`busmgr.failure`) and the respawn limit's window (:mod:`busmgr.respawn`).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from busmgr.errors import ManagerError as JobError
from busmgr.events import STOP_EVENTS, Event, job_event
from busmgr.failure import Failure
from busmgr.jobclass import ExpectMode, JobClass, ProcessKind, signal_name
from busmgr.jobhost import JobHost, TimerHandle
from busmgr.respawn import RespawnWindow, too_fast_reason

# Failure (busmgr.failure), JobHost and TimerHandle (busmgr.jobhost) are imported from here too.


class Goal(enum.Enum):
    """What the job is heading for. ``RESPAWN`` is shown on the bus as ``start``."""

    STOP = "stop"
    START = "start"
    RESPAWN = "respawn"

    @property
    def public(self) -> str:
        """The goal as users see it: ``start`` or ``stop``."""
        return "stop" if self is Goal.STOP else "start"


class State(enum.Enum):
    """The ten states of SPEC §3, in life-cycle order."""

    WAITING = "waiting"
    STARTING = "starting"
    PRE_START = "pre-start"
    SPAWNED = "spawned"
    POST_START = "post-start"
    RUNNING = "running"
    PRE_STOP = "pre-stop"
    STOPPING = "stopping"
    KILLED = "killed"
    POST_STOP = "post-stop"


class ActiveState(enum.Enum):
    """A coarse summary beside the detailed :class:`State` (as systemd's ActiveState)."""

    INACTIVE = "inactive"
    ACTIVATING = "activating"
    ACTIVE = "active"
    DEACTIVATING = "deactivating"


_TABLE: dict[State, tuple[State, State, State]] = {
    #                  goal STOP        goal START       goal RESPAWN
    State.WAITING: (State.WAITING, State.STARTING, State.STARTING),
    State.STARTING: (State.STOPPING, State.PRE_START, State.PRE_START),
    State.PRE_START: (State.STOPPING, State.SPAWNED, State.SPAWNED),
    State.SPAWNED: (State.STOPPING, State.POST_START, State.POST_START),
    State.POST_START: (State.STOPPING, State.RUNNING, State.RUNNING),
    # RUNNING with goal START is left only when main died and the job respawns.
    State.RUNNING: (State.PRE_STOP, State.STOPPING, State.PRE_STOP),
    # PRE_STOP with goal START: the stop was cancelled, back to running.
    State.PRE_STOP: (State.STOPPING, State.RUNNING, State.STOPPING),
    State.STOPPING: (State.KILLED, State.KILLED, State.KILLED),
    State.KILLED: (State.POST_STOP, State.POST_STOP, State.POST_STOP),
    State.POST_STOP: (State.WAITING, State.STARTING, State.STARTING),
}
_GOAL_COLUMN = {Goal.STOP: 0, Goal.START: 1, Goal.RESPAWN: 2}
# The states that wait for a hook of the starting side, and that hook.
_HOOK_OF = {State.PRE_START: ProcessKind.PRE_START, State.POST_START: ProcessKind.POST_START}


def next_state(state: State, goal: Goal) -> State:
    """The state that follows ``state`` when its work is done and the job heads for ``goal``.

    Pure: no I/O, no job. ``next_state(WAITING, STOP)`` is ``WAITING`` (nothing to do).
    """
    return _TABLE[state][_GOAL_COLUMN[goal]]


# Which states may lead into each state (checked by _change_state: anything else is a bug).
ALLOWED_PREVIOUS: dict[State, frozenset[State]] = {
    target: frozenset(s for s, row in _TABLE.items() if target in row and s is not target)
    for target in State
}


def active_state(state: State, goal: Goal) -> ActiveState:
    """Coarse state: active only in ``running`` with goal start."""
    if state is State.WAITING:
        return ActiveState.INACTIVE
    if state is State.RUNNING and goal is not Goal.STOP:
        return ActiveState.ACTIVE
    if goal is Goal.STOP or state in (
        State.PRE_STOP,
        State.STOPPING,
        State.KILLED,
        State.POST_STOP,
    ):
        return ActiveState.DEACTIVATING
    return ActiveState.ACTIVATING


class JobStateError(RuntimeError):
    """A transition the state machine does not allow: a bug in busmgr, never user error."""


@dataclass(frozen=True)
class Restored:
    """What :meth:`Job.restore` takes back: the job's own fields as a snapshot recorded them."""

    goal: Goal
    state: State
    env: Mapping[str, str]
    pids: Mapping[ProcessKind, int]
    failure: Failure | None = None
    last_exit: tuple[int | None, int | None] = (None, None)
    ready_reached: bool = False
    pending_ready: frozenset[str] = frozenset()
    ready_deadline: float = 0.0
    respawns: int = 0
    respawn_window: tuple[float, int] = (0.0, 0)
    status_text: str = ""
    start_count: int = 0


class Waiter:
    """Someone waiting for a job to reach a rest state (a bus call with ``wait``, or a
    blocking event). ``done(failure)`` is called exactly once."""

    def __init__(self, callback: Callable[[Failure | None, str], None], *, want: Goal) -> None:
        self.callback = callback
        self.want = want


class Job:
    """One instance of a job class and its state machine.

    Invariants: ``state`` changes only in :meth:`_change_state`; ``pids`` holds the live
    processes the job spawned, by kind; ``failure`` is set once per start attempt and cleared
    when the job leaves ``waiting`` again.
    """

    def __init__(
        self, jobclass: JobClass, instance: str, env: dict[str, str], host: JobHost[Job]
    ) -> None:
        self.jobclass = jobclass
        self.name = jobclass.name
        self.instance = instance
        self.env = env
        # The env of a start that overruled a stop still under way; taken on entering starting.
        self.start_env: dict[str, str] | None = None
        self.stop_env: dict[str, str] = {}
        self.host = host
        self.goal = Goal.STOP
        self.state = State.WAITING
        self.pids: dict[ProcessKind, int] = {}
        self.failure: Failure | None = None
        self.last_exit: tuple[int | None, int | None] = (None, None)  # main: (status, signal)
        self.pending_ready: set[str] = set()
        self.ready_reached = False
        self.respawns = 0  # main failures counted against the respawn limit, ever
        self._respawn_window = RespawnWindow()  # the failures counted against the limit
        self._timer: TimerHandle | None = None
        self._waiters: list[Waiter] = []
        self.status_text = ""
        self.start_count = 0
        self.ready_deadline = 0.0  # host.now() when the current wait for readiness times out
        # This start ended as a wrapper's does (see bus_name_checked): done, not failed.
        self.served = False

    # ----------------------------------------------------------------- views
    def __repr__(self) -> str:
        inst = f" ({self.instance})" if self.instance else ""
        return f"<Job {self.name}{inst} {self.goal.public}/{self.state.value}>"

    @property
    def label(self) -> str:
        return f"{self.name} ({self.instance})" if self.instance else self.name

    @property
    def main_pid(self) -> int:
        return self.pids.get(ProcessKind.MAIN, 0)

    @property
    def result(self) -> str:
        return "failed" if self.failure else "ok"

    @property
    def active(self) -> ActiveState:
        return active_state(self.state, self.goal)

    def job_event(self, name: str) -> Event:
        """This job's job event ``name`` (``starting``, ``started``, ``stopping``, ``stopped``):
        JOB, INSTANCE, BUS_NAME (jobs with ``dbus``), on stopping/stopped the result, then the
        exported variables, which never replace one of those (:func:`busmgr.events.job_event`)."""
        failure = self.failure if name in STOP_EVENTS else None
        return job_event(
            name,
            self.name,
            self.instance,
            bus_name=self.jobclass.dbus_name or "",
            result=None if name not in STOP_EVENTS else ("failed" if failure else "ok"),
            process=failure.process if failure else None,
            exit_status=failure.status if failure and failure.signal is None else None,
            exit_signal=signal_name(failure.signal) if failure and failure.signal else None,
            exported={k: self.env[k] for k in self.jobclass.export if k in self.env},
        )

    # ------------------------------------------------------------ restoring
    def counters(self) -> tuple[float, int]:
        """The respawn window's start and the respawns counted in it (what a snapshot keeps)."""
        return self._respawn_window.start, self._respawn_window.count

    def restore(self, saved: Restored) -> None:
        """Take the state a previous manager saved (re-exec, or re-adoption after a crash).

        Only a resting job (``waiting`` heading for stop, ``running`` heading for start) or one
        waiting in ``spawned`` for its bus name or its ``expect`` is restored as it was: the
        wait goes on (with the time left of its ready timeout) and the host is asked to watch
        readiness again. Raises :class:`JobStateError` for any other state (the caller brings
        such a job back another way). ``pids`` must be the live processes only.
        """
        resting = (saved.state is State.WAITING and saved.goal is Goal.STOP) or (
            saved.state is State.RUNNING and saved.goal is not Goal.STOP
        )
        waiting = saved.state is State.SPAWNED and saved.goal is not Goal.STOP
        if not (resting or waiting):
            raise JobStateError(f"{self!r}: cannot restore {saved.goal.value}/{saved.state.value}")
        self.goal, self.state = saved.goal, saved.state
        self.env = dict(saved.env)
        self.pids = dict(saved.pids)
        self.failure = saved.failure
        self.last_exit = saved.last_exit
        self.ready_reached = saved.ready_reached
        self.respawns = saved.respawns
        self._respawn_window = RespawnWindow(*saved.respawn_window)
        self.status_text = saved.status_text
        self.start_count = saved.start_count
        self.host.changed(self)
        if waiting:
            self.pending_ready = set(saved.pending_ready)
            self.ready_deadline = saved.ready_deadline
            left = max(0.0, saved.ready_deadline - self.host.now())
            self._set_timer(left, self._ready_timeout)
            self.host.watch_readiness(self)

    # ------------------------------------------------------------- requests
    def start(self, waiter: Waiter | None = None) -> None:
        """Set the goal to start. Raises :class:`JobError` ``AlreadyStarted`` if it is already
        heading there (Upstart's singleton rule)."""
        if self.goal is not Goal.STOP:
            raise JobError(
                "AlreadyStarted",
                f"job {self.label} is already {self.goal.public}/{self.state.value}",
            )
        if waiter:
            self._waiters.append(waiter)
        self._change_goal(Goal.START)

    def stop(self, waiter: Waiter | None = None, env: Mapping[str, str] | None = None) -> None:
        """Set the goal to stop. Raises ``AlreadyStopped`` if it already is."""
        if self.goal is Goal.STOP:
            raise JobError("AlreadyStopped", f"job {self.label} is already stop/{self.state.value}")
        self.stop_env = dict(env or {})
        if waiter:
            self._waiters.append(waiter)
        self._change_goal(Goal.STOP)

    def restart(self, waiter: Waiter | None = None) -> None:
        """Kill main, run post-stop, pre-start and main again; a stopped job is just started."""
        if waiter:
            self._waiters.append(waiter)
        if self.state is State.WAITING or self.goal is Goal.STOP:
            self.goal = Goal.STOP  # so that start() below accepts it
            self._change_goal(Goal.START)
        elif self.state is State.RUNNING:
            self._change_goal(Goal.RESPAWN)
        else:
            # Somewhere between starting and running: a restart is already as good as done.
            self.goal = (
                Goal.RESPAWN
                if self.state in (State.PRE_STOP, State.STOPPING, State.KILLED)
                else Goal.START
            )

    def add_waiter(self, waiter: Waiter) -> None:
        """Wait for the current goal's rest state without changing anything."""
        self._waiters.append(waiter)
        self._check_rest()

    def _change_goal(self, goal: Goal) -> None:
        """Change the goal; only the rest states need a push, every other state moves on by
        itself when its work is done (and reads the new goal then)."""
        if goal is self.goal:
            return
        self.goal = goal
        self.host.changed(self)
        if (self.state is State.WAITING and goal is not Goal.STOP) or (
            self.state is State.RUNNING and goal is not Goal.START
        ):
            self._change_state(next_state(self.state, goal))
        elif self.state is State.SPAWNED and goal is Goal.STOP:
            # Waiting for readiness can take long: a stop cancels it at once.
            self._cancel_timer()
            self.pending_ready.clear()
            self._change_state(State.STOPPING)
        elif self.state is State.POST_STOP and goal is Goal.STOP and self._timer is not None:
            # Waiting out the respawn delay with nothing running: the stop takes effect now.
            self._cancel_timer()
            self._change_state(next_state(self.state, goal))
        elif goal is Goal.STOP and self.state in _HOOK_OF and _HOOK_OF[self.state] in self.pids:
            # A pre-start or post-start still running would hold the stop for as long as it
            # likes: it gets the kill signal (then KILL after the kill timeout); its exit then
            # moves the job on to stopping, without counting as a failure.
            self.host.kill(self, self.jobclass.kill_signal)
            self._set_timer(self.jobclass.kill_timeout, self._hook_kill_timeout)

    # ------------------------------------------------------------ the machine
    def _change_state(self, state: State) -> None:
        """Enter ``state`` and run its entry action; entry actions that finish at once move on
        in the same loop (so the job may end in a later state than ``state`` on return)."""
        while True:
            if self.state not in ALLOWED_PREVIOUS[state]:
                raise JobStateError(
                    f"{self!r}: {self.state.value} -> {state.value} is not a valid transition"
                )
            previous, self.state = self.state, state
            self.host.changed(self)
            following = self._enter(state, previous)
            if following is None:
                return
            state = following

    def _enter(self, state: State, previous: State) -> State | None:
        """Run ``state``'s entry action. Returns the state to go to at once, or None when the
        job now waits for something (a process, an event, a timer)."""
        cls = self.jobclass
        if state is State.STARTING:
            if self.start_env is not None:
                self.env, self.start_env = self.start_env, None
            self.goal = Goal.START
            self.failure = None
            self.ready_reached = False
            self.served = False
            self.start_count += 1
            if self.host.emit_job_event(self, self.job_event("starting"), self._starting_finished):
                return next_state(state, self.goal)
            return None
        if state is State.PRE_START:
            return self._run_hook(ProcessKind.PRE_START)
        if state is State.SPAWNED:
            return self._spawn_main()
        if state is State.POST_START:
            self.ready_reached = True
            return self._run_hook(ProcessKind.POST_START)
        if state is State.RUNNING:
            if previous is State.PRE_STOP:
                # The stop was cancelled: the job never stopped, so no second ``started``.
                self.stop_env = {}
                self._check_rest()
                return None
            self.host.emit_job_event(self, self.job_event("started"), None)
            self._check_rest()
            if cls.main is None and cls.task:
                # A task with nothing to run is done as soon as it has started.
                self.goal = Goal.STOP
                return next_state(state, self.goal)
            return None
        if state is State.PRE_STOP:
            if self.main_pid:
                return self._run_hook(ProcessKind.PRE_STOP)
            return next_state(state, self.goal)
        if state is State.STOPPING:
            if self.host.emit_job_event(self, self.job_event("stopping"), self._stopping_finished):
                return next_state(state, self.goal)
            return None
        if state is State.KILLED:
            if not self.host.has_processes(self):
                return next_state(state, self.goal)
            self.host.kill(self, cls.kill_signal)
            self._set_timer(cls.kill_timeout, self._kill_timeout)
            return None
        if state is State.POST_STOP:
            following = self._run_hook(ProcessKind.POST_STOP)
            if following is not None:
                return self._after_post_stop()
            return None
        if state is State.WAITING:
            self.pids.clear()
            self.host.emit_job_event(self, self.job_event("stopped"), None)
            self._check_rest()
            self.host.finished(self)
            return None
        raise JobStateError(f"no entry action for {state}")  # pragma: no cover

    def _after_post_stop(self) -> State | None:
        """Post-stop is done: respawn (after ``respawn delay``), or come to rest."""
        if self.goal is not Goal.STOP and self.jobclass.respawn.delay > 0:
            self._set_timer(self.jobclass.respawn.delay, self._respawn_delay_over)
            return None
        return next_state(State.POST_STOP, self.goal)

    def _respawn_delay_over(self) -> None:
        self._timer = None
        if self.state is State.POST_STOP:
            self._change_state(next_state(State.POST_STOP, self.goal))

    def _starting_finished(self, failed: bool) -> None:
        if self.state is State.STARTING:
            self._change_state(next_state(self.state, self.goal))

    def _stopping_finished(self, failed: bool) -> None:
        if self.state is State.STOPPING:
            self._change_state(next_state(self.state, self.goal))

    def _run_hook(self, kind: ProcessKind) -> State | None:
        """Spawn a hook process if the class has one. None: wait for it to exit."""
        if kind not in self.jobclass.processes:
            return next_state(self.state, self.goal)
        env = dict(self.env)
        if kind is ProcessKind.PRE_STOP:
            env.update(self.stop_env)
        if kind is ProcessKind.POST_STOP:
            env.update(self.job_event("stopped").env)
        try:
            self.pids[kind] = self.host.spawn(self, kind, env)
        except OSError as err:
            return self._hook_failed(kind, None, None, str(err))
        self.host.changed(self)
        return None

    def _spawn_main(self) -> State | None:
        cls = self.jobclass
        if cls.main is None:
            return next_state(State.SPAWNED, self.goal)
        try:
            self.pids[ProcessKind.MAIN] = self.host.spawn(self, ProcessKind.MAIN, self.env)
        except OSError as err:
            self._fail(Failure("main", reason=str(err)))
            self.goal = Goal.STOP
            return State.STOPPING
        self.pending_ready = set()
        if cls.dbus_name:
            self.pending_ready.add("dbus")
        if cls.expect is not ExpectMode.NONE:
            self.pending_ready.add("expect")
        if not self.pending_ready:
            return next_state(State.SPAWNED, self.goal)
        self.ready_deadline = self.host.now() + cls.ready_timeout
        self._set_timer(cls.ready_timeout, self._ready_timeout)
        self.host.watch_readiness(self)
        return None

    def ready(self, what: str, main_pid: int | None = None) -> None:
        """The host saw ``what`` (``dbus`` or ``expect``) happen; ``main_pid`` replaces the
        main pid (the daemon a fork led to)."""
        if main_pid:
            self.pids[ProcessKind.MAIN] = main_pid
            self.host.changed(self)
        self.pending_ready.discard(what)
        if self.state is State.SPAWNED and not self.pending_ready:
            self._cancel_timer()
            self._change_state(next_state(self.state, self.goal))

    def bus_name_checked(self, owned: bool) -> None:
        """The answer to :meth:`JobHost.check_bus_name`, after main exited 0 while the job
        waited for its bus name. ``owned``: the name has an owner, so the bus has delivered
        the calls that waited for it; that owner is not the job's (else the job would be
        ready), so main was a wrapper that waited for it. The start did what it was for: the
        job stops, not failed (``served``), and whoever waited for the start is told it went
        well. Not owned: main exited before it was ready, a failed start. Only acts while the
        job still waits in ``spawned`` with no main process."""
        if (
            self.state is not State.SPAWNED
            or self.pending_ready != {"dbus"}
            or ProcessKind.MAIN in self.pids
        ):
            return
        self._cancel_timer()
        self.pending_ready.clear()
        if owned:
            self.served = True
        else:
            self._fail(Failure("main", 0, None, "exited before it was ready"))
        self.goal = Goal.STOP
        self._change_state(State.STOPPING)

    def ready_failed(self, reason: str) -> None:
        """The host saw that what ``pending_ready`` waits for can no longer happen (a forking
        main exited 0 but left no daemon): the start fails as on a ready timeout. Only acts
        while the job waits in ``spawned``."""
        if self.state is not State.SPAWNED:
            return
        self._cancel_timer()
        self.pending_ready.clear()
        self._fail(Failure("main", reason=reason))
        self.goal = Goal.STOP
        self._change_state(State.STOPPING)

    def _ready_timeout(self) -> None:
        self._timer = None
        if self.state is not State.SPAWNED:
            return
        waiting_for = " and ".join(
            sorted(
                f"bus name {self.jobclass.dbus_name}"
                if w == "dbus"
                else f"expect {self.jobclass.expect.value}"
                for w in self.pending_ready
            )
        )
        self.pending_ready.clear()
        self._fail(
            Failure(
                "main",
                reason=f"not ready after {self.jobclass.ready_timeout:g}s "
                f"(waited for {waiting_for})",
            )
        )
        self.goal = Goal.STOP
        self._change_state(State.STOPPING)

    def bus_name_lost(self) -> None:
        """The job's bus name lost its owner while running: the service failed."""
        if self.state is not State.RUNNING or self.goal is not Goal.START:
            return
        self._main_failed(Failure("main", reason=f"lost bus name {self.jobclass.dbus_name}"))

    def _hook_kill_timeout(self) -> None:
        self._timer = None
        if self.state in _HOOK_OF and _HOOK_OF[self.state] in self.pids:
            self.host.kill(self, 9)

    def _kill_timeout(self) -> None:
        self._timer = None
        if self.state is State.KILLED and self.host.has_processes(self):
            self.host.kill(self, 9)

    # --------------------------------------------------------- process exits
    def process_exited(self, pid: int, status: int | None, signum: int | None) -> None:
        """A process of this job was reaped. ``pid`` may be one the job did not spawn (a
        worker of a daemon): then only the "everything is gone" condition of killed matters."""
        kind = next((k for k, p in self.pids.items() if p == pid), None)
        if kind is not None:
            del self.pids[kind]
            self.host.changed(self)
        if kind is ProcessKind.MAIN:
            self.last_exit = (status, signum)
            self._main_exited(status, signum)
        elif kind is not None:
            self._hook_exited(kind, status, signum)
        if self.state is State.KILLED and not self.host.has_processes(self):
            self._cancel_timer()
            self._change_state(next_state(self.state, self.goal))

    def _main_exited(self, status: int | None, signum: int | None) -> None:
        cls = self.jobclass
        state = self.state
        if state is State.SPAWNED:
            if (
                "expect" in self.pending_ready
                and cls.expect in (ExpectMode.FORK, ExpectMode.DAEMON)
                and status == 0
                and signum is None
            ):
                # The host follows the fork; ready() brings the daemon's pid, ready_failed()
                # says there is none. Any other exit of a forking main fails the start below.
                return
            if self.pending_ready == {"dbus"} and status == 0 and signum is None:
                # Perhaps a wrapper that exits once another process owns the name (Telepathy's
                # mc-wait-for-name): the host asks the bus, bus_name_checked() decides.
                self.host.check_bus_name(self)
                return
            self._cancel_timer()
            self.pending_ready.clear()
            self._fail(Failure("main", status, signum, "exited before it was ready"))
            self.goal = Goal.STOP
            self._change_state(State.STOPPING)
            return
        if state not in (State.POST_START, State.RUNNING) or self.goal is not Goal.START:
            return  # a stop or restart is in progress: the exit is expected
        if cls.exit_failed(status, signum):
            self._main_failed(Failure("main", status, signum))
            return
        self.goal = Goal.STOP
        self.host.changed(self)
        if state is State.RUNNING:
            self._change_state(State.STOPPING)

    def _main_failed(self, failure: Failure) -> None:
        """Main failed after the job was ready: respawn within the limit, else stop failed."""
        cls = self.jobclass
        if cls.respawn.enabled and self.goal is Goal.START:
            self._respawn_window = self._respawn_window.counted(self.host.now(), cls.respawn)
            self.respawns += 1
            if self._respawn_window.too_fast(cls.respawn):
                reason = too_fast_reason(cls.respawn)
                self._fail(Failure("respawn", failure.status, failure.signal, reason))
                self.goal = Goal.STOP
            else:
                # Goal stays START: running -> stopping -> ... -> post-stop -> starting. The
                # stopping/stopped events still say how main failed (cleared on starting).
                self._fail(failure)
        else:
            self._fail(failure)
            self.goal = Goal.STOP
        self.host.changed(self)
        if self.state is State.RUNNING:
            self._change_state(State.STOPPING)
        # in post-start / pre-stop: the hook's exit moves the job on (see _hook_exited)

    def _hook_exited(self, kind: ProcessKind, status: int | None, signum: int | None) -> None:
        ok = status == 0 and signum is None
        if self.state in _HOOK_OF and _HOOK_OF[self.state] is kind and self.goal is Goal.STOP:
            # Stopped while the hook ran (it may have been killed for it): not a failure.
            self._cancel_timer()
            self._change_state(State.STOPPING)
            return
        if kind is ProcessKind.PRE_START and self.state is State.PRE_START:
            if not ok:
                self._hook_failed_now(kind, status, signum)
                return
            self._change_state(next_state(self.state, self.goal))
        elif kind is ProcessKind.POST_START and self.state is State.POST_START:
            if not ok:
                self._hook_failed_now(kind, status, signum)
                return
            if ProcessKind.MAIN not in self.pids and self.jobclass.main is not None:
                # main died while post-start ran; its exit already set the goal.
                self._change_state(State.STOPPING)
                return
            self._change_state(next_state(self.state, self.goal))
        elif kind is ProcessKind.PRE_STOP and self.state is State.PRE_STOP:
            if self.goal is Goal.START and ProcessKind.MAIN not in self.pids:
                self.goal = Goal.STOP
            self._change_state(next_state(self.state, self.goal))
        elif kind is ProcessKind.POST_STOP and self.state is State.POST_STOP:
            if not ok and self.failure is None:
                self._fail(Failure("post-stop", status, signum))
                self.goal = Goal.STOP
            following = self._after_post_stop()
            if following is not None:
                self._change_state(following)

    def _hook_failed(
        self, kind: ProcessKind, status: int | None, signum: int | None, reason: str = ""
    ) -> State | None:
        """A hook could not run or failed while its state was being entered."""
        if kind is ProcessKind.POST_STOP:
            if self.failure is None:
                self._fail(Failure(kind.value, status, signum, reason))
            self.goal = Goal.STOP
            return next_state(State.POST_STOP, self.goal)
        if kind is ProcessKind.PRE_STOP:
            return next_state(self.state, self.goal)
        self._fail(Failure(kind.value, status, signum, reason))
        self.goal = Goal.STOP
        return State.STOPPING

    def _hook_failed_now(self, kind: ProcessKind, status: int | None, signum: int | None) -> None:
        following = self._hook_failed(kind, status, signum)
        if following is not None:
            self._change_state(following)

    def _fail(self, failure: Failure) -> None:
        if self.failure is None:
            self.failure = failure
            self.host.changed(self)

    # ---------------------------------------------------------------- waiters
    def _check_rest(self) -> None:
        """Release the waiters whose wish came true (or can no longer come true)."""
        if not self._waiters:
            return
        at_rest_started = (
            self.state is State.RUNNING and self.goal is Goal.START and not self.jobclass.task
        )
        at_rest_stopped = self.state is State.WAITING
        if not (at_rest_started or at_rest_stopped):
            return
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if w.want is Goal.STOP:
                if at_rest_stopped:
                    w.callback(None, "stopped")
                else:  # running again: the stop was cancelled by a start, never hang on it
                    w.callback(Failure("stop", reason="the job was started again"), "cancelled")
            elif at_rest_started:
                w.callback(None, "running")
            elif self.failure is not None:
                w.callback(self.failure, "failed")
            elif self.jobclass.task and self.ready_reached:
                w.callback(None, "finished")
            elif self.served:
                w.callback(None, "served")
            else:
                w.callback(Failure("main", reason="stopped before it was running"), "stopped")

    # ------------------------------------------------------------------ timers
    def _set_timer(self, delay: float, callback: Callable[[], None]) -> None:
        self._cancel_timer()
        self._timer = self.host.call_later(delay, callback)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
