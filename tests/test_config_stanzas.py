"""Every stanza of SPEC section 2, good and bad, through the whole parser."""

from __future__ import annotations

import grp
import os
import pwd
import random
import resource
import signal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from busmgr.config import Severity, parse_job, parse_job_file
from busmgr.config.stanzas import STANZAS, oom_adj_to_score, unit_name_problem
from busmgr.jobclass import (
    ConsoleMode,
    EnvEntry,
    EventArg,
    EventMatch,
    EventOp,
    ExpectMode,
    JobClass,
    Limit,
    ProcessKind,
    ProcessSpec,
    RespawnPolicy,
    SocketKind,
    SocketSpec,
    parse_signal,
)

USER = pwd.getpwuid(os.getuid()).pw_name
GROUP = grp.getgrgid(os.getgid()).gr_name
PATH = "services.d/j.conf"


def parse(text: str) -> Any:
    return parse_job(text, name="j", path=PATH)


def job_of(text: str) -> JobClass:
    result = parse(text)
    assert result.errors == (), [str(d) for d in result.diagnostics]
    assert result.job is not None
    return result.job


def attr(job: JobClass, dotted: str) -> Any:
    value: Any = job
    for part in dotted.split("."):
        value = value[ProcessKind(part)] if isinstance(value, dict) else getattr(value, part)
    return value


GOOD: list[tuple[str, str, Any]] = [
    # processes
    ("exec /bin/foo --bar", "main", ProcessSpec("/bin/foo --bar", False, 1)),
    ('exec /bin/sh -c "echo $HOME" # c', "main", ProcessSpec('/bin/sh -c "echo $HOME"', False, 1)),
    ("script\n  echo hi\nend script", "main", ProcessSpec("echo hi\n", True, 1)),
    ("pre-start exec /bin/a", "processes.pre-start", ProcessSpec("/bin/a", False, 1)),
    ("post-start exec /bin/b x", "processes.post-start", ProcessSpec("/bin/b x", False, 1)),
    ("pre-stop script\n  x\nend script", "processes.pre-stop", ProcessSpec("x\n", True, 1)),
    ("post-stop script\nend script", "processes.post-stop", ProcessSpec("", True, 1)),
    # kind
    ("task", "task", True),
    ("manual", "manual", True),
    # triggers
    ("start on startup", "start_on", EventMatch("startup")),
    ("\n\nstart on startup", "start_on_line", 3),
    ("stop on a or b", "stop_on", EventOp("or", EventMatch("a"), EventMatch("b"))),
    ("\nstop on a", "stop_on_line", 2),
    ("start on runlevel [2345]", "start_on", EventMatch("runlevel", (EventArg("[2345]"),))),
    ("emits foo bar-*", "emits", ("foo", "bar-*")),
    ("emits a b\nemits b c", "emits", ("a", "b", "c")),
    ("dbus org.example.Echo", "dbus_name", "org.example.Echo"),
    # The bus of Upstart's two-word form is accepted and not kept (JobClass.dbus_bus was
    # unused); a dbus job is activated by the dbus-activation event of its name.
    (
        "dbus org.example.Echo",
        "activated_by",
        (EventMatch("dbus-activation", (EventArg("org.example.Echo", key="NAME"),)),),
    ),
    ("dbus system-bus org.freedesktop.UDisks", "dbus_name", "org.freedesktop.UDisks"),
    # more in test_triggers_config.py
    (
        "socket unix /run/a.sock 0600",
        "sockets",
        (SocketSpec(SocketKind.UNIX, path="/run/a.sock", mode=0o600, line=1),),
    ),
    ("dbus session-bus a_b.c-d._e", "dbus_name", "a_b.c-d._e"),
    ("dbus a.b\nunit upower.service", "units", ("upower.service",)),
    (
        "dbus a.b\nunit a.service dbus-org.x.service\nunit a.service b@i.service",
        "units",
        ("a.service", "dbus-org.x.service", "b@i.service"),
    ),
    ("instance $TTY", "instance", "$TTY"),
    ('instance "${JOB}-$N"', "instance", "${JOB}-$N"),
    # readiness
    *[(f"expect {m.value}", "expect", m) for m in ExpectMode],
    ("ready timeout 30", "ready_timeout", 30.0),
    ("ready timeout 0.5", "ready_timeout", 0.5),
    # lifetime
    ("respawn", "respawn", RespawnPolicy(enabled=True)),
    ("respawn limit 3 60", "respawn", RespawnPolicy(limit=3, interval=60.0)),
    ("respawn\nrespawn limit 0 5", "respawn", RespawnPolicy(enabled=True, limit=0, interval=5.0)),
    ("respawn limit unlimited", "respawn", RespawnPolicy(limit=0, interval=0.0)),
    ("respawn limit 5 0", "respawn", RespawnPolicy(limit=0, interval=0.0)),
    ("respawn delay 2.5", "respawn.delay", 2.5),
    ("normal exit 0 1 TERM SIGHUP", "normal_exit_codes", frozenset({0, 1})),
    (
        "normal exit 0 1 TERM SIGHUP",
        "normal_exit_signals",
        frozenset({signal.SIGTERM, signal.SIGHUP}),
    ),
    ("normal exit 2\nnormal exit 3 abrt", "normal_exit_codes", frozenset({2, 3})),
    ("normal exit 2\nnormal exit 3 abrt", "normal_exit_signals", frozenset({signal.SIGABRT})),
    ("kill signal INT", "kill_signal", signal.SIGINT),
    ("kill signal SIGKILL", "kill_signal", signal.SIGKILL),
    ("kill signal 9", "kill_signal", signal.SIGKILL),
    ("kill timeout 30", "kill_timeout", 30.0),
    ("kill timeout 0", "kill_timeout", 0.0),
    ("reload signal USR1", "reload_signal", signal.SIGUSR1),
    ("reload signal SIGUSR2", "reload_signal", signal.SIGUSR2),
    # Upstart accepts numbers, and 0 (a reload that only checks the main process is there)
    ("reload signal 0", "reload_signal", 0),
    ("reload signal 10", "reload_signal", signal.SIGUSR1),
    ("reload signal 40", "reload_signal", 40),
    ("kill signal 64", "kill_signal", 64),
    ("kill signal RTMIN+2", "kill_signal", signal.SIGRTMIN + 2),
    ("reload signal SIGRTMAX-1", "reload_signal", signal.SIGRTMAX - 1),
    # environment and credentials
    ("env FOO=bar", "env", (EnvEntry("FOO", "bar"),)),
    ('env FOO=""', "env", (EnvEntry("FOO", ""),)),
    ("env FOO=", "env", (EnvEntry("FOO", ""),)),
    ('env FOO="a b=c"', "env", (EnvEntry("FOO", "a b=c"),)),
    ("env 'FOO=x y'", "env", (EnvEntry("FOO", "x y"),)),
    ("env HOME", "env", (EnvEntry("HOME", None),)),
    ("env A=1\nenv A=2", "env", (EnvEntry("A", "1"), EnvEntry("A", "2"))),
    ("export IFACE\nexport A B IFACE", "export", ("IFACE", "A", "B")),
    (f"setuid {USER}", "context.setuid", USER),
    (f"setgid {GROUP}", "context.setgid", GROUP),
    (f"setuid {os.getuid()}", "context.setuid", str(os.getuid())),
    # a user the package creates when it is installed: a warning, the job loads
    ("setuid no-such-user-xyzzy", "context.setuid", "no-such-user-xyzzy"),
    ("setgid no-such-group-xyzzy", "context.setgid", "no-such-group-xyzzy"),
    ("chdir /var/lib/x", "context.chdir", "/var/lib/x"),
    ('chdir "/with space"', "context.chdir", "/with space"),
    ("chroot /srv/root", "context.chroot", "/srv/root"),
    ("umask 022", "context.umask", 0o022),
    ("umask 0777", "context.umask", 0o777),
    ("umask 7", "context.umask", 0o7),
    ("nice 10", "context.nice", 10),
    ("nice -20", "context.nice", -20),
    ("nice 19", "context.nice", 19),
    ("ionice idle", "context.ionice", (3, 0)),
    ("ionice best-effort", "context.ionice", (2, 4)),
    ("ionice best-effort:7", "context.ionice", (2, 7)),
    ("ionice realtime:0", "context.ionice", (1, 0)),
    ("ionice 2:3", "context.ionice", (2, 3)),
    ("limit nofile 1024 4096", "context.limits", (Limit(resource.RLIMIT_NOFILE, 1024, 4096),)),
    (
        "limit core unlimited unlimited",
        "context.limits",
        (Limit(resource.RLIMIT_CORE, None, None),),
    ),
    ("limit stack 8192 unlimited", "context.limits", (Limit(resource.RLIMIT_STACK, 8192, None),)),
    (
        "limit nofile 1 2\nlimit nofile 3 4",
        "context.limits",
        (Limit(resource.RLIMIT_NOFILE, 3, 4),),
    ),
    ("oom score 500", "context.oom_score", 500),
    ("oom score -1000", "context.oom_score", -1000),
    ("oom score never", "context.oom_score", -1000),
    ("oom never", "context.oom_score", -1000),
    ("oom -17", "context.oom_score", -1000),
    ("oom 15", "context.oom_score", 1000),
    ("oom 10", "context.oom_score", 588),
    ("oom -5", "context.oom_score", -294),
    ("proc name echo-service", "proc_name", "echo-service"),
    ("proc name 123456789012345", "proc_name", "123456789012345"),
    ("caps keep cap_net_bind_service", "context.caps_keep", ("cap_net_bind_service",)),
    (
        "caps keep CAP_NET_RAW net_admin Cap_Kill\ncaps keep kill sys_nice",
        "context.caps_keep",
        ("cap_net_raw", "cap_net_admin", "cap_kill", "cap_sys_nice"),
    ),
    ("console none", "context.console", ConsoleMode.NONE),
    ("console log", "context.console", ConsoleMode.LOG),
    ("console output", "context.console", ConsoleMode.OUTPUT),
    ("console owner", "context.console", ConsoleMode.OUTPUT),
    # metadata
    ('description "Example echo service"', "description", "Example echo service"),
    ("description single-word", "description", "single-word"),
    ("author 'A. Person <a@example.org>'", "author", "A. Person <a@example.org>"),
    ('version "1.0"', "version", "1.0"),
    ('usage "start j X=1"', "usage", "start j X=1"),
]


@pytest.mark.parametrize(("text", "path", "expected"), GOOD, ids=[g[0] for g in GOOD])
def test_good_stanza(text: str, path: str, expected: Any) -> None:
    assert attr(job_of(text + "\n"), path) == expected


LIMIT_NAMES = [
    "as", "core", "cpu", "data", "fsize", "memlock", "msgqueue", "nice",
    "nofile", "nproc", "rss", "rtprio", "sigpending", "stack", "rttime",
]  # fmt: skip


@pytest.mark.parametrize("name", LIMIT_NAMES)
def test_every_upstart_limit_resource(name: str) -> None:
    job = job_of(f"limit {name} 1 2\n")
    assert job.context.limits == (Limit(getattr(resource, "RLIMIT_" + name.upper()), 1, 2),)


def test_defaults_without_stanzas() -> None:
    job = job_of("")
    assert job.name == "j"
    assert job.source == PATH
    assert job.processes == {}
    assert job.respawn == RespawnPolicy()
    assert job.kill_signal == signal.SIGTERM
    assert job.reload_signal == signal.SIGHUP
    assert job.context.needs_child_setup is False


BAD: list[tuple[str, str]] = [
    # unknown stanzas and sub-keywords
    ("respwan", 'unknown stanza "respwan" (did you mean "respawn"?)'),
    ("frobnicate 1", 'unknown stanza "frobnicate"'),
    ("respawn limt 1 2", 'unknown argument "limt" to "respawn" (did you mean "limit"?)'),
    ("normal exti 0", 'unknown argument "exti" to "normal" (did you mean "exit"?)'),
    ("normal", '"normal" needs one of "exit"'),
    ("kill 9", 'unknown argument "9" to "kill" (expected "signal" or "timeout")'),
    # processes
    ("exec", '"exec" needs a command to run'),
    ("exec /a\nexec /b", 'second main process: "exec" here, but "exec" on line 1'),
    ("script\nend script\nexec /b", 'second main process: "exec" here, but "script" on line 1'),
    ("exec /a\nscript\nend script", 'second main process: "script" here, but "exec" on line 1'),
    ("pre-start exec /a\npre-start exec /b", 'duplicate "pre-start" process: already defined'),
    ("post-stop script\nend script\npost-stop exec /b", 'duplicate "post-stop" process'),
    ("pre-start /bin/a", 'unknown argument "/bin/a" to "pre-start"'),
    ("pre-stop", '"pre-stop" needs one of "exec" or "script"'),
    ("post-start exec", '"post-start exec" needs a command to run'),
    ("script foo\nend script", 'unexpected "foo" after "script"'),
    # kind
    ("task now", 'unexpected "now" after "task"'),
    ("manual 1", 'unexpected "1" after "manual"'),
    # triggers
    ("start startup", 'expected "on" after "start", not "startup"'),
    ("stop", 'expected "on" after "stop"'),
    ("start on", '"start on" needs an event expression'),
    ("start on a and", 'bad "start on" expression: expected an event after "and"'),
    ("stop on (a or b", 'unclosed "(" in the "stop on" expression'),
    ("stop on a b=1 c", 'bad "stop on" expression: positional argument "c"'),
    ("emits", '"emits" is incomplete'),
    ("dbus", '"dbus" is incomplete'),
    ("socket udp 127.0.0.1:53", 'unknown socket kind "udp"'),
    ("dbus Echo", 'bad bus name "Echo": a bus name has at least two elements'),
    ("dbus org..Echo", 'bad bus name "org..Echo": a bus name cannot have empty elements'),
    ("dbus .org.Echo", "cannot have empty elements"),
    ("dbus org.2fast.Echo", 'element "2fast" starts with a digit'),
    ("dbus org.ex$ample.Echo", 'element "ex$ample" has characters other than'),
    ("dbus :1.42", "a unique name"),
    ("unit", '"unit" is incomplete'),
    ("unit upower", 'bad unit name "upower": a bus daemon only asks for services (did you mean'),
    ("unit up.socket", 'bad unit name "up.socket": a bus daemon only asks for services'),
    ("unit 'a b.service'", 'bad unit name "a b.service": a unit name is made of'),
    ("unit " + "x" * 250 + ".service", "a unit name has at most 255 characters"),
    ("dbus org." + "a" * 260, "at most 255 characters"),
    ("dbus system-bus", 'bad bus name "system-bus"'),
    ("dbus systembus org.a.B", 'unknown bus "systembus" in "dbus" (did you mean "system-bus"?)'),
    ("dbus session-bus org.a.B extra", 'unexpected "extra"'),
    ("instance", '"instance" is incomplete'),
    ("instance $A $B", 'unexpected "$B" after "instance $A"'),
    # readiness
    ("expect forks", 'unknown argument "forks" to "expect" (did you mean "fork"?)'),
    ("expect", '"expect" needs one of'),
    ("expect fork daemon", 'unexpected "daemon" after "expect fork"'),
    ("ready 30", 'unknown argument "30" to "ready"'),
    ("ready timeout soon", 'bad ready timeout "soon": not a number of seconds'),
    ("ready timeout 0", 'bad ready timeout "0": must be more than 0'),
    ("ready timeout -1", 'bad ready timeout "-1"'),
    # lifetime
    ("respawn limit 10", '"respawn limit 10" is incomplete'),
    ("respawn limit ten 5", 'bad respawn limit COUNT "ten": not an integer'),
    ("respawn limit -1 5", 'bad respawn limit COUNT "-1": must be from 0'),
    ("respawn limit 10 5s", 'bad respawn limit INTERVAL "5s"'),
    ("respawn limit 10 5 junk", 'unexpected "junk" after "respawn limit 10 5"'),
    ("respawn limit unlimited 5", 'unexpected "5" after "respawn limit unlimited"'),
    ("respawn delay", '"respawn delay" is incomplete'),
    ("respawn delay x", 'bad respawn delay "x"'),
    ("normal exit", '"normal exit" is incomplete'),
    ("normal exit 256", 'bad exit status "256": must be from 0 to 255'),
    ("normal exit FOO", 'bad "normal exit" value "FOO": not an exit status'),
    ("normal exit -1", 'bad "normal exit" value "-1"'),
    ("kill signal FOO", 'unknown signal "FOO" in "kill signal"'),
    ("kill signal 0", 'unknown signal "0" in "kill signal"'),
    ("kill signal", '"kill signal" is incomplete'),
    ("kill timeout -5", 'bad kill timeout "-5"'),
    ("kill timeout 5 6", 'unexpected "6" after "kill timeout 5"'),
    ("reload signal SIGNOPE", 'unknown signal "SIGNOPE" in "reload signal"'),
    ("reload HUP", 'unknown argument "HUP" to "reload" (expected "signal")'),
    # environment and credentials
    ("env", '"env" is incomplete'),
    ("env FOO=a b", 'unexpected "b" after "env FOO=a"'),
    ("env 1FOO=x", 'bad variable name "1FOO" in "env"'),
    ("env =x", 'bad variable name "" in "env"'),
    ("export", '"export" is incomplete'),
    ("export A-B", 'bad variable name "A-B" in "export"'),
    ("setuid 4294967295", 'setuid: bad user "4294967295"'),
    ("setuid a:b", 'setuid: bad user "a:b"'),
    ("setgid 99999999999", 'setgid: bad group "99999999999"'),
    ("kill signal 65", 'unknown signal "65" in "kill signal"'),
    ("kill signal RTMAX+1", 'unknown signal "RTMAX+1" in "kill signal"'),
    ("reload signal -1", 'unknown signal "-1" in "reload signal"'),
    ("reload signal 00000", 'unknown signal "00000" in "reload signal"'),
    ("setuid", '"setuid" is incomplete'),
    ("chdir", '"chdir" is incomplete'),
    ('chdir ""', '"chdir" needs a directory'),
    ("chroot /a /b", 'unexpected "/b"'),
    ("umask 999", 'bad umask "999": expected an octal mask'),
    ("umask 1777", 'bad umask "1777"'),
    ("umask u=rwx", 'bad umask "u=rwx"'),
    ("nice 20", 'bad nice value "20": must be from -20 to 19'),
    ("nice -21", 'bad nice value "-21"'),
    ("nice high", 'bad nice value "high": not an integer'),
    ("ionice besteffort", 'unknown ionice class "besteffort" (did you mean "best-effort"?)'),
    ("ionice turbo", 'unknown ionice class "turbo" (expected idle, best-effort or realtime)'),
    ("ionice best-effort:8", 'bad ionice level "8": must be from 0 to 7'),
    ("ionice realtime:", 'bad ionice level "": not an integer'),
    ("ionice idle:3", 'ionice class "idle" takes no level'),
    ("ionice 4", 'bad ionice class "4": must be from 0 to 3'),
    ("limit nofiles 1 2", 'unknown resource "nofiles" in "limit" (did you mean "nofile"?)'),
    ("limit nofile 1", '"limit nofile 1" is incomplete'),
    ("limit nofile 1 2 3", 'unexpected "3"'),
    ("limit nofile lots 2", 'bad soft limit for nofile "lots"'),
    ("limit nofile 1 -2", 'bad hard limit for nofile "-2"'),
    ("limit nofile 10 5", "soft limit 10 for nofile exceeds hard limit 5"),
    ("limit nofile unlimited 5", "soft limit unlimited for nofile exceeds hard limit 5"),
    ("oom score 1001", 'bad oom score "1001": must be from -1000 to 1000'),
    ("oom score always", 'bad oom score "always": not an integer'),
    ("oom 16", 'bad oom adjustment "16": must be from -17 to 15'),
    ("oom", '"oom" is incomplete'),
    ("proc name", '"proc name" is incomplete'),
    ("proc nmae x", 'unknown argument "nmae" to "proc" (did you mean "name"?)'),
    ("proc name 1234567890123456", 'process name "1234567890123456": 1 to 15 bytes (it has 16)'),
    ("proc name ééééééééé", "(it has 18)"),
    ("caps keep", '"caps keep" is incomplete'),
    ("caps drop cap_kill", 'unknown argument "drop" to "caps" (expected "keep")'),
    (
        "caps keep cap_net_bind_servce",
        'unknown capability "cap_net_bind_servce" in "caps keep" '
        '(did you mean "cap_net_bind_service"?)',
    ),
    ("caps keep NET_BIND", 'unknown capability "NET_BIND"'),
    ("console loud", 'unknown argument "loud" to "console"'),
    ("console log now", 'unexpected "now" after "console log"'),
    # metadata
    ("description Example service", 'unexpected "service" after "description Example"'),
    ("author", '"author" is incomplete'),
    ("version", '"version" is incomplete'),
    ("usage", '"usage" is incomplete'),
]  # fmt: skip


@pytest.mark.parametrize(("text", "message"), BAD, ids=[b[0][:40] for b in BAD])
def test_bad_stanza(text: str, message: str) -> None:
    result = parse(text + "\n")
    assert result.job is None
    assert any(message in d.message for d in result.errors), [str(d) for d in result.diagnostics]


def test_every_keyword_of_the_table_is_tested() -> None:
    tested = {t.split()[0] for t, _, _ in GOOD} | {t.split()[0] for t, _ in BAD}
    tested |= {"apparmor", "cgroup", "tmpfiles"}  # tested below, as warnings
    assert set(STANZAS) <= tested


def test_error_format_names_path_and_line() -> None:
    result = parse_job(
        "task\n\n# c\n\nrespawn\n\nrespwan\n", name="foo", path="services.d/foo.conf"
    )
    assert [str(d) for d in result.diagnostics] == [
        'services.d/foo.conf:7: unknown stanza "respwan" (did you mean "respawn"?)'
    ]


def test_all_errors_of_a_file_are_collected() -> None:
    text = "nice 99\nexec /bin/a\nrespwan\nkill signal NOPE\nexec /bin/b\nstart on (\n"
    result = parse(text)
    assert result.job is None
    assert [d.line for d in result.errors] == [1, 3, 4, 5, 6]


def test_a_rejected_stanza_leaves_no_trace_but_the_error() -> None:
    result = parse("limit nofile 10 5\n")
    assert result.job is None
    assert len(result.diagnostics) == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("apparmor load /etc/apparmor.d/usr.sbin.cupsd", '"apparmor" is not supported by busmgr'),
        ("apparmor switch /usr/bin/foo", '"apparmor" is not supported by busmgr'),
        ("cgroup memory mem-$JOB", '"cgroup" is not supported by busmgr'),
        ("tmpfiles /usr/lib/tmpfiles.d/shill.conf", '"tmpfiles" is not supported by busmgr'),
        ("setuid no-such-user-xyzzy", 'setuid: no such user "no-such-user-xyzzy" (yet)'),
        ("setuid 4000000000", 'setuid: no such user "4000000000" (yet)'),
        ("setgid no-such-group-xyzzy", 'setgid: no such group "no-such-group-xyzzy" (yet)'),
        ("unit a.service", '"unit" without "dbus NAME"'),
        ("console owner", '"console owner" is not supported by busmgr; using "console output"'),
        ("nice 1\nnice 2", '"nice" given again (first on line 1); the last one wins'),
        ("start on a\nstart on b", '"start on" given again (first on line 1)'),
        ("chdir var/lib", 'relative path "var/lib" in "chdir" is taken from "/"'),
    ],
)
def test_warnings_do_not_reject_the_job(text: str, message: str) -> None:
    result = parse(text + "\n")
    assert result.job is not None
    assert result.errors == ()
    assert any(message in str(d) and d.severity is Severity.WARNING for d in result.diagnostics)


def test_last_single_valued_stanza_wins() -> None:
    job = job_of("nice 1\nnice 2\nstart on a\nstart on b\n")
    assert job.context.nice == 2
    assert job.start_on == EventMatch("b")
    assert job.start_on_line == 4


def test_relative_chdir_is_made_absolute() -> None:
    assert job_of("chdir var/lib\n").context.chdir == "/var/lib"


def test_oom_adj_conversion_matches_the_kernel() -> None:
    assert [oom_adj_to_score(a) for a in (-17, -16, 0, 1, 14, 15)] == [
        -1000,
        -941,
        0,
        58,
        823,
        1000,
    ]


@pytest.mark.parametrize("name", ["", "a/b", "/abs", ".hidden"])
def test_bad_job_names(name: str) -> None:
    result = parse_job("task\n", name=name, path="x.conf")
    assert result.job is None
    assert result.errors[0].line == 0


def test_parse_job_file_names_the_job_after_the_file(tmp_path: Path) -> None:
    path = tmp_path / "echo-service.conf"
    path.write_text("exec /bin/echo\n")
    result = parse_job_file(path)
    assert result.job is not None
    assert result.job.name == "echo-service"
    assert result.job.source == str(path)


def test_parse_job_file_unreadable_and_bad_utf8(tmp_path: Path) -> None:
    missing = parse_job_file(tmp_path / "nope.conf")
    assert missing.job is None
    assert str(missing.diagnostics[0]).startswith(f"{tmp_path / 'nope.conf'}: cannot read:")
    bad = tmp_path / "bad.conf"
    bad.write_bytes(b"task\n\ndescription \xff\n")
    result = parse_job_file(bad)
    assert result.job is None
    assert (result.diagnostics[0].line, result.diagnostics[0].message) == (
        3,
        "not valid UTF-8 text",
    )


UPSTART_CUPS = """\
# cups - CUPS Printing spooler and server
#
# This service maintains a CUPS printing daemon.

description\t"CUPS printing spooler/server"
author\t\t"Michael Sweet <msweet@apple.com>"

start on (filesystem
          and (started dbus or runlevel [2345]))   # wait for the bus
stop on runlevel [016]

respawn
respawn limit 0 5
expect fork
kill timeout 10
normal exit 0 TERM SIGHUP

env FOO=""
env LANG="en_US.UTF-8"
env CUPSD_OPTS=
export LANG

console owner
umask 022
nice -5
oom score -500
limit nofile 4096 8192
limit core unlimited unlimited

apparmor load /etc/apparmor.d/usr.sbin.cupsd

pre-start script
\t[ -x /usr/sbin/cupsd ] || { stop; exit 0; }
\tmkdir -p -m 0755 /var/run/cups/certs
\tif [ -x /lib/init/apparmor-profile-load ]; then
\t    /lib/init/apparmor-profile-load usr.sbin.cupsd
\tfi
end script

exec /usr/sbin/cupsd -F $CUPSD_OPTS \\
    -c /etc/cups/cupsd.conf

post-start script
    # wait for the socket
    while [ ! -S /var/run/cups/cups.sock ]; do sleep 1; done
end script
"""


def test_real_upstart_job_file_loads_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "cups.conf"
    path.write_text(UPSTART_CUPS)
    result = parse_job_file(path)
    assert result.errors == (), [str(d) for d in result.diagnostics]
    assert [(d.line, d.severity) for d in result.diagnostics] == [
        (23, Severity.WARNING),  # console owner
        (30, Severity.WARNING),  # apparmor
    ]
    job = result.job
    assert job is not None
    assert job.name == "cups"
    assert job.description == "CUPS printing spooler/server"
    assert job.author == "Michael Sweet <msweet@apple.com>"
    assert str(job.start_on) == "filesystem and (started dbus or runlevel [2345])"
    assert job.start_on_line == 8
    assert job.stop_on == EventMatch("runlevel", (EventArg("[016]"),))
    assert job.respawn == RespawnPolicy(enabled=True, limit=0, interval=5.0)
    assert job.expect is ExpectMode.FORK
    assert job.kill_timeout == 10.0
    assert job.normal_exit_codes == frozenset({0})
    assert job.normal_exit_signals == frozenset({signal.SIGTERM, signal.SIGHUP})
    assert job.env == (
        EnvEntry("FOO", ""),
        EnvEntry("LANG", "en_US.UTF-8"),
        EnvEntry("CUPSD_OPTS", ""),
    )
    assert job.export == ("LANG",)
    assert job.context.console is ConsoleMode.OUTPUT
    assert (job.context.umask, job.context.nice, job.context.oom_score) == (0o22, -5, -500)
    assert job.context.limits == (
        Limit(resource.RLIMIT_NOFILE, 4096, 8192),
        Limit(resource.RLIMIT_CORE, None, None),
    )
    main = job.processes[ProcessKind.MAIN]
    assert main == ProcessSpec("/usr/sbin/cupsd -F $CUPSD_OPTS -c /etc/cups/cupsd.conf", False, 40)
    assert main.needs_shell
    pre_start = job.processes[ProcessKind.PRE_START]
    assert pre_start.script
    assert pre_start.command.startswith("[ -x /usr/sbin/cupsd ] || { stop; exit 0; }\n")
    assert "\n    /lib/init/apparmor-profile-load usr.sbin.cupsd\n" in pre_start.command
    assert job.processes[ProcessKind.POST_START].command.startswith("# wait for the socket\n")


def test_stray_end_script() -> None:
    result = parse("exec /bin/a\nend script\n")
    assert [(d.line, d.message) for d in result.errors] == [
        (2, '"end script" without a block to end')
    ]


FUZZ_ALPHABET = [
    *" \t\n\"'\\#()=!$*:.-_abcxyz019",
    *(keyword + " " for keyword in STANZAS),
    *("on ", "and ", "or ", "script\n", "end script\n", "unlimited ", "limit "),
]


def test_parser_never_raises_on_garbage() -> None:
    rng = random.Random(20240601)
    for _ in range(3000):
        text = "".join(rng.choice(FUZZ_ALPHABET) for _ in range(rng.randint(0, 50)))
        result = parse(text)
        assert (result.job is None) == bool(result.errors)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_any_signal_or_unit_text_is_a_value_or_a_clear_refusal(text: str) -> None:
    signum = parse_signal(text)
    assert signum is None or signum in signal.valid_signals()
    problem = unit_name_problem(text)
    assert problem is None or problem
    result = parse(f"dbus a.b\nunit {text!r}\nreload signal {text!r}\nsetuid {text!r}\n")
    assert (result.job is None) == bool(result.errors)
