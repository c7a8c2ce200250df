"""A desktop session (``busmgr session --desktop``) against a real private bus and real processes:
autostart entries as jobs (created, skipped with their reason, refused), the phases in order,
an autorestart entry that comes back, a D-Bus activatable entry, the session's environment
(``setenv``, ``dbus-update-activation-environment``), and ``end-session`` leaving nothing behind.
A second session imports the entries installed on this machine (at-spi, xdg-user-dirs)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import pytest_asyncio
from dbus_fast.errors import DBusError

from busmgr.bus.values import job_path

from conftest import TIMEOUT, Session, start_session, stop_session

pytestmark = pytest.mark.integration

PHASE_TIMEOUT = 1.0

JOBS = {
    # one line per phase event, in the order they came, each once the one before finished
    "startlog": """
        start on desktop-start DISPLAY=:99 XDG_CURRENT_DESKTOP=TEST XDG_SESSION_TYPE=x11
        task
        exec sh -c 'echo "start $(date +%s.%N)" >> "$ORDER"'
    """,
    "phaselog": """
        start on desktop-phase PHASE=* DISPLAY=:99 XDG_CURRENT_DESKTOP=TEST XDG_SESSION_TYPE=x11
        instance $PHASE
        task
        exec sh -c 'echo "$PHASE $(date +%s.%N)" >> "$ORDER"'
    """,
    # a window manager that takes a while to be ready (it stops itself when it is, as
    # `expect stop` says): the Panel phase waits for it
    "wm": """
        start on desktop-phase PHASE=WindowManager
        expect stop
        exec sh -c 'sleep 0.2; kill -STOP $$; exec sleep 1000'
        post-start exec sh -c 'echo wm-ready >> "$ORDER"'
    """,
    # a desktop service that is never ready: the Applications phase goes on without it
    "stuck": """
        start on desktop-phase PHASE=Desktop
        expect stop
        ready timeout 60
        exec sleep 1000
    """,
    # the provider of a D-Bus activatable autostart entry (activated, never started by event)
    "app": """
        dbus org.test.App
        exec $PYTHON $TESTS_HELPERS/dbus_service.py --name org.test.App --application
    """,
    # what a session runs at logout: EndSession waits for it before stopping everything
    "goodbye": """
        start on desktop-end
        task
        exec sh -c 'echo goodbye >> "$ORDER"'
    """,
    "showenv": """
        task
        exec sh -c 'echo "FOO=${FOO-unset} BAR=${BAR-unset} DISPLAY=${DISPLAY-unset}" > "$ENVOUT"'
    """,
}


def _entry(phase: str, word: str, *more: str, stay: bool = False) -> str:
    """An entry of ``phase`` that writes ``word`` to the order file and exits (so the test
    knows it has written once the job stopped), or stays running (``stay``)."""
    stays = "; exec sleep 1000" if stay else ""
    lines = [
        "[Desktop Entry]",
        "Type=Application",
        f"Name={word}",
        f"Exec=sh -c 'echo {word} >> \"$ORDER\"{stays}'",
    ]
    if phase:
        lines.append(f"X-GNOME-Autostart-Phase={phase}")
    return "\n".join([*lines, *more]) + "\n"


# In $XDG_CONFIG_DIRS/autostart (the system's), unless named "user:" ($XDG_CONFIG_HOME's).
ENTRIES: dict[str, str | bytes] = {
    "init": _entry("Initialization", "init"),
    "panel": _entry("Panel", "panel"),
    "restarter": _entry("Panel", "restarter", "X-GNOME-AutoRestart=true", stay=True),
    "desk": _entry("Desktop", "desk", "Name[de]=Schreibtisch"),
    "apps": _entry("", "apps"),
    "delayed": _entry("Applications", "delayed", "X-GNOME-Autostart-Delay=0.3"),
    "args": (
        "[Desktop Entry]\nType=Application\nName=Args\n"
        'Exec=sh -c \'for a; do echo "[$a]"; done > "$ARGS_FILE"\' '
        'argv0 "two words" "quote\\\\"d" \'single\' "100%%" %U\n'
    ),
    "org.test.App": (
        "[Desktop Entry]\nType=Application\nName=App\nExec=false\nDBusActivatable=true\n"
    ),
    "user:hidden": "[Desktop Entry]\nHidden=true\n",
    "hidden": _entry("", "hidden"),
    "kde": _entry("", "kde", "OnlyShowIn=KDE;"),
    "nottest": _entry("", "nottest", "NotShowIn=GNOME;TEST;"),
    "tryexec": _entry("", "tryexec", "TryExec=/nonexistent/busmgr-test-program"),
    "broken": "[Desktop Entry]\nType=Application\nName=broken\nExec=true %z\n",
    "latin1": b"[Desktop Entry]\nType=Application\nName=Caf\xe9\nExec=true\n",
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def desktop(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Session]:
    tmp = tmp_path_factory.mktemp("desktop")
    for name, text in ENTRIES.items():
        where = tmp / "config" if name.startswith("user:") else tmp / "xdg"
        path = where / "autostart" / f"{name.removeprefix('user:')}.desktop"
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
    env = {k: v for k, v in os.environ.items() if k not in ("WAYLAND_DISPLAY", "FOO", "BAR")}
    env.update(
        HOME=str(tmp / "home"),
        XDG_CONFIG_HOME=str(tmp / "config"),
        XDG_CONFIG_DIRS=str(tmp / "xdg"),
        DISPLAY=":99",
        XDG_SESSION_TYPE="x11",
        ORDER=str(tmp / "order"),
        ARGS_FILE=str(tmp / "args"),
        ENVOUT=str(tmp / "env"),
    )
    extra = ["--no-import", "--desktop", "TEST", "--phase-timeout", str(PHASE_TIMEOUT)]
    sess = await start_session(tmp, JOBS, extra=extra, env=env)
    try:
        yield sess
    finally:
        await stop_session(sess)


async def run(*argv: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    return proc.returncode or 0, out.decode(), err.decode()


async def busmgr(sess: Session, *args: str) -> tuple[int, str, str]:
    return await run(sys.executable, "-m", "busmgr", *args, env=sess.env)


async def job_props(sess: Session, job: str) -> dict[str, Any]:
    return await sess.props(job_path(job), "org.busmgr.Job1")


async def wait_ran(sess: Session, job: str) -> dict[str, Any]:
    """Wait until ``job`` (a service whose main exits by itself, or a task) has run once."""
    mark = sess.signals.mark()
    props = await sess.instance(job)
    if not (props["State"] == "waiting" and props["ExitStatus"] == 0):
        await sess.signals.wait_for(
            lambda m, b: m == "JobStopped" and b[0] == job, start=mark, timeout=TIMEOUT
        )
        props = await sess.instance(job)
    return props


def order(sess: Session) -> list[list[str]]:
    return [line.split() for line in (sess.services.parent / "order").read_text().splitlines()]


async def test_entries_are_jobs_named_after_their_file(desktop: Session) -> None:
    xdg = desktop.services.parent / "xdg" / "autostart"
    props = await job_props(desktop, "autostart-panel")
    assert props["Source"] == str(xdg / "panel.desktop")
    assert props["Origin"] == "autostart"
    assert props["StartOn"] == "desktop-phase PHASE=Panel"
    assert props["Description"] == "panel"
    assert (await job_props(desktop, "autostart-apps"))[
        "StartOn"
    ] == "desktop-phase PHASE=Applications"
    delayed = await job_props(desktop, "autostart-delayed")
    assert delayed["StartOn"] == "desktop-delay PHASE=Applications DELAY=0.3"
    app = await job_props(desktop, "autostart-org.test.App")
    assert app["Task"] is True


async def test_the_phases_begin_in_order_each_when_the_one_before_is_ready(
    desktop: Session,
) -> None:
    for entry in ("init", "panel", "desk", "apps", "delayed"):
        await wait_ran(desktop, f"autostart-{entry}")
    lines = order(desktop)
    words = [line[0] for line in lines]
    phases = ["start", "Initialization", "WindowManager", "Panel", "Desktop", "Applications"]
    assert [w for w in words if w in phases] == phases  # each once, in order
    at = {w: i for i, w in reversed(list(enumerate(words)))}  # first occurrence
    # the window manager was ready before the Panel phase began
    assert at["WindowManager"] < at["Panel"] and at["wm-ready"] < at["Panel"]
    # each entry started in its phase: after the phase before it had finished
    assert at["start"] < at["init"]
    assert at["wm-ready"] < at["panel"]
    assert at["Panel"] < at["desk"]
    assert at["Desktop"] < at["apps"]
    assert at["Desktop"] < at["delayed"]
    # the Desktop phase waited for its stuck service a bounded time, then Applications began
    stamps = {line[0]: float(line[1]) for line in lines if len(line) == 2}
    waited = stamps["Applications"] - stamps["Desktop"]
    assert PHASE_TIMEOUT - 0.5 <= waited < PHASE_TIMEOUT + 10  # it waited, boundedly
    stuck = await desktop.instance("stuck")
    assert (stuck["Goal"], stuck["State"]) == ("start", "spawned")


async def test_phase_events_and_the_delayed_start(desktop: Session) -> None:
    await wait_ran(desktop, "autostart-delayed")
    emitted = [
        (m, b) for m, b in desktop.signals.items if m == "EventEmitted" and b[0].startswith("desk")
    ]
    names = [(b[0], b[1].get("PHASE", "")) for _m, b in emitted]
    assert names[-2:] == [("desktop-phase", "Applications"), ("desktop-delay", "Applications")]
    _m, delay = emitted[-1]
    assert delay[1] == {
        "PHASE": "Applications",
        "DELAY": "0.3",
        "DISPLAY": ":99",
        "XDG_CURRENT_DESKTOP": "TEST",
        "XDG_SESSION_TYPE": "x11",
    }
    # the delayed entry started on that event, not on the phase's
    starts = [
        i
        for i, (m, b) in enumerate(desktop.signals.items)
        if m == "JobStarting" and b[0] == "autostart-delayed"
    ]
    index = desktop.signals.items.index(emitted[-1])
    assert starts and starts[0] > index


async def test_skipped_and_refused_entries_are_listed_with_their_reason(desktop: Session) -> None:
    tmp = desktop.services.parent
    xdg, user = tmp / "xdg" / "autostart", tmp / "config" / "autostart"
    (rows,) = await desktop.call("ListSkipped")
    assert sorted(map(tuple, rows)) == [
        (
            "autostart-broken",
            str(xdg / "broken.desktop"),
            'refused: line 4: Exec=true %z: unknown field code "%z"',
        ),
        ("autostart-hidden", str(user / "hidden.desktop"), "Hidden=true: the entry is disabled"),
        (
            "autostart-hidden",
            str(xdg / "hidden.desktop"),
            f"overridden by {user / 'hidden.desktop'}",
        ),
        ("autostart-kde", str(xdg / "kde.desktop"), "OnlyShowIn=KDE; does not include TEST"),
        ("autostart-latin1", str(xdg / "latin1.desktop"), "refused: line 3: not valid UTF-8 text"),
        ("autostart-nottest", str(xdg / "nottest.desktop"), "NotShowIn=GNOME;TEST; includes TEST"),
        (
            "autostart-tryexec",
            str(xdg / "tryexec.desktop"),
            "TryExec=/nonexistent/busmgr-test-program is not an executable file",
        ),
    ]
    # refused entries are one warning each in the manager's log, FILE:LINE first
    log = desktop.stderr.read_text()
    assert f'busmgr: {xdg / "broken.desktop"}:4: Exec=true %z: unknown field code "%z"' in log
    assert f"busmgr: {xdg / 'latin1.desktop'}:3: not valid UTF-8 text" in log
    assert "Traceback" not in log

    status, out, err = await busmgr(desktop, "list")
    assert (status, err) == (0, "")
    table = {tuple(line.split(None, 5)[:3]): line for line in out.splitlines()[1:]}
    assert str(xdg / "restarter.desktop") in table[("autostart-restarter", "-", "start/running")]
    kde = table[("autostart-kde", "-", "skipped")]
    assert kde.split()[5] == str(xdg / "kde.desktop")
    assert kde.endswith(" OnlyShowIn=KDE; does not include TEST")
    assert ("autostart-hidden", "-", "skipped") in table


async def test_an_autorestart_entry_that_is_killed_comes_back(desktop: Session) -> None:
    before = await desktop.wait_running("autostart-restarter")
    mark = desktop.signals.mark()
    os.kill(before["MainPID"], signal.SIGKILL)  # a process this session started
    await desktop.signals.wait_for(
        lambda m, b: m == "JobStarted" and b[0] == "autostart-restarter", start=mark
    )
    after = await desktop.instance("autostart-restarter")
    assert after["State"] == "running"
    assert after["MainPID"] not in (0, before["MainPID"])


async def test_exec_field_codes_and_quoting_reach_the_process(desktop: Session) -> None:
    props = await wait_ran(desktop, "autostart-args")
    assert props["Result"] == "ok"
    args = (desktop.services.parent / "args").read_text().splitlines()
    assert args == ["[two words]", '[quote"d]', "[single]", "[100%]"]


async def test_a_dbus_activatable_entry_is_activated_through_the_bus(desktop: Session) -> None:
    props = await wait_ran(desktop, "autostart-org.test.App")
    assert props["Result"] == "ok"
    await desktop.wait_running("app")  # the bus activated its provider
    (count,) = await desktop.call(
        "Activated",
        destination="org.test.App",
        path="/org/test/Service",
        interface="org.test.Service",
    )
    assert count == 1


async def show_env(sess: Session) -> str:
    await sess.start("showenv")
    return (sess.services.parent / "env").read_text().strip()


async def test_the_session_environment(desktop: Session) -> None:
    assert await desktop.call("GetEnv", "s", ["XDG_CURRENT_DESKTOP"]) == ["TEST"]
    assert await show_env(desktop) == "FOO=unset BAR=unset DISPLAY=:99"

    assert await busmgr(desktop, "setenv", "FOO=one two") == (0, "", "")
    assert await desktop.call("GetEnv", "s", ["FOO"]) == ["one two"]
    assert await show_env(desktop) == "FOO=one two BAR=unset DISPLAY=:99"

    # the bus daemon's UpdateActivationEnvironment reaches busmgr as SetEnvironment
    status, _out, err = await run("dbus-update-activation-environment", "BAR=bar", env=desktop.env)
    assert (status, err) == (0, "")
    assert await show_env(desktop) == "FOO=one two BAR=bar DISPLAY=:99"

    assert await busmgr(desktop, "unsetenv", "FOO", "DISPLAY") == (0, "", "")
    assert await show_env(desktop) == "FOO=unset BAR=bar DISPLAY=unset"
    status, out, err = await busmgr(desktop, "getenv", "DISPLAY")
    assert (status, out) == (1, "")
    assert err == (
        "busmgr: getenv DISPLAY: UnknownVariable: DISPLAY is not set in the session's environment\n"
    )

    status, out, _err = await busmgr(desktop, "getenv")
    env = dict(line.split("=", 1) for line in out.splitlines())
    assert status == 0 and out.splitlines() == sorted(out.splitlines())
    assert env["BAR"] == "bar" and env["XDG_CURRENT_DESKTOP"] == "TEST"
    assert env["DBUS_SESSION_BUS_ADDRESS"] == desktop.address
    assert "FOO" not in env and "DISPLAY" not in env

    # bad input: one clear error
    with pytest.raises(DBusError) as refused:
        await desktop.call("SetEnv", "ss", ["A B", "x"])
    assert refused.value.type == "org.busmgr.Error.InvalidArgs"
    assert refused.value.text == "invalid variable name 'A B' (expected [A-Za-z_][A-Za-z0-9_]*)"
    with pytest.raises(DBusError) as refused:
        await desktop.call("SetEnv", "s", ["A"])
    assert refused.value.type == "org.busmgr.Error.InvalidArgs"
    assert refused.value.text == "org.busmgr.Manager1.SetEnv takes arguments (ss), got (s)"


async def test_end_session_stops_everything_in_time_and_exits_0(desktop: Session) -> None:
    await wait_ran(desktop, "autostart-delayed")
    processes = desktop.descendants()
    assert len(processes) >= 5  # the bus, an entry, the window manager, the stuck service...
    mark = desktop.signals.mark()
    started = time.monotonic()
    status, out, err = await busmgr(desktop, "end-session")
    returned = time.monotonic() - started
    assert (status, out, err) == (0, "", "")
    assert await asyncio.wait_for(desktop.proc.wait(), TIMEOUT) == 0
    ended = time.monotonic() - started
    assert any(
        m == "EventEmitted" and b[0] == "desktop-end" for m, b in desktop.signals.items[mark:]
    )
    left = [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert left == []
    assert [line[0] for line in order(desktop)][-1] == "goodbye"
    assert returned < 1.0 and ended < 1.0, (returned, ended)  # every job honours TERM


# ---------------------------------------------------------------------------- this machine's
async def test_the_entries_installed_here(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_CONFIG_DIRS", "XDG_CONFIG_HOME")}
    env.update(HOME=str(tmp_path / "home"), XDG_CONFIG_HOME=str(tmp_path / "config"))
    (tmp_path / "home").mkdir()
    sess = await start_session(tmp_path, {}, extra=["--desktop", "GNOME"], env=env)
    try:
        atspi = await sess.wait_running("autostart-at-spi-dbus-bus")
        props = await job_props(sess, "autostart-at-spi-dbus-bus")
        assert props["Source"] == "/etc/xdg/autostart/at-spi-dbus-bus.desktop"
        assert props["StartOn"] == "desktop-phase PHASE=Initialization"
        dirs = await wait_ran(sess, "autostart-xdg-user-dirs")
        assert dirs["Result"] == "ok"
        assert (tmp_path / "config" / "user-dirs.dirs").exists()  # it ran, in this session
        processes = sess.descendants()
        assert psutil.Process(atspi["MainPID"]) in processes
        status, _out, err = await busmgr(sess, "end-session")
        assert (status, err) == (0, "")
        assert await asyncio.wait_for(sess.proc.wait(), TIMEOUT) == 0
        left = [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert left == []
    finally:
        await stop_session(sess)
