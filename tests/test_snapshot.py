"""The state file's values (busmgr.snapshot): a snapshot reads back as it was written, and
whatever a state file holds, reading it raises nothing but SnapshotError. Pure."""

from __future__ import annotations

import contextlib
import io
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from busmgr.job import Failure, Goal, Restored, State
from busmgr.jobclass import ProcessKind
from busmgr.snapshot import (
    Saved,
    SavedBus,
    SavedFd,
    SavedJob,
    SavedProcess,
    SavedSocket,
    SnapshotError,
    dump,
    dumps,
    loads,
)

BOOT = "5b8c0d6e-boot"

FULL = Saved(
    boot_id=BOOT,
    manager_pid=41,
    started=True,
    jobs=(
        SavedJob(
            "web",
            "",
            Restored(
                Goal.START,
                State.RUNNING,
                {"PORT": "80"},
                {ProcessKind.MAIN: 100},
                failure=Failure("main", 1, None, "exited with status 1"),
                last_exit=(1, None),
                ready_reached=True,
                pending_ready=frozenset({"org.x.Web"}),
                ready_deadline=12.5,
                respawns=2,
                respawn_window=(3.0, 1),
                status_text="serving",
                start_count=3,
            ),
            {ProcessKind.MAIN: SavedProcess(100, 7777)},
        ),
    ),
    start_order=(("web", ""),),
    activation_env={"LANG": "C"},
    cgroup="/sys/fs/cgroup/busmgr-0123",
    bus=SavedBus(SavedProcess(50, 60), "unix:path=/run/bus", "/run/busmgr-x"),
    command=SavedProcess(70, 80),
    notify_address="/run/notify",
    log_pipes=(("web.log", SavedFd(9, (1, 2))),),
    sockets=(
        SavedSocket(("unix", "/run/app.sock", "", 0), SavedFd(10, (3, 4)), (5, 6)),
        SavedSocket(("tcp", "", "127.0.0.1", 8080), SavedFd(11, (3, 7)), None),
    ),
    since=1700000000.25,
    times=(("web", "", 1700000001.5, 1700000001.5), ("cron", "", 1700000002.0, None)),
)


def test_a_snapshot_reads_back_as_it_was_written() -> None:
    assert loads(dumps(FULL), BOOT) == FULL
    assert loads(dumps(Saved(BOOT, 1, False)), BOOT) == Saved(BOOT, 1, False)


def test_a_snapshot_written_a_job_at_a_time_is_the_same_text() -> None:
    for saved in (FULL, Saved(BOOT, 1, False)):
        out = io.StringIO()
        dump(saved, out)
        assert out.getvalue() == dumps(saved)


def test_a_snapshot_of_another_boot_or_format_is_refused() -> None:
    with pytest.raises(SnapshotError, match="before the last boot"):
        loads(dumps(FULL), "another-boot")
    data = json.loads(dumps(FULL))
    data["version"] = 99
    with pytest.raises(SnapshotError, match="state format 99"):
        loads(json.dumps(data), BOOT)


def test_an_older_file_without_descriptors_still_reads() -> None:
    data = json.loads(dumps(FULL))
    del data["log_pipes"], data["sockets"], data["since"], data["times"]
    saved = loads(json.dumps(data), BOOT)
    assert (saved.log_pipes, saved.sockets, saved.since, saved.times) == ((), (), 0.0, ())


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def _mutations() -> st.SearchStrategy[str]:
    """A real snapshot with one value anywhere in it replaced by arbitrary JSON."""
    base = json.loads(dumps(FULL))

    def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        found = [prefix]
        if isinstance(value, dict):
            for k, v in value.items():
                found += paths(v, (*prefix, k))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                found += paths(v, (*prefix, i))
        return found

    def replaced(path: tuple[Any, ...], new: Any) -> str:
        data = json.loads(json.dumps(base))
        if not path:
            return json.dumps(new)
        target = data
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = new
        return json.dumps(data)

    return st.builds(replaced, st.sampled_from(paths(base)), _json)


@given(_mutations() | st.text())
def test_reading_anything_raises_only_snapshot_error(text: str) -> None:
    with contextlib.suppress(SnapshotError):  # anything else fails the test
        loads(text, BOOT)
