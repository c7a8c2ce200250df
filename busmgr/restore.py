"""Taking the jobs back: from the manager's state to a snapshot, and from a snapshot to jobs.

:func:`take_snapshot` records every job instance that is not simply at rest (with the pids and
start times of its processes), the start order and the activation environment.
:func:`restore` runs in a new manager image (after ``Reexec``) or a new manager (after a
crash), once the job classes are loaded, and brings each recorded instance back:

* a job whose processes are alive (same pid, same start time) is taken back as it was:
  running, or waiting in ``spawned`` for its bus name (the wait goes on, with what is left of
  its ready timeout); nothing is started twice;
* a running job whose main process died meanwhile counts as failed: respawn applies;
* a job caught between states by a crash (a hook running, a stop under way) has what is left of
  it stopped, and is started afresh if it was heading for start;
* the processes of a job whose file is gone are stopped.

Finally the cgroup leaves of jobs nobody took back are emptied and removed
(:meth:`busmgr.supervisor.Supervisor.clear_stale`). Restoring never emits ``startup`` again:
the jobs it started already ran.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterable
from dataclasses import replace

from busmgr import process
from busmgr.environment import Environment
from busmgr.errors import ManagerError
from busmgr.job import Goal, Job, JobStateError, Restored, State
from busmgr.jobclass import ExpectMode, ProcessKind
from busmgr.registry import Registry
from busmgr.snapshot import Saved, SavedJob, SavedProcess
from busmgr.supervisor import Supervisor

log = logging.getLogger("busmgr")

__all__ = ["restorable", "restore", "take_snapshot"]


def restorable(job: Job) -> bool:
    """Whether ``job`` can be saved and taken back exactly as it is: at rest, or waiting in
    ``spawned`` for its bus name (what ``Reexec`` waits for)."""
    if job.state is State.WAITING:
        return job.goal is Goal.STOP
    if job.state is State.RUNNING:
        return job.goal is not Goal.STOP
    return (
        job.state is State.SPAWNED and job.goal is not Goal.STOP and job.pending_ready <= {"dbus"}
    )


def _trivial(job: Job) -> bool:
    """A job at rest with nothing to remember (no failure, no respawns counted)."""
    return (
        job.state is State.WAITING
        and job.goal is Goal.STOP
        and job.failure is None
        and not job.respawns
        and not job.start_count
    )


def take_snapshot(
    registry: Registry, supervisor: Supervisor, environment: Environment
) -> tuple[tuple[SavedJob, ...], tuple[tuple[str, str], ...]]:
    """The jobs worth saving, and the start order."""
    jobs = []
    for job in registry.jobs():
        if _trivial(job):
            continue
        window = job.counters()
        restored = Restored(
            goal=job.goal,
            state=job.state,
            env=dict(job.env),
            pids=dict(job.pids),
            failure=job.failure,
            last_exit=job.last_exit,
            ready_reached=job.ready_reached,
            pending_ready=frozenset(job.pending_ready),
            ready_deadline=job.ready_deadline,
            respawns=job.respawns,
            respawn_window=window,
            status_text=job.status_text,
            start_count=job.start_count,
        )
        processes = {
            kind: SavedProcess(pid, started)
            for kind, (pid, started) in supervisor.saved_processes(job).items()
        }
        jobs.append(SavedJob(job.name, job.instance, restored, processes))
    order = tuple((j.name, j.instance) for j in registry.start_order)
    return tuple(jobs), order


def _kill_left(processes: Iterable[SavedProcess], what: str) -> None:
    """Stop processes a previous manager recorded and nobody takes back (only if each is still
    the recorded process: same start time): their process groups, as the manager made each a
    group leader."""
    for saved in processes:
        if saved.started and process.proc_start_time(saved.pid) == saved.started:
            log.warning("%s: stopping process %d left by the previous manager", what, saved.pid)
            if not process.kill_process_group(saved.pid, signal.SIGKILL):
                process.kill_pid(saved.pid, signal.SIGKILL)


def restore(
    saved: Saved, registry: Registry, supervisor: Supervisor, environment: Environment
) -> list[Job]:
    """Bring back what ``saved`` records; returns the jobs that were started afresh. Never
    raises for a record it cannot use: that job's leftovers are stopped, with a log line."""
    same_image = saved.manager_pid == os.getpid()
    environment.activation.update(saved.activation_env)
    fresh: list[Job] = []
    for record in saved.jobs:
        cls = registry.get_class(record.job)
        label = f"{record.job} ({record.instance})" if record.instance else record.job
        if cls is None:
            _kill_left(record.processes.values(), f"{label} (its job file is gone)")
            continue
        if bool(cls.instance) != bool(record.instance):
            _kill_left(record.processes.values(), f"{label} (its job file changed)")
            continue
        job, _new = registry.get_or_create(cls, record.instance, dict(record.restored.env))
        live = supervisor.adopt_saved(
            job, {kind: (p.pid, p.started) for kind, p in record.processes.items()}
        )
        r = record.restored
        main_alive = ProcessKind.MAIN in live or cls.main is None
        exact = (
            r.state is State.WAITING
            or (r.state is State.RUNNING and main_alive and set(live) <= {ProcessKind.MAIN})
            or (
                r.state is State.SPAWNED
                and main_alive
                and r.pending_ready <= {"dbus"}
                and cls.expect is ExpectMode.NONE
            )
        )
        if exact:
            try:
                job.restore(replace(r, pids=live))
            except JobStateError as err:  # a record no manager would have written
                log.warning("%s: not restored: %s", label, err)
            else:
                registry.reset_stop_on(job)
                continue
        if r.state is State.RUNNING and r.goal is not Goal.STOP:
            # Main died while nobody watched: the job failed while running (respawn applies).
            dead = r.pids.get(ProcessKind.MAIN, 0)
            job.restore(replace(r, pids={**live, ProcessKind.MAIN: dead}))
            registry.reset_stop_on(job)
            log.warning("%s: its main process %d ended while the manager was away", label, dead)
            job.process_exited(dead, None, None)
            continue
        # Caught between states: stop what is left; start afresh if it was heading for start.
        log.warning(
            "%s: was %s/%s when the manager went away; starting over",
            label,
            r.goal.value,
            r.state.value,
        )
        supervisor.kill(job, signal.SIGKILL)
        job.pids.clear()
        if r.goal is not Goal.STOP:
            try:
                job.start()
                fresh.append(job)
            except ManagerError as err:
                log.warning("%s: %s", label, err.message)
    registry.start_order = {
        j: None
        for name, inst in saved.start_order
        if (j := registry.instance(name, inst)) is not None and j.state is not State.WAITING
    }
    supervisor.clear_stale()
    log.info(
        "took back %d jobs from the %s",
        sum(1 for j in registry.jobs() if j.pids),
        "previous image (re-exec)" if same_image else "previous manager",
    )
    return fresh
