"""Pure pieces of issue 12, no process and no bus: failure summaries, the timeline observer,
the status view, the DOT graph and the SVG plot."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from busmgr.config import parse_job
from busmgr.events import Event
from busmgr.graph import GraphJob, to_dot
from busmgr.job import Failure, Job, State
from busmgr.jobclass import JobClass
from busmgr.plot import to_svg
from busmgr.statusview import format_duration, format_status, process_tree
from busmgr.timeline import Timeline

SVG = "{http://www.w3.org/2000/svg}"


# ------------------------------------------------------------------ failures
@pytest.mark.parametrize(
    ("failure", "text"),
    [
        (Failure("main", 1), "main exited with status 1"),
        (Failure("main", signal=9), "main killed by signal KILL"),
        (Failure("pre-start", 4), "pre-start exited with status 4"),
        (Failure("main", reason="lost bus name org.x.Y"), "lost bus name org.x.Y"),
        (
            Failure("respawn", 1, None, "respawned too fast (3 in 5s)"),
            "respawned too fast (3 in 5s), last: main exited with status 1",
        ),
        (
            Failure("main", 3, None, "exited before it was ready"),
            "main exited with status 3: exited before it was ready",
        ),
        (Failure("main", reason='exec "/nope": No such file'), 'exec "/nope": No such file'),
        (Failure("post-stop", reason="boom"), "post-stop: boom"),
        (Failure("stop"), "stop failed"),
    ],
)
def test_failure_summary(failure: Failure, text: str) -> None:
    assert failure.summary() == text


# ------------------------------------------------------------------ the timeline
class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class QuietHost:
    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def test_timeline_records_states_runs_and_failures() -> None:
    clock = Clock()
    timeline = Timeline(clock)
    job = Job(JobClass(name="svc"), "", {}, QuietHost())  # type: ignore[arg-type]
    assert timeline.history(job).state_since == 1000.0  # never changed: since the start
    clock.now = 1001.0
    job.state = State.STARTING
    timeline.job_event(job, Event.make("starting", {}))
    timeline.job_changed(job)
    clock.now = 1001.5
    job.state = State.RUNNING
    timeline.job_changed(job)
    timeline.job_event(job, Event.make("started", {}))
    history = timeline.history(job)
    assert (history.state, history.state_since, history.running_since) == (
        State.RUNNING,
        1001.5,
        1001.5,
    )
    clock.now = 1003.0
    job.failure = Failure("main", 1)
    job.state = State.STOPPING
    timeline.job_changed(job)
    assert history.running_since is None and history.last_failure_at == 1003.0
    job.failure = None  # a respawn clears the job's own failure: the history keeps it
    job.state = State.STARTING
    timeline.job_changed(job)
    assert history.last_failure == Failure("main", 1)
    (run,) = timeline.runs()
    assert (run.starting, run.running, run.failures) == (1001.0, 1001.5, [1003.0])
    assert (run.result, run.reason) == ("failed", "main exited with status 1")
    timeline.instance_removed(job)
    assert timeline.runs()[0].state == "waiting"  # the run outlives its instance


# ------------------------------------------------------------------ the status view
def test_durations() -> None:
    assert format_duration(0.45) == "450ms"
    assert format_duration(3723.4) == "1h 2min 3s"
    assert format_duration(90061) == "1d 1h 1min"
    assert format_duration(-5) == "0ms"


def test_process_tree_nests_by_parent() -> None:
    parents = {10: 1, 11: 10, 12: 11, 13: 10}
    lines = process_tree(
        [("main", 10), ("other", 11), ("other", 12), ("other", 13)],
        parent=parents.get,
        command=lambda pid: f"cmd{pid}",
    )
    assert lines == ["10 main cmd10", "├─11 cmd11", "│  └─12 cmd12", "└─13 cmd13"]


def test_status_lines_name_the_reason_and_the_places() -> None:
    props = {
        "Job": "web",
        "Instance": "",
        "Goal": "stop",
        "State": "waiting",
        "MainPID": 0,
        "Result": "failed",
        "ResultReason": "respawned too fast (3 in 5s), last: main exited with status 1",
        "ExitStatus": 1,
        "ExitSignal": "",
        "Respawns": 4,
        "BusName": "org.x.Web",
        "LogPath": "/logs/web.log",
        "Source": "/jobs/web.conf",
        "StateTimestamp": 1_000_000_000,
    }
    lines = format_status(props, {"Description": "the web"}, [], ["boom"], now=1010.0)
    text = "\n".join(lines)
    assert lines[0] == "web stop/waiting"
    assert "Result: failed: respawned too fast (3 in 5s)" in text
    assert "(10s ago)" in text
    assert "Respawned: 4 times" in text
    assert "Bus name: org.x.Web" in text and "Log: /logs/web.log" in text
    assert lines[-1].strip() == "boom"


# ------------------------------------------------------------------ the graph
def _job(text: str, name: str) -> JobClass:
    parsed = parse_job(text, name=name, path=f"{name}.conf")
    assert parsed.job is not None, parsed.diagnostics
    return parsed.job


def test_graph_ties_jobs_and_events() -> None:
    jobs = [
        _job("start on net-up IFACE=eth*\nstop on net-down\nemits web-up\nexec x\n", "web"),
        _job("start on started web and cache-ready\nstop on stopping JOB=web\nexec x\n", "proxy"),
        _job("start on started JOB=*\ntask\nexec x\n", "audit"),
        _job("dbus org.x.Echo\nexec x\n", "echo"),
    ]
    dot = to_dot(GraphJob.of(j) for j in jobs)
    found = re.findall(r'"([^"]+)" -> "([^"]+)" \[(.*)\];', dot)
    edges: dict[tuple[str, str], list[str]] = {}
    for a, b, attrs in found:
        edges.setdefault((a, b), []).append(attrs)
    (net_up,) = edges[("event:net-up", "job:web")]
    assert "darkgreen" in net_up and 'label="IFACE=eth*"' in net_up
    assert "dashed" in edges[("event:net-down", "job:web")][0]
    assert "dotted" in edges[("job:web", "event:web-up")][0]
    web_proxy = sorted(edges[("job:web", "job:proxy")])
    assert len(web_proxy) == 2  # start on started web; stop on stopping JOB=web
    assert 'darkgreen, label="started"' in web_proxy[0]
    assert 'dashed, label="stopping"' in web_proxy[1]
    assert ("event:cache-ready", "job:proxy") in edges
    assert ("event:started JOB=*", "job:audit") in edges  # a glob names no single job
    assert ("bus:org.x.Echo", "job:echo") in edges
    assert dot == to_dot(reversed([GraphJob.of(j) for j in jobs]))  # deterministic


def test_graph_quotes_names() -> None:
    dot = to_dot([GraphJob('we"ird\\name')])
    assert '"job:we\\"ird\\\\name"' in dot


# ------------------------------------------------------------------ the plot
def _run(job: str, instance: str = "", **kw: Any) -> dict[str, Any]:
    run = {
        "Job": job,
        "Instance": instance,
        "Task": False,
        "Starting": 0,
        "Running": 0,
        "Stopped": 0,
        "State": "running",
        "Goal": "start",
        "Result": "ok",
        "Reason": "",
        "Failures": [],
    }
    run.update(kw)
    return run


def test_plot_draws_one_bar_per_instance_coloured_by_state() -> None:
    t0 = 1_700_000_000_000_000
    runs = [
        _run("a", Starting=t0 + 1000, Running=t0 + 200_000),
        _run("b", "x", Starting=t0 + 5000, Running=t0 + 30_000),
        _run(
            "c",
            Starting=t0 + 2000,
            State="waiting",
            Goal="stop",
            Result="failed",
            Reason="respawned too fast",
            Stopped=t0 + 90_000,
            Failures=[t0 + 10_000, t0 + 50_000, t0 + 90_000],
        ),
        _run("d", Task=True, Starting=t0, Running=t0 + 1, Stopped=t0 + 400_000, State="waiting"),
        _run("e", Starting=t0 + 3000, State="spawned"),
    ]
    root = ET.fromstring(to_svg(t0, runs, now=t0 + 500_000))
    bars = [r for r in root.iter(f"{SVG}rect") if r.get("class") == "bar"]
    assert [(b.get("data-job"), b.get("data-state")) for b in bars] == [
        ("d", "stopped"),
        ("a", "running"),
        ("c", "failed"),
        ("e", "starting"),
        ("b", "running"),
    ]
    width = {b.get("data-job"): float(b.get("width", 0)) for b in bars}
    assert width["d"] > width["a"] > width["b"]  # the task's bar runs to its end
    assert width["e"] > width["a"]  # still starting: up to now
    failures = [p for p in root.iter(f"{SVG}path") if p.get("class") == "failure"]
    assert len(failures) == 3
    assert "respawned too fast" in "".join(failures[0].itertext())


def test_plot_of_nothing_is_still_an_svg() -> None:
    root = ET.fromstring(to_svg(1, [], now=2))
    assert root.tag == f"{SVG}svg"
