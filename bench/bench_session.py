"""Session start-up: `busmgr session -- true` against `dbus-run-session -- true`."""

from __future__ import annotations

import compileall
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import benchlib

import busmgr

DESCRIPTION = """
How long a session takes, from the command to its end, with nothing in it: `busmgr session --
true` (a private `dbus-daemon`, the manager on it with the installed D-Bus services imported,
`true` run in the session, everything stopped, the manager's exit) against `dbus-run-session --
true` (the reference tool: a private `dbus-daemon`, the command, the daemon sent SIGTERM; it does
not wait for the daemon to exit). *Ready* is the time until `busmgr session --print-address`
prints its address (the manager owns its name, every job is loaded and activatable), against
`dbus-daemon --session --print-address` printing its own. Each command is a fresh process with
its own `XDG_RUNTIME_DIR`; the methods are interleaved sample by sample.

busmgr is a Python program: a fresh interpreter (with its `site`), `asyncio` and `dbus-fast`
are paid before any of busmgr's own work, and the rows *floor* measure them alone (`python -c
pass`, `python -c "import asyncio, dbus_fast.aio"`, and `python -c "import busmgr.runtime"`,
everything the manager imports). The last table splits one traced session (`BUSMGR_TRACE=1`):
from `exec` to the manager's `main` (the interpreter and the imports), from there to ready (the
bus started, connected, the jobs loaded, the names owned, activation set up), and the shutdown
after the command exited (jobs, the bus connection, the private bus's exit, which busmgr waits
for so that nothing is left behind).

busmgr's modules are byte-compiled first, as an installed busmgr's are (`make install` and pip
compile them): an environment with `PYTHONDONTWRITEBYTECODE=1` would otherwise compile every
module at every start.
"""

PYTHON = benchlib.PYTHON
TRACE = re.compile(r"busmgr: trace (start-up|shutdown): (.*) ms: ")


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DBUS_", "BUSMGR_"))}
    env["XDG_RUNTIME_DIR"] = str(tmp)
    return env


def _fresh() -> Path:
    return Path(tempfile.mkdtemp(prefix="busmgr-bench-session-"))


def _run(argv: list[str], env: dict[str, str]) -> int:
    """Wall time of ``argv`` to its exit, in ns; the process must exit 0."""
    t0 = time.perf_counter_ns()
    proc = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    took = time.perf_counter_ns() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited {proc.returncode}: {proc.stderr.decode()[-300:]}")
    return took


def _until_address(argv: list[str], env: dict[str, str]) -> int:
    """Time until ``argv`` prints its first stdout line (an address), in ns; then SIGTERM and
    wait (not timed)."""
    t0 = time.perf_counter_ns()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    took = time.perf_counter_ns() - t0
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=benchlib.TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"{argv[0]} did not exit after SIGTERM") from None
    if not line.strip():
        raise RuntimeError(f"{argv[0]} printed no address")
    return took


def methods() -> dict[str, Callable[[Path], int]]:
    busmgr = [PYTHON, "-m", "busmgr", "session"]

    def state(tmp: Path) -> list[str]:
        return ["--state-dir", str(tmp / "state")]

    return {
        "baseline: dbus-run-session -- true": lambda tmp: _run(
            ["dbus-run-session", "--", "true"], _env(tmp)
        ),
        "busmgr session -- true": lambda tmp: _run([*busmgr, *state(tmp), "--", "true"], _env(tmp)),
        "baseline: dbus-daemon --session --print-address, to the address": lambda tmp: (
            _until_address(
                ["dbus-daemon", "--session", "--nofork", "--nopidfile", "--print-address"],
                _env(tmp),
            )
        ),
        "busmgr session --print-address, to the address (ready)": lambda tmp: _until_address(
            [*busmgr, *state(tmp), "--print-address"], _env(tmp)
        ),
        "floor: python -c pass": lambda tmp: _run([PYTHON, "-c", "pass"], _env(tmp)),
        "floor: python -c 'import asyncio, dbus_fast.aio'": lambda tmp: _run(
            [PYTHON, "-c", "import asyncio, dbus_fast.aio"], _env(tmp)
        ),
        "floor: python -c 'import busmgr.runtime' (every import of the manager)": lambda tmp: _run(
            [PYTHON, "-c", "import busmgr.runtime"], _env(tmp)
        ),
    }


def traced(rounds: int) -> dict[str, list[float]]:
    """Step offsets (ms) of traced sessions: the start-up's and the shutdown's."""
    steps: dict[str, list[float]] = {}
    for _ in range(rounds):
        tmp = _fresh()
        try:
            env = {**_env(tmp), "BUSMGR_TRACE": "1"}
            argv = [PYTHON, "-m", "busmgr", "session", "--state-dir", str(tmp / "state")]
            proc = subprocess.run([*argv, "--", "true"], env=env, capture_output=True, text=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        for key, text in TRACE.findall(proc.stderr):
            for part in text.split(" | "):
                what, _, ms = part.rpartition(" ")
                m = re.match(r"main \(([0-9.e-]+)s after exec\)", what)
                if m:
                    steps.setdefault("exec to main (interpreter, imports)", []).append(
                        float(m.group(1)) * 1000
                    )
                    continue
                steps.setdefault(f"{key}: {what}", []).append(float(ms))
    return steps


def measure(quick: bool) -> tuple[dict[str, list[int]], dict[str, list[float]]]:
    compileall.compile_dir(str(Path(busmgr.__file__).parent), quiet=1)
    every = methods()
    samples: dict[str, list[int]] = {name: [] for name in every}
    rounds = 3 if quick else 15
    for i in range(rounds + 1):
        for name, fn in every.items():
            tmp = _fresh()
            try:
                took = fn(tmp)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            if i:  # the first round warms the page cache
                samples[name].append(took)
    return samples, traced(2 if quick else 5)


def run(quick: bool) -> dict[str, Any]:
    if shutil.which("dbus-run-session") is None:
        raise SystemExit("dbus-run-session is missing (Debian package dbus-bin)")
    samples, steps = measure(quick)
    names = list(samples)
    summaries = {name: benchlib.summary(ns, "ms") for name, ns in samples.items()}
    session_base = summaries[names[0]]["median"]
    ready_base = summaries[names[2]]["median"]
    rows = []
    for name in names:
        s = summaries[name]
        base = ready_base if "address" in name else session_base
        rows.append([name, s["median"], s["p95"], benchlib.ratio(s["median"], base), s["n"]])
    step_rows = [[what, statistics.median(ms), len(ms)] for what, ms in steps.items()]
    busmgr_run = summaries["busmgr session -- true"]["median"]
    imports = summaries[names[6]]["median"]
    interpreter = summaries[names[4]]["median"]
    notes = [
        f"`busmgr session -- true` takes {busmgr_run:.0f} ms against {session_base:.0f} ms for"
        f" `dbus-run-session -- true` ({busmgr_run / session_base:.1f}x; the target is 2x). What"
        f" bounds it: a bare interpreter with its `site` takes {interpreter:.0f} ms"
        f" ({interpreter / session_base:.1f}x the reference by itself), and importing what the"
        f" manager needs (asyncio, dbus-fast, busmgr) {imports:.0f} ms in all; busmgr's own"
        " work after the imports (start-up and shutdown, traced below) is the rest.",
    ]
    return benchlib.result(
        "session",
        [
            benchlib.table(
                "A session with nothing in it, milliseconds",
                ["command", "median ms", "p95 ms", "x baseline", "samples"],
                rows,
            ),
            benchlib.table(
                "A traced `busmgr session -- true`: each step, ms since its phase began (median)",
                ["step", "ms", "sessions"],
                step_rows,
            ),
        ],
        notes=notes,
        headline=[
            benchlib.headline(
                "busmgr session -- true (median; target <= 2x)",
                busmgr_run,
                session_base,
                "ms",
                "dbus-run-session -- true",
            ),
            benchlib.headline(
                "busmgr session --print-address, to the address (median)",
                summaries[names[3]]["median"],
                ready_base,
                "ms",
                "dbus-daemon --print-address",
            ),
        ],
        data={"samples": summaries, "steps": {k: statistics.median(v) for k, v in steps.items()}},
    )


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    benchlib.main(run, DESCRIPTION)
