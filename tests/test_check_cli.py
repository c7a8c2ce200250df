"""``busmgr check DIR`` as users run it: a subprocess, its exit status and its stderr."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest


def check(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "busmgr", "check", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / f"{name}.conf"
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


@pytest.fixture
def services(tmp_path: Path) -> Path:
    directory = tmp_path / "services.d"
    directory.mkdir()
    return directory


def test_blocking_cycle_is_an_error_with_file_and_line(services: Path) -> None:
    write(services, "portmap", "start on starting nfs-server\nexec sleep 1000\n")
    nfs = write(
        services,
        "nfs-server",
        """
        description "waits for portmap, which waits for it"
        # the stanza that closes the cycle
        stop on stopping portmap
        exec sleep 1000
        """,
    )
    done = check(services)
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    assert (
        f"{nfs}:3: blocking cycle: nfs-server waits for portmap waits for nfs-server"
        in done.stderr.splitlines()
    )


def test_warnings_only_exit_zero(services: Path) -> None:
    hal = write(services, "hal", "start on started dbus\nstop on stopping dbus\nexec sleep 1\n")
    write(services, "dbus", "exec sleep 1\n")
    getty = write(services, "getty", "instance $TTY\nstart on tty-added\nexec sleep 1\n")
    done = check(services)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert lines == [
        f'{getty}:2: warning: event "tty-added" in "start on" is not emitted by any job '
        '(no "emits" lists it) nor by busmgr'
    ]
    assert str(hal) not in done.stderr  # job events are busmgr's own


def test_emits_silences_the_warning(services: Path) -> None:
    write(services, "getty", "start on tty-added\nstop on tty-removed TTY=$TTY\nexec sleep 1\n")
    write(services, "udev-bridge", "emits tty-*\nexec sleep 1\n")
    done = check(services)
    assert (done.returncode, done.stderr) == (0, "")


def test_error_and_warning_together_exit_one(services: Path) -> None:
    write(services, "a", "start on stopping b\n")
    write(services, "b", "start on stopping a\nstop on never-emitted\n")
    done = check(services / "a.conf", services / "b.conf")
    assert done.returncode == 1
    assert "blocking cycle: a waits for b waits for a" in done.stderr
    assert 'warning: event "never-emitted" in "stop on"' in done.stderr


def test_hostile_files_are_file_line_errors_and_the_good_file_loads(services: Path) -> None:
    # Found by fuzzing: these files made `busmgr check` print a traceback (RecursionError,
    # ValueError) or run for minutes. Now each is one FILE:LINE error.
    write(services, "good", "exec sleep 1000\n")
    (services / "nested.conf").write_text("start on " + "(" * 500 + "a" + ")" * 500 + "\n")
    (services / "ands.conf").write_text("start on " + " and ".join(["e"] * 1000) + "\n")
    (services / "digits.conf").write_text("respawn\nrespawn limit ² 5\nnice " + "9" * 5000 + "\n")
    (services / "huge.conf").write_text("env A=b\n" * 200000)
    result = check(services)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert f"{services}/nested.conf:1: " in result.stderr
    assert f"{services}/ands.conf:1: " in result.stderr
    assert f"{services}/digits.conf:2: " in result.stderr
    assert f"{services}/digits.conf:3: " in result.stderr
    assert f"{services}/huge.conf: larger than 1024 KiB: not read" in lines
    assert not any("good.conf" in line for line in lines)
