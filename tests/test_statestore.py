"""The state store writes a big snapshot a slice at a time, and never a stale one last."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from busmgr import statestore
from busmgr.job import Goal, Restored, State
from busmgr.jobclass import ProcessKind
from busmgr.snapshot import Saved, SavedJob, SavedProcess, dumps
from busmgr.statestore import StateStore

from conftest import until

# Many jobs: a write of them is many pieces.
BIG = Saved(
    boot_id="boot",
    manager_pid=0,
    started=True,
    jobs=tuple(
        SavedJob(
            f"job{i}",
            "",
            Restored(Goal.START, State.RUNNING, {"PORT": str(i)}, {ProcessKind.MAIN: 100 + i}),
            {ProcessKind.MAIN: SavedProcess(100 + i, 7777)},
        )
        for i in range(300)
    ),
)


class Snapshots:
    """A snapshot callable whose manager_pid counts the snapshots taken."""

    def __init__(self) -> None:
        self.taken = 0

    def __call__(self) -> Saved:
        self.taken += 1
        return dataclasses.replace(BIG, manager_pid=self.taken)


@pytest.fixture
def sliced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(statestore, "WRITE_SLICE", 0.0)  # a piece per loop turn


async def test_a_big_write_spans_loop_turns_and_lands_whole(tmp_path: Path, sliced: None) -> None:
    snapshots = Snapshots()
    store = StateStore(asyncio.get_running_loop(), tmp_path, snapshots)
    store.mark()
    await until(lambda: snapshots.taken == 1)
    assert store.writes == 0 and not store.path.exists()  # begun, not finished
    await until(lambda: store.writes == 1)
    assert store.path.read_text() == dumps(dataclasses.replace(BIG, manager_pid=1))


async def test_a_change_during_a_write_is_written_after_it(tmp_path: Path, sliced: None) -> None:
    snapshots = Snapshots()
    store = StateStore(asyncio.get_running_loop(), tmp_path, snapshots)
    store.mark()
    await until(lambda: snapshots.taken == 1)
    store.mark()  # while the first write is under way
    await until(lambda: store.writes == 2)
    assert store.path.read_text() == dumps(dataclasses.replace(BIG, manager_pid=2))


async def test_a_discard_during_a_write_leaves_no_state(tmp_path: Path, sliced: None) -> None:
    snapshots = Snapshots()
    store = StateStore(asyncio.get_running_loop(), tmp_path, snapshots)
    store.mark()
    await until(lambda: snapshots.taken == 1)
    store.discard()
    turns = 0

    def after_many_turns() -> bool:
        nonlocal turns
        turns += 1
        return turns > 2 * len(BIG.jobs)  # longer than the write would have taken

    await until(after_many_turns)
    assert not store.path.exists() and store.writes == 0


async def test_a_save_now_replaces_a_write_in_progress(tmp_path: Path, sliced: None) -> None:
    snapshots = Snapshots()
    store = StateStore(asyncio.get_running_loop(), tmp_path, snapshots)
    store.mark()
    await until(lambda: snapshots.taken == 1)
    store.save(sync=True)
    assert store.writes == 1
    assert store.path.read_text() == dumps(dataclasses.replace(BIG, manager_pid=2))
