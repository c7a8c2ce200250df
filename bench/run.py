"""Run every benchmark, print the results, and write them to docs/PERFORMANCE.md.

Usage: ``python bench/run.py [--quick] [--output docs/PERFORMANCE.md] [--only NAME...]``
(``make bench`` runs it with ``--output docs/PERFORMANCE.md``).

Each ``bench/bench_NAME.py`` runs in its own interpreter (``bench_NAME.py --json``), one after
the other, so that process-wide state of one benchmark (the subreaper flag and the SIGCHLD
handler of the spawn benchmark, the memory a benchmark leaves allocated) cannot bias the next;
no two benchmarks compete for the machine's cores. A benchmark that fails or overruns its time
limit is reported as such and the others still run.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import json
import os
import platform
import signal
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import benchlib  # noqa: E402  (bench/ is not a package; run.py puts it on the path)

BENCHMARKS = [
    "spawn",
    "jobs",
    "activation",
    "events",
    "memory",
    "burst",
    "cli",
    "session",
    "peers",
    "scale",
    "soak",
]
TITLES = {
    "spawn": "1. Spawn cost",
    "jobs": "2. Job start and stop through the manager",
    "activation": "3. Activation latency",
    "events": "4. Event dispatch",
    "memory": "5. Memory",
    "burst": "6. Bursts: one event starts 200 jobs",
    "cli": "7. The command line's round trip",
    "session": "8. Session start-up",
    "peers": "9. Side by side: supervisord, circus and the floor",
    "scale": "10. Cost curves: 10 to 5,000 jobs",
    "soak": "11. Soak: 10,000 start/stop cycles, 1,000 respawns, 1,000 activations",
}
# Explanations of failures that have been diagnosed: (text that identifies the failure in an
# anomaly, what it is). The report adds the explanation whenever the failure shows up again.
KNOWN_CAUSES = [
    (
        "BlockingIOError: [Errno 11]",
        "**The manager loses its bus connection under a burst of signals.** When one event"
        " starts or stops many jobs at once (200 in section 6; 50 tasks started by concurrent"
        " `StartJob` calls were seen to do it too), the manager queues"
        " hundreds of signals (`JobStarting`, `JobStarted`, `PropertiesChanged`, ...) in one"
        " loop turn, faster than `dbus-daemon` reads them, and its socket's send buffer fills."
        " dbus-fast (5.2.0, `aio/message_bus.py`, `_MessageWriter.write_callback`) then gets"
        " `EAGAIN` from `sock.send` and treats it as fatal: it finalizes the connection"
        " (`BlockingIOError: [Errno 11] Resource temporarily unavailable`), later sends fail"
        " with `EBADF` (`OSError: [Errno 9] Bad file descriptor`, `KeyError: '6 is not"
        " registered'`), the caller gets `NoReply`, and the manager logs `lost the connection"
        " to the bus; stopping` and exits 1. The same bug is reported against dbus-fast's"
        " ancestor (python-dbus-next issue #153, 'Aio write_callback terminates connection"
        " upon EAGAIN'). A client subscribed to every signal (as `busmgr events --follow` is)"
        " slows the daemon's reading down enough to make it happen within a few rounds."
        " Reproduce: `.venv/bin/python bench/bench_burst.py` (200 job files `start on"
        " bench-go` / `stop on bench-stop` / `exec sleep 1000`, then `EmitEvent(bench-go,"
        " wait)` and `EmitEvent(bench-stop, wait)` in a loop, with and without a client"
        " that did `AddMatch(\"type='signal'\")`). Possible fixes, in busmgr's bus layer: treat"
        " `BlockingIOError` in the writer as 'wait until writable' (wrap or patch the writer),"
        " and/or coalesce the per-turn signal flush.",
    ),
]
LIMIT_S = 240  # per benchmark; the whole run normally takes about ten minutes
LIMITS = {"peers": 600, "scale": 420}  # the longer ones (1,000 and 5,000 jobs, circus' pace)


def run_one(name: str, quick: bool, figures: Path | None = None) -> tuple[dict[str, Any], float]:
    """Run ``bench_NAME.py --json`` in a child interpreter; its result and the seconds taken.
    ``figures``: the directory where a benchmark that draws pictures writes them."""
    argv = [sys.executable, str(HERE / f"bench_{name}.py"), "--json"]
    if quick:
        argv.append("--quick")
    if figures is not None:
        argv += ["--figures", str(figures)]
    limit = LIMITS.get(name, LIMIT_S)
    t0 = time.perf_counter()
    # Its own process group, so that on overrun the benchmark and what it started get SIGTERM
    # (the sessions it started stop their jobs on SIGTERM) before anything is killed.
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, text=True
    )
    try:
        out, err = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        return _failed(name, f"did not finish within {limit} s; stopped", err), limit
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        return _failed(name, f"exited with status {proc.returncode}", err), took
    try:
        res: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return _failed(name, "printed no result", err), took
    if err.strip():
        res.setdefault("notes", []).append(
            "The benchmark wrote to stderr: `" + " | ".join(err.strip().splitlines()[-3:]) + "`"
        )
    return res, took


def _failed(name: str, what: str, stderr: str) -> dict[str, Any]:
    tail = " | ".join(stderr.strip().splitlines()[-6:])
    return benchlib.result(name, [], anomalies=[f"the benchmark {what}: `{tail}`"], failed=True)


def machine() -> dict[str, str]:
    cpu = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        kb = int(f.readline().split()[1])
        mem = f"{kb / (1 << 20):.1f} GiB"
    dbus = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        dbus = subprocess.run(
            ["dbus-daemon", "--version"], capture_output=True, text=True, timeout=10
        ).stdout.splitlines()[0]
    commit = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        git = ["git", "-C", str(HERE.parent)]
        commit = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--", "busmgr"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        if dirty:
            commit += " (with uncommitted changes in busmgr/)"
    return {
        "CPU": cpu or platform.processor() or platform.machine(),
        "cores (nproc)": str(os.cpu_count()),
        "memory": mem,
        "kernel": f"{platform.system()} {platform.release()} {platform.machine()}",
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "dbus-fast": metadata.version("dbus-fast"),
        "dbus-daemon": dbus,
        "busmgr commit": commit,
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def document(results: list[tuple[dict[str, Any], float]], info: dict[str, str], args: Any) -> str:
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    total = sum(t for _, t in results)
    out = [
        "# busmgr performance",
        "",
        "This file is written by `make bench` (`bench/run.py --output docs/PERFORMANCE.md`);"
        " edit `bench/` rather than this file. Speed and memory goals of busmgr are measured"
        " here, never by timed assertions in the tests.",
        "",
        f"Run on {when}{' with `--quick` (few samples: a smoke run)' if args.quick else ''},"
        f" {total:.0f} s in all.",
        "",
        "## Headline figures",
        "",
        "| figure | busmgr | baseline | ratio |",
        "|---|---:|---:|---:|",
    ]
    for res, _ in results:
        for row in res.get("headline", []):
            out.append("| " + " | ".join(row) + " |")
    summaries = [res["summary"] for res, _ in results if res.get("summary")]
    if summaries:
        out += [
            "",
            "## Side by side: peers and floors",
            "",
            "Every figure of busmgr beside supervisord's, circus' and the floor's, measured in the"
            " same run, the systems taking turns (section 9 says how, and what bounds each"
            " figure that misses its target).",
            "",
        ]
        out += [benchlib.render_tables({"tables": summaries})]
    findings = [f"*{res['name']}*: {a}" for res, _ in results for a in res.get("anomalies", [])]
    out += ["", "## Findings", ""]
    if findings:
        out += ["What went wrong or looked wrong in this run (details in each section):", ""]
        out += [f"- {f}" for f in findings]
        known = [text for key, text in KNOWN_CAUSES if any(key in f for f in findings)]
        if known:
            out += ["", "Diagnosed causes:", ""]
            out += [f"- {text}" for text in known]
    else:
        out.append("No errors, timeouts, leaks or left-over processes in this run.")
    out += [
        "",
        "## The machine",
        "",
        "| | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in info.items()),
        "",
        "The machine is small and shared (2 cores, and other work may run on it: a load"
        " average near or above 2 means the benchmarks competed for the cores), so absolute"
        " figures move from run to run by 10-30 %, more under load. Ratios are steadier:"
        " every ratio compares two figures measured in the same process of the same run,"
        " interleaved sample by sample.",
        "",
        "## Method",
        "",
        "`bench/run.py` runs each `bench/bench_*.py` in its own Python process, one after"
        " another. Each can also run alone: `.venv/bin/python bench/bench_spawn.py [--quick]`"
        " prints its tables. Times are `time.perf_counter_ns` deltas around the operation seen"
        " from the caller: the median (typical) and the 95th percentile (the slow tail) of the"
        " samples. Integration benchmarks start a real `busmgr session --print-address"
        " --no-import --services-dir DIR --state-dir DIR` (which starts its own private"
        " `dbus-daemon`) and drive it with a dbus-fast client; nothing sleeps to wait, every"
        " wait is for a reply, a signal or a process exit, with a 30 s limit whose expiry is"
        " reported as a finding. Each session is stopped with SIGTERM and waited for, and any"
        " process it leaves behind is reported (and killed).",
        "",
        "To reproduce: `make bench` (about ten minutes), or `.venv/bin/python bench/run.py"
        " --quick` for a smoke run of a few seconds that does not touch this file unless"
        " given `--output`.",
        "",
    ]
    for res, took in results:
        name = res["name"]
        out += [f"## {TITLES.get(name, name)}", ""]
        with contextlib.suppress(ImportError):
            out += [importlib.import_module(f"bench_{name}").DESCRIPTION.strip(), ""]
        out += [f"Results ({took:.0f} s):", "", benchlib.render_tables(res)]
    return "\n".join(out).rstrip() + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few samples: a smoke run")
    parser.add_argument("--output", type=Path, help="write the Markdown report here")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run only these")
    args = parser.parse_args()
    info = machine()
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)  # pictures are written there too
    results = []
    for name in args.only or BENCHMARKS:
        print(f"== {TITLES[name]} ...", flush=True)
        figures = args.output.parent if args.output else None
        res, took = run_one(name, args.quick, figures)
        results.append((res, took))
        print(benchlib.render_tables(res), f"({took:.1f} s)\n", sep="", flush=True)
    info["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.output.with_name(args.output.name + ".new")
        tmp.write_text(document(results, info, args))
        tmp.replace(args.output)
        print(f"wrote {args.output}")
    failed = [r["name"] for r, _ in results if r.get("failed")]
    if failed:
        print(f"benchmarks that failed: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
