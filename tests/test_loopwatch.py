"""BUSMGR_LOOP_DEBUG's watch: a callback that holds the loop is reported, with its time."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from busmgr import loopwatch


async def test_a_callback_that_holds_the_loop_is_reported() -> None:
    # time.sleep is the blocking under test: a callback that waits in a system call.
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    reports: list[str] = []

    def holds() -> None:
        time.sleep(0.12)
        done.set_result(None)

    def quick() -> None:
        pass

    unwatch = loopwatch.watch(0.1, reports.append)
    try:
        loop.call_soon(quick)
        loop.call_soon(holds)
        await asyncio.wait_for(done, 5)
    finally:
        unwatch()
    assert len(reports) == 1, reports
    assert reports[0].startswith("Executing <Handle ") and "holds" in reports[0]
    assert " took 0.1" in reports[0]


async def test_unwatched_nothing_is_reported() -> None:
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    reports: list[str] = []
    loopwatch.watch(0.01, reports.append)()  # watched, then undone at once
    loop.call_soon(lambda: (time.sleep(0.02), done.set_result(None)))
    await asyncio.wait_for(done, 5)
    assert reports == []


def test_the_default_report_is_a_warning_of_busmgr(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="busmgr"):
        loopwatch._log("Executing <Handle x()> took 0.200 seconds")
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("busmgr", logging.WARNING, "Executing <Handle x()> took 0.200 seconds")
    ]
