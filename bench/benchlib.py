"""What every benchmark shares: statistics, result tables, a real ``busmgr session`` and a stock
``dbus-daemon``, and the command line of a benchmark run on its own.

A benchmark module ``bench_NAME.py`` has a ``DESCRIPTION`` (Markdown prose for
``docs/PERFORMANCE.md``: what each figure means and what it is compared with) and a
``run(quick: bool) -> dict`` returning a :func:`result`. ``bench/run.py`` runs each module in its
own interpreter (``python bench/bench_NAME.py --json``) so that process-wide state (the child
subreaper flag, a SIGCHLD handler, memory) never leaks from one benchmark into the next.

Timing model: every figure is a sample of ``time.perf_counter_ns`` deltas; the tables show the
median and the 95th percentile. A ratio always divides two medians measured in the same process,
with the measured operation and its baseline interleaved sample by sample, so that a burst of
load from the other core hits both alike.

Nothing here sleeps to wait: every wait is for a reply, a signal or a process exit, each with a
timeout, and a timeout becomes an *anomaly* in the result instead of a crash.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import psutil
from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.errors import DBusError

PYTHON = sys.executable
MANAGER = "org.busmgr.Manager1"
MANAGER_PATH = "/org/busmgr/Manager1"
DBUS = "org.freedesktop.DBus"
DBUS_PATH = "/org/freedesktop/DBus"
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_.]*(Error|Exception|Exit)\b.*")
_TROUBLE = re.compile(r"lost|fail|error|exception|cannot|timed? ?out", re.IGNORECASE)
_LOOP_NOISE = re.compile(r"busmgr: (Exception in callback|Task exception|Future exception)")
TIMEOUT = 30.0  # seconds; far above any expected figure, so hitting it is itself a finding

# --------------------------------------------------------------------------------------------
# statistics and results


def percentile(values: Iterable[float], q: float) -> float:
    """The ``q``-th percentile (0..100), linear interpolation between closest ranks."""
    data = sorted(values)
    if not data:
        return float("nan")
    k = (len(data) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


def summary(ns: list[int], unit: str = "us") -> dict[str, float]:
    """Median, p95, min and count of nanosecond samples, in ``unit`` (``us`` or ``ms``)."""
    div = {"us": 1e3, "ms": 1e6, "s": 1e9}[unit]
    vals = [v / div for v in ns]
    if not vals:
        return {"median": float("nan"), "p95": float("nan"), "min": float("nan"), "n": 0}
    return {
        "median": statistics.median(vals),
        "p95": percentile(vals, 95),
        "min": min(vals),
        "n": len(vals),
    }


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def fmt(x: Any, digits: int = 1) -> str:
    """A number for a table: fixed digits, ``-`` for a missing value."""
    if x is None or (isinstance(x, float) and x != x):
        return "-"
    if isinstance(x, float):
        if digits == 1 and abs(x) < 10:  # small figures keep two significant digits or more
            digits = 3 if abs(x) < 1 else 2
        return f"{x:,.{digits}f}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def table(title: str, columns: list[str], rows: list[list[Any]]) -> dict[str, Any]:
    return {"title": title, "columns": columns, "rows": [[fmt(c) for c in r] for r in rows]}


def result(name: str, tables: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """A benchmark's result: its tables, ``notes`` (observations) and ``anomalies`` (findings:
    errors, timeouts, leaks, processes left behind), and any raw figures in ``data``."""
    return {
        "name": name,
        "tables": tables,
        "notes": extra.pop("notes", []),
        "anomalies": extra.pop("anomalies", []),
        "data": extra.pop("data", {}),
        **extra,
    }


def render_tables(res: dict[str, Any]) -> str:
    """The result's tables as Markdown, then its notes and anomalies."""
    out = []
    for t in res["tables"]:
        cols = t["columns"]
        out.append(f"**{t['title']}**\n")
        out.append("| " + " | ".join(cols) + " |")
        out.append("|" + "|".join(["---"] + ["---:"] * (len(cols) - 1)) + "|")
        out.extend("| " + " | ".join(r) + " |" for r in t["rows"])
        out.append("")
    for n in res.get("notes", []):
        out.append(f"- {n}")
    for a in res.get("anomalies", []):
        out.append(f"- **Anomaly:** {a}")
    return "\n".join(out).rstrip() + "\n"


#: Where a benchmark that draws pictures writes them (``--figures DIR``; None: nowhere).
FIGURES: Path | None = None


def main(run: Callable[[bool], dict[str, Any]], description: str) -> None:
    """The command line of a benchmark module run on its own."""
    global FIGURES
    parser = argparse.ArgumentParser(description=description.strip().splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few samples: a smoke run")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--figures", type=Path, help="write pictures (SVG) into this directory")
    args = parser.parse_args()
    FIGURES = args.figures
    res = run(args.quick)
    if args.json:
        json.dump(res, sys.stdout)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render_tables(res))


# --------------------------------------------------------------------------------------------
# D-Bus calls


def method(
    destination: str,
    path: str,
    interface: str,
    member: str,
    signature: str = "",
    body: list[Any] | None = None,
) -> Message:
    return Message(
        destination=destination,
        path=path,
        interface=interface,
        member=member,
        signature=signature,
        body=body or [],
    )


async def call(bus: MessageBus, msg: Message, timeout: float = TIMEOUT) -> list[Any]:
    """Send ``msg``, return the reply's body; an error reply raises :class:`DBusError`."""
    reply = await asyncio.wait_for(bus.call(msg), timeout)
    if reply.message_type is MessageType.ERROR:
        raise DBusError(reply.error_name, reply.body[0] if reply.body else "")
    return list(reply.body)


def ping(destination: str) -> Message:
    return method(destination, "/", "org.freedesktop.DBus.Peer", "Ping")


class NameWatch:
    """Every ``NameOwnerChanged`` of the bus, and a way to wait for a name to lose its owner."""

    def __init__(self, bus: MessageBus) -> None:
        self.owner: dict[str, str] = {}
        self._changed = asyncio.Event()
        self._bus = bus
        bus.add_message_handler(self._on_message)

    async def subscribe(self) -> None:
        rule = f"type='signal',sender='{DBUS}',member='NameOwnerChanged'"
        await call(self._bus, method(DBUS, DBUS_PATH, DBUS, "AddMatch", "s", [rule]))

    def _on_message(self, msg: Message) -> None:
        if msg.message_type is MessageType.SIGNAL and msg.member == "NameOwnerChanged":
            name, _old, new = msg.body
            self.owner[name] = new
            self._changed.set()

    async def wait_unowned(self, name: str, timeout: float = TIMEOUT) -> None:
        """Return once ``name`` has no owner (asks the bus once, then waits for the signal)."""

        async def wait() -> None:
            try:
                await call(self._bus, method(DBUS, DBUS_PATH, DBUS, "GetNameOwner", "s", [name]))
            except DBusError:
                return
            while self.owner.get(name, "x") != "":
                self._changed.clear()
                await self._changed.wait()

        self.owner.pop(name, None)
        await asyncio.wait_for(wait(), timeout)


# --------------------------------------------------------------------------------------------
# a real busmgr session


class Session:
    """``python -m busmgr session`` with the given job files, and a dbus-fast client on its bus.

    Use as ``async with Session(jobs) as s``; on exit the session gets SIGTERM and is waited
    for, and any process it started that survives is reported in :attr:`anomalies` (and killed:
    those are ours).
    """

    def __init__(
        self,
        jobs: dict[str, str],
        *,
        label: str = "session",
        extra: tuple[str, ...] = (),
        environ: dict[str, str] | None = None,
    ) -> None:
        self.jobs = jobs
        self.label = label
        self.extra = extra  # more `busmgr session` options (`--broker`)
        self.environ = environ or {}  # more environment (`BUSMGR_CGROUPS=0`)
        self.anomalies: list[str] = []
        self.tmp = Path(tempfile.mkdtemp(prefix="busmgr-bench-"))
        self.proc: asyncio.subprocess.Process | None = None
        self.address = ""
        self.bus: MessageBus | None = None
        self.startup_s = float("nan")
        self.failures: list[str] = []

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def __aenter__(self) -> Session:
        services = self.tmp / "services.d"
        services.mkdir()
        for name, text in self.jobs.items():
            (services / f"{name}.conf").write_text(textwrap.dedent(text))
        env = dict(os.environ)
        env.pop("DBUS_SESSION_BUS_ADDRESS", None)
        env.pop("BUSMGR_ADDRESS", None)
        env["XDG_RUNTIME_DIR"] = str(self.tmp)
        env.update(self.environ)
        argv = [
            PYTHON,
            "-m",
            "busmgr",
            "session",
            "--print-address",
            "--no-import",
            "--services-dir",
            str(services),
            "--state-dir",
            str(self.tmp / "state"),
            *self.extra,
        ]
        t0 = time.perf_counter()
        with open(self.tmp / "stderr.log", "wb") as err:
            self.proc = await asyncio.create_subprocess_exec(
                *argv, stdout=asyncio.subprocess.PIPE, stderr=err, env=env
            )
        assert self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), TIMEOUT)
        except TimeoutError:
            line = b""
        self.address = line.decode().strip()
        if not self.address:
            await self._terminate()
            raise RuntimeError(f"{self.label}: busmgr session printed no address: {self.stderr()}")
        self.startup_s = time.perf_counter() - t0
        self.bus = await MessageBus(bus_address=self.address).connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def stderr(self, lines: int = 5) -> str:
        path = self.tmp / "stderr.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return " | ".join(text.strip().splitlines()[-lines:])

    def diagnosis(self) -> str:
        """What the manager said went wrong: its own log lines and the exceptions it printed,
        each once, in order of first appearance (or the last lines of its stderr)."""
        path = self.tmp / "stderr.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        seen: list[str] = []
        for raw in text.splitlines():
            line = raw.strip()
            if line in seen:
                continue
            if _EXCEPTION_LINE.match(line) or (
                line.startswith("busmgr:") and _TROUBLE.search(line) and not _LOOP_NOISE.match(line)
            ):
                seen.append(line)
        return "; ".join(seen) if seen else self.stderr()

    def failure(self, what: str, e: BaseException) -> None:
        """Record that ``what`` failed with ``e``. The anomaly is written when the session is
        closed, with the manager's exit status and what it logged by then (the traceback of
        a failure often reaches its stderr only after the caller got its error)."""
        text = f"{e.type}: {e.text}" if isinstance(e, DBusError) else repr(e)
        self.failures.append(f"{what} failed with {text}")

    async def call(
        self,
        member: str,
        signature: str = "",
        body: list[Any] | None = None,
        timeout: float = TIMEOUT,
    ) -> Any:
        assert self.bus is not None
        msg = method(MANAGER, MANAGER_PATH, MANAGER, member, signature, body)
        return await call(self.bus, msg, timeout)

    async def start(self, job: str, wait: bool = True) -> Any:
        return await self.call("StartJob", "sa{ss}b", [job, {}, wait])

    async def stop(self, job: str, wait: bool = True) -> Any:
        return await self.call("StopJob", "sa{ss}b", [job, {}, wait])

    async def emit(self, event: str, wait: bool = True, timeout: float = TIMEOUT) -> Any:
        return await self.call("EmitEvent", "sa{ss}b", [event, {}, wait], timeout)

    async def ping(self) -> None:
        assert self.bus is not None
        await call(self.bus, ping(MANAGER))

    def descendants(self) -> list[psutil.Process]:
        with contextlib.suppress(psutil.NoSuchProcess):
            return psutil.Process(self.pid).children(recursive=True)
        return []

    async def close(self) -> None:
        if self.proc is None:
            return
        exited_alone = self.proc.returncode
        left = self.descendants()
        if self.bus is not None:
            self.bus.disconnect()
            self.bus = None
        t0 = time.perf_counter()
        status = await self._terminate()
        took = time.perf_counter() - t0
        if self.failures or status != 0 or exited_alone is not None:
            what = "; ".join(self.failures) + "; " if self.failures else ""
            if exited_alone is not None:
                how = f"the manager had exited by itself with status {exited_alone}"
            else:
                how = f"`busmgr session` exited with status {status} after SIGTERM"
            self.anomalies.append(
                f"{self.label}: {what}{how}; it logged: {self.diagnosis() or 'nothing'}"
            )
        if took > 10:
            self.anomalies.append(f"{self.label}: the session took {took:.1f} s to stop")
        survivors = [
            p
            for p in left
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE and p.pid != self.pid
        ]
        for p in survivors:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        if survivors:
            names = ", ".join(f"{p.pid} {p.name()}" for p in survivors[:5])
            self.anomalies.append(
                f"{self.label}: {len(survivors)} processes left behind after the session"
                f" stopped ({names})"
            )
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(self.tmp, ignore_errors=True)

    async def _terminate(self) -> int | None:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.proc.wait(), 60)
        except TimeoutError:
            self.anomalies.append(f"{self.label}: no exit 60 s after SIGTERM; killed")
            self.proc.kill()
            return await self.proc.wait()


# --------------------------------------------------------------------------------------------
# a stock dbus-daemon, no busmgr

_STOCK_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <servicedir>{servicedir}</servicedir>
  <policy context="default">
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


class StockBus:
    """A plain private ``dbus-daemon`` (session type) whose servicedir holds ``services``
    (bus name -> ``Exec=`` line): activation as D-Bus does it with no manager at all."""

    def __init__(self, services: dict[str, str]) -> None:
        self.services = services
        self.tmp = Path(tempfile.mkdtemp(prefix="busmgr-bench-dbus-"))
        self.proc: asyncio.subprocess.Process | None = None
        self.bus: MessageBus | None = None
        self.address = ""

    async def __aenter__(self) -> StockBus:
        servicedir = self.tmp / "services"
        servicedir.mkdir()
        for name, exec_line in self.services.items():
            (servicedir / f"{name}.service").write_text(
                f"[D-BUS Service]\nName={name}\nExec={exec_line}\n"
            )
        config = self.tmp / "bus.conf"
        config.write_text(_STOCK_CONFIG.format(socket=self.tmp / "bus", servicedir=servicedir))
        self.proc = await asyncio.create_subprocess_exec(
            "dbus-daemon",
            f"--config-file={config}",
            "--nofork",
            "--nopidfile",
            "--print-address=1",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), TIMEOUT)
        self.address = line.decode().strip()
        if not self.address:
            raise RuntimeError("dbus-daemon printed no address")
        self.bus = await MessageBus(bus_address=self.address).connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.bus is not None:
            self.bus.disconnect()
        if self.proc is not None and self.proc.returncode is None:
            # Its activated children (and their babysitters) are ours: end them first.
            with contextlib.suppress(psutil.NoSuchProcess):
                for p in psutil.Process(self.proc.pid).children(recursive=True):
                    with contextlib.suppress(psutil.NoSuchProcess):
                        p.terminate()
            self.proc.terminate()
            await asyncio.wait_for(self.proc.wait(), TIMEOUT)
        shutil.rmtree(self.tmp, ignore_errors=True)


async def timed(op: Callable[[], Awaitable[Any]]) -> int:
    """Nanoseconds that ``await op()`` took."""
    t0 = time.perf_counter_ns()
    await op()
    return time.perf_counter_ns() - t0


def headline(figure: str, value: float, base: float, unit: str, base_label: str = "") -> list[str]:
    """A row of the summary table: figure, busmgr's value, the baseline's, their ratio."""
    b = f"{fmt(base)} {unit}" + (f" ({base_label})" if base_label else "")
    return [figure, f"{fmt(value)} {unit}", b, f"{fmt(ratio(value, base), 2)}x"]


# --------------------------------------------------------------------------------------------
# peers: supervisord and circus, in a virtual environment of their own

PEER_VENV = Path(tempfile.gettempdir()) / "busmgr-bench-peers"
PEER_PACKAGES = ("supervisor", "circus")
PEER_DRIVER = Path(__file__).resolve().with_name("peerdriver.py")


def peer_venv() -> Path | None:
    """A virtual environment with the peers (supervisor, circus) installed from the package
    registry pip reaches; made once under the system temp directory and kept between runs.
    Never a dependency of busmgr. None if it cannot be made (no registry): no peer figures."""
    marker = PEER_VENV / ".complete"
    if marker.exists():
        return PEER_VENV
    shutil.rmtree(PEER_VENV, ignore_errors=True)
    try:
        subprocess.run([PYTHON, "-m", "venv", str(PEER_VENV)], check=True, capture_output=True)
        subprocess.run(
            [str(PEER_VENV / "bin" / "pip"), "install", "-q", *PEER_PACKAGES],
            check=True,
            capture_output=True,
            timeout=600,
        )
    except (OSError, subprocess.SubprocessError):
        shutil.rmtree(PEER_VENV, ignore_errors=True)
        return None
    marker.touch()
    return PEER_VENV


class Peer:
    """One peer daemon (``supervisord`` or ``circus``) with N programs, driven through
    ``bench/peerdriver.py`` (which runs in the peers' environment and times each call itself).

    Use as ``async with Peer(venv, "circus", 200) as p``; on exit the daemon is stopped and
    waited for, and any program process left is reported in :attr:`anomalies` (and killed)."""

    def __init__(self, venv: Path, kind: str, n: int) -> None:
        self.venv = venv
        self.kind = kind
        self.n = n
        self.tmp = Path(tempfile.mkdtemp(prefix=f"busmgr-bench-{kind}-"))
        self.proc: asyncio.subprocess.Process | None = None
        self.pid = 0  # the daemon's
        self.anomalies: list[str] = []

    async def __aenter__(self) -> Peer:
        self.proc = await asyncio.create_subprocess_exec(
            str(self.venv / "bin" / "python"),
            str(PEER_DRIVER),
            self.kind,
            str(self.n),
            str(self.tmp),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        first = await self._read(120.0)
        self.pid = int(first["pid"])
        return self

    async def _read(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            assert self.proc.stderr is not None
            err = (await self.proc.stderr.read()).decode(errors="replace").strip().splitlines()
            raise RuntimeError(f"{self.kind} driver: {' | '.join(err[-3:])}")
        reply: dict[str, Any] = json.loads(line)
        return reply

    async def request(
        self, op: str, count: int = 1, budget: float = 0.0, timeout: float = TIMEOUT
    ) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        line = json.dumps({"op": op, "count": count, "budget": budget})
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()
        return await self._read(timeout)

    async def timed(self, op: str, count: int = 1) -> int:
        """Nanoseconds the peer's client took for ``count`` calls of ``op``."""
        return int((await self.request(op, count, timeout=120.0))["ns"])

    async def rate(self, op: str, count: int, budget: float) -> float:
        """Calls of ``op`` per second, ``count`` calls or as many as ``budget`` seconds allow."""
        reply = await self.request(op, count, budget)
        return float(reply["count"]) * 1e9 / max(1, int(reply["ns"]))

    async def pids(self) -> dict[str, int]:
        return {k: int(v) for k, v in (await self.request("pids"))["pids"].items()}

    def descendants(self) -> list[psutil.Process]:
        with contextlib.suppress(psutil.NoSuchProcess):
            return psutil.Process(self.pid).children(recursive=True)
        return []

    async def __aexit__(self, *exc: object) -> None:
        left = self.descendants()
        if self.proc is not None and self.proc.returncode is None:
            assert self.proc.stdin is not None
            with contextlib.suppress(OSError):
                self.proc.stdin.write(b'{"op": "quit"}\n')
                self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 120)
            except TimeoutError:
                self.anomalies.append(f"{self.kind}: the driver did not exit; killed")
                self.proc.kill()
                await self.proc.wait()
        survivors = [p for p in left if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        for p in survivors:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        if survivors:
            self.anomalies.append(f"{self.kind}: {len(survivors)} processes left behind")
        shutil.rmtree(self.tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# seeing a new program run, and a process wake up


class ExecWatch:
    """Every ``exec`` on the machine by a child of a chosen parent, from the kernel's process
    events connector (netlink; needs root): the moment a supervisor's new process runs its
    program, seen the same way for busmgr and its peers. ``ExecWatch.open()`` is None where
    the connector is unavailable."""

    _HDR = struct.Struct("=IHHII")
    _CN = struct.Struct("=IIIIHH")
    _EV = struct.Struct("=IIQ")
    _EXEC = 0x00000002

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._waiters: dict[int, asyncio.Future[tuple[int, int]]] = {}  # parent -> (ns, pid)

    @classmethod
    def open(cls) -> ExecWatch | None:
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 11)
        except (OSError, AttributeError):
            return None
        try:
            sock.bind((0, 1))
            op = struct.pack("=I", 1)  # PROC_CN_MCAST_LISTEN
            cn = cls._CN.pack(1, 1, 0, 0, len(op), 0) + op
            sock.send(cls._HDR.pack(cls._HDR.size + len(cn), 3, 0, 0, 0) + cn)
            sock.setblocking(False)
        except OSError:
            sock.close()
            return None
        watch = cls(sock)
        asyncio.get_running_loop().add_reader(sock.fileno(), watch._drain)
        return watch

    def expect(self, parent: int) -> asyncio.Future[tuple[int, int]]:
        """A future for ``(perf_counter_ns, pid)`` of the next exec by a child of ``parent``."""
        fut = asyncio.get_running_loop().create_future()
        self._waiters[parent] = fut
        return fut

    def _drain(self) -> None:
        now = time.perf_counter_ns()
        while True:
            try:
                data = self._sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # ENOBUFS: events were dropped; read on
                continue
            offset = 0
            while offset + self._HDR.size <= len(data):
                length = self._HDR.unpack_from(data, offset)[0]
                if length < self._HDR.size:
                    break
                body = offset + self._HDR.size + self._CN.size
                if body + self._EV.size + 8 <= offset + length:
                    what = self._EV.unpack_from(data, body)[0]
                    if what == self._EXEC and self._waiters:
                        pid = struct.unpack_from("=I", data, body + self._EV.size + 4)[0]
                        self._seen(now, pid)
                offset += (length + 3) & ~3

    def _seen(self, now: int, pid: int) -> None:
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return
        fut = self._waiters.pop(ppid, None)
        if fut is not None and not fut.done():
            fut.set_result((now, pid))

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, ValueError):
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
        self._sock.close()


def wakeups(pid: int) -> int:
    """Context switches of every thread of ``pid`` so far (each one a time the process was
    woken and ran): the difference over an idle spell counts its wake-ups."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/status") as f:
            for line in f:
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    total += int(line.split()[1])
    return total


def rss_mib(pid: int) -> float:
    return float(psutil.Process(pid).memory_info().rss) / (1 << 20)


# --------------------------------------------------------------------------------------------
# the floor: raw posix_spawn of many processes, and their reaping

SLEEP = shutil.which("sleep") or "/bin/sleep"


def floor_start(n: int) -> tuple[int, list[int]]:
    """``os.posix_spawn`` of ``n`` ``sleep 1000``, one after another (each returns once its
    child has exec'd): (nanoseconds, pids)."""
    env = dict(os.environ)
    argv = [SLEEP, "1000"]
    t0 = time.perf_counter_ns()
    pids = [os.posix_spawn(SLEEP, argv, env) for _ in range(n)]
    return time.perf_counter_ns() - t0, pids


def floor_stop(pids: list[int]) -> int:
    """SIGTERM to every pid at once, then reap each: nanoseconds until the last is reaped."""
    t0 = time.perf_counter_ns()
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    for pid in pids:
        os.waitpid(pid, 0)
    return time.perf_counter_ns() - t0


def floor_respawn() -> int:
    """The least a supervisor can do to respawn: SIGKILL a child, reap it, ``posix_spawn`` the
    next (returned once it exec'd): nanoseconds from the kill (the children are reaped)."""
    env = dict(os.environ)
    pid = os.posix_spawn(SLEEP, [SLEEP, "1000"], env)
    t0 = time.perf_counter_ns()
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    new = os.posix_spawn(SLEEP, [SLEEP, "1000"], env)
    took = time.perf_counter_ns() - t0
    os.kill(new, signal.SIGKILL)
    os.waitpid(new, 0)
    return took
