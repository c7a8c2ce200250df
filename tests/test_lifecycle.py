"""The supervising core with real processes: hook order, respawn limits, kill timeouts,
credentials, instances, and a broken job file among good ones (issue: job files and core)."""

from __future__ import annotations

import os
import pwd
import signal
from pathlib import Path

import psutil
import pytest
from dbus_fast.errors import DBusError

from conftest import Session

pytestmark = pytest.mark.integration

JOBS = {
    "hooks": """
        description "hooks in order"
        pre-start exec sh -c 'echo pre-start >> "$OUT"'
        post-start script
          # main runs beside post-start: wait for its line so the order is fixed
          while ! grep -q main "$OUT"; do sleep 0.01; done
          echo post-start >> "$OUT"
        end script
        exec sh -c 'echo main >> "$OUT"; exec sleep 1000'
        pre-stop exec sh -c 'echo pre-stop >> "$OUT"'
        post-stop exec sh -c 'echo post-stop >> "$OUT"'
    """,
    "crasher": """
        respawn
        respawn limit 3 60
        exec sh -c 'echo run >> "$OUT"; exit 1'
    """,
    "stubborn": """
        kill timeout 1
        exec sh -c 'trap "" TERM; echo up > "$OUT"; while :; do sleep 1; done'
        # running only once the trap is set
        post-start exec sh -c 'while [ ! -s "$OUT" ]; do sleep 0.01; done'
    """,
    "asnobody": """
        setuid nobody
        exec sleep 1000
    """,
    "getty": """
        instance $TTY
        exec sleep 1000
    """,
    "broken": """
        description "a job file with a typo"
        exec sleep 1000
        respwan
    """,
    "phoenix": """
        respawn
        exec sleep 1000
    """,
    "failing-pre": """
        pre-start exec false
        exec sleep 1000
        post-stop exec sh -c 'echo post-stop >> "$OUT"'
    """,
}


def lines(path: Path) -> list[str]:
    return path.read_text().split()


async def test_hooks_and_main_run_in_documented_order(session: Session, tmp_path: Path) -> None:
    out = tmp_path / "order"
    path = await session.start("hooks", {"OUT": str(out)})
    props = await session.props(path)
    assert (props["Goal"], props["State"]) == ("start", "running")
    await session.stop("hooks")
    assert lines(out) == ["pre-start", "main", "post-start", "pre-stop", "post-stop"]
    props = await session.props(path)
    assert (props["Goal"], props["State"], props["MainPID"]) == ("stop", "waiting", 0)


async def test_a_respawn_nobody_listens_to_runs_main_again_with_its_events_in_order(
    session: Session,
) -> None:
    # No job listens to phoenix's stopping and starting: they are settled at once, and the
    # new main is spawned in the callback that reaped the old one; the bus still hears every
    # signal of the walk, in order.
    await session.start("phoenix")
    old = (await session.instance("phoenix"))["MainPID"]
    mark = session.signals.mark()
    os.kill(old, signal.SIGKILL)  # the job's own process, started by this test's session
    await session.signals.wait_for(lambda m, b: m == "JobStarted" and b[0] == "phoenix", start=mark)
    new = (await session.instance("phoenix"))["MainPID"]
    assert new and new != old
    assert session.signals.job_signals("phoenix", mark) == [
        ("JobStopping", ""),
        ("JobStarting", ""),
        ("JobStarted", ""),
    ]
    events = [
        b[0]
        for m, b in session.signals.items[mark:]
        if m == "EventEmitted" and b[1].get("JOB") == "phoenix"
    ]
    assert events == ["stopping", "starting", "started"]
    await session.stop("phoenix")


async def test_failing_prestart_fails_start_and_still_runs_poststop(
    session: Session, tmp_path: Path
) -> None:
    out = tmp_path / "post"
    with pytest.raises(DBusError) as err:
        await session.start("failing-pre", {"OUT": str(out)})
    assert err.value.type == "org.busmgr.Error.JobFailed"
    assert "PROCESS=pre-start" in err.value.text and "status 1" in err.value.text
    assert lines(out) == ["post-stop"]


async def test_always_failing_job_is_given_up_after_count_respawns(
    session: Session, tmp_path: Path
) -> None:
    out = tmp_path / "runs"
    mark = session.signals.mark()
    await session.start("crasher", {"OUT": str(out)})
    _, body = await session.signals.wait_for(
        lambda m, b: m == "JobStopped" and b[0] == "crasher" and b[2].get("RESULT") == "failed",
        start=mark,
    )
    assert body[2]["PROCESS"] == "respawn"
    assert body[2]["EXIT_STATUS"] == "1"
    assert lines(out) == ["run"] * 4  # COUNT + 1 runs, as Upstart counts


async def test_job_ignoring_term_is_killed_after_timeout(session: Session, tmp_path: Path) -> None:
    out = tmp_path / "up"
    path = await session.start("stubborn", {"OUT": str(out)})
    pid = (await session.props(path))["MainPID"]
    assert pid > 0
    await session.stop("stubborn")
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    props = await session.props(path)
    assert props["ExitSignal"] == "KILL"
    assert props["State"] == "waiting"


async def test_setuid_job_runs_as_that_user(session: Session) -> None:
    path = await session.start("asnobody")
    pid = (await session.props(path))["MainPID"]
    proc = psutil.Process(pid)
    nobody = pwd.getpwnam("nobody")
    assert proc.uids().real == nobody.pw_uid
    assert proc.gids().real == nobody.pw_gid
    await session.stop("asnobody")


async def test_instances_run_side_by_side(session: Session) -> None:
    p1 = await session.start("getty", {"TTY": "tty1"})
    p2 = await session.start("getty", {"TTY": "tty2"})
    assert p1.endswith("/getty/tty1") and p2.endswith("/getty/tty2")
    a, b = await session.props(p1), await session.props(p2)
    assert a["MainPID"] != b["MainPID"] and a["State"] == b["State"] == "running"
    rows = await session.call("ListJobs")
    assert {(r[0], r[1]) for r in rows[0] if r[0] == "getty"} == {
        ("getty", "tty1"),
        ("getty", "tty2"),
    }
    with pytest.raises(DBusError) as err:
        await session.start("getty", {"TTY": "tty1"})
    assert err.value.type == "org.busmgr.Error.AlreadyStarted"
    await session.stop("getty", {"TTY": "tty1"})
    rows = await session.call("ListJobs")
    assert {(r[0], r[1]) for r in rows[0] if r[0] == "getty"} == {("getty", "tty2")}
    assert psutil.pid_exists(b["MainPID"])
    await session.stop("getty", {"TTY": "tty2"})


async def test_broken_file_is_reported_with_its_line_and_others_run(session: Session) -> None:
    rows = await session.call("ListJobs")
    names = {r[0] for r in rows[0]}
    assert "broken" not in names
    assert {"hooks", "getty", "stubborn"} <= names
    err = session.stderr.read_text()
    assert "broken.conf:4:" in err and "respwan" in err
    with pytest.raises(DBusError) as exc:
        await session.start("broken")
    assert exc.value.type == "org.busmgr.Error.UnknownJob"
