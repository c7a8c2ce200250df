"""The ``busmgr`` command: a thin client of the manager's bus API, and the manager's entry points.

Three kinds of verb share one argparse tree:

* client verbs (``list``, ``status``, ``start``, ...) connect to a running manager and make the
  calls SPEC §3 fixes, through :class:`busmgr.bus.client.ManagerClient`; they hold no job logic;
* ``check`` parses job files offline with the daemon's own parser (:mod:`busmgr.config`);
* ``session`` and ``daemon`` parse their options into :mod:`busmgr.options` dataclasses and hand
  over to :mod:`busmgr.runtime`, imported only then.

What the user sees is built by pure functions (:func:`format_table`, :func:`format_status_line`,
:func:`format_error`, :func:`format_event`) so that it is tested without a bus. Exit codes
(SPEC §1): 0 ok, 1 the operation failed (error reply, job failed, no bus), 2 usage error, 3
``status``: not running. Every error is one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shlex
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from dbus_fast import BusType
from dbus_fast.errors import DBusError

from busmgr import ERROR_PREFIX, MANAGER_BUS_NAME, __version__
from busmgr.bus.client import (
    CALL_TIMEOUT,
    BusSelectionError,
    ConnectError,
    InstanceInfo,
    ManagerClient,
    connect,
    is_job_path,
    resolve_address,
)
from busmgr.options import DaemonOptions, Mode, SessionOptions, default_services_dirs

PROG = "busmgr"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a process killed by ^C
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what `busmgr list | head -1` would give in C

_VARIABLE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

#: Error-name prefixes dropped in messages: ours, and the bus daemon's.
_ERROR_PREFIXES = (ERROR_PREFIX, "org.freedesktop.DBus.Error.")

#: Manager signal -> the job event it reports.
_JOB_SIGNAL_EVENTS = {
    "JobStarting": "starting",
    "JobStarted": "started",
    "JobStopping": "stopping",
    "JobStopped": "stopped",
}


# ---------------------------------------------------------------------------------------------
# Pure formatting


def format_table(rows: Sequence[Sequence[str]], right: frozenset[int] = frozenset()) -> str:
    """``rows`` (the first is the header) as aligned columns two spaces apart.

    Columns whose index is in ``right`` are right-aligned; the last column is never padded, so
    no line ends in blanks. Every row must have the same number of cells. No trailing newline.
    """
    if not rows:
        return ""
    ncols = len(rows[0])
    if any(len(row) != ncols for row in rows):
        raise ValueError("every row of a table must have the same number of cells")
    widths = [max(len(row[c]) for row in rows) for c in range(ncols)]
    lines = []
    for row in rows:
        cells = []
        for c, cell in enumerate(row):
            if c in right:
                cells.append(cell.rjust(widths[c]))
            elif c == ncols - 1:
                cells.append(cell)
            else:
                cells.append(cell.ljust(widths[c]))
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def format_status_line(job: str, instance: str, goal: str, state: str, pid: int = 0) -> str:
    """One instance as Upstart's ``status`` shows it: ``getty (tty1) start/running, process 15``."""
    name = f"{job} ({instance})" if instance else job
    line = f"{name} {goal}/{state}"
    if pid:
        line += f", process {pid}"
    return line


def status_line(info: InstanceInfo) -> str:
    """:func:`format_status_line` for what the manager reported of an instance."""
    return format_status_line(info.job, info.instance, info.goal, info.state, info.main_pid)


def short_error_name(name: str) -> str:
    """``org.busmgr.Error.UnknownJob`` -> ``UnknownJob``; foreign error names stay whole."""
    for prefix in _ERROR_PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def one_line(text: str) -> str:
    """``text`` with its line breaks and runs of blanks folded to single spaces."""
    return " ".join(text.split())


def format_error(action: str, error: DBusError) -> str:
    """The one stderr line for an error reply: ``busmgr: start hello: UnknownJob: no job ...``."""
    name = short_error_name(str(error.type))
    text = one_line(error.text or "")
    return f"{PROG}: {action}: {name}: {text}" if text else f"{PROG}: {action}: {name}"


def _quote(value: str) -> str:
    # Control characters are escaped, not quoted, so that every record stays on one line.
    escaped = "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in value
    )
    return shlex.quote(escaped) if escaped else ""


def format_event(name: str, env: Mapping[str, str]) -> str:
    """One event as ``NAME KEY=VALUE ...``: the form ``busmgr emit`` takes, shell-quoted.

    ``JOB`` and ``INSTANCE`` come first when present (as in Upstart's job events); the other
    variables keep the manager's order. An empty value is written bare (``INSTANCE=``).
    """
    ordered = [k for k in ("JOB", "INSTANCE") if k in env]
    ordered += [k for k in env if k not in ("JOB", "INSTANCE")]
    return " ".join([_quote(name), *(f"{k}={_quote(env[k])}" for k in ordered)])


def format_job_event(member: str, job: str, instance: str, env: Mapping[str, str]) -> str:
    """A ``JobStarting``/... signal as its job event line: ``started JOB=hello INSTANCE=``."""
    return format_event(_JOB_SIGNAL_EVENTS[member], {**env, "JOB": job, "INSTANCE": instance})


def format_snapshot(info: InstanceInfo) -> str:
    """One instance's present state for ``events``: ``JOB=hello INSTANCE= GOAL=... STATE=...``.

    It has no event name in front, so a reader tells it from an event by its first word
    containing ``=``.
    """
    fields = {
        "JOB": info.job,
        "INSTANCE": info.instance,
        "GOAL": info.goal,
        "STATE": info.state,
        "PID": str(info.main_pid),
    }
    return " ".join(f"{k}={_quote(v)}" for k, v in fields.items())


class EventPrinter:
    """Writes one line per manager signal, in arrival order.

    A job event may reach us twice: as ``JobStarted`` and as the ``EventEmitted`` of the same
    ``started`` event, should the manager send both. Both give the same line, so a line that
    matches one recently printed for the *other* kind of signal is taken as its twin and
    dropped; each printed line cancels at most one twin, so a real repetition still shows.
    """

    def __init__(self, write: Callable[[str], None], window: int = 256) -> None:
        self._write = write
        self._recent: deque[tuple[bool, str]] = deque(maxlen=window)

    def __call__(self, member: str, body: list[Any]) -> None:
        if member in _JOB_SIGNAL_EVENTS:
            job, instance, env = body
            from_job_signal, line = True, format_job_event(member, job, instance, env)
        elif member == "EventEmitted":
            name, env = body
            from_job_signal, line = False, format_event(name, env)
        else:
            return
        twin = (not from_job_signal, line)
        if twin in self._recent:
            self._recent.remove(twin)
            return
        self._recent.append((from_job_signal, line))
        self._write(line)


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
        "goal/state, main PID, bus name and the file the job came from. A job that has no\n"
        "instance now is listed once, stop/waiting.",
        "example:\n  busmgr list --address unix:path=/run/user/1000/busmgr/bus",
        bus,
    )
    p.set_defaults(run=_run_list, kind="client")

    p = verb(
        "status",
        "show whether jobs are running",
        "Show one line per instance, as Upstart does:\n"
        "  hello start/running, process 1234\n"
        "  getty (tty1) start/running, process 15001\n"
        "Without JOB, every instance. Exits 0 if an instance shown is running, 3 if none is.",
        "examples:\n  busmgr status hello\n  busmgr status getty tty1\n"
        "  busmgr status hello >/dev/null || busmgr start hello",
        bus,
    )
    p.add_argument("job", nargs="?", metavar="JOB", help="the job (default: all jobs)")
    p.add_argument("instance", nargs="?", metavar="INSTANCE", help="one instance of JOB")
    p.set_defaults(run=_run_status, kind="client")

    instance_note = (
        "KEY=VALUE pairs are added to the job's environment and select the instance of an\n"
        "`instance` job. With --no-wait, return as soon as the manager has the request."
    )
    for name, summary, description in (
        (
            "start",
            "start a job",
            "Start JOB (StartJob) and wait until it is running (a service) or has run (a task),\n"
            "then print its status line; exit 1 with the reason if it failed.",
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
        p.add_argument("job", metavar="JOB", help="the job")
        _add_env(p, "environment for the job; selects the instance")
        _add_no_wait(p, "return once the manager accepted the request, without waiting")
        p.set_defaults(run=_RUNNERS[name], kind="client")

    p = verb(
        "reload",
        "send a job its reload signal",
        "Send the instance's `reload signal` (default HUP) to its main process.",
        "examples:\n  busmgr reload hello\n  busmgr reload getty TTY=tty1",
        bus,
    )
    p.add_argument("job", metavar="JOB", help="the job")
    _add_env(p, "selects the instance of an `instance` job")
    p.set_defaults(run=_run_reload, kind="client")

    p = verb(
        "reload-configuration",
        "reread the job files",
        "Make the manager reread its job directories. Running jobs keep running; a changed\n"
        "job takes its new definition when it next starts.",
        "example:\n  busmgr reload-configuration",
        bus,
    )
    p.set_defaults(run=_run_reload_configuration, kind="client")

    p = verb(
        "emit",
        "emit an event",
        "Emit EVENT with its variables: jobs whose `start on` or `stop on` match it start or\n"
        "stop. Waits until every job it started or stopped has finished doing so.",
        "examples:\n  busmgr emit desktop-start DISPLAY=:0\n"
        "  busmgr emit --no-wait interface-up IFACE=eth0",
        bus,
    )
    p.add_argument("event", metavar="EVENT", help="the event's name")
    _add_env(p, "the event's variables")
    _add_no_wait(p, "return once the event is queued")
    p.set_defaults(run=_run_emit, kind="client")

    p = verb(
        "activate",
        "start the job that provides a bus name",
        "Start the job whose `dbus` stanza names BUS_NAME (what a D-Bus activation does) and\n"
        "wait until the name has an owner; prints the instance's status line.",
        "example:\n  busmgr activate org.example.Echo",
        bus,
    )
    p.add_argument("bus_name", metavar="BUS_NAME", help="a well-known bus name")
    p.set_defaults(run=_run_activate, kind="client")

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
        "the states are read, so no event after them is missed.",
        "examples:\n  busmgr events\n  busmgr events --follow | grep --line-buffered '^stopped '",
        bus,
    )
    p.add_argument(
        "-f", "--follow", action="store_true", help="keep printing events as they happen"
    )
    p.set_defaults(run=_run_events, kind="client")

    p = verb(
        "check",
        "check job files offline",
        "Parse job files with the manager's own parser, without a manager or a bus, and print\n"
        "each problem as PATH:LINE: message on stderr. Exits 1 if any is an error (warnings\n"
        "alone exit 0). PATH may be a file or a directory; without PATH, the default session\n"
        "job directory ($XDG_CONFIG_HOME/busmgr/services.d).",
        "examples:\n  busmgr check ./services.d\n  busmgr check /etc/busmgr/services.d/hello.conf",
    )
    p.add_argument("paths", nargs="*", metavar="PATH", help="job files or directories")
    p.set_defaults(run=_run_check, kind="offline")

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

    p = verb(
        "session",
        "run a private bus with the manager on it",
        "Start a private dbus-daemon, run the manager on it, emit `startup` and run jobs.\n"
        "Jobs get DBUS_SESSION_BUS_ADDRESS. With -- COMMAND, run COMMAND in the session, as\n"
        "dbus-run-session does: when it exits, stop every job and the bus, and exit with\n"
        "COMMAND's status.",
        "examples:\n  busmgr session --services-dir ./services.d --print-address\n"
        "  busmgr session --no-import -- pytest -q tests/\n"
        "  busmgr session --address-file /tmp/busmgr.address &",
        [manager_options],
        usage="%(prog)s [OPTIONS] [-- COMMAND [ARGS...]]",
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
        "command",
        nargs="*",
        metavar="COMMAND",
        help="a command to run in the session; the session ends with it",
    )
    p.set_defaults(run=_run_session, kind="manager")

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
        "  busmgr daemon --system --launch-bus --pidfile /run/busmgr.pid",
        [manager_options],
    )
    launch = p.add_argument_group("launching the bus")
    launch.add_argument(
        "--launch-bus",
        action="store_true",
        help="start the bus (dbus-daemon) as the manager's child and be its activator",
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
    p.set_defaults(run=_run_daemon, kind="manager")

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
        if not hasattr(args, "env") or any(e.startswith("-") for e in extras):
            verb_parser.error(f"unrecognized arguments: {' '.join(extras)}")
        for extra in extras:
            try:
                args.env.append(parse_assignment(extra))
            except argparse.ArgumentTypeError as e:
                verb_parser.error(f"argument KEY=VALUE: {e}")
    if args.kind == "client":
        try:
            args.bus_address = resolve_address(args.address, args.session, args.system, os.environ)
        except BusSelectionError as e:
            verb_parser.error(str(e))
    if args.verb == "daemon":
        try:
            daemon_options(args)
        except ValueError as e:
            verb_parser.error(str(e))
    return args


def session_options(args: argparse.Namespace) -> SessionOptions:
    """The :class:`SessionOptions` that ``busmgr session`` was given."""
    return SessionOptions(
        services_dirs=tuple(d.absolute() for d in args.services_dirs),
        print_address=args.print_address,
        no_import=args.no_import,
        pidfile=_absolute(args.pidfile),
        state_dir=_absolute(args.state_dir),
        address_file=_absolute(args.address_file),
        command=tuple(args.command),
        import_dirs=tuple(d.absolute() for d in args.import_dirs),
    )


def daemon_options(args: argparse.Namespace) -> DaemonOptions:
    """The :class:`DaemonOptions` that ``busmgr daemon`` was given."""
    return DaemonOptions(
        mode=Mode.SYSTEM if args.bus == "system" else Mode.SESSION,
        address=args.address,
        services_dirs=tuple(d.absolute() for d in args.services_dirs),
        no_import=args.no_import,
        pidfile=_absolute(args.pidfile),
        state_dir=_absolute(args.state_dir),
        launch_bus=args.launch_bus,
        bus_config=_absolute(args.bus_config),
        activation_dir=_absolute(args.activation_dir),
        import_dirs=tuple(d.absolute() for d in args.import_dirs),
        print_address=args.print_address,
        address_file=_absolute(args.address_file),
    )


def _absolute(path: Path | None) -> Path | None:
    return None if path is None else path.absolute()


def describe_action(args: argparse.Namespace) -> str:
    """What the user asked for, to begin error lines: ``start hello``, ``status getty tty1``."""
    words = [args.verb]
    for attr in ("job", "instance", "event", "bus_name"):
        value = getattr(args, attr, None)
        if value is not None:
            words.append(value)
    return " ".join(words)


# ---------------------------------------------------------------------------------------------
# Client verbs: each runs with a connected ManagerClient, writes its output to `out` and returns
# the exit status; error replies propagate as DBusError and become one line in _client_main.

ClientVerb = Callable[[ManagerClient, argparse.Namespace, TextIO], Awaitable[int]]


def _print(out: TextIO, line: str) -> None:
    out.write(line + "\n")
    out.flush()


async def _run_list(client: ManagerClient, args: argparse.Namespace, out: TextIO) -> int:
    rows = sorted(await client.list_jobs(), key=lambda r: (r.job, r.instance))
    table = [["JOB", "INSTANCE", "GOAL/STATE", "PID", "BUSNAME", "SOURCE"]]
    for info in await client.describe(rows):
        table.append(
            [
                info.job,
                info.instance or "-",
                f"{info.goal}/{info.state}",
                str(info.main_pid) if info.main_pid else "-",
                info.bus_name or "-",
                info.source or "-",
            ]
        )
    _print(out, format_table(table, right=frozenset({3})))
    return EXIT_OK


async def _run_status(client: ManagerClient, args: argparse.Namespace, out: TextIO) -> int:
    rows = await client.list_jobs()
    if args.job is not None:
        rows = [r for r in rows if r.job == args.job]
        if not rows:
            await client.get_job(args.job)  # the UnknownJob error, if that is why
        if args.instance is not None:
            rows = [r for r in rows if r.instance == args.instance]
    infos = await client.describe(sorted(rows, key=lambda r: (r.job, r.instance)), sources=False)
    if not infos and args.job is not None:
        # A stopped instance of an `instance` job is gone: that is what not running looks like.
        _print(out, format_status_line(args.job, args.instance or "", "stop", "waiting"))
    for info in infos:
        _print(out, status_line(info))
    running = any(info.state == "running" for info in infos)
    return EXIT_OK if running else EXIT_NOT_RUNNING


async def _run_start(client: ManagerClient, args: argparse.Namespace, out: TextIO) -> int:
    path = await client.start_job(args.job, dict(args.env), wait=not args.no_wait)
    _print(out, status_line(await client.describe_path(path)))
    return EXIT_OK


async def _run_restart(client: ManagerClient, args: argparse.Namespace, out: TextIO) -> int:
    path = await client.restart_job(args.job, dict(args.env), wait=not args.no_wait)
    _print(out, status_line(await client.describe_path(path)))
    return EXIT_OK


async def _run_stop(client: ManagerClient, args: argparse.Namespace, out: TextIO) -> int:
    await client.stop_job(args.job, dict(args.env), wait=not args.no_wait)
    # StopJob names no instance. A job without `instance` keeps its one instance, so show it; a
    # stopped instance of an `instance` job is gone and there is nothing to show.
    rows = [
        r
        for r in await client.list_jobs()
        if r.job == args.job and r.instance == "" and not is_job_path(r.path)
    ]
    for info in await client.describe(rows, sources=False):
        _print(out, status_line(info))
    return EXIT_OK


async def _run_reload(client: ManagerClient, args: argparse.Namespace, out: TextIO) -> int:
    await client.reload_job(args.job, dict(args.env))
    return EXIT_OK


async def _run_reload_configuration(
    client: ManagerClient, args: argparse.Namespace, out: TextIO
) -> int:
    await client.reload_configuration()
    return EXIT_OK


async def _run_emit(client: ManagerClient, args: argparse.Namespace, out: TextIO) -> int:
    await client.emit_event(args.event, dict(args.env), wait=not args.no_wait)
    return EXIT_OK


async def _run_activate(client: ManagerClient, args: argparse.Namespace, out: TextIO) -> int:
    path = await client.activate_name(args.bus_name)
    _print(out, status_line(await client.describe_path(path)))
    return EXIT_OK


_NO_MANAGER_ERRORS = frozenset(
    {"org.freedesktop.DBus.Error.ServiceUnknown", "org.freedesktop.DBus.Error.NameHasNoOwner"}
)


async def _run_events(client: ManagerClient, args: argparse.Namespace, out: TextIO) -> int:
    printer = EventPrinter(lambda line: _print(out, line))
    # Signals that arrive while the states are read are held back and printed after them.
    held: list[tuple[str, list[Any]]] = []
    holding = True

    def on_signal(member: str, body: list[Any]) -> None:
        if holding:
            held.append((member, body))
        else:
            printer(member, body)

    if args.follow:
        await client.subscribe(on_signal)
    try:
        rows = sorted(await client.list_jobs(), key=lambda r: (r.job, r.instance))
        for info in await client.describe(rows, sources=False):
            _print(out, format_snapshot(info))
    except DBusError as e:
        if not args.follow or e.type not in _NO_MANAGER_ERRORS:
            raise
        # Following before the manager runs is fine: its events will come once it does.
        print(
            f"{PROG}: {describe_action(args)}: {MANAGER_BUS_NAME} is not running; "
            "following its events from when it starts",
            file=sys.stderr,
            flush=True,
        )
    if not args.follow:
        return EXIT_OK
    for member, body in held:
        printer(member, body)
    holding = False
    # Until interrupted: the manager may come and go, and the match rule outlives it. Only the
    # bus itself going away ends this, and _client_main reports it.
    await client.bus.wait_for_disconnect()
    raise EOFError


_RUNNERS: dict[str, ClientVerb] = {
    "start": _run_start,
    "stop": _run_stop,
    "restart": _run_restart,
}


async def _client_main(args: argparse.Namespace) -> int:
    """Connect, run the verb, and turn every failure into one line on stderr and exit 1."""
    action = describe_action(args)
    address: str | BusType = args.bus_address
    try:
        bus = await connect(address)
    except ConnectError as e:
        print(f"{PROG}: {action}: {e}", file=sys.stderr)
        return EXIT_FAILED
    try:
        return await args.run(ManagerClient(bus), args, sys.stdout)
    except DBusError as e:
        print(format_error(action, e), file=sys.stderr)
        return EXIT_FAILED
    except TimeoutError:
        print(
            f"{PROG}: {action}: no reply from {MANAGER_BUS_NAME} in {CALL_TIMEOUT:g} seconds",
            file=sys.stderr,
        )
        return EXIT_FAILED
    except (EOFError, ConnectionError) as e:
        reason = str(e) or "the bus closed the connection"
        print(f"{PROG}: {action}: lost the connection to the bus: {reason}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        bus.disconnect()
        with contextlib.suppress(Exception):
            await bus.wait_for_disconnect()


# ---------------------------------------------------------------------------------------------
# Offline and manager verbs


def _run_check(args: argparse.Namespace) -> int:
    from busmgr.config import Severity, check_paths

    paths = [Path(p) for p in args.paths] or list(default_services_dirs(Mode.SESSION, os.environ))
    failed = False
    for diagnostic in check_paths(paths):
        print(diagnostic, file=sys.stderr)
        failed = failed or diagnostic.severity == Severity.ERROR
    return EXIT_FAILED if failed else EXIT_OK


def _run_session(args: argparse.Namespace) -> int:
    from busmgr.runtime import run_session

    return run_session(session_options(args))


def _run_daemon(args: argparse.Namespace) -> int:
    from busmgr.runtime import run_daemon

    return run_daemon(daemon_options(args))


def main(argv: list[str] | None = None) -> int:
    """The ``busmgr`` command; returns the exit status (usage errors and --help included)."""
    try:
        args = parse_args(argv)
    except SystemExit as e:  # argparse: --help, --version, usage errors
        return e.code if isinstance(e.code, int) else (EXIT_OK if e.code is None else EXIT_USAGE)
    try:
        if args.kind == "client":
            return asyncio.run(_client_main(args))
        return args.run(args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`busmgr events -f | head`). Point stdout at /dev/null so that the
        # interpreter's final flush does not complain again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
