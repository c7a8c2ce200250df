"""Unit tests of the ``busmgr`` command line: no bus, no manager, no processes.

They cover argument parsing of every verb, bus selection, the pure formatters (table, status
line, error line, event lines), the options handed to the manager, and the client verbs' logic
run against an in-memory stand-in for :class:`busmgr.bus.client.ManagerClient`.
"""

from __future__ import annotations

import io
import json
import sys
import types
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from busmgr.bus.client import (
    DEFAULT_SYSTEM_BUS_ADDRESS,
    BusSelectionError,
    ConnectError,
    ErrorReply,
    InstanceInfo,
    JobRow,
    ManagerClient,
    describe_address,
    is_job_path,
    job_path_of,
    resolve_address,
    unescape_path_element,
)
from busmgr.cli import main, parse_args
from busmgr.options import (
    DEFAULT_PHASE_TIMEOUT,
    DaemonOptions,
    DesktopOptions,
    Mode,
    SessionOptions,
    default_log_dir,
    default_services_dirs,
    default_state_dir,
)
from busmgr.verbs.output import (
    EventPrinter,
    describe_action,
    format_error,
    format_event,
    format_job_event,
    format_snapshot,
    format_status_line,
    format_table,
)
from busmgr.verbs.serve import daemon_options, session_options

JOB = "/org/busmgr/Manager1/job/"


@pytest.fixture(autouse=True)
def _no_bus_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bus selection must not depend on the environment the tests run in."""
    for var in ("BUSMGR_ADDRESS", "DBUS_SESSION_BUS_ADDRESS", "DBUS_SYSTEM_BUS_ADDRESS"):
        monkeypatch.delenv(var, raising=False)


# ---------------------------------------------------------------------------------------------
# Parsing


def test_list_parses_with_bus_options() -> None:
    args = parse_args(["list", "--address", "unix:path=/tmp/b"])
    assert args.verb == "list"
    assert args.bus_address == "unix:path=/tmp/b"


@pytest.mark.parametrize(
    ("argv", "job", "instance"),
    [
        (["status"], None, None),
        (["status", "hello"], "hello", None),
        (["status", "getty", "tty1"], "getty", "tty1"),
    ],
)
def test_status_parses(argv: list[str], job: str | None, instance: str | None) -> None:
    args = parse_args(argv)
    assert (args.job, args.instance) == (job, instance)


@pytest.mark.parametrize("verb", ["start", "stop", "restart"])
def test_job_verbs_parse_env_and_no_wait(verb: str) -> None:
    args = parse_args([verb, "getty", "TTY=tty1", "EMPTY=", "_X=a=b"])
    assert args.job == "getty"
    assert dict(args.env) == {"TTY": "tty1", "EMPTY": "", "_X": "a=b"}
    assert args.no_wait is False
    assert parse_args([verb, "--no-wait", "hello"]).no_wait is True


@pytest.mark.parametrize("verb", ["start", "stop", "restart", "emit", "reload"])
def test_env_may_follow_an_option(verb: str) -> None:
    option = "--session" if verb == "reload" else "--no-wait"
    args = parse_args([verb, "x", "A=1", option, "B=2"])
    assert dict(args.env) == {"A": "1", "B": "2"}


def test_later_assignment_wins() -> None:
    assert dict(parse_args(["start", "j", "A=1", "A=2"]).env) == {"A": "2"}


def test_reload_and_reload_configuration_parse() -> None:
    args = parse_args(["reload", "getty", "TTY=tty1"])
    assert (args.job, dict(args.env)) == ("getty", {"TTY": "tty1"})
    assert parse_args(["reload-configuration"]).verb == "reload-configuration"


def test_emit_parses() -> None:
    args = parse_args(["emit", "--no-wait", "interface-up", "IFACE=eth0"])
    assert (args.event, dict(args.env), args.no_wait) == ("interface-up", {"IFACE": "eth0"}, True)


def test_activate_parses() -> None:
    assert parse_args(["activate", "org.example.Echo"]).bus_name == "org.example.Echo"


@pytest.mark.parametrize(("argv", "follow"), [([], False), (["-f"], True), (["--follow"], True)])
def test_events_parses(argv: list[str], follow: bool) -> None:
    assert parse_args(["events", *argv]).follow is follow


def test_check_parses_paths() -> None:
    assert parse_args(["check"]).paths == []
    assert parse_args(["check", "a.conf", "dir"]).paths == ["a.conf", "dir"]


@pytest.mark.parametrize("bad", ["1A=2", "NOEQUALS", "=x", "A-B=1", "A B=1", "é=1"])
@pytest.mark.parametrize("verb", ["start", "stop", "restart", "emit", "reload"])
def test_bad_assignment_is_a_usage_error(
    verb: str, bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([verb, "name", bad]) == 2
    err = capsys.readouterr().err
    assert "KEY=VALUE" in err
    assert repr(bad) in err


def test_bad_assignment_after_an_option_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["start", "hello", "--no-wait", "1A=2"]) == 2
    assert "'1A=2'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["start"],
        ["emit"],
        ["activate"],
        ["list", "extra"],
        ["status", "a", "b", "c"],
        ["start", "hello", "--bogus"],
        ["list", "--session", "--system"],
        ["list", "--address"],
        ["daemon"],
        ["daemon", "--session", "--system"],
        ["reexec", "extra"],  # a verb now: extra words are a usage error
        ["setenv"],
        ["setenv", "1A=x"],
        ["setenv", "BUSMGR_TEST_SURELY_UNSET_VARIABLE"],
        ["unsetenv"],
        ["unsetenv", "A=1"],
        ["getenv", "A", "B"],
        ["getenv", "-x"],
        ["end-session", "extra"],
        ["session", "--phase-timeout", "3"],
        ["session", "--desktop", ""],
        ["session", "--desktop", "GNOME:"],
        ["session", "--desktop", "my desktop"],
        ["session", "--desktop", "X", "--phase-timeout", "0"],
        ["session", "--desktop", "X", "--phase-timeout", "inf"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "usage:" in capsys.readouterr().err


def test_session_command_after_double_dash() -> None:
    args = parse_args(["session", "--print-address", "--", "sh", "-c", "exit 3", "--", "x"])
    opts = session_options(args)
    assert opts.command == ("sh", "-c", "exit 3", "--", "x")
    assert opts.print_address is True


def test_session_options() -> None:
    args = parse_args(
        [
            "session",
            "--services-dir",
            "/a",
            "--services-dir",
            "rel",
            "--no-import",
            "--pidfile",
            "/run/p.pid",
            "--state-dir",
            "/s",
            "--address-file",
            "addr",
        ]
    )
    assert session_options(args) == SessionOptions(
        services_dirs=(Path("/a"), Path("rel").absolute()),
        print_address=False,
        no_import=True,
        pidfile=Path("/run/p.pid"),
        state_dir=Path("/s"),
        address_file=Path("addr").absolute(),
        command=(),
    )


def test_session_defaults_are_left_to_the_manager() -> None:
    assert session_options(parse_args(["session"])) == SessionOptions()


def test_desktop_session_options() -> None:
    opts = session_options(parse_args(["session", "--desktop", "GNOME:GNOME-Classic"]))
    assert opts.desktop == DesktopOptions("GNOME:GNOME-Classic", DEFAULT_PHASE_TIMEOUT)
    argv = ["session", "--desktop", "XFCE", "--phase-timeout", "2.5", "--", "xfwm4"]
    opts = session_options(parse_args(argv))
    assert opts.desktop == DesktopOptions("XFCE", 2.5)
    assert opts.command == ("xfwm4",)
    with pytest.raises(ValueError, match="an empty desktop name"):
        DesktopOptions("A::B")
    with pytest.raises(ValueError, match="positive number of seconds"):
        DesktopOptions("A", 0)


def test_setenv_takes_a_bare_key_from_busmgr_s_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BUSMGR_TEST_THEME", "dark")
    args = parse_args(["setenv", "A=1", "B=", "BUSMGR_TEST_THEME", "C=x=y"])
    assert args.assignments == [("A", "1"), ("B", ""), ("BUSMGR_TEST_THEME", "dark"), ("C", "x=y")]


# The mode has one spelling (options.Mode); which bus is a separate choice (address or None).
@pytest.mark.parametrize(
    ("argv", "mode", "address"),
    [
        (["--session"], Mode.SESSION, None),
        (["--system"], Mode.SYSTEM, None),
        (["--address", "unix:path=/x"], Mode.SESSION, "unix:path=/x"),
    ],
)
def test_daemon_options(argv: list[str], mode: Mode, address: str | None) -> None:
    opts = daemon_options(parse_args(["daemon", *argv, "--services-dir", "/d", "--no-import"]))
    assert opts == DaemonOptions(
        mode=mode,
        address=address,
        services_dirs=(Path("/d"),),
        no_import=True,
    )


def test_daemon_options_validate_the_bus() -> None:
    with pytest.raises(ValueError):
        DaemonOptions(mode=Mode.SESSION, address="")
    with pytest.raises(ValueError):
        DaemonOptions(mode="session")  # type: ignore[arg-type]


def test_options_are_frozen() -> None:
    with pytest.raises(AttributeError):
        SessionOptions().no_import = True  # type: ignore[misc]


def _fake_manager(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    calls: list[object] = []
    module = types.ModuleType("busmgr.runtime")
    module.run_session = lambda opts: calls.append(opts) or 7  # type: ignore[attr-defined]
    module.run_daemon = lambda opts: calls.append(opts) or 9  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "busmgr.runtime", module)
    return calls


def test_session_and_daemon_dispatch_to_the_manager(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _fake_manager(monkeypatch)
    assert main(["session", "--", "true"]) == 7
    assert main(["daemon", "--system"]) == 9
    assert calls == [SessionOptions(command=("true",)), DaemonOptions(mode=Mode.SYSTEM)]


# ---------------------------------------------------------------------------------------------
# --help

VERB_PURPOSES = {
    "list": "aligned table",
    "status": "start/running",
    "start": "Start JOB",
    "stop": "Stop JOB",
    "restart": "Restart JOB",
    "reload": "reload signal",
    "reload-configuration": "reread",
    "emit": "Emit EVENT",
    "activate": "BUS_NAME",
    "events": "--follow",
    "check": "PATH:LINE: message",
    "session": "dbus-daemon",
    "daemon": "existing bus",
    "setenv": "set-env",
    "unsetenv": "unset-env",
    "getenv": "list-env",
    "end-session": "desktop-end",
}


@pytest.mark.parametrize(("verb", "purpose"), VERB_PURPOSES.items())
def test_verb_help(verb: str, purpose: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([verb, "--help"]) == 0
    out = capsys.readouterr().out
    assert f"usage: busmgr {verb}" in out
    assert purpose in out
    assert "example" in out


def test_main_help_lists_every_verb(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for verb in VERB_PURPOSES:
        assert verb in out
    assert "BUSMGR_ADDRESS" in out
    assert "exit status" in out


def test_every_verb_names_a_function_of_busmgr_verbs() -> None:
    # The parser names each verb's function by module and name (imported when it runs): a
    # misspelt name would only show when the verb runs.
    from busmgr.cli import build_parser

    parser = build_parser()
    verbs = parser.parse_known_args(["list"])[0].verb_parsers
    for verb, verb_parser in verbs.items():
        defaults = [verb_parser.get_default("run"), verb_parser.get_default("run_offline")]
        for run in filter(None, defaults):
            assert callable(run.resolve()), verb
            assert run.module.startswith("busmgr.verbs."), verb


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("busmgr ")


# ---------------------------------------------------------------------------------------------
# Bus selection

SESSION = "unix:path=/run/user/1000/bus"
BUSMGR = "unix:path=/tmp/busmgr"
SYSTEM = "unix:path=/custom/system"
FULL_ENV = {
    "BUSMGR_ADDRESS": BUSMGR,
    "DBUS_SESSION_BUS_ADDRESS": SESSION,
    "DBUS_SYSTEM_BUS_ADDRESS": SYSTEM,
}


@pytest.mark.parametrize(
    ("address", "session", "system", "environ", "expected"),
    [
        ("tcp:host=h,port=1", False, False, FULL_ENV, "tcp:host=h,port=1"),
        (None, True, False, FULL_ENV, SESSION),
        (None, False, True, FULL_ENV, SYSTEM),
        (None, False, True, {}, DEFAULT_SYSTEM_BUS_ADDRESS),
        (None, False, True, {"DBUS_SYSTEM_BUS_ADDRESS": ""}, DEFAULT_SYSTEM_BUS_ADDRESS),
        (None, False, False, FULL_ENV, BUSMGR),
        (None, False, False, {"DBUS_SESSION_BUS_ADDRESS": SESSION}, SESSION),
        (None, False, False, {"BUSMGR_ADDRESS": "", "DBUS_SESSION_BUS_ADDRESS": SESSION}, SESSION),
        (None, False, False, {"DBUS_SYSTEM_BUS_ADDRESS": SYSTEM}, None),
        (None, True, False, {"BUSMGR_ADDRESS": BUSMGR}, None),
        (None, False, False, {}, None),
    ],
)
def test_resolve_address_precedence(
    address: str | None,
    session: bool,
    system: bool,
    environ: Mapping[str, str],
    expected: str | None,
) -> None:
    assert resolve_address(address, session, system, environ) == expected


def test_default_system_bus_address() -> None:
    assert DEFAULT_SYSTEM_BUS_ADDRESS == "unix:path=/run/dbus/system_bus_socket"


@pytest.mark.parametrize(
    ("address", "session", "system"), [("a:", True, False), ("a:", False, True), (None, True, True)]
)
def test_resolve_address_refuses_two_buses(
    address: str | None, session: bool, system: bool
) -> None:
    with pytest.raises(BusSelectionError):
        resolve_address(address, session, system, {})


def test_parse_args_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUSMGR_ADDRESS", BUSMGR)
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", SESSION)
    assert parse_args(["status"]).bus_address == BUSMGR
    assert parse_args(["status", "--session"]).bus_address == SESSION


def test_connect_error_names_the_address() -> None:
    err = ConnectError("unix:path=/nowhere", "No such file or directory")
    assert str(err) == "cannot connect to unix:path=/nowhere: No such file or directory"
    assert "DBUS_SESSION_BUS_ADDRESS" in describe_address(None)


def test_main_reports_an_unreachable_bus(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    address = f"unix:path={tmp_path}/no-bus-here"
    assert main(["list", "--address", address]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"busmgr: list: cannot connect to {address}: ")


# ---------------------------------------------------------------------------------------------
# Formatting


def test_format_table_aligns_columns() -> None:
    table = format_table(
        [
            ["JOB", "INSTANCE", "GOAL/STATE", "PID"],
            ["hello", "-", "start/running", "1234"],
            ["getty", "tty10", "stop/waiting", "-"],
        ]
    )
    assert table.splitlines() == [
        "JOB    INSTANCE  GOAL/STATE     PID",
        "hello  -         start/running  1234",
        "getty  tty10     stop/waiting   -",
    ]


def test_format_table_right_alignment_and_no_trailing_blanks() -> None:
    lines = format_table(
        [["A", "PID", "Z"], ["xx", "7", ""], ["y", "15001", "long"]], right=frozenset({1})
    ).splitlines()
    assert lines == ["A     PID  Z", "xx      7", "y   15001  long"]
    assert all(line == line.rstrip() for line in lines)


def test_format_table_columns_start_at_the_same_offset() -> None:
    rows = [["JOB", "SOURCE"], ["a-very-long-job-name", "/x"], ["j", "/y"]]
    lines = format_table(rows).splitlines()
    assert {line.index("/") for line in lines[1:]} == {lines[0].index("SOURCE")}


def test_format_table_edge_cases() -> None:
    assert format_table([]) == ""
    assert format_table([["ONLY"]]) == "ONLY"
    with pytest.raises(ValueError):
        format_table([["A", "B"], ["a"]])


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (("hello", "", "start", "running", 1234), "hello start/running, process 1234"),
        (("getty", "tty1", "start", "running", 15001), "getty (tty1) start/running, process 15001"),
        (("hello", "", "stop", "waiting", 0), "hello stop/waiting"),
        (("hello", "", "start", "pre-start", 0), "hello start/pre-start"),
        (("hello", "", "stop", "killed", 99), "hello stop/killed, process 99"),
    ],
)
def test_format_status_line(args: tuple[str, str, str, str, int], line: str) -> None:
    assert format_status_line(*args) == line


def test_format_error_shortens_our_error_names() -> None:
    error = ErrorReply("org.busmgr.Error.UnknownJob", 'no job named "hello"')
    assert format_error("start hello", error) == (
        'busmgr: start hello: UnknownJob: no job named "hello"'
    )


def test_format_error_keeps_one_line() -> None:
    error = ErrorReply("org.busmgr.Error.JobFailed", "hello failed:\n RESULT=failed\tPROCESS=main")
    line = format_error("start hello", error)
    assert line == "busmgr: start hello: JobFailed: hello failed: RESULT=failed PROCESS=main"


@pytest.mark.parametrize(
    ("name", "short"),
    [
        ("org.freedesktop.DBus.Error.ServiceUnknown", "ServiceUnknown"),
        ("com.example.Error.Weird", "com.example.Error.Weird"),
    ],
)
def test_format_error_other_names(name: str, short: str) -> None:
    assert format_error("list", ErrorReply(name, "text")) == f"busmgr: list: {short}: text"
    assert format_error("list", ErrorReply(name, "")) == f"busmgr: list: {short}"


@pytest.mark.parametrize(
    ("argv", "action"),
    [
        (["list"], "list"),
        (["status"], "status"),
        (["status", "getty", "tty1"], "status getty tty1"),
        (["start", "hello", "A=1"], "start hello"),
        (["emit", "desktop-start"], "emit desktop-start"),
        (["activate", "org.example.Echo"], "activate org.example.Echo"),
        (["getenv", "DISPLAY"], "getenv DISPLAY"),
        (["end-session"], "end-session"),
    ],
)
def test_describe_action(argv: list[str], action: str) -> None:
    assert describe_action(parse_args(argv)) == action


def test_format_event() -> None:
    assert format_event("desktop-start", {"DISPLAY": ":0"}) == "desktop-start DISPLAY=:0"
    assert format_event("x", {"A": "a b", "E": "", "Q": "it's"}) == ("x A='a b' E= Q='it'\"'\"'s'")
    assert format_event("x", {}) == "x"
    assert "\n" not in format_event("x", {"NL": "one\ntwo"})


def test_format_job_event_puts_job_and_instance_first() -> None:
    env = {"RESULT": "failed", "INSTANCE": "tty1", "PROCESS": "main", "JOB": "getty"}
    assert format_job_event("JobStopped", "getty", "tty1", env) == (
        "stopped JOB=getty INSTANCE=tty1 RESULT=failed PROCESS=main"
    )
    assert format_job_event("JobStarted", "hello", "", {}) == "started JOB=hello INSTANCE="


def _info(**kw: Any) -> InstanceInfo:
    fields: dict[str, Any] = dict(
        job="hello",
        instance="",
        goal="start",
        state="running",
        main_pid=1234,
        bus_name="",
        source="",
        path=JOB + "hello/_",
    )
    fields.update(kw)
    return InstanceInfo(**fields)


def test_format_snapshot_has_no_event_name() -> None:
    line = format_snapshot(_info())
    assert line == "JOB=hello INSTANCE= GOAL=start STATE=running PID=1234"
    assert "=" in line.split()[0]


def test_event_printer_prints_each_signal() -> None:
    lines: list[str] = []
    printer = EventPrinter(lines.append)
    printer("JobStarting", ["hello", "", {"JOB": "hello", "INSTANCE": ""}])
    printer("EventEmitted", ["desktop-start", {"DISPLAY": ":0"}])
    printer("SomethingElse", ["x"])
    assert lines == ["starting JOB=hello INSTANCE=", "desktop-start DISPLAY=:0"]


def test_event_printer_drops_the_twin_of_a_job_event() -> None:
    lines: list[str] = []
    printer = EventPrinter(lines.append)
    env = {"JOB": "hello", "INSTANCE": ""}
    printer("JobStarted", ["hello", "", env])
    printer("EventEmitted", ["started", {"INSTANCE": "", "JOB": "hello"}])  # its twin
    printer("EventEmitted", ["started", env])  # a second event: no twin left
    printer("EventEmitted", ["stopped", env])  # twin arriving first ...
    printer("JobStopped", ["hello", "", env])  # ... then the job signal
    assert lines == [
        "started JOB=hello INSTANCE=",
        "started JOB=hello INSTANCE=",
        "stopped JOB=hello INSTANCE=",
    ]


def test_event_printer_never_drops_repeats_of_one_kind() -> None:
    lines: list[str] = []
    printer = EventPrinter(lines.append)
    for _ in range(3):
        printer("EventEmitted", ["tick", {}])
    assert lines == ["tick"] * 3


# ---------------------------------------------------------------------------------------------
# Object paths


def test_paths() -> None:
    assert is_job_path(JOB + "hello")
    assert not is_job_path(JOB + "hello/_")
    assert not is_job_path("/org/busmgr/Manager1")
    assert job_path_of(JOB + "getty/tty1") == JOB + "getty"
    assert job_path_of(JOB + "getty") == JOB + "getty"


@pytest.mark.parametrize(
    ("element", "text"),
    [("_", ""), ("tty1", "tty1"), ("_31st", "1st"), ("ca_2edesrt_2edconf", "ca.desrt.dconf")],
)
def test_unescape_path_element(element: str, text: str) -> None:
    assert unescape_path_element(element) == text


# ---------------------------------------------------------------------------------------------
# Client verbs against an in-memory manager


class FakeManager(ManagerClient):
    """A :class:`ManagerClient` whose bus is a dict of objects; records the calls it gets."""

    def __init__(
        self,
        rows: Iterable[JobRow],
        objects: dict[tuple[str, str], dict[str, Any]],
        fail: ErrorReply | None = None,
    ) -> None:
        super().__init__(bus=None)  # type: ignore[arg-type]
        self.rows = list(rows)
        self.objects = objects
        self.fail = fail
        self.calls: list[tuple[Any, ...]] = []
        self.skipped: list[tuple[str, str, str]] = []
        self.env: dict[str, str] = {}

    async def list_skipped(self) -> list[tuple[str, str, str]]:
        return list(self.skipped)

    async def set_env(self, name: str, value: str) -> None:
        self.calls.append(("SetEnv", name, value))
        self.env[name] = value

    async def unset_env(self, name: str) -> None:
        self.calls.append(("UnsetEnv", name))
        self.env.pop(name, None)

    async def get_env(self, name: str) -> str:
        if name not in self.env:
            raise ErrorReply("org.busmgr.Error.UnknownVariable", f"{name} is not set")
        return self.env[name]

    async def list_env(self) -> dict[str, str]:
        return dict(self.env)

    async def end_session(self, wait: bool) -> None:
        self.calls.append(("EndSession", wait))

    async def list_jobs(self) -> list[JobRow]:
        return list(self.rows)

    async def get_job(self, job: str) -> str:
        if not any(r.job == job for r in self.rows):
            raise ErrorReply("org.busmgr.Error.UnknownJob", f'no job named "{job}"')
        return JOB + job

    async def get_all(self, path: str, interface: str) -> dict[str, Any]:
        try:
            return self.objects[(path, interface)]
        except KeyError:
            raise ErrorReply("org.freedesktop.DBus.Error.UnknownObject", path) from None

    async def get_all_many(
        self, targets: Sequence[tuple[str, str]]
    ) -> list[dict[str, Any] | ErrorReply]:
        results: list[dict[str, Any] | ErrorReply] = []
        for path, interface in targets:
            try:
                results.append(await self.get_all(path, interface))
            except ErrorReply as err:
                results.append(err)
        return results

    async def get_instance_by_name(self, job: str, instance: str) -> str:
        path = JOB + job + "/" + (instance or "_")
        if (path, "org.busmgr.Instance1") not in self.objects:
            raise ErrorReply("org.busmgr.Error.UnknownInstance", f'no instance "{instance}"')
        return path

    async def start_job(self, job: str, env: Mapping[str, str], wait: bool) -> str:
        self.calls.append(("StartJob", job, dict(env), wait))
        if self.fail:
            raise self.fail
        return JOB + job + "/_"

    async def stop_job(self, job: str, env: Mapping[str, str], wait: bool) -> None:
        self.calls.append(("StopJob", job, dict(env), wait))


def _instance(job: str, instance: str, goal: str, state: str, pid: int, bus_name: str = "") -> Any:
    return {
        "Job": job,
        "Instance": instance,
        "Goal": goal,
        "State": state,
        "MainPID": pid,
        "BusName": bus_name,
        "Result": "ok",
    }


def _manager() -> FakeManager:
    hello, getty, echo = JOB + "hello", JOB + "getty", JOB + "org_2eexample_2eEcho"
    rows = [
        JobRow("hello", "", "running", hello + "/_"),
        JobRow("getty", "tty1", "running", getty + "/tty1"),
        JobRow("getty", "tty2", "stopping", getty + "/tty2"),
        JobRow("org.example.Echo", "", "waiting", echo),
        JobRow("vanished", "x", "running", JOB + "vanished/x"),
    ]
    inst, job = "org.busmgr.Instance1", "org.busmgr.Job1"
    objects = {
        (hello + "/_", inst): _instance("hello", "", "start", "running", 1234, "org.example.Hi"),
        (getty + "/tty1", inst): _instance("getty", "tty1", "start", "running", 15001),
        (getty + "/tty2", inst): _instance("getty", "tty2", "stop", "stopping", 15002),
        (hello, job): {"Source": "/s/hello.conf", "BusName": "org.example.Hi"},
        (getty, job): {"Source": "/s/getty.conf", "BusName": ""},
        (echo, job): {"Source": "/usr/share/dbus-1/services/echo.service", "BusName": "o.e.E"},
    }
    return FakeManager(rows, objects)


async def _run(verb: str, *argv: str, manager: FakeManager | None = None) -> tuple[int, str]:
    args = parse_args([verb, *argv])
    out = io.StringIO()
    status = await args.run(manager or _manager(), args, out)
    return status, out.getvalue()


async def test_list_table() -> None:
    status, out = await _run("list")
    assert status == 0
    assert out.splitlines() == [
        "JOB               INSTANCE  GOAL/STATE       PID  BUSNAME         SOURCE"
        "                                   RESULT",
        "getty             tty1      start/running  15001  -               /s/getty.conf"
        "                            ok",
        "getty             tty2      stop/stopping  15002  -               /s/getty.conf"
        "                            ok",
        "hello             -         start/running   1234  org.example.Hi  /s/hello.conf"
        "                            ok",
        "org.example.Echo  -         stop/waiting       -  o.e.E           "
        "/usr/share/dbus-1/services/echo.service  -",
        "vanished          x         stop/waiting       -  -               -"
        "                                        -",
    ]


async def test_list_shows_the_reason_of_a_failure_and_json_parses() -> None:
    manager = _manager()
    path = JOB + "getty/tty2"
    manager.objects[(path, "org.busmgr.Instance1")].update(
        {"Goal": "stop", "State": "waiting", "Result": "failed", "ResultReason": "lost bus name x"}
    )
    _status, out = await _run("list", manager=manager)
    line = next(ln for ln in out.splitlines() if "tty2" in ln)
    assert line.endswith("failed: lost bus name x")
    _status, out = await _run("list", "--json", manager=manager)
    rows = json.loads(out)
    assert {r["job"] for r in rows} == {"getty", "hello", "org.example.Echo", "vanished"}
    tty2 = next(r for r in rows if r["instance"] == "tty2")
    assert (tty2["result"], tty2["reason"], tty2["pid"]) == ("failed", "lost bus name x", 15002)


async def test_status_of_everything() -> None:
    status, out = await _run("status")
    assert status == 0
    assert out.splitlines() == [
        "getty (tty1) start/running, process 15001",
        "getty (tty2) stop/stopping, process 15002",
        "hello start/running, process 1234",
        "org.example.Echo stop/waiting",
        "vanished (x) stop/waiting",
    ]


@pytest.mark.parametrize(
    ("argv", "status", "first"),
    [
        (["hello"], 0, "hello start/running, process 1234"),
        (["getty", "tty1"], 0, "getty (tty1) start/running, process 15001"),
        (["getty", "tty2"], 3, "getty (tty2) stop/stopping, process 15002"),
        (["org.example.Echo"], 3, "org.example.Echo stop/waiting"),
    ],
)
async def test_status_exit_codes(argv: list[str], status: int, first: str) -> None:
    got_status, out = await _run("status", *argv)
    assert (got_status, out.splitlines()[0]) == (status, first)


async def test_status_of_one_job_explains() -> None:
    _status, out = await _run("status", "hello")
    lines = out.splitlines()
    assert lines[0] == "hello start/running, process 1234"
    assert any(ln.split() == ["Bus", "name:", "org.example.Hi"] for ln in lines)
    assert any(ln.split() == ["Source:", "/s/hello.conf"] for ln in lines)


async def test_status_of_an_unknown_instance_is_an_error() -> None:
    with pytest.raises(ErrorReply) as info:
        await _run("status", "getty", "tty9")
    assert info.value.type == "org.busmgr.Error.UnknownInstance"


async def test_status_of_an_unknown_job_is_an_error() -> None:
    with pytest.raises(ErrorReply) as info:
        await _run("status", "nope")
    assert info.value.type == "org.busmgr.Error.UnknownJob"


async def test_start_waits_and_prints_the_status_line() -> None:
    manager = _manager()
    status, out = await _run("start", "hello", "A=1", manager=manager)
    assert (status, out) == (0, "hello start/running, process 1234\n")
    assert manager.calls == [("StartJob", "hello", {"A": "1"}, True)]


async def test_start_no_wait() -> None:
    manager = _manager()
    await _run("start", "--no-wait", "hello", manager=manager)
    assert manager.calls == [("StartJob", "hello", {}, False)]


async def test_failed_start_raises_the_error_reply() -> None:
    manager = _manager()
    manager.fail = ErrorReply("org.busmgr.Error.JobFailed", "RESULT=failed PROCESS=main")
    with pytest.raises(ErrorReply):
        await _run("start", "hello", manager=manager)


async def test_stop_prints_the_single_instance_only() -> None:
    manager = _manager()
    assert await _run("stop", "hello", manager=manager) == (
        0,
        "hello start/running, process 1234\n",  # the fake does not really stop it
    )
    assert await _run("stop", "getty", "TTY=tty1", manager=manager) == (0, "")
    assert manager.calls[-1] == ("StopJob", "getty", {"TTY": "tty1"}, True)


async def test_list_shows_skipped_entries_among_the_jobs() -> None:
    manager = _manager()
    manager.skipped = [
        ("autostart-kde", "/etc/xdg/autostart/kde.desktop", "OnlyShowIn=KDE; does not include X"),
        ("hello", "/x/hello.desktop", "overridden by /y/hello.desktop"),
    ]
    status, out = await _run("list", manager=manager)
    assert status == 0
    lines = out.splitlines()
    assert [line.split()[:3] for line in lines[1:]] == [
        ["autostart-kde", "-", "skipped"],
        ["getty", "tty1", "start/running"],
        ["getty", "tty2", "stop/stopping"],
        ["hello", "-", "start/running"],  # the job before an entry of its name
        ["hello", "-", "skipped"],
        ["org.example.Echo", "-", "stop/waiting"],
        ["vanished", "x", "stop/waiting"],
    ]
    # where the entry is under SOURCE, and why it is not a job under RESULT
    assert lines[1].split(None, 6)[5:] == [
        "/etc/xdg/autostart/kde.desktop",
        "OnlyShowIn=KDE; does not include X",
    ]


async def test_environment_verbs() -> None:
    manager = _manager()
    assert await _run("setenv", "A=1", "B=two words", manager=manager) == (0, "")
    assert await _run("getenv", "B", manager=manager) == (0, "two words\n")
    assert await _run("unsetenv", "A", "NEVER_SET", manager=manager) == (0, "")
    assert await _run("getenv", manager=manager) == (0, "B=two words\n")
    assert manager.calls == [
        ("SetEnv", "A", "1"),
        ("SetEnv", "B", "two words"),
        ("UnsetEnv", "A"),
        ("UnsetEnv", "NEVER_SET"),
    ]
    with pytest.raises(ErrorReply, match="A is not set"):
        await _run("getenv", "A", manager=manager)


async def test_end_session_waits_unless_told_not_to() -> None:
    manager = _manager()
    assert await _run("end-session", manager=manager) == (0, "")
    assert await _run("end-session", "--no-wait", manager=manager) == (0, "")
    assert manager.calls == [("EndSession", True), ("EndSession", False)]


async def test_events_without_follow_prints_the_states() -> None:
    status, out = await _run("events")
    assert status == 0
    assert out.splitlines()[0] == "JOB=getty INSTANCE=tty1 GOAL=start STATE=running PID=15001"
    assert len(out.splitlines()) == 5


async def test_describe_path_of_a_vanished_instance() -> None:
    info = await _manager().describe_path(JOB + "gone/tty_2d3")
    assert (info.job, info.instance, info.goal, info.state) == ("gone", "tty-3", "stop", "waiting")


async def test_describe_reraises_other_errors() -> None:
    class Denied(FakeManager):
        async def get_all(self, path: str, interface: str) -> dict[str, Any]:
            raise ErrorReply("org.busmgr.Error.AccessDenied", "no")

    with pytest.raises(ErrorReply):
        await Denied(_manager().rows, {}).describe(_manager().rows)


# ---------------------------------------------------------------------------------------------
# check


class _Severity:
    ERROR = "error"
    WARNING = "warning"


class _Diagnostic:
    def __init__(self, text: str, severity: str) -> None:
        self.text, self.severity = text, severity

    def __str__(self) -> str:
        return self.text


def _fake_config(monkeypatch: pytest.MonkeyPatch, diagnostics: list[_Diagnostic]) -> list[Any]:
    seen: list[Any] = []
    module = types.ModuleType("busmgr.config")

    def check_paths(paths: list[Path]) -> list[_Diagnostic]:
        seen.append(paths)
        return diagnostics

    module.check_paths = check_paths  # type: ignore[attr-defined]
    module.Severity = _Severity  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "busmgr.config", module)
    return seen


@pytest.mark.parametrize(
    ("severities", "status"), [([], 0), (["warning"], 0), (["warning", "error"], 1)]
)
def test_check_exit_status(
    severities: list[str],
    status: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    diagnostics = [_Diagnostic(f"a.conf:{n}: {s}", s) for n, s in enumerate(severities, 1)]
    seen = _fake_config(monkeypatch, diagnostics)
    assert main(["check", "a.conf"]) == status
    assert seen == [[Path("a.conf")]]
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [str(d) for d in diagnostics]


def test_check_defaults_to_the_session_services_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    seen = _fake_config(monkeypatch, [])
    assert main(["check"]) == 0
    assert seen == [[tmp_path / "busmgr" / "services.d"]]


# ---------------------------------------------------------------------------------------------
# Defaults of the options


def test_default_dirs() -> None:
    env = {"HOME": "/home/u", "XDG_CONFIG_HOME": "/cfg", "XDG_STATE_HOME": "/st"}
    session, system = Mode.SESSION, Mode.SYSTEM
    assert default_services_dirs(session, env) == (Path("/cfg/busmgr/services.d"),)
    assert default_state_dir(session, env) == Path("/st/busmgr")
    assert default_services_dirs(system, env) == (Path("/etc/busmgr/services.d"),)
    assert default_state_dir(system, env) == Path("/var/lib/busmgr")
    assert default_log_dir(session, env, None) == Path("/st/busmgr/log")
    assert default_log_dir(session, env, Path("/x")) == Path("/x/log")
    assert default_log_dir(system, env, None) == Path("/var/log/busmgr")
    assert default_log_dir(system, env, Path("/x")) == Path("/x/log")
    relative = {"HOME": "/home/u", "XDG_CONFIG_HOME": "rel", "XDG_STATE_HOME": ""}
    assert default_services_dirs(session, relative) == (Path("/home/u/.config/busmgr/services.d"),)
    assert default_state_dir(session, relative) == Path("/home/u/.local/state/busmgr")


def test_log_options_reach_the_manager_options() -> None:
    args = parse_args(["session", "--log-dir", "logs", "--log-size", "64K", "--log-keep", "0"])
    opts = session_options(args)
    assert (opts.log_dir, opts.log_max_bytes, opts.log_keep) == (
        Path("logs").absolute(),
        65536,
        0,
    )
    args = parse_args(["daemon", "--system", "--log-size", "2M"])
    assert daemon_options(args).log_max_bytes == 2 << 20


@pytest.mark.parametrize("argv", [["--log-size", "lots"], ["--log-keep", "-1"]])
def test_bad_log_options_are_usage_errors(argv: list[str]) -> None:
    assert main(["session", *argv]) == 2
