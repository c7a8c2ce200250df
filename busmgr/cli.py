"""The ``busmgr`` command: a thin client of the manager's bus API, and the manager's entry points.

Three kinds of verb share one argparse tree:

* client verbs (``list``, ``status``, ``start``, ``log``, ``plot``...) connect to a running
  manager and make the calls SPEC §3 fixes, through :class:`busmgr.bus.client.ManagerClient`;
  they hold no job logic. Those marked ``light`` (all of this module's) run over the blocking
  transport (:mod:`busmgr.bus.wire`) without asyncio or dbus-fast, whose imports would cost a
  one-call command more than its call; any other runs on an event loop over dbus-fast;
* ``check`` parses job files offline with the daemon's own parser (:mod:`busmgr.config`), and
  so does ``graph PATH...``;
* ``session`` and ``daemon`` parse their options into :mod:`busmgr.options` dataclasses and hand
  over to :mod:`busmgr.runtime`, imported only then.

What the user sees is built by pure functions (:func:`format_table`, :func:`format_status_line`,
:func:`format_error`, :func:`format_event`, and :mod:`busmgr.statusview`, :mod:`busmgr.graph`,
:mod:`busmgr.plot`) so that it is tested without a bus; modules only some verbs need are
imported by those verbs. Exit codes (SPEC §1): 0 ok, 1 the operation failed (error reply, job
failed, no bus), 2 usage error (the manager's ``InvalidArgs`` too), 3 ``status``: not running,
141 the reader of our output went away (as a C program killed by SIGPIPE). Every error is one
line on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shlex
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

from busmgr import ERROR_PREFIX, MANAGER_BUS_NAME, __version__
from busmgr.bus.client import (
    CALL_TIMEOUT,
    BusSelectionError,
    ConnectError,
    ErrorReply,
    InstanceInfo,
    ManagerClient,
    blocking_supported,
    connect,
    connect_blocking,
    is_error_reply,
    is_job_path,
    job_path_for,
    resolve_address,
    run_blocking,
)
from busmgr.options import (
    DEFAULT_PHASE_TIMEOUT,
    DaemonOptions,
    DesktopOptions,
    Mode,
    SessionOptions,
    default_services_dirs,
    desktop_name_problem,
)

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


def format_error(action: str, error: Any) -> str:
    """The one stderr line for an error reply (an :class:`ErrorReply` or dbus-fast's
    ``DBusError``): ``busmgr: start hello: UnknownJob: no job ...``."""
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

    def __init__(
        self, write: Callable[[str], None], window: int = 256, *, json: bool = False
    ) -> None:
        self._write = write
        self._json = json
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
        if self._json:
            import json

            line = json.dumps(event_json(member, body), ensure_ascii=False, sort_keys=True)
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
    p.set_defaults(run=_run_list, kind="client", light=True)

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
    p.set_defaults(run=_run_status, kind="client", light=True)

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
        p.set_defaults(run=_RUNNERS[name], kind="client", light=True)

    p = verb(
        "reload",
        "send a job its reload signal",
        "Send the instance's `reload signal` (default HUP) to its main process.",
        "examples:\n  busmgr reload hello\n  busmgr reload getty TTY=tty1",
        bus,
    )
    p.add_argument("job", type=_name("job"), metavar="JOB", help="the job")
    _add_env(p, "selects the instance of an `instance` job")
    p.set_defaults(run=_run_reload, kind="client", light=True)

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
    p.set_defaults(run=_run_reload_configuration, kind="client", light=True)

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
    p.set_defaults(run=_run_reexec, kind="client")

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
    p.set_defaults(run=_run_emit, kind="client", light=True)

    p = verb(
        "activate",
        "start the job that provides a bus name",
        "Start the job whose `dbus` stanza names BUS_NAME (what a D-Bus activation does) and\n"
        "wait until the name has an owner; prints the instance's status line.",
        "example:\n  busmgr activate org.example.Echo",
        bus,
    )
    p.add_argument("bus_name", type=_bus_name, metavar="BUS_NAME", help="a well-known bus name")
    p.set_defaults(run=_run_activate, kind="client", light=True)

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
    p.set_defaults(run=_run_events, kind="client", light=True)

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
    p.set_defaults(run=_run_log, kind="client", light=True)

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
    p.set_defaults(run=_run_graph, kind="graph", light=True)

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
    p.set_defaults(run=_run_plot, kind="client", light=True)

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
    p.set_defaults(run=_run_setenv, kind="client")

    p = verb(
        "unsetenv",
        "remove variables from the session's environment",
        "Remove each KEY from the session's environment (Upstart's unset-env); a KEY that is\n"
        f"not set is no error.\n{env_note}",
        "example:\n  busmgr unsetenv GTK_THEME",
        bus,
    )
    p.add_argument("keys", nargs="+", type=parse_variable, metavar="KEY", help="variables")
    p.set_defaults(run=_run_unsetenv, kind="client")

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
    p.set_defaults(run=_run_getenv, kind="client")

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
    p.set_defaults(run=_run_end_session, kind="client")

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
        desktop=None
        if args.desktop is None
        else DesktopOptions(args.desktop, args.phase_timeout or DEFAULT_PHASE_TIMEOUT),
        broker=args.broker,
        log_dir=_absolute(args.log_dir),
        log_max_bytes=args.log_size,
        log_keep=args.log_keep,
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
        log_dir=_absolute(args.log_dir),
        log_max_bytes=args.log_size,
        log_keep=args.log_keep,
        launch_bus=args.launch_bus,
        bus_config=_absolute(args.bus_config),
        activation_dir=_absolute(args.activation_dir),
        import_dirs=tuple(d.absolute() for d in args.import_dirs),
        print_address=args.print_address,
        address_file=_absolute(args.address_file),
        broker=args.broker,
    )


def _absolute(path: Path | None) -> Path | None:
    return None if path is None else path.absolute()


def describe_action(args: argparse.Namespace) -> str:
    """What the user asked for, to begin error lines: ``start hello``, ``status getty tty1``."""
    words = [args.verb]
    for attr in ("job", "instance", "event", "bus_name", "key"):
        value = getattr(args, attr, None)
        if value is not None:
            words.append(value)
    if args.verb in ("status", "log"):
        words += [f"{k}={v}" for k, v in getattr(args, "env", [])]
    return " ".join(words)


# ---------------------------------------------------------------------------------------------
# Client verbs: each runs with a connected ManagerClient, writes its output to `out` and returns
# the exit status; error replies propagate (ErrorReply) and become one line in _client_main.
# Verbs marked `light` run over the blocking transport, without asyncio (run_blocking).

ClientVerb = Callable[[ManagerClient, argparse.Namespace, TextIO], Awaitable[int]]

#: Seconds a started `respawn` job is watched: a failure within it means it failed to start.
START_CONFIRM = 0.5
#: Seconds a start that is failing and respawning is followed to its end at most.
START_FAILING_WAIT = 10.0
#: Seconds the manager may be away before `events --follow` gives up (a re-exec is back sooner).
MANAGER_GONE_GRACE = 2.0


def _print(out: TextIO, line: str) -> None:
    out.write(line + "\n")
    out.flush()


def _json(out: TextIO, value: Any) -> None:
    import json

    _print(out, json.dumps(value, ensure_ascii=False, sort_keys=True))


def info_json(info: InstanceInfo) -> dict[str, Any]:
    """One row of ``list --json``."""
    return {
        "job": info.job,
        "instance": info.instance,
        "goal": info.goal,
        "state": info.state,
        "pid": info.main_pid,
        "bus_name": info.bus_name,
        "source": info.source,
        "result": info.result,
        "reason": info.reason,
        "path": info.path,
    }


def result_cell(info: InstanceInfo) -> str:
    """``list``'s RESULT: ``ok``, ``failed: <reason>``, or ``-`` (never ran)."""
    if info.result == "failed":
        return f"failed: {info.reason}" if info.reason else "failed"
    return info.result or "-"


async def _run_list(client: ManagerClient, args: argparse.Namespace, out: TextIO) -> int:
    rows = sorted(await client.list_jobs(), key=lambda r: (r.job, r.instance))
    infos = await client.describe(rows)
    # Entries that are not jobs (autostart entries skipped or refused) are listed among the
    # jobs, by the name they would have, with where they are (SOURCE) and why they are not
    # jobs (RESULT).
    skipped = await client.list_skipped()
    if args.json:
        entries = [info_json(i) for i in infos]
        entries += [
            {"job": job, "state": "skipped", "source": source, "reason": reason}
            for job, source, reason in skipped
        ]
        _json(out, sorted(entries, key=lambda e: (str(e["job"]), str(e.get("instance", "")))))
        return EXIT_OK
    lines: list[tuple[tuple[str, int], list[str]]] = []
    for info in infos:
        row = [
            info.job,
            info.instance or "-",
            f"{info.goal}/{info.state}",
            str(info.main_pid) if info.main_pid else "-",
            info.bus_name or "-",
            info.source or "-",
            "-" if is_job_path(info.path) else result_cell(info),
        ]
        lines.append(((info.job, 0), row))
    for job, source, reason in skipped:
        lines.append(((job, 1), [job, "-", "skipped", "-", "-", source, reason]))
    table = [["JOB", "INSTANCE", "GOAL/STATE", "PID", "BUSNAME", "SOURCE", "RESULT"]]
    table += [row for _key, row in sorted(lines, key=lambda line: line[0])]
    _print(out, format_table(table, right=frozenset({3})))
    return EXIT_OK


def status_line_with_reason(info: InstanceInfo) -> str:
    """The Upstart status line, and the reason of a failure: ``x stop/waiting, failed: ...``."""
    line = status_line(info)
    if info.result == "failed":
        line += f", failed: {info.reason}" if info.reason else ", failed"
    return line


async def _selected_paths(client: ManagerClient, args: argparse.Namespace) -> list[str]:
    """The instance paths ``JOB [INSTANCE | KEY=VALUE...]`` names (raises the error replies
    UnknownJob, UnknownInstance); every instance of JOB without a selector (may be none)."""
    if args.env:
        return [await client.get_instance(args.job, dict(args.env))]
    if args.instance is not None:
        return [await client.get_instance_by_name(args.job, args.instance)]
    rows = [r for r in await client.list_jobs() if r.job == args.job]
    if not rows:
        await client.get_job(args.job)  # the UnknownJob error
    return [r.path for r in rows if not is_job_path(r.path)]


async def _run_status(client: ManagerClient, args: argparse.Namespace, out: TextIO) -> int:
    if args.job is None:
        rows = sorted(await client.list_jobs(), key=lambda r: (r.job, r.instance))
        infos = await client.describe(rows, sources=False)
        if args.json:
            _json(out, [info_json(i) for i in infos])
        else:
            for info in infos:
                _print(out, status_line_with_reason(info))
        return EXIT_OK if any(i.state == "running" for i in infos) else EXIT_NOT_RUNNING
    paths = await _selected_paths(client, args)
    if not paths:
        # An `instance` job with no instance now: that is what not running looks like.
        if args.json:
            _json(out, [])
        else:
            _print(out, format_status_line(args.job, "", "stop", "waiting"))
        return EXIT_NOT_RUNNING
    from busmgr import INSTANCE_INTERFACE, JOB_INTERFACE

    targets = [(job_path_for(args.job), JOB_INTERFACE)]
    targets += [(p, INSTANCE_INTERFACE) for p in paths]
    results = await client.get_all_many(targets)
    for result in results:
        if isinstance(result, ErrorReply):
            raise result
    job_props = results[0]
    shown = [r for r in results[1:] if isinstance(r, dict)]
    import time

    from busmgr.statusview import format_status, process_tree, status_json

    now = time.time()
    documents = []
    job = job_props if isinstance(job_props, dict) else {}
    for i, props in enumerate(sorted(shown, key=lambda p: str(p.get("Instance", "")))):
        log_lines = _log_tail(str(props.get("LogPath", "")), args.lines)
        if args.json:
            documents.append(status_json(props, job, log_lines))
            continue
        if i:
            _print(out, "")
        tree = process_tree(props.get("Processes", []))
        for line in format_status(props, job, tree, log_lines, now):
            _print(out, line)
    if args.json:
        _json(out, documents)
    running = any(p.get("State") == "running" for p in shown)
    return EXIT_OK if running else EXIT_NOT_RUNNING


def _log_tail(path: str, count: int) -> list[str]:
    if not path or count <= 0:
        return []
    from busmgr.logview import last_lines

    return [ln.decode(errors="replace") for ln in last_lines(Path(path), count)]


class _Decided(Exception):
    """Ends the watching of a start: the job's fate is known."""


class _StartWatch:
    """The signals of one instance after its start: did it fail, respawn, or stop?"""

    def __init__(self, job: str) -> None:
        self.job = job
        self.instance: str | None = None  # known once StartJob replied
        self.failures = 0
        self.stopped_env: dict[str, str] | None = None
        self.restarted = False
        self.early: list[tuple[str, list[Any]]] = []

    def __call__(self, member: str, body: list[Any]) -> None:
        if member == "EventEmitted" or body[0] != self.job:
            return
        if self.instance is None:
            self.early.append((member, body))
            return
        if body[1] != self.instance:
            return
        env = dict(body[2])
        if member == "JobStopping" and env.get("RESULT") == "failed":
            self.failures += 1
            raise _Decided
        if member == "JobStopped":
            self.stopped_env = env
            raise _Decided
        if member == "JobStarted" and self.failures:
            self.restarted = True
            raise _Decided

    def replay(self, instance: str) -> None:
        self.instance = instance
        for member, body in self.early:
            with contextlib.suppress(_Decided):
                self(member, body)


async def _watch(
    client: ManagerClient, seconds: float | None, hangup_fd: int | None = None
) -> bool:
    """Dispatch signals for ``seconds`` (None: until something is decided); True if a
    watcher decided something (raised :class:`_Decided`)."""
    try:
        await client.dispatch_signals(seconds, hangup_fd)
    except _Decided:
        return True
    return False


async def _confirm_start(client: ManagerClient, watch: _StartWatch, path: str) -> str | None:
    """Watch a started ``respawn`` job for :data:`START_CONFIRM` seconds, and while it fails
    and respawns, until it is up again or has stopped for good. None if it stayed up; else why
    the start failed."""
    import time

    info = await client.describe_path(path)
    watch.replay(info.instance)  # the signals that came before the reply named the instance
    deadline = time.monotonic() + START_CONFIRM
    while watch.stopped_env is None:
        if watch.failures and not watch.restarted:
            if not await _watch(client, START_FAILING_WAIT):
                break  # still failing and respawning
            continue
        if watch.restarted:  # up again after a failure: watch it afresh
            watch.restarted, watch.failures = False, 0
            deadline = time.monotonic() + START_CONFIRM
        left = deadline - time.monotonic()
        if left <= 0 or not await _watch(client, left):
            return None
    label = f"{info.job} ({info.instance})" if info.instance else info.job
    try:
        props = await client.get_all(path, "org.busmgr.Instance1")
    except ErrorReply:
        props = {}  # an instance of an `instance` job is gone once stopped
    env = watch.stopped_env or {}
    if props.get("ResultReason"):
        reason = str(props["ResultReason"])
    else:
        what = env.get("PROCESS", "main")
        how = (
            f" killed by signal {env['EXIT_SIGNAL']}"
            if env.get("EXIT_SIGNAL")
            else (f" exited with status {env['EXIT_STATUS']}" if env.get("EXIT_STATUS") else "")
        )
        reason = f"respawned too fast, last: main{how}" if what == "respawn" else f"{what}{how}"
    text = f"job {label} failed: {reason}"
    if watch.stopped_env is None:
        text = f"job {label} keeps failing and respawning: {reason}"
    tail = _log_tail(str(props.get("LogPath", "")), 3)
    return text + ("; last output: " + " | ".join(tail) if tail else "")


async def _start_like(
    client: ManagerClient, args: argparse.Namespace, out: TextIO, member: str
) -> int:
    watch: _StartWatch | None = None
    if not args.no_wait:
        try:
            job = await client.get_all(job_path_for(args.job), "org.busmgr.Job1")
        except ErrorReply:
            job = {}  # no such job: StartJob says so properly
        if job.get("Respawn") and not job.get("BusName"):
            watch = _StartWatch(args.job)
            await client.subscribe(watch)
    start = client.start_job if member == "StartJob" else client.restart_job
    path = await start(args.job, dict(args.env), wait=not args.no_wait)
    if watch is not None:
        problem = await _confirm_start(client, watch, path)
        if problem is not None:
            raise ErrorReply(ERROR_PREFIX + "JobFailed", problem)
    _print(out, status_line(await client.describe_path(path)))
    return EXIT_OK


async def _run_start(client: ManagerClient, args: argparse.Namespace, out: TextIO) -> int:
    return await _start_like(client, args, out, "StartJob")


async def _run_restart(client: ManagerClient, args: argparse.Namespace, out: TextIO) -> int:
    return await _start_like(client, args, out, "RestartJob")


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


async def _run_reexec(client: ManagerClient, args: argparse.Namespace, out: TextIO) -> int:
    await client.reexec()
    return EXIT_OK


async def _run_reload_configuration(
    client: ManagerClient, args: argparse.Namespace, out: TextIO
) -> int:
    await client.reload_configuration()
    errors = (await client.manager_properties()).get("ConfigurationErrors", [])
    for line in errors:
        print(one_line(str(line)), file=sys.stderr, flush=True)
    return EXIT_FAILED if errors else EXIT_OK


async def _run_emit(client: ManagerClient, args: argparse.Namespace, out: TextIO) -> int:
    await client.emit_event(args.event, dict(args.env), wait=not args.no_wait)
    return EXIT_OK


async def _run_activate(client: ManagerClient, args: argparse.Namespace, out: TextIO) -> int:
    path = await client.activate_name(args.bus_name)
    _print(out, status_line(await client.describe_path(path)))
    return EXIT_OK


async def _run_setenv(client: ManagerClient, args: argparse.Namespace, out: TextIO) -> int:
    for key, value in args.assignments:
        await client.set_env(key, value)
    return EXIT_OK


async def _run_unsetenv(client: ManagerClient, args: argparse.Namespace, out: TextIO) -> int:
    for key in args.keys:
        await client.unset_env(key)
    return EXIT_OK


async def _run_getenv(client: ManagerClient, args: argparse.Namespace, out: TextIO) -> int:
    if args.key is not None:
        _print(out, await client.get_env(args.key))
        return EXIT_OK
    env = await client.list_env()
    for key in sorted(env):
        _print(out, f"{key}={env[key]}")
    return EXIT_OK


async def _run_end_session(client: ManagerClient, args: argparse.Namespace, out: TextIO) -> int:
    await client.end_session(wait=not args.no_wait)
    return EXIT_OK


_NO_MANAGER_ERRORS = frozenset(
    {"org.freedesktop.DBus.Error.ServiceUnknown", "org.freedesktop.DBus.Error.NameHasNoOwner"}
)


class ManagerGone(Exception):
    """The manager left the bus and did not come back in time."""


def event_json(member: str, body: list[Any]) -> dict[str, Any] | None:
    """A manager signal as ``events --json`` prints it (None: not an event)."""
    if member in _JOB_SIGNAL_EVENTS:
        job, instance, env = body
        return {
            "type": "event",
            "event": _JOB_SIGNAL_EVENTS[member],
            "env": {**env, "JOB": job, "INSTANCE": instance},
        }
    if member == "EventEmitted":
        name, env = body
        return {"type": "event", "event": name, "env": dict(env)}
    return None


async def _run_events(client: ManagerClient, args: argparse.Namespace, out: TextIO) -> int:
    show = EventPrinter(lambda line: _print(out, line), json=args.json)
    # Signals that arrive while the states are read are held back and printed after them.
    held: list[tuple[str, list[Any]]] = []
    holding = True
    import time

    gone_since: list[float | None] = [None]

    def on_signal(member: str, body: list[Any]) -> None:
        if holding:
            held.append((member, body))
        else:
            show(member, body)

    def on_owner(owner: str) -> None:
        gone_since[0] = None if owner else time.monotonic()
        raise _Decided  # wakes the loop below, which looks at the time

    if args.follow:
        await client.subscribe(on_signal, on_owner)
    try:
        rows = sorted(await client.list_jobs(), key=lambda r: (r.job, r.instance))
        for info in await client.describe(rows, sources=False):
            if args.json:
                _json(
                    out,
                    {
                        "type": "state",
                        "job": info.job,
                        "instance": info.instance,
                        "goal": info.goal,
                        "state": info.state,
                        "pid": info.main_pid,
                    },
                )
            else:
                _print(out, format_snapshot(info))
    except ErrorReply as e:
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
        show(member, body)
    holding = False
    # Until interrupted, the reader goes away (BrokenPipeError), the bus goes away (EOFError),
    # or the manager leaves it for longer than a re-exec takes (ManagerGone).
    while True:
        since = gone_since[0]
        left = None if since is None else since + MANAGER_GONE_GRACE - time.monotonic()
        if left is not None and left <= 0:
            raise ManagerGone(f"{MANAGER_BUS_NAME} left the bus")
        await _watch(client, left, _pipe_fd(out))


def _pipe_fd(out: TextIO) -> int | None:
    """``out``'s descriptor if it is a pipe (whose reader may go away), else None."""
    import stat

    try:
        fd = out.fileno()
        return fd if stat.S_ISFIFO(os.fstat(fd).st_mode) else None
    except (OSError, ValueError, AttributeError):
        return None


async def _run_log(client: ManagerClient, args: argparse.Namespace, out: TextIO) -> int:
    from busmgr.logsink import log_name

    await client.get_job(args.job)  # UnknownJob
    instance = args.instance or ""
    if args.env:
        path = await client.get_instance(args.job, dict(args.env))
        instance = str((await client.get_all(path, "org.busmgr.Instance1")).get("Instance", ""))
    directory = str((await client.manager_properties()).get("LogDirectory", ""))
    if not directory:
        raise ErrorReply(ERROR_PREFIX + "UnknownJob", "the manager keeps no job logs")
    path_ = Path(directory) / log_name(args.job, instance)
    from busmgr.logview import follow, last_lines, log_files

    if not log_files(path_) and not args.follow:
        print(f"{PROG}: {describe_action(args)}: no output logged yet ({path_})", file=sys.stderr)
        return EXIT_FAILED
    unreadable = [f for f in log_files(path_) if not os.access(f, os.R_OK)]
    if unreadable:
        print(f"{PROG}: {describe_action(args)}: cannot read {unreadable[0]}", file=sys.stderr)
        return EXIT_FAILED
    binary = out.buffer if hasattr(out, "buffer") else None

    def write(data: bytes) -> None:
        if binary is not None:
            out.flush()
            binary.write(data)
            binary.flush()
        else:
            out.write(data.decode(errors="replace"))
            out.flush()

    lines = last_lines(path_, args.lines)
    if lines:
        write(b"\n".join(lines) + b"\n")
    if args.follow:
        if not path_.parent.is_dir():
            where = path_.parent
            print(f"{PROG}: {describe_action(args)}: no log directory {where}", file=sys.stderr)
            return EXIT_FAILED

        def ready() -> None:
            if not log_files(path_):
                print(
                    f"{PROG}: {describe_action(args)}: no output yet; waiting for it",
                    file=sys.stderr,
                    flush=True,
                )

        follow(path_, write, hangup_fd=_pipe_fd(out), on_ready=ready)
    return EXIT_OK


async def _graph_jobs_from_manager(client: ManagerClient) -> list[Any]:
    from busmgr.config import ExprError, parse_event_expr
    from busmgr.graph import GraphJob

    rows = await client.list_jobs()
    names = sorted({r.job for r in rows})
    results = await client.get_all_many([(job_path_for(n), "org.busmgr.Job1") for n in names])
    jobs = []
    for name, props in zip(names, results, strict=True):
        if isinstance(props, ErrorReply):
            continue
        exprs = []
        for key in ("StartOn", "StopOn"):
            text = str(props.get(key, ""))
            try:
                exprs.append(parse_event_expr(text) if text else None)
            except ExprError:
                exprs.append(None)
        jobs.append(
            GraphJob(
                name,
                exprs[0],
                exprs[1],
                tuple(props.get("Emits", [])),
                str(props.get("BusName", "")),
                bool(props.get("Task", False)),
                str(props.get("InstanceTemplate", "")),
            )
        )
    return jobs


def _graph_jobs_from_files(paths: Sequence[str]) -> tuple[list[Any], list[str]]:
    from busmgr.config import load_directories, parse_job_file
    from busmgr.graph import GraphJob

    jobs, problems = [], []
    for text in paths:
        path = Path(text)
        if path.is_dir():
            result = load_directories([path])
            jobs += [GraphJob.of(c) for c in result.jobs.values()]
            problems += [str(d) for d in result.diagnostics if d.is_error]
        else:
            parsed = parse_job_file(path)
            problems += [str(d) for d in parsed.diagnostics if d.is_error]
            if parsed.job is not None:
                jobs.append(GraphJob.of(parsed.job))
    return jobs, problems


def _write_output(args: argparse.Namespace, out: TextIO, text: str, kind: str) -> int:
    """``text`` to stdout, or to ``-o FILE`` (rendered by Graphviz for a graph, by suffix)."""
    target: Path | None = args.output
    if target is None:
        out.write(text)
        out.flush()
        return EXIT_OK
    suffix = target.suffix.lower().lstrip(".")
    if kind == "plot" or suffix in ("dot", "gv", ""):
        target.write_text(text)
        return EXIT_OK
    import shutil
    import subprocess

    dot = shutil.which("dot")
    if dot is None:
        print(
            f"{PROG}: {args.verb}: Graphviz's `dot` is not installed; "
            f"write DOT with -o FILE.dot or to stdout",
            file=sys.stderr,
        )
        return EXIT_FAILED
    done = subprocess.run(
        [dot, f"-T{suffix}", "-o", str(target)], input=text.encode(), capture_output=True
    )
    if done.returncode != 0:
        print(f"{PROG}: {args.verb}: dot: {one_line(done.stderr.decode())}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


async def _run_graph(client: ManagerClient, args: argparse.Namespace, out: TextIO) -> int:
    from busmgr.graph import to_dot

    jobs = await _graph_jobs_from_manager(client)
    return _write_output(args, out, to_dot(jobs), "graph")


def _run_graph_offline(args: argparse.Namespace) -> int:
    from busmgr.graph import to_dot

    jobs, problems = _graph_jobs_from_files(args.paths)
    for line in problems:
        print(line, file=sys.stderr)
    return _write_output(args, sys.stdout, to_dot(jobs), "graph") or (
        EXIT_FAILED if problems and not jobs else EXIT_OK
    )


async def _run_plot(client: ManagerClient, args: argparse.Namespace, out: TextIO) -> int:
    import time

    from busmgr.plot import to_svg

    startup, runs = await client.get_timeline()
    return _write_output(args, out, to_svg(startup, runs, int(time.time() * 1e6)), "plot")


_RUNNERS: dict[str, ClientVerb] = {
    "start": _run_start,
    "stop": _run_stop,
    "restart": _run_restart,
}


def _report(action: str, err: BaseException) -> int | None:
    """The exit status for a failure of a client verb, after its one line on stderr; None if
    ``err`` is not a failure we know (it propagates)."""
    if is_error_reply(err):
        print(format_error(action, err), file=sys.stderr)
        return EXIT_USAGE if str(getattr(err, "type", "")) == ERROR_PREFIX + "InvalidArgs" else 1
    if isinstance(err, TimeoutError):
        print(
            f"{PROG}: {action}: no reply from {MANAGER_BUS_NAME} in {CALL_TIMEOUT:g} seconds",
            file=sys.stderr,
        )
        return EXIT_FAILED
    if isinstance(err, ManagerGone):
        print(f"{PROG}: {action}: {err}", file=sys.stderr)
        return EXIT_FAILED
    if isinstance(err, EOFError | ConnectionError) and not isinstance(err, BrokenPipeError):
        reason = str(err) or "the bus closed the connection"
        print(f"{PROG}: {action}: lost the connection to the bus: {reason}", file=sys.stderr)
        return EXIT_FAILED
    return None


def _client_main(args: argparse.Namespace) -> int:
    """Connect, run the verb, and turn every failure into one line on stderr."""
    action = describe_action(args)
    address = args.bus_address
    if not (getattr(args, "light", False) and blocking_supported(address)):
        import asyncio

        return asyncio.run(_client_main_async(args, action))
    try:
        bus = connect_blocking(address)
    except ConnectError as e:
        print(f"{PROG}: {action}: {e}", file=sys.stderr)
        return EXIT_FAILED
    try:
        return run_blocking(args.run(ManagerClient(bus), args, sys.stdout))
    except Exception as e:
        status = _report(action, e)
        if status is None:
            raise
        return status
    finally:
        bus.close()


async def _client_main_async(args: argparse.Namespace, action: str) -> int:
    """:func:`_client_main` over dbus-fast, on an event loop (verbs not marked ``light``)."""
    import contextlib

    try:
        bus = await connect(args.bus_address)
    except ConnectError as e:
        print(f"{PROG}: {action}: {e}", file=sys.stderr)
        return EXIT_FAILED
    try:
        return await args.run(ManagerClient(bus), args, sys.stdout)
    except Exception as e:
        status = _report(action, e)
        if status is None:
            raise
        return status
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


def _without_openssl() -> None:
    """Keep OpenSSL out of the manager process, before anything imports it.

    The manager never speaks TLS, yet asyncio imports ``ssl`` when it can (for TLS
    transports) and ``hashlib`` prefers OpenSSL's ``_hashlib``: mapping libssl and libcrypto
    costs the manager about 5 MiB of resident memory for nothing. Both work without them
    (asyncio then offers no TLS; ``hashlib`` uses its built-in SHA-256 for the cgroup name).
    Only the manager verbs do this: client verbs import neither asyncio nor hashlib."""
    for name in ("ssl", "_ssl", "_hashlib"):
        sys.modules.setdefault(name, None)  # type: ignore[assignment]


def _run_session(args: argparse.Namespace) -> int:
    _without_openssl()
    from busmgr.runtime import run_session

    return run_session(session_options(args))


def _run_daemon(args: argparse.Namespace) -> int:
    _without_openssl()
    from busmgr.runtime import run_daemon

    return run_daemon(daemon_options(args))


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
            return _run_graph_offline(args)
        if args.kind in ("client", "graph"):
            return _client_main(args)
        return args.run(args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`busmgr events -f | head`). Point stdout at /dev/null so that the
        # interpreter's final flush does not complain again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
