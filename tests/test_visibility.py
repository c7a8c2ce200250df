"""See what happened (issue 12), against a real session: logs by default and through rotation,
``status`` and ``list`` that say why, the manager's own log lines, ``--json``, ``events
--follow`` on a closed pipe, usage errors, ``reload-configuration`` errors, the pictures, and
bash completion.

The session rotates logs at 2 KiB (``--log-size``) so that rotation happens in a test. Nothing
sleeps: every wait is for a command's exit, a signal, or a process exit.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from dbus_fast.errors import DBusError

from conftest import PYTHON, TIMEOUT, Session, start_session, stop_session

pytestmark = pytest.mark.integration

SESSION_ARGS = ["--no-import", "--log-size", "2K", "--log-keep", "3"]

JOBS = {
    "chatty": """
        description "talks on both outputs"
        exec sh -c 'echo "out: hello"; echo "err: something broke" >&2; exec sleep 1000'
    """,
    "silent": """
        console none
        exec sh -c 'echo "nobody hears this"; exec sleep 1000'
    """,
    "rotor": """
        task
        exec sh -c 'i=0; while [ $i -lt 800 ]; do echo "rotor line $i" >&2; i=$((i+1)); done'
    """,
    "flapper": """
        respawn
        respawn limit 3 5
        exec sh -c 'echo "flap: cannot open display" >&2; exit 1'
    """,
    "killable": """
        dbus org.test.Killable
        exec $PYTHON $TESTS_HELPERS/dbus_service.py --name org.test.Killable
    """,
    "slowpoke": """
        dbus org.test.Slowpoke
        ready timeout 1
        exec $PYTHON $TESTS_HELPERS/dbus_service.py --name org.test.Slowpoke --never-claim
    """,
    "ticker": """
        task
        exec sh -c 'i=0; while [ $i -lt 600 ]; do echo "tick $i"; i=$((i+1)); done'
    """,
    "echoer": """
        instance $TTY
        exec sh -c 'echo "I am $TTY"; exec sleep 1000'
    """,
    "badtty": """
        instance $TTY
        pre-start exec sh -c 'echo "no such terminal: $TTY" >&2; exit 3'
        exec sleep 1000
    """,
    "web": """
        start on net-up
        stop on net-down
        emits web-up
        exec sleep 1000
    """,
    "proxy": """
        start on started web and cache-ready
        exec sleep 1000
    """,
}


async def busmgr(
    session: Session, *args: str, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        PYTHON,
        "-m",
        "busmgr",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env or session.env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    return proc.returncode or 0, out.decode(), err.decode()


def manager_log(session: Session) -> str:
    return session.stderr.read_text(errors="replace")


# ------------------------------------------------------------------ logs
async def test_a_jobs_output_is_logged_by_default_and_console_none_silences(
    session: Session,
) -> None:
    for job in ("chatty", "silent"):
        rc, _out, err = await busmgr(session, "start", job)
        assert rc == 0, err
        # Once stopped, everything it wrote has been read from its pipe and written out.
        rc, _out, err = await busmgr(session, "stop", job)
        assert rc == 0, err
    rc, out, err = await busmgr(session, "log", "chatty")
    assert rc == 0, err
    assert "out: hello" in out and "err: something broke" in out
    log_dir = session.state / "log"
    assert (log_dir / "chatty.log").exists()
    assert not (log_dir / "silent.log").exists()
    rc, _out, err = await busmgr(session, "log", "silent")
    assert rc == 1 and "no output logged" in err


async def test_stderr_survives_rotation_and_the_files_are_bounded(session: Session) -> None:
    rc, _out, err = await busmgr(session, "start", "rotor")  # a task: returns once it ran
    assert rc == 0, err
    path = session.state / "log" / "rotor.log"
    files = [path, *(path.with_name(f"rotor.log.{n}") for n in (1, 2, 3))]
    assert all(f.exists() for f in files)
    assert not path.with_name("rotor.log.4").exists()  # --log-keep 3
    kept = b"".join(f.read_bytes() for f in reversed(files)).decode().splitlines()
    numbers = [int(m.group(1)) for m in map(re.compile(r"rotor line (\d+)\Z").match, kept) if m]
    assert len(numbers) == len(kept)  # every line whole
    assert numbers == list(range(numbers[0], 800))  # consecutive up to the last: none lost
    assert all(f.stat().st_size <= 2 * 2048 for f in files)
    rc, out, err = await busmgr(session, "log", "rotor", "-n", "120")
    assert rc == 0, err
    assert out.splitlines() == [f"rotor line {i}" for i in range(680, 800)]  # across files


async def test_log_follow_sees_every_line_across_rotations(session: Session) -> None:
    (session.state / "log").mkdir(parents=True, exist_ok=True)
    proc = await asyncio.create_subprocess_exec(
        PYTHON,
        "-m",
        "busmgr",
        "log",
        "-f",
        "ticker",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=session.env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        note = await asyncio.wait_for(proc.stderr.readline(), TIMEOUT)
        assert b"no output yet; waiting for it" in note  # the watch is in place
        rc, _out, err = await busmgr(session, "start", "ticker")  # 600 lines, ~9 rotations
        assert rc == 0, err
        lines = []
        while not lines or lines[-1] != "tick 599":
            lines.append(
                (await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)).decode().rstrip()
            )
        assert lines == [f"tick {i}" for i in range(600)]
    finally:
        proc.terminate()
        await proc.wait()


async def test_instance_logs_never_collide(session: Session) -> None:
    for tty in ("a/b", "a_b"):
        rc, _out, err = await busmgr(session, "start", "echoer", f"TTY={tty}")
        assert rc == 0, err
        rc, _out, err = await busmgr(session, "stop", "echoer", f"TTY={tty}")
        assert rc == 0, err
    for tty in ("a/b", "a_b"):
        rc, out, err = await busmgr(session, "log", "echoer", tty)
        assert rc == 0, err
        assert out.splitlines() == [f"I am {tty}"]
    assert {p.name for p in (session.state / "log" / "echoer").iterdir()} == {
        "a%2fb.log",
        "a_b.log",
    }


# ------------------------------------------------------------------ reasons
async def test_start_of_a_job_that_hits_its_respawn_limit_fails(session: Session) -> None:
    rc, out, err = await busmgr(session, "start", "flapper")
    assert rc == 1, out
    assert "respawned too fast (3 in 5s)" in err
    assert "cannot open display" in err  # its last output
    assert len(err.strip().splitlines()) == 1
    rc, out, _ = await busmgr(session, "status", "flapper")
    assert rc == 3
    assert "Result: failed: respawned too fast (3 in 5s), last: main exited with status 1" in out
    assert "flap: cannot open display" in out  # the last log lines
    rc, out, _ = await busmgr(session, "list")
    row = next(line for line in out.splitlines() if line.startswith("flapper "))
    assert row.endswith("failed: respawned too fast (3 in 5s), last: main exited with status 1")
    log = manager_log(session)
    assert log.count("job flapper failed: main exited with status 1; it respawns") == 3
    assert re.search(r"job flapper failed: respawned too fast \(3 in 5s\).*; it stops", log)


async def test_a_failed_instance_tells_its_caller_its_last_output(session: Session) -> None:
    # A failed instance is removed at once, its log with it: the caller's message must still
    # quote the output (the soak bench found it missing, and the instance kept for ever).
    with pytest.raises(DBusError) as info:
        await session.start("badtty", {"TTY": "tty9"})
    assert info.value.text == (
        "job badtty (tty9) failed: RESULT=failed PROCESS=pre-start exited with status 3;"
        " last output: no such terminal: tty9"
    )
    (rows,) = await session.call("ListJobs")
    assert not [r for r in rows if r[0] == "badtty" and r[1] == "tty9"]  # removed


async def test_status_of_a_killed_dbus_service_names_the_signal(session: Session) -> None:
    rc, out, err = await busmgr(session, "start", "killable")
    assert rc == 0, err
    pid = int(out.split()[-1])
    mark = session.signals.mark()
    os.kill(pid, signal.SIGKILL)
    await session.signals.wait_for(
        lambda m, b: m == "JobStopped" and b[0] == "killable", start=mark
    )
    rc, out, _ = await busmgr(session, "status", "killable")
    assert rc == 3
    assert "Last exit: main killed by signal KILL" in out
    reason = next(line for line in out.splitlines() if "Result:" in line)
    # Whichever the manager heard first: the process's death or its bus name going away.
    assert "killed by signal KILL" in reason or "lost bus name org.test.Killable" in reason
    assert re.search(
        r"job killable failed: .*(KILL|lost bus name).*; it stops", manager_log(session)
    )


async def test_status_of_a_ready_timeout_names_it(session: Session) -> None:
    rc, _out, err = await busmgr(session, "start", "slowpoke")
    assert rc == 1 and "not ready after 1s" in err
    rc, out, _ = await busmgr(session, "status", "slowpoke")
    assert rc == 3
    assert "Result: failed: not ready after 1s (waited for bus name org.test.Slowpoke)" in out
    assert "job slowpoke failed: not ready after 1s" in manager_log(session)


async def test_status_selects_instances_like_start(session: Session) -> None:
    rc, _out, err = await busmgr(session, "start", "echoer", "TTY=tty1")
    assert rc == 0, err
    try:
        rc, out, err = await busmgr(session, "status", "echoer", "TTY=tty1")
        assert rc == 0, err
        assert out.startswith("echoer (tty1) start/running, process ")
        assert re.search(r"Goal/State: start/running since .* ago\)", out)
        assert "Uptime:" in out and "Processes: " in out and "sleep 1000" in out
        assert "Source: " in out and "echoer.conf" in out
        rc, out, _ = await busmgr(session, "status", "echoer", "tty1")
        assert rc == 0 and out.startswith("echoer (tty1) start/running")
        rc, _out, err = await busmgr(session, "status", "echoer", "nosuch")
        assert rc == 1 and "UnknownInstance" in err and "nosuch" in err
        rc, _out, err = await busmgr(session, "status", "echoer", "TTY=tty9")
        assert rc == 1 and "UnknownInstance" in err and "tty9" in err
    finally:
        await busmgr(session, "stop", "echoer", "TTY=tty1")


# ------------------------------------------------------------------ for scripts
async def test_json_output_parses(session: Session) -> None:
    rc, out, err = await busmgr(session, "list", "--json")
    assert rc == 0, err
    rows = json.loads(out)
    assert {"chatty", "web", "flapper"} <= {r["job"] for r in rows}
    assert all(set(r) >= {"job", "instance", "goal", "state", "pid", "result"} for r in rows)
    rc, out, err = await busmgr(session, "status", "chatty", "--json")
    assert rc == 3, err
    (doc,) = json.loads(out)
    assert doc["Job"] == "chatty" and doc["LogPath"].endswith("chatty.log")
    assert doc["JobProperties"]["Description"] == "talks on both outputs"
    assert isinstance(doc["LogTail"], list)
    rc, out, err = await busmgr(session, "events", "--json")
    assert rc == 0, err
    states = [json.loads(line) for line in out.splitlines()]
    assert all(s["type"] == "state" for s in states)
    assert "web" in {s["job"] for s in states}


async def test_events_follow_json_and_a_closed_pipe(session: Session) -> None:
    # Our own pipe, so that the test can close its read end as `| head -1` would.
    read_fd, write_fd = os.pipe()
    proc = await asyncio.create_subprocess_exec(
        PYTHON,
        "-m",
        "busmgr",
        "events",
        "--follow",
        "--json",
        stdout=write_fd,
        stderr=asyncio.subprocess.PIPE,
        env=session.env,
    )
    os.close(write_fd)
    reader = asyncio.StreamReader()
    transport, _ = await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb", 0)
    )
    assert proc.stderr is not None
    try:
        while True:  # the states come first; once they are out, no event is missed
            doc = json.loads(await asyncio.wait_for(reader.readline(), TIMEOUT))
            if doc["type"] == "state" and doc["job"] == "web":
                break
        await session.emit("hello-json", {"WHO": "tests"})
        while True:
            doc = json.loads(await asyncio.wait_for(reader.readline(), TIMEOUT))
            if doc["type"] == "event" and doc["event"] == "hello-json":
                assert doc["env"] == {"WHO": "tests"}
                break
        # The reader goes away (as `| head -1` does): the next event ends it, quietly.
        transport.close()
        await session.emit("after-the-reader-left")
        status = await asyncio.wait_for(proc.wait(), TIMEOUT)
        assert status == 141
        assert (await proc.stderr.read()) == b""
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_usage_errors_exit_2(session: Session) -> None:
    for args in (["start", ""], ["emit", ""], ["activate", ""], ["activate", "not a name"]):
        rc, _out, err = await busmgr(session, *args)
        assert rc == 2, (args, err)
        assert err.strip() and not err.rstrip().endswith(":")
    rc, _out, err = await busmgr(session, "emit", "bad name")  # refused by the manager
    assert rc == 2 and "InvalidArgs" in err


async def test_reload_configuration_reports_each_broken_file(session: Session) -> None:
    broken = session.write_job("broken", "exec true\nrespawn limit lots\n")
    try:
        rc, _out, err = await busmgr(session, "reload-configuration")
        assert rc == 1
        assert f"{broken}:2:" in err and len(err.strip().splitlines()) == 1
    finally:
        broken.unlink()
    rc, _out, err = await busmgr(session, "reload-configuration")
    assert rc == 0 and err == ""


# ------------------------------------------------------------------ pictures
def _dot_edges(dot: str) -> set[tuple[str, str]]:
    return set(re.findall(r'^\s*"([^"]+)" -> "([^"]+)"', dot, re.M))


async def test_graph_from_the_manager_and_from_files(session: Session, tmp_path: Path) -> None:
    rc, online, err = await busmgr(session, "graph")
    assert rc == 0, err
    rc, offline, err = await busmgr(session, "graph", str(session.services))
    assert rc == 0, err
    for dot in (online, offline):
        assert dot.startswith('digraph "busmgr" {') and dot.rstrip().endswith("}")
        nodes = set(re.findall(r'^\s*"([^"]+)" \[', dot, re.M))
        assert {"job:web", "job:proxy", "job:flapper", "event:net-up", "event:web-up"} <= nodes
        edges = _dot_edges(dot)
        assert ("event:net-up", "job:web") in edges  # start on
        assert ("event:net-down", "job:web") in edges  # stop on
        assert ("job:web", "event:web-up") in edges  # emits
        assert ("job:web", "job:proxy") in edges  # start on started web
        assert ("event:cache-ready", "job:proxy") in edges
        assert ("bus:org.test.Killable", "job:killable") in edges
    assert _dot_edges(online) == _dot_edges(offline)
    svg = tmp_path / "jobs.svg"
    rc, _out, err = await busmgr(session, "graph", "-o", str(svg))
    assert rc == 0, err
    titles = {t.text for t in ET.parse(svg).iter("{http://www.w3.org/2000/svg}title")}
    assert {"job:web", "job:proxy", "job:web->job:proxy"} <= titles


async def test_plot_draws_one_bar_per_instance(session: Session, tmp_path: Path) -> None:
    await busmgr(session, "start", "echoer", "TTY=plot1")
    await busmgr(session, "stop", "echoer", "TTY=plot1")
    svg = tmp_path / "startup.svg"
    rc, _out, err = await busmgr(session, "plot", "-o", str(svg))
    assert rc == 0, err
    ns = "{http://www.w3.org/2000/svg}"
    bars = [r for r in ET.parse(svg).iter(f"{ns}rect") if r.get("class") == "bar"]
    started = {(r.get("data-job"), r.get("data-instance")) for r in bars}
    assert len(started) == len(bars)  # one bar per instance
    assert {("chatty", ""), ("flapper", ""), ("echoer", "plot1"), ("echoer", "a/b")} <= started
    flapper = next(r for r in bars if r.get("data-job") == "flapper")
    assert flapper.get("data-state") == "failed"
    failures = [p for p in ET.parse(svg).iter(f"{ns}path") if p.get("class") == "failure"]
    assert len(failures) >= 4  # the flapper's three respawns and its last failure, at least


# ------------------------------------------------------------------ completion
COMPLETION = Path(__file__).parent.parent / "completion" / "busmgr.bash"


async def _complete(session: Session, line: str) -> list[str]:
    words = line.split(" ")
    script = (
        f"source {COMPLETION}\n"
        f"COMP_WORDS=({' '.join(repr(w) for w in words)})\n"
        f"COMP_CWORD={len(words) - 1}\n"
        f"COMP_LINE={line!r}\nCOMP_POINT=${{#COMP_LINE}}\n"
        "_busmgr\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n"
    )
    bindir = Path(tempfile.mkdtemp())
    (bindir / "busmgr").write_text(f'#!/bin/sh\nexec {PYTHON} -m busmgr "$@"\n')
    (bindir / "busmgr").chmod(0o755)
    env = dict(session.env, PATH=f"{bindir}:{os.environ['PATH']}")
    try:
        proc = await asyncio.create_subprocess_exec(
            "bash", "--norc", "-c", script, stdout=asyncio.subprocess.PIPE, env=env
        )
        out, _ = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    finally:
        shutil.rmtree(bindir)
    return sorted(w for w in out.decode().split("\n") if w)


async def test_bash_completion_of_verbs_and_jobs(session: Session) -> None:
    assert {"status", "start", "stop"} <= set(await _complete(session, "busmgr st"))
    assert await _complete(session, "busmgr sta") == ["start", "status"]
    assert await _complete(session, "busmgr start fl") == ["flapper"]
    assert "--json" in await _complete(session, "busmgr list --")


# ------------------------------------------------------------------ an imported service
async def test_an_imported_services_stderr_reaches_its_log(tmp_path: Path) -> None:
    share = tmp_path / "share" / "dbus-1" / "services"
    share.mkdir(parents=True)
    helper = tmp_path / "colord-helper"
    helper.write_text("#!/bin/sh\necho 'failed to contact colord' >&2\nexit 1\n")
    helper.chmod(0o755)
    (share / "org.test.Colord.service").write_text(
        f"[D-BUS Service]\nName=org.test.Colord\nExec={helper}\n"
    )
    env = dict(os.environ, XDG_DATA_DIRS=str(tmp_path / "share"))
    missing = tmp_path / "no-such-dir"
    session = await start_session(tmp_path, {}, extra=["--services-dir", str(missing)], env=env)
    try:
        assert f"job directory {missing} does not exist" in manager_log(session)
        rc, _out, err = await busmgr(session, "activate", "org.test.Colord")
        assert rc == 1 and "failed to contact colord" in err
        rc, out, err = await busmgr(session, "log", "org.test.Colord")
        assert rc == 0, err
        assert out.splitlines() == ["failed to contact colord"]
        assert "job org.test.Colord failed: main exited with status 1" in manager_log(session)
    finally:
        await stop_session(session)


# ------------------------------------------------------------------ the manager goes away
async def test_events_follow_exits_1_when_the_manager_leaves_the_bus(tmp_path: Path) -> None:
    bus = await asyncio.create_subprocess_exec(
        "dbus-daemon",
        "--session",
        "--nofork",
        "--print-address=1",
        f"--address=unix:path={tmp_path}/bus",
        stdout=asyncio.subprocess.PIPE,
    )
    assert bus.stdout is not None
    address = (await asyncio.wait_for(bus.stdout.readline(), TIMEOUT)).decode().strip()
    env = dict(os.environ, BUSMGR_ADDRESS=address, DBUS_SESSION_BUS_ADDRESS=address)
    (tmp_path / "services.d").mkdir()
    (tmp_path / "services.d" / "idle.conf").write_text("exec sleep 1000\n")
    manager = await asyncio.create_subprocess_exec(
        PYTHON,
        "-m",
        "busmgr",
        "daemon",
        "--address",
        address,
        "--services-dir",
        str(tmp_path / "services.d"),
        "--state-dir",
        str(tmp_path / "state"),
        "--no-import",
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    follower = None
    try:
        follower = await asyncio.create_subprocess_exec(
            PYTHON,
            "-m",
            "busmgr",
            "events",
            "--follow",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert follower.stdout is not None and follower.stderr is not None
        # Its first line: the state of `idle` if the manager runs already, else (once it
        # does) its `startup` event.
        await asyncio.wait_for(follower.stdout.readline(), TIMEOUT)
        manager.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(manager.wait(), TIMEOUT) == 0
        assert await asyncio.wait_for(follower.wait(), TIMEOUT) == 1
        err = (await follower.stderr.read()).decode()
        assert "org.busmgr.Manager1 left the bus" in err
    finally:
        for proc in (follower, manager, bus):
            if proc is not None and proc.returncode is None:
                proc.kill()
                await proc.wait()
