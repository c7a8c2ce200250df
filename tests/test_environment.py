"""The session's environment (busmgr.environment): layers, and what setenv / unsetenv /
SetEnvironment change; what a system service gets. Pure: no process, no bus."""

from __future__ import annotations

import pytest

from busmgr.environment import DEFAULT_PATH, Environment, unsafe_variable
from busmgr.errors import ManagerError
from busmgr.jobclass import EnvEntry, JobClass
from busmgr.options import Mode

ADDRESS = "unix:path=/run/dbus/system_bus_socket"
SERVICE = JobClass(name="upower", dbus_name="org.freedesktop.UPower")
PLAIN = JobClass(name="cron")


ENVIRON = {"HOME": "/home/u", "DISPLAY": ":0", "BUSMGR_ADDRESS": "unix:path=/x", "PATH": "/bin"}


def session() -> Environment:
    env = Environment(Mode.SESSION, ENVIRON)
    env.bus_address = "unix:path=/run/bus"
    return env


def test_the_base_of_a_session() -> None:
    assert session().base() == {
        "HOME": "/home/u",
        "DISPLAY": ":0",
        "PATH": "/bin",
        "DBUS_SESSION_BUS_ADDRESS": "unix:path=/run/bus",
    }


def test_set_and_unset_reach_the_base_and_jobs() -> None:
    env = session()
    env.set("FOO", "one two")
    env.remove("DISPLAY")  # a variable of the manager's own environment
    env.remove("NEVER_SET")  # unsetting what is not set is no error
    base = env.base()
    assert base["FOO"] == "one two" and "DISPLAY" not in base and "NEVER_SET" not in base
    job = JobClass(name="j", env=(EnvEntry("DISPLAY", None), EnvEntry("X", "$FOO")))
    # `env DISPLAY` still copies from the manager's own environment, which never changes
    assert env.job_env(job)["DISPLAY"] == ":0"
    assert env.job_env(job)["X"] == "one two"
    env.set("DISPLAY", ":1")
    assert env.base()["DISPLAY"] == ":1"
    env.remove("FOO")
    assert "FOO" not in env.base()
    assert ENVIRON["DISPLAY"] == ":0"


def test_set_environment_and_unset_environment() -> None:
    env = session()
    env.update_activation(["A=1", "bad name=x", "NOEQUALS", "B=x=y"], ["HOME"])
    base = env.base()
    assert (base["A"], base["B"]) == ("1", "x=y") and "HOME" not in base
    assert "NOEQUALS" not in base and "bad name" not in base
    env.update_activation(["HOME=/elsewhere"], [])
    assert env.base()["HOME"] == "/elsewhere"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("A B", "x", "invalid variable name 'A B'"),
        ("", "x", "invalid variable name ''"),
        ("A=B", "x", "invalid variable name 'A=B'"),
        ("A", "x\0y", "the value of A contains a NUL character"),
    ],
)
def test_bad_input_is_refused(key: str, value: str, message: str) -> None:
    env = session()
    with pytest.raises(ManagerError) as refused:
        env.set(key, value)
    assert refused.value.name == "InvalidArgs" and message in refused.value.message
    assert env.base() == session().base()


def test_remove_refuses_a_bad_name() -> None:
    with pytest.raises(ManagerError, match="invalid variable name"):
        session().remove("1X")


def test_system_mode_base() -> None:
    env = Environment(Mode.SYSTEM, ENVIRON)
    env.set("LANG", "C.UTF-8")
    env.remove("PATH")  # system mode's fixed base stays
    assert env.base() == {"PATH": DEFAULT_PATH, "TERM": "linux"}
    assert env.base(SERVICE) == {"PATH": DEFAULT_PATH, "TERM": "linux", "LANG": "C.UTF-8"}


def system() -> Environment:
    env = Environment(Mode.SYSTEM, {"TERM": "xterm", "HOME": "/root", "LD_PRELOAD": "x.so"})
    env.bus_address = ADDRESS
    return env


def test_system_jobs_start_from_path_term_and_the_bus() -> None:
    assert system().job_env(PLAIN) == {
        "PATH": DEFAULT_PATH,
        "TERM": "xterm",
        "DBUS_SYSTEM_BUS_ADDRESS": ADDRESS,
    }


def test_a_system_service_gets_the_starter_variables_as_dbus_daemon_sets_them() -> None:
    env = system().job_env(SERVICE)
    assert env["DBUS_STARTER_ADDRESS"] == ADDRESS
    assert env["DBUS_STARTER_BUS_TYPE"] == "system"
    assert env["DBUS_SYSTEM_BUS_ADDRESS"] == ADDRESS


def test_a_session_service_gets_the_session_equivalents() -> None:
    env = Environment(Mode.SESSION, {"HOME": "/home/u", "DBUS_STARTER_ADDRESS": "stale"})
    env.bus_address = "unix:path=/run/user/1000/bus"
    got = env.job_env(SERVICE)
    assert got["DBUS_SESSION_BUS_ADDRESS"] == got["DBUS_STARTER_ADDRESS"] == env.bus_address
    assert got["DBUS_STARTER_BUS_TYPE"] == "session"
    assert "DBUS_STARTER_ADDRESS" not in env.job_env(PLAIN)  # the manager's own is private


def test_the_activation_environment_reaches_only_bus_services_in_system_mode() -> None:
    env = system()
    assert env.update_activation(["LANG=de_DE.UTF-8"], []) == []
    assert env.job_env(SERVICE)["LANG"] == "de_DE.UTF-8"
    assert "LANG" not in env.job_env(PLAIN)


def test_the_activation_environment_reaches_every_job_in_session_mode() -> None:
    env = Environment(Mode.SESSION, {})
    env.update_activation(["LANG=C"], [])
    assert env.job_env(PLAIN)["LANG"] == "C"


def test_what_nobody_vouches_for_never_sets_loader_variables_in_system_mode() -> None:
    env = system()
    refused = env.update_activation(
        ["PATH=/tmp", "LD_PRELOAD=/tmp/x.so", "PYTHONPATH=/tmp", "DBUS_SYSTEM_BUS_ADDRESS=x",
         "LANG=C", "not-an-assignment", "1BAD=x"],
        [],
        vouched=False,
    )  # fmt: skip
    assert refused == ["PATH", "LD_PRELOAD", "PYTHONPATH", "DBUS_SYSTEM_BUS_ADDRESS"]
    got = env.job_env(SERVICE)
    assert got["PATH"] == DEFAULT_PATH and got["LANG"] == "C"
    assert "LD_PRELOAD" not in got and "PYTHONPATH" not in got
    assert got["DBUS_SYSTEM_BUS_ADDRESS"] == ADDRESS


def test_root_may_set_anything_directly() -> None:
    env = system()
    assert env.update_activation(["PATH=/opt/bin"], [], vouched=True) == []
    assert env.job_env(SERVICE)["PATH"] == "/opt/bin"
    env.update_activation([], ["PATH"])
    assert env.job_env(SERVICE)["PATH"] == DEFAULT_PATH


def test_session_mode_takes_what_the_bus_forwards() -> None:
    env = Environment(Mode.SESSION, {})
    assert env.update_activation(["PATH=/opt/bin"], [], vouched=False) == []
    assert env.job_env(PLAIN)["PATH"] == "/opt/bin"


def test_the_layers_after_the_base_win() -> None:
    env = system()
    cls = JobClass(
        name="j", dbus_name="a.b", env=(EnvEntry("TERM", "dumb"), EnvEntry("HOME", None))
    )
    got = env.job_env(cls, {"EVENT": "1"}, {"TERM": "vt100"})
    assert got["TERM"] == "vt100" and got["HOME"] == "/root" and got["EVENT"] == "1"


@pytest.mark.parametrize(
    ("name", "unsafe"),
    [("PATH", True), ("LD_LIBRARY_PATH", True), ("LD_AUDIT", True), ("GCONV_PATH", True),
     ("BASH_ENV", True), ("PERL5LIB", True), ("GIO_EXTRA_MODULES", True), ("XDG_DATA_DIRS", True),
     ("DBUS_SESSION_BUS_ADDRESS", True), ("LANG", False), ("LC_ALL", False), ("TZ", False),
     ("http_proxy", False), ("DISPLAY", False)],
)  # fmt: skip
def test_unsafe_variables(name: str, unsafe: bool) -> None:
    assert unsafe_variable(name) is unsafe
