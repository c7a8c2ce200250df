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
from busmgr.process import Reaper, spawn

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
* *busmgr slow path*: an `ExecContext` that needs setup in the child (`umask 022`, or `nice 0`),
  so `spawn` forks and runs Python in the child before `exec`, reporting failures through a
  pipe; it returns once the child has exec'd.
* *raw `os.fork` + `execve`*: the floor of any fork-based path in a Python process: the child
  execs at once, the parent waits for EOF on a close-on-exec pipe as the slow path does.
* *`Popen(preexec_fn=...)`*: the naive way to do child setup in Python, for comparison with the
  slow path.

The second table repeats the main methods after the benchmark process has touched 200 MB more
memory, as a manager that has grown would have: `fork` copies the page tables of all of it,
`posix_spawn` (`vfork`) copies nothing. The vfork-based and fork-based methods are interleaved
separately there, because each fork leaves work (copy-on-write, the child's teardown of its
copy) that would otherwise be charged to the next sample.

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


def spawn_methods(env: dict[str, str]) -> dict[str, Callable[[], int]]:
    return {
        "baseline: subprocess.Popen": lambda: _popen(env),
        "raw os.posix_spawn": lambda: os.posix_spawn(TRUE, [TRUE], env),
        "busmgr spawn, fast path (ExecContext())": lambda: spawn([TRUE], env, ExecContext()),
        "busmgr spawn, slow path (umask 022)": lambda: spawn([TRUE], env, ExecContext(umask=0o022)),
        "busmgr spawn, slow path (nice 0)": lambda: spawn([TRUE], env, ExecContext(nice=0)),
        "raw os.fork + execve, exec confirmed by pipe": lambda: _fork_exec(env),
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
    base = benchlib.summary(samples["baseline: subprocess.Popen"])
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
    keep = [
        "baseline: subprocess.Popen",
        "busmgr spawn, fast path (ExecContext())",
        "busmgr spawn, slow path (umask 022)",
        "raw os.fork + execve, exec confirmed by pipe",
    ]
    # Two interleaved sets: each fork leaves the parent's 200 MB copy-on-write and the exiting
    # children tear down their copy of the page tables on the other core, which would be
    # charged to whichever vfork-based sample came next.
    rounds = 20 if quick else 100
    samples = measure({k: every[k] for k in keep[:2]}, rounds)
    samples.update(measure({k: every[k] for k in keep[2:]}, rounds))
    del ballast
    base = benchlib.summary(samples["baseline: subprocess.Popen"])
    rows = []
    data = {}
    for name, ns in samples.items():
        s = benchlib.summary(ns)
        data[name] = s
        rows.append([name, s["median"], s["p95"], benchlib.ratio(s["median"], base["median"])])
    return rows, data


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
        ("busmgr spawn (slow, umask) + Reaper", slow_ns),
    ]:
        s = benchlib.summary(ns)
        data[name] = s
        rows.append([name, s["median"], s["p95"], benchlib.ratio(s["median"], base["median"])])
    return rows, data


def run(quick: bool) -> dict[str, Any]:
    rows, data = spawn_costs(quick)
    big_rows, big_data = big_parent(quick)
    rt_rows, rt_data = asyncio.run(round_trips(quick))
    fast = data["busmgr spawn, fast path (ExecContext())"]["median"]
    slow = data["busmgr spawn, slow path (umask 022)"]["median"]
    fork = data["raw os.fork + execve, exec confirmed by pipe"]["median"]
    popen = data["baseline: subprocess.Popen"]["median"]
    big_fast = big_data["busmgr spawn, fast path (ExecContext())"]["median"]
    big_slow = big_data["busmgr spawn, slow path (umask 022)"]["median"]
    notes = [
        f"The fast path costs {fast / popen:.2f}x a plain `Popen`. A job with a child-side"
        f" setting pays {slow / fast:.1f}x the fast path ({slow - fast:,.0f} us more per spawn),"
        f" of which the bare `fork` + `exec` of this Python process accounts for"
        f" {fork:,.0f} us; the rest ({slow - fork:,.0f} us) is the child's setup in Python.",
        f"With {BALLAST_MB} MB more in the parent the fast path stays at {big_fast:,.0f} us"
        f" while the slow path grows to {big_slow:,.0f} us: `fork` copies page tables,"
        " `posix_spawn` (`vfork`) does not.",
    ]
    return benchlib.result(
        "spawn",
        [
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
            benchlib.table(
                "Spawn + reap round trip, /bin/true (microseconds until the exit is known)",
                ["method", "median us", "p95 us", "x baseline"],
                rt_rows,
            ),
        ],
        notes=notes,
        headline=[
            benchlib.headline("spawn, fast path (median)", fast, popen, "us", "Popen"),
            benchlib.headline("spawn, child-side setting (median)", slow, popen, "us", "Popen"),
            benchlib.headline(
                "spawn + reap through the Reaper (median)",
                rt_data["busmgr spawn (fast) + Reaper via SIGCHLD in the loop"]["median"],
                rt_data["baseline: os.posix_spawn + blocking waitpid(pid)"]["median"],
                "us",
                "posix_spawn + waitpid",
            ),
        ],
        data={"spawn": data, "big_parent": big_data, "round_trip": rt_data},
    )


if __name__ == "__main__":
    benchlib.main(run, DESCRIPTION)
