"""Memory: the manager's RSS idle with 0 and 200 job files, running 200 jobs, and after cycles."""

from __future__ import annotations

import asyncio
import subprocess
from typing import Any

import benchlib
import psutil
from dbus_fast.errors import DBusError

DESCRIPTION = """
Resident memory of the manager process (`python -m busmgr session`; its private `dbus-daemon`
is a separate process, shown apart), read with psutil: RSS, and USS (the pages only this
process holds, from `/proc/PID/smaps`), in MiB.

* *baseline: bare interpreter*: a Python process that imports what the manager imports
  (`busmgr.cli`, `busmgr.manager`, `dbus_fast.aio`) and then waits: the floor any Python
  manager pays before it holds a single job.
* *idle, 0 jobs* and *idle, 200 jobs*: a session after start-up with no job file, and with 200
  job files (`start on bench-go`, `stop on bench-stop`, `respawn`, an `env`, `exec sleep 1000`),
  none running. The per-job figure is the difference divided by 200: what a parsed job class,
  its instance and its bus objects cost.
* *200 running*: after all 200 were started (`StartJob(wait=True)` one after another).
* *after cycle k*: after k rounds of starting all 200 and stopping them all, one
  `StartJob`/`StopJob(wait=True)` at a time, 10 rounds in all (section 6 starts and stops them
  with one event instead). CPython's allocator keeps taking
  memory for the first cycles and then levels off, so a leak is judged on the last 4 cycles
  only: growth of more than 256 bytes per job start/stop there is reported as a finding.
"""

JOBS = 200
CYCLES = 10  # enough for the allocator to level off
TAIL = 4
LEAK_BYTES = 256
ATTEMPTS = 3
MiB = 1 << 20


def jobs(n: int) -> dict[str, str]:
    return {
        f"job{i:03d}": (
            f'description "benchmark job {i}"\n'
            "start on bench-go\n"
            "stop on bench-stop\n"
            "respawn\n"
            f"env JOB_INDEX={i}\n"
            "exec sleep 1000\n"
        )
        for i in range(n)
    }


def mem(pid: int) -> tuple[float, float]:
    """(RSS, USS) of ``pid`` in MiB."""
    info = psutil.Process(pid).memory_full_info()
    return info.rss / MiB, info.uss / MiB


def daemon_rss(s: benchlib.Session) -> float:
    for p in s.descendants():
        if p.name() == "dbus-daemon":
            return p.memory_info().rss / MiB
    return float("nan")


async def start_stop_cycles(
    s: benchlib.Session,
    cycles: int,
    data: dict[str, Any],
    anomalies: list[str],
) -> tuple[list[float], bool, list[list[Any]]]:
    """Start all jobs and stop them all, ``cycles`` times; USS after each cycle, whether
    every cycle completed, and the table rows."""
    rows: list[list[Any]] = []
    after: list[float] = []
    step = ""
    names = list(jobs(JOBS))
    try:
        for k in range(1, cycles + 1):
            step = f"cycle {k}, StartJob of each of the {JOBS} jobs"
            for name in names:
                data.setdefault("start_ns", []).append(
                    await benchlib.timed(lambda n=name: s.start(n))
                )
            running = [p for p in s.descendants() if p.name() == "sleep"]
            if len(running) != JOBS:
                anomalies.append(f"cycle {k}: {len(running)} of {JOBS} jobs running after go")
            if "running" not in data:
                r, u = mem(s.pid)
                rows.append([f"{JOBS} jobs running", r, u, daemon_rss(s)])
                data["running"] = {"rss": r, "uss": u}
            step = f"cycle {k}, StopJob of each of the {JOBS} jobs"
            for name in names:
                data.setdefault("stop_ns", []).append(
                    await benchlib.timed(lambda n=name: s.stop(n))
                )
            left = [p for p in s.descendants() if p.name() == "sleep"]
            if left:
                anomalies.append(f"cycle {k}: {len(left)} job processes left after stop")
            r, u = mem(s.pid)
            after.append(u)
            if k in (1, cycles):
                rows.append([f"idle after start/stop cycle {k}", r, u, daemon_rss(s)])
    except (DBusError, TimeoutError) as e:
        s.failure(step, e)
        return after, False, rows
    return after, True, rows


def baseline() -> tuple[float, float]:
    """(RSS, USS) of an interpreter that imported what the manager imports, and waits."""
    code = (
        "import busmgr.cli, busmgr.manager, dbus_fast.aio, sys;"
        " print(1, flush=True); sys.stdin.read()"
    )
    proc = subprocess.Popen(
        [benchlib.PYTHON, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        proc.stdout.readline()
        return mem(proc.pid)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=benchlib.TIMEOUT)


async def measure(quick: bool) -> dict[str, Any]:
    rows: list[list[Any]] = []
    anomalies: list[str] = []
    data: dict[str, Any] = {}
    rss, uss = baseline()
    rows.append(["baseline: bare interpreter with the imports", rss, uss, float("nan")])
    data["baseline"] = {"rss": rss, "uss": uss}
    async with benchlib.Session({}, label="memory bench, 0 jobs") as s:
        await s.ping()
        rss0, uss0 = mem(s.pid)
        rows.append(["idle, 0 jobs", rss0, uss0, daemon_rss(s)])
    anomalies += s.anomalies
    data["idle0"] = {"rss": rss0, "uss": uss0}
    async with benchlib.Session(jobs(JOBS), label=f"memory bench, {JOBS} jobs") as s:
        await s.ping()
        await s.call("ListJobs")  # every job object touched once
        rss1, uss1 = mem(s.pid)
        rows.append([f"idle, {JOBS} jobs loaded", rss1, uss1, daemon_rss(s)])
        data["idle200"] = {"rss": rss1, "uss": uss1}
        per_job = {"rss": (rss1 - rss0) * 1024 / JOBS, "uss": (uss1 - uss0) * 1024 / JOBS}
        rows.append(["per loaded job (KiB)", per_job["rss"], per_job["uss"], float("nan")])
        data["per_job_kib"] = per_job
    anomalies += s.anomalies
    # The start/stop cycles; if the manager dies on the way, that is reported and the cycles
    # are run again in a fresh session, up to ATTEMPTS sessions in all.
    cycles = 2 if quick else CYCLES
    after: list[float] = []
    for attempt in range(1, ATTEMPTS + 1):
        async with benchlib.Session(jobs(JOBS), label=f"memory bench, session {attempt}") as s:
            after, done, cycle_rows = await start_stop_cycles(s, cycles, data, anomalies)
        anomalies += s.anomalies
        if done:
            break
    if attempt > 1:
        cycle_rows = [[f"{r[0]} (session {attempt})", *r[1:]] for r in cycle_rows]
    rows += cycle_rows
    data["uss_after_cycles"] = after
    notes = []
    for key, what in [("start_ns", "StartJob(wait=True)"), ("stop_ns", "StopJob(wait=True)")]:
        st = benchlib.summary(data.pop(key, []), "ms")
        data[key.replace("_ns", "_ms")] = st
        notes.append(
            f"{what} during the cycles, with up to {JOBS} jobs running: median"
            f" {st['median']:.2f} ms, p95 {st['p95']:.2f} ms ({st['n']} calls)."
        )
    if len(after) >= 2:
        total = (after[-1] - after[0]) * 1024
        notes.append(
            f"USS after each of the {len(after)} cycles (MiB): "
            + ", ".join(f"{u:.2f}" for u in after)
            + f"; {total:,.0f} KiB from cycle 1 to cycle {len(after)}."
        )
    tail = after[-TAIL:]
    if len(after) >= 2 * TAIL:
        # Python's allocator keeps growing for the first cycles and then levels off; only growth
        # that persists over the last cycles counts as a leak.
        slope = (tail[-1] - tail[0]) * 1024 / (len(tail) - 1)
        per_start = slope * 1024 / JOBS
        data["steady_growth_kib_per_cycle"] = slope
        notes.append(
            f"Growth over the last {len(tail)} cycles: {slope:,.0f} KiB per cycle"
            f" ({per_start:,.0f} bytes per start/stop of a job)."
        )
        if per_start > LEAK_BYTES:
            anomalies.append(
                f"the manager still grows by {slope:,.0f} KiB per cycle of {JOBS} starts and"
                f" stops after {len(after) - len(tail) + 1} cycles ({per_start:,.0f} bytes per"
                " start/stop): a leak?"
            )
    headline = [
        benchlib.headline(
            "manager USS, idle, no job", uss0, data["baseline"]["uss"], "MiB", "bare interpreter"
        ),
        [
            f"manager USS per loaded job ({JOBS} jobs)",
            f"{benchlib.fmt(data['per_job_kib']['uss'])} KiB",
            "-",
            "-",
        ],
    ]
    if "steady_growth_kib_per_cycle" in data:
        per = data["steady_growth_kib_per_cycle"] * 1024 / JOBS
        headline.append(
            [
                f"manager USS growth per job start/stop, last {TAIL} cycles",
                f"{per:,.0f} B",
                "-",
                "-",
            ]
        )
    return {
        "rows": rows,
        "anomalies": anomalies,
        "notes": notes,
        "data": data,
        "headline": headline,
    }


def run(quick: bool) -> dict[str, Any]:
    m = asyncio.run(measure(quick))
    return benchlib.result(
        "memory",
        [
            benchlib.table(
                "Manager memory (MiB unless marked)",
                ["state", "RSS", "USS", "dbus-daemon RSS"],
                m["rows"],
            )
        ],
        notes=m["notes"],
        anomalies=m["anomalies"],
        headline=m["headline"],
        data=m["data"],
    )


if __name__ == "__main__":
    benchlib.main(run, DESCRIPTION)
