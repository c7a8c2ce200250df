"""Activation latency through busmgr, against a stock dbus-daemon activating the same service."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import benchlib
from dbus_fast import Message
from dbus_fast.aio import MessageBus
from dbus_fast.errors import DBusError

DESCRIPTION = """
A client's first method call (`org.example.Echo.Echo("x")`) to a bus name that has no owner
yet, timed until the reply arrives. The service is the same small dbus-fast program in both
set-ups, `python -m busmgr.examples.echo` (a fresh Python interpreter that imports dbus-fast,
connects, exports its object and claims its name), so most of the time is that program starting.

* *baseline: stock dbus-daemon*: a plain private `dbus-daemon` whose servicedir holds a
  `.service` file with `Exec=` that command; the daemon spawns it itself. No busmgr.
* *busmgr*: a `busmgr session` with a job `dbus org.bench.Echo` + `exec` that command. The daemon
  asks busmgr (`ActivationRequest`), busmgr emits `dbus-activation`, starts the job, the job is
  ready when the name is owned, and the daemon delivers the held call.
* *busmgr + dbus-broker*: `busmgr session --broker`, the same job; the bus is a dbus-broker that
  busmgr launched. The broker signals `Activate` on its controller connection, busmgr starts the
  job the same way, and the broker delivers the held call once the name is owned.

Between samples the service is stopped (busmgr: `StopJob(wait=True)`; stock: SIGTERM to the
service) and the benchmark waits for `NameOwnerChanged` to report the name free; the two
set-ups alternate sample by sample. *Warm call* is the same call to the already running service:
the plain D-Bus round trip. *20 concurrent first calls* sends twenty calls at once to the
unowned name and times the last reply; exactly one service process must serve them all.

*Failure*: the service (`/bin/sh -c "exit 3"`) exits with status 3 before claiming its name.
The figure is the time until the caller receives the error. busmgr reports the job's failure to
the daemon (`ActivationFailure`), so the caller hears at once why; the stock daemon notices
its own child's exit (`Spawn.ChildExited`). Without either report a caller waits for the bus's
25 s method call timeout. With dbus-broker busmgr `Reset`s the request (the broker has no
activation timeout at all: without the Reset the caller would wait for its own timeout).
"""

NAME = "org.bench.Echo"
FAIL = "org.bench.Fail"
PATH = "/org/example/Echo"
IFACE = "org.example.Echo"
ECHO_CMD = (
    f"{benchlib.PYTHON} -m busmgr.examples.echo --name {NAME} --path {PATH} --interface {IFACE}"
)
FAIL_CMD = '/bin/sh -c "exit 3"'
CONCURRENT = 20


def echo_call(name: str = NAME, member: str = "Echo") -> Message:
    if member == "Pid":
        return benchlib.method(name, PATH, IFACE, "Pid")
    return benchlib.method(name, PATH, IFACE, "Echo", "s", ["x"])


class Side:
    """One set-up: a bus with a client, a way to stop the service, and its samples."""

    def __init__(self, label: str, bus: MessageBus) -> None:
        self.label = label
        self.bus = bus
        self.watch = benchlib.NameWatch(bus)
        self.first: list[int] = []
        self.warm: list[int] = []
        self.fail: list[int] = []
        self.concurrent: list[int] = []
        self.errors: list[str] = []
        self.fail_errors: set[str] = set()

    async def first_call(self) -> None:
        t0 = time.perf_counter_ns()
        body = await benchlib.call(self.bus, echo_call())
        self.first.append(time.perf_counter_ns() - t0)
        if body != ["x"]:
            self.errors.append(f"unexpected reply {body!r}")
        self.warm.append(await benchlib.timed(lambda: benchlib.call(self.bus, echo_call())))

    async def concurrent_first_calls(self) -> set[int]:
        t0 = time.perf_counter_ns()
        pids = await asyncio.gather(
            *(benchlib.call(self.bus, echo_call(member="Pid")) for _ in range(CONCURRENT))
        )
        self.concurrent.append(time.perf_counter_ns() - t0)
        return {p[0] for p in pids}

    async def failing_call(self) -> None:
        t0 = time.perf_counter_ns()
        try:
            await benchlib.call(self.bus, echo_call(FAIL), timeout=40)
        except DBusError as e:
            self.fail.append(time.perf_counter_ns() - t0)
            self.fail_errors.add(f"{e.type}: {e.text}")
        except TimeoutError:
            self.errors.append("a call to the failing service got no reply within 40 s")
        else:
            self.errors.append("a call to the failing service succeeded")

    async def stop_service(self, session: benchlib.Session | None) -> None:
        if session is not None:
            await session.stop("echo")
        else:
            pid = (
                await benchlib.call(
                    self.bus,
                    benchlib.method(
                        benchlib.DBUS,
                        benchlib.DBUS_PATH,
                        benchlib.DBUS,
                        "GetConnectionUnixProcessID",
                        "s",
                        [NAME],
                    ),
                )
            )[0]
            os.kill(pid, signal.SIGTERM)  # started by our own private daemon
        await self.watch.wait_unowned(NAME)


async def measure(quick: bool) -> dict[str, Any]:
    jobs = {
        "echo": f"dbus {NAME}\nexec {ECHO_CMD}\n",
        "fail": f"dbus {FAIL}\nexec {FAIL_CMD}\n",
    }
    rounds = 3 if quick else 12
    fail_rounds = 3 if quick else 10
    anomalies: list[str] = []
    extra_procs: list[str] = []
    async with (
        benchlib.StockBus({NAME: ECHO_CMD, FAIL: FAIL_CMD}) as stock,
        benchlib.Session(jobs, label="activation bench") as s,
        benchlib.Session(jobs, label="activation bench (broker)", extra=("--broker",)) as b,
    ):
        assert stock.bus is not None and s.bus is not None and b.bus is not None
        sides = [
            (Side("stock", stock.bus), None),
            (Side("busmgr", s.bus), s),
            (Side("broker", b.bus), b),
        ]
        for side, _ in sides:
            await side.watch.subscribe()
        for i in range(rounds + 1):
            for side, sess in sides:
                try:
                    await side.first_call()
                    await side.stop_service(sess)
                except (DBusError, TimeoutError) as e:
                    side.errors.append(f"activation round {i}: {type(e).__name__}: {e}")
                if i == 0:  # the first round warms the page cache for the interpreter
                    side.first.clear()
                    side.warm.clear()
        for i in range(max(1, rounds // 3)):
            for side, sess in sides:
                try:
                    pids = await side.concurrent_first_calls()
                    if len(pids) != 1:
                        side.errors.append(
                            f"{CONCURRENT} concurrent first calls were served by {len(pids)}"
                            " processes"
                        )
                    await side.stop_service(sess)
                except (DBusError, TimeoutError) as e:
                    side.errors.append(f"concurrent round {i}: {type(e).__name__}: {e}")
        for _ in range(fail_rounds):
            for side, _sess in sides:
                await side.failing_call()
        # Nothing may be left of the failed service, and echo must be stopped.
        for label, sess in (("busmgr", s), ("busmgr + dbus-broker", b)):
            extra_procs = [
                f"{p.pid} {p.name()}"
                for p in sess.descendants()
                if p.name() not in ("dbus-daemon", "dbus-broker")
            ]
            if extra_procs:
                anomalies.append(f"{label}: processes still running after the runs: {extra_procs}")
    anomalies += s.anomalies + b.anomalies
    for side, _ in sides:
        anomalies += [f"{side.label}: {e}" for e in side.errors]
    return {"sides": {side.label: side for side, _ in sides}, "anomalies": anomalies}


def run(quick: bool) -> dict[str, Any]:
    m = asyncio.run(measure(quick))
    stock: Side = m["sides"]["stock"]
    bm: Side = m["sides"]["busmgr"]
    br: Side = m["sides"]["broker"]
    rows = []
    data: dict[str, Any] = {}
    for label, key in [
        ("first call (activation)", "first"),
        (f"{CONCURRENT} concurrent first calls", "concurrent"),
        ("warm call (service running)", "warm"),
        ("failure: service exits 3", "fail"),
    ]:
        a = benchlib.summary(getattr(stock, key), "ms")
        b = benchlib.summary(getattr(bm, key), "ms")
        c = benchlib.summary(getattr(br, key), "ms")
        data[key] = {"stock": a, "busmgr": b, "broker": c}
        rows.append(
            [
                label,
                a["median"],
                a["p95"],
                b["median"],
                b["p95"],
                benchlib.ratio(b["median"], a["median"]),
                c["median"],
                c["p95"],
                benchlib.ratio(c["median"], a["median"]),
                b["n"],
            ]
        )
    notes = [
        "Error the caller got from busmgr: " + "; ".join(sorted(bm.fail_errors))
        if bm.fail_errors
        else "busmgr: no error reply was received for the failing service",
        "Error the caller got from the stock daemon: " + "; ".join(sorted(stock.fail_errors)),
        "Error the caller got from busmgr + dbus-broker: " + "; ".join(sorted(br.fail_errors))
        if br.fail_errors
        else "busmgr + dbus-broker: no error reply was received for the failing service",
    ]
    anomalies = m["anomalies"]
    for side in ("busmgr", "broker"):
        fail = data["fail"][side]
        if fail["n"] and fail["p95"] > 1000:
            anomalies.append(
                f"{side} failure latency p95 {fail['p95']:.0f} ms is over the 1 s target"
            )
    return benchlib.result(
        "activation",
        [
            benchlib.table(
                "Activation, milliseconds from the call to the reply",
                [
                    "case",
                    "stock median",
                    "stock p95",
                    "busmgr median",
                    "busmgr p95",
                    "busmgr x stock",
                    "busmgr+broker median",
                    "busmgr+broker p95",
                    "busmgr+broker x stock",
                    "samples",
                ],
                rows,
            )
        ],
        notes=notes,
        anomalies=anomalies,
        headline=[
            benchlib.headline(
                "activation, first call to reply (median)",
                data["first"]["busmgr"]["median"],
                data["first"]["stock"]["median"],
                "ms",
                "stock dbus-daemon",
            ),
            benchlib.headline(
                "activation through busmgr + dbus-broker, first call to reply (median)",
                data["first"]["broker"]["median"],
                data["first"]["stock"]["median"],
                "ms",
                "stock dbus-daemon",
            ),
            benchlib.headline(
                "activation failure, call to error (p95; target < 1 s)",
                data["fail"]["busmgr"]["p95"],
                data["fail"]["stock"]["p95"],
                "ms",
                "stock dbus-daemon",
            ),
        ],
        data=data,
    )


if __name__ == "__main__":
    benchlib.main(run, DESCRIPTION)
