"""The ``busmgr`` command against a real session: every verb of the bus-face issue, its output,
its exit code and its one-line errors."""

from __future__ import annotations

import asyncio
import sys

import pytest

from busmgr import MANAGER_BUS_NAME

from conftest import TIMEOUT, Session, name_owner, new_owner_of

pytestmark = pytest.mark.integration

JOBS = {
    "web": """
        description "a service"
        exec sleep 1000
    """,
    "broken-start": """
        pre-start exec sh -c 'echo "no config found" >&2; exit 4'
        exec sleep 1000
        console log
    """,
    "tty": """
        instance $TTY
        exec sleep 1000
    """,
    "on-ping": """
        start on ping-event
        task
        exec true
    """,
}


async def busmgr(session: Session, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "busmgr",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=session.env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_list_is_an_aligned_table(session: Session) -> None:
    rc, out, err = await busmgr(session, "list")
    assert rc == 0, err
    lines = out.splitlines()
    header = lines[0].split()
    assert header == ["JOB", "INSTANCE", "GOAL/STATE", "PID", "BUSNAME", "SOURCE", "RESULT"]
    web = next(line for line in lines if line.startswith("web "))
    assert "stop/waiting" in web and web.split()[-2].endswith("web.conf")
    # aligned: every row puts GOAL/STATE at the same column as the header
    col = lines[0].index("GOAL/STATE")
    assert all(line[col : col + 5] in ("GOAL/", "stop/", "start") for line in lines[1:])


async def test_start_status_stop_restart(session: Session) -> None:
    rc, out, err = await busmgr(session, "status", "web")
    assert rc == 3 and "web stop/waiting" in out
    rc, out, err = await busmgr(session, "start", "web")
    assert rc == 0, err
    assert out.startswith("web start/running, process ")
    pid = int(out.split()[-1])
    rc, out, _ = await busmgr(session, "status", "web")
    assert rc == 0 and out.splitlines()[0] == f"web start/running, process {pid}"
    rc, out, err = await busmgr(session, "restart", "web")
    assert rc == 0, err
    assert int(out.split()[-1]) != pid
    rc, out, err = await busmgr(session, "stop", "web")
    assert rc == 0, err
    rc, out, _ = await busmgr(session, "status", "web")
    assert rc == 3


async def test_failed_start_exits_1_with_the_reason(session: Session) -> None:
    rc, _out, err = await busmgr(session, "start", "broken-start")
    assert rc == 1
    assert len(err.strip().splitlines()) == 1
    assert "JobFailed" in err and "pre-start" in err and "status 4" in err
    assert "no config found" in err  # the last lines of its log


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["start", "nope"], 1, ["UnknownJob", "nope"]),
        (["stop", "tty", "TTY=tty9"], 1, ["UnknownInstance", "tty9"]),
        (["start", "web", "1X=y"], 2, ["1X"]),
        (["frobnicate"], 2, ["frobnicate"]),
    ],
)
async def test_errors_are_one_line(
    session: Session, args: list[str], code: int, words: list[str]
) -> None:
    rc, _out, err = await busmgr(session, *args)
    assert rc == code
    for word in words:
        assert word in err
    if code == 1:
        assert len(err.strip().splitlines()) == 1


async def test_instances_and_emit(session: Session) -> None:
    rc, out, err = await busmgr(session, "start", "tty", "TTY=tty1")
    assert rc == 0, err
    assert out.startswith("tty (tty1) start/running")
    rc, out, err = await busmgr(session, "emit", "ping-event", "X=1")
    assert rc == 0, err
    props = await session.instance("on-ping")
    assert (props["State"], props["Result"]) == ("waiting", "ok")
    rc, out, err = await busmgr(session, "stop", "tty", "TTY=tty1")
    assert rc == 0, err


async def test_events_follow_prints_each_signal_as_it_arrives(session: Session) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "busmgr",
        "events",
        "--follow",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=session.env,
    )
    assert proc.stdout is not None
    try:
        # The current states come first; once they are out, nothing later is missed.
        while True:
            line = (await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)).decode()
            if "JOB=web" in line:
                break
        await session.emit("hello-world", {"WHO": "tests"})
        seen = []
        while not any(s.startswith("hello-world") for s in seen):
            seen.append((await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)).decode())
        assert any("WHO=tests" in s for s in seen)
    finally:
        proc.terminate()
        await proc.wait()


async def test_check_reports_file_and_line(session: Session) -> None:
    rc, _out, err = await busmgr(session, "check", str(session.services))
    assert rc == 0, err
    bad = session.services.parent / "bad.d"
    bad.mkdir()
    (bad / "oops.conf").write_text("exec true\nkill signal NOPE\n")
    rc, _out, err = await busmgr(session, "check", str(bad))
    assert rc == 1
    assert "oops.conf:2:" in err and "NOPE" in err


async def test_reexec_verb_keeps_jobs(session: Session) -> None:
    before = (await session.props(await session.start("web")))["MainPID"]
    owner = await name_owner(session.bus, MANAGER_BUS_NAME)
    status, out, err = await busmgr(session, "reexec")
    assert (status, out, err) == (0, "", "")
    await new_owner_of(session.bus, MANAGER_BUS_NAME, owner)  # the new image is on the bus
    status, listed, _ = await busmgr(session, "status", "web")
    assert (status, listed.splitlines()[0]) == (0, f"web start/running, process {before}")
    await session.stop("web")
