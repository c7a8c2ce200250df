"""Importing D-Bus activation (.service) files as jobs."""

from __future__ import annotations

from pathlib import Path

import pytest

from busmgr.config import (
    Severity,
    import_service_dirs,
    parse_service_file,
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
    result = parse_service_file(text, "x.service")
    assert result.diagnostics == ()
    job = result.job
    assert job is not None
    assert job.name == "org.freedesktop.UDisks2"
    assert job.context.setuid == "root"
    assert job.systemd_service == "udisks2.service"
    main = job.main
    assert main is not None
    assert main.argv() == ["/usr/lib/udisks2/udisksd", "--no-debug"]


def test_user_is_stored_even_if_unknown() -> None:
    text = "[D-BUS Service]\nName=a.b\nExec=/bin/x\nUser=no-such-user-xyzzy\n"
    job = parse_service_file(text, "x.service").job
    assert job is not None
    assert job.context.setuid == "no-such-user-xyzzy"


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


def write(directory: Path, name: str, bus_name: str, command: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(f"[D-BUS Service]\nName={bus_name}\nExec={command}\n")
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
