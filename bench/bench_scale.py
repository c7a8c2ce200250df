"""Cost curves: how start, stop, memory and ListJobs grow from 10 to 5,000 jobs."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from typing import Any

import benchlib
import svgchart
from dbus_fast.errors import DBusError

DESCRIPTION = """
How busmgr's costs grow with the work it holds: one `busmgr session` per job count N = 10,
100, 1,000 and 5,000, each job `start on bench-go` / `stop on bench-stop` / `respawn` /
`exec sleep 1000`. In each session: *start* `EmitEvent("bench-go", wait=True)` until every job
runs, *stop* `EmitEvent("bench-stop", wait=True)` until every job is back in `waiting` (its
process reaped), the manager's RSS with the jobs loaded and with them running, and
`ListJobs` one call after another with the jobs loaded (the median call, each after a `Ping`
that is the floor of any call). Beside them the floor of the same run:
N `posix_spawn` of `sleep 1000` and their reaping, and a bare D-Bus round trip (`Peer.Ping`).

The figure `cost-curves.svg` (written beside this file) plots them per job: the start and
stop time per job beside the floor's, the manager's RSS above an empty manager's per job,
and the time of a `ListJobs` beyond a bare round trip per row. A cost that grows linearly
with N is a flat line; anything quadratic would climb.

What the profiles show at 5,000 jobs (py-spy at 250 Hz over one start and stop): no Python
work grows faster than the jobs; the per-job costs that rise are the kernel's: moving the
manager into the job's cgroup leaf and back (26 % of the manager's busy time, against 21 %
with 1,000), creating each job's log file in one directory of 5,000 (15 %, at its first
start only: about 0.5 ms per file on this machine's disk), `posix_spawn` (12 %). Two costs
that did grow with the number of jobs are gone: stopping N jobs rechecked every killed job
on each reap (N squared), and the start order was a list searched on every start and stop;
CPython's full garbage collections, which scan every object, took 3 s of a 5,000-job start
(one pause of 0.8 s) until the loaded objects were frozen out of them (`gc.freeze`).

![cost curves](cost-curves.svg)
"""

SIZES = (10, 100, 1000, 5000)
QUICK_SIZES = (10, 100)
ROUNDS = {10: 5, 100: 5, 1000: 2, 5000: 1}
LIST_CALLS = 50


def jobs(n: int) -> dict[str, str]:
    return {
        f"job{i:04d}": "start on bench-go\nstop on bench-stop\nrespawn\nexec sleep 1000\n"
        for i in range(n)
    }


async def one_size(n: int, rounds: int, out: dict[str, Any], anomalies: list[str]) -> None:
    row: dict[str, list[float]] = {
        k: [] for k in ("start", "stop", "floor_start", "floor_stop", "list", "ping")
    }
    limit = max(benchlib.TIMEOUT, n * 0.02)  # 20 ms a job: far above any expected figure
    async with benchlib.Session(jobs(n), label=f"scale, {n} jobs") as s:
        row["ready"] = [s.startup_s]
        step = "warm-up"
        try:
            await s.ping()
            await s.call("ListJobs")
            row["rss_loaded"] = [benchlib.rss_mib(s.pid)]
            step = f"ListJobs with {n}"
            for _ in range(LIST_CALLS):
                row["ping"].append(await benchlib.timed(s.ping) / 1e6)
                row["list"].append(await benchlib.timed(lambda: s.call("ListJobs")) / 1e6)
            for r in range(rounds):
                step = f"start {n}, round {r + 1}"
                go = functools.partial(s.emit, "bench-go", timeout=limit)
                row["start"].append(await benchlib.timed(go) / 1e6)
                if r == 0:
                    row["rss_running"] = [benchlib.rss_mib(s.pid)]
                step = f"stop {n}, round {r + 1}"
                halt = functools.partial(s.emit, "bench-stop", timeout=limit)
                row["stop"].append(await benchlib.timed(halt) / 1e6)
                ns, pids = benchlib.floor_start(n)
                row["floor_start"].append(ns / 1e6)
                row["floor_stop"].append(benchlib.floor_stop(pids) / 1e6)
        except (DBusError, TimeoutError) as e:
            s.failure(step, e)
    anomalies += s.anomalies
    out[str(n)] = row


def med(values: list[float]) -> float:
    return benchlib.percentile(values, 50) if values else float("nan")


def draw(data: dict[str, Any]) -> str:
    sizes = sorted(int(n) for n in data if int(n))

    def series(key: str) -> list[tuple[float, float]]:
        return [(n, med(data[str(n)].get(key, [])) / n) for n in sizes]

    base = med(data.get("0", {}).get("rss_loaded", []))

    def memory(key: str) -> list[tuple[float, float]]:
        return [(n, (med(data[str(n)].get(key, [])) - base) * 1024 / n) for n in sizes]

    def listing() -> list[tuple[float, float]]:
        return [
            (n, (med(data[str(n)]["list"]) - med(data[str(n)]["ping"])) * 1000 / n) for n in sizes
        ]

    return svgchart.page(
        [
            svgchart.Chart(
                "Start and stop, per job",
                "jobs (N)",
                "ms per job",
                {
                    "busmgr start": series("start"),
                    "busmgr stop": series("stop"),
                    "floor: spawn": series("floor_start"),
                    "floor: kill, reap": series("floor_stop"),
                },
            ),
            svgchart.Chart(
                "RSS above an empty manager, per job",
                "jobs (N)",
                "KiB per job",
                {
                    "jobs loaded": memory("rss_loaded"),
                    "jobs running": memory("rss_running"),
                },
            ),
            svgchart.Chart(
                "ListJobs minus a Ping, per row",
                "jobs (N)",
                "us per row",
                {"ListJobs, jobs loaded": listing()},
            ),
        ],
        "busmgr cost curves",
    )


async def measure(quick: bool) -> dict[str, Any]:
    data: dict[str, Any] = {}
    anomalies: list[str] = []
    async with benchlib.Session({}, label="scale, no job") as s:  # the empty manager's RSS
        await s.ping()
        data["0"] = {"rss_loaded": [benchlib.rss_mib(s.pid)]}
    anomalies += s.anomalies
    for n in QUICK_SIZES if quick else SIZES:
        await one_size(n, 1 if quick else ROUNDS[n], data, anomalies)
    return {"data": data, "anomalies": anomalies}


def run(quick: bool) -> dict[str, Any]:
    t0 = time.perf_counter()
    m = asyncio.run(measure(quick))
    data = m["data"]
    rows = []
    for n in sorted(int(k) for k in data if int(k)):
        d = data[str(n)]
        start, stop, fstart = med(d["start"]), med(d["stop"]), med(d["floor_start"])
        rows.append(
            [
                n,
                med(d.get("ready", [])) * 1e3,
                start,
                start / n,
                fstart / n,
                benchlib.ratio(start, fstart),
                stop / n,
                med(d["floor_stop"]) / n,
                med(d.get("rss_loaded", [])),
                med(d.get("rss_running", [])),
                med(d["list"]),
                med(d["list"]) * 1e3 / n,
                med(d["ping"]),
            ]
        )
    notes = []
    if benchlib.FIGURES is not None:
        with contextlib.suppress(OSError):
            path = benchlib.FIGURES / "cost-curves.svg"
            path.write_text(draw(data))
            notes.append(f"Drawn into `{path.name}` ({time.perf_counter() - t0:.0f} s in all).")
    return benchlib.result(
        "scale",
        [
            benchlib.table(
                "Cost by number of jobs (medians; ms unless marked)",
                [
                    "jobs",
                    "session ready",
                    "start all",
                    "start / job",
                    "floor / job",
                    "x floor",
                    "stop / job",
                    "floor stop / job",
                    "RSS loaded MiB",
                    "RSS running MiB",
                    "ListJobs",
                    "ListJobs us / row",
                    "Ping",
                ],
                rows,
            )
        ],
        notes=notes,
        anomalies=m["anomalies"],
        data=data,
    )


if __name__ == "__main__":
    benchlib.main(run, DESCRIPTION)
