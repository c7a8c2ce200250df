"""``make install`` / ``make uninstall`` and the wheel (issue 11): every file where it
belongs, units that ``systemd-analyze verify`` accepts, an installed ``busmgr`` that runs from
the installed package, and the sysvinit script starting and stopping busmgr with the system
bus it launches.

One installation into a ``DESTDIR`` serves the module, for the test virtualenv's interpreter
(``PYTHON_INSTALL``: the package goes to its library directory, under ``DESTDIR``). The init
script runs for real, with ``/etc/default/busmgr`` replaced by a file that points it at the
installed ``busmgr`` and at a bus of the test's own (see :mod:`sysbus`), so nothing of the
machine's is touched.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import sys
import sysconfig
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest
import pytest_asyncio

from conftest import TIMEOUT
from sysbus import (
    REPO,
    STOCK_POLICY_DIR,
    SYSTEM_PYTHON,
    run,
    service_file,
    services_policy,
    shipped_policy,
    stock_config,
    world_dir,
)

pytestmark = pytest.mark.integration

MAKE = ["make", "--no-print-directory", "-C", str(REPO)]
PYTHONDIR = sysconfig.get_path("purelib")  # where make install puts the package, for us

FILES_UNIT = "usr/lib/systemd/system/busmgr.service"
#: Every file `make install PREFIX=/usr INIT=sysvinit` puts in place (Python files aside).
FILES = {
    "usr/bin/busmgr": 0o755,
    "usr/lib/systemd/system/busmgr.service": 0o644,
    "usr/lib/systemd/user/busmgr-session.service": 0o644,
    "usr/share/dbus-1/system.d/org.busmgr.Manager1.conf": 0o644,
    "usr/share/dbus-1/system.d/busmgr-activation.conf": 0o644,
    "usr/share/dbus-1/interfaces/org.busmgr.Manager1.xml": 0o644,
    "usr/share/doc/busmgr/README.md": 0o644,
    "etc/init.d/busmgr": 0o755,
}


def make_vars(destdir: Path, prefix: str = "/usr", init: str = "sysvinit") -> list[str]:
    return [f"DESTDIR={destdir}", f"PREFIX={prefix}", f"INIT={init}",
            f"PYTHON_INSTALL={sys.executable}"]  # fmt: skip


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def installed() -> AsyncIterator[Path]:
    top = world_dir("busmgr-install-")
    dest = top / "dest"
    rc, out, err = await run(*MAKE, "install", *make_vars(dest))
    assert rc == 0, out + err
    try:
        yield dest
    finally:
        shutil.rmtree(top, ignore_errors=True)


def site_packages(dest: Path) -> Path:
    return dest / PYTHONDIR.lstrip("/")


async def test_every_file_is_in_place(installed: Path) -> None:
    for name, mode in FILES.items():
        path = installed / name
        assert path.is_file(), name
        assert stat.S_IMODE(path.stat().st_mode) == mode, name
    assert (installed / "etc/busmgr/services.d").is_dir()
    package = REPO / "busmgr"
    modules = {p.relative_to(package) for p in package.rglob("*.py")}
    assert {p.relative_to(site_packages(installed) / "busmgr")
            for p in (site_packages(installed) / "busmgr").rglob("*.py")} == modules  # fmt: skip
    assert (installed / "usr/bin/busmgr").read_text().startswith(f"#!{sys.executable}\n")
    unit = (installed / FILES_UNIT).read_text()
    assert "ExecStart=/usr/bin/busmgr daemon --system" in unit
    assert "Delegate=yes" in unit and "KillMode=mixed" in unit
    assert (installed / "usr/share/dbus-1/interfaces/org.busmgr.Manager1.xml").read_text() == (
        REPO / "docs" / "org.busmgr.Manager1.xml"
    ).read_text()


async def test_the_installed_command_runs_from_the_installed_package(installed: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(site_packages(installed))}
    rc, out, err = await run(str(installed / "usr/bin/busmgr"), "--version", env=env)
    assert (rc, out.strip()) == (0, "busmgr 0.1.0"), err
    probe = "import busmgr, sys; sys.stdout.write(busmgr.__file__)"
    rc, out, err = await run(sys.executable, "-P", "-c", probe, env=env)  # -P: not the cwd
    assert rc == 0 and out.startswith(str(installed)), (out, err)


async def test_systemd_analyze_verify_accepts_the_units(installed: Path, tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing: .ci/system-deps installs systemd")
    # The units name /usr/bin/busmgr, which is in DESTDIR here: verify copies that name it.
    for name, scope in (
        ("usr/lib/systemd/system/busmgr.service", "--system"),
        ("usr/lib/systemd/user/busmgr-session.service", "--user"),
    ):
        unit = tmp_path / Path(name).name
        text = (installed / name).read_text()
        unit.write_text(text.replace("/usr/bin/busmgr", str(installed / "usr/bin/busmgr")))
        runtime = tmp_path / "runtime"
        runtime.mkdir(mode=0o700, exist_ok=True)
        env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}
        rc, out, err = await run("systemd-analyze", scope, "verify", "--man=no", str(unit), env=env)
        assert (rc, out, err) == (0, "", ""), (name, out, err)


async def test_make_dry_runs_put_files_where_their_prefix_says() -> None:
    rc, out, err = await run(
        *MAKE, "-n", "install", "uninstall", *make_vars(Path("/d"), "/usr/local", "openrc")
    )
    assert rc == 0, err
    assert '"/d/etc/dbus-1/system.d/$f"' in out  # dbus-daemon reads no /usr/local policy
    assert "sed 's|/usr/bin/busmgr|/usr/local/bin/busmgr|g' init/openrc/busmgr" in out
    assert '"/d/usr/local/lib/systemd/system/busmgr.service"' in out
    assert '"/d/usr/local/etc/busmgr/services.d"' in out


async def test_the_sysvinit_script_starts_and_stops_busmgr_and_its_bus(installed: Path) -> None:
    top = world_dir("busmgr-initd-")
    try:
        activation = top / "run" / "system-services"
        installed_services = top / "system-services"
        service_file(installed_services, "org.busmgr.Test.Init", "nobody")
        policy = shipped_policy(
            top / "policy", activation, ["org.busmgr.Manager1.conf", "busmgr-activation.conf"]
        )
        services_policy(policy, ["org.busmgr.Test.Init"])
        config = stock_config(
            top / "bus", [installed_services], [STOCK_POLICY_DIR, policy], top / "bus.conf"
        )
        jobs = top / "services.d"
        jobs.mkdir()
        (jobs / "clock.conf").write_text(
            f"exec {SYSTEM_PYTHON} -c 'import time; time.sleep(1e6)'\n"
        )
        pidfile = top / "busmgr.pid"
        options = (
            f"--bus-config {config} --activation-dir {activation} --state-dir {top / 'state'} "
            f"--services-dir {jobs} --import-dir {installed_services}"
        )
        daemon = installed / "usr/bin/busmgr"
        (top / "default").write_text(
            f'DAEMON="{daemon}"\nPIDFILE="{pidfile}"\nBUSMGR_OPTS="{options}"\n'
        )
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("DBUS_")},
            "BUSMGR_DEFAULTS": str(top / "default"),
            "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={top / 'bus'}",
        }
        script = str(installed / "etc/init.d/busmgr")
        rc, out, err = await run("sh", script, "start", env=env)
        assert rc == 0, out + err
        pid = int(pidfile.read_text())
        children = psutil.Process(pid).children()
        assert [p.name() for p in children] == ["dbus-daemon"]
        rc, out, _err = await run("sh", script, "status", env=env)
        assert (rc, out.strip()) == (0, f"busmgr is running (pid {pid})")
        command = str(installed / "usr/bin/busmgr")
        rc, out, err = await run(command, "activate", "--system", "org.busmgr.Test.Init", env=env)
        assert rc == 0 and "start/running" in out, err
        left = psutil.Process(pid).children(recursive=True)
        rc, out, err = await run("sh", script, "stop", env=env)
        assert rc == 0, out + err
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        assert not [p for p in left if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert not pidfile.exists()
        rc, out, _err = await run("sh", script, "status", env=env)
        assert (rc, out.strip()) == (3, "busmgr is not running")
    finally:
        shutil.rmtree(top, ignore_errors=True)


async def test_the_wheel_carries_the_same_files_as_data(tmp_path: Path) -> None:
    rc, out, err = await run(
        sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
        "--wheel-dir", str(tmp_path), str(REPO),
    )  # fmt: skip
    assert rc == 0, out + err
    (wheel,) = tmp_path.glob("busmgr-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    data = "busmgr-0.1.0.data/data/"
    for name in (
        "share/dbus-1/interfaces/org.busmgr.Manager1.xml",
        "share/dbus-1/system.d/org.busmgr.Manager1.conf",
        "share/dbus-1/system.d/busmgr-activation.conf",
        "lib/systemd/system/busmgr.service",
        "lib/systemd/user/busmgr-session.service",
        "share/busmgr/init/openrc/busmgr",
        "share/busmgr/init/sysvinit/busmgr",
        "share/doc/busmgr/README.md",
    ):
        assert data + name in names, name
    entry_points = zipfile.ZipFile(wheel).read("busmgr-0.1.0.dist-info/entry_points.txt")
    assert b"busmgr = busmgr.cli:entry" in entry_points


async def test_uninstall_removes_every_file(installed: Path) -> None:
    rc, out, err = await asyncio.wait_for(run(*MAKE, "uninstall", *make_vars(installed)), TIMEOUT)
    assert rc == 0, out + err
    assert [str(p.relative_to(installed)) for p in installed.rglob("*") if not p.is_dir()] == []
