"""Spawn cost: busmgr.process.spawn against subprocess.Popen and raw os.posix_spawn."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Callable
from typing import Any

import benchlib

from busmgr.jobclass import ExecContext
from busmgr.process import Reaper, cgroup2_mount, cgroup_create, cgroup_remove, clonespawn, spawn

DESCRIPTION = """
How long the manager's loop is blocked to start one process, `/bin/true` with the manager's
own environment, measured in the benchmark's own small process (a larger parent makes `fork`
slower, not `posix_spawn`). Each sample times the call alone; the child is reaped outside the
timed region. All methods are interleaved sample by sample.

* *baseline `subprocess.Popen`*: what a plain Python supervisor would do (Python 3.11 uses
  `vfork` and closes descriptors in C).
* *raw `os.posix_spawn`*: the floor; no file actions, nothing to close.
* *busmgr fast path*: `spawn(["/bin/true"], env, ExecContext())`, which takes `posix_spawn` with
  `/dev/null` on stdio, `setsid` and default signal dispositions.
* *busmgr, child-side setting*: an `ExecContext` that needs setup in the child (`umask 022`, or
  `nice 0`), as most real services have (`setuid`, limits, ...). busmgr's clone spawn (a small C
  library, `busmgr/process/_clonespawn.c`) makes the child with `clone3(CLONE_VM|CLONE_VFORK)`,
  as `posix_spawn` does, applies the settings in C and execs; it returns once the child has
  exec'd. *Python fork path* is what busmgr does where that library was not built: `fork`, the
  settings in Python in the child, failures reported through a pipe.
* *raw `os.fork` + `execve`*: the floor of any fork-based path in a Python process: the child
  execs at once, the parent waits for EOF on a close-on-exec pipe as the fork path does.
* *`Popen(preexec_fn=...)`*: the naive way to do child setup in Python, for comparison.

The second table repeats the main methods after the benchmark process has touched 200 MB more
memory, as a manager that has grown would have: `fork` copies the page tables of all of it,
`posix_spawn` (`vfork`) copies nothing. The vfork-based and fork-based methods are interleaved
separately there, because each fork leaves work (copy-on-write, the child's teardown of its
copy) that would otherwise be charged to the next sample.

*Into a job's cgroup, after a quiet spell*: every job process is born in its cgroup leaf. The
first cgroup migration after a quiet spell waits for the kernel's cgroup threadgroup lock, an
RCU grace period (milliseconds): busmgr's Python path moved the manager itself into the leaf
around `posix_spawn`, and paid it on every cold activation; the clone spawn creates the child in
the leaf (`CLONE_INTO_CGROUP`), which takes no such lock. Each sample follows 0.3 s of quiet
(the condition measured: a lone activation), in a fresh leaf; needs root and a writable cgroup2
hierarchy. The floor is a plain `posix_spawn` after the same quiet: a process that wakes from
idle to spawn pays for it (waking the other CPU, cold caches), in the stock dbus-daemon too.
Other work on the machine that migrates processes holds the kernel's cgroup mutex, which both
methods then wait for.

The round trip starts a process and waits for its exit to be reported: busmgr's `spawn` plus its
`Reaper` (SIGCHLD through the asyncio loop, `waitpid(-1)`, callback) against `os.posix_spawn`
followed by a blocking `waitpid(pid)`, the least a supervisor can do. It runs last, since the
Reaper makes the process a child subreaper and takes over SIGCHLD.
"""

TRUE = "/bin/true"
BALLAST_MB = 200


def _popen(env: dict[str, str]) -> int:
    p = subprocess.Popen([TRUE], env=env)
    # Popen keeps its own record of the child; let it reap, outside the timed region.
    _POPENS.append(p)
    return 0


_POPENS: list[subprocess.Popen[bytes]] = []


def _reap(pid: int) -> None:
    if pid:
        os.waitpid(pid, 0)
    while _POPENS:
        _POPENS.pop().wait()


def _fork_exec(env: dict[str, str]) -> int:
    """The floor of any fork-based path: fork, exec at once, confirm by EOF on a CLOEXEC pipe."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        try:
            os.execve(TRUE, [TRUE], env)
        finally:
            os._exit(127)
    os.close(w)
    while os.read(r, 4096):
        pass
    os.close(r)
    return pid


def _python_path(fn: Callable[[], int]) -> int:
    """``fn()`` with the clone spawn library out of the way: busmgr's Python paths."""
    clonespawn.enabled = False
    try:
        return fn()
    finally:
        clonespawn.enabled = True


POPEN = "baseline: subprocess.Popen"
FAST = "busmgr spawn, fast path (ExecContext())"
SLOW = "busmgr spawn, child-side setting (umask 022)"
SLOW_FORK = "busmgr spawn, child-side setting (umask 022), Python fork path"
RAW_FORK = "raw os.fork + execve, exec confirmed by pipe"


def spawn_methods(env: dict[str, str]) -> dict[str, Callable[[], int]]:
    umask = ExecContext(umask=0o022)
    return {
        POPEN: lambda: _popen(env),
        "raw os.posix_spawn": lambda: os.posix_spawn(TRUE, [TRUE], env),
        FAST: lambda: spawn([TRUE], env, ExecContext()),
        SLOW: lambda: spawn([TRUE], env, umask),
        "busmgr spawn, child-side setting (nice 0)": lambda: spawn(
            [TRUE], env, ExecContext(nice=0)
        ),
        SLOW_FORK: lambda: _python_path(lambda: spawn([TRUE], env, umask)),
        RAW_FORK: lambda: _fork_exec(env),
        "subprocess.Popen(preexec_fn=umask)": lambda: _popen_preexec(env),
    }


def measure(methods: dict[str, Callable[[], int]], rounds: int) -> dict[str, list[int]]:
    """``rounds`` samples of each method, interleaved; children reaped outside the timing."""
    samples: dict[str, list[int]] = {k: [] for k in methods}
    for _ in range(5):  # warm up caches and the page tables of every path
        for fn in methods.values():
            _reap(fn())
    for _ in range(rounds):
        for name, fn in methods.items():
            t0 = time.perf_counter_ns()
            pid = fn()
            samples[name].append(time.perf_counter_ns() - t0)
            _reap(pid)
    return samples


def spawn_costs(quick: bool) -> tuple[list[list[Any]], dict[str, Any]]:
    samples = measure(spawn_methods(dict(os.environ)), 40 if quick else 300)
    base = benchlib.summary(samples[POPEN])
    raw = benchlib.summary(samples["raw os.posix_spawn"])
    rows = []
    data = {}
    for name, ns in samples.items():
        s = benchlib.summary(ns)
        data[name] = s
        rows.append(
            [
                name,
                s["median"],
                s["p95"],
                benchlib.ratio(s["median"], base["median"]),
                benchlib.ratio(s["median"], raw["median"]),
            ]
        )
    return rows, data


def big_parent(quick: bool) -> tuple[list[list[Any]], dict[str, Any]]:
    """The same with BALLAST_MB of touched memory in the parent: a manager that has grown."""
    ballast = bytearray(BALLAST_MB << 20)
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    env = dict(os.environ)
    every = spawn_methods(env)
    # Two interleaved sets: each fork leaves the parent's 200 MB copy-on-write and the exiting
    # children tear down their copy of the page tables on the other core, which would be
    # charged to whichever vfork-based sample came next.
    rounds = 20 if quick else 100
    samples = measure({k: every[k] for k in (POPEN, FAST, SLOW)}, rounds)
    samples.update(measure({k: every[k] for k in (SLOW_FORK, RAW_FORK)}, rounds))
    del ballast
    base = benchlib.summary(samples[POPEN])
    rows = []
    data = {}
    for name, ns in samples.items():
        s = benchlib.summary(ns)
        data[name] = s
        rows.append([name, s["median"], s["p95"], benchlib.ratio(s["median"], base["median"])])
    return rows, data


def cold_cgroup_spawns(quick: bool) -> tuple[list[list[Any]], dict[str, Any], str]:
    """Spawns into a fresh leaf after a quiet spell: the clone spawn against the manager
    moving itself (the Python path). Rows, data, and why there are none (if so)."""
    found = cgroup2_mount()
    if found is None or not os.access(found[0] + found[1].rstrip("/"), os.W_OK):
        return [], {}, "no writable cgroup2 hierarchy here (needs root): not measured"
    base = found[0] + found[1].rstrip("/") + f"/busmgr-bench-{os.getpid()}"
    cgroup_create(base)
    env = dict(os.environ)
    methods = {
        "busmgr spawn into the leaf: clone3 (CLONE_INTO_CGROUP)": "clone",
        "busmgr spawn into the leaf: the manager migrates around posix_spawn (Python path)": (
            "python"
        ),
        "floor: raw os.posix_spawn, no cgroup": "floor",
    }
    samples: dict[str, list[int]] = {name: [] for name in methods}
    try:
        for i in range(5 if quick else 20):
            for name, how in methods.items():
                leaf = f"{base}/l{i}{how}"
                cgroup_create(leaf)
                time.sleep(0.3)  # the quiet spell is what is measured, not a wait
                t0 = time.perf_counter_ns()
                if how == "python":
                    pid = _python_path(
                        lambda leaf=leaf: spawn([TRUE], env, ExecContext(), cgroup=leaf)
                    )
                elif how == "clone":
                    pid = spawn([TRUE], env, ExecContext(), cgroup=leaf)
                else:
                    pid = os.posix_spawn(TRUE, [TRUE], env)
                samples[name].append(time.perf_counter_ns() - t0)
                os.waitpid(pid, 0)
                cgroup_remove(leaf)
    finally:
        for entry in os.scandir(base):
            if entry.is_dir(follow_symlinks=False):
                cgroup_remove(entry.path)
        cgroup_remove(base)
    rows, data = [], {}
    first = benchlib.summary(next(iter(samples.values())))
    for name, ns in samples.items():
        s = benchlib.summary(ns)
        data[name] = s
        rows.append([name, s["median"], s["p95"], benchlib.ratio(s["median"], first["median"])])
    return rows, data, ""


def _popen_preexec(env: dict[str, str]) -> int:
    p = subprocess.Popen([TRUE], env=env, preexec_fn=lambda: os.umask(0o022))
    _POPENS.append(p)
    return 0


async def round_trips(quick: bool) -> tuple[list[list[Any]], dict[str, Any]]:
    loop = asyncio.get_running_loop()
    reaper = Reaper(loop)
    reaper.start()
    env = dict(os.environ)
    base_ns: list[int] = []
    fast_ns: list[int] = []
    slow_ns: list[int] = []

    def baseline() -> None:
        # Synchronous: the loop does not run in between, so the Reaper cannot take this child.
        t0 = time.perf_counter_ns()
        pid = os.posix_spawn(TRUE, [TRUE], env)
        os.waitpid(pid, 0)
        base_ns.append(time.perf_counter_ns() - t0)

    async def through_reaper(ctx: ExecContext, out: list[int]) -> None:
        t0 = time.perf_counter_ns()
        pid = spawn([TRUE], env, ctx)
        done: asyncio.Future[None] = loop.create_future()
        reaper.watch(pid, lambda _pid, _info: done.set_result(None))
        await asyncio.wait_for(done, benchlib.TIMEOUT)
        out.append(time.perf_counter_ns() - t0)

    try:
        rounds = 30 if quick else 300
        for i in range(rounds + 5):
            baseline()
            await through_reaper(ExecContext(), fast_ns)
            await through_reaper(ExecContext(umask=0o022), slow_ns)
            if i < 5:  # warm-up rounds are not counted
                base_ns.clear()
                fast_ns.clear()
                slow_ns.clear()
    finally:
        reaper.stop()
    base = benchlib.summary(base_ns)
    rows = []
    data = {}
    for name, ns in [
        ("baseline: os.posix_spawn + blocking waitpid(pid)", base_ns),
        ("busmgr spawn (fast) + Reaper via SIGCHLD in the loop", fast_ns),
        ("busmgr spawn (child-side setting, umask) + Reaper", slow_ns),
    ]:
        s = benchlib.summary(ns)
        data[name] = s
        rows.append([name, s["median"], s["p95"], benchlib.ratio(s["median"], base["median"])])
    return rows, data


def run(quick: bool) -> dict[str, Any]:
    if not clonespawn.available():
        raise SystemExit("the clone spawn library is not built (pip install -e ., needs gcc)")
    rows, data = spawn_costs(quick)
    big_rows, big_data = big_parent(quick)
    cg_rows, cg_data, cg_missing = cold_cgroup_spawns(quick)
    rt_rows, rt_data = asyncio.run(round_trips(quick))
    fast, slow = data[FAST]["median"], data[SLOW]["median"]
    slow_fork, fork = data[SLOW_FORK]["median"], data[RAW_FORK]["median"]
    popen = data[POPEN]["median"]
    big_fast, big_slow = big_data[FAST]["median"], big_data[SLOW]["median"]
    big_fork = big_data[SLOW_FORK]["median"]
    notes = [
        f"The fast path costs {fast / popen:.2f}x a plain `Popen`, a job with a child-side"
        f" setting {slow / popen:.2f}x (the clone spawn: {slow - fast:,.0f} us more than the"
        f" fast path). Without the clone library it would pay {slow_fork / popen:.1f}x: the"
        f" bare `fork` + `exec` of this Python process is {fork:,.0f} us, and the child runs"
        " Python before `exec`.",
        f"With {BALLAST_MB} MB more in the parent the fast path takes {big_fast:,.0f} us and"
        f" the clone spawn {big_slow:,.0f} us, while the Python fork path grows to"
        f" {big_fork:,.0f} us: `fork` copies page tables, `clone(CLONE_VM)` does not.",
    ]
    tables = [
        benchlib.table(
            "Spawn call, /bin/true (microseconds the caller is blocked)",
            ["method", "median us", "p95 us", "x Popen", "x posix_spawn"],
            rows,
        ),
        benchlib.table(
            f"Spawn call with {BALLAST_MB} MB more resident in the parent",
            ["method", "median us", "p95 us", "x Popen"],
            big_rows,
        ),
    ]
    headline = [
        benchlib.headline("spawn, fast path (median)", fast, popen, "us", "Popen"),
        benchlib.headline(
            "spawn, child-side setting (median; target <= 2x)", slow, popen, "us", "Popen"
        ),
    ]
    if cg_rows:
        tables.append(
            benchlib.table(
                "Spawn into a fresh cgroup leaf after 0.3 s of quiet (microseconds)",
                ["method", "median us", "p95 us", "x clone3"],
                cg_rows,
            )
        )
        names = list(cg_data)
        headline.append(
            benchlib.headline(
                "spawn into a job's cgroup after a quiet spell (median)",
                cg_data[names[0]]["median"],
                cg_data[names[1]]["median"],
                "us",
                "the manager migrating",
            )
        )
    else:
        notes.append(f"Spawn into a cgroup: {cg_missing}.")
    tables.append(
        benchlib.table(
            "Spawn + reap round trip, /bin/true (microseconds until the exit is known)",
            ["method", "median us", "p95 us", "x baseline"],
            rt_rows,
        )
    )
    headline.append(
        benchlib.headline(
            "spawn + reap through the Reaper (median)",
            rt_data["busmgr spawn (fast) + Reaper via SIGCHLD in the loop"]["median"],
            rt_data["baseline: os.posix_spawn + blocking waitpid(pid)"]["median"],
            "us",
            "posix_spawn + waitpid",
        )
    )
    return benchlib.result(
        "spawn",
        tables,
        notes=notes,
        headline=headline,
        data={"spawn": data, "big_parent": big_data, "cgroup": cg_data, "round_trip": rt_data},
    )


if __name__ == "__main__":
    benchlib.main(run, DESCRIPTION)
