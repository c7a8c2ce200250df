"""Shutdown ordering: every job stopped, the last started first.

:func:`stop_everything` is what the manager does before it exits (not before a re-exec, which
keeps the jobs). It marks :class:`~busmgr.control.Control` as shutting down first, so no event
starts a job any more, then stops every job to ``waiting`` in reverse start order (then the
jobs not in the start order), and finally any job a ``stopping`` or ``stopped`` event started
meanwhile.
Each stop is awaited before the next begins: a job stops while the jobs it was started after
still run.
"""

from __future__ import annotations

from busmgr.control import Control
from busmgr.job import Goal, Job, State
from busmgr.registry import Registry

__all__ = ["stop_everything"]


async def stop_everything(registry: Registry, control: Control) -> bool:
    """Stop every job in reverse start order, each to waiting; True if all went clean (no
    pre-stop or post-stop failed). On return every job is in ``waiting``, unless an event
    started one after its final stop."""
    control.shutting_down = True
    clean = True
    ordered = list(reversed(registry.start_order))
    others = [j for j in registry.jobs() if j not in registry.start_order]
    for job in ordered + others:
        if job.goal is Goal.STOP and job.state is State.WAITING:
            continue
        clean = await _stop_one(control, job) and clean
    # jobs started by stopping events while we stopped the others
    for job in list(registry.jobs()):
        if job.state is not State.WAITING:
            await _stop_one(control, job)
    return clean


async def _stop_one(control: Control, job: Job) -> bool:
    """Stop ``job`` (or wait for the stop under way) until it rests; False if a stop hook
    failed."""
    waiter, fut = control.waiter(Goal.STOP)
    if job.goal is Goal.STOP:
        job.add_waiter(waiter)
    else:
        job.stop(waiter)
    await fut
    return not (job.failure is not None and job.failure.process in ("pre-stop", "post-stop"))
