"""The bus face driven by dbus-fast, ``busctl``, ``dbus-send`` and ``gdbus``: control methods,
lifecycle signals with their env, error names, properties and introspection (issue: the bus
face)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
from dbus_fast import Message, MessageType
from dbus_fast.errors import DBusError
from dbus_fast.introspection import Node

from busmgr.bus.values import instance_path, job_path

from conftest import TIMEOUT, Session, add_match, start_session, stop_session

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
DOCS_XML = REPO / "docs" / "org.busmgr.Manager1.xml"

JOBS = {
    "svc": """
        description "a plain service"
        env COLOR=blue
        export COLOR
        exec sleep 1000
    """,
    "tool": """
        exec sleep 1000
    """,
    "quick": """
        task
        exec true
    """,
    "failer": """
        exec sleep 1000
        pre-start exec sh -c 'exit 3'
    """,
    "inst": """
        instance $N
        exec sleep 1000
    """,
    "my-job": """
        exec sleep 1000
    """,
}


async def run(*argv: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    return proc.returncode or 0, out.decode(), err.decode()


# ------------------------------------------------------------------ dbus-fast
async def test_start_and_stop_with_wait_and_signals_in_order(session: Session) -> None:
    mark = session.signals.mark()
    path = await session.start("svc")
    assert path == "/org/busmgr/Manager1/job/svc/_"
    props = await session.props(path)
    assert (props["Job"], props["Instance"], props["Goal"], props["State"]) == (
        "svc",
        "",
        "start",
        "running",
    )
    assert props["MainPID"] > 0 and [list(p) for p in props["Processes"]] == [
        ["main", props["MainPID"]]
    ]
    await session.stop("svc")
    await session.signals.wait_for(lambda m, b: m == "JobStopped" and b[0] == "svc", start=mark)
    assert session.signals.job_signals("svc", mark) == [
        ("JobStarting", ""),
        ("JobStarted", ""),
        ("JobStopping", ""),
        ("JobStopped", ""),
    ]
    envs = {
        m: b[2] for m, b in session.signals.items[mark:] if m.startswith("Job") and b[0] == "svc"
    }
    assert envs["JobStarting"] == {"JOB": "svc", "INSTANCE": "", "COLOR": "blue"}
    assert envs["JobStopped"] == {"JOB": "svc", "INSTANCE": "", "RESULT": "ok", "COLOR": "blue"}
    events = [b for m, b in session.signals.items[mark:] if m == "EventEmitted"]
    assert [e[0] for e in events if e[1].get("JOB") == "svc"] == [
        "starting",
        "started",
        "stopping",
        "stopped",
    ]


async def test_start_without_wait_returns_before_running(session: Session) -> None:
    mark = session.signals.mark()
    path = await session.start("tool", wait=False)
    assert path.endswith("/tool/_")
    await session.signals.wait_for(lambda m, b: m == "JobStarted" and b[0] == "tool", start=mark)
    assert (await session.props(path))["State"] == "running"
    mark = session.signals.mark()
    await session.stop("tool", wait=False)
    await session.signals.wait_for(lambda m, b: m == "JobStopped" and b[0] == "tool", start=mark)
    assert (await session.props(path))["State"] == "waiting"


async def test_restart_runs_main_again(session: Session) -> None:
    path = await session.start("tool")
    pid = (await session.props(path))["MainPID"]
    mark = session.signals.mark()
    await session.call("RestartJob", "sa{ss}b", ["tool", {}, True])
    props = await session.props(path)
    assert props["State"] == "running" and props["MainPID"] not in (0, pid)
    assert session.signals.job_signals("tool", mark) == [
        ("JobStopping", ""),
        ("JobStarting", ""),
        ("JobStarted", ""),
    ]
    await session.stop("tool")


async def test_task_start_with_wait_returns_when_finished(session: Session) -> None:
    path = await session.start("quick")
    props = await session.props(path)
    assert (props["Goal"], props["State"], props["Result"], props["ExitStatus"]) == (
        "stop",
        "waiting",
        "ok",
        0,
    )


async def test_properties_changed_carries_new_values(session: Session) -> None:
    path = instance_path("tool", "")
    changes: list[dict[str, object]] = []
    running = asyncio.get_running_loop().create_future()

    def handler(msg: Message) -> None:
        if msg.member == "PropertiesChanged" and msg.path == path:
            changed = {k: v.value for k, v in msg.body[1].items()}
            changes.append(changed)
            if changed.get("State") == "running" and not running.done():
                running.set_result(changed)

    session.bus.add_message_handler(handler)
    await add_match(session.bus, f"type='signal',path='{path}'")
    try:
        await session.start("tool")
        changed = await asyncio.wait_for(running, TIMEOUT)
        assert changed["MainPID"] == (await session.props(path))["MainPID"] > 0
    finally:
        session.bus.remove_message_handler(handler)
        await session.stop("tool")


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    ("member", "signature", "body", "error", "words"),
    [
        ("StartJob", "sa{ss}b", ["nope", {}, True], "UnknownJob", ['"nope"']),
        ("GetJob", "s", ["nope"], "UnknownJob", ['"nope"']),
        ("StopJob", "sa{ss}b", ["inst", {"N": "zz"}, True], "UnknownInstance", ["zz"]),
        ("StopJob", "sa{ss}b", ["svc", {}, True], "AlreadyStopped", ["svc"]),
        (
            "StartJob",
            "sa{ss}b",
            ["failer", {}, True],
            "JobFailed",
            ["failer", "PROCESS=pre-start", "status 3"],
        ),
        ("ActivateName", "s", ["org.example.Nobody"], "NoProvider", ["org.example.Nobody"]),
        ("StartJob", "sa{ss}b", ["svc", {"1BAD": "x"}, True], "InvalidArgs", ["1BAD"]),
        ("StartJob", "s", ["svc"], "InvalidArgs", ["sa{ss}b"]),
        ("EmitEvent", "sa{ss}s", ["ev", {}, "yes"], "InvalidArgs", ["sa{ss}b"]),
        ("EmitEvent", "sa{ss}b", ["bad name", {}, True], "InvalidArgs", ["bad name"]),
    ],
)
async def test_error_names(
    session: Session, member: str, signature: str, body: list[object], error: str, words: list[str]
) -> None:
    with pytest.raises(DBusError) as err:
        await session.call(member, signature, body)
    assert err.value.type == f"org.busmgr.Error.{error}"
    for word in words:
        assert word in err.value.text


async def test_already_started_and_a_bad_call_leave_the_job_running(session: Session) -> None:
    path = await session.start("svc")
    pid = (await session.props(path))["MainPID"]
    with pytest.raises(DBusError) as err:
        await session.start("svc")
    assert err.value.type == "org.busmgr.Error.AlreadyStarted"
    with pytest.raises(DBusError):
        await session.call("StopJob", "sa{ss}s", ["svc", {}, "x"])
    props = await session.props(path)
    assert (props["State"], props["MainPID"]) == ("running", pid)
    await session.stop("svc")


# ------------------------------------------------------------------ other clients
async def test_busctl_drives_the_api(session: Session) -> None:
    base = [
        "busctl",
        f"--address={session.address}",
        "call",
        "org.busmgr.Manager1",
        "/org/busmgr/Manager1",
        "org.busmgr.Manager1",
    ]
    rc, out, err = await run(
        *base, "StartJob", "sa{ss}b", "tool", "1", "N", "x", "true", env=session.env
    )
    assert rc == 0, err
    assert out.strip() == 'o "/org/busmgr/Manager1/job/tool/_"'
    rc, out, _ = await run(*base, "ListJobs", env=session.env)
    assert '"tool" "" "running" "/org/busmgr/Manager1/job/tool/_"' in out
    rc, out, err = await run(*base, "StartJob", "sa{ss}b", "nope", "0", "true", env=session.env)
    assert rc != 0 and 'no job named "nope"' in err
    rc, _, err = await run(*base, "StopJob", "sa{ss}b", "tool", "0", "true", env=session.env)
    assert rc == 0, err
    assert (await session.instance("tool"))["State"] == "waiting"


async def test_dbus_send_drives_the_api(session: Session) -> None:
    base = [
        "dbus-send",
        f"--bus={session.address}",
        "--print-reply",
        "--dest=org.busmgr.Manager1",
        "/org/busmgr/Manager1",
    ]
    rc, out, err = await run(
        *base,
        "org.busmgr.Manager1.StartJob",
        "string:tool",
        "dict:string:string:K,v",
        "boolean:true",
        env=session.env,
    )
    assert rc == 0, err
    assert 'object path "/org/busmgr/Manager1/job/tool/_"' in out
    rc, out, err = await run(
        *base,
        "org.busmgr.Manager1.StartJob",
        "string:tool",
        "dict:string:string:K,v",
        "boolean:true",
        env=session.env,
    )
    assert rc != 0 and "org.busmgr.Error.AlreadyStarted" in err
    rc, out, err = await run(
        *base,
        "org.busmgr.Manager1.StopJob",
        "string:tool",
        "dict:string:string:K,v",
        "boolean:true",
        env=session.env,
    )
    assert rc == 0, err


async def test_gdbus_drives_the_api(session: Session) -> None:
    base = [
        "gdbus",
        "call",
        "--address",
        session.address,
        "--dest",
        "org.busmgr.Manager1",
        "--object-path",
        "/org/busmgr/Manager1",
    ]
    rc, out, err = await run(
        *base, "--method", "org.busmgr.Manager1.StartJob", "tool", "{}", "true", env=session.env
    )
    assert rc == 0, err
    assert "/org/busmgr/Manager1/job/tool/_" in out
    rc, out, err = await run(
        *base,
        "--method",
        "org.busmgr.Manager1.EmitEvent",
        "hello-event",
        "{'A': 'b'}",
        "true",
        env=session.env,
    )
    assert rc == 0, err
    rc, out, err = await run(
        *base, "--method", "org.busmgr.Manager1.StopJob", "tool", "{}", "true", env=session.env
    )
    assert rc == 0, err


# ------------------------------------------------------------------ objects
def _interfaces(xml: str) -> dict[str, tuple[object, ...]]:
    node = Node.parse(xml)
    out = {}
    for iface in node.interfaces:
        if iface.name.startswith("org.freedesktop.DBus."):
            continue
        out[iface.name] = (
            sorted(
                (m.name, tuple((a.name, a.signature) for a in m.in_args + m.out_args))
                for m in iface.methods
            ),
            sorted((s.name, tuple((a.name, a.signature) for a in s.args)) for s in iface.signals),
            sorted((p.name, p.signature, p.access.value) for p in iface.properties),
        )
    return out


async def test_live_introspection_matches_the_shipped_xml(session: Session) -> None:
    shipped = _interfaces(DOCS_XML.read_text())
    live: dict[str, tuple[object, ...]] = {}
    for path in ("/org/busmgr/Manager1", job_path("svc"), instance_path("svc", "")):
        xml = (
            await session.call(
                "Introspect", path=path, interface="org.freedesktop.DBus.Introspectable"
            )
        )[0]
        live.update(_interfaces(xml))
    assert live == shipped
    # Every argument has a name: method outputs and signal arguments too.
    for methods, signals, _props in live.values():
        for _name, args in [*methods, *signals]:
            assert all(arg_name for arg_name, _sig in args), (_name, args)


async def test_object_paths_are_escaped_like_systemd(session: Session) -> None:
    path = (await session.call("GetJob", "s", ["my-job"]))[0]
    assert path == "/org/busmgr/Manager1/job/my_2djob"
    inst = await session.start("inst", {"N": "tty-1.x"})
    assert inst == "/org/busmgr/Manager1/job/inst/tty_2d1_2ex"
    job = await session.props(path, "org.busmgr.Job1")
    assert job["Name"] == "my-job" and job["Source"].endswith("my-job.conf")
    await session.stop("inst", {"N": "tty-1.x"})


# ------------------------------------------------------------------ session life
async def test_session_command_runs_inside_and_its_status_is_returned(tmp_path: Path) -> None:
    services = tmp_path / "services.d"
    services.mkdir()
    (services / "bg.conf").write_text("start on startup\nexec sleep 1000\n")
    script = (
        f'test -n "$DBUS_SESSION_BUS_ADDRESS" && {sys.executable} -m busmgr status bg && exit 7'
    )
    env = dict(os.environ, XDG_RUNTIME_DIR=str(tmp_path))
    env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "busmgr",
        "session",
        "--no-import",
        "--services-dir",
        str(services),
        "--state-dir",
        str(tmp_path / "state"),
        "--",
        "sh",
        "-c",
        script,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 7, err.decode()
    assert "bg start/running" in out.decode()
    left = [p for p in os.listdir(tmp_path) if p.startswith("busmgr-")]
    assert left == [], "the private bus directory was not removed"


async def test_calls_during_shutdown_get_a_clean_error(tmp_path: Path) -> None:
    jobs = {
        "slow": """
        start on startup
        kill timeout 3
        exec sh -c 'trap "" TERM; while :; do sleep 1; done'
    """
    }
    sess = await start_session(tmp_path, jobs)
    try:
        await sess.wait_running("slow")
        mark = sess.signals.mark()
        sess.proc.send_signal(15)
        await sess.signals.wait_for(lambda m, b: m == "JobStopping" and b[0] == "slow", start=mark)
        with pytest.raises(DBusError) as err:
            await sess.start("slow")
        assert err.value.type == "org.busmgr.Error.ShuttingDown"
    finally:
        await stop_session(sess)


async def test_sigterm_stops_everything(tmp_path: Path) -> None:
    jobs = {
        "a": "start on startup\nexec sleep 1000\n",
        "b": "start on started a\nexec sleep 1000\n",
    }
    sess = await start_session(tmp_path, jobs)
    try:
        pids = [(await sess.wait_running(j))["MainPID"] for j in ("a", "b")]
        assert all(pids)
    finally:
        await stop_session(sess)  # exit 0, nothing left behind
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()


def test_reply_types_are_method_returns() -> None:
    # The escaping helper agrees with the paths the tests above expect.
    assert MessageType.METHOD_RETURN.value == 2


async def test_session_command_keeps_stdin_and_gets_the_sessions_signal(tmp_path: Path) -> None:
    env = dict(os.environ, XDG_RUNTIME_DIR=str(tmp_path))
    env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    # The command reads its stdin (inherited, as under dbus-run-session), says so, then waits;
    # the SIGTERM sent to the session reaches it and its trap decides the exit status.
    script = "trap 'exit 42' TERM; read line; echo \"got $line\"; while :; do sleep 1; done"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "busmgr",
        "session",
        "--no-import",
        "--services-dir",
        str(tmp_path / "none"),
        "--state-dir",
        str(tmp_path / "state"),
        "--",
        "sh",
        "-c",
        script,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(b"hello\n")
    await proc.stdin.drain()
    line = await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)
    assert line == b"got hello\n"
    proc.send_signal(15)
    await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 42


# ------------------------------------------------------------------ ReloadJob
RELOADABLE = (
    "import os, signal\n"
    "def say(text):\n"
    "    fd = os.open(os.environ['FIFO'], os.O_WRONLY)\n"
    "    os.write(fd, text)\n"
    "    os.close(fd)\n"
    "signal.signal(signal.SIGUSR1, lambda *a: say(b'reloaded\\n'))\n"
    "say(b'ready\\n')\n"
    "while True:\n"
    "    signal.pause()\n"
)


async def _read_line(fd: int) -> bytes:
    """The next line a job writes to the FIFO whose read end is ``fd`` (non-blocking)."""
    loop = asyncio.get_running_loop()
    readable = asyncio.Event()
    loop.add_reader(fd, readable.set)
    try:
        data = b""
        while not data.endswith(b"\n"):
            readable.clear()
            await asyncio.wait_for(readable.wait(), TIMEOUT)
            try:
                data += os.read(fd, 64)
            except BlockingIOError:
                continue
        return data
    finally:
        loop.remove_reader(fd)


async def test_reload_job_sends_the_reload_signal_to_main(session: Session, tmp_path: Path) -> None:
    script = tmp_path / "reloadable.py"
    script.write_text(RELOADABLE)
    session.write_job("reloadable", f"reload signal USR1\nexec {sys.executable} {script}\n")
    await session.call("ReloadConfiguration")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        await session.start("reloadable", {"FIFO": str(fifo)})
        assert await _read_line(fd) == b"ready\n"  # the handler is set
        await session.call("ReloadJob", "sa{ss}", ["reloadable", {}])
        assert await _read_line(fd) == b"reloaded\n"
        props = await session.instance("reloadable")
        assert props["State"] == "running"  # USR1 reloaded it; the default action would kill
        await session.stop("reloadable")
    finally:
        os.close(fd)
    with pytest.raises(DBusError) as err:
        await session.call("ReloadJob", "sa{ss}", ["reloadable", {}])
    assert err.value.type == "org.busmgr.Error.AlreadyStopped"
    assert "has no main process to reload" in err.value.text


# ------------------------------------------------------------------ bad instance names
@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("x" * 300, "the instance name is too long (300 characters"),
        ("tty\n1", "contains control characters"),
        ("a\x1bb", "contains control characters"),
    ],
)
async def test_bad_instance_names_are_invalid_args_and_leave_nothing(
    session: Session, value: str, message: str
) -> None:
    # Found by the reliability review: a name too long for a cgroup or log file gave a generic
    # OSError reply and a phantom "waiting" instance; control characters broke `list`.
    with pytest.raises(DBusError) as err:
        await session.start("inst", {"N": value})
    assert err.value.type == "org.busmgr.Error.InvalidArgs"
    assert message in err.value.text and "\n" not in err.value.text
    (rows,) = await session.call("ListJobs")
    assert [r[1] for r in rows if r[0] == "inst"] == [""]  # the placeholder row only
