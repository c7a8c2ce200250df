"""Bursts: one event starts (and another stops) 200 jobs at once."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import benchlib
from dbus_fast.errors import DBusError

DESCRIPTION = """
The heaviest load of a session start: one event that starts many jobs at once. A session holds
200 service jobs (`description`, `start on bench-go`, `stop on bench-stop`, `respawn`, an
`env`, `exec sleep 1000`).

* *baseline: one StartJob at a time*: the 200 jobs started with 200 `StartJob(wait=True)`
  calls one after another, then stopped with 200 `StopJob(wait=True)`; the total time (once,
  in the first session of each condition).
* *one event*: `EmitEvent("bench-go", {}, wait=True)` until all 200 are running, then
  `EmitEvent("bench-stop", {}, wait=True)` until all 200 are stopped; the time of each, in
  rounds. One event should be faster than 200 separate calls (one bus round trip instead of
  200), and it must never fail.

Both are measured twice: on a quiet bus, and with one more client subscribed to every signal
(`AddMatch("type='signal'")`, what `busmgr events --follow`, a desktop shell or `dbus-monitor`
does), which makes the bus daemon slower to drain the manager's burst of signals. Each
session runs up to 4 rounds, and two sessions run per condition in a full run, so that an
intermittent failure shows up with its frequency; a session whose manager fails is reported,
and the next session starts afresh.
"""

JOBS = 200
ROUNDS = 4
SESSIONS = 2


def jobs() -> dict[str, str]:
    return {
        f"burst{i:03d}": (
            f'description "burst job {i}"\n'
            "start on bench-go\n"
            "stop on bench-stop\n"
            "respawn\n"
            f"env JOB_INDEX={i}\n"
            "exec sleep 1000\n"
        )
        for i in range(JOBS)
    }


def running(s: benchlib.Session) -> int:
    return sum(1 for p in s.descendants() if p.name() == "sleep")


async def one_session(
    label: str,
    rounds: int,
    listener: bool,
    serial: bool,
    out: dict[str, list[float]],
    anomalies: list[str],
) -> tuple[int, bool]:
    """Rounds completed in a fresh session, and whether the session failed. With
    ``listener``, the benchmark's connection first subscribes to every signal; with
    ``serial``, the baseline (one call per job) is measured first."""
    names = list(jobs())
    done = 0
    failed = False
    async with benchlib.Session(jobs(), label=label) as s:
        assert s.bus is not None
        step = "warm-up"
        try:
            if listener:
                match = ["type='signal'"]
                add = benchlib.method(
                    benchlib.DBUS, benchlib.DBUS_PATH, benchlib.DBUS, "AddMatch", "s", match
                )
                await benchlib.call(s.bus, add)
            await s.ping()
            if serial:
                step = f"StartJob of each of the {JOBS} jobs"
                t0 = time.perf_counter()
                for name in names:
                    await s.start(name)
                out["serial_start"].append(time.perf_counter() - t0)
                step = f"StopJob of each of the {JOBS} jobs"
                t0 = time.perf_counter()
                for name in names:
                    await s.stop(name)
                out["serial_stop"].append(time.perf_counter() - t0)
            for r in range(1, rounds + 1):
                step = f"round {r}, EmitEvent(bench-go) starting {JOBS} jobs"
                t0 = time.perf_counter()
                await s.emit("bench-go")
                out["event_start"].append(time.perf_counter() - t0)
                if (n := running(s)) != JOBS:
                    anomalies.append(f"{label}, round {r}: {n} of {JOBS} jobs running after go")
                step = f"round {r}, EmitEvent(bench-stop) stopping {JOBS} jobs"
                t0 = time.perf_counter()
                await s.emit("bench-stop")
                out["event_stop"].append(time.perf_counter() - t0)
                if n := running(s):
                    anomalies.append(f"{label}, round {r}: {n} jobs still running after stop")
                done += 1
        except (DBusError, TimeoutError) as e:
            s.failure(step, e)
            failed = True
    anomalies += s.anomalies
    return done, failed


CONDITIONS = {"quiet": "no listener", "listener": "a client subscribed to every signal"}


async def measure(quick: bool) -> dict[str, Any]:
    res: dict[str, Any] = {"anomalies": []}
    sessions = 1 if quick else SESSIONS
    rounds = 2 if quick else ROUNDS
    for cond in CONDITIONS:
        out: dict[str, list[float]] = {
            "serial_start": [],
            "serial_stop": [],
            "event_start": [],
            "event_stop": [],
        }
        completed = failures = 0
        for k in range(1, sessions + 1):
            label = f"burst bench, {CONDITIONS[cond]}, session {k}"
            done, failed = await one_session(
                label, rounds, cond == "listener", k == 1, out, res["anomalies"]
            )
            completed += done
            failures += failed
        res[cond] = {
            "out": out,
            "sessions": sessions,
            "attempted": sessions * rounds,
            "completed": completed,
            "failures": failures,
        }
    return res


def run(quick: bool) -> dict[str, Any]:
    m = asyncio.run(measure(quick))
    rows = []
    data: dict[str, Any] = {}
    notes = []
    for cond, cond_label in CONDITIONS.items():
        c = m[cond]
        data[cond] = {}
        for key, label in [
            ("serial_start", f"baseline: start {JOBS} jobs, one StartJob at a time"),
            ("event_start", f"start {JOBS} jobs with one EmitEvent"),
            ("serial_stop", f"baseline: stop {JOBS} jobs, one StopJob at a time"),
            ("event_stop", f"stop {JOBS} jobs with one EmitEvent"),
        ]:
            st = benchlib.summary([int(t * 1e9) for t in c["out"][key]], "ms")
            data[cond][key] = st
            base = data[cond].get(key.replace("event", "serial"), st)
            rows.append(
                [
                    cond_label,
                    label,
                    st["median"],
                    st["p95"],
                    JOBS * 1e3 / st["median"] if st["n"] else float("nan"),
                    benchlib.ratio(st["median"], base["median"]),
                    st["n"],
                ]
            )
        data[cond]["failures"] = c["failures"]
        data[cond]["sessions"] = c["sessions"]
        notes.append(
            f"With {cond_label}: {c['completed']} of {c['attempted']} rounds completed; the"
            f" manager failed in {c['failures']} of {c['sessions']} sessions."
        )
    headline = [
        benchlib.headline(
            f"start {JOBS} jobs with one event (median)",
            data["quiet"]["event_start"]["median"],
            data["quiet"]["serial_start"]["median"],
            "ms",
            f"{JOBS} StartJob calls",
        )
    ]
    for cond, cond_label in CONDITIONS.items():
        headline.append(
            [
                f"sessions that failed under the {JOBS}-job burst, {cond_label}",
                f"{m[cond]['failures']} of {m[cond]['sessions']}",
                "-",
                "-",
            ]
        )
    return benchlib.result(
        "burst",
        [
            benchlib.table(
                f"{JOBS} jobs at once (ms for all {JOBS})",
                ["bus", "operation", "median ms", "p95 ms", "jobs/s", "x baseline", "samples"],
                rows,
            )
        ],
        notes=notes,
        anomalies=m["anomalies"],
        headline=headline,
        data=data,
    )


if __name__ == "__main__":
    benchlib.main(run, DESCRIPTION)
