"""BUSMGR_TRACE's step times (issue 13): off, nothing is recorded; on, one line per activation
with each step's offset from the request."""

from __future__ import annotations

import logging

import pytest

from busmgr import trace


@pytest.fixture
def tracing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trace, "_open", {})
    monkeypatch.setattr(trace, "ON", False)


def test_off_by_default() -> None:
    assert trace.ON is False  # call sites test it and do nothing more


def test_one_line_per_activation_with_each_step_once(
    tracing: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="busmgr")
    trace.enable()
    assert trace.ON
    assert trace.begin("org.x.Y")
    trace.step("org.x.Y", "starting")
    trace.step("org.x.Y", "starting")  # a state reported twice is one step
    assert not trace.begin("org.x.Y", "activate")  # the activation under way: a step of it
    trace.step("org.x.Z", "spawn main")  # no activation of Z began: ignored
    trace.end("org.x.Y", "ok")
    trace.end("org.x.Y", "ok")  # over already: nothing more
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("trace ")]
    steps = line.removeprefix("trace org.x.Y: ").removesuffix(" ms: ok").split(" | ")
    assert [s.rsplit(" ", 1)[0] for s in steps] == ["request", "starting", "activate", "done"]
    assert steps[0] == "request 0"
    assert all(float(s.rsplit(" ", 1)[1]) >= 0 for s in steps)
