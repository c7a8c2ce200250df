"""Checks across jobs: events nothing emits, cycles of blocking events, shared bus names."""

from __future__ import annotations

import pytest

from busmgr.config import Severity, cross_check, parse_job
from busmgr.jobclass import JobClass


def job(name: str, text: str) -> JobClass:
    result = parse_job(text, name=name, path=f"{name}.conf")
    assert result.job is not None, [str(d) for d in result.diagnostics]
    return result.job


def messages(*jobs: JobClass) -> list[str]:
    return [str(d) for d in cross_check(jobs)]


@pytest.mark.parametrize(
    "event",
    [
        "startup",
        "starting",
        "started",
        "stopping",
        "stopped",
        "dbus-activation",
        "dbus-signal",
        "desktop-start",
        "desktop-end",
    ],
)
def test_builtin_events_are_known(event: str) -> None:
    assert messages(job("a", f"start on {event}\nstop on {event}\n")) == []


def test_event_nobody_emits_is_a_warning_at_its_stanza() -> None:
    a = job("a", "\nstart on startup and mystery X=1\nstop on (mystery or other)\n")
    diagnostics = cross_check([a])
    assert [(d.line, d.severity) for d in diagnostics] == [
        (2, Severity.WARNING),
        (3, Severity.WARNING),
        (3, Severity.WARNING),
    ]
    assert str(diagnostics[0]) == (
        'a.conf:2: warning: event "mystery" in "start on" is not emitted by any job '
        '(no "emits" lists it) nor by busmgr'
    )


def test_emits_of_any_job_including_globs() -> None:
    a = job("a", "start on net-up and disk-added and custom\n")
    b = job("b", "emits net-up disk-*\n")
    c = job("c", "emits custom\n")
    assert messages(a, b, c) == []
    assert len(messages(a, b)) == 1


def test_upstart_runlevel_is_just_an_event() -> None:
    assert "runlevel" in messages(job("a", "start on runlevel [2345]\n"))[0]


def test_blocking_cycle_of_two() -> None:
    a = job("a", "\n\nstart on starting b\n")
    b = job("b", "start on starting a\n")
    assert messages(a, b) == ["a.conf:3: blocking cycle: a waits for b waits for a"]


def test_blocking_cycle_through_stop_on_stopping() -> None:
    a = job("a", "stop on stopping c\n")
    b = job("b", "start on starting a\n")
    c = job("c", "start on starting JOB=b\n")
    # b waits for c (c starts on starting b), c waits for a, a waits for b.
    assert messages(a, b, c) == ["a.conf:1: blocking cycle: a waits for b waits for c waits for a"]


def test_blocking_cycle_through_start_on_stopping_and_stop_on_starting() -> None:
    # Stopping a while b stops: a's stopping event starts b again and b's starts a again;
    # each waits for the other to run, and neither can get past stopping.
    a = job("a", "start on stopping b\n")
    b = job("b", "start on stopping a\n")
    assert messages(a, b) == ["a.conf:1: blocking cycle: a waits for b waits for a"]
    c = job("c", "stop on starting d\n")
    d = job("d", "\nstart on starting c\n")
    assert messages(c, d) == ["c.conf:1: blocking cycle: c waits for d waits for c"]


def test_no_cycle_for_started_and_stopped() -> None:
    a = job("a", "start on started b\nstop on stopped b\n")
    b = job("b", "start on started a\nstop on stopped a\n")
    assert messages(a, b) == []


def test_no_cycle_for_a_chain() -> None:
    a = job("a", "start on starting b\n")
    b = job("b", "start on starting c\n")
    c = job("c", "")
    assert messages(a, b, c) == []


def test_globs_and_any_job_make_edges_but_a_job_never_waits_for_itself() -> None:
    # "starting" with no JOB matches every job: a makes every other job wait for it.
    a = job("a", "start on starting\n")
    b = job("b", "start on starting a*\n")
    assert messages(a, b) == ["a.conf:1: blocking cycle: a waits for b waits for a"]
    assert messages(job("a", "start on starting a\n")) == []


def test_negated_job_argument() -> None:
    a = job("a", "start on starting JOB!=c\n")
    b = job("b", "start on starting a\n")
    c = job("c", "start on starting a\n")
    assert messages(a, b, c) == ["a.conf:1: blocking cycle: a waits for b waits for a"]


def test_variable_job_argument_adds_no_edge() -> None:
    a = job("a", "start on starting $OTHER\n")
    b = job("b", "start on starting a\n")
    assert messages(a, b) == []


def test_each_cycle_reported_once() -> None:
    jobs = [
        job("a", "start on starting b\n"),
        job("b", "start on starting a\n"),
        job("x", "stop on stopping y\n"),
        job("y", "stop on stopping x\n"),
    ]
    assert messages(*jobs) == [
        "a.conf:1: blocking cycle: a waits for b waits for a",
        "x.conf:1: blocking cycle: x waits for y waits for x",
    ]
    assert all(d.severity is Severity.ERROR for d in cross_check(jobs))


def test_shared_bus_name_is_a_warning() -> None:
    a = job("a", "dbus org.example.A\n")
    b = job("b", "dbus org.example.A\n")
    assert messages(a, b) == [
        'b.conf: warning: bus name "org.example.A" is also provided by job "a"'
    ]
