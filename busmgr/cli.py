"""The ``busmgr`` command line: one argparse tree for every verb, and the dispatch to them.

This module is the declarative parser (:func:`build_parser`, :func:`parse_args`: the verbs,
their options, help texts and examples, the argument types), :func:`main` and :func:`entry`.
What a verb does is in :mod:`busmgr.verbs`, one module per kind of verb; the parser names each
verb's function (:class:`_Verb`) and imports its module only when that verb runs, so that
``busmgr --help`` or a usage error imports none of them. Three kinds of verb share the tree:

* client verbs (``list``, ``status``, ``start``, ``log``, ``plot``...) connect to a running
  manager (:mod:`busmgr.verbs.connection`) and make the calls SPEC §3 fixes, through
  :class:`busmgr.bus.client.ManagerClient`; those marked ``light`` run over the blocking
  transport without asyncio or dbus-fast;
* ``check`` parses job files offline with the daemon's own parser (:mod:`busmgr.config`), and
  so does ``graph PATH...``;
* ``session`` and ``daemon`` parse their options into :mod:`busmgr.options` dataclasses and hand
  over to :mod:`busmgr.runtime` (:mod:`busmgr.verbs.serve`), imported only then.

Exit statuses are those of :mod:`busmgr.verbs` (SPEC §1); a usage error exits 2.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from busmgr import __version__
from busmgr.bus.client import BusSelectionError, resolve_address
from busmgr.options import DEFAULT_PHASE_TIMEOUT, desktop_name_problem
from busmgr.verbs import (
    EXIT_BROKEN_PIPE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    PROG,
)

_VARIABLE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class _Verb:
    """A verb's function, ``busmgr.verbs.MODULE.NAME``, imported when the verb runs.

    The parser names every verb's function; a command imports only the module of the one it
    runs (``busmgr list``: :mod:`busmgr.verbs.show`), and ``--help`` none.
    """

    __slots__ = ("module", "name")

    def __init__(self, module: str, name: str) -> None:
        self.module = f"busmgr.verbs.{module}"
        self.name = name

    def resolve(self) -> Callable[..., Any]:
        """The function itself (its module imported now)."""
        return getattr(__import__(self.module, fromlist=[self.name]), self.name)

    def __call__(self, *args: Any) -> Any:
        return self.resolve()(*args)

    def __repr__(self) -> str:
        return f"<verb {self.module}.{self.name}>"


# ---------------------------------------------------------------------------------------------
# Argument parsing


def parse_assignment(text: str) -> tuple[str, str]:
    """argparse type for ``KEY=VALUE``: KEY must be a variable name; VALUE may be empty."""
    key, sep, value = text.partition("=")
    if not sep or not _VARIABLE_RE.match(key):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not KEY=VALUE with KEY a variable name ([A-Za-z_][A-Za-z0-9_]*)"
        )
    return key, value


def parse_setenv(text: str) -> tuple[str, str]:
    """argparse type for ``setenv``: ``KEY=VALUE``, or a bare ``KEY`` whose value is taken from
    busmgr's own environment (as ``dbus-update-activation-environment`` does)."""
    if "=" in text:
        return parse_assignment(text)
    if not _VARIABLE_RE.match(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not KEY=VALUE or KEY with KEY a variable name ([A-Za-z_][A-Za-z0-9_]*)"
        )
    value = os.environ.get(text)
    if value is None:
        raise argparse.ArgumentTypeError(f"{text} is not set here: give {text}=VALUE")
    return text, value


def parse_variable(text: str) -> str:
    """argparse type for a variable name (``unsetenv``, ``getenv``)."""
    if not _VARIABLE_RE.match(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a variable name ([A-Za-z_][A-Za-z0-9_]*)"
        )
    return text


def parse_desktop(text: str) -> str:
    """argparse type for ``--desktop``: a value for ``$XDG_CURRENT_DESKTOP``."""
    problem = desktop_name_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text


def parse_seconds(text: str) -> float:
    """argparse type for a positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not (0 < value < float("inf")):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def _size(text: str) -> int:
    """argparse type for ``--log-size``: ``65536``, ``64K``, ``1M``."""
    from busmgr.logsink import parse_size

    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _count(text: str) -> int:
    """argparse type for a count: a whole number, 0 or more."""
    if not text.isascii() or not text.isdigit():
        raise argparse.ArgumentTypeError(f'"{text}" is not a whole number')
    return int(text)


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the descriptions' and epilogs' line breaks (the examples), wraps the options."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)


_BUS_HELP = """\
bus: --address, --session or --system; else $BUSMGR_ADDRESS, else $DBUS_SESSION_BUS_ADDRESS
($DBUS_SYSTEM_BUS_ADDRESS overrides the system bus address)."""


def _bus_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("bus selection")
    exclusive = group.add_mutually_exclusive_group()
    exclusive.add_argument(
        "--address", metavar="ADDR", help="the D-Bus address of the manager's bus"
    )
    exclusive.add_argument("--session", action="store_true", help="the session bus")
    exclusive.add_argument(
        "--system", action="store_true", help="the system bus (the system manager)"
    )
    return parent


def _add_env(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "env",
        nargs="*",
        type=parse_assignment,
        default=[],
        metavar="KEY=VALUE",
        help=what,
    )


def _add_no_wait(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--no-wait", action="store_true", help=what)


def _add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def _add_selector(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "selector",
        nargs="*",
        default=[],
        metavar="INSTANCE|KEY=VALUE",
        help="the instance, by name or by the KEY=VALUE pairs that select it (as for start)",
    )


def _name(what: str) -> Callable[[str], str]:
    """argparse type for a job or event name: not empty, no control characters."""

    def check(text: str) -> str:
        if not text:
            raise argparse.ArgumentTypeError(f"the {what} name is empty")
        if not text.isprintable():
            raise argparse.ArgumentTypeError(f"the {what} name {text!r} has control characters")
        return text

    check.__name__ = f"{what} name"
    return check


_BUS_NAME_RE = re.compile(r"[A-Za-z_-][A-Za-z0-9_-]*(\.[A-Za-z_-][A-Za-z0-9_-]*)+\Z")


def _bus_name(text: str) -> str:
    """argparse type for a well-known bus name (``org.example.Echo``)."""
    if not text:
        raise argparse.ArgumentTypeError("the bus name is empty")
    if len(text) > 255 or not _BUS_NAME_RE.match(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a well-known bus name (like org.example.Name: two or more "
            "elements of letters, digits, _ and -, not starting with a digit)"
        )
    return text


def build_parser() -> argparse.ArgumentParser:
    """The whole ``busmgr`` argument tree; each verb sets ``run`` (and ``kind``) as defaults."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        formatter_class=_Formatter,
        description=(
            "busmgr: a D-Bus activated service manager (Upstart's job model, with bus-name\n"
            "readiness). The verbs below control a running manager over D-Bus, check job files,\n"
            "or run the manager itself."
        ),
        epilog=f"""\
examples:
  busmgr session --services-dir ./services.d --print-address
  busmgr list
  busmgr start hello && busmgr status hello
  busmgr start getty TTY=tty1
  busmgr emit desktop-start DISPLAY=:0
  busmgr events --follow
  busmgr log -f hello
  busmgr graph -o jobs.svg && busmgr plot -o startup.svg
  busmgr check ./services.d

{_BUS_HELP}
exit status: 0 ok, 1 the operation failed (error reply, job failed, no bus), 2 usage error,
3 (status) the job is not running. "busmgr VERB --help" describes each verb.""",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    bus = [_bus_options()]

    def verb(
        name: str,
        summary: str,
        description: str,
        epilog: str,
        parents: list[argparse.ArgumentParser] | None = None,
        usage: str | None = None,
    ) -> argparse.ArgumentParser:
        return verbs.add_parser(
            name,
            usage=usage,
            help=summary,
            description=description,
            epilog=epilog,
            formatter_class=_Formatter,
            parents=parents or [],
        )

    p = verb(
        "list",
        "list every job instance",
        "List every job instance of the running manager as an aligned table: job, instance,\n"
        "goal/state, main PID, bus name, the file the job came from, and the result of its\n"
        "last run (ok, or failed with a short reason). A job that has no instance now is\n"
        "listed once, stop/waiting. --json prints the same as a JSON array of objects.",
        "examples:\n  busmgr list --address unix:path=/run/user/1000/busmgr/bus\n"
        "  busmgr list --json | jq -r '.[] | select(.result == \"failed\") | .job'",
        bus,
    )
    _add_json(p)
    p.set_defaults(run=_Verb("show", "run_list"), kind="client", light=True)

    p = verb(
        "status",
        "show whether jobs are running, and why not",
        "Without JOB, one line per instance, as Upstart does (with the reason of a failure):\n"
        "  hello start/running, process 1234\n"
        "  getty (tty1) start/running, process 15001\n"
        "  flapper stop/waiting, failed: respawned too fast (10 in 5s), last: main exited ...\n"
        "With JOB, each of its instances (or the one INSTANCE or KEY=VALUE... selects, as\n"
        "`start` does) in detail, as `systemctl status`: goal and state since when, uptime,\n"
        "the process tree, the last result and its reason, the bus name, the job file, the log\n"
        "file and its last lines. --json prints every property instead. Exits 0 if an\n"
        "instance shown is running, 3 if none is, 1 if the job or instance does not exist.",
        "examples:\n  busmgr status hello\n  busmgr status getty tty1\n"
        "  busmgr status getty TTY=tty1\n"
        "  busmgr status hello >/dev/null || busmgr start hello",
        bus,
    )
    p.add_argument("job", nargs="?", metavar="JOB", help="the job (default: all jobs)")
    _add_selector(p)
    p.add_argument(
        "-n",
        "--lines",
        type=_count,
        default=10,
        metavar="N",
        help="log lines to show (default 10)",
    )
    _add_json(p)
    p.set_defaults(run=_Verb("show", "run_status"), kind="client", light=True)

    instance_note = (
        "KEY=VALUE pairs are added to the job's environment and select the instance of an\n"
        "`instance` job. With --no-wait, return as soon as the manager has the request."
    )
    for name, summary, description in (
        (
            "start",
            "start a job",
            "Start JOB (StartJob) and wait until it is running (a service) or has run (a task),\n"
            "then print its status line; exit 1 with the reason if it failed. A job with\n"
            "`respawn` is watched for half a second more: one that fails at once and reaches\n"
            "its respawn limit is reported as failed, with the reason.",
        ),
        (
            "stop",
            "stop a job",
            "Stop JOB (StopJob) and wait until it has stopped; exit 1 with the reason if that\n"
            "failed. Prints the status line of a job that has no `instance` stanza.",
        ),
        (
            "restart",
            "restart a job",
            "Restart JOB (RestartJob): stop it, start it again, and wait as start does, then\n"
            "print its status line; exit 1 with the reason if it failed.",
        ),
    ):
        p = verb(
            name,
            summary,
            f"{description}\n{instance_note}",
            f"examples:\n  busmgr {name} hello\n  busmgr {name} getty TTY=tty1\n"
            f"  busmgr {name} --no-wait hello",
            bus,
        )
        p.add_argument("job", type=_name("job"), metavar="JOB", help="the job")
        _add_env(p, "environment for the job; selects the instance")
        _add_no_wait(p, "return once the manager accepted the request, without waiting")
        p.set_defaults(run=_Verb("control", f"run_{name}"), kind="client", light=True)

    p = verb(
        "reload",
        "send a job its reload signal",
        "Send the instance's `reload signal` (default HUP) to its main process.",
        "examples:\n  busmgr reload hello\n  busmgr reload getty TTY=tty1",
        bus,
    )
    p.add_argument("job", type=_name("job"), metavar="JOB", help="the job")
    _add_env(p, "selects the instance of an `instance` job")
    p.set_defaults(run=_Verb("control", "run_reload"), kind="client", light=True)

    p = verb(
        "reload-configuration",
        "reread the job files",
        "Make the manager reread its job directories. Running jobs keep running; a changed\n"
        "job takes its new definition when it next starts. Each error in a job file is\n"
        "printed as FILE:LINE: message (that job keeps its previous definition) and the exit\n"
        "status is 1.",
        "example:\n  busmgr reload-configuration",
        bus,
    )
    p.set_defaults(run=_Verb("control", "run_reload_configuration"), kind="client", light=True)

    p = verb(
        "reexec",
        "re-execute the manager, keeping every job",
        "Make the manager save its state and execute itself again (a newer version, if one was\n"
        "installed): every job keeps running with its processes, and stays supervised. The\n"
        "manager waits (up to 10 s) until no job is between states; if one still is, it\n"
        "refuses (Busy) and nothing changes.",
        "example:\n  busmgr reexec",
        bus,
    )
    p.set_defaults(run=_Verb("control", "run_reexec"), kind="client")

    p = verb(
        "emit",
        "emit an event",
        "Emit EVENT with its variables: jobs whose `start on` or `stop on` match it start or\n"
        "stop. Waits until every job it started or stopped has finished doing so.",
        "examples:\n  busmgr emit desktop-start DISPLAY=:0\n"
        "  busmgr emit --no-wait interface-up IFACE=eth0",
        bus,
    )
    p.add_argument("event", type=_name("event"), metavar="EVENT", help="the event's name")
    _add_env(p, "the event's variables")
    _add_no_wait(p, "return once the event is queued")
    p.set_defaults(run=_Verb("control", "run_emit"), kind="client", light=True)

    p = verb(
        "activate",
        "start the job that provides a bus name",
        "Start the job whose `dbus` stanza names BUS_NAME (what a D-Bus activation does) and\n"
        "wait until the name has an owner; prints the instance's status line.",
        "example:\n  busmgr activate org.example.Echo",
        bus,
    )
    p.add_argument("bus_name", type=_bus_name, metavar="BUS_NAME", help="a well-known bus name")
    p.set_defaults(run=_Verb("control", "run_activate"), kind="client", light=True)

    p = verb(
        "events",
        "show job states and follow events",
        "Print the state of every job instance, one line each, as KEY=VALUE fields:\n"
        "  JOB=hello INSTANCE= GOAL=start STATE=running PID=1234\n"
        "With --follow, then print one line per event as it happens, until interrupted:\n"
        "  started JOB=hello INSTANCE=\n"
        "  stopped JOB=hello INSTANCE= RESULT=failed PROCESS=main EXIT_STATUS=1\n"
        "  desktop-start DISPLAY=:0\n"
        "An event line starts with the event's name; a state line has none (its first word\n"
        "contains '='). Values are shell-quoted. With --follow the subscription is made before\n"
        "the states are read, so no event after them is missed; it ends quietly when its\n"
        "reader goes away, and with status 1 when the manager leaves the bus (and is not back\n"
        "within 2 seconds, as after a re-exec) or the bus goes away. --json prints one JSON\n"
        'object per line: {"type": "state", ...} or {"type": "event", "event": ..., "env": ...}.',
        "examples:\n  busmgr events\n  busmgr events --follow | grep --line-buffered '^stopped '",
        bus,
    )
    p.add_argument(
        "-f", "--follow", action="store_true", help="keep printing events as they happen"
    )
    _add_json(p)
    p.set_defaults(run=_Verb("follow", "run_events"), kind="client", light=True)

    p = verb(
        "log",
        "show a job's output",
        "Print the last lines of the log of JOB (or of the instance INSTANCE or KEY=VALUE...\n"
        "selects), across rotated files; with -f, then follow it as it grows (and rotates),\n"
        "until interrupted. Logs are per instance, under the manager's log directory\n"
        "($XDG_STATE_HOME/busmgr/log by default, /var/log/busmgr in system mode): JOB.log, or\n"
        "JOB/INSTANCE.log with '%', '/' and control characters of INSTANCE as %xx.",
        "examples:\n  busmgr log hello\n  busmgr log getty tty1 -n 50\n  busmgr log -f hello",
        bus,
    )
    p.add_argument("job", type=_name("job"), metavar="JOB", help="the job")
    _add_selector(p)
    p.add_argument(
        "-n", "--lines", type=_count, default=10, metavar="N", help="lines to show (default 10)"
    )
    p.add_argument("-f", "--follow", action="store_true", help="follow the log as it grows")
    p.set_defaults(run=_Verb("follow", "run_log"), kind="client", light=True)

    p = verb(
        "graph",
        "draw jobs and the events that tie them",
        "Write the jobs and the events that tie them as a Graphviz DOT graph: a box per job,\n"
        "an ellipse per event; edges for start on (green), stop on (red, dashed), emits\n"
        "(dotted) and D-Bus activation (gray). From the job files at PATH (files or\n"
        "directories, offline), else from the running manager. With -o FILE.svg (or .png,\n"
        ".pdf), render it with Graphviz's `dot`; -o FILE.dot writes the DOT text.",
        "examples:\n  busmgr graph ./services.d -o jobs.svg\n  busmgr graph | dot -Tpng > jobs.png",
        bus,
    )
    p.add_argument("paths", nargs="*", metavar="PATH", help="job files or directories")
    p.add_argument("-o", "--output", type=Path, metavar="FILE", help="write to FILE")
    p.set_defaults(
        run=_Verb("pictures", "run_graph"),
        run_offline=_Verb("pictures", "run_graph_offline"),
        kind="graph",
        light=True,
    )

    p = verb(
        "plot",
        "draw the start-up as a timeline",
        "Draw the running manager's start-up as an SVG timeline: one bar per job instance from\n"
        "starting to ready (running, or finished for a task), coloured by the state it is in\n"
        "now, a red cross for each failure, the time it took beside it. Without -o, the SVG\n"
        "goes to stdout.",
        "example:\n  busmgr plot -o startup.svg",
        bus,
    )
    p.add_argument("-o", "--output", type=Path, metavar="FILE", help="write the SVG to FILE")
    p.set_defaults(run=_Verb("pictures", "run_plot"), kind="client", light=True)

    env_note = (
        "The session's environment is what every job started from now on gets (before its own\n"
        "env stanzas): the manager's environment at start, updated by these verbs, by\n"
        "SetEnvironment and by dbus-update-activation-environment. Running jobs keep theirs."
    )
    p = verb(
        "setenv",
        "set variables of the session's environment",
        "Set each KEY=VALUE in the session's environment (Upstart's set-env). A bare KEY takes\n"
        f"its value from busmgr's own environment.\n{env_note}",
        "examples:\n  busmgr setenv GTK_THEME=Adwaita:dark\n  busmgr setenv DISPLAY XAUTHORITY",
        bus,
    )
    p.add_argument(
        "assignments", nargs="+", type=parse_setenv, metavar="KEY[=VALUE]", help="variables"
    )
    p.set_defaults(run=_Verb("control", "run_setenv"), kind="client")

    p = verb(
        "unsetenv",
        "remove variables from the session's environment",
        "Remove each KEY from the session's environment (Upstart's unset-env); a KEY that is\n"
        f"not set is no error.\n{env_note}",
        "example:\n  busmgr unsetenv GTK_THEME",
        bus,
    )
    p.add_argument("keys", nargs="+", type=parse_variable, metavar="KEY", help="variables")
    p.set_defaults(run=_Verb("control", "run_unsetenv"), kind="client")

    p = verb(
        "getenv",
        "show the session's environment",
        "Print the value of KEY in the session's environment (exit 1 if it is not set), or\n"
        f"without KEY every variable as KEY=VALUE, sorted (Upstart's get-env and list-env).\n"
        f"{env_note}",
        "examples:\n  busmgr getenv DISPLAY\n  busmgr getenv | grep ^XDG_",
        bus,
    )
    p.add_argument("key", nargs="?", type=parse_variable, metavar="KEY", help="a variable")
    p.set_defaults(run=_Verb("control", "run_getenv"), kind="client")

    p = verb(
        "end-session",
        "end the session",
        "End the session (EndSession): the manager emits desktop-end and waits for what it\n"
        "starts or stops, then stops every job in reverse start order (each within its kill\n"
        "timeout), then the bus, and exits 0. Waits until the manager is gone.",
        "examples:\n  busmgr end-session\n  busmgr end-session --no-wait",
        bus,
    )
    _add_no_wait(p, "return once the manager accepted the request")
    p.set_defaults(run=_Verb("control", "run_end_session"), kind="client")

    p = verb(
        "check",
        "check job files offline",
        "Parse job files with the manager's own parser, without a manager or a bus, and print\n"
        "each problem as PATH:LINE: message on stderr. Exits 1 if any is an error (warnings\n"
        "alone exit 0). PATH may be a file or a directory (its *.conf job files and *.desktop\n"
        "autostart entries, judged for $XDG_CURRENT_DESKTOP); without PATH, the default\n"
        "session job directory ($XDG_CONFIG_HOME/busmgr/services.d).",
        "examples:\n  busmgr check ./services.d\n  busmgr check /etc/busmgr/services.d/hello.conf\n"
        "  busmgr check /etc/xdg/autostart ~/.config/autostart",
    )
    p.add_argument("paths", nargs="*", metavar="PATH", help="job files or directories")
    p.set_defaults(run=_Verb("check", "run_check"), kind="offline")

    manager_options = argparse.ArgumentParser(add_help=False)
    group = manager_options.add_argument_group("manager options")
    group.add_argument(
        "--services-dir",
        dest="services_dirs",
        action="append",
        type=Path,
        default=[],
        metavar="DIR",
        help="a job directory (repeatable; default: $XDG_CONFIG_HOME/busmgr/services.d, "
        "system mode /etc/busmgr/services.d)",
    )
    group.add_argument(
        "--no-import",
        action="store_true",
        help="do not import the installed D-Bus activation files "
        "($XDG_DATA_DIRS/dbus-1/services; system mode dbus-1/system-services)",
    )
    group.add_argument(
        "--import-dir",
        dest="import_dirs",
        action="append",
        type=Path,
        default=[],
        metavar="DIR",
        help="import the D-Bus activation files of DIR (repeatable; default: "
        "$XDG_DATA_DIRS/dbus-1/services, system mode dbus-daemon's system-services directories)",
    )
    group.add_argument("--pidfile", type=Path, metavar="PATH", help="write the manager's pid here")
    group.add_argument(
        "--state-dir",
        type=Path,
        metavar="DIR",
        help="where the manager keeps what survives its restart "
        "(default: $XDG_STATE_HOME/busmgr, system mode /var/lib/busmgr)",
    )
    group.add_argument(
        "--log-dir",
        type=Path,
        metavar="DIR",
        help="where job logs go (default: log/ in the state directory, that is "
        "$XDG_STATE_HOME/busmgr/log; system mode /var/log/busmgr)",
    )
    group.add_argument(
        "--log-size",
        type=_size,
        metavar="SIZE",
        help="rotate a job's log when it reaches SIZE bytes (K, M, G suffixes; default 1M)",
    )
    group.add_argument(
        "--log-keep",
        type=_count,
        metavar="N",
        help="rotated log files kept per job instance (default 5)",
    )

    p = verb(
        "session",
        "run a private bus with the manager on it",
        "Start a private dbus-daemon, run the manager on it, emit `startup` and run jobs.\n"
        "Jobs get DBUS_SESSION_BUS_ADDRESS. With -- COMMAND, run COMMAND in the session, as\n"
        "dbus-run-session does: when it exits, stop every job and the bus, and exit with\n"
        "COMMAND's status.\n"
        "With --desktop NAME, a desktop session: XDG_CURRENT_DESKTOP=NAME, the XDG autostart\n"
        "entries ($XDG_CONFIG_HOME/autostart, then $XDG_CONFIG_DIRS/autostart) become jobs\n"
        "named autostart-ID, and after `startup` the manager emits desktop-start, then\n"
        "desktop-phase PHASE=Initialization, WindowManager, Panel, Desktop and Applications,\n"
        "each once the services of the one before are ready (or after --phase-timeout).\n"
        "`busmgr end-session` ends it.",
        "examples:\n  busmgr session --services-dir ./services.d --print-address\n"
        "  busmgr session --no-import -- pytest -q tests/\n"
        "  busmgr session --address-file /tmp/busmgr.address &\n"
        "  busmgr session --desktop XFCE --address-file $XDG_RUNTIME_DIR/busmgr.address",
        [manager_options],
        usage="%(prog)s [OPTIONS] [-- COMMAND [ARGS...]]",
    )
    p.add_argument(
        "--desktop",
        type=parse_desktop,
        metavar="NAME",
        help="a desktop session: XDG_CURRENT_DESKTOP=NAME, autostart entries, phases",
    )
    p.add_argument(
        "--phase-timeout",
        type=parse_seconds,
        metavar="SECONDS",
        help="how long a desktop phase waits for the services of the one before it "
        f"(default {DEFAULT_PHASE_TIMEOUT:g})",
    )
    p.add_argument(
        "--print-address",
        action="store_true",
        help="print the bus address as the first line of stdout once the manager is ready",
    )
    p.add_argument(
        "--address-file",
        type=Path,
        metavar="PATH",
        help="write the bus address to PATH once the manager is ready",
    )
    p.add_argument(
        "--broker",
        action="store_true",
        help="the private bus is dbus-broker, with busmgr as its launcher (no systemd needed)",
    )
    p.add_argument(
        "command",
        nargs="*",
        metavar="COMMAND",
        help="a command to run in the session; the session ends with it",
    )
    p.set_defaults(run=_Verb("serve", "run_session"), kind="manager")

    p = verb(
        "daemon",
        "run the manager on an existing bus",
        "Run the manager in the foreground on an existing bus, owning org.busmgr.Manager1.\n"
        "--system is system mode: the caller uid checks and the job file ownership checks,\n"
        "and the installed system services (dbus-1/system-services) run as jobs.\n"
        "With --launch-bus the manager starts the bus itself (dbus-daemon, with the machine's\n"
        "own configuration) as its supervised child and is its activator: for machines\n"
        "without systemd.",
        "examples:\n  busmgr daemon --session --services-dir ~/.config/busmgr/services.d\n"
        "  busmgr daemon --system --pidfile /run/busmgr.pid\n"
        "  busmgr daemon --system --launch-bus --pidfile /run/busmgr.pid\n"
        "  busmgr daemon --session --launch-bus --broker",
        [manager_options],
    )
    launch = p.add_argument_group("launching the bus")
    launch.add_argument(
        "--launch-bus",
        action="store_true",
        help="start the bus (dbus-daemon) as the manager's child and be its activator",
    )
    launch.add_argument(
        "--broker",
        action="store_true",
        help="with --launch-bus: the bus is dbus-broker, with busmgr as its launcher",
    )
    launch.add_argument(
        "--bus-config",
        type=Path,
        metavar="FILE",
        help="the launched bus's configuration (default: /usr/share/dbus-1/system.conf, "
        "or session.conf)",
    )
    p.add_argument(
        "--activation-dir",
        type=Path,
        metavar="DIR",
        help="where the D-Bus activation files of the jobs go (default: system mode "
        "/run/busmgr/system-services, session $XDG_RUNTIME_DIR/dbus-1/services)",
    )
    p.add_argument(
        "--print-address",
        action="store_true",
        help="print the bus address as the first line of stdout once the manager is ready",
    )
    p.add_argument(
        "--address-file",
        type=Path,
        metavar="PATH",
        help="write the bus address to PATH once the manager is ready",
    )
    which = p.add_argument_group("bus (one is required)").add_mutually_exclusive_group(
        required=True
    )
    which.add_argument(
        "--session", dest="bus", action="store_const", const="session", help="the session bus"
    )
    which.add_argument(
        "--system",
        dest="bus",
        action="store_const",
        const="system",
        help="the system bus, in system mode ($DBUS_SYSTEM_BUS_ADDRESS overrides the address)",
    )
    which.add_argument("--address", metavar="ADDR", help="the bus at this D-Bus address")
    p.set_defaults(run=_Verb("serve", "run_daemon"), kind="manager")

    parser.set_defaults(verb_parsers=verbs.choices)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse argv (default ``sys.argv[1:]``) or exit 2 (``SystemExit``) with a usage error.

    ``KEY=VALUE`` pairs may also follow an option (``start hello --no-wait A=1``), which plain
    argparse refuses. Client verbs get ``bus_address``, the resolved bus to connect to.
    """
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    verb_parser: argparse.ArgumentParser = args.verb_parsers[args.verb]
    if extras:
        if any(e.startswith("-") for e in extras) or not (
            hasattr(args, "env") or hasattr(args, "selector")
        ):
            verb_parser.error(f"unrecognized arguments: {' '.join(extras)}")
        if hasattr(args, "selector"):
            args.selector.extend(extras)
        else:
            for extra in extras:
                try:
                    args.env.append(parse_assignment(extra))
                except argparse.ArgumentTypeError as e:
                    verb_parser.error(f"argument KEY=VALUE: {e}")
    if hasattr(args, "selector"):
        args.instance, args.env = _split_selector(args.selector, verb_parser)
    if args.kind in ("client", "graph"):
        try:
            args.bus_address = resolve_address(args.address, args.session, args.system, os.environ)
        except BusSelectionError as e:
            verb_parser.error(str(e))
    if args.verb == "session" and args.phase_timeout is not None and args.desktop is None:
        verb_parser.error("--phase-timeout is for a desktop session: give --desktop NAME")
    if args.verb == "daemon":
        from busmgr.verbs.serve import daemon_options

        try:
            daemon_options(args)
        except ValueError as e:
            verb_parser.error(str(e))
    return args


def _split_selector(
    words: Sequence[str], parser: argparse.ArgumentParser
) -> tuple[str | None, list[tuple[str, str]]]:
    """``INSTANCE`` or ``KEY=VALUE...`` -> (instance name or None, env pairs)."""
    env: list[tuple[str, str]] = []
    names: list[str] = []
    for word in words:
        key, sep, _ = word.partition("=")
        if sep and _VARIABLE_RE.match(key):
            env.append(parse_assignment(word))
        else:
            names.append(word)
    if len(names) > 1 or (names and env):
        parser.error("give one INSTANCE name, or KEY=VALUE pairs that select the instance")
    return (names[0] if names else None), env


# ---------------------------------------------------------------------------------------------
# Dispatch


def entry() -> NoReturn:
    """The ``busmgr`` command as installed (and ``python -m busmgr``): :func:`main`, then out.

    Once :func:`main` has returned, busmgr has nothing left to do (a manager has stopped every
    job and its bus), so the interpreter's own teardown, which frees every object one by one
    (tens of milliseconds at the end of every ``busmgr session -- CMD``), is skipped: stdout,
    stderr and the log handlers are flushed, and the process exits. This relies on busmgr
    registering nothing with ``atexit`` and starting no thread.
    """
    status = main()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a reader gone, a stream closed
            stream.flush()
    if "logging" in sys.modules:
        sys.modules["logging"].shutdown()
    os._exit(status)


def main(argv: list[str] | None = None) -> int:
    """The ``busmgr`` command; returns the exit status (usage errors and --help included)."""
    try:
        args = parse_args(argv)
    except SystemExit as e:  # argparse: --help, --version, usage errors
        return e.code if isinstance(e.code, int) else (EXIT_OK if e.code is None else EXIT_USAGE)
    try:
        if args.kind == "graph" and args.paths:
            return args.run_offline(args)
        if args.kind in ("client", "graph"):
            from busmgr.verbs.connection import run_client

            return run_client(args)
        return args.run(args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`busmgr events -f | head`). Point stdout at /dev/null so that the
        # interpreter's final flush does not complain again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
