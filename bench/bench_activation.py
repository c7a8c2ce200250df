"""Activation latency through busmgr, against a stock dbus-daemon activating the same service."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import benchlib
from dbus_fast import Message
from dbus_fast.aio import MessageBus
from dbus_fast.errors import DBusError

DESCRIPTION = """
A client's first method call to a bus name that has no owner yet, timed until the reply
arrives, for two services that start fast in different ways:

* *dconf*: the installed `dconf-service` (C, GLib; `/usr/libexec/dconf-service`), called with
  `org.freedesktop.DBus.Peer.Ping`. It owns its name 3-4 ms after `exec`, so busmgr's own
  path (the request, the spawn, the signals it sends while the service starts) is most of the
  difference.
* *echo*: a minimal dbus-fast service, `python -m busmgr.examples.echo` (a fresh Python
  interpreter that imports dbus-fast, connects, exports its object and claims its name), called
  with `org.example.Echo.Echo("x")`; most of the time is that program starting.

Three set-ups, the same service in each:

* *stock dbus-daemon* (the baseline): a plain private `dbus-daemon` whose servicedir holds a
  `.service` file with `Exec=` the command; the daemon spawns it itself. No busmgr.
* *busmgr*: a `busmgr session` (activator mode) with a job `dbus NAME` + `exec` the command
  (for dconf what busmgr's importer makes of the installed `ca.desrt.dconf.service`). The daemon
  asks busmgr (`ActivationRequest`), busmgr emits `dbus-activation`, starts the job, the job is
  ready when the name is owned, and the daemon delivers the held call.
* *busmgr + dbus-broker*: `busmgr session --broker`, the same jobs; the bus is a dbus-broker
  that busmgr launched. The broker signals `Activate` on its controller connection, busmgr
  starts the job the same way, and the broker delivers the held call once the name is owned.

Between samples the service is stopped (busmgr: `StopJob(wait=True)`; stock: SIGTERM to the
service) and the benchmark waits for `NameOwnerChanged` to report the name free; the three
set-ups alternate sample by sample, and the first round (which warms the page cache) is not
counted. *Warm call* is the same call to the already running service: the plain D-Bus round
trip. *20 concurrent first calls* sends twenty calls at once to the unowned echo name and times
the last reply; exactly one service process must serve them all.

*Never claims its name*: the service (`/bin/sleep 60`) runs but never claims its name; one call on
each set-up, all three at once. The stock daemon fails the call when its `service_start_timeout`
(25 s) runs out, with `TimedOut` and no reason; busmgr reads that limit from the bus's
configuration and fails the request a margin before it (22.5 s, before the callers' own 25 s
method call timeout too) with its own reason, while the job goes on to its `ready timeout`. The
broker has no activation timeout: busmgr's `Reset` is the callers' only answer before their
own timeout. (Not run with `--quick`.)

*Where the time goes*: `BUSMGR_TRACE=1` makes the manager log each activation's steps with their
time from the request; a session of its own, traced after the measured runs, gives the last
table. A profile of the manager (py-spy at 2000 Hz over 150 dconf activations;
`bench/profile_activation.py` makes one) and the trace found, before issue 13: the manager moved
itself into the job's cgroup around `posix_spawn`, which waits for an RCU grace period after a
quiet spell (8-20 ms, every cold activation); it wrote its state file between the request and
the spawn (a fraction of a millisecond); it read `/proc/PID/stat` of the new process, which
waits while the program maps its libraries (0.5 ms); and it sent its signals, which the bus
daemon must route, while the service was claiming its name. The clone spawn (born in the
cgroup), the state written 0.1 s after a change, the start time taken from the clock read around
the spawn, and the signals held while a `dbus` job is on its way up (at most 50 ms) took them
off the path. Left on it: the request's own hop (the daemon's `ActivationRequest` to busmgr),
three turns of the manager's loop (the request, the `dbus-activation` event, the job's
`starting` event) and the spawn.

*Failure*: the service (`/bin/sh -c "exit 3"`) exits with status 3 before claiming its name.
The figure is the time until the caller receives the error. busmgr reports the job's failure to
the daemon (`ActivationFailure`), so the caller hears at once why; the stock daemon notices
its own child's exit (`Spawn.ChildExited`). With dbus-broker busmgr `Reset`s the request (the
broker has no activation timeout at all: without the Reset the caller would wait for its own
timeout).
"""

ECHO = "org.bench.Echo"
DCONF = "ca.desrt.dconf"
FAIL = "org.bench.Fail"
SILENT = "org.bench.Silent"
SILENT_CMD = "/bin/sleep 60"
PATH = "/org/example/Echo"
IFACE = "org.example.Echo"
ECHO_CMD = (
    f"{benchlib.PYTHON} -m busmgr.examples.echo --name {ECHO} --path {PATH} --interface {IFACE}"
)
DCONF_CMD = "/usr/libexec/dconf-service"
FAIL_CMD = '/bin/sh -c "exit 3"'
CONCURRENT = 20


@dataclass(frozen=True)
class Service:
    """One activatable service: its bus name, job name, command and the call that wakes it."""

    key: str
    name: str
    job: str
    command: str

    def call(self, member: str = "") -> Message:
        if self.name == DCONF:
            return benchlib.ping(self.name)
        if member == "Pid":
            return benchlib.method(self.name, PATH, IFACE, "Pid")
        return benchlib.method(self.name, PATH, IFACE, "Echo", "s", ["x"])


SERVICES = [Service("dconf", DCONF, DCONF, DCONF_CMD), Service("echo", ECHO, "echo", ECHO_CMD)]


@dataclass
class Side:
    """One set-up: a bus with a client, a way to stop a service, and its samples."""

    label: str
    bus: MessageBus
    session: benchlib.Session | None
    first: dict[str, list[int]] = field(default_factory=dict)
    warm: dict[str, list[int]] = field(default_factory=dict)
    fail: list[int] = field(default_factory=list)
    silent: list[int] = field(default_factory=list)
    silent_error: str = ""
    concurrent: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    fail_errors: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.watch = benchlib.NameWatch(self.bus)

    async def first_call(self, svc: Service) -> None:
        t0 = time.perf_counter_ns()
        body = await benchlib.call(self.bus, svc.call())
        self.first.setdefault(svc.key, []).append(time.perf_counter_ns() - t0)
        if svc.name == ECHO and body != ["x"]:
            self.errors.append(f"unexpected reply {body!r}")
        warm = await benchlib.timed(lambda: benchlib.call(self.bus, svc.call()))
        self.warm.setdefault(svc.key, []).append(warm)

    async def concurrent_first_calls(self) -> set[int]:
        svc = SERVICES[1]
        t0 = time.perf_counter_ns()
        pids = await asyncio.gather(
            *(benchlib.call(self.bus, svc.call("Pid")) for _ in range(CONCURRENT))
        )
        self.concurrent.append(time.perf_counter_ns() - t0)
        return {p[0] for p in pids}

    async def failing_call(self) -> None:
        t0 = time.perf_counter_ns()
        try:
            await benchlib.call(self.bus, benchlib.ping(FAIL), timeout=40)
        except DBusError as e:
            self.fail.append(time.perf_counter_ns() - t0)
            self.fail_errors.add(f"{e.type}: {e.text}")
        except TimeoutError:
            self.errors.append("a call to the failing service got no reply within 40 s")
        else:
            self.errors.append("a call to the failing service succeeded")

    async def never_claimed(self) -> None:
        """One call to the service that never claims its name: the error and when it came."""
        t0 = time.perf_counter_ns()
        try:
            await benchlib.call(self.bus, benchlib.ping(SILENT), timeout=60)
        except DBusError as e:
            self.silent.append(time.perf_counter_ns() - t0)
            self.silent_error = f"{e.type}: {e.text}"
        except TimeoutError:
            self.errors.append("a call to the silent service got no reply within 60 s")
        else:
            self.errors.append("a call to the silent service succeeded")
        if self.session is not None:
            await self.session.stop("silent")

    async def stop_service(self, svc: Service) -> None:
        if self.session is not None:
            await self.session.stop(svc.job)
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
                        [svc.name],
                    ),
                )
            )[0]
            os.kill(pid, signal.SIGTERM)  # started by our own private daemon
        await self.watch.wait_unowned(svc.name)


async def activations(sides: list[Side], svc: Service, rounds: int) -> None:
    for i in range(rounds + 1):
        for side in sides:
            try:
                await side.first_call(svc)
                await side.stop_service(svc)
            except (DBusError, TimeoutError) as e:
                side.errors.append(f"{svc.key} activation round {i}: {type(e).__name__}: {e}")
            if i == 0:  # the first round warms the page cache for the program
                side.first.pop(svc.key, None)
                side.warm.pop(svc.key, None)


async def measure(quick: bool) -> dict[str, Any]:
    jobs = {svc.job: f"dbus {svc.name}\nexec {svc.command}\n" for svc in SERVICES}
    jobs["fail"] = f"dbus {FAIL}\nexec {FAIL_CMD}\n"
    jobs["silent"] = f"dbus {SILENT}\nexec {SILENT_CMD}\n"
    stock_files = {svc.name: svc.command for svc in SERVICES}
    stock_files[FAIL] = FAIL_CMD
    stock_files[SILENT] = SILENT_CMD
    rounds = {"dconf": 5 if quick else 60, "echo": 3 if quick else 20}
    fail_rounds = 3 if quick else 10
    anomalies: list[str] = []
    async with (
        benchlib.StockBus(stock_files) as stock,
        benchlib.Session(jobs, label="activation bench") as s,
        benchlib.Session(jobs, label="activation bench (broker)", extra=("--broker",)) as b,
    ):
        assert stock.bus is not None and s.bus is not None and b.bus is not None
        sides = [Side("stock", stock.bus, None), Side("busmgr", s.bus, s), Side("broker", b.bus, b)]
        for side in sides:
            await side.watch.subscribe()
        for svc in SERVICES:
            await activations(sides, svc, rounds[svc.key])
        for i in range(max(1, rounds["echo"] // 3)):
            for side in sides:
                try:
                    pids = await side.concurrent_first_calls()
                    if len(pids) != 1:
                        side.errors.append(
                            f"{CONCURRENT} concurrent first calls were served by {len(pids)}"
                            " processes"
                        )
                    await side.stop_service(SERVICES[1])
                except (DBusError, TimeoutError) as e:
                    side.errors.append(f"concurrent round {i}: {type(e).__name__}: {e}")
        for _ in range(fail_rounds):
            for side in sides:
                await side.failing_call()
        if not quick:
            await asyncio.gather(*(side.never_claimed() for side in sides))
        # Nothing may be left of the failed service, and the services must be stopped.
        for label, sess in (("busmgr", s), ("busmgr + dbus-broker", b)):
            extra_procs = [
                f"{p.pid} {p.name()}"
                for p in sess.descendants()
                if p.name() not in ("dbus-daemon", "dbus-broker")
            ]
            if extra_procs:
                anomalies.append(f"{label}: processes still running after the runs: {extra_procs}")
    anomalies += s.anomalies + b.anomalies
    for side in sides:
        anomalies += [f"{side.label}: {e}" for e in side.errors]
    return {"sides": {side.label: side for side in sides}, "anomalies": anomalies}


TRACE_LINE = re.compile(r"busmgr: trace ca\.desrt\.dconf: (.*) ms: ok$", re.MULTILINE)
#: The traced steps shown, in the order they happen (see busmgr/trace.py).
TRACED = {
    "activate": "the request reaches the activation path",
    "starting": "the job is starting (the dbus-activation event handled)",
    "spawn main": "the spawn begins",
    "spawned main": "the spawn returns (the service has exec'd)",
    "owned": "the service owns its name (the bus delivers the call)",
    "running": "the job is running (the owner checked to be its process)",
}


async def traced(rounds: int) -> dict[str, list[float]]:
    """Step offsets (ms from the request) of dconf activations in a session of its own with
    ``BUSMGR_TRACE=1``, after the measured ones (its log lines are not on their path)."""
    jobs = {DCONF: f"dbus {DCONF}\nexec {DCONF_CMD}\n"}
    os.environ["BUSMGR_TRACE"] = "1"
    try:
        async with benchlib.Session(jobs, label="activation bench (traced)") as s:
            assert s.bus is not None
            side = Side("traced", s.bus, s)
            await side.watch.subscribe()
            await activations([side], SERVICES[0], rounds)
            text = (s.tmp / "stderr.log").read_text(errors="replace")
    finally:
        del os.environ["BUSMGR_TRACE"]
    steps: dict[str, list[float]] = {}
    for line in TRACE_LINE.findall(text)[1:]:  # the first warmed the page cache
        for part in line.split(" | "):
            what, _, ms = part.rpartition(" ")
            if what in TRACED:
                steps.setdefault(what, []).append(float(ms))
    return steps


def run(quick: bool) -> dict[str, Any]:
    m = asyncio.run(measure(quick))
    steps = asyncio.run(traced(5 if quick else 20))
    sides: dict[str, Side] = m["sides"]
    stock, bm, br = sides["stock"], sides["busmgr"], sides["broker"]
    rows = []
    data: dict[str, Any] = {}
    cases = [
        ("dconf: first call (cold activation)", lambda side: side.first.get("dconf", [])),
        ("echo: first call (cold activation)", lambda side: side.first.get("echo", [])),
        (f"echo: {CONCURRENT} concurrent first calls", lambda side: side.concurrent),
        ("dconf: warm call (service running)", lambda side: side.warm.get("dconf", [])),
        ("echo: warm call (service running)", lambda side: side.warm.get("echo", [])),
        ("failure: service exits 3", lambda side: side.fail),
        ("failure: service never claims its name", lambda side: side.silent),
    ]
    keys = ["dconf", "echo", "concurrent", "dconf warm", "echo warm", "fail", "silent"]
    for (label, samples), key in zip(cases, keys, strict=True):
        a = benchlib.summary(samples(stock), "ms")
        b = benchlib.summary(samples(bm), "ms")
        c = benchlib.summary(samples(br), "ms")
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
    for side, who in ((bm, "busmgr"), (stock, "the stock daemon"), (br, "busmgr + dbus-broker")):
        if side.silent_error:
            notes.append(f"Never claims its name, the error from {who}: {side.silent_error}")
    step_rows = [
        [what, TRACED[what], statistics.median(steps[what]), len(steps[what])]
        for what in TRACED
        if steps.get(what)
    ]
    if all(steps.get(k) for k in ("spawn main", "spawned main", "owned")):
        to_spawn = statistics.median(steps["spawn main"])
        spawn = statistics.median(
            b - a for a, b in zip(steps["spawn main"], steps["spawned main"], strict=True)
        )
        owned = statistics.median(steps["owned"])
        extra = data["dconf"]["busmgr"]["median"] - data["dconf"]["stock"]["median"]
        notes.append(
            f"Traced (a session of its own, BUSMGR_TRACE=1): busmgr's path from the"
            f" activation request to the spawn takes {to_spawn:.2f} ms, the spawn itself (into"
            f" the job's cgroup, until the service has exec'd) {spawn:.2f} ms, and the name is"
            f" owned {owned:.1f} ms after the request. In the measured runs a dconf activation"
            f" through busmgr took {extra:+.2f} ms against the stock daemon spawning it itself."
        )
    anomalies = m["anomalies"]
    for side in ("busmgr", "broker"):
        fail = data["fail"][side]
        if fail["n"] and fail["p95"] > 1000:
            anomalies.append(
                f"{side} failure latency p95 {fail['p95']:.0f} ms is over the 1 s target"
            )
        silent = data["silent"][side]
        if silent["n"] and silent["median"] >= 25000:
            anomalies.append(
                f"{side}: the call to a service that never claims its name got its error after"
                f" {silent['median'] / 1000:.1f} s, not before the bus's 25 s"
            )
    if bm.silent_error and not bm.silent_error.startswith("org.busmgr.Error.JobFailed"):
        anomalies.append(f"busmgr: the never-claiming call got {bm.silent_error}")
    headline = [
        benchlib.headline(
            "dconf-service cold activation, first call to reply (median; target <= 1.10x)",
            data["dconf"]["busmgr"]["median"],
            data["dconf"]["stock"]["median"],
            "ms",
            "stock dbus-daemon",
        ),
        benchlib.headline(
            "minimal dbus-fast service cold activation (median; target <= 1.05x)",
            data["echo"]["busmgr"]["median"],
            data["echo"]["stock"]["median"],
            "ms",
            "stock dbus-daemon",
        ),
        benchlib.headline(
            "dconf-service cold activation through busmgr + dbus-broker (median)",
            data["dconf"]["broker"]["median"],
            data["dconf"]["stock"]["median"],
            "ms",
            "stock dbus-daemon",
        ),
        benchlib.headline(
            "activation of a service that never claims its name, call to error "
            "(target: before the bus timeout, with busmgr's reason)",
            data["silent"]["busmgr"]["median"],
            data["silent"]["stock"]["median"],
            "ms",
            "stock dbus-daemon's timeout",
        ),
        benchlib.headline(
            "activation failure, call to error (p95; target < 1 s)",
            data["fail"]["busmgr"]["p95"],
            data["fail"]["stock"]["p95"],
            "ms",
            "stock dbus-daemon",
        ),
    ]
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
            ),
            benchlib.table(
                "Where the time goes in a dconf activation through busmgr: ms from the request",
                ["step", "what", "median ms", "samples"],
                step_rows,
            ),
        ],
        notes=notes,
        anomalies=anomalies,
        headline=headline,
        data=data,
    )


if __name__ == "__main__":
    benchlib.main(run, DESCRIPTION)
