"""D-Bus activation and bus-name readiness (issue 4) on a real bus with real services.

Every test that takes ``session`` runs twice: on a private dbus-daemon (activator mode: busmgr
owns ``org.freedesktop.systemd1`` there) and on a dbus-broker busmgr launches (broker mode,
issue 17), one ``busmgr session`` per bus serving the module. Where the buses differ, the test
says so: a dbus-broker caller whose activation failed hears the broker's own words
(``NameHasNoOwner``, "unit failed"; ``Reset`` carries no text), and busmgr's reason is then in
busmgr's log, as :func:`expect_failed` checks. The services are ``helpers/dbus_service.py``
started by the job files below; each appends its pid to ``$XDG_RUNTIME_DIR/JOB.pids`` so a
test counts spawns. Two tests build their own world: helper mode on a dbus-daemon where
another connection owns ``org.freedesktop.systemd1``, and the installed ``dconf-service``
imported from its ``.service`` file into a session without ``--no-import``.

Elapsed times are checked only against the bus's own 25 s timeout (the real figures belong to
the benchmark); nothing here sleeps: every wait is for a reply, a signal or a process exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.errors import DBusError

from busmgr import MANAGER_INTERFACE
from busmgr.bus.values import instance_path

from conftest import (
    ALL_BUSES,
    DBUS_BROKER,
    DBUS_DAEMON,
    HELPERS,
    PYTHON,
    TIMEOUT,
    Session,
    start_session,
    stop_session,
)

pytestmark = pytest.mark.integration
BUSES = ALL_BUSES

SERVICE_PATH = "/org/test/Service"
SERVICE_IFACE = "org.test.Service"
DBUS = "org.freedesktop.DBus"
DBUS_PATH = "/org/freedesktop/DBus"
#: Far below the bus daemon's 25 s method-call timeout: a failure that took this long would
#: mean the caller heard from the bus timeout, not from busmgr.
PROMPT = 5.0


def service_job(job: str, name: str, *options: str, stanzas: str = "") -> str:
    """A job file running the test service for ``name``, counting its spawns."""
    args = " ".join(options)
    return f"""
        dbus {name}
        {stanzas}
        exec $PYTHON $TESTS_HELPERS/dbus_service.py --name {name} \\
            --print-to $XDG_RUNTIME_DIR/{job}.pids {args}
    """


JOBS = {
    "echo": service_job("echo", "org.test.Echo"),
    "many": service_job("many", "org.test.Many", "--claim-delay 0.3"),
    "exit3": service_job("exit3", "org.test.Exit3", "--exit-before-claim 3"),
    "silent": service_job("silent", "org.test.Silent", "--never-claim", stanzas="ready timeout 1"),
    "crashy": service_job("crashy", "org.test.Crashy"),
    "slow": service_job("slow", "org.test.Slow", "--claim-delay 0.5"),
    "envy": service_job("envy", "org.test.Envy"),
    "direct": service_job("direct", "org.test.Direct"),
    "loser": service_job("loser", "org.test.Loser", stanzas="respawn"),
    "dropper": service_job("dropper", "org.test.Dropper"),
    "foreign": service_job("foreign", "org.test.Foreign", stanzas="ready timeout 1"),
    "tail": service_job(
        "tail",
        "org.test.Tail",
        "--say 'reading settings'",
        "--say 'fatal: no settings file'",
        "--exit-before-claim 3",
        stanzas="console log",
    ),
    "segv": service_job("segv", "org.test.Segv", "--signal-before-claim SEGV"),
    "blink": service_job("blink", "org.test.Blink"),
    "instfail": service_job(
        "instfail", "org.test.InstFail", "--exit-before-claim 4", stanzas="instance $NAME"
    ),
}


# ------------------------------------------------------------------ helpers
async def run(*argv: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    return proc.returncode or 0, out.decode(), err.decode()


async def raw_call(
    bus: MessageBus,
    destination: str,
    member: str,
    signature: str = "",
    body: list[Any] | None = None,
    *,
    path: str = SERVICE_PATH,
    interface: str = SERVICE_IFACE,
) -> Message:
    """One call; the reply or error message as it came (never raises for an error reply)."""
    msg = Message(
        destination=destination,
        path=path,
        interface=interface,
        member=member,
        signature=signature,
        body=body or [],
    )
    return await asyncio.wait_for(bus.call(msg), TIMEOUT + 30)


async def call_ok(bus: MessageBus, destination: str, member: str, *args: Any, **kw: Any) -> Any:
    """Call and return the first value of the reply; fail the test on an error reply."""
    signature = kw.pop("signature", "")
    reply = await raw_call(bus, destination, member, signature, list(args), **kw)
    assert reply.message_type is MessageType.METHOD_RETURN, (reply.error_name, reply.body)
    return reply.body[0] if reply.body else None


async def owner_of(bus: MessageBus, name: str) -> str:
    reply = await raw_call(bus, DBUS, "GetNameOwner", "s", [name], path=DBUS_PATH, interface=DBUS)
    return reply.body[0] if reply.message_type is MessageType.METHOD_RETURN else ""


async def pid_of(bus: MessageBus, unique: str) -> int:
    return await call_ok(
        bus,
        DBUS,
        "GetConnectionUnixProcessID",
        unique,
        signature="s",
        path=DBUS_PATH,
        interface=DBUS,
    )


async def wait_owned(bus: MessageBus, name: str, owned: bool) -> None:
    """Return once ``name`` has an owner (``owned``) or has none: subscribe, then ask."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    rule = f"type='signal',sender='{DBUS}',member='NameOwnerChanged',arg0='{name}'"

    def handler(msg: Message) -> None:
        if (
            msg.member == "NameOwnerChanged"
            and msg.body[0] == name
            and bool(msg.body[2]) == owned
            and not done.done()
        ):
            done.set_result(None)

    bus.add_message_handler(handler)
    await call_ok(bus, DBUS, "AddMatch", rule, signature="s", path=DBUS_PATH, interface=DBUS)
    try:
        if bool(await owner_of(bus, name)) != owned:
            await asyncio.wait_for(done, TIMEOUT)
    finally:
        bus.remove_message_handler(handler)
        await call_ok(bus, DBUS, "RemoveMatch", rule, signature="s", path=DBUS_PATH, interface=DBUS)


def expect_failed(session: Session, reply: Message, *reason: str) -> None:
    """``reply`` is a failed activation, and ``reason`` reached its caller (dbus-daemon:
    busmgr's ``JobFailed`` with the reason) or busmgr's log (dbus-broker: the broker's words)."""
    assert reply.message_type is MessageType.ERROR, reply.body
    if session.bus_kind == DBUS_BROKER:
        assert reply.error_name == "org.freedesktop.DBus.Error.NameHasNoOwner", reply.error_name
        assert "unit failed" in reply.body[0]
        log = session.stderr.read_text()
        assert all(part in log for part in reason), (reason, log)
    else:
        assert reply.error_name == "org.busmgr.Error.JobFailed", reply.error_name
        assert all(part in reply.body[0] for part in reason), (reason, reply.body[0])


def spawns(session: Session, job: str) -> list[int]:
    """The pids the service of ``job`` recorded, one per spawn."""
    path = session.services.parent / f"{job}.pids"
    return [int(line) for line in path.read_text().split()] if path.exists() else []


async def stop_and_release(session: Session, job: str, name: str) -> None:
    """Stop ``job`` and wait until the bus has dropped its name, so the next call is a first."""
    await session.stop(job)
    await wait_owned(session.bus, name, owned=False)


# ------------------------------------------------------- service files
async def test_the_bus_knows_every_provided_name(session: Session) -> None:
    (names,) = await session.call(
        "ListActivatableNames", path=DBUS_PATH, interface=DBUS, destination=DBUS
    )
    provided = {m.group(1) for text in JOBS.values() if (m := re.search(r"dbus (\S+)", text))}
    assert len(provided) == len(JOBS)
    assert {n for n in names if n.startswith("org.test.")} == provided


@pytest.mark.buses(DBUS_DAEMON)
async def test_private_bus_reloads_its_configuration_once(session: Session) -> None:
    # Thirteen service files were written at start-up; the daemon reloaded once for all.
    text = session.stderr.read_text()
    assert text.count("Reloaded configuration") == 1, text
    files = sorted(p.name for p in session.services.parent.glob("busmgr-*/services/*"))
    assert "org.test.Echo.service" in files and len(files) == len(JOBS)


# ------------------------------------------------------------ first calls
async def test_first_call_from_busctl_gdbus_and_dbus_fast(session: Session) -> None:
    env = session.env
    started = time.monotonic()
    status, out, err = await run(
        "busctl",
        f"--address={session.address}",
        "call",
        "org.test.Echo",
        SERVICE_PATH,
        SERVICE_IFACE,
        "Echo",
        "s",
        "from busctl",
        env=env,
    )
    first_latency = time.monotonic() - started
    assert (status, out.strip()) == (0, 's "from busctl"'), err
    await stop_and_release(session, "echo", "org.test.Echo")

    status, out, err = await run(
        "gdbus",
        "call",
        "--address",
        session.address,
        "--dest",
        "org.test.Echo",
        "--object-path",
        SERVICE_PATH,
        "--method",
        f"{SERVICE_IFACE}.Echo",
        "from gdbus",
        env=env,
    )
    assert (status, out.strip()) == (0, "('from gdbus',)"), err
    await stop_and_release(session, "echo", "org.test.Echo")

    assert await call_ok(session.bus, "org.test.Echo", "Echo", "fast", signature="s") == "fast"
    assert len(spawns(session, "echo")) == 3
    print(f"first call through activation (busctl, python service): {first_latency:.3f}s")


async def test_twenty_concurrent_first_calls_start_one_process(session: Session) -> None:
    buses = [await MessageBus(bus_address=session.address).connect() for _ in range(20)]
    try:
        pids = await asyncio.gather(*(call_ok(b, "org.test.Many", "Pid") for b in buses))
    finally:
        for b in buses:
            b.disconnect()
    assert spawns(session, "many") == [pids[0]]
    assert set(pids) == {pids[0]}


# ---------------------------------------------------------------- failures
async def test_exit_before_claiming_fails_every_caller_at_once(session: Session) -> None:
    buses = [await MessageBus(bus_address=session.address).connect() for _ in range(5)]
    started = time.monotonic()
    try:
        replies = await asyncio.gather(
            *(raw_call(b, "org.test.Exit3", "Echo", "s", ["x"]) for b in buses)
        )
    finally:
        for b in buses:
            b.disconnect()
    elapsed = time.monotonic() - started
    for reply in replies:
        expect_failed(session, reply, "job exit3 failed", "exited with status 3")
    assert elapsed < PROMPT
    assert len(spawns(session, "exit3")) == 1
    print(f"failure reached 5 callers after {elapsed:.3f}s")


@pytest.mark.buses(DBUS_DAEMON)  # on dbus-broker: test_broker.py, with the other failures at once
async def test_never_claiming_fails_after_ready_timeout(session: Session) -> None:
    started = time.monotonic()
    reply = await raw_call(session.bus, "org.test.Silent", "Echo", "s", ["x"])
    elapsed = time.monotonic() - started
    expect_failed(session, reply, "not ready after 1s", "org.test.Silent")
    assert 0.9 < elapsed < PROMPT
    assert (await session.instance("silent"))["State"] == "waiting"


async def test_failure_message_names_job_process_status_and_output(session: Session) -> None:
    reply = await raw_call(session.bus, "org.test.Tail", "Echo", "s", ["x"])
    expect_failed(
        session,
        reply,
        "job tail failed",
        "PROCESS=main",
        "exited with status 3",
        "last output: reading settings | fatal: no settings file",
    )
    reply = await raw_call(session.bus, "org.test.Segv", "Echo", "s", ["x"])
    expect_failed(session, reply, "job segv failed", "killed by signal SEGV")


async def test_killed_service_is_started_again_by_the_next_call(session: Session) -> None:
    first = await call_ok(session.bus, "org.test.Crashy", "Pid")
    await session.wait_running("crashy")
    mark = session.signals.mark()
    os.kill(first, signal.SIGKILL)
    await session.signals.wait_for(lambda m, b: m == "JobStopped" and b[0] == "crashy", start=mark)
    await wait_owned(session.bus, "org.test.Crashy", owned=False)
    second = await call_ok(session.bus, "org.test.Crashy", "Pid")
    assert second != first
    assert spawns(session, "crashy") == [first, second]


@pytest.mark.buses(DBUS_DAEMON)  # whose pid owns a name is the same question on both buses
async def test_name_owned_by_another_process_does_not_make_the_job_ready(
    session: Session,
) -> None:
    await session.bus.request_name("org.test.Foreign")
    try:
        with pytest.raises(DBusError) as info:
            await session.start("foreign")
    finally:
        await session.bus.release_name("org.test.Foreign")
    assert info.value.type == "org.busmgr.Error.JobFailed"
    assert "not ready after 1s" in info.value.text
    assert "not a process of the job" in session.stderr.read_text()


# ---------------------------------------------------------------- readiness
async def test_start_job_with_wait_returns_once_the_name_is_owned(session: Session) -> None:
    mark = session.signals.mark()
    path = await session.start("slow")  # the service claims its name 0.5 s after starting
    owner = await owner_of(session.bus, "org.test.Slow")
    assert owner, "StartJob returned before the name had an owner"
    props = await session.props(path)
    assert props["State"] == "running" and props["BusName"] == "org.test.Slow"
    assert await pid_of(session.bus, owner) == props["MainPID"]
    _, body = await session.signals.wait_for(
        lambda m, b: m == "JobStarted" and b[0] == "slow", start=mark
    )
    assert body[2]["BUS_NAME"] == "org.test.Slow"  # job events carry the name
    await session.stop("slow")


async def test_losing_the_name_counts_as_failing_and_respawns(session: Session) -> None:
    first = await call_ok(session.bus, "org.test.Loser", "Pid")
    await session.wait_running("loser")  # its JobStarted may come after the call's reply
    mark = session.signals.mark()
    await raw_call(session.bus, "org.test.Loser", "ReleaseName")  # may die before replying
    await session.signals.wait_for(lambda m, b: m == "JobStarted" and b[0] == "loser", start=mark)
    second = (await session.instance("loser"))["MainPID"]
    assert spawns(session, "loser") == [first, second]
    assert await pid_of(session.bus, await owner_of(session.bus, "org.test.Loser")) == second
    await session.stop("loser")


async def test_losing_the_name_without_respawn_stops_the_job_failed(session: Session) -> None:
    await call_ok(session.bus, "org.test.Dropper", "Pid")
    await session.wait_running("dropper")
    mark = session.signals.mark()
    await raw_call(session.bus, "org.test.Dropper", "ReleaseName")
    _, body = await session.signals.wait_for(
        lambda m, b: m == "JobStopped" and b[0] == "dropper", start=mark
    )
    assert body[2]["RESULT"] == "failed" and body[2]["PROCESS"] == "main"
    assert len(spawns(session, "dropper")) == 1


# ----------------------------------------------------------- environment
async def test_activation_environment_reaches_later_activations(session: Session) -> None:
    await call_ok(
        session.bus,
        DBUS,
        "UpdateActivationEnvironment",
        {"BUSMGR_TEST_UAE": "from-the-bus"},
        signature="a{ss}",
        path=DBUS_PATH,
        interface=DBUS,
    )
    if session.bus_kind == DBUS_DAEMON:  # busmgr owns systemd1 there (activator mode)
        await call_ok(
            session.bus,
            "org.freedesktop.systemd1",
            "SetEnvironment",
            ["BUSMGR_TEST_SETENV=from-systemd-api"],
            signature="as",
            path="/org/freedesktop/systemd1",
            interface="org.freedesktop.systemd1.Manager",
        )
    getenv = "Getenv"
    assert await call_ok(
        session.bus, "org.test.Envy", getenv, "BUSMGR_TEST_UAE", signature="s"
    ) == ("from-the-bus")
    if session.bus_kind == DBUS_DAEMON:
        assert await call_ok(
            session.bus, "org.test.Envy", getenv, "BUSMGR_TEST_SETENV", signature="s"
        ) == ("from-systemd-api")


# ------------------------------------------------------------ direct requests
async def test_activate_name_and_start_service_by_name_take_the_same_path(
    session: Session,
) -> None:
    def activation(start: int) -> Any:
        return session.signals.wait_for(
            lambda m, b: (
                m == "EventEmitted"
                and b[0] == "dbus-activation"
                and b[1].get("NAME") == "org.test.Direct"
            ),
            start=start,
        )

    mark = session.signals.mark()
    path = await session.call("ActivateName", "s", ["org.test.Direct"])
    assert path == [instance_path("direct", "")]
    assert await owner_of(session.bus, "org.test.Direct")
    await activation(mark)
    await stop_and_release(session, "direct", "org.test.Direct")

    mark = session.signals.mark()
    reply = await call_ok(
        session.bus,
        DBUS,
        "StartServiceByName",
        "org.test.Direct",
        0,
        signature="su",
        path=DBUS_PATH,
        interface=DBUS,
    )
    assert reply == 1  # DBUS_START_REPLY_SUCCESS
    assert await owner_of(session.bus, "org.test.Direct")
    await activation(mark)
    assert len(spawns(session, "direct")) == 2
    await session.stop("direct")

    with pytest.raises(DBusError) as info:
        await session.call("ActivateName", "s", ["org.test.Nobody"])
    assert info.value.type == "org.busmgr.Error.NoProvider"
    assert "org.test.Nobody" in info.value.text


async def test_failed_activation_of_an_instance_job_leaves_no_instance_behind(
    session: Session,
) -> None:
    # A bug found by the house review: ActivateName prepared a start a second time after the
    # event, so the instance that failed and was removed came back as a phantom "waiting".
    with pytest.raises(DBusError) as info:
        await session.call("ActivateName", "s", ["org.test.InstFail"])
    assert info.value.type == "org.busmgr.Error.JobFailed"
    assert info.value.text.startswith("job instfail (org.test.InstFail) failed: ")
    assert info.value.text.count("failed:") == 1  # the reason once, not doubled
    (rows,) = await session.call("ListJobs")
    assert [list(r) for r in rows if r[0] == "instfail"] == [
        ["instfail", "", "waiting", "/org/busmgr/Manager1/job/instfail"]
    ]


async def test_a_job_stopped_right_after_activation_is_no_failed_activation(
    session: Session,
) -> None:
    # Found by the reliability review: a job stopped as soon as its activation succeeded made
    # busmgr send ActivationFailure anyway (526 of 559 cycles), after the call had succeeded.
    for _ in range(20):
        assert await call_ok(session.bus, "org.test.Blink", "Pid")  # auto-started
        await session.stop("blink", wait=False)  # at once, before busmgr's own turn ends
        await wait_owned(session.bus, "org.test.Blink", owned=False)
    log = session.stderr.read_text()
    assert "activation of org.test.Blink failed" not in log
    assert len(spawns(session, "blink")) == 20


# ------------------------------------------------------------ helper mode
_HELPER_BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC
 "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <standard_session_servicedirs/>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow receive_sender="*"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


@contextlib.asynccontextmanager
async def own_bus(tmp: Path, env: dict[str, str]) -> AsyncIterator[str]:
    """A stock session dbus-daemon (``--systemd-activation``) of this test; yields its address
    and kills it (only it) afterwards."""
    config = tmp / "bus.conf"
    config.write_text(_HELPER_BUS_CONFIG.format(socket=tmp / "bus"))
    proc = await asyncio.create_subprocess_exec(
        "dbus-daemon",
        f"--config-file={config}",
        "--nofork",
        "--nopidfile",
        "--systemd-activation",
        "--print-address=1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env=env,
    )
    try:
        assert proc.stdout is not None
        address = (await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)).decode().strip()
        assert address, "dbus-daemon printed no address"
        yield address
    finally:
        if proc.returncode is None:
            proc.terminate()
        await asyncio.wait_for(proc.wait(), TIMEOUT)


async def test_helper_mode_where_another_connection_owns_systemd1(tmp_path: Path) -> None:
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    services = tmp_path / "services.d"
    services.mkdir()
    for job, name, extra in (
        ("helped", "org.test.Helped", ""),
        ("helpedbad", "org.test.HelpedBad", "--exit-before-claim 3"),
    ):
        (services / f"{job}.conf").write_text(
            f"dbus {name}\nexec $PYTHON $TESTS_HELPERS/dbus_service.py --name {name} {extra}\n"
        )
    env = dict(os.environ)
    env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    env.update(
        XDG_RUNTIME_DIR=str(runtime),
        XDG_DATA_HOME=str(tmp_path / "data"),
        XDG_DATA_DIRS=str(tmp_path / "share"),
        PYTHON=PYTHON,
        TESTS_HELPERS=str(HELPERS),
    )
    async with own_bus(tmp_path, env) as address:
        systemd = await MessageBus(bus_address=address).connect()  # the "real systemd"
        client = await MessageBus(bus_address=address).connect()
        try:
            await systemd.request_name("org.freedesktop.systemd1")
            started: asyncio.Future[None] = asyncio.get_running_loop().create_future()

            def on_signal(msg: Message) -> None:
                if msg.member == "EventEmitted" and msg.body[0] == "startup" and not started.done():
                    started.set_result(None)

            client.add_message_handler(on_signal)
            await call_ok(
                client,
                DBUS,
                "AddMatch",
                f"type='signal',interface='{MANAGER_INTERFACE}'",
                signature="s",
                path=DBUS_PATH,
                interface=DBUS,
            )
            # --session without --address: the address comes from the environment.
            manager_env = dict(env, DBUS_SESSION_BUS_ADDRESS=address)
            stderr = tmp_path / "busmgr.log"
            with open(stderr, "wb") as err:
                manager = await asyncio.create_subprocess_exec(
                    PYTHON,
                    "-m",
                    "busmgr",
                    "daemon",
                    "--session",
                    "--services-dir",
                    str(services),
                    "--state-dir",
                    str(tmp_path / "state"),
                    "--no-import",
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=err,
                    env=manager_env,
                )
            try:
                await asyncio.wait_for(started, TIMEOUT)
                assert "helper mode" in stderr.read_text()
                service_file = runtime / "dbus-1" / "services" / "org.test.Helped.service"
                text = service_file.read_text()
                assert "SystemdService" not in text
                assert re.search(
                    r"^Exec=.* -m busmgr activate --address .*org\.test\.Helped$", text, re.M
                )
                assert address in text.replace("'", "")

                assert await call_ok(client, "org.test.Helped", "Echo", "hi", signature="s") == "hi"
                started_at = time.monotonic()
                reply = await raw_call(client, "org.test.HelpedBad", "Echo", "s", ["x"])
                elapsed = time.monotonic() - started_at
                assert reply.message_type is MessageType.ERROR, reply.body
                assert reply.error_name.startswith("org.freedesktop.DBus.Error.Spawn"), (
                    reply.error_name
                )
                assert elapsed < PROMPT
                assert "exited with status 3" in stderr.read_text()
                print(f"helper mode: failure reached the caller after {elapsed:.3f}s")
            finally:
                children = psutil.Process(manager.pid).children(recursive=True)
                if manager.returncode is None:
                    manager.send_signal(signal.SIGTERM)
                status = await asyncio.wait_for(manager.wait(), TIMEOUT)
                left = [
                    p for p in children if p.is_running() and p.status() != psutil.STATUS_ZOMBIE
                ]
                for p in left:
                    p.kill()
            assert status == 0, stderr.read_text()
            assert not left, f"processes left behind: {left}"
            assert not service_file.exists(), "the transient service file outlived busmgr"
        finally:
            client.disconnect()
            systemd.disconnect()


# ------------------------------------------------------------ installed services
DCONF_SERVICE = Path("/usr/share/dbus-1/services/ca.desrt.dconf.service")


def _changeset_set_int32(key: str, value: int) -> bytes:
    """The GVariant serialisation of the dconf changeset ``{key: <int32 value>}`` (type
    ``a{smv}``, one entry): key, padding to 8, the maybe-variant, the key's end offset, then
    the array's one element end offset (all offsets one byte: the whole is under 256 bytes)."""
    key_bytes = key.encode() + b"\0"
    variant = value.to_bytes(4, "little", signed=True) + b"\0i"
    maybe = variant + b"\0"
    padding = b"\0" * (-len(key_bytes) % 8)
    entry = key_bytes + padding + maybe + bytes([len(key_bytes)])
    return entry + bytes([len(entry)])


@pytest.mark.skipif(
    not DCONF_SERVICE.exists() or shutil.which("gdbus") is None,
    reason="dconf-service (Debian package dconf-service) is not installed",
)
@pytest.mark.parametrize("bus", ALL_BUSES)
async def test_installed_dconf_service_is_activated_and_supervised(
    tmp_path: Path, bus: str
) -> None:
    for sub in ("home", "config", "data", "share", "more.d"):
        (tmp_path / sub).mkdir()
    env = dict(os.environ)
    env.update(
        HOME=str(tmp_path / "home"),
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        XDG_DATA_HOME=str(tmp_path / "data"),
        XDG_DATA_DIRS=f"{tmp_path / 'share'}:/usr/share",
        XDG_CACHE_HOME=str(tmp_path / "home" / ".cache"),
    )
    session = await start_session(
        tmp_path, {}, extra=["--services-dir", str(tmp_path / "more.d")], env=env, bus=bus
    )
    try:
        reply = await raw_call(
            session.bus,
            "ca.desrt.dconf",
            "Change",
            "ay",
            [_changeset_set_int32("/busmgr/test", 42)],
            path="/ca/desrt/dconf/Writer/user",
            interface="ca.desrt.dconf.Writer",
        )
        assert reply.message_type is MessageType.METHOD_RETURN, reply.body
        assert reply.signature == "s" and reply.body[0]  # the change's tag
        database = tmp_path / "config" / "dconf" / "user"
        assert database.exists() and b"test" in database.read_bytes()

        props = await session.wait_running("ca.desrt.dconf")
        assert props["BusName"] == "ca.desrt.dconf"
        assert psutil.Process(props["MainPID"]).exe() == "/usr/libexec/dconf-service"
        rows = await session.call("ListJobs")
        assert ["ca.desrt.dconf", "", "running"] in [list(r[:3]) for r in rows[0]]
        source = await session.props(
            "/org/busmgr/Manager1/job/ca_2edesrt_2edconf", "org.busmgr.Job1"
        )
        assert source["Source"] == str(DCONF_SERVICE)
        status, out, err = await run(
            PYTHON, "-m", "busmgr", "list", "--address", session.address, env=session.env
        )
        assert status == 0, err
        line = next(ln for ln in out.splitlines() if ln.startswith("ca.desrt.dconf "))
        assert line.split()[-2] == str(DCONF_SERVICE)  # SOURCE, then RESULT
    finally:
        await stop_session(session)
