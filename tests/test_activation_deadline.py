"""Every failed activation heard before the bus gives up, and no failure heard for one that
was served (issue 13).

The bus here is a dbus-daemon with a short ``service_start_timeout`` (3 s) in its
configuration: ``busmgr daemon --session --launch-bus --bus-config FILE`` starts it and reads
the limit from FILE, so a request busmgr cannot complete fails with busmgr's reason
(``org.busmgr.Error.JobFailed``) before the daemon fails it with its own
(``org.freedesktop.DBus.Error.TimedOut``, no reason). Which of the two the caller got is the
evidence; no test measures time. A monitor connection (``BecomeMonitor``) sees every
``ActivationFailure`` busmgr sends, so "no failure reported" is checked on the bus itself, not
only in busmgr's log.

Nothing sleeps: every wait is for a reply, a signal or a process exit, under a timeout.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import textwrap
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from busmgr import MANAGER_INTERFACE

from conftest import (
    BLOCKED_LIMIT,
    HELPERS,
    PYTHON,
    TIMEOUT,
    Session,
    Signals,
    add_match,
    stop_session,
)

pytestmark = pytest.mark.integration

DBUS = "org.freedesktop.DBus"
DBUS_PATH = "/org/freedesktop/DBus"
SERVICE_PATH = "/org/test/Service"
SERVICE_IFACE = "org.test.Service"
ACTIVATOR_IFACE = "org.freedesktop.systemd1.Activator"
BUS_TIMEOUT_MS = 3000

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <keep_umask/>
  <listen>unix:tmpdir=/tmp</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow receive_sender="*"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
  <include ignore_missing="yes">limits.conf</include>
</busconfig>
"""
# In an included file: busmgr reads the limit where the daemon does.
LIMITS = f"""<busconfig>
  <limit name="service_start_timeout">{BUS_TIMEOUT_MS}</limit>
</busconfig>
"""


def service(name: str, *options: str) -> str:
    return f"""
        dbus {name}
        exec $PYTHON $TESTS_HELPERS/dbus_service.py --name {name} {" ".join(options)}
    """


JOBS = {
    "mute": service("org.test.Mute", "--claim-on-signal"),
    # Telepathy's mc-wait-for-name, as an Exec= line: waits until another process owns the
    # name, then exits 0.
    "wrapper": "dbus org.test.Wrapped\nexec gdbus wait --session --timeout 20 org.test.Wrapped\n",
    "blink": service("org.test.Blink"),
    "phoenix": service("org.test.Phoenix"),
}


MARKER_IFACE = "org.busmgr.Test.Marker"


class FailureMonitor:
    """A monitor connection that records every ``ActivationFailure`` on the bus, and the
    markers a test sends: the monitor gets messages in the order the daemon handled them, so
    once it has a marker it has every failure sent before it."""

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus
        self.seen: list[list[Any]] = []
        self.markers: list[str] = []
        self._changed = asyncio.Event()

    @classmethod
    async def start(cls, address: str) -> FailureMonitor:
        bus = await MessageBus(bus_address=address).connect()
        monitor = cls(bus)
        bus.add_message_handler(monitor._on_message)
        rule = f"type='signal',interface='{ACTIVATOR_IFACE}',member='ActivationFailure'"
        marker = f"type='signal',interface='{MARKER_IFACE}'"
        reply = await asyncio.wait_for(
            bus.call(
                Message(
                    destination=DBUS,
                    path=DBUS_PATH,
                    interface="org.freedesktop.DBus.Monitoring",
                    member="BecomeMonitor",
                    signature="asu",
                    body=[[rule, marker], 0],
                )
            ),
            TIMEOUT,
        )
        assert reply is not None and reply.message_type is MessageType.METHOD_RETURN, reply
        return monitor

    def _on_message(self, msg: Message) -> None:
        if msg.member == "ActivationFailure" and msg.interface == ACTIVATOR_IFACE:
            self.seen.append(list(msg.body))
            self._changed.set()
        elif msg.interface == MARKER_IFACE:
            self.markers.append(msg.member or "")
            self._changed.set()

    async def wait(self, done: Any) -> None:
        """Until ``done()`` holds, checked at every message the monitor gets."""

        async def until() -> None:
            while not done():
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(until(), TIMEOUT)

    async def settle(self, bus: MessageBus) -> None:
        """Send a marker from ``bus`` and wait until the monitor has it."""
        member = f"M{len(self.markers)}"
        await bus.send(Message.new_signal("/org/busmgr/Test", MARKER_IFACE, member))
        await self.wait(lambda: member in self.markers)

    def close(self) -> None:
        self.bus.disconnect()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def session(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Session]:
    """``busmgr daemon --session --launch-bus`` on a bus whose configuration (an included
    file) sets a 3 s ``service_start_timeout``."""
    if shutil.which("gdbus") is None:
        pytest.fail("gdbus is missing: .ci/system-deps installs libglib2.0-bin")
    tmp = tmp_path_factory.mktemp("deadline")
    services, state = tmp / "services.d", tmp / "state"
    services.mkdir()
    for name, text in JOBS.items():
        (services / f"{name}.conf").write_text(textwrap.dedent(text))
    (tmp / "bus.conf").write_text(BUS_CONFIG)
    (tmp / "limits.conf").write_text(LIMITS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBUS_")}
    env.update(
        XDG_RUNTIME_DIR=str(tmp),
        TESTS_HELPERS=str(HELPERS),
        PYTHON=PYTHON,
        BUSMGR_LOG_LEVEL="INFO",
        BUSMGR_LOOP_DEBUG=str(BLOCKED_LIMIT),
    )
    stderr = tmp / "stderr.log"
    argv = [
        sys.executable, "-m", "busmgr", "daemon", "--session", "--launch-bus",
        "--bus-config", str(tmp / "bus.conf"), "--print-address", "--no-import",
        "--services-dir", str(services), "--state-dir", str(state),
    ]  # fmt: skip
    with open(stderr, "wb") as err:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=err, env=env
        )
    assert proc.stdout is not None
    address = (await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)).decode().strip()
    if not address:
        await proc.wait()
        pytest.fail(f"busmgr exited with {proc.returncode}: {stderr.read_text()}")
    client = await MessageBus(bus_address=address).connect()
    signals = Signals()

    def on_message(msg: Message) -> None:
        if msg.message_type is MessageType.SIGNAL and msg.interface == MANAGER_INTERFACE:
            signals.add(msg.member, list(msg.body))

    client.add_message_handler(on_message)
    await add_match(client, f"type='signal',interface='{MANAGER_INTERFACE}'")
    sess = Session(proc, address, client, services, state, signals, stderr)
    try:
        yield sess
    finally:
        await stop_session(sess)


@pytest_asyncio.fixture(loop_scope="module")
async def monitor(session: Session) -> AsyncIterator[FailureMonitor]:
    mon = await FailureMonitor.start(session.address)
    try:
        yield mon
    finally:
        mon.close()


async def call(bus: MessageBus, name: str, member: str = "Echo") -> Message:
    signature, body = ("s", ["x"]) if member == "Echo" else ("", [])
    msg = Message(
        destination=name,
        path=SERVICE_PATH,
        interface=SERVICE_IFACE,
        member=member,
        signature=signature,
        body=body,
    )
    reply = await asyncio.wait_for(bus.call(msg), TIMEOUT + BUS_TIMEOUT_MS / 1000)
    assert reply is not None
    return reply


async def wait_unowned(bus: MessageBus, name: str) -> None:
    """Return once ``name`` has no owner: subscribe, then ask."""
    gone = asyncio.get_running_loop().create_future()

    def handler(msg: Message) -> None:
        unowned = msg.member == "NameOwnerChanged" and msg.body[0] == name and not msg.body[2]
        if unowned and not gone.done():
            gone.set_result(None)

    bus.add_message_handler(handler)
    try:
        await add_match(bus, f"type='signal',member='NameOwnerChanged',arg0='{name}'")
        owner = await bus.call(
            Message(DBUS, DBUS_PATH, DBUS, "GetNameOwner", signature="s", body=[name])
        )
        if owner is not None and owner.message_type is MessageType.METHOD_RETURN:
            await asyncio.wait_for(gone, TIMEOUT)
    finally:
        bus.remove_message_handler(handler)


# ---------------------------------------------------------------------------------------------
async def test_a_job_that_never_claims_its_name_fails_the_call_with_busmgrs_reason_first(
    session: Session, monitor: FailureMonitor
) -> None:
    reply = await call(session.bus, "org.test.Mute")
    assert reply.message_type is MessageType.ERROR
    # busmgr's answer, not the bus daemon's TimedOut: it read the bus's 3 s limit.
    assert reply.error_name == "org.busmgr.Error.JobFailed", (reply.error_name, reply.body)
    text = reply.body[0]
    assert text.startswith("job mute did not claim org.test.Mute within 2.5s: its main process ")
    assert "is running and has not claimed it; the job goes on (ready timeout 90s)" in text
    assert text.endswith("last output: waiting for SIGUSR1 to claim the name")
    assert text.count("job mute") == 1  # the reason once, never doubled
    await monitor.wait(lambda: monitor.seen)
    assert [f[1:] for f in monitor.seen] == [["org.busmgr.Error.JobFailed", text]]
    # The job goes on following its own ready timeout: still waiting for its name...
    props = await session.instance("mute")
    assert (props["Goal"], props["State"]) == ("start", "spawned")
    # ...and ready once it claims it; the next call is served by it.
    mark = session.signals.mark()
    os.kill(props["MainPID"], signal.SIGUSR1)  # a process this session started
    await session.signals.wait_for(lambda m, b: m == "JobStarted" and b[0] == "mute", start=mark)
    served = await call(session.bus, "org.test.Mute", "Pid")
    assert served.message_type is MessageType.METHOD_RETURN, served.body
    assert served.body == [props["MainPID"]]
    log = session.stderr.read_text()
    assert log.count("activation of org.test.Mute failed") == 1, log
    assert "job mute failed" not in log  # the job itself did not fail
    await session.stop("mute")


async def test_a_wrapper_that_exits_once_another_process_owns_the_name_is_no_failure(
    session: Session, monitor: FailureMonitor
) -> None:
    owner = await MessageBus(bus_address=session.address).connect()

    def answer(msg: Message) -> Message | None:
        if msg.message_type is MessageType.METHOD_CALL and msg.member == "Echo":
            return Message.new_method_return(msg, "s", ["from the real service"])
        return None

    owner.add_message_handler(answer)
    try:
        mark = session.signals.mark()
        pending = asyncio.ensure_future(call(session.bus, "org.test.Wrapped"))
        await session.signals.wait_for(
            lambda m, b: m == "JobStarting" and b[0] == "wrapper", start=mark
        )
        await owner.request_name("org.test.Wrapped")  # the real service appears
        reply = await pending
        assert reply.message_type is MessageType.METHOD_RETURN, (reply.error_name, reply.body)
        assert reply.body == ["from the real service"]
        _, stopped = await session.signals.wait_for(
            lambda m, b: m == "JobStopped" and b[0] == "wrapper", start=mark
        )
        assert stopped[2]["RESULT"] == "ok", stopped  # the wrapper did its job
    finally:
        owner.disconnect()
    await wait_unowned(session.bus, "org.test.Wrapped")
    await monitor.settle(session.bus)
    assert monitor.seen == []
    log = session.stderr.read_text()
    assert "activation of org.test.Wrapped failed" not in log, log
    assert "job wrapper failed" not in log, log
    props = await session.instance("wrapper")
    assert (props["State"], props["Result"]) == ("waiting", "ok")


async def test_a_job_stopped_right_after_its_activation_sends_no_activation_failure(
    session: Session, monitor: FailureMonitor
) -> None:
    for _ in range(10):
        reply = await call(session.bus, "org.test.Blink", "Pid")
        assert reply.message_type is MessageType.METHOD_RETURN, reply.body
        await session.stop("blink", wait=False)  # at once, before busmgr's own turn ends
        await wait_unowned(session.bus, "org.test.Blink")
    await monitor.settle(session.bus)
    assert monitor.seen == []
    assert "activation of org.test.Blink failed" not in session.stderr.read_text()


async def test_a_call_right_after_the_service_died_starts_it_again(
    session: Session, monitor: FailureMonitor
) -> None:
    # The bus asks for the name again as soon as it is free, which may be before busmgr has
    # seen the process exit: the request must start the job anew, not join the dying start
    # and fail with it, nor find the job gone down and refuse.
    pids = []
    for _ in range(15):
        reply = await call(session.bus, "org.test.Phoenix", "Pid")
        assert reply.message_type is MessageType.METHOD_RETURN, (reply.error_name, reply.body)
        pids.append(reply.body[0])
        os.kill(reply.body[0], signal.SIGKILL)  # a process this session started
        await wait_unowned(session.bus, "org.test.Phoenix")
    assert len(set(pids)) == len(pids)
    await monitor.settle(session.bus)
    assert monitor.seen == []
    assert "activation of org.test.Phoenix failed" not in session.stderr.read_text()
