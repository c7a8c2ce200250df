"""Never lose a job: ``Reexec`` (the manager execs itself, keeping every job) and re-adoption
after the manager was killed with SIGKILL (a new manager with the same state directory takes the
jobs back). In both, every job keeps its pids, stays supervised (exits seen, stop and respawn
work) and nothing is ever started twice."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest
from dbus_fast.errors import DBusError

from busmgr import MANAGER_BUS_NAME, MANAGER_INTERFACE, MANAGER_PATH

from conftest import (
    TIMEOUT,
    Session,
    name_owner,
    new_owner_of,
    start_session,
    stop_session,
    wait_for_file,
)

pytestmark = pytest.mark.integration

JOBS = {
    "svc": "exec sleep 1000\n",
    "phoenix": "respawn\nexec sleep 1001\n",
    "lazarus": "respawn\nexec sleep 1002\n",
    "named": (
        "dbus org.test.Named\nexec $PYTHON $TESTS_HELPERS/dbus_service.py --name org.test.Named\n"
    ),
    "getty": "instance $TTY\nexec sleep 1003\n",
}


async def start_all(sess: Session) -> dict[str, int]:
    """Start the jobs; their main pids by job (instances as ``getty/tty1``)."""
    pids = {}
    for job in ("svc", "phoenix", "lazarus", "named"):
        pids[job] = (await sess.props(await sess.start(job)))["MainPID"]
    for tty in ("tty1", "tty2"):
        pids[f"getty/{tty}"] = (await sess.props(await sess.start("getty", {"TTY": tty})))[
            "MainPID"
        ]
    return pids


async def main_pids(sess: Session) -> dict[str, tuple[str, int]]:
    (rows,) = await sess.call("ListJobs")
    found: dict[str, tuple[str, int]] = {}
    for job, instance, state, path in rows:
        props = await sess.props(path) if state != "waiting" or instance else None
        key = f"{job}/{instance}" if instance else job
        found[key] = (state, props["MainPID"] if props else 0)
    return found


async def respawned(sess: Session, job: str, old: int) -> int:
    """Kill ``job``'s main process; return the pid it was respawned with."""
    mark = sess.signals.mark()
    os.kill(old, signal.SIGKILL)
    await sess.signals.wait_for(lambda m, b: m == "JobStarted" and b[0] == job, start=mark)
    new = (await sess.instance(job))["MainPID"]
    assert new not in (0, old)
    return new


async def saved(sess: Session, pids: list[int]) -> None:
    """Until the state file records every pid of ``pids`` (the manager writes it as jobs
    change; a SIGKILL right after a change could lose that change)."""

    def recorded(path: Path) -> bool:
        with contextlib.suppress(OSError, ValueError):
            state = json.loads(path.read_text())
            found = {p[0] for job in state["jobs"] for p in job["processes"].values()}
            return set(pids) <= found
        return False

    await wait_for_file(sess.state / "state.json", until=recorded)


def gone(pid: int) -> bool:
    with contextlib.suppress(psutil.NoSuchProcess):
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    return True


async def test_reexec_keeps_every_job_supervised(tmp_path: Path) -> None:
    sess = await start_session(tmp_path, JOBS)
    try:
        before = await start_all(sess)
        times = {k: (await sess.instance("svc"))[k] for k in ("StateTimestamp", "RunningTimestamp")}
        started = (await sess.props(MANAGER_PATH, MANAGER_INTERFACE))["StartupTimestamp"]
        manager_owner = await name_owner(sess.bus, MANAGER_BUS_NAME)
        exe = os.readlink(f"/proc/{sess.proc.pid}/exe")
        await sess.call("Reexec")
        await new_owner_of(sess.bus, MANAGER_BUS_NAME, manager_owner)  # the new image is up
        assert sess.proc.returncode is None and os.readlink(f"/proc/{sess.proc.pid}/exe") == exe
        after = await main_pids(sess)
        for key, pid in before.items():
            assert after[key] == ("running", pid), key  # same process, still running
        # running since it started, not since the re-exec (status's "since", its uptime)
        assert {k: (await sess.instance("svc"))[k] for k in times} == times
        assert (await sess.props(MANAGER_PATH, MANAGER_INTERFACE))["StartupTimestamp"] == started
        with pytest.raises(DBusError) as err:
            await sess.start("svc")
        assert err.value.type == "org.busmgr.Error.AlreadyStarted"  # never a second copy
        await respawned(sess, "phoenix", before["phoenix"])  # exits seen, respawn works
        await sess.stop("named")  # stop works, and the name goes with the process
        assert gone(before["named"])
        assert await name_owner(sess.bus, "org.test.Named") == ""
        log = sess.stderr.read_text()
        assert "took back 6 jobs from the previous image (re-exec)" in log
        assert "Traceback" not in log
    finally:
        await stop_session(sess)  # SIGTERM: everything stops, exit 0, nothing left


LISTENER = (
    "import socket, time\n"
    "listening = socket.socket(fileno=3)\n"
    "conn, _ = listening.accept()\n"
    "conn.sendall(b'served by %d\\n' % __import__('os').getpid())\n"
    "conn.close()\n"
    "time.sleep(1000)\n"
)


async def test_reexec_hands_over_the_jobs_log_pipes_and_sockets(tmp_path: Path) -> None:
    # A job's output goes through a pipe the manager reads, and a socket job listens on a
    # socket the manager holds: both must be the same after the exec, or the job dies of
    # SIGPIPE at its next line, or listens where no client can reach it any more.
    (tmp_path / "listener.py").write_text(LISTENER)
    jobs = {
        "talker": (
            f"env READY={tmp_path / 'ready'}\nenv DONE={tmp_path / 'done'}\n"
            'exec sh -c \'trap "echo after; touch $DONE" USR1; echo before; touch $READY; '
            "while :; do sleep 0.05; done'\n"
        ),
        "listener": (
            f"socket unix {tmp_path / 'app.sock'}\nexec $PYTHON {tmp_path / 'listener.py'}\n"
        ),
    }
    sess = await start_session(tmp_path, jobs)
    try:
        talker = (await sess.props(await sess.start("talker")))["MainPID"]
        listener = (await sess.props(await sess.start("listener")))["MainPID"]
        await wait_for_file(tmp_path / "ready")
        owner = await name_owner(sess.bus, MANAGER_BUS_NAME)
        await sess.call("Reexec")
        await new_owner_of(sess.bus, MANAGER_BUS_NAME, owner)
        os.kill(talker, signal.SIGUSR1)  # a process this session started: now it writes
        await wait_for_file(tmp_path / "done")  # written after the line: no SIGPIPE
        reader, writer = await asyncio.wait_for(
            asyncio.open_unix_connection(str(tmp_path / "app.sock")), TIMEOUT
        )
        line = await asyncio.wait_for(reader.readline(), TIMEOUT)
        writer.close()
        assert line == f"served by {listener}\n".encode()  # the running job's own socket
        assert (await sess.instance("talker"))["MainPID"] == talker
        await sess.stop("talker")  # drains the pipe into the log
        log = (sess.state / "log" / "talker.log").read_text()
        assert log.splitlines() == ["before", "after"]
        assert "was not handed over" not in sess.stderr.read_text()
    finally:
        await stop_session(sess)
    assert not (tmp_path / "app.sock").exists()  # the socket file goes with the manager


async def test_sigusr2_reexecs_too(tmp_path: Path) -> None:
    sess = await start_session(tmp_path, {"svc": "exec sleep 1000\n"})
    try:
        pid = (await sess.props(await sess.start("svc")))["MainPID"]
        owner = await name_owner(sess.bus, MANAGER_BUS_NAME)
        sess.proc.send_signal(signal.SIGUSR2)
        await new_owner_of(sess.bus, MANAGER_BUS_NAME, owner)
        assert (await sess.instance("svc"))["MainPID"] == pid
    finally:
        await stop_session(sess)


async def test_a_killed_manager_is_replaced_without_a_second_copy(tmp_path: Path) -> None:
    sess = await start_session(tmp_path, JOBS)
    old_pids: list[int] = []
    new: Session | None = None
    try:
        before = await start_all(sess)
        old_pids = [p.pid for p in sess.descendants()]
        await saved(sess, list(before.values()))
        sess.proc.kill()  # SIGKILL: no chance to save or stop anything
        await asyncio.wait_for(sess.proc.wait(), TIMEOUT)
        assert all(not gone(pid) for pid in before.values())  # the jobs run on, orphaned
        os.kill(before["lazarus"], signal.SIGKILL)  # one dies while nobody watches
        new = await start_session(tmp_path, JOBS)  # the same state directory
        assert new.address == sess.address  # the private bus was left running: taken back
        after = await main_pids(new)
        for key, pid in before.items():
            if key != "lazarus":
                assert after[key] == ("running", pid), key
        with pytest.raises(DBusError) as err:
            await new.start("svc")
        assert err.value.type == "org.busmgr.Error.AlreadyStarted"
        # lazarus died meanwhile: it counted as failed and was respawned
        lazarus = (await new.instance("lazarus"))["MainPID"]
        assert after["lazarus"][0] == "running" and lazarus != before["lazarus"]
        # an adopted process that is not the new manager's child: its exit is still seen
        await respawned(new, "phoenix", before["phoenix"])
        # the dbus job owns its name through an adopted process: it is running
        assert (await new.instance("named"))["State"] == "running"
        await new.stop("svc")
        assert gone(before["svc"])
        log = new.stderr.read_text()
        assert "took back" in log and "from the previous manager" in log
    finally:
        if new is not None:
            await stop_session(new)
        else:
            await stop_session(sess, expect_status=None)
    left = [pid for pid in old_pids if not gone(pid)]
    for pid in left:  # only processes the first session started
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"left behind: {left}"


async def test_a_reused_pid_is_never_adopted(tmp_path: Path) -> None:
    # The stranger starts before the session, so that its start time (in clock ticks) differs
    # from the job's process's: the start time is what tells a reused pid apart.
    stranger = subprocess.Popen(["sleep", "1000"])
    try:
        sess = await start_session(tmp_path, {"svc": "exec sleep 1000\n"})
    except BaseException:
        stranger.kill()
        stranger.wait()
        raise
    new: Session | None = None
    try:
        pid = (await sess.props(await sess.start("svc")))["MainPID"]
        await saved(sess, [pid])
        sess.proc.kill()
        await asyncio.wait_for(sess.proc.wait(), TIMEOUT)
        os.kill(pid, signal.SIGKILL)  # the job's process is gone...
        state_file = sess.state / "state.json"
        state: dict[str, Any] = json.loads(state_file.read_text())
        (record,) = [j for j in state["jobs"] if j["job"] == "svc"]
        record["processes"]["main"][0] = stranger.pid  # ... and its pid went to a stranger
        state_file.write_text(json.dumps(state))
        new = await start_session(tmp_path, {"svc": "exec sleep 1000\n"})
        props = await new.instance("svc")
        assert props["MainPID"] != stranger.pid
        assert stranger.poll() is None  # not adopted, not killed
    finally:
        stranger.kill()
        stranger.wait()
        if new is not None:
            await stop_session(new)
        else:
            await stop_session(sess, expect_status=None)


async def test_reexec_waits_for_jobs_between_states_and_says_so(tmp_path: Path) -> None:
    jobs = {"slow": "pre-start exec sleep 1000\nexec sleep 1000\n"}
    env = dict(os.environ, BUSMGR_REEXEC_WAIT="0.3")
    sess = await start_session(tmp_path, jobs, env=env)
    try:
        mark = sess.signals.mark()
        await sess.start("slow", wait=False)
        await sess.signals.wait_for(lambda m, b: m == "JobStarting" and b[0] == "slow", start=mark)
        with pytest.raises(DBusError) as err:
            await sess.call("Reexec")
        assert err.value.type == "org.busmgr.Error.Busy"
        assert err.value.text == "not re-executing: jobs between states: slow (pre-start)"
        await sess.stop("slow")
    finally:
        await stop_session(sess)


async def test_a_job_whose_file_went_away_meanwhile_is_stopped(tmp_path: Path) -> None:
    jobs = {"keep": "exec sleep 1000\n", "doomed": "exec sleep 1004\n"}
    sess = await start_session(tmp_path, jobs)
    new: Session | None = None
    try:
        keep = (await sess.props(await sess.start("keep")))["MainPID"]
        doomed = (await sess.props(await sess.start("doomed")))["MainPID"]
        await saved(sess, [keep, doomed])
        sess.proc.kill()
        await asyncio.wait_for(sess.proc.wait(), TIMEOUT)
        (sess.services / "doomed.conf").unlink()
        new = await start_session(tmp_path, {"keep": "exec sleep 1000\n"})
        assert (await new.instance("keep"))["MainPID"] == keep
        assert gone(doomed)  # stopped: nobody supervises it any more
        assert "doomed (its job file is gone): stopping process" in new.stderr.read_text()
    finally:
        if new is not None:
            await stop_session(new)
        else:
            await stop_session(sess, expect_status=None)


async def test_one_state_directory_one_manager(tmp_path: Path) -> None:
    sess = await start_session(tmp_path, {})
    try:
        second = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "busmgr", "session", "--no-import",
            "--state-dir", str(sess.state), "--services-dir", str(sess.services),
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await asyncio.wait_for(second.communicate(), TIMEOUT)
        assert second.returncode == 1
        assert err.decode().strip() == (
            f"busmgr: another busmgr (pid {sess.proc.pid}) uses the state directory {sess.state}"
        )
    finally:
        await stop_session(sess)
