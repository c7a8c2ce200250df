"""Events with real processes: every example of the Upstart 0.5 posts (seeds ``002_*``, "Events",
"Relationships", "Job Lifetime"), the blocking job events, ``EmitEvent``'s wait, and bus signals
as ``dbus-signal`` events (issue: events, start on, stop on and the blocking job events).

Jobs write what they see to files under ``$XDG_RUNTIME_DIR`` (the session's temporary
directory, which every job inherits). Orders are checked twice: in those files, and in the
order of the manager's lifecycle signals, which it sends in the order the transitions happened.
Nothing sleeps: every wait is for a signal or a reply; an emit with wait returns once every job
the event started or stopped got there, which is what makes reading a file right after it safe.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psutil
import pytest
from dbus_fast import Message, NameFlag, RequestNameReply
from dbus_fast.errors import DBusError

from conftest import Session

pytestmark = pytest.mark.integration

# Each job appends to "$XDG_RUNTIME_DIR/<file>"; W is the shell text of that path's prefix.
W = '"$XDG_RUNTIME_DIR"'
# A main process that logs its TERM before exiting: the shell waits on a child so the trap runs
# at once (the job's kill signal reaches the whole process group, the sleep included).
TERM_LOGGER = (
    'exec sh -c \'trap "echo {tag} >> {file}; exit 0" TERM; touch {file}.{tag}; '
    "sleep 1000 & wait'\n"
    # running only once the trap is set, so a stop right after start is logged
    "        post-start exec sh -c 'while [ ! -e {file}.{tag} ]; do sleep 0.01; done'"
)

JOBS = {
    # --- "Relationships": HAL follows D-Bus
    "dbus": TERM_LOGGER.format(tag="dbus-term", file=f"{W}/halorder"),
    "hal": f"""
        start on started dbus
        stop on stopping dbus
        {TERM_LOGGER.format(tag="hal-term", file=f"{W}/halorder")}
        post-stop exec sh -c 'echo hal-post-stop >> {W}/halorder'
    """,
    # --- "Relationships": the portmap problem
    "nfs-server": f"""
        pre-start exec sh -c 'echo nfs-pre-start >> {W}/nfsorder'
        exec sleep 1000
    """,
    "portmap": f"""
        start on starting nfs-server
        stop on stopped nfs-server
        post-start exec sh -c 'echo portmap-post-start >> {W}/nfsorder'
        exec sleep 1000
        post-stop exec sh -c 'echo portmap-post-stop >> {W}/nfsorder'
    """,
    # --- "Events": getty bound to the lifetime of its tty
    "getty": """
        start on tty-added
        stop on tty-removed TTY=$TTY
        instance $TTY
        exec sleep 1000
    """,
    # --- "Events": back up the database when the server crashes
    "hersql": """
        limit core 0 0
        script
          # a real segmentation fault: read address 0
          [ "$CRASH" = yes ] && exec "$PYTHON" -c "import ctypes; ctypes.string_at(0)"
          exec sleep 1000
        end script
    """,
    "hersql-backup": f"""
        start on stopping hersql RESULT=failed EXIT_SIGNAL=SEGV
        task
        exec sh -c 'echo "$JOB $RESULT $PROCESS $EXIT_SIGNAL" >> {W}/backup'
    """,
    # --- "Events": and / or, and the re-arming rule
    "ab": """
        start on a-up and b-up
        stop on a-down or b-down
        exec sleep 1000
    """,
    # --- "Events": an event's env in the job's env, env stanzas below it
    "ifup": f"""
        start on interface-up IFACE=eth* ADDRFAM=Ethernet
        task
        env ADDRFAM=none
        env GREETING=hello
        exec sh -c 'echo "$IFACE $ADDRFAM $GREETING" >> {W}/ifup'
    """,
    # --- "Events": export, and a job started along with another
    "net": """
        start on net-up
        stop on net-down $IFACE
        instance $IFACE
        export IFACE
        exec sleep 1000
    """,
    "net-helper": f"""
        start on started net
        stop on stopping net IFACE=$IFACE
        instance $IFACE
        post-start exec sh -c 'echo "$JOB $IFACE" >> {W}/helper'
        exec sleep 1000
    """,
    # --- an event in both stop on and start on of a running job restarts it with its env
    "relink": """
        start on link-up
        stop on link-up
        exec sleep 1000
    """,
    # --- a job reacting to its own blocking events: the event does not wait for it
    "phoenix": f"""
        start on stopping phoenix RESULT=failed
        script
          echo run >> {W}/phoenix
          [ "$(wc -l < {W}/phoenix)" -ge 2 ] && exec sleep 1000
          exit 1
        end script
    """,
    "selfstop": """
        stop on starting selfstop
        exec sleep 1000
    """,
    # --- "Upstart Events": startup, once
    "boot": f"""
        start on startup
        post-start exec sh -c 'echo startup >> {W}/boot'
        exec sleep 1000
    """,
    # --- EmitEvent with wait fails when a job it started failed
    "bad-task": """
        start on break-it
        task
        exec sh -c 'exit 3'
    """,
    "bad-pre": """
        start on break-it
        pre-start exec false
        exec sleep 1000
    """,
    "good-task": f"""
        start on break-it
        task
        exec sh -c 'echo ran >> {W}/good'
    """,
    # --- globs and != in a real job file
    "probe": f"""
        start on probe NAME=disk-* KIND!=virtual
        task
        exec sh -c 'echo "$NAME" >> {W}/probe'
    """,
    # --- bus signals as events
    "pinger": f"""
        start on dbus-signal INTERFACE=org.test.Ping MEMBER=Pinged ARG0=hello
        stop on dbus-signal INTERFACE=org.test.Ping MEMBER=Unpinged
        post-start exec sh -c 'echo "$ARG0 $ARG1 $MEMBER $INTERFACE $OBJPATH" >> {W}/ping'
        exec sleep 1000
    """,
    "pinger-glob": f"""
        start on dbus-signal org.test.Ping Pinged ARG0=hel*
        task
        exec sh -c 'echo "$ARG0" >> {W}/pingglob'
    """,
    "greeted": f"""
        start on dbus-signal SENDER=org.test.Sender MEMBER=Hello
        task
        exec sh -c 'echo "$SENDER $ARG0" >> {W}/greeted'
    """,
}

PING_RULE = "type='signal',interface='org.test.Ping',member='Pinged',arg0='hello'"
PING_GLOB_RULE = "type='signal',interface='org.test.Ping',member='Pinged'"
UNPING_RULE = "type='signal',interface='org.test.Ping',member='Unpinged'"
LATE_RULE = "type='signal',interface='org.test.Late',member='Rang'"


def runtime(session: Session) -> Path:
    """The session's ``$XDG_RUNTIME_DIR``, where the jobs write."""
    return session.services.parent


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def is_signal(member: str, job: str, instance: str = "") -> Any:
    return lambda m, b: m == member and b[0] == job and b[1] == instance


def order(session: Session, jobs: set[str], start: int) -> list[tuple[str, str]]:
    """(member, job) of the lifecycle signals of ``jobs`` from ``start`` on, in order."""
    return [
        (m, b[0]) for m, b in session.signals.items[start:] if m.startswith("Job") and b[0] in jobs
    ]


async def state(session: Session, job: str, instance: str = "") -> str:
    return str((await session.instance(job, instance))["State"])


# ---------------------------------------------------------------------------------------------
# Relationships


async def test_hal_starts_after_dbus_and_is_fully_stopped_before_it(session: Session) -> None:
    out = runtime(session) / "halorder"
    mark = session.signals.mark()
    await session.start("dbus")
    await session.signals.wait_for(is_signal("JobStarted", "hal"), start=mark)
    assert order(session, {"dbus", "hal"}, mark) == [
        ("JobStarting", "dbus"),
        ("JobStarted", "dbus"),
        ("JobStarting", "hal"),
        ("JobStarted", "hal"),
    ]
    assert await state(session, "hal") == "running"

    mark = session.signals.mark()
    await session.stop("dbus")
    await session.signals.wait_for(is_signal("JobStopped", "dbus"), start=mark)
    # dbus's stopping event blocks it until hal is fully stopped, post-stop included.
    assert order(session, {"dbus", "hal"}, mark) == [
        ("JobStopping", "dbus"),
        ("JobStopping", "hal"),
        ("JobStopped", "hal"),
        ("JobStopped", "dbus"),
    ]
    # (A TERM may reach a shell twice, to its pid and to its group: count each line once.)
    assert list(dict.fromkeys(lines(out))) == ["hal-term", "hal-post-stop", "dbus-term"]
    assert await state(session, "hal") == "waiting"


async def test_starting_nfs_server_waits_for_portmap(session: Session) -> None:
    out = runtime(session) / "nfsorder"
    mark = session.signals.mark()
    await session.start("nfs-server")
    assert order(session, {"nfs-server", "portmap"}, mark)[:3] == [
        ("JobStarting", "nfs-server"),
        ("JobStarting", "portmap"),
        ("JobStarted", "portmap"),
    ]
    await session.signals.wait_for(is_signal("JobStarted", "nfs-server"), start=mark)
    assert order(session, {"nfs-server", "portmap"}, mark)[3:] == [("JobStarted", "nfs-server")]
    # portmap was running (its post-start done) before nfs-server's pre-start ran.
    assert lines(out) == ["portmap-post-start", "nfs-pre-start"]

    mark = session.signals.mark()
    await session.stop("nfs-server")
    await session.signals.wait_for(is_signal("JobStopped", "portmap"), start=mark)
    assert order(session, {"nfs-server", "portmap"}, mark) == [
        ("JobStopping", "nfs-server"),
        ("JobStopped", "nfs-server"),
        ("JobStopping", "portmap"),
        ("JobStopped", "portmap"),
    ]
    assert lines(out)[2:] == ["portmap-post-stop"]


# ---------------------------------------------------------------------------------------------
# Events


async def test_getty_instance_per_tty_and_stop_only_the_matching_one(session: Session) -> None:
    await session.emit("tty-added", {"TTY": "tty1"})
    await session.emit("tty-added", {"TTY": "tty2"})
    one, two = await session.instance("getty", "tty1"), await session.instance("getty", "tty2")
    assert one["State"] == two["State"] == "running"
    assert one["MainPID"] != two["MainPID"]
    assert psutil.Process(one["MainPID"]).environ()["TTY"] == "tty1"
    assert psutil.Process(two["MainPID"]).environ()["TTY"] == "tty2"

    await session.emit("tty-removed", {"TTY": "tty1"})
    rows = (await session.call("ListJobs"))[0]
    assert {(r[1], r[2]) for r in rows if r[0] == "getty"} == {("tty2", "running")}
    assert psutil.pid_exists(two["MainPID"])
    await session.emit("tty-removed", {"TTY": "tty2"})
    rows = (await session.call("ListJobs"))[0]
    assert {(r[1], r[2]) for r in rows if r[0] == "getty"} == {("", "waiting")}


async def test_backup_runs_when_hersql_crashes_with_segv(session: Session) -> None:
    out = runtime(session) / "backup"
    mark = session.signals.mark()
    await session.start("hersql", {"CRASH": "yes"})
    _, body = await session.signals.wait_for(is_signal("JobStopped", "hersql"), start=mark)
    assert body[2]["RESULT"] == "failed"
    assert (body[2]["PROCESS"], body[2]["EXIT_SIGNAL"]) == ("main", "SEGV")
    # The stopping event blocked hersql until the backup task had run to its end.
    assert order(session, {"hersql", "hersql-backup"}, mark) == [
        ("JobStarting", "hersql"),
        ("JobStarted", "hersql"),
        ("JobStopping", "hersql"),
        ("JobStarting", "hersql-backup"),
        ("JobStarted", "hersql-backup"),
        ("JobStopping", "hersql-backup"),
        ("JobStopped", "hersql-backup"),
        ("JobStopped", "hersql"),
    ]
    assert lines(out) == ["hersql failed main SEGV"]


async def test_no_backup_when_hersql_stops_normally(session: Session) -> None:
    out = runtime(session) / "backup"
    before = lines(out)
    mark = session.signals.mark()
    await session.start("hersql")
    await session.stop("hersql")
    _, body = await session.signals.wait_for(is_signal("JobStopped", "hersql"), start=mark)
    assert body[2]["RESULT"] == "ok"
    # Anything the stopping event started would have been finished before JobStopped.
    assert order(session, {"hersql-backup"}, mark) == []
    assert lines(out) == before


async def test_and_or_with_the_rearming_rule(session: Session) -> None:
    await session.emit("a-up")
    assert await state(session, "ab") == "waiting"
    await session.emit("b-up")
    assert await state(session, "ab") == "running"
    await session.emit("a-down")
    assert await state(session, "ab") == "waiting"
    # Once it fired, both events must happen again: b-up alone does nothing...
    await session.emit("b-up")
    assert await state(session, "ab") == "waiting"
    # ...and a-up completes the new pair.
    await session.emit("a-up")
    assert await state(session, "ab") == "running"
    await session.emit("b-down")
    assert await state(session, "ab") == "waiting"


async def test_event_env_reaches_the_job_above_its_env_stanzas(session: Session) -> None:
    out = runtime(session) / "ifup"
    await session.emit("interface-up", {"IFACE": "eth0", "ADDRFAM": "Ethernet"})
    await session.emit("interface-up", {"IFACE": "wlan0", "ADDRFAM": "Ethernet"})
    await session.emit("interface-up", {"IFACE": "eth1", "ADDRFAM": "Token"})
    await session.emit("interface-up", {"IFACE": "eth2", "ADDRFAM": "Ethernet"})
    assert lines(out) == ["eth0 Ethernet hello", "eth2 Ethernet hello"]


async def test_exported_variable_reaches_the_job_started_along(session: Session) -> None:
    out = runtime(session) / "helper"
    mark = session.signals.mark()
    await session.emit("net-up", {"IFACE": "eth0"})
    _, body = await session.signals.wait_for(is_signal("JobStarted", "net", "eth0"), start=mark)
    assert body[2] == {"JOB": "net", "INSTANCE": "eth0", "IFACE": "eth0"}
    await session.signals.wait_for(is_signal("JobStarted", "net-helper", "eth0"), start=mark)
    assert lines(out) == ["net eth0"]

    mark = session.signals.mark()
    await session.emit("net-down", {"IFACE": "eth0"})
    # net's stopping event blocks it until its helper is stopped.
    await session.signals.wait_for(is_signal("JobStopped", "net", "eth0"), start=mark)
    assert order(session, {"net", "net-helper"}, mark) == [
        ("JobStopping", "net"),
        ("JobStopping", "net-helper"),
        ("JobStopped", "net-helper"),
        ("JobStopped", "net"),
    ]


async def test_event_in_stop_on_and_start_on_restarts_with_the_new_env(
    session: Session,
) -> None:
    await session.emit("link-up", {"IFACE": "eth0"})
    first = await session.instance("relink")
    assert psutil.Process(first["MainPID"]).environ()["IFACE"] == "eth0"
    mark = session.signals.mark()
    # Stop first, then start: the running job is stopped and started again. The emit returns
    # once it runs again (the wait for the overruled stop is let go).
    await session.emit("link-up", {"IFACE": "eth1"})
    second = await session.instance("relink")
    assert second["State"] == "running" and second["MainPID"] != first["MainPID"]
    assert psutil.Process(second["MainPID"]).environ()["IFACE"] == "eth1"
    assert order(session, {"relink"}, mark) == [
        ("JobStopping", "relink"),
        ("JobStarting", "relink"),
        ("JobStarted", "relink"),
    ]
    await session.stop("relink")


async def test_job_started_by_its_own_stopping_event_restarts(session: Session) -> None:
    mark = session.signals.mark()
    await session.start("phoenix")  # the first run fails once it is running
    _, body = await session.signals.wait_for(is_signal("JobStopping", "phoenix"), start=mark)
    assert (body[2]["RESULT"], body[2]["EXIT_STATUS"]) == ("failed", "1")
    # Its stopping event starts it again without waiting for it (that wait could never end).
    stopping = next(
        i for i in range(mark, len(session.signals.items)) if session.signals.items[i][1] is body
    )
    await session.signals.wait_for(is_signal("JobStarted", "phoenix"), start=stopping)
    assert order(session, {"phoenix"}, mark) == [
        ("JobStarting", "phoenix"),
        ("JobStarted", "phoenix"),
        ("JobStopping", "phoenix"),
        ("JobStarting", "phoenix"),
        ("JobStarted", "phoenix"),
    ]
    # (The run file is not read here: JobStarted can come before the script wrote its line.)
    mark = session.signals.mark()
    await session.stop("phoenix")
    _, body = await session.signals.wait_for(is_signal("JobStopped", "phoenix"), start=mark)
    assert body[2]["RESULT"] == "ok"  # the second run was the one that stays up


async def test_job_stopped_by_its_own_starting_event_does_not_hang(session: Session) -> None:
    with pytest.raises(DBusError) as err:
        await session.start("selfstop")
    assert err.value.type == "org.busmgr.Error.JobFailed"
    assert "stopped before it was running" in err.value.text
    assert await state(session, "selfstop") == "waiting"


async def test_startup_is_emitted_once(session: Session) -> None:
    await session.wait_running("boot")
    assert lines(runtime(session) / "boot") == ["startup"]


async def test_emit_with_wait_fails_naming_the_failed_jobs(session: Session) -> None:
    mark = session.signals.mark()
    with pytest.raises(DBusError) as err:
        await session.emit("break-it")
    assert err.value.type == "org.busmgr.Error.JobFailed"
    text = err.value.text
    assert "event break-it" in text
    assert "job bad-task failed" in text and "status 3" in text
    assert "job bad-pre failed" in text and "PROCESS=pre-start" in text
    assert "good-task" not in text
    # By the time it returned, every job the event started had finished.
    assert lines(runtime(session) / "good") == ["ran"]
    stopped = {b[0] for m, b in session.signals.items[mark:] if m == "JobStopped"}
    assert {"bad-task", "bad-pre", "good-task"} <= stopped


async def test_emit_without_wait_returns_before_the_jobs_finish(session: Session) -> None:
    mark = session.signals.mark()
    await session.emit("break-it", wait=False)  # no error: nothing is waited for
    for job in ("bad-task", "bad-pre", "good-task"):
        await session.signals.wait_for(is_signal("JobStopped", job), start=mark)


async def test_globs_and_not_equal_in_a_job_file(session: Session) -> None:
    for env in (
        {"NAME": "disk-1", "KIND": "real"},
        {"NAME": "disk-2", "KIND": "virtual"},
        {"NAME": "net-1", "KIND": "real"},
        {"NAME": "disk-3"},
    ):
        await session.emit("probe", env)
    assert lines(runtime(session) / "probe") == ["disk-1", "disk-3"]


# ---------------------------------------------------------------------------------------------
# Bus signals as events


async def match_rules(session: Session) -> list[str]:
    """The manager's match rules, as the bus daemon reports them (Debug.Stats)."""
    owner = await session.call(
        "GetNameOwner",
        "s",
        ["org.busmgr.Manager1"],
        path="/org/freedesktop/DBus",
        interface="org.freedesktop.DBus",
        destination="org.freedesktop.DBus",
    )
    try:
        rules = await session.call(
            "GetAllMatchRules",
            path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus.Debug.Stats",
            destination="org.freedesktop.DBus",
        )
    except DBusError as err:  # a dbus-daemon built without --enable-stats
        pytest.skip(f"the bus daemon cannot list match rules: {err}")
    return list(rules[0].get(owner[0], []))


async def send_signal(session: Session, interface: str, member: str, *args: str) -> None:
    await session.bus.send(
        Message.new_signal("/org/test/Ping", interface, member, "s" * len(args), list(args))
    )


async def test_manager_subscribes_only_to_what_jobs_need(session: Session) -> None:
    rules = await match_rules(session)
    signal_rules = [r for r in rules if "NameOwnerChanged" not in r]
    assert PING_RULE in signal_rules
    assert PING_GLOB_RULE in signal_rules  # ARG0=hel* is a glob: matched locally
    assert "type='signal',member='Hello',sender='org.test.Sender'" in signal_rules
    assert UNPING_RULE in signal_rules
    assert "type='signal'" not in signal_rules
    assert not [r for r in signal_rules if "org.test" not in r]


async def test_bus_signal_starts_and_stops_a_job(session: Session) -> None:
    out = runtime(session) / "ping"
    mark = session.signals.mark()
    await send_signal(session, "org.test.Ping", "Pinged", "other", "x")
    await send_signal(session, "org.test.Other", "Pinged", "hello", "x")
    await send_signal(session, "org.test.Ping", "Pinged", "hello", "world")
    await session.signals.wait_for(is_signal("JobStarted", "pinger"), start=mark)
    # Signals are handled in the order they were sent: neither earlier one started it.
    assert order(session, {"pinger"}, mark) == [("JobStarting", "pinger"), ("JobStarted", "pinger")]
    assert lines(out) == ["hello world Pinged org.test.Ping /org/test/Ping"]
    props = await session.instance("pinger")
    environ = psutil.Process(props["MainPID"]).environ()
    assert (environ["ARG0"], environ["ARG1"], environ["MEMBER"]) == ("hello", "world", "Pinged")
    assert environ["SENDER"] == session.bus.unique_name
    assert environ["OBJPATH"] == "/org/test/Ping"
    assert "/usr/bin" in environ["PATH"].split(":")  # the object path did not replace it
    await session.signals.wait_for(is_signal("JobStopped", "pinger-glob"), start=mark)
    assert lines(runtime(session) / "pingglob") == ["hello"]

    mark = session.signals.mark()
    await send_signal(session, "org.test.Ping", "Unpinged")
    await session.signals.wait_for(is_signal("JobStopped", "pinger"), start=mark)
    assert await state(session, "pinger") == "waiting"


async def test_glob_on_a_signal_argument_is_matched_locally(session: Session) -> None:
    out = runtime(session) / "pingglob"
    before = lines(out)
    mark = session.signals.mark()
    await send_signal(session, "org.test.Ping", "Pinged", "nothing")
    await send_signal(session, "org.test.Ping", "Pinged", "help")
    await session.signals.wait_for(is_signal("JobStopped", "pinger-glob"), start=mark)
    assert lines(out) == [*before, "help"]
    assert [j for m, j in order(session, {"pinger-glob"}, mark) if m == "JobStarting"] == [
        "pinger-glob"
    ]


async def test_well_known_sender_name_matches_its_owner(session: Session) -> None:
    out = runtime(session) / "greeted"
    mark = session.signals.mark()
    await send_signal(session, "org.test.Ping", "Hello", "before")  # not the owner yet
    reply = await session.bus.request_name("org.test.Sender", NameFlag.DO_NOT_QUEUE)
    assert reply is RequestNameReply.PRIMARY_OWNER
    try:
        await send_signal(session, "org.test.Ping", "Hello", "after")
        await session.signals.wait_for(is_signal("JobStopped", "greeted"), start=mark)
    finally:
        await session.bus.release_name("org.test.Sender")
    assert order(session, {"greeted"}, mark).count(("JobStarting", "greeted")) == 1
    assert lines(out) == ["org.test.Sender after"]


async def test_reload_subscribes_to_a_new_jobs_signal(session: Session) -> None:
    session.write_job(
        "late",
        f"""
        start on dbus-signal INTERFACE=org.test.Late MEMBER=Rang
        task
        exec sh -c 'echo "$MEMBER" >> {W}/late'
        """,
    )
    try:
        # The manager sends its AddMatch before its reply; the bus handles them in that order.
        await session.call("ReloadConfiguration")
        assert LATE_RULE in await match_rules(session)
        mark = session.signals.mark()
        await send_signal(session, "org.test.Late", "Rang")
        await session.signals.wait_for(is_signal("JobStopped", "late"), start=mark)
        assert lines(runtime(session) / "late") == ["Rang"]
    finally:
        (session.services / "late.conf").unlink()
        await session.call("ReloadConfiguration")
    assert LATE_RULE not in await match_rules(session)
