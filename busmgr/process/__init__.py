"""The system-call seam: the only package that forks, execs, signals and reaps.

Everything above it (the job state machine, the supervisor, the bus layer) deals in pids and
:class:`ExitInfo` values and is tested without a single process; everything here is tested with
real ones. One module per concern:

* :mod:`~busmgr.process.spawning`: ``spawn()``, the choice of path, the fast ``posix_spawn``
  path, ``proc name``; beside it :mod:`~busmgr.process.clonepath` (the clone path over the C
  library of :mod:`~busmgr.process.clonespawn`), :mod:`~busmgr.process.forkpath` (the slow
  fork path and its child's setup), :mod:`~busmgr.process.credentials` (users, groups,
  capabilities, limits looked up) and :mod:`~busmgr.process.spawnbase` (what the paths share:
  :class:`SpawnError`, :class:`Listen`);
* :mod:`~busmgr.process.reaping`: the :class:`Reaper`, the one caller of ``waitpid``;
* :mod:`~busmgr.process.cgroups`: the cgroup v2 files;
* :mod:`~busmgr.process.forks`: the kernel's process events connector (following forks);
* :mod:`~busmgr.process.procfs`: ``/proc`` look-ups and ``kill``;
* :mod:`~busmgr.process.handover`: descriptors kept across the manager's own exec.
"""

from busmgr.process.cgroups import (
    CgroupError,
    cgroup2_mount,
    cgroup_create,
    cgroup_kill,
    cgroup_of,
    cgroup_pids,
    cgroup_populated,
    cgroup_remove,
)
from busmgr.process.forks import ForkEvents
from busmgr.process.handover import identity, pass_on, same_file
from busmgr.process.procfs import (
    boot_ticks,
    child_pids,
    kill_pid,
    kill_process_group,
    parent_pid,
    proc_age,
    proc_start_time,
    proc_state,
    session_processes,
)
from busmgr.process.reaping import ExitCallback, ExitInfo, Reaper
from busmgr.process.spawnbase import Listen, SpawnError, StrandedError
from busmgr.process.spawning import set_cloexec_on_inherited_fds, spawn

__all__ = [
    "CgroupError",
    "ExitCallback",
    "ExitInfo",
    "ForkEvents",
    "Listen",
    "Reaper",
    "SpawnError",
    "StrandedError",
    "boot_ticks",
    "cgroup2_mount",
    "cgroup_create",
    "cgroup_kill",
    "cgroup_of",
    "cgroup_pids",
    "cgroup_populated",
    "cgroup_remove",
    "child_pids",
    "identity",
    "kill_pid",
    "kill_process_group",
    "parent_pid",
    "pass_on",
    "proc_age",
    "proc_start_time",
    "proc_state",
    "same_file",
    "session_processes",
    "set_cloexec_on_inherited_fds",
    "spawn",
]
