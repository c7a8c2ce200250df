"""The event queue without processes or a bus: order, blocks, holds and a handler that raises."""

from __future__ import annotations

import asyncio
import logging

import pytest

from busmgr.eventqueue import Block, EventQueue
from busmgr.events import Event

Handler = list[tuple[str, Block]]


def make_queue(seen: Handler, *, fail_on: str = "") -> EventQueue:
    def handler(event: Event, block: Block) -> None:
        seen.append((event.name, block))
        if event.name == fail_on:
            raise RuntimeError("boom")

    return EventQueue(asyncio.get_running_loop(), handler)


async def turn() -> None:
    """Let the loop run the callbacks it has ready (the queue handles events on a later turn)."""
    done = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(done.set_result, None)
    await done


async def test_events_are_handled_later_in_order() -> None:
    seen: Handler = []
    queue = make_queue(seen)
    queue.emit(Event("a"))
    queue.emit(Event("b"))
    assert seen == [] and len(queue) == 2  # never re-entrant
    await turn()
    assert [name for name, _ in seen] == ["a", "b"]
    assert len(queue) == 0


async def test_event_without_holders_finishes_once_handled() -> None:
    seen: Handler = []
    finished: list[Block] = []
    queue = make_queue(seen)
    block = queue.emit(Event("a"), finished.append)
    assert not block.done
    await turn()
    assert finished == [block] and block.done and not block.failed


async def test_block_finishes_when_the_last_holder_lets_go() -> None:
    finished: list[Block] = []
    holds: list[object] = []

    def handler(event: Event, block: Block) -> None:
        holds.append(queue.hold(block, "job-1"))
        holds.append(queue.hold(block, "job-2"))

    queue = EventQueue(asyncio.get_running_loop(), handler)
    block = queue.emit(Event("a"), finished.append)
    await turn()
    assert not finished and queue.holding("job-1") == 1
    release_1, release_2 = holds
    release_1("job job-1 failed: RESULT=failed")  # type: ignore[operator]
    release_1(None)  # a second release does nothing
    assert not finished and queue.holding("job-1") == 0
    release_2(None)  # type: ignore[operator]
    assert finished == [block]
    assert block.failed and block.failures == ["job job-1 failed: RESULT=failed"]


async def test_release_held_lets_go_of_older_blocks_as_successes() -> None:
    """A job whose goal an event overrules no longer holds the events that sent it before."""
    finished: list[str] = []
    releases: dict[str, object] = {}

    def handler(event: Event, block: Block) -> None:
        if event.name == "second":
            queue.release_held("job")
        releases[event.name] = queue.hold(block, "job")

    queue = EventQueue(asyncio.get_running_loop(), handler)
    queue.emit(Event("first"), lambda b: finished.append(f"first failed={b.failed}"))
    await turn()
    assert finished == []
    queue.emit(Event("second"), lambda b: finished.append(f"second failed={b.failed}"))
    await turn()
    assert finished == ["first failed=False"]
    # The job got there after all: the released hold's own release is now a no-op.
    releases["first"]("job job failed")  # type: ignore[operator]
    assert finished == ["first failed=False"]
    releases["second"]("job job failed: boom")  # type: ignore[operator]
    assert finished == ["first failed=False", "second failed=True"]
    assert queue.holding("job") == 0


async def test_on_finished_after_done_runs_at_once() -> None:
    queue = make_queue([])
    block = queue.emit(Event("a"))
    await turn()
    late: list[Block] = []
    block.on_finished(late.append)
    assert late == [block]


async def test_a_handler_that_raises_does_not_stop_the_queue(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: Handler = []
    finished: list[str] = []
    queue = make_queue(seen, fail_on="bad")
    with caplog.at_level(logging.ERROR, logger="busmgr"):
        queue.emit(Event("bad"), lambda b: finished.append("bad"))
        queue.emit(Event("good"), lambda b: finished.append("good"))
        await turn()
    assert [name for name, _ in seen] == ["bad", "good"]
    assert finished == ["bad", "good"]
    assert "while handling event bad" in caplog.text
