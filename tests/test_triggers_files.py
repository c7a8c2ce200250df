"""File triggers: the file bridge against real directories and inotify (no bus), then a real
``busmgr session`` whose tasks are started by a file's creation and by a non-empty queue."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

import busmgr.bus.face  # noqa: F401  (Session.instance imports it: not while the loop is timed)
from busmgr.config import parse_event_expr
from busmgr.events import Event
from busmgr.jobclass import JobClass
from busmgr.triggers import kernel
from busmgr.triggers.files import FileBridge
from busmgr.triggers.kernel import InotifyEvent

from conftest import TIMEOUT, Session, start_session, stop_session


class Collected:
    """The events a bridge emitted, as ``(FILE, EVENT)``, and a way to wait for one."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []
        self._changed = asyncio.Event()

    def __call__(self, event: Event) -> None:
        assert event.name == "file"
        self.items.append((event.get("FILE") or "", event.get("EVENT") or ""))
        self._changed.set()

    async def wait_for(self, path: Path | str, kind: str, count: int = 1) -> None:
        """Until ``(path, kind)`` was emitted ``count`` times."""
        wanted = (str(path), kind)

        async def scan() -> None:
            while self.items.count(wanted) < count:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(scan(), TIMEOUT)


def job(start_on: str, name: str = "j") -> JobClass:
    return JobClass(
        name=name,
        source=f"services.d/{name}.conf",
        start_on=parse_event_expr(start_on),
        start_on_line=3,
    )


@pytest_asyncio.fixture(loop_scope="module")
async def bridge() -> AsyncIterator[tuple[FileBridge, Collected]]:
    events = Collected()
    env: Mapping[str, str] = {}
    b = FileBridge(asyncio.get_running_loop(), events, lambda cls: env)
    try:
        yield b, events
    finally:
        b.close()


def write(path: Path, text: str = "x\n") -> None:
    with open(path, "a") as f:
        f.write(text)


async def test_created_entries_matching_the_glob(
    bridge: tuple[FileBridge, Collected], tmp_path: Path
) -> None:
    b, events = bridge
    b.update([job(f"file FILE={tmp_path}/*.job EVENT=created")])
    assert b.watched.keys() == {str(tmp_path)}  # only what a job asks about
    write(tmp_path / "b.txt")  # does not match
    write(tmp_path / "a.job")
    os.mkdir(tmp_path / "c.job")  # any entry, directories too
    await events.wait_for(tmp_path / "c.job", "created")
    assert events.items == [(f"{tmp_path}/a.job", "created"), (f"{tmp_path}/c.job", "created")]


async def test_modified_once_per_write_and_deleted(
    bridge: tuple[FileBridge, Collected], tmp_path: Path
) -> None:
    b, events = bridge
    conf = tmp_path / "app.conf"
    write(conf)
    b.update([job(f"file FILE={conf} EVENT=modified or file FILE={conf} EVENT=deleted")])
    with open(conf, "a") as f:  # many write()s, one close: one event
        for _ in range(100):
            f.write("a\n")
            f.flush()
    await events.wait_for(conf, "modified")
    os.rename(conf, tmp_path / "other")  # moved away: deleted
    write(tmp_path / "other")  # not the watched name
    await events.wait_for(conf, "deleted")
    write(conf)  # created anew: created is not asked for, the write is
    await events.wait_for(conf, "modified", 2)
    write(tmp_path / "app.conf.new")
    os.rename(tmp_path / "app.conf.new", conf)  # replaced atomically: modified
    await events.wait_for(conf, "modified", 3)
    os.unlink(conf)
    await events.wait_for(conf, "deleted", 2)
    assert events.items == [
        (str(conf), "modified"),
        (str(conf), "deleted"),
        (str(conf), "modified"),
        (str(conf), "modified"),
        (str(conf), "deleted"),
    ]


async def test_every_kind_without_event(
    bridge: tuple[FileBridge, Collected], tmp_path: Path
) -> None:
    b, events = bridge
    b.update([job(f"file FILE={tmp_path}/f")])
    write(tmp_path / "f")
    await events.wait_for(tmp_path / "f", "modified")
    os.rename(tmp_path / "f", tmp_path / "g")
    os.rename(tmp_path / "g", tmp_path / "f")  # moved in: created, and new content
    await events.wait_for(tmp_path / "f", "modified", 2)
    os.unlink(tmp_path / "f")
    await events.wait_for(tmp_path / "f", "deleted", 2)
    assert [kind for _, kind in events.items] == [
        "created",
        "modified",
        "deleted",
        "created",
        "modified",
        "deleted",
    ]


async def test_nonempty_at_start_and_on_each_new_entry(
    bridge: tuple[FileBridge, Collected], tmp_path: Path
) -> None:
    b, events = bridge
    full, empty = tmp_path / "full", tmp_path / "empty"
    full.mkdir()
    empty.mkdir()
    write(full / "left-from-before")
    b.update([job(f"file FILE={full} EVENT=nonempty or file FILE={empty} EVENT=nonempty")])
    assert events.items == [(str(full), "nonempty")]  # at once: the queue is not empty
    write(empty / "one")
    await events.wait_for(empty, "nonempty")
    os.unlink(empty / "one")  # a removal is no news for nonempty
    write(empty / "two")
    await events.wait_for(empty, "nonempty", 2)
    assert events.items[1:] == [(str(empty), "nonempty")] * 2


async def test_a_missing_directory_is_waited_for_from_its_nearest_parent(
    bridge: tuple[FileBridge, Collected], tmp_path: Path
) -> None:
    b, events = bridge
    inbox = tmp_path / "spool" / "mail" / "inbox"
    b.update([job(f"file FILE={inbox}/* EVENT=created")])
    assert b.watched.keys() == {str(tmp_path)}
    (tmp_path / "unrelated").mkdir()
    # the rest appears at once, a file in it too: reported (by inotify or by the scan of a
    # directory that has just appeared), and the parents are no longer watched
    inbox.mkdir(parents=True)
    write(inbox / "first")
    await events.wait_for(inbox / "first", "created")
    assert b.watched.keys() == {str(inbox)}
    write(inbox / "second")
    await events.wait_for(inbox / "second", "created")
    assert {path for path, _ in events.items} == {f"{inbox}/first", f"{inbox}/second"}


async def test_a_deleted_directory_is_waited_for_again(
    bridge: tuple[FileBridge, Collected], tmp_path: Path
) -> None:
    b, events = bridge
    queue = tmp_path / "queue"
    queue.mkdir()
    b.update([job(f"file FILE={queue}/* EVENT=created")])
    write(queue / "a")
    await events.wait_for(queue / "a", "created")
    shutil.rmtree(queue)
    queue.mkdir()  # at once: before the bridge has seen the deletion
    write(queue / "b")
    await events.wait_for(queue / "b", "created")
    shutil.rmtree(queue)
    write(queue)  # a file of that name: no directory to watch, the parent is watched
    os.unlink(queue)
    queue.mkdir()
    write(queue / "c")
    await events.wait_for(queue / "c", "created")
    assert b.watched.keys() == {str(queue)}


async def test_watches_go_with_the_jobs(
    bridge: tuple[FileBridge, Collected], tmp_path: Path
) -> None:
    b, events = bridge
    b.update([job(f"file FILE={tmp_path}/* EVENT=created", "a")])
    assert b.watched
    b.update([job("startup", "a")])
    assert b.watched == {}
    write(tmp_path / "x")
    b.update([job(f"file FILE={tmp_path}/y EVENT=deleted", "a")])  # a new inotify instance
    write(tmp_path / "y")
    os.unlink(tmp_path / "y")
    await events.wait_for(tmp_path / "y", "deleted")
    assert events.items == [(f"{tmp_path}/y", "deleted")]  # nothing of x, nothing created


async def test_variables_and_bad_paths(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    events = Collected()
    b = FileBridge(asyncio.get_running_loop(), events, lambda cls: {"SPOOL": str(tmp_path)})
    try:
        with caplog.at_level(logging.WARNING, logger="busmgr"):
            b.update(
                [
                    job("file FILE=$SPOOL/* EVENT=created", "good"),
                    job("file FILE=${NOWHERE}x EVENT=created", "bad"),
                    JobClass(
                        name="manual",
                        manual=True,
                        start_on=parse_event_expr("file FILE=/etc/* EVENT=created"),
                    ),
                ]
            )
        assert b.watched.keys() == {str(tmp_path)}  # nothing for "bad", nor for "manual"
        assert caplog.messages == [
            'services.d/bad.conf:3: bad: not watched: FILE "x": the path must be absolute'
        ]
        write(tmp_path / "z")
        await events.wait_for(tmp_path / "z", "created")
    finally:
        b.close()


async def test_an_overflowed_queue_rechecks_nonempty(
    bridge: tuple[FileBridge, Collected], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    b, events = bridge
    write(tmp_path / "waiting")
    b.update([job(f"file FILE={tmp_path} EVENT=nonempty")])
    assert events.items == [(str(tmp_path), "nonempty")]
    with caplog.at_level(logging.WARNING, logger="busmgr"):
        resync = b._record(InotifyEvent(-1, kernel.IN_Q_OVERFLOW, 0, b""))
    assert resync
    assert "inotify's queue overflowed" in caplog.text
    assert events.items == [(str(tmp_path), "nonempty")] * 2


# -- in a session ----------------------------------------------------------------------------


@dataclass
class World:
    session: Session
    tmp: Path


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    tmp = tmp_path_factory.mktemp("files")
    (tmp / "queue").mkdir()
    write(tmp / "queue" / "left-from-before")
    jobs = {
        "spooler": f"""\
            task
            start on file FILE={tmp}/spool/*.job EVENT=created
            exec sh -c 'echo "$FILE $EVENT" >> {tmp}/spooled'
            """,
        "queue-runner": f"""\
            start on file FILE={tmp}/queue EVENT=nonempty
            exec sleep 1000
            """,
    }
    session = await start_session(tmp, jobs)
    try:
        yield World(session, tmp)
    finally:
        await stop_session(session)


async def test_a_task_started_by_a_files_creation(world: World) -> None:
    session, tmp = world.session, world.tmp
    mark = session.signals.mark()
    (tmp / "spool").mkdir()  # did not exist when the manager started
    write(tmp / "spool" / "print.job")
    _member, body = await session.signals.wait_for(
        lambda m, b: m == "JobStopped" and b[0] == "spooler", start=mark
    )
    assert body[2]["RESULT"] == "ok"
    assert (tmp / "spooled").read_text() == f"{tmp}/spool/print.job created\n"
    emitted = [b for m, b in session.signals.items[mark:] if m == "EventEmitted"]
    assert ["file", {"FILE": f"{tmp}/spool/print.job", "EVENT": "created"}] in emitted


async def test_a_queue_left_full_starts_its_runner_at_start_up(world: World) -> None:
    props = await world.session.wait_running("queue-runner")
    assert props["State"] == "running"
