"""Job start/stop through the manager's bus API, against a raw D-Bus round trip."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import benchlib
from dbus_fast.errors import DBusError

DESCRIPTION = """
A real `busmgr session` (its own private `dbus-daemon`) with N = 50 service jobs
(`exec sleep 1000`) and 50 task jobs (`task` + `exec true`), driven by a dbus-fast client in
the benchmark process.

* *baseline: Ping*: `org.freedesktop.DBus.Peer.Ping` to `org.busmgr.Manager1`, a round trip
  client -> dbus-daemon -> manager -> dbus-daemon -> client with no work in the manager. Every
  other figure is also given as a multiple of it; one Ping precedes each timed call, so both
  see the same load.
* *StartJob(wait=True), service*: from the call until the reply, which comes once the job is
  `running` (spawned, and for a plain service that is all).
* *StopJob(wait=True), service*: until the job is back in `waiting`: `kill signal` sent, the
  process reaped.
* *StartJob(wait=True), task*: until the task has run and exited (spawn, reap, two state
  walks, four job events).
* *All at once*: all 50 StartJob calls sent at once, then all 50 StopJob, then the 50 tasks;
  the wall time until the last reply, and jobs per second. These batches run after the
  one-at-a-time rounds (3 rounds each), and a batch in which any call failed is not counted
  but reported as a finding.
"""

N = 50


def jobs() -> dict[str, str]:
    out = {}
    for i in range(N):
        out[f"svc{i:03d}"] = "exec sleep 1000\n"
        out[f"task{i:03d}"] = "task\nexec true\n"
    return out


class Samples:
    def __init__(self) -> None:
        self.ping: list[int] = []
        self.start: list[int] = []
        self.stop: list[int] = []
        self.task: list[int] = []
        self.conc: dict[str, list[float]] = {"start": [], "stop": [], "task": []}
        self.anomalies: list[str] = []
        self.startup_s = float("nan")
        self.step = "warm-up"  # what was being done, for the report if a call fails


async def measure(quick: bool) -> Samples:
    m = Samples()
    svcs = [f"svc{i:03d}" for i in range(N)]
    tasks = [f"task{i:03d}" for i in range(N)]
    async with benchlib.Session(jobs(), label="jobs bench") as s:
        m.startup_s = s.startup_s
        try:
            for _ in range(3):  # warm up: imports, caches, the first spawns
                await s.ping()
            await s.start(svcs[0])
            await s.stop(svcs[0])
            await s.start(tasks[0])
            rounds = 1 if quick else 3
            for _ in range(rounds):
                await one_at_a_time(s, m, svcs, tasks)
            for _ in range(rounds):
                if not await all_at_once(s, m, svcs, tasks):
                    break
            m.step = "ListJobs after the runs"
            rows = (await s.call("ListJobs"))[0]
        except (DBusError, TimeoutError) as e:
            s.failure(m.step, e)
            rows = []
        # Every service must be back in waiting, every task done: nothing running is left.
        busy = [r for r in rows if r[2] != "waiting"]
        if busy:
            m.anomalies.append(f"after the runs {len(busy)} instances are not waiting: {busy[:3]}")
        procs = [p for p in s.descendants() if p.name() != "dbus-daemon"]
        if procs:
            m.anomalies.append(f"{len(procs)} job processes still alive after every stop")
    m.anomalies += s.anomalies
    return m


async def one_at_a_time(s: benchlib.Session, m: Samples, svcs: list[str], tasks: list[str]) -> None:
    """Each service started, then each stopped, then each task run: one call at a time."""
    m.step = "one call at a time"
    for names, op, out in [
        (svcs, s.start, m.start),
        (svcs, s.stop, m.stop),
        (tasks, s.start, m.task),
    ]:
        for name in names:
            m.ping.append(await benchlib.timed(s.ping))
            out.append(await benchlib.timed(lambda n=name, op=op: op(n)))


async def all_at_once(s: benchlib.Session, m: Samples, svcs: list[str], tasks: list[str]) -> bool:
    """All services started at once, stopped at once, all tasks run at once; False if a call
    failed (the time of that batch is then not counted)."""
    for kind, names, op in [
        ("start", svcs, s.start),
        ("stop", svcs, s.stop),
        ("task", tasks, s.start),
    ]:
        m.step = f"{kind} {N} jobs at once"
        t0 = time.perf_counter()
        replies = await asyncio.gather(*(op(n) for n in names), return_exceptions=True)
        took = time.perf_counter() - t0
        errors = [r for r in replies if isinstance(r, BaseException)]
        if errors:
            m.anomalies.append(
                f"{kind} {N} jobs at once: {len(errors)} of {N} calls failed, first:"
                f" {_describe(errors[0])}"
            )
            return False
        m.conc[kind].append(took)
    return True


def fmt_rate(data: dict[str, Any], key: str) -> str:
    c = data.get(f"concurrent_{key}")
    return benchlib.fmt(N / c["median_s"]) if c else "-"


def _describe(e: BaseException) -> str:
    if isinstance(e, DBusError):
        return f"{e.type}: {e.text}"
    return f"{type(e).__name__}: {e}"


def run(quick: bool) -> dict[str, Any]:
    m = asyncio.run(measure(quick))
    ping = benchlib.summary(m.ping, "ms")
    rows = [["baseline: Ping round trip", ping["median"], ping["p95"], 1.0, ping["n"]]]
    data: dict[str, Any] = {"ping": ping}
    for key, label in [
        ("start", "StartJob(wait=True), service"),
        ("stop", "StopJob(wait=True), service"),
        ("task", "StartJob(wait=True), task `exec true`"),
    ]:
        st = benchlib.summary(getattr(m, key), "ms")
        data[key] = st
        rows.append([label, st["median"], st["p95"], st["median"] / ping["median"], st["n"]])
    conc_rows = []
    for key, label in [
        ("start", f"start {N} services at once"),
        ("stop", f"stop {N} services at once"),
        ("task", f"run {N} tasks at once"),
    ]:
        times = m.conc[key]
        if not times:
            continue
        best = min(times)
        med = sorted(times)[len(times) // 2]
        data[f"concurrent_{key}"] = {"median_s": med, "best_s": best}
        conc_rows.append([label, med * 1e3, N / med, len(times)])
    return benchlib.result(
        "jobs",
        [
            benchlib.table(
                f"One call at a time ({N} jobs of each kind loaded)",
                ["operation", "median ms", "p95 ms", "x Ping", "samples"],
                rows,
            ),
            benchlib.table(
                "All at once",
                ["operation", "wall ms (median)", "jobs/s", "runs"],
                conc_rows,
            ),
        ],
        notes=[f"The session took {m.startup_s:.2f} s from exec to printing its address."],
        anomalies=m.anomalies,
        headline=[
            benchlib.headline(
                "StartJob(wait=True), service (median)",
                data["start"]["median"],
                ping["median"],
                "ms",
                "Ping",
            ),
            benchlib.headline(
                "StopJob(wait=True), service (median)",
                data["stop"]["median"],
                ping["median"],
                "ms",
                "Ping",
            ),
            benchlib.headline(
                "StartJob(wait=True), task (median)",
                data["task"]["median"],
                ping["median"],
                "ms",
                "Ping",
            ),
            [f"{N} services started at once", f"{fmt_rate(data, 'start')} jobs/s", "-", "-"],
        ],
        data=data,
    )


if __name__ == "__main__":
    benchlib.main(run, DESCRIPTION)
