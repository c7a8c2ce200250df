"""Event dispatch: EmitEvent through the manager with 0, 10 and 100 jobs loaded."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import benchlib
from dbus_fast import Message, MessageType
from dbus_fast.errors import DBusError

DESCRIPTION = """
One `busmgr session` per job count N = 0, 10, 100; each job is a task `start on bench-hit`,
`exec true`.

* *baseline: Ping*: `Peer.Ping` to the manager, the bare round trip, interleaved with the
  emits.
* *miss*: `EmitEvent("bench-miss", {}, wait=True)`; N jobs loaded, none of them starts on it,
  so this is the cost of queueing the event, matching it against every job's `start on` and
  `stop on`, signalling `EventEmitted` and replying.
* *hit*: `EmitEvent("bench-hit", {}, wait=True)`; every one of the N jobs starts on it, and
  the reply comes once all N tasks have run (N spawns and reaps, 4 N job events
  `starting`/`started`/`stopping`/`stopped`, each blocking as the Upstart semantics say).
* *pipelined miss*: 500 `EmitEvent("bench-miss", wait=False)` sent back to back (at most 64
  awaiting their reply at a time: the bus daemon allows a connection 128 pending replies),
  timed until the 500th `EventEmitted` signal arrives: the dispatch rate when the client does
  not wait.

Misses run first and hits last in each session, since a hit that starts 100 jobs at once is
the heaviest load of this benchmark.

Events per second are 1 / median latency for one-at-a-time calls.
"""

PIPELINED = 500
WINDOW = 64
COUNTS = (0, 10, 100)


def jobs(n: int) -> dict[str, str]:
    return {f"hit{i:03d}": "task\nstart on bench-hit\nexec true\n" for i in range(n)}


async def pipelined(s: benchlib.Session, count: int) -> float:
    """Seconds from the first of ``count`` no-wait emits to the last ``EventEmitted``.

    At most WINDOW calls are outstanding at a time: the bus daemon allows a connection 128
    pending replies (``max_replies_per_connection``) and fails the rest with LimitsExceeded.
    """
    assert s.bus is not None
    seen = 0
    done = asyncio.get_running_loop().create_future()

    def on_message(msg: Message) -> None:
        nonlocal seen
        if (
            msg.message_type is MessageType.SIGNAL
            and msg.member == "EventEmitted"
            and msg.body[0] == "bench-miss"
        ):
            seen += 1
            if seen == count and not done.done():
                done.set_result(None)

    rule = f"type='signal',interface='{benchlib.MANAGER}',member='EventEmitted'"
    add = benchlib.method(benchlib.DBUS, benchlib.DBUS_PATH, benchlib.DBUS, "AddMatch", "s", [rule])
    await benchlib.call(s.bus, add)
    s.bus.add_message_handler(on_message)
    window = asyncio.Semaphore(WINDOW)

    async def emit() -> None:
        async with window:
            await s.emit("bench-miss", wait=False)

    try:
        t0 = time.perf_counter()
        await asyncio.gather(*(emit() for _ in range(count)))
        await asyncio.wait_for(done, benchlib.TIMEOUT)
        return time.perf_counter() - t0
    finally:
        s.bus.remove_message_handler(on_message)


async def measure(quick: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"anomalies": []}
    for n in COUNTS:
        ping: list[int] = []
        miss: list[int] = []
        hit: list[int] = []
        pipe = float("nan")
        count = 100 if quick else PIPELINED
        async with benchlib.Session(jobs(n), label=f"events bench, {n} jobs") as s:
            # Misses first, hits last: a hit starts N jobs at once, the heaviest load here.
            step = "warm-up"
            try:
                for _ in range(3):
                    await s.emit("bench-miss")
                step = "EmitEvent(bench-miss), one at a time"
                for _ in range(20 if quick else 300):
                    ping.append(await benchlib.timed(s.ping))
                    miss.append(await benchlib.timed(lambda s=s: s.emit("bench-miss")))
                step = f"{count} x EmitEvent(bench-miss, wait=False)"
                pipe = await pipelined(s, count)
                step = f"EmitEvent(bench-hit) starting {n} tasks"
                await s.emit("bench-hit")
                for _ in range(5 if quick else (100 if n <= 10 else 25)):
                    ping.append(await benchlib.timed(s.ping))
                    hit.append(await benchlib.timed(lambda s=s: s.emit("bench-hit")))
            except (DBusError, TimeoutError) as e:
                s.failure(step, e)
            left = [p for p in s.descendants() if p.name() != "dbus-daemon"]
            if left:
                out["anomalies"].append(
                    f"{n} jobs: {len(left)} job processes still running after every emit returned"
                )
        out["anomalies"] += s.anomalies
        out[n] = {"ping": ping, "miss": miss, "hit": hit, "pipelined": pipe, "pipelined_n": count}
    return out


def run(quick: bool) -> dict[str, Any]:
    m = asyncio.run(measure(quick))
    rows = []
    data: dict[str, Any] = {}
    for n in COUNTS:
        r = m[n]
        ping = benchlib.summary(r["ping"], "ms")
        data[n] = {"ping": ping}
        rows.append([n, "baseline: Ping", ping["median"], ping["p95"], 1e3 / ping["median"], 1.0])
        for key, label in [("miss", "EmitEvent miss"), ("hit", "EmitEvent hit")]:
            st = benchlib.summary(r[key], "ms")
            data[n][key] = st
            if n == 0 and key == "hit":
                continue  # with no job, a hit is a miss
            rows.append(
                [
                    n,
                    label,
                    st["median"],
                    st["p95"],
                    1e3 / st["median"] if st["n"] else float("nan"),
                    benchlib.ratio(st["median"], ping["median"]),
                ]
            )
        pipe = r["pipelined"]
        data[n]["pipelined_per_s"] = r["pipelined_n"] / pipe
        rows.append(
            [
                n,
                f"{r['pipelined_n']} x EmitEvent miss, no wait",
                pipe * 1e3 / r["pipelined_n"],
                float("nan"),
                r["pipelined_n"] / pipe,
                float("nan"),
            ]
        )
    notes = []
    try:
        match_us = (data[100]["miss"]["median"] - data[0]["miss"]["median"]) * 1e3 / 100
        per10 = data[10]["hit"]["median"] / 10
        per100 = data[100]["hit"]["median"] / 100
        notes.append(
            f"A hit costs {per10:.2f} ms per job with 10 jobs and {per100:.2f} ms per job with"
            f" 100 ({per100 / per10:.1f}x): near 1x means the cost of an event grows linearly"
            " with the jobs it starts. A miss with 100 jobs loaded costs"
            f" {match_us:+.1f} us per loaded job over one with none: the manager only looks at"
            " the jobs whose expressions name the event."
        )
        if per100 > 1.5 * per10:
            m["anomalies"].append(
                f"an event that starts 100 jobs costs {per100 / per10:.1f}x as much per job as"
                " one that starts 10: the cost grows with the square of the number of jobs"
                " started together (see the note)"
            )
    except (KeyError, ZeroDivisionError):
        pass
    return benchlib.result(
        "events",
        [
            benchlib.table(
                "Event dispatch (ms per event; events per second)",
                ["jobs", "operation", "median ms", "p95 ms", "events/s", "x Ping"],
                rows,
            )
        ],
        notes=notes,
        anomalies=m["anomalies"],
        headline=[
            benchlib.headline(
                f"EmitEvent(wait=True), {n} jobs, {kind} (median)",
                data[n][kind]["median"],
                data[n]["ping"]["median"],
                "ms",
                "Ping",
            )
            for n, kind in [(0, "miss"), (100, "miss"), (10, "hit"), (100, "hit")]
        ],
        data=data,
    )


if __name__ == "__main__":
    benchlib.main(run, DESCRIPTION)
