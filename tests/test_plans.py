"""What ``busmgr daemon`` resolves its options into (busmgr.runtime.daemon_plan), and the
configuration busmgr writes for a bus it launches, without starting anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from busmgr.bus.launch import DbusDaemonLauncher
from busmgr.cli import main
from busmgr.options import SYSTEM_ACTIVATION_DIR, DaemonOptions, Mode
from busmgr.runtime import PlanError, daemon_plan

SYSTEM_BUS = "unix:path=/tmp/x/bus"


def test_system_mode_imports_installed_services_and_claims_systemd1_without_systemd() -> None:
    plan = daemon_plan(DaemonOptions(Mode.SYSTEM), {"DBUS_SYSTEM_BUS_ADDRESS": SYSTEM_BUS})
    assert plan.address == SYSTEM_BUS and plan.launcher is None
    assert plan.config.import_services and plan.config.claim_systemd1
    assert plan.activation_dir == SYSTEM_ACTIVATION_DIR


def test_beside_systemd_busmgr_leaves_systemd1_and_its_services_alone() -> None:
    plan = daemon_plan(DaemonOptions(Mode.SYSTEM), {}, systemd_runs=True)
    assert not plan.config.import_services and not plan.config.claim_systemd1
    asked = DaemonOptions(Mode.SYSTEM, import_dirs=(Path("/opt/services"),))
    assert daemon_plan(asked, {}, systemd_runs=True).config.import_services
    session = daemon_plan(DaemonOptions(Mode.SESSION, address=SYSTEM_BUS), {}, systemd_runs=True)
    assert not session.config.claim_systemd1  # systemd --user owns it on the user's bus


def test_launching_the_system_bus() -> None:
    opts = DaemonOptions(Mode.SYSTEM, launch_bus=True, bus_config=Path("/etc/my-bus.conf"))
    plan = daemon_plan(opts, {"DBUS_SYSTEM_BUS_ADDRESS": SYSTEM_BUS}, systemd_runs=True)
    assert plan.address is None  # the launched bus says where it listens
    assert plan.launcher == DbusDaemonLauncher(
        Mode.SYSTEM, SYSTEM_ACTIVATION_DIR, Path("/etc/my-bus.conf"), None
    )
    assert plan.config.claim_systemd1 and plan.config.import_services


def test_launching_a_users_bus_needs_its_runtime_directory() -> None:
    opts = DaemonOptions(Mode.SESSION, launch_bus=True)
    with pytest.raises(PlanError, match="needs XDG_RUNTIME_DIR"):
        daemon_plan(opts, {})
    plan = daemon_plan(opts, {"XDG_RUNTIME_DIR": "/run/user/1000"})
    assert plan.launcher == DbusDaemonLauncher(
        Mode.SESSION,
        Path("/run/user/1000/dbus-1/services"),
        None,
        "unix:path=/run/user/1000/bus",
    )


def test_launching_dbus_broker_as_the_system_bus() -> None:
    opts = DaemonOptions(Mode.SYSTEM, launch_bus=True, broker=True)
    plan = daemon_plan(opts, {"DBUS_SYSTEM_BUS_ADDRESS": SYSTEM_BUS})
    assert plan.address is None and plan.launcher is None  # the keeper launches the broker
    assert plan.broker and plan.standard_broker


@pytest.mark.parametrize(
    "argv",
    [
        ["daemon", "--address", "unix:path=/x", "--launch-bus"],
        ["daemon", "--system", "--bus-config", "/x.conf"],
        ["daemon", "--session", "--broker"],  # --broker is a bus busmgr launches
    ],
)
def test_contradictory_options_are_usage_errors(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert "busmgr daemon: error:" in capsys.readouterr().err


def test_the_configuration_of_a_launched_bus(tmp_path: Path) -> None:
    machine = tmp_path / "session.conf"
    machine.write_text("<busconfig/>\n")
    servicedir = tmp_path / "run" / "dbus-1" / "services"
    launcher = DbusDaemonLauncher(
        Mode.SESSION, servicedir, machine, f"unix:path={tmp_path / 'bus'}"
    )
    launcher._prepare(machine)
    assert servicedir.is_dir()
    text = launcher.config_file.read_text()
    assert launcher.config_file == tmp_path / "run" / "dbus-1" / "busmgr-session-bus.conf"
    # busmgr's activation files first, then the machine's configuration, unchanged.
    assert text.index(f"<servicedir>{servicedir}</servicedir>") < text.index(
        f"<include>{machine}</include>"
    )
