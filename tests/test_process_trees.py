"""Process trees, forking daemons and busmgr as PID 1, with real processes (issue 6).

One shared ``busmgr session`` runs the jobs below; the pidfile and PID 1 tests start sessions
of their own. Nothing sleeps: every wait is on a bus signal, a reply, a process exit or a FIFO,
under a timeout. Every process a test starts outside busmgr is killed by the test itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.errors import DBusError

from busmgr.bus.values import instance_path
from busmgr.process import cgroup2_mount

from conftest import HELPERS, PYTHON, TIMEOUT, Session, add_match, start_session, stop_session

pytestmark = pytest.mark.integration

IS_ROOT = os.geteuid() == 0
CAP_NET_BIND_SERVICE = 10
_MOUNT = cgroup2_mount()
# Where busmgr makes busmgr-<pid>: the cgroup2 directory of this process (and of the sessions
# it starts), e.g. /sys/fs/cgroup/unified on a hybrid machine.
CGROUP2 = _MOUNT[0] + _MOUNT[1].rstrip("/") if _MOUNT else "/nonexistent"
HAVE_CGROUPS = os.access(CGROUP2, os.W_OK)
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root")

JOBS = {
    "named": """
        dbus org.test.Named
        exec $PYTHON $TESTS_HELPERS/dbus_service.py --name org.test.Named
    """,
    "tree": """
        expect stop
        exec sh -c 'sleep 1000 & setsid sh -c "kill -STOP $$; exec sleep 1000" & wait'
    """,
    "workers": """
        expect stop
        kill timeout 1
        exec $PYTHON $TESTS_HELPERS/tree_workers.py
    """,
    "doublefork": """
        expect daemon
        exec $PROG
    """,
    "forker": """
        expect fork
        exec $PYTHON $TESTS_HELPERS/tree_fork.py 1
    """,
    "daemon": """
        expect daemon
        exec $PYTHON $TESTS_HELPERS/tree_fork.py 2
    """,
    "badfork": """
        expect fork
        exec $PYTHON $TESTS_HELPERS/tree_fork.py 1 3
    """,
    "nofork": """
        expect daemon
        exec $PYTHON $TESTS_HELPERS/tree_fork.py 0
    """,
    "dnsmasq": """
        expect daemon
        exec dnsmasq --port=0 --conf-file=/dev/null --pid-file=$OUT --user=nobody --group=nogroup
    """,
    "stopper": """
        expect stop
        exec sh -c 'kill -STOP $$; exec sleep 1000'
    """,
    "notifier": """
        expect notify
        exec $PYTHON $TESTS_HELPERS/tree_notify.py
    """,
    "mainpid": """
        expect notify
        exec $PYTHON $TESTS_HELPERS/tree_mainpid.py
    """,
    "capped": """
        caps keep net_bind_service
        proc name capped-d
        exec sleep 1000
    """,
    "capped-nobody": """
        setuid nobody
        caps keep net_bind_service
        exec sleep 1000
    """,
}


def status_field(pid: int, key: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == key:
            return value.strip()
    raise KeyError(key)


def gone(pid: int) -> bool:
    """Exited (a zombie not yet collected by busmgr counts: it runs nothing)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def manager_cgroup(state: Path) -> Path:
    """The manager's cgroup directory: its name is stable for one state directory (so a
    manager started again after a crash finds its jobs' leaves), no longer busmgr-<pid>."""
    return Path(CGROUP2) / f"busmgr-{hashlib.sha256(str(state).encode()).hexdigest()[:12]}"


def leaf(session: Session, job: str) -> Path:
    """The cgroup leaf of a job without instances whose name needs no escaping."""
    return manager_cgroup(session.state) / job


async def running(session: Session, job: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    await session.start(job, env or {})
    props = await session.instance(job)
    assert props["State"] == "running", props
    return props


async def stop(session: Session, job: str) -> None:
    await session.stop(job)
    assert (await session.instance(job))["State"] == "waiting"


def processes(props: dict[str, Any]) -> dict[int, str]:
    return {pid: kind for kind, pid in props["Processes"]}


@contextlib.asynccontextmanager
async def outside_process() -> AsyncIterator[asyncio.subprocess.Process]:
    """Seed 000's create_numbers.py: the same interpreter and script, not started by busmgr."""
    proc = await asyncio.create_subprocess_exec(
        PYTHON,
        str(HELPERS / "tree_workers.py"),
        "outside",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        assert await asyncio.wait_for(proc.stdout.readline(), TIMEOUT) == b"ready\n"
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await asyncio.wait_for(proc.wait(), TIMEOUT)


# --------------------------------------------------------------------------------------------
# every process of a job, and nothing else


@pytest.mark.skipif(not HAVE_CGROUPS, reason="needs a writable cgroup2 hierarchy")
async def test_a_job_providing_a_bus_name_keeps_its_empty_leaf_for_the_next_start(
    session: Session,
) -> None:
    # Making a cgroup takes the kernel's cgroup lock, which a migration anywhere on the machine
    # holds for an RCU grace period: an activation must not wait for it.
    where = leaf(session, "named")
    for _ in range(2):
        props = await running(session, "named")
        assert [int(p) for p in (where / "cgroup.procs").read_text().split()] == [props["MainPID"]]
        await stop(session, "named")
        assert gone(props["MainPID"])
        assert where.is_dir() and (where / "cgroup.procs").read_text() == ""


@pytest.mark.skipif(not HAVE_CGROUPS, reason="needs a writable cgroup2 hierarchy")
async def test_every_process_of_a_job_is_in_its_cgroup_leaf(session: Session) -> None:
    props = await running(session, "tree")
    where = leaf(session, "tree")
    pids = [int(p) for p in (where / "cgroup.procs").read_text().split()]
    # sh became sleep (main); one sleep in its session, one that left it with setsid.
    assert len(pids) == 3
    assert processes(await session.instance("tree")) == {
        p: "main" if p == props["MainPID"] else "other" for p in pids
    }
    escaped = [p for p in pids if os.getsid(p) != props["MainPID"]]
    assert len(escaped) == 1  # the session fallback would have lost this one
    for pid in pids:
        assert Path(f"/proc/{pid}/cgroup").read_text().strip().endswith("/tree")
    await stop(session, "tree")
    assert all(gone(p) for p in pids)
    assert not where.exists()  # at rest and empty: the leaf is removed


@pytest.mark.skipif(not HAVE_CGROUPS, reason="needs a writable cgroup2 hierarchy")
async def test_manager_and_bus_stay_outside_job_leaves(session: Session) -> None:
    own = Path(f"/proc/{session.proc.pid}/cgroup").read_text().strip()
    assert "busmgr-" not in own
    assert manager_cgroup(session.state).is_dir()


async def test_multiprocessing_tree_fully_stopped_and_nothing_else(session: Session) -> None:
    async with outside_process() as outside:
        props = await running(session, "workers")  # expect stop: ready once all ten work
        tree = processes(props)
        assert len(tree) == 11, tree
        main = props["MainPID"]
        assert tree[main] == "main"
        workers = [p for p in tree if p != main]
        assert all(psutil.Process(p).ppid() == main for p in workers)
        assert psutil.Process(main).status() != psutil.STATUS_STOPPED  # SIGCONT was sent
        began = time.monotonic()
        await stop(session, "workers")
        took = time.monotonic() - began
        assert all(gone(p) for p in [main, *workers])
        assert took >= 1.0, "the workers ignore TERM: only the KILL after 1 s ends them"
        assert (await session.instance("workers"))["Result"] == "ok"
        # The same interpreter running the same script outside the job is untouched.
        assert outside.returncode is None
        assert psutil.Process(outside.pid).status() != psutil.STATUS_ZOMBIE


# --------------------------------------------------------------------------------------------
# forking daemons


@pytest.fixture(scope="module")
def doublefork(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Seed 003's test.c, compiled; gcc is a system dependency (.ci/system-deps)."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed (tree_fork.py 2 covers the same in Python)")
    out = tmp_path_factory.mktemp("doublefork") / "test"
    subprocess.run(
        [gcc, "-Wall", "-g", "-O0", "-o", str(out), str(HELPERS / "doublefork.c")],
        check=True,
        timeout=60,
    )
    return out


async def test_seed_003_double_forker_tracked_running_and_stopped(
    session: Session, doublefork: Path
) -> None:
    props = await running(session, "doublefork", {"PROG": str(doublefork)})
    daemon = props["MainPID"]
    proc = psutil.Process(daemon)
    assert proc.exe() == str(doublefork)
    assert proc.ppid() == session.proc.pid  # re-parented to busmgr, the subreaper
    assert processes(props) == {daemon: "main"}  # the two parents are gone
    assert proc.status() != psutil.STATUS_ZOMBIE
    await stop(session, "doublefork")
    assert gone(daemon)


@pytest.mark.parametrize(("job", "forks"), [("forker", 1), ("daemon", 2)])
async def test_expect_fork_and_daemon_take_the_last_child(
    session: Session, tmp_path: Path, job: str, forks: int
) -> None:
    out = tmp_path / "pid"
    props = await running(session, job, {"OUT": str(out)})
    daemon = props["MainPID"]
    # The daemon wrote its pid before its parents exited, so before the job was ready.
    assert int(out.read_text()) == daemon, f"after {forks} fork(s)"
    assert psutil.Process(daemon).ppid() == session.proc.pid
    assert processes(props) == {daemon: "main"}
    await stop(session, job)
    assert gone(daemon)


async def test_forking_main_exiting_non_zero_fails_the_start(session: Session) -> None:
    with pytest.raises(DBusError, match="exited with status 3") as err:
        await session.start("badfork")
    assert err.value.type == "org.busmgr.Error.JobFailed"
    props = await session.instance("badfork")
    assert (props["State"], props["Result"]) == ("waiting", "failed")
    assert props["Processes"] == []  # its child was killed with the job


async def test_forking_main_leaving_no_daemon_fails_the_start(session: Session) -> None:
    with pytest.raises(DBusError, match="left no daemon"):
        await session.start("nofork")
    assert (await session.instance("nofork"))["Result"] == "failed"


@needs_root
@pytest.mark.skipif(shutil.which("dnsmasq") is None, reason="dnsmasq is not installed")
async def test_real_debian_daemon_in_its_default_backgrounding_mode(
    session: Session, tmp_path: Path
) -> None:
    pidfile = tmp_path / "dnsmasq.pid"
    props = await running(session, "dnsmasq", {"OUT": str(pidfile)})
    daemon = props["MainPID"]
    # dnsmasq writes its pid file before its first parent exits (that is its readiness).
    assert int(pidfile.read_text()) == daemon
    assert psutil.Process(daemon).name() == "dnsmasq"
    assert psutil.Process(daemon).ppid() == session.proc.pid
    assert processes(props) == {daemon: "main"}
    await stop(session, "dnsmasq")
    assert gone(daemon)


async def test_expect_stop_ready_when_stopped_then_continued(session: Session) -> None:
    props = await running(session, "stopper")
    main = props["MainPID"]
    assert psutil.Process(main).status() != psutil.STATUS_STOPPED
    await stop(session, "stopper")
    assert gone(main)


# --------------------------------------------------------------------------------------------
# expect notify


class PropertyWatch:
    """PropertiesChanged of one object, as they arrive."""

    def __init__(self, bus: MessageBus, path: str) -> None:
        self.bus = bus
        self.path = path
        self.changes: list[dict[str, Any]] = []
        self._event = asyncio.Event()

    def _on_message(self, msg: Message) -> None:
        if (
            msg.message_type is MessageType.SIGNAL
            and msg.member == "PropertiesChanged"
            and msg.path == self.path
        ):
            self.changes.append({k: v.value for k, v in msg.body[1].items()})
            self._event.set()

    async def __aenter__(self) -> PropertyWatch:
        self.bus.add_message_handler(self._on_message)
        await add_match(self.bus, f"type='signal',member='PropertiesChanged',path='{self.path}'")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.bus.remove_message_handler(self._on_message)

    async def wait_for(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        async def scan() -> dict[str, Any]:
            i = 0
            while True:
                while i < len(self.changes):
                    if predicate(self.changes[i]):
                        return self.changes[i]
                    i += 1
                self._event.clear()
                await self._event.wait()

        return await asyncio.wait_for(scan(), TIMEOUT)


async def test_notify_ready_only_after_ready_1_and_only_from_the_job(
    session: Session, tmp_path: Path
) -> None:
    out = tmp_path / "notify"
    fifo = Path(str(out) + ".fifo")
    os.mkfifo(fifo)
    # Read-write: opening never blocks, and the helper reads until this descriptor closes.
    feed = os.open(fifo, os.O_RDWR)
    try:
        async with PropertyWatch(session.bus, instance_path("notifier", "")) as watch:
            await session.start("notifier", {"OUT": str(out)}, wait=False)
            # The helper wrote the socket file before it sent its first STATUS.
            await watch.wait_for(lambda c: c.get("StatusText") == "warming up")
            address = Path(str(out) + ".socket").read_text()
            assert address.startswith("@busmgr-notify-")
            # A process outside the job says READY=1: ignored, checked by its credentials.
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                s.sendto(b"READY=1\nSTATUS=forged", "\0" + address[1:])
            # Datagrams queue in order: once the job's next STATUS is seen, the forged one
            # was read before it.
            os.write(feed, b"STATUS=loading\n")
            await watch.wait_for(lambda c: c.get("StatusText") == "loading")
            props = await session.instance("notifier")
            assert (props["State"], props["StatusText"]) == ("spawned", "loading")
            mark = session.signals.mark()
            os.write(feed, b"READY=1\\nSTATUS=serving\n")
            await session.signals.wait_for(
                lambda m, b: m == "JobStarted" and b[0] == "notifier", start=mark
            )
    finally:
        os.close(feed)
    props = await session.instance("notifier")
    assert (props["State"], props["StatusText"]) == ("running", "serving")
    await stop(session, "notifier")


async def test_notify_mainpid_names_the_main_process(session: Session, tmp_path: Path) -> None:
    out = tmp_path / "mainpid"
    path = await session.start("mainpid", {"OUT": str(out)})  # waits for READY=1
    props = await session.props(path)
    child = int(out.read_text())
    assert props["State"] == "running"
    assert props["MainPID"] == child  # MAINPID= moved the main process to the child
    kinds = processes(props)
    assert kinds[child] == "main" and "other" in kinds.values()  # the parent is still there
    await stop(session, "mainpid")
    assert gone(child)


# --------------------------------------------------------------------------------------------
# least privilege


@needs_root
async def test_caps_keep_and_proc_name_through_a_job_file(session: Session) -> None:
    props = await running(session, "capped")
    main = props["MainPID"]
    kept = 1 << CAP_NET_BIND_SERVICE
    for key in ("CapBnd", "CapEff", "CapPrm"):
        assert int(status_field(main, key), 16) == kept, key
    assert status_field(main, "NoNewPrivs") == "1"
    assert Path(f"/proc/{main}/comm").read_text() == "capped-d\n"
    assert psutil.Process(main).exe() == os.path.realpath(shutil.which("sleep") or "")
    await stop(session, "capped")


@needs_root
async def test_caps_keep_as_nobody_uses_the_ambient_set(session: Session) -> None:
    props = await running(session, "capped-nobody")
    main = props["MainPID"]
    kept = 1 << CAP_NET_BIND_SERVICE
    assert status_field(main, "Uid").split()[0] == str(psutil.Process(main).uids().real)
    assert psutil.Process(main).username() == "nobody"
    for key in ("CapAmb", "CapEff", "CapPrm", "CapBnd"):
        assert int(status_field(main, key), 16) == kept, key
    assert status_field(main, "NoNewPrivs") == "1"
    await stop(session, "capped-nobody")


# --------------------------------------------------------------------------------------------
# the manager process


async def test_manager_name_pidfile_and_cleanup(tmp_path: Path) -> None:
    pidfile = tmp_path / "run" / "busmgr.pid"
    sess = await start_session(tmp_path, {}, extra=["--no-import", "--pidfile", str(pidfile)])
    pid = sess.proc.pid
    try:
        assert pidfile.read_text() == f"{pid}\n"
        assert not Path(str(pidfile) + ".new").exists()
        assert Path(f"/proc/{pid}/comm").read_text() == "busmgr\n"
        ssd = shutil.which("start-stop-daemon")
        if ssd is not None:
            found = subprocess.run(
                [ssd, "--stop", "--test", "--name", "busmgr", "--pidfile", str(pidfile)],
                capture_output=True,
                text=True,
                timeout=TIMEOUT,
            )
            assert found.returncode == 0, found.stdout + found.stderr
            assert str(pid) in found.stdout
        own = manager_cgroup(sess.state)
        assert own.is_dir() == HAVE_CGROUPS
    finally:
        await stop_session(sess)
    assert not pidfile.exists()
    assert not own.exists()


PID1_JOBS = {
    "orphans": """
        task
        exec $PYTHON $TESTS_HELPERS/tree_orphans.py 100
    """,
    "service": """
        start on startup
        exec sleep 1000
    """,
}


def namespace_of(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/ns/pid")


def ns_pid(pid: int) -> int:
    """The pid of ``pid`` inside its own (innermost) pid namespace."""
    return int(status_field(pid, "NSpid").split()[-1])


@needs_root
@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1)")
async def test_pid1_reaps_every_orphan_and_stops_everything_on_term(tmp_path: Path) -> None:
    services = tmp_path / "services.d"
    services.mkdir()
    for name, text in PID1_JOBS.items():
        (services / f"{name}.conf").write_text(text)
    env = dict(os.environ)
    env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    env.update(XDG_RUNTIME_DIR=str(tmp_path), TESTS_HELPERS=str(HELPERS), PYTHON=PYTHON)
    argv = [
        "unshare",
        "--pid",
        "--fork",
        "--kill-child=SIGTERM",
        "--mount-proc",
        PYTHON,
        "-m",
        "busmgr",
        "session",
        "--print-address",
        "--no-import",
        "--services-dir",
        str(services),
        "--state-dir",
        str(tmp_path / "state"),
    ]
    with open(tmp_path / "stderr.log", "wb") as err:
        unshare = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=err, env=env
        )
    bus: MessageBus | None = None
    try:
        assert unshare.stdout is not None
        address = (await asyncio.wait_for(unshare.stdout.readline(), TIMEOUT)).decode().strip()
        assert address, (tmp_path / "stderr.log").read_text()
        (init,) = psutil.Process(unshare.pid).children()
        assert ns_pid(init.pid) == 1
        assert init.name() == "busmgr"
        ns = namespace_of(init.pid)

        bus = await MessageBus(bus_address=address).connect()
        out = tmp_path / "orphans"
        reply = await bus.call(
            Message(
                destination="org.busmgr.Manager1",
                path="/org/busmgr/Manager1",
                interface="org.busmgr.Manager1",
                member="StartJob",
                signature="sa{ss}b",
                body=["orphans", {"OUT": str(out)}, True],
            )
        )
        assert reply.message_type is MessageType.METHOD_RETURN, reply.body
        orphans = {int(p) for p in out.read_text().split()}
        assert len(orphans) == 100
        # Every process of the namespace but PID 1 and its bus daemon and sleep job: the
        # orphans not yet collected. psutil waits until each pid is gone, i.e. reaped.
        in_ns = [
            p
            for p in psutil.process_iter()
            if p.pid != init.pid and _in_namespace(p.pid, ns) and ns_pid(p.pid) in orphans
        ]
        _gone, alive = psutil.wait_procs(in_ns, timeout=TIMEOUT)
        assert not alive, f"orphans not reaped: {alive}"
        zombies = [
            p.pid
            for p in psutil.process_iter()
            if _in_namespace(p.pid, ns) and p.status() == psutil.STATUS_ZOMBIE
        ]
        assert zombies == []
        assert not any(
            ns_pid(p.pid) in orphans for p in psutil.process_iter() if _in_namespace(p.pid, ns)
        )
        bus.disconnect()
        bus = None
        # unshare forwards no signal: a container runtime signals PID 1 itself.
        init.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(unshare.wait(), TIMEOUT) == 0
    finally:
        if bus is not None:
            bus.disconnect()
        if unshare.returncode is None:
            unshare.kill()  # --kill-child: the namespace goes with it
            await unshare.wait()


def _in_namespace(pid: int, ns: str) -> bool:
    try:
        return namespace_of(pid) == ns
    except OSError:
        return False


FALLBACK_JOBS = {name: JOBS[name] for name in ("workers", "forker", "dnsmasq", "nofork")}


async def test_fallback_without_cgroups_or_fork_events(tmp_path: Path) -> None:
    """Sessions and the subreaper only (``BUSMGR_CGROUPS=0``, ``BUSMGR_FORK_EVENTS=0``): the
    multiprocessing tree is still stopped whole, and forks are followed by survival."""
    env = dict(os.environ, BUSMGR_CGROUPS="0", BUSMGR_FORK_EVENTS="0")
    sess = await start_session(tmp_path, FALLBACK_JOBS, env=env)
    try:
        assert not (Path(CGROUP2) / f"busmgr-{sess.proc.pid}").exists()
        async with outside_process() as outside:
            props = await running(sess, "workers")
            tree = processes(props)
            assert len(tree) == 11
            await stop(sess, "workers")
            assert all(gone(p) for p in tree)
            assert outside.returncode is None
        props = await running(sess, "forker", {"OUT": str(tmp_path / "forker.pid")})
        daemon = props["MainPID"]
        assert psutil.Process(daemon).ppid() == sess.proc.pid
        assert processes(props) == {daemon: "main"}
        await stop(sess, "forker")
        assert gone(daemon)
        with pytest.raises(DBusError, match="left no daemon"):
            await sess.start("nofork")
        if IS_ROOT and shutil.which("dnsmasq"):
            pidfile = tmp_path / "dnsmasq.pid"
            props = await running(sess, "dnsmasq", {"OUT": str(pidfile)})
            # dnsmasq's daemon called setsid: no session of the job holds it, it was adopted.
            assert int(pidfile.read_text()) == props["MainPID"]
            assert processes(props) == {props["MainPID"]: "main"}
            await stop(sess, "dnsmasq")
            assert gone(props["MainPID"])
    finally:
        await stop_session(sess)


async def test_no_orphan_outlives_the_manager(tmp_path: Path) -> None:
    """``busmgr session -- COMMAND``: what COMMAND left behind (a child re-parented to the
    manager, in no job) is terminated and reaped before the manager exits with its status."""
    env = dict(os.environ, XDG_RUNTIME_DIR=str(tmp_path))
    env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    script = "sleep 1000 & echo $!"
    proc = await asyncio.create_subprocess_exec(
        *[PYTHON, "-m", "busmgr", "session", "--no-import", "--state-dir", str(tmp_path)],
        *["--services-dir", str(tmp_path / "none"), "--", "sh", "-c", script],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env=env,
    )
    assert proc.stdout is not None
    orphan = int(await asyncio.wait_for(proc.stdout.readline(), TIMEOUT))
    try:
        assert await asyncio.wait_for(proc.wait(), TIMEOUT) == 0
        assert not psutil.pid_exists(orphan)  # gone and reaped: not even a zombie
    finally:
        if psutil.pid_exists(orphan) and psutil.Process(orphan).name() == "sleep":
            os.kill(orphan, signal.SIGKILL)
