"""The command line's round trip: `busmgr status` beside `supervisorctl status` and `busctl`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import benchlib

DESCRIPTION = """
What a user or a script waits for when it asks for a job's state: a whole command, from
`fork`/`exec` to its exit, measured by the caller (`time.perf_counter_ns` around
`subprocess.run`). The three tools run one after another, sample by sample (interleaved), each
against its own idle supervisor with one running program:

* *busmgr status JOB*: the detailed status of one job (`python -m busmgr status svc`, the
  instance's and the job's properties, its process tree from `/proc` and the last lines of its
  log), over a `busmgr session --no-import` with one job (`exec sleep 1000`) running;
  *busmgr status*: one line per instance; *busmgr list*: the table.
* *supervisorctl status NAME*: supervisor (installed from the package registry into the
  virtual environment of the peers, `busmgr-bench-peers` under the system temp directory,
  shared with section 9; never a dependency of busmgr) with one `[program]` running
  `sleep 1000`, asked over its Unix socket.
* *busctl get-property*: systemd's C client reading the instance's `State` property (one call
  on the same bus): the floor of a D-Bus round trip from a command.
* *python -c pass*: the interpreter's own start-up, the floor of any Python command line.

Both Python tools run with their bytecode cached (`PYTHONDONTWRITEBYTECODE` unset and one
warm-up run first), as an installed command would. `busmgr` takes its fast path here: the
client verbs speak D-Bus over a blocking socket (`busmgr/bus/wire.py`), importing neither
asyncio nor dbus-fast.
"""

ROUNDS = 40
QUICK_ROUNDS = 5


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


SUPERVISOR_CONF = """\
[unix_http_server]
file={tmp}/supervisor.sock

[supervisord]
logfile=/dev/stdout
logfile_maxbytes=0
pidfile={tmp}/supervisord.pid
nodaemon=true

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{tmp}/supervisor.sock

[program:svc]
command=sleep 1000
startsecs=0
"""


class Supervisord:
    """supervisord in the foreground with one program; ready once it says it entered
    RUNNING state for the program (read from its log on stdout: no polling)."""

    def __init__(self, venv: Path) -> None:
        self.venv = venv
        self.tmp = Path(tempfile.mkdtemp(prefix="busmgr-bench-supervisord-"))
        self.conf = self.tmp / "supervisord.conf"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Supervisord:
        self.conf.write_text(SUPERVISOR_CONF.format(tmp=self.tmp))
        self.proc = subprocess.Popen(
            [str(self.venv / "bin" / "supervisord"), "-c", str(self.conf)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=_env(),
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + benchlib.TIMEOUT
        for line in self.proc.stdout:
            if b"entered RUNNING state" in line:
                return self
            if time.monotonic() > deadline:
                break
        raise RuntimeError("supervisord did not start its program")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=benchlib.TIMEOUT)
        shutil.rmtree(self.tmp, ignore_errors=True)


def timed_run(argv: list[str], env: dict[str, str]) -> tuple[int, int]:
    """(nanoseconds, exit status) of one whole command."""
    t0 = time.perf_counter_ns()
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter_ns() - t0, done.returncode


async def measure(quick: bool) -> dict[str, Any]:
    rounds = QUICK_ROUNDS if quick else ROUNDS
    anomalies: list[str] = []
    notes: list[str] = []
    venv = benchlib.peer_venv()
    if venv is None:
        anomalies.append("supervisor could not be installed from PyPI: no baseline")
    busctl = shutil.which("busctl")
    async with benchlib.Session({"svc": "exec sleep 1000\n"}, label="cli") as session:
        assert session.bus is not None
        await benchlib.call(
            session.bus,
            benchlib.method(
                "org.busmgr.Manager1",
                "/org/busmgr/Manager1",
                "org.busmgr.Manager1",
                "StartJob",
                "sa{ss}b",
                ["svc", {}, True],
            ),
        )
        env = _env()
        env["BUSMGR_ADDRESS"] = session.address
        py = sys.executable
        commands: dict[str, list[str]] = {
            "busmgr status JOB": [py, "-m", "busmgr", "status", "svc"],
            "busmgr status": [py, "-m", "busmgr", "status"],
            "busmgr list": [py, "-m", "busmgr", "list"],
            "python -c pass": [py, "-c", "pass"],
        }
        if busctl:
            commands["busctl get-property"] = [
                busctl,
                f"--address={session.address}",
                "get-property",
                "org.busmgr.Manager1",
                "/org/busmgr/Manager1/job/svc/_",
                "org.busmgr.Instance1",
                "State",
            ]
        with contextlib.ExitStack() as stack:
            if venv is not None:
                sup = stack.enter_context(Supervisord(venv))
                ctl = [str(venv / "bin" / "supervisorctl"), "-c", str(sup.conf)]
                commands["supervisorctl status NAME"] = [*ctl, "status", "svc"]
                commands["supervisorctl status"] = [*ctl, "status"]
            samples: dict[str, list[int]] = {name: [] for name in commands}
            for argv in commands.values():  # warm-up: bytecode caches, page cache
                await asyncio.to_thread(timed_run, argv, env)
            for _ in range(rounds):
                for name, argv in commands.items():
                    ns, status = await asyncio.to_thread(timed_run, argv, env)
                    if status != 0:
                        anomalies.append(f"`{' '.join(argv[-3:])}` exited with status {status}")
                    samples[name].append(ns)
        anomalies += session.anomalies
    stats = {name: benchlib.summary(ns, "ms") for name, ns in samples.items()}
    rows = [[name, s["median"], s["p95"], s["min"], s["n"]] for name, s in stats.items()]
    headline = []
    if "supervisorctl status NAME" in stats:
        headline.append(
            benchlib.headline(
                "`busmgr status JOB` round trip (whole command)",
                stats["busmgr status JOB"]["median"],
                stats["supervisorctl status NAME"]["median"],
                "ms",
                "supervisorctl status NAME",
            )
        )
    if "busctl get-property" in stats:
        headline.append(
            benchlib.headline(
                "`busmgr status` round trip, against busctl",
                stats["busmgr status"]["median"],
                stats["busctl get-property"]["median"],
                "ms",
                "busctl get-property",
            )
        )
    notes.append(f"{rounds} samples per command, interleaved.")
    return {"rows": rows, "headline": headline, "anomalies": anomalies, "notes": notes}


def run(quick: bool) -> dict[str, Any]:
    m = asyncio.run(measure(quick))
    return benchlib.result(
        "cli",
        [
            benchlib.table(
                "Whole command, start to exit (ms)",
                ["command", "median", "p95", "min", "n"],
                m["rows"],
            )
        ],
        notes=m["notes"],
        anomalies=m["anomalies"],
        headline=m["headline"],
    )


if __name__ == "__main__":
    benchlib.main(run, DESCRIPTION)
