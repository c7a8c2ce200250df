"""The registry without processes or a bus: classes and instances by name, reloads that never
change a running instance's class, retirement of classes whose file went away, and what the
observers are told."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from busmgr.config import parse_event_expr
from busmgr.job import Goal, Job, State
from busmgr.jobclass import JobClass
from busmgr.observe import JobObserver
from busmgr.registry import Registry


class Recorder(JobObserver):
    def __init__(self) -> None:
        self.log: list[tuple[str, Any]] = []

    def classes_changed(self, added: Iterable[JobClass], removed: Iterable[str]) -> None:
        self.log.append(("classes", (sorted(c.name for c in added), sorted(removed))))

    def instance_added(self, job: Job) -> None:
        self.log.append(("added", (job.name, job.instance)))

    def instance_removed(self, job: Job) -> None:
        self.log.append(("removed", (job.name, job.instance)))


class Host:
    def __getattr__(self, name: str) -> Any:
        return lambda *args: None


def registry(*classes: JobClass) -> tuple[Registry, Recorder]:
    rec = Recorder()
    reg = Registry(Host(), rec)  # type: ignore[arg-type]
    for cls in classes:
        reg.add_class(cls)
    return reg, rec


def running(reg: Registry, name: str) -> Job:
    """The one instance of ``name``, pretending it runs (the state machine is tested
    elsewhere)."""
    job = reg.instance(name, "")
    assert job is not None
    job.goal, job.state = Goal.START, State.RUNNING
    return job


def test_a_job_without_instance_has_one_instance_for_as_long_as_its_class() -> None:
    reg, rec = registry(JobClass(name="a"), JobClass(name="i", instance="$X"))
    assert reg.instance("a", "") is not None and reg.instances["i"] == {}
    assert rec.log == [
        ("added", ("a", "")),
        ("classes", (["a"], [])),
        ("classes", (["i"], [])),
    ]


def test_reload_swaps_the_class_of_an_instance_at_rest_at_once() -> None:
    old = JobClass(name="a")
    reg, _ = registry(old)
    job = reg.instance("a", "")
    new = JobClass(name="a", description="new")
    reg.swap({"a": new})
    assert reg.classes["a"] is new and job is not None and job.jobclass is new


def test_a_running_instance_keeps_its_class_until_it_is_at_rest() -> None:
    old = JobClass(name="a", stop_on=parse_event_expr("old"))
    reg, _ = registry(old)
    job = running(reg, "a")
    new = JobClass(name="a")
    reg.swap({"a": new})
    assert reg.classes["a"] is new and job.jobclass is old
    assert reg.interested("old") == frozenset({"a"})  # its old stop on still counts
    job.goal, job.state = Goal.STOP, State.WAITING
    reg.at_rest(job)
    assert job.jobclass is new and reg.interested("old") == frozenset()
    assert reg.instance("a", "") is job


def test_a_class_whose_file_went_away_retires_when_its_instance_is_at_rest() -> None:
    reg, rec = registry(JobClass(name="a"), JobClass(name="b"))
    job = running(reg, "a")
    rec.log.clear()
    reg.swap({"b": reg.classes["b"]})
    assert "a" not in reg.classes and reg.instance("a", "") is job  # still listed, controllable
    assert rec.log == [("classes", (["b"], ["a"]))]
    job.goal, job.state = Goal.STOP, State.WAITING
    reg.at_rest(job)
    assert reg.instance("a", "") is None and "a" not in reg.instances
    assert rec.log[-1] == ("removed", ("a", ""))


def test_an_instance_of_an_instance_job_goes_away_at_rest() -> None:
    cls = JobClass(name="i", instance="$X")
    reg, rec = registry(cls)
    job, new = reg.get_or_create(cls, "one", {"X": "one"})
    assert new and reg.instance("i", "one") is job
    reg.at_rest(job)
    assert reg.instance("i", "one") is None
    assert rec.log[-1] == ("removed", ("i", "one"))


def test_interested_indexes_start_on_stop_on_and_activation() -> None:
    reg, _ = registry(
        JobClass(name="s", start_on=parse_event_expr("go and ready")),
        JobClass(name="t", stop_on=parse_event_expr("halt or go")),
        JobClass(name="d", dbus_name="org.x.D", activated_by=(), task=True),
    )
    assert reg.interested("go") == frozenset({"s", "t"})
    assert reg.interested("halt") == frozenset({"t"})
    assert reg.interested("nothing") == frozenset()
