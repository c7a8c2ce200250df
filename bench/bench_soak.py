"""Soak: 10,000 start/stop cycles, 1,000 respawns and 1,000 activations; nothing may leak."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import benchlib
import psutil
from dbus_fast import Message, MessageType
from dbus_fast.errors import DBusError

from busmgr.process import cgroups
from busmgr.timeline import MAX_RUNS

CYCLES, RESPAWNS, ACTIVATIONS = 10_000, 1_000, 1_000
QUICK = (600, 60, 60)
CYCLE_WORKERS, RESPAWN_WORKERS, ACTIVATION_WORKERS, FILL_WORKERS = 4, 2, 2, 6
FILL = MAX_RUNS + 100  # instances the warm-up starts first: the bounded records are full
WARMUP = 10  # the warm-up is 1/WARMUP of each workload
RSS_LIMIT_MIB = 2.0
MAX_ERRORS = 20  # a workload gives up after this many failed operations
MiB = 1 << 20
INSTANCE = "org.busmgr.Instance1"
TINY = Path(__file__).resolve().parent / "tiny_service.py"
SAY = "/bin/sh -c 'echo {what}; exec sleep 1000'"
KINDS = ("service", "task", "instance", "failed instance")  # the cycles take turns
# What the manager must never log: a traceback, or its one line for a bug.
TROUBLE = re.compile(
    r"^Traceback |busmgr: internal error|Exception in callback|exception was never"
)

DESCRIPTION = f"""
One `busmgr session` (its own private `dbus-daemon`) runs for the whole benchmark, driven by a
dbus-fast client in the benchmark process; every job has `console log` (the default), so each
spawn makes a log pipe that the manager reads. Three workloads run at the same time:

* *start/stop cycles*, by 4 workers, each with its own jobs, taking turns: a service
  (`StartJob(wait=True)`, then `StopJob(wait=True)`), a task (`StartJob(wait=True)` returns
  once it has run), an `instance $N` service started and stopped under a new instance name
  each time, so that the per-instance state (bus object, log pipe, cgroup leaf) is made and
  removed every time, and a start of a new instance of `broken`, whose `pre-start` prints a
  line and exits 3: the caller must get `JobFailed` quoting that line, and the failed instance
  is removed. Each job prints a line before it `exec`s `sleep` or exits.
* *respawns*, by 2 workers: a job with `respawn` and `respawn limit unlimited`, started once;
  then again and again its main process (which the benchmark started through the manager) gets
  `kill -9` and the worker waits for `JobStarted` with a new `MainPID`.
* *activations*, by 2 workers: a job with `dbus org.bench.SoakN` whose process is
  `bench/tiny_service.py` (a D-Bus service on the standard library only, a few ms to start);
  a `Ping` to the unowned name activates it, then `StopJob(wait=True)`, then the worker waits
  for `NameOwnerChanged` to say the name is free before the next call.

A leak is growth that does not stop, so the soak is measured from the manager's steady state.
Four records fill up and then keep their size: the start-up timeline (`busmgr plot`) keeps
the first run of at most {MAX_RUNS:,} instances (`busmgr.timeline.MAX_RUNS`); busmgr remembers
the escaped form of the last 4,096 names that need escaping (`busmgr.escape`: `ListJobs`
escapes every name on every call; about 1 MiB when full); dbus-fast caches
the last 1,024 object paths it validated; and CPython's `pathlib` interns every path component
it parses, so a few thousand new instance log names make the interpreter's table of interned
strings double once (~1 MiB; the names themselves are freed, and the table keeps its size).
The warm-up therefore first runs {FILL:,} instances of an `instance $N` task (`fill`:
`exec /bin/true`, with its log pipe), then a tenth of each workload.

The manager is measured fresh (after start-up), at the start (after the warm-up) and at the
end, every job stopped each time: its open descriptors (`/proc/PID/fd`), RSS and USS (psutil),
its zombie children, the processes it still has besides its bus daemon, the instances it lists
(`ListJobs`), its match rules on the bus (`org.freedesktop.DBus.Debug.Stats`), and the cgroup
leaves left under its cgroup directory (when jobs run in cgroups: the directory is the parent
of a job process's cgroup). *fresh -> start* is what the warm-up filled; the targets apply to
*start -> end*: descriptors, instances, match rules and leaves unchanged (a job that provides
a bus name keeps its empty leaf between activations, for the next one: one per such job,
removed at exit), no zombie, no other process, RSS growth under {RSS_LIMIT_MIB:g} MiB. Every
failed call and every missed target is a finding.
"""


def bus_name(w: int) -> str:
    return f"org.bench.Soak{w}"


def jobs() -> dict[str, str]:
    out: dict[str, str] = {"fill": "task\ninstance $N\nexec /bin/true\n"}
    for w in range(CYCLE_WORKERS):
        out[f"svc{w}"] = f"exec {SAY.format(what='up')}\n"
        out[f"task{w}"] = "task\nexec /bin/sh -c 'echo ran'\n"
    out["inst"] = f"instance $N\nexec {SAY.format(what='instance up')}\n"
    out["broken"] = (
        "instance $N\npre-start exec /bin/sh -c 'echo \"cannot start $N\" >&2; exit 3'\n"
        "exec sleep 1000\n"
    )
    for w in range(RESPAWN_WORKERS):
        out[f"phoenix{w}"] = f"respawn\nrespawn limit unlimited\nexec {SAY.format(what='again')}\n"
    for w in range(ACTIVATION_WORKERS):
        out[f"act{w}"] = f"dbus {bus_name(w)}\nexec {benchlib.PYTHON} -I -S {TINY} {bus_name(w)}\n"
    return out


class Started:
    """Waits for ``JobStarted`` of one job (the signals the client subscribed to)."""

    def __init__(self) -> None:
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}

    def on_message(self, msg: Message) -> None:
        if msg.message_type is MessageType.SIGNAL and msg.member == "JobStarted":
            for fut in self._waiters.pop(msg.body[0], []):
                if not fut.done():
                    fut.set_result(None)

    def arm(self, job: str) -> asyncio.Future[None]:
        fut = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(job, []).append(fut)
        return fut


class Workload:
    """One kind of operation: how many were done, how long each took, what failed."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.done = 0
        self.ns: list[int] = []
        self.errors: list[str] = []
        self.seconds = 0.0

    def failed(self, what: str, e: BaseException) -> None:
        text = f"{e.type}: {e.text}" if isinstance(e, DBusError) else f"{type(e).__name__} {e}"
        self.errors.append(f"{what}: {text}")

    @property
    def gave_up(self) -> bool:
        return len(self.errors) >= MAX_ERRORS


class Soak:
    """The three workloads against one session."""

    def __init__(self, s: benchlib.Session) -> None:
        assert s.bus is not None
        self.s = s
        self.bus = s.bus
        self.started = Started()
        self.watch = benchlib.NameWatch(s.bus)
        self.names = itertools.count()  # instance names, never reused
        self.cgroup_dir: str | None = None

    async def subscribe(self) -> None:
        self.bus.add_message_handler(self.started.on_message)
        rule = f"type='signal',interface='{benchlib.MANAGER}',member='JobStarted'"
        dbus = benchlib.DBUS
        await benchlib.call(
            self.bus, benchlib.method(dbus, benchlib.DBUS_PATH, dbus, "AddMatch", "s", [rule])
        )
        await self.watch.subscribe()

    async def main_pid(self, path: str) -> int:
        props = "org.freedesktop.DBus.Properties"
        msg = benchlib.method(benchlib.MANAGER, path, props, "Get", "ss", [INSTANCE, "MainPID"])
        return int((await benchlib.call(self.bus, msg))[0].value)

    # ---------------------------------------------------------------- workloads
    async def cycles(self, w: int, n: int, load: Workload) -> None:
        for k in range(n):
            if load.gave_up:
                return
            kind = KINDS[k % len(KINDS)]
            try:
                t0 = time.perf_counter_ns()
                if kind == "service":
                    await self.s.start(f"svc{w}")
                    await self.s.stop(f"svc{w}")
                elif kind == "task":
                    await self.s.start(f"task{w}")
                elif kind == "instance":
                    env = {"N": f"w{w}-{next(self.names)}"}
                    await self.s.call("StartJob", "sa{ss}b", ["inst", env, True])
                    await self.s.call("StopJob", "sa{ss}b", ["inst", env, True])
                else:
                    await self.failed_start(f"w{w}-{next(self.names)}")
                load.ns.append(time.perf_counter_ns() - t0)
                load.done += 1
            except (DBusError, TimeoutError, RuntimeError) as e:
                load.failed(f"cycle {k} of worker {w} ({kind})", e)

    async def failed_start(self, name: str) -> None:
        """Start an instance of ``broken``, whose pre-start fails: the caller must get
        ``JobFailed`` quoting its output."""
        try:
            await self.s.call("StartJob", "sa{ss}b", ["broken", {"N": name}, True])
        except DBusError as e:
            if e.type == "org.busmgr.Error.JobFailed" and f"cannot start {name}" in e.text:
                return
            raise
        raise RuntimeError(f"the start of broken ({name}) succeeded")

    async def respawns(self, w: int, n: int, load: Workload) -> None:
        job = f"phoenix{w}"
        try:
            (path,) = await self.s.start(job)
            pid = await self.main_pid(path)
            if self.cgroup_dir is None:
                self.cgroup_dir = job_cgroup_dir(self.s.pid, pid)
        except (DBusError, TimeoutError) as e:
            load.failed(f"start of {job}", e)
            return
        for k in range(n):
            if load.gave_up:
                break
            try:
                t0 = time.perf_counter_ns()
                old = pid
                while pid in (0, old):
                    back = self.started.arm(job)
                    if pid == old:
                        os.kill(pid, signal.SIGKILL)  # the job's main process: ours
                    await asyncio.wait_for(back, benchlib.TIMEOUT)
                    pid = await self.main_pid(path)
                load.ns.append(time.perf_counter_ns() - t0)
                load.done += 1
            except (DBusError, TimeoutError, ProcessLookupError) as e:
                load.failed(f"respawn {k} of {job}", e)
                with contextlib.suppress(DBusError, TimeoutError):
                    pid = await self.main_pid(path)
        try:
            await self.s.stop(job)
        except (DBusError, TimeoutError) as e:
            load.failed(f"stop of {job}", e)

    async def activations(self, w: int, n: int, load: Workload) -> None:
        name, job = bus_name(w), f"act{w}"
        for k in range(n):
            if load.gave_up:
                return
            try:
                t0 = time.perf_counter_ns()
                await benchlib.call(self.bus, benchlib.ping(name))
                await self.s.stop(job)
                await self.watch.wait_unowned(name)
                load.ns.append(time.perf_counter_ns() - t0)
                load.done += 1
            except (DBusError, TimeoutError) as e:
                load.failed(f"activation {k} of {name}", e)

    async def fill(self, n: int) -> Workload:
        """Run ``n`` new instances of a task (each a process with a log pipe), by several
        workers."""
        load = Workload("fill")

        async def worker(count: int) -> None:
            for _ in range(count):
                if load.gave_up:
                    return
                env = {"N": f"f-{next(self.names)}"}  # escaped: fills the escape cache
                try:
                    await self.s.call("StartJob", "sa{ss}b", ["fill", env, True])
                    load.done += 1
                except (DBusError, TimeoutError) as e:
                    load.failed(f"fill instance {env['N']}", e)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(share(n, FILL_WORKERS, w)) for w in range(FILL_WORKERS)))
        load.seconds = time.perf_counter() - t0
        return load

    async def run(self, cycles: int, respawns: int, activations: int) -> list[Workload]:
        loads = [Workload("start/stop cycles"), Workload("respawns"), Workload("activations")]
        plan: list[tuple[Workload, Callable[[int, int, Workload], Awaitable[None]], int, int]] = [
            (loads[0], self.cycles, CYCLE_WORKERS, cycles),
            (loads[1], self.respawns, RESPAWN_WORKERS, respawns),
            (loads[2], self.activations, ACTIVATION_WORKERS, activations),
        ]

        async def timed(load: Workload, work: list[Awaitable[None]]) -> None:
            t0 = time.perf_counter()
            await asyncio.gather(*work)
            load.seconds = time.perf_counter() - t0

        await asyncio.gather(
            *(
                timed(load, [fn(w, share(total, workers, w), load) for w in range(workers)])
                for load, fn, workers, total in plan
            )
        )
        return loads

    # ---------------------------------------------------------------- measurements
    async def at_rest(self) -> dict[str, Any]:
        """The manager's figures, every job stopped."""
        pid = self.s.pid
        await self.s.ping()  # the manager has handled everything sent before
        proc = psutil.Process(pid)
        info = proc.memory_full_info()
        children = proc.children()
        zombies = [c.pid for c in children if _status(c) == psutil.STATUS_ZOMBIE]
        others = [
            f"{c.pid} {_name(c)}"
            for c in children
            if c.pid not in zombies and _name(c) not in ("dbus-daemon", "dbus-broker")
        ]
        rows = await self.s.call("ListJobs")
        leaves: list[str] | None = None
        if self.cgroup_dir is not None:
            with contextlib.suppress(FileNotFoundError):
                leaves = sorted(e.name for e in os.scandir(self.cgroup_dir) if e.is_dir())
            leaves = leaves or []
        rules = await self.match_rules()
        log = self.s.tmp / "stderr.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        tracebacks = [ln for ln in text.splitlines() if TROUBLE.search(ln)]
        fd_dir = f"/proc/{pid}/fd"
        fds = {}
        for fd in os.listdir(fd_dir):
            with contextlib.suppress(OSError):
                fds[fd] = os.readlink(f"{fd_dir}/{fd}")
        return {
            "fds": fds,
            "rss": info.rss / MiB,
            "uss": info.uss / MiB,
            "zombies": zombies,
            "others": others,
            "instances": len(rows[0]),
            "leaves": leaves,
            "rules": rules,
            "tracebacks": tracebacks,
            "threads": proc.num_threads(),
        }

    async def match_rules(self) -> int | None:
        """The manager's match rules on the bus; None where the bus keeps no statistics."""
        dbus = benchlib.DBUS
        try:
            (owner,) = await benchlib.call(
                self.bus,
                benchlib.method(
                    dbus, benchlib.DBUS_PATH, dbus, "GetNameOwner", "s", [benchlib.MANAGER]
                ),
            )
            (stats,) = await benchlib.call(
                self.bus,
                benchlib.method(
                    dbus,
                    benchlib.DBUS_PATH,
                    f"{dbus}.Debug.Stats",
                    "GetConnectionStats",
                    "s",
                    [owner],
                ),
            )
        except DBusError:
            return None
        found = stats.get("MatchRules")
        return None if found is None else int(found.value)


def share(total: int, workers: int, w: int) -> int:
    """Worker ``w``'s part of ``total`` operations."""
    return total // workers + (1 if w < total % workers else 0)


def _status(p: psutil.Process) -> str:
    try:
        return str(p.status())
    except psutil.NoSuchProcess:
        return ""


def _name(p: psutil.Process) -> str:
    try:
        return str(p.name())
    except psutil.NoSuchProcess:
        return "?"


def job_cgroup_dir(manager: int, job_pid: int) -> str | None:
    """The manager's cgroup directory (the parent of a job process's leaf) in the file system,
    or None when its jobs do not run in cgroups of their own."""
    job_cg, own_cg = cgroups.cgroup_of(job_pid), cgroups.cgroup_of(manager)
    found = cgroups.cgroup2_mount()
    if not job_cg or not own_cg or found is None or job_cg == own_cg:
        return None
    mount, rel = found  # rel: the benchmark's own cgroup, relative to the mount's root
    mine = cgroups.cgroup_of(os.getpid()) or "/"
    root = (mine[: len(mine) - len(rel)] if rel != "/" else mine).rstrip("/")
    if not job_cg.startswith(root + "/"):
        return None
    path = mount + job_cg[len(root) :].rsplit("/", 1)[0]
    return path if os.path.isdir(path) else None


async def measure(quick: bool) -> dict[str, Any]:
    cycles, respawns, activations = QUICK if quick else (CYCLES, RESPAWNS, ACTIVATIONS)
    async with benchlib.Session(jobs(), label="soak bench") as s:
        soak = Soak(s)
        await soak.subscribe()
        fresh = await soak.at_rest()
        t0 = time.perf_counter()
        warm = [] if quick else [await soak.fill(FILL)]
        warm += await soak.run(cycles // WARMUP, respawns // WARMUP, activations // WARMUP)
        warm_s = time.perf_counter() - t0
        before = await soak.at_rest()
        loads = await soak.run(cycles, respawns, activations)
        after = await soak.at_rest()
        after["cgroup_dir"] = soak.cgroup_dir
        for load in warm + loads:
            if load.errors:
                s.failure(
                    f"{len(load.errors)} of the {load.label}",
                    RuntimeError("; ".join(load.errors[:3])),
                )
    # The manager has exited: its cgroup directory must be gone with it.
    after["cgroup_left"] = soak.cgroup_dir is not None and os.path.isdir(soak.cgroup_dir)
    return {
        "points": (fresh, before, after),
        "loads": loads,
        "warm_s": warm_s,
        "counts": (cycles, respawns, activations),
        "anomalies": list(s.anomalies),
        "quick": quick,
    }


def checks(
    fresh: dict[str, Any], before: dict[str, Any], after: dict[str, Any]
) -> tuple[list[list[Any]], list[str]]:
    """The table's rows (fresh, start, end, change, target, result) and the missed targets."""
    rows: list[list[Any]] = []
    missed: list[str] = []

    def row(
        label: str,
        key: Callable[[dict[str, Any]], Any],
        target: str,
        ok: bool | None,
        why: str = "",
    ) -> None:
        a, b, c = (key(p) for p in (fresh, before, after))
        change = c - b if isinstance(b, int | float) and isinstance(c, int | float) else "-"
        verdict = "-" if ok is None else "pass" if ok else "**FAIL**"
        rows.append([label, "-" if a is None else a, b, c, change, target, verdict])
        if ok is False:
            missed.append(why)

    fd_diff = sorted(set(after["fds"].items()) ^ set(before["fds"].items()))
    row(
        "open descriptors",
        lambda p: len(p["fds"]),
        "unchanged",
        not fd_diff,
        "the manager's open descriptors changed: "
        + ", ".join(f"{fd} -> {target}" for fd, target in fd_diff[:10]),
    )
    growth = after["rss"] - before["rss"]
    row(
        "RSS (MiB)",
        lambda p: p["rss"],
        f"< {RSS_LIMIT_MIB:g} MiB growth",
        growth < RSS_LIMIT_MIB,
        f"the manager's RSS grew by {growth:.2f} MiB",
    )
    row("USS (MiB)", lambda p: p["uss"], "-", None)
    row(
        "zombie children",
        lambda p: len(p["zombies"]),
        "0",
        not after["zombies"],
        f"zombie children at the end: {after['zombies'][:10]}",
    )
    row(
        "other children (besides the bus)",
        lambda p: len(p["others"]),
        "0",
        not after["others"],
        f"children still running at the end: {after['others'][:10]}",
    )
    row(
        "instances listed",
        lambda p: p["instances"],
        "unchanged",
        after["instances"] == before["instances"],
        f"the manager lists {after['instances']} instances at the end, {before['instances']}"
        " at the start",
    )
    if before["rules"] is not None and after["rules"] is not None:
        row(
            "match rules on the bus",
            lambda p: p["rules"],
            "unchanged",
            after["rules"] == before["rules"],
            f"the manager has {after['rules']} match rules on the bus at the end,"
            f" {before['rules']} at the start",
        )
    if before["leaves"] is not None and after["leaves"] is not None:
        row(
            "cgroup leaves left",
            lambda p: None if p["leaves"] is None else len(p["leaves"]),
            "unchanged",
            after["leaves"] == before["leaves"],
            f"cgroup leaves left at the end: {after['leaves'][:10]},"
            f" at the start: {before['leaves'][:10]}",
        )
    if after.get("cgroup_dir") is not None:
        left = after["cgroup_left"]
        rows.append(
            [
                "cgroup directory after exit",
                "-",
                "-",
                "left" if left else "removed",
                "-",
                "removed",
                "**FAIL**" if left else "pass",
            ]
        )
        if left:
            missed.append("the manager's cgroup directory is left after it exited")
    row(
        "lines of trouble in the manager's log",
        lambda p: len(p["tracebacks"]),
        "0",
        not after["tracebacks"],
        "the manager logged: " + " | ".join(after["tracebacks"][:3]),
    )
    row("threads", lambda p: p["threads"], "-", None)
    return rows, missed


def run(quick: bool) -> dict[str, Any]:
    m = asyncio.run(measure(quick))
    fresh, before, after = m["points"]
    rows, missed = checks(fresh, before, after)
    anomalies: list[str] = m["anomalies"] + missed
    loads = []
    for load in m["loads"]:
        st = benchlib.summary(load.ns, "ms")
        rate = load.done / load.seconds if load.seconds else float("nan")
        loads.append(
            [load.label, load.done, len(load.errors), load.seconds, rate, st["median"], st["p95"]]
        )
    cycles, respawns, activations = m["counts"]
    fill = "" if m["quick"] else f"{FILL:,} `fill` instances, then "
    notes = [
        f"Warm-up ({fill}{cycles // WARMUP:,} cycles, {respawns // WARMUP:,} respawns,"
        f" {activations // WARMUP:,} activations): {m['warm_s']:.1f} s."
        + (" With `--quick` the bounded records are not filled first." if m["quick"] else ""),
        "The workloads run at the same time: each one's rate is what it got while sharing the"
        " machine with the other two.",
        "cgroups: "
        + (
            "every job instance ran in a leaf of the manager's cgroup directory."
            if after["leaves"] is not None
            else "not in use here (jobs follow their sessions); no leaf to count."
        ),
        f"Each instance of `inst` and `broken` leaves its log file (`JOB/NAME.log`) behind,"
        f" as every stopped instance does: {cycles // 2:,} instances, as many files.",
    ]
    growth = after["rss"] - before["rss"]
    fds = (
        "unchanged"
        if before["fds"] == after["fds"]
        else f"{len(before['fds'])} -> {len(after['fds'])}"
    )
    work = f"{cycles:,} cycles, {respawns:,} respawns, {activations:,} activations"
    headline = [
        [f"soak ({work}): open fds", fds, "-", "-"],
        [
            f"soak: manager RSS growth (target < {RSS_LIMIT_MIB:g} MiB)",
            f"{growth:+.2f} MiB",
            "-",
            "-",
        ],
    ]
    strip = {"fds", "leaves", "zombies", "others", "tracebacks"}
    return benchlib.result(
        "soak",
        [
            benchlib.table(
                "The manager at rest: fresh, after the warm-up (start) and after the soak (end)",
                ["measure", "fresh", "start", "end", "change", "target", "result"],
                rows,
            ),
            benchlib.table(
                "Workloads (run at the same time; times in ms per operation)",
                ["workload", "done", "failed", "seconds", "per second", "median", "p95"],
                loads,
            ),
        ],
        notes=notes,
        anomalies=anomalies,
        headline=headline,
        data={
            name: {k: v for k, v in p.items() if k not in strip} | {"fds": len(p["fds"])}
            for name, p in zip(("fresh", "start", "end"), m["points"], strict=True)
        },
    )


if __name__ == "__main__":
    benchlib.main(run, DESCRIPTION)
