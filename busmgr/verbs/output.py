"""What ``busmgr`` shows, as pure functions: tables, status lines, error lines, event lines.

They take what the manager reported (:class:`busmgr.bus.client.InstanceInfo`, signal bodies,
error replies) and return text or the JSON values of ``--json``, so that they are tested
without a bus; :func:`print_line` and :func:`print_json` write one line and flush it, as every
verb does (a reader of ``events --follow`` sees each line as it happens). The richer views are
beside them: :mod:`busmgr.statusview` (``status JOB``), :mod:`busmgr.logview`,
:mod:`busmgr.graph`, :mod:`busmgr.plot`.
"""

from __future__ import annotations

import argparse
import shlex
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

from busmgr import ERROR_PREFIX
from busmgr.bus.client import InstanceInfo
from busmgr.verbs import PROG

#: Error-name prefixes dropped in messages: ours, and the bus daemon's.
_ERROR_PREFIXES = (ERROR_PREFIX, "org.freedesktop.DBus.Error.")

#: Manager signal -> the job event it reports.
JOB_SIGNAL_EVENTS = {
    "JobStarting": "starting",
    "JobStarted": "started",
    "JobStopping": "stopping",
    "JobStopped": "stopped",
}


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
    return format_event(JOB_SIGNAL_EVENTS[member], {**env, "JOB": job, "INSTANCE": instance})


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
        if member in JOB_SIGNAL_EVENTS:
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


def event_json(member: str, body: list[Any]) -> dict[str, Any] | None:
    """A manager signal as ``events --json`` prints it (None: not an event)."""
    if member in JOB_SIGNAL_EVENTS:
        job, instance, env = body
        return {
            "type": "event",
            "event": JOB_SIGNAL_EVENTS[member],
            "env": {**env, "JOB": job, "INSTANCE": instance},
        }
    if member == "EventEmitted":
        name, env = body
        return {"type": "event", "event": name, "env": dict(env)}
    return None


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


def status_line_with_reason(info: InstanceInfo) -> str:
    """The Upstart status line, and the reason of a failure: ``x stop/waiting, failed: ...``."""
    line = status_line(info)
    if info.result == "failed":
        line += f", failed: {info.reason}" if info.reason else ", failed"
    return line


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


def print_line(out: TextIO, line: str) -> None:
    """``line`` on ``out``, flushed at once (a reader may be following us)."""
    out.write(line + "\n")
    out.flush()


def print_json(out: TextIO, value: Any) -> None:
    """``value`` as one line of JSON (``json`` is imported by the verbs that print it only)."""
    import json

    print_line(out, json.dumps(value, ensure_ascii=False, sort_keys=True))
