"""BUSMGR_LOOP_DEBUG's watch: a callback that holds the loop is reported, with its time."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from busmgr import loopwatch


async def test_a_callback_that_holds_the_loop_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    # time.sleep is the blocking under test: a callback that waits in a system call.
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def holds() -> None:
        time.sleep(0.12)
        done.set_result(None)

    def quick() -> None:
        pass

    unwatch = loopwatch.watch(0.1)
    try:
        with caplog.at_level(logging.WARNING, logger="busmgr"):
            loop.call_soon(quick)
            loop.call_soon(holds)
            await asyncio.wait_for(done, 5)
    finally:
        unwatch()
    reports = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Executing ")]
    assert len(reports) == 1, reports
    assert "holds" in reports[0] and " took 0.1" in reports[0]


async def test_unwatched_nothing_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    loopwatch.watch(0.01)()  # watched, then undone at once
    with caplog.at_level(logging.WARNING, logger="busmgr"):
        loop.call_soon(lambda: (time.sleep(0.02), done.set_result(None)))
        await asyncio.wait_for(done, 5)
    assert not [r for r in caplog.records if r.getMessage().startswith("Executing ")]
