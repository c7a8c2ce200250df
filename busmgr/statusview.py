"""What ``busmgr status JOB`` shows of one instance, as text and as JSON: pure functions.

Input: the properties the manager reports (``org.busmgr.Instance1`` and ``org.busmgr.Job1``,
unwrapped, as :meth:`busmgr.bus.client.ManagerClient.get_all` returns them), the process tree
(:func:`process_tree`, read from ``/proc`` on this machine) and the last lines of the log.
Output: lines, as ``systemctl status`` lays them out::

    hello start/running, process 1234
        Description: a greeting service
         Goal/State: start/running since Sun 2026-11-29 20:16:20 UTC (3min 2s ago)
          Processes: 1234 main sleep 1000
                     └─1240 sleep 5
             Result: ok
       Last failure: main exited with status 1, 3min 5s ago (respawned 1 time)
           Bus name: org.example.Hello
             Source: /home/u/.config/busmgr/services.d/hello.conf
                Log: /home/u/.local/state/busmgr/log/hello.log

    <the last lines of the log>

Timestamps are ``t`` properties (microseconds since the epoch, 0 for never).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "format_duration",
    "format_status",
    "format_timestamp",
    "process_tree",
    "status_json",
]


def format_duration(seconds: float) -> str:
    """``3723.4`` -> ``1h 2min 3s``; under a second: ``450ms``; never negative."""
    seconds = max(seconds, 0.0)
    if seconds < 1:
        return f"{int(seconds * 1000)}ms"
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = []
    if days:
        parts.append(f"{days}d")
    if hours:
        parts.append(f"{hours}h")
    if minutes:
        parts.append(f"{minutes}min")
    if secs or not parts:
        parts.append(f"{secs}s")
    return " ".join(parts[:3])


def format_timestamp(usec: int, now: float) -> str:
    """``Sun 2026-11-29 20:16:20 UTC (3min 2s ago)``; ``""`` for 0 (never)."""
    if not usec:
        return ""
    wall = usec / 1_000_000
    text = time.strftime("%a %Y-%m-%d %H:%M:%S %Z", time.localtime(wall))
    return f"{text} ({format_duration(now - wall)} ago)"


def _read(path: str) -> str:
    try:
        with open(path, "rb") as fh:
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


def _command(pid: int) -> str:
    argv = _read(f"/proc/{pid}/cmdline").rstrip("\0").split("\0")
    text = " ".join(a for a in argv if a) or _read(f"/proc/{pid}/comm").strip()
    return text or "?"


def _parent(pid: int) -> int:
    stat = _read(f"/proc/{pid}/stat")
    # The command may hold spaces and parentheses: the fields start after the last ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    return int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else 0


def process_tree(
    rows: Iterable[Sequence[Any]],
    parent: Any = _parent,
    command: Any = _command,
) -> list[str]:
    """``Processes`` rows ``(kind, pid)`` as a tree by parent pid (``/proc``), each line
    ``PID KIND COMMAND`` (kind only for the processes the job spawned, not ``other``)."""
    kinds = {int(pid): str(kind) for kind, pid in rows}
    parents = {pid: parent(pid) for pid in kinds}
    children: dict[int, list[int]] = {}
    roots = []
    for pid in kinds:
        if parents[pid] in kinds and parents[pid] != pid:
            children.setdefault(parents[pid], []).append(pid)
        else:
            roots.append(pid)
    lines: list[str] = []

    def walk(pid: int, prefix: str, branch: str, seen: frozenset[int]) -> None:
        kind = kinds[pid]
        label = f"{pid} {kind} {command(pid)}" if kind != "other" else f"{pid} {command(pid)}"
        lines.append(f"{prefix}{branch}{label}")
        kids = [k for k in sorted(children.get(pid, [])) if k not in seen]
        inner = prefix + ("" if not branch else ("   " if branch == "└─" else "│  "))
        for i, kid in enumerate(kids):
            walk(kid, inner, "└─" if i == len(kids) - 1 else "├─", seen | {pid})

    for root in sorted(roots, key=lambda p: (kinds[p] != "main", p)):
        walk(root, "", "", frozenset())
    return lines


def _status_head(props: Mapping[str, Any]) -> str:
    name = f"{props['Job']} ({props['Instance']})" if props.get("Instance") else props["Job"]
    line = f"{name} {props.get('Goal', 'stop')}/{props.get('State', 'waiting')}"
    pid = int(props.get("MainPID", 0) or 0)
    return f"{line}, process {pid}" if pid else line


def format_status(
    props: Mapping[str, Any],
    job: Mapping[str, Any],
    tree: Sequence[str],
    log_lines: Sequence[str],
    now: float,
) -> list[str]:
    """The lines of ``status`` for one instance; see the module docstring."""
    fields: list[tuple[str, str]] = []
    if job.get("Description"):
        fields.append(("Description", str(job["Description"])))
    state = f"{props.get('Goal', 'stop')}/{props.get('State', 'waiting')}"
    since = format_timestamp(int(props.get("StateTimestamp", 0) or 0), now)
    fields.append(("Goal/State", f"{state} since {since}" if since else state))
    running = int(props.get("RunningTimestamp", 0) or 0)
    if running:
        fields.append(("Uptime", format_duration(now - running / 1_000_000)))
    for i, line in enumerate(tree):
        fields.append(("Processes" if i == 0 else "", line))
    if props.get("Result") == "failed":
        fields.append(("Result", f"failed: {props.get('ResultReason') or 'unknown reason'}"))
    elif props.get("Result"):
        fields.append(("Result", str(props["Result"])))
    if props.get("ExitSignal"):
        fields.append(("Last exit", f"main killed by signal {props['ExitSignal']}"))
    elif int(props.get("ExitStatus", -1)) >= 0:
        fields.append(("Last exit", f"main exited with status {props['ExitStatus']}"))
    respawns = int(props.get("Respawns", 0) or 0)
    last = str(props.get("LastFailure", ""))
    if last and (props.get("Result") != "failed" or last != props.get("ResultReason")):
        when = int(props.get("LastFailureTimestamp", 0) or 0)
        ago = f", {format_duration(now - when / 1_000_000)} ago" if when else ""
        fields.append(("Last failure", f"{last}{ago}"))
    if respawns:
        fields.append(("Respawned", f"{respawns} time{'s' if respawns != 1 else ''}"))
    if props.get("BusName"):
        fields.append(("Bus name", str(props["BusName"])))
    if props.get("StatusText"):
        fields.append(("Status", str(props["StatusText"])))
    source = props.get("Source") or job.get("Source")
    if source:
        fields.append(("Source", str(source)))
    if props.get("LogPath"):
        fields.append(("Log", str(props["LogPath"])))
    width = max(len(k) for k, _ in fields)
    lines = [_status_head(props)]
    lines += [f"    {k.rjust(width)}{':' if k else ' '} {v}" for k, v in fields]
    if log_lines:
        lines.append("")
        lines += [f"    {ln}" for ln in log_lines]
    return lines


def status_json(
    props: Mapping[str, Any], job: Mapping[str, Any], log_lines: Sequence[str]
) -> dict[str, Any]:
    """One instance for ``status --json``: its properties by their bus names (timestamps in
    microseconds), ``JobProperties`` those of its job, ``LogTail`` the last log lines."""
    out: dict[str, Any] = {k: _plain(v) for k, v in props.items()}
    out["JobProperties"] = {k: _plain(v) for k, v in job.items()}
    out["LogTail"] = list(log_lines)
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value
