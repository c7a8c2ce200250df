"""The XDG autostart importer (busmgr.config.desktop): entries -> jobs, skips with a reason, or
refusals with FILE:LINE; Exec field codes and quoting; the directories; the entries installed on
this machine; the catalog and ``busmgr check``. No process, no bus."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from busmgr.catalog import Sources, load_catalog
from busmgr.config import check_paths
from busmgr.config.desktop import (
    AutostartContext,
    AutostartResult,
    ExecError,
    autostart_dirs,
    command_line,
    exec_argv,
    import_autostart,
    parse_autostart_entry,
)
from busmgr.config.diagnostics import Severity
from busmgr.jobclass import ConsoleMode, EventArg, EventMatch, Origin, ProcessSpec
from busmgr.options import Mode

PATH = "/etc/xdg/autostart/app.desktop"


def context(
    desktops: tuple[str, ...] = ("GNOME",),
    programs: frozenset[str] = frozenset({"app", "gdbus"}),
    files: frozenset[str] = frozenset(),
    configs: dict[str, str] | None = None,
) -> AutostartContext:
    return AutostartContext(
        desktops=desktops,
        locale="de_DE.UTF-8",
        config_home="/home/u/.config",
        program_exists=lambda name: name in programs,
        file_exists=lambda path: path in files,
        read_config=lambda path: (configs or {}).get(path),
    )


def entry(*lines: str, ctx: AutostartContext | None = None, path: str = PATH) -> AutostartResult:
    text = "[Desktop Entry]\nType=Application\nName=App\n" + "".join(f"{ln}\n" for ln in lines)
    return parse_autostart_entry(text, path, ctx or context())


def phase_of(result: AutostartResult) -> str:
    assert result.job is not None, result
    return str(result.job.start_on)


# ------------------------------------------------------------------------------ Exec
@pytest.mark.parametrize(
    ("value", "argv"),
    [
        ("app", ["app"]),
        ("/usr/bin/app --flag  value", ["/usr/bin/app", "--flag", "value"]),
        ('app "two words" x', ["app", "two words", "x"]),
        (
            r'app "say \\"hi\\"" "\\$HOME" "back\\\\slash"',
            ["app", 'say "hi"', "$HOME", "back\\slash"],
        ),
        ("sh -c 'exec app; true'", ["sh", "-c", "exec app; true"]),
        ("app %f", ["app"]),
        ("app %U --x", ["app", "--x"]),
        ("app %d %D %n %N %v %m", ["app"]),
        ("app --file=%u", ["app", "--file="]),
        ("app 100%%", ["app", "100%"]),
        ("app %i", ["app", "--icon", "app-icon"]),
        ("app --name %c", ["app", "--name", "My App"]),
        ("app %k", ["app", PATH]),
        ('app ""', ["app", ""]),
        (r"app\sx", ["app", "x"]),  # \s is a blank once unescaped, so it separates
    ],
)
def test_exec_argv(value: str, argv: list[str]) -> None:
    assert exec_argv(value, name="My App", icon="app-icon", source=PATH) == argv


def test_exec_icon_without_icon_vanishes() -> None:
    assert exec_argv("app %i --x") == ["app", "--x"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("app %z", 'unknown field code "%z"'),
        ("app 50%", 'a lone "%" at the end of an argument'),
        ('app "open', "a double quote is not closed"),
        ("app 'open", "a single quote is not closed"),
        ("%U", "no program to run"),
        ("", "no program to run"),
        ('"" app', "the program name is empty"),
    ],
)
def test_exec_errors(value: str, message: str) -> None:
    with pytest.raises(ExecError, match=message):
        exec_argv(value)


@pytest.mark.parametrize(
    ("argv", "line", "shell"),
    [
        (["app", "--x"], "app --x", False),
        (["app", "two words"], "app 'two words'", True),
        (["app", "it's"], "app 'it'\\''s'", True),
        (["app", "--opt=1"], "app --opt=1", True),  # "=" sends the line to the shell...
        (["A=1", "x"], "'A=1' x", True),  # ...where a first word with "=" must be quoted
        (["app", ""], "app ''", True),
        (["app", "$HOME", "*"], "app '$HOME' '*'", True),
    ],
)
def test_command_line(argv: list[str], line: str, shell: bool) -> None:
    assert command_line(argv) == line
    spec = ProcessSpec(line)
    assert spec.needs_shell is shell
    assert (shlex.split(line) if shell else spec.argv()) == argv


_ARGS = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"))


@settings(max_examples=300, deadline=None)
@given(st.lists(_ARGS, min_size=1, max_size=5).filter(lambda a: bool(a[0])))
def test_command_line_runs_exactly_argv(argv: list[str]) -> None:
    line = command_line(argv)
    spec = ProcessSpec(line)
    if spec.needs_shell:
        assert shlex.split(line) == argv  # what /bin/sh makes of single-quoted words
    else:
        assert spec.argv() == argv


def test_command_line_through_a_real_shell() -> None:
    argv = ["printf", "[%s]", "two words", "it's", "$HOME", "*", "a\tb", "", "\\n"]
    spec = ProcessSpec(command_line(argv))
    done = subprocess.run(spec.argv(), capture_output=True, text=True, check=True, timeout=30)
    assert done.stdout == "[two words][it's][$HOME][*][a\tb][][\\n]"


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_exec_value_gives_argv_or_exec_error(value: str) -> None:
    try:
        argv = exec_argv(value, name="n", icon="i", source="s")
    except ExecError:
        return
    assert argv and argv[0]


@settings(max_examples=300, deadline=None)
@given(st.text(), st.text())
def test_any_entry_is_judged_without_raising(key_lines: str, exec_value: str) -> None:
    text = f"[Desktop Entry]\nType=Application\nExec={exec_value}\n{key_lines}"
    result = parse_autostart_entry(text, "fuzz.desktop", context())
    refused = any(d.is_error for d in result.diagnostics)
    assert (result.job is not None) + (result.skipped is not None) + refused == 1


# ------------------------------------------------------------------------------ one entry
def test_a_plain_entry_is_a_job() -> None:
    result = entry("Exec=app --start %U", "Name[de]=Anwendung", "Icon=x")
    assert result.diagnostics == ()
    job = result.job
    assert job is not None
    assert job.name == "autostart-app"
    assert job.origin is Origin.AUTOSTART
    assert job.source == PATH
    assert job.description == "Anwendung"  # the translated name
    assert job.main == ProcessSpec("app --start", line=4)
    assert job.start_on == EventMatch("desktop-phase", (EventArg("Applications", key="PHASE"),))
    assert not job.respawn.enabled
    assert not job.task
    assert job.context.console is ConsoleMode.LOG
    assert job.context.chdir is None


def test_autorestart_and_path() -> None:
    job = entry("Exec=app", "X-GNOME-AutoRestart=true", "Path=/srv/work").job
    assert job is not None
    assert job.respawn.enabled
    assert job.context.chdir == "/srv/work"


@pytest.mark.parametrize(
    ("lines", "desktops", "phase"),
    [
        (["X-GNOME-Autostart-Phase=Initialization"], ("GNOME",), "Initialization"),
        (["X-GNOME-Autostart-Phase=WindowManager"], ("GNOME",), "WindowManager"),
        (["X-GNOME-Autostart-Phase=Panel"], ("GNOME",), "Panel"),
        (["X-GNOME-Autostart-Phase=Desktop"], ("GNOME",), "Desktop"),
        (["X-GNOME-Autostart-Phase=Application"], ("GNOME",), "Applications"),
        (["X-GNOME-Autostart-Phase=Applications"], ("GNOME",), "Applications"),
        (["X-GNOME-Autostart-Phase=EarlyInitialization"], ("GNOME",), "Initialization"),
        (["X-GNOME-Autostart-Phase=PreDisplayServer"], ("GNOME",), "Initialization"),
        (["X-GNOME-Autostart-Phase=DisplayServer"], ("GNOME",), "Initialization"),
        (["X-KDE-autostart-phase=0"], ("KDE",), "Initialization"),
        (["X-KDE-autostart-phase=1"], ("KDE",), "Desktop"),
        (["X-KDE-autostart-phase=2"], ("KDE",), "Applications"),
        (["X-KDE-autostart-phase=1"], ("GNOME",), "Desktop"),  # the only phase given
        # both given: KDE's on a KDE desktop, GNOME's elsewhere
        (["X-GNOME-Autostart-Phase=Panel", "X-KDE-autostart-phase=0"], ("KDE",), "Initialization"),
        (["X-GNOME-Autostart-Phase=Panel", "X-KDE-autostart-phase=0"], ("XFCE",), "Panel"),
        ([], ("GNOME",), "Applications"),
    ],
)
def test_phases(lines: list[str], desktops: tuple[str, ...], phase: str) -> None:
    result = entry("Exec=app", *lines, ctx=context(desktops))
    assert phase_of(result) == f"desktop-phase PHASE={phase}"
    assert result.diagnostics == ()


def test_an_unknown_phase_is_a_warning_and_applications() -> None:
    result = entry("Exec=app", "X-GNOME-Autostart-Phase=Later")
    assert phase_of(result) == "desktop-phase PHASE=Applications"
    assert [(d.line, d.severity) for d in result.diagnostics] == [(5, Severity.WARNING)]
    assert result.job is not None and result.job.start_on_line == 5


def test_delay() -> None:
    result = entry("Exec=app", "X-GNOME-Autostart-Phase=Panel", "X-GNOME-Autostart-Delay=30")
    assert phase_of(result) == "desktop-delay PHASE=Panel DELAY=30"
    assert phase_of(entry("Exec=app", "X-GNOME-Autostart-Delay=0.5")).endswith("DELAY=0.5")
    assert phase_of(entry("Exec=app", "X-GNOME-Autostart-Delay=0")).startswith("desktop-phase")


@pytest.mark.parametrize("value", ["soon", "-1", "nan", "inf", "1e9"])
def test_a_bad_delay_is_a_warning_and_no_delay(value: str) -> None:
    result = entry("Exec=app", f"X-GNOME-Autostart-Delay={value}")
    assert phase_of(result) == "desktop-phase PHASE=Applications"
    assert [d.severity for d in result.diagnostics] == [Severity.WARNING]


def test_dbus_activatable_entry_is_activated_through_the_bus() -> None:
    path = "/etc/xdg/autostart/org.example.Mail-App.desktop"
    result = entry("Exec=mail --fallback", "DBusActivatable=true", path=path)
    job = result.job
    assert job is not None and result.diagnostics == ()
    assert job.name == "autostart-org.example.Mail-App"
    assert job.task and not job.respawn.enabled
    main = job.main
    assert main is not None
    assert shlex.split(main.command) == [
        "gdbus",
        "call",
        "--session",
        "--dest",
        "org.example.Mail-App",
        "--object-path",
        "/org/example/Mail_App",
        "--method",
        "org.freedesktop.Application.Activate",
        "{}",
    ]


def test_dbus_activatable_without_gdbus_or_a_bus_name_uses_exec() -> None:
    no_gdbus = context(programs=frozenset({"mail"}))
    path = "/x/org.example.Mail.desktop"
    job = entry("Exec=mail", "DBusActivatable=true", ctx=no_gdbus, path=path).job
    assert job is not None and job.main == ProcessSpec("mail", line=4) and not job.task
    result = entry("Exec=mail", "DBusActivatable=true", path="/x/mail.desktop")
    assert result.job is not None and result.job.main == ProcessSpec("mail", line=4)
    assert [(d.line, d.severity) for d in result.diagnostics] == [(5, Severity.WARNING)]
    assert "is not a bus name" in result.diagnostics[0].message
    # no gdbus and no Exec: nothing can start it
    refused = entry("DBusActivatable=true", ctx=no_gdbus, path=path)
    assert refused.job is None and refused.skipped is None
    assert "gdbus is not installed" in refused.diagnostics[0].message


@pytest.mark.parametrize(
    ("lines", "ctx", "reason"),
    [
        (["Exec=app", "Hidden=true"], None, "Hidden=true: the entry is disabled"),
        (["Exec=app", "X-GNOME-Autostart-enabled=false"], None, "X-GNOME-Autostart-enabled"),
        (["Exec=app", "OnlyShowIn=KDE;XFCE;"], None, "OnlyShowIn=KDE;XFCE; does not include GNOME"),
        (["Exec=app", "NotShowIn=GNOME;"], None, "NotShowIn=GNOME; includes GNOME"),
        (
            ["Exec=app", "OnlyShowIn=GNOME;"],
            context(()),
            "does not include no desktop (XDG_CURRENT_DESKTOP is not set)",
        ),
        (["Exec=app", "TryExec=/opt/app/bin/app"], None, "is not an executable file"),
        (["Exec=app", "TryExec=app-helper"], None, "TryExec=app-helper is not found in PATH"),
        (
            ["Exec=app", "AutostartCondition=GSettings org.gnome.a11y screen-reader-enabled"],
            None,
            "busmgr cannot evaluate this kind of condition",
        ),
        (
            ["Exec=app", "X-GNOME-Autostart-Condition=if-exists app-enabled"],
            None,
            "/home/u/.config/app-enabled does not exist",
        ),
        (
            ["Exec=app", "AutostartCondition=unless-exists setup-done"],
            context(files=frozenset({"/home/u/.config/setup-done"})),
            "/home/u/.config/setup-done exists",
        ),
        (
            ["Exec=app", "X-KDE-autostart-condition=apprc:General:AutoStart:false"],
            None,
            "the setting is off",
        ),
        (
            ["Exec=app", "X-KDE-autostart-condition=apprc:General:AutoStart:true"],
            context(configs={"/home/u/.config/apprc": "[General]\nAutoStart=false\n"}),
            "the setting is off",
        ),
        (["Exec=app", "X-KDE-autostart-condition=nonsense"], None, "not FILE:GROUP:KEY:DEFAULT"),
    ],
)
def test_skipped_with_a_reason(lines: list[str], ctx: AutostartContext | None, reason: str) -> None:
    result = entry(*lines, ctx=ctx)
    assert result.job is None
    assert result.skipped is not None and reason in result.skipped
    assert not any(d.is_error for d in result.diagnostics)


@pytest.mark.parametrize(
    ("lines", "ctx"),
    [
        (["Exec=app", "OnlyShowIn=XFCE;GNOME"], None),
        (["Exec=app", "NotShowIn=KDE;"], None),
        # the first current desktop either list names decides
        (["Exec=app", "OnlyShowIn=Budgie;", "NotShowIn=GNOME;"], context(("Budgie", "GNOME"))),
        (["Exec=app", "TryExec=app"], None),
        (
            ["Exec=app", "AutostartCondition=if-exists on"],
            context(files=frozenset({"/home/u/.config/on"})),
        ),
        (["Exec=app", "AutostartCondition=unless-exists setup-done"], None),
        (
            ["Exec=app", "X-KDE-autostart-condition=apprc:General:AutoStart:false"],
            context(configs={"/home/u/.config/apprc": "[General]\nAutoStart=true\n"}),
        ),
        (["Exec=app", "X-KDE-autostart-condition=baloofilerc:Basic Settings:Indexing:true"], None),
        (["Exec=app", "X-GNOME-Autostart-enabled=true", "Hidden=false"], None),
    ],
)
def test_shown(lines: list[str], ctx: AutostartContext | None) -> None:
    result = entry(*lines, ctx=ctx)
    assert result.job is not None, result


def test_a_hidden_entry_needs_nothing_else() -> None:
    # How a user disables a system entry: a copy of its name with just Hidden=true.
    result = parse_autostart_entry("[Desktop Entry]\nHidden=true\n", PATH, context())
    assert result.skipped == "Hidden=true: the entry is disabled"
    assert result.diagnostics == ()


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("[Desktop Entry]\nType=Application\n", 0, "no Exec= in [Desktop Entry]"),
        ("[Desktop Entry]\nType=Application\nExec=app %z\n", 3, "Exec=app %z: unknown field"),
        ("[Desktop Entry]\nType=Application\nExec=app 'x\n", 3, "a single quote is not closed"),
        ("[Desktop Entry]\nExec=app\n", 0, "no Type= in [Desktop Entry]"),
        ("[Other]\nExec=app\n", 0, "no [Desktop Entry] group"),
        ("[Desktop Entry]\nType=Application\nExec\n", 3, 'expected KEY=VALUE, not "Exec"'),
    ],
)
def test_refused_with_file_and_line(text: str, line: int, message: str) -> None:
    result = parse_autostart_entry(text, PATH, context())
    assert result.job is None and result.skipped is None
    errors = [d for d in result.diagnostics if d.is_error]
    assert len(errors) == 1, result.diagnostics  # one clear message
    assert (errors[0].path, errors[0].line) == (PATH, line)
    assert message in errors[0].message


def test_malformed_exec_is_refused_on_any_desktop() -> None:
    result = entry("Exec=app %z", "OnlyShowIn=KDE;")
    assert result.job is None and result.skipped is None


def test_other_types_are_skipped() -> None:
    text = "[Desktop Entry]\nType=Link\nURL=https://example.org\n"
    result = parse_autostart_entry(text, PATH, context())
    assert result.skipped == "Type=Link: only applications are started"


def test_no_name_is_a_warning() -> None:
    text = "[Desktop Entry]\nType=Application\nExec=app\n"
    result = parse_autostart_entry(text, PATH, context())
    assert result.job is not None and result.job.description == "app"
    assert [d.severity for d in result.diagnostics] == [Severity.WARNING]


# ------------------------------------------------------------------------------ directories
def test_autostart_dirs() -> None:
    assert autostart_dirs({"HOME": "/home/u"}) == [
        Path("/home/u/.config/autostart"),
        Path("/etc/xdg/autostart"),
    ]
    environ = {
        "HOME": "/home/u",
        "XDG_CONFIG_HOME": "/cfg",
        "XDG_CONFIG_DIRS": "/etc/xdg/xdg-ubuntu:relative::/etc/xdg:/etc/xdg",
    }
    assert autostart_dirs(environ) == [
        Path("/cfg/autostart"),
        Path("/etc/xdg/xdg-ubuntu/autostart"),
        Path("/etc/xdg/autostart"),
    ]


def write(directory: Path, name: str, text: str | bytes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


APP = "[Desktop Entry]\nType=Application\nName=A\nExec={}\n"


def test_import_decides_by_file_name_most_important_first(tmp_path: Path) -> None:
    user, system = tmp_path / "user", tmp_path / "system"
    mine = write(user, "a.desktop", APP.format("mine"))
    theirs = write(system, "a.desktop", APP.format("theirs"))
    write(user, "b.desktop", "[Desktop Entry]\nHidden=true\n")
    hidden_b = write(system, "b.desktop", APP.format("b"))
    write(system, "c.desktop", APP.format("c %z"))
    write(system, "d.desktop", b"[Desktop Entry]\nType=Application\nName=\xff\nExec=d\n")
    write(system, "e.desktop", APP.format("e"))
    write(system, "notes.txt", "not an entry")
    result = import_autostart([user, tmp_path / "missing", system], context(programs=frozenset()))
    assert sorted(result.jobs) == ["autostart-a", "autostart-e"]
    job = result.jobs["autostart-a"]
    assert job.main is not None and job.main.command == "mine"
    assert {(s.name, s.source, s.reason) for s in result.skipped} == {
        ("autostart-a", str(theirs), f"overridden by {mine}"),
        ("autostart-b", str(user / "b.desktop"), "Hidden=true: the entry is disabled"),
        ("autostart-b", str(hidden_b), f"overridden by {user / 'b.desktop'}"),
        (
            "autostart-c",
            str(system / "c.desktop"),
            'refused: line 4: Exec=c %z: unknown field code "%z"',
        ),
        ("autostart-d", str(system / "d.desktop"), "refused: line 3: not valid UTF-8 text"),
    }
    assert result.failed == {"autostart-c", "autostart-d"}
    assert [(Path(d.path).name, d.line) for d in result.diagnostics] == [
        ("c.desktop", 4),
        ("d.desktop", 3),
    ]


def test_a_file_name_that_is_not_utf8_is_one_diagnostic(tmp_path: Path) -> None:
    directory = tmp_path / "autostart"
    directory.mkdir()
    with open(os.path.join(os.fsencode(directory), b"caf\xe9.desktop"), "w") as fh:
        fh.write(APP.format("cafe"))
    write(directory, "ok.desktop", APP.format("ok"))
    result = import_autostart([directory], context())
    assert sorted(result.jobs) == ["autostart-ok"] and result.skipped == ()
    assert [(d.path, d.message) for d in result.diagnostics] == [
        (f"{directory}/caf\ufffd.desktop", "the path is not valid UTF-8; ignored")
    ]


def test_the_entries_installed_on_this_machine() -> None:
    # at-spi2-core and xdg-user-dirs (installed by .ci/system-deps) ship these two.
    result = import_autostart(
        [Path("/etc/xdg/autostart")],
        AutostartContext.from_environ({"XDG_CURRENT_DESKTOP": "GNOME"}),
    )
    assert result.diagnostics == ()
    atspi = result.jobs["autostart-at-spi-dbus-bus"]
    assert atspi.source == "/etc/xdg/autostart/at-spi-dbus-bus.desktop"
    assert atspi.main is not None
    assert atspi.main.argv() == ["/usr/libexec/at-spi-bus-launcher", "--launch-immediately"]
    assert str(atspi.start_on) == "desktop-phase PHASE=Initialization"
    assert atspi.respawn.enabled  # X-GNOME-AutoRestart=true
    dirs = result.jobs["autostart-xdg-user-dirs"]  # its TryExec is installed
    assert dirs.main is not None and dirs.main.argv() == ["xdg-user-dirs-update"]
    assert str(dirs.start_on) == "desktop-phase PHASE=Initialization"
    assert not dirs.respawn.enabled


# ------------------------------------------------------------------------------ catalog, check
def test_catalog_of_a_desktop_session(tmp_path: Path) -> None:
    services, config = tmp_path / "services.d", tmp_path / "config"
    write(services, "autostart-mine.conf", "exec /bin/override\n")
    write(config / "autostart", "mine.desktop", APP.format("mine"))
    write(config / "autostart", "app.desktop", APP.format("app"))
    write(config / "autostart", "kde.desktop", APP.format("kde") + "OnlyShowIn=KDE;\n")
    environ = {"XDG_CONFIG_HOME": str(config), "XDG_CONFIG_DIRS": str(tmp_path / "none")}
    environ["XDG_CURRENT_DESKTOP"] = "GNOME"
    catalog = load_catalog(Sources((services,), Mode.SESSION, False, environ, autostart=True))
    assert sorted(catalog.classes) == ["autostart-app", "autostart-mine"]
    assert catalog.classes["autostart-mine"].origin is Origin.FILE  # a job file wins
    assert catalog.classes["autostart-app"].origin is Origin.AUTOSTART
    reasons = {s.name: s.reason for s in catalog.skipped}
    assert reasons == {
        "autostart-kde": "OnlyShowIn=KDE; does not include GNOME",
        "autostart-mine": f"{services / 'autostart-mine.conf'} defines autostart-mine",
    }
    # no desktop session, no autostart
    plain = load_catalog(Sources((services,), Mode.SESSION, False, environ))
    assert sorted(plain.classes) == ["autostart-mine"] and plain.skipped == ()


def test_catalog_keeps_a_refused_entry_s_previous_definition(tmp_path: Path) -> None:
    config = tmp_path / "config"
    path = write(config / "autostart", "app.desktop", APP.format("app"))
    environ = {"XDG_CONFIG_HOME": str(config), "XDG_CONFIG_DIRS": str(tmp_path / "none")}
    sources = Sources((tmp_path / "services.d",), Mode.SESSION, False, environ, autostart=True)
    first = load_catalog(sources)
    path.write_text(APP.format("app %q"))  # an edit with a typo
    second = load_catalog(sources, first.classes)
    assert second.classes["autostart-app"] is first.classes["autostart-app"]
    assert second.kept == {"autostart-app"}
    assert any("unknown field code" in line for line in second.diagnostics)


def test_check_judges_entries(tmp_path: Path) -> None:
    write(tmp_path, "good.desktop", APP.format("app"))
    write(tmp_path, "bad.desktop", APP.format("app %z"))
    write(tmp_path, "hidden.desktop", "[Desktop Entry]\nHidden=true\n")
    write(tmp_path, "job.conf", "start on desktop-phase PHASE=Panel\nexec /bin/true\n")
    lines = [str(d) for d in check_paths([tmp_path], {})]
    assert lines == [f'{tmp_path / "bad.desktop"}:4: Exec=app %z: unknown field code "%z"']


def test_busmgr_check_on_the_installed_entries_and_a_broken_one(tmp_path: Path) -> None:
    broken = write(tmp_path, "broken.desktop", b"[Desktop Entry]\nType=Application\nExec=\xe9\n")
    done = subprocess.run(
        [sys.executable, "-m", "busmgr", "check", "/etc/xdg/autostart", str(broken)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [f"{broken}:3: not valid UTF-8 text"]
