"""Importing D-Bus activation (.service) files as jobs."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from busmgr.config import (
    SYSTEM_SERVICE_DIRS,
    Severity,
    import_service_dirs,
    parse_service_file,
    skip_reason,
    xdg_service_dirs,
)
from busmgr.jobclass import Origin, ProcessKind, ProcessSpec

DCONF = """\
# installed by dconf
[D-BUS Service]
Name=ca.desrt.dconf
Exec=/usr/libexec/dconf-service
"""


def test_minimal_service_file() -> None:
    result = parse_service_file(DCONF, "/usr/share/dbus-1/services/ca.desrt.dconf.service")
    assert result.diagnostics == ()
    job = result.job
    assert job is not None
    assert job.name == "ca.desrt.dconf"
    assert job.origin is Origin.DBUS_SERVICE
    assert job.dbus_name == "ca.desrt.dconf"
    assert job.source == "/usr/share/dbus-1/services/ca.desrt.dconf.service"
    assert job.processes == {ProcessKind.MAIN: ProcessSpec("/usr/libexec/dconf-service", False, 4)}
    assert job.context.setuid is None
    assert job.systemd_service is None
    assert job.start_on is None


def test_user_systemd_service_and_ignored_keys() -> None:
    text = (
        "[D-BUS Service]\n"
        "Name = org.freedesktop.UDisks2\n"
        "Exec=/usr/lib/udisks2/udisksd --no-debug\n"
        "User=root\n"
        "SystemdService=udisks2.service\n"
        "AssumedAppArmorLabel=unconfined\n"
        "\n"
        "[Other Group]\n"
        "Name=ignored.name\n"
    )
    result = parse_service_file(text, "x.service", system=True)
    assert result.diagnostics == ()
    job = result.job
    assert job is not None
    assert job.name == "org.freedesktop.UDisks2"
    assert job.context.setuid == "root"
    assert job.systemd_service == "udisks2.service"
    assert job.units == ("udisks2.service",)
    main = job.main
    assert main is not None
    assert main.argv() == ["/usr/lib/udisks2/udisksd", "--no-debug"]


def test_a_system_service_user_that_does_not_exist_yet_is_a_warning() -> None:
    text = "[D-BUS Service]\nName=a.b\nExec=/bin/x\nUser=no-such-user-xyzzy\n"
    result = parse_service_file(text, "x.service", system=True)
    assert result.job is not None
    assert result.job.context.setuid == "no-such-user-xyzzy"
    assert [str(d) for d in result.diagnostics] == [
        'x.service:4: warning: no such user "no-such-user-xyzzy" (yet): the service fails to '
        "start until it exists"
    ]


def test_a_system_service_needs_a_user() -> None:
    result = parse_service_file(
        "[D-BUS Service]\nName=a.b\nExec=/bin/x\n", "x.service", system=True
    )
    assert result.job is None
    assert [str(d) for d in result.errors] == [
        "x.service: a system service needs User= (the user it runs as)"
    ]


def test_a_session_service_runs_as_the_session_user_whatever_user_says() -> None:
    text = "[D-BUS Service]\nName=a.b\nExec=/bin/x\nUser=root\n"
    result = parse_service_file(text, "x.service")
    assert result.job is not None
    assert result.job.context.setuid is None


def test_a_bad_systemd_service_is_an_error() -> None:
    text = "[D-BUS Service]\nName=a.b\nExec=/bin/x\nSystemdService=a b\n"
    result = parse_service_file(text, "x.service")
    assert result.job is None
    assert [d.line for d in result.errors] == [4]
    assert 'bad SystemdService "a b"' in result.errors[0].message


@pytest.mark.parametrize(
    ("command", "skipped"),
    [("/bin/false", True), ("/usr/bin/false", True), ("false", True), ("/bin/false --x", True),
     ("/usr/lib/polkit-1/polkitd --no-debug", False), ("/bin/sh -c 'false'", False)],
)  # fmt: skip
def test_skip_reason_names_the_placeholder(command: str, skipped: bool) -> None:
    text = (
        f"[D-BUS Service]\nName=org.freedesktop.hostname1\nExec={command}\nUser=root\n"
        "SystemdService=dbus-org.freedesktop.hostname1.service\n"
    )
    job = parse_service_file(text, "x.service", system=True).job
    assert job is not None
    reason = skip_reason(job)
    if skipped:
        assert reason == (
            f"org.freedesktop.hostname1: Exec={command}: a placeholder for a service only "
            "systemd starts (SystemdService=dbus-org.freedesktop.hostname1.service)"
        )
    else:
        assert reason is None


def test_import_lists_skipped_files_with_their_units(tmp_path: Path) -> None:
    local, share = tmp_path / "local", tmp_path / "share"
    write(local, "org.x.Host.service", "org.x.Host", "/bin/false", "root", "x-host.service")
    later = write(share, "org.x.Host.service", "org.x.Host", "/usr/bin/hostd", "root")
    write(share, "org.x.Power.service", "org.x.Power", "/usr/bin/powerd", "nobody", "p.service")
    result = import_service_dirs([local, share], system=True)
    assert sorted(result.jobs) == ["org.x.Power"]
    assert result.jobs["org.x.Power"].context.setuid == "nobody"
    assert result.jobs["org.x.Power"].units == ("p.service",)
    (skip,) = result.skipped
    assert skip.bus_name == "org.x.Host" and skip.units == ("x-host.service",)
    assert str(skip).startswith(f"{local / 'org.x.Host.service'}: skipped: org.x.Host: Exec=")
    assert [(d.path, d.severity) for d in result.diagnostics] == [(str(later), Severity.WARNING)]


def test_system_service_dirs_are_dbus_daemons_standard_ones() -> None:
    assert [str(d) for d in SYSTEM_SERVICE_DIRS] == [
        "/usr/local/share/dbus-1/system-services",
        "/usr/share/dbus-1/system-services",
        "/lib/dbus-1/system-services",
    ]


@settings(max_examples=300, deadline=None)
@given(
    st.text(
        alphabet=st.sampled_from(list("[]=#\n \tNameExcUsrSytdiv.-/a\u00e9\r\x00")), max_size=200
    )
)
def test_any_text_gives_a_job_or_diagnostics(text: str) -> None:
    for system in (False, True):
        result = parse_service_file(text, "f.service", system=system)
        assert (result.job is None) == any(d.is_error for d in result.diagnostics)
        if result.job is not None:
            skip_reason(result.job)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("[D-BUS Service]\nExec=/bin/x\n", 0, "no Name= in [D-BUS Service]"),
        ("[D-BUS Service]\nName=a.b\n", 0, "no Exec= in [D-BUS Service]"),
        ("[D-BUS Service]\nName=a.b\nExec=\n", 3, "Exec= is empty"),
        ("[D-BUS Service]\nName=nodots\nExec=/bin/x\n", 2, 'bad bus name "nodots"'),
        ("[Something]\nName=a.b\nExec=/bin/x\n", 0, "no [D-BUS Service] group"),
        ("Name=a.b\n[D-BUS Service]\nName=a.b\nExec=/x\n", 1, '"Name" is outside any [group]'),
        (
            "[D-BUS Service]\nName=a.b\nExec=/x\njunk line\n",
            4,
            'expected KEY=VALUE, not "junk line"',
        ),
        ("[D-BUS Service\nName=a.b\nExec=/x\n", 1, 'bad group header "[D-BUS Service"'),
    ],
)
def test_errors(text: str, line: int, message: str) -> None:
    result = parse_service_file(text, "x.service")
    assert result.job is None
    assert any(d.line == line and message in d.message for d in result.errors), result.errors


def test_duplicate_key_warns_and_last_wins() -> None:
    result = parse_service_file("[D-BUS Service]\nName=a.b\nExec=/1\nExec=/2\n", "x.service")
    assert result.job is not None
    assert result.job.main == ProcessSpec("/2", False, 4)
    assert [(d.line, d.severity) for d in result.diagnostics] == [(4, Severity.WARNING)]


def write(
    directory: Path, name: str, bus_name: str, command: str, user: str = "", unit: str = ""
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    text = f"[D-BUS Service]\nName={bus_name}\nExec={command}\n"
    text += f"User={user}\n" if user else ""
    text += f"SystemdService={unit}\n" if unit else ""
    path.write_text(text)
    return path


def test_import_service_dirs_first_directory_wins(tmp_path: Path) -> None:
    home, system = tmp_path / "home", tmp_path / "system"
    write(home, "org.a.A.service", "org.a.A", "/home/a")
    later = write(system, "org.a.A.service", "org.a.A", "/system/a")
    write(system, "org.b.B.service", "org.b.B", "/system/b")
    write(system, "bad.service", "bad", "/x")
    write(system, "ignored.conf", "org.c.C", "/x")
    result = import_service_dirs([home, tmp_path / "missing", system])
    assert sorted(result.jobs) == ["org.a.A", "org.b.B"]
    main = result.jobs["org.a.A"].main
    assert main is not None
    assert main.command == "/home/a"
    assert [(d.path, d.severity) for d in result.diagnostics] == [
        (str(system / "bad.service"), Severity.ERROR),
        (str(later), Severity.WARNING),
    ]


def test_xdg_service_dirs_defaults() -> None:
    assert xdg_service_dirs({"HOME": "/home/u"}) == [
        Path("/home/u/.local/share/dbus-1/services"),
        Path("/usr/local/share/dbus-1/services"),
        Path("/usr/share/dbus-1/services"),
    ]


def test_xdg_service_dirs_from_environment() -> None:
    environ = {
        "HOME": "/home/u",
        "XDG_DATA_HOME": "/data/home",
        "XDG_DATA_DIRS": "/opt/share:relative/ignored::/usr/share:/opt/share",
    }
    assert xdg_service_dirs(environ) == [
        Path("/data/home/dbus-1/services"),
        Path("/opt/share/dbus-1/services"),
        Path("/usr/share/dbus-1/services"),
    ]


def test_xdg_service_dirs_without_home() -> None:
    assert xdg_service_dirs({"XDG_DATA_DIRS": "/x"}) == [Path("/x/dbus-1/services")]


def test_busmgr_check_judges_a_system_service_file_by_its_directory(tmp_path: Path) -> None:
    from busmgr.config import check_paths

    system = tmp_path / "system-services"
    no_user = write(system, "org.x.A.service", "org.x.A", "/usr/bin/a")
    placeholder = write(system, "org.x.B.service", "org.x.B", "/bin/false", "root", "b.service")
    session = write(tmp_path / "services", "org.x.C.service", "org.x.C", "/usr/bin/c")
    assert [str(d) for d in check_paths([no_user, placeholder, session])] == [
        f"{no_user}: a system service needs User= (the user it runs as)",
        f"{placeholder}: warning: skipped: org.x.B: Exec=/bin/false: a placeholder for a "
        "service only systemd starts (SystemdService=b.service)",
    ]
