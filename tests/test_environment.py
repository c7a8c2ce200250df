"""The session's environment (busmgr.environment): layers, and what setenv / unsetenv /
SetEnvironment change. Pure: no process, no bus."""

from __future__ import annotations

import pytest

from busmgr.environment import DEFAULT_PATH, Environment
from busmgr.errors import ManagerError
from busmgr.jobclass import EnvEntry, JobClass
from busmgr.options import Mode

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
    assert env.base() == {"PATH": DEFAULT_PATH, "TERM": "linux", "LANG": "C.UTF-8"}
