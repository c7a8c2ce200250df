"""What the manager keeps in ``--state-dir`` to survive its own restart, as plain values.

Model: a :class:`Saved` value holds every job instance that is not simply at rest (its goal,
state, live processes, env, failure, respawn counters, readiness progress), the activation
environment, the start order, the cgroup hierarchy, the private bus and the session command.
It is written by :mod:`busmgr.statestore` as JSON and read back at start-up, after a re-exec
(``Reexec``) or a crash, by the manager's restore path.

A process is named by its pid *and* its start time (``/proc/PID/stat`` field 22, in clock
ticks since boot), and the whole snapshot by the boot it was taken in: a pid that was reused
meanwhile has another start time, and a snapshot from before a reboot is ignored, so restoring
never adopts a process that is not the one recorded.

Invariant: :func:`loads` never raises anything but :class:`SnapshotError` (whatever the file
holds), and ``loads(dumps(saved)) == saved``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from busmgr.job import Failure, Goal, Restored, State
from busmgr.jobclass import ProcessKind

__all__ = [
    "VERSION",
    "Saved",
    "SavedBus",
    "SavedFd",
    "SavedJob",
    "SavedProcess",
    "SavedSocket",
    "SnapshotError",
    "dump",
    "dumps",
    "loads",
    "pieces",
]

VERSION = 1


class SnapshotError(ValueError):
    """A state file that cannot be used (another format, another boot, garbage)."""


@dataclass(frozen=True)
class SavedProcess:
    """One process: its pid and when it started (clock ticks since boot)."""

    pid: int
    started: int


@dataclass(frozen=True)
class SavedJob:
    """One job instance and the processes it had."""

    job: str
    instance: str
    restored: Restored
    processes: Mapping[ProcessKind, SavedProcess] = field(default_factory=dict)


@dataclass(frozen=True)
class SavedBus:
    """The private bus of ``busmgr session``: its daemon, address and directory."""

    process: SavedProcess
    address: str
    directory: str


@dataclass(frozen=True)
class SavedFd:
    """A descriptor handed to the manager's next image across its exec: its number and the
    ``(st_dev, st_ino)`` of what it is open on (checked before the new image uses it)."""

    fd: int
    file: tuple[int, int]


@dataclass(frozen=True)
class SavedSocket:
    """A listening socket of the socket bridge: its key (kind, path, host, port), the
    descriptor, and the ``(st_dev, st_ino)`` of its Unix socket file (None: no file)."""

    key: tuple[str, str, str, int]
    fd: SavedFd
    path_file: tuple[int, int] | None


@dataclass(frozen=True)
class Saved:
    """Everything the manager needs to carry on. ``started``: ``startup`` was emitted.
    ``log_pipes`` (by log name) and ``sockets`` are only recorded for a re-exec: descriptors
    do not outlive a crash."""

    boot_id: str
    manager_pid: int
    started: bool
    jobs: tuple[SavedJob, ...] = ()
    start_order: tuple[tuple[str, str], ...] = ()
    activation_env: Mapping[str, str] = field(default_factory=dict)
    cgroup: str | None = None
    bus: SavedBus | None = None
    command: SavedProcess | None = None
    notify_address: str = ""
    log_pipes: tuple[tuple[str, SavedFd], ...] = ()
    sockets: tuple[SavedSocket, ...] = ()
    since: float = 0.0  # when the first manager of this state started (wall clock)
    # (job, instance, in its state since, running since or None), wall clock
    times: tuple[tuple[str, str, float, float | None], ...] = ()


# ------------------------------------------------------------------------------ to JSON
def _failure(failure: Failure | None) -> dict[str, Any] | None:
    if failure is None:
        return None
    return {
        "process": failure.process,
        "status": failure.status,
        "signal": failure.signal,
        "reason": failure.reason,
    }


def _job(saved: SavedJob) -> dict[str, Any]:
    r = saved.restored
    return {
        "job": saved.job,
        "instance": saved.instance,
        "goal": r.goal.value,
        "state": r.state.value,
        "env": dict(r.env),
        "processes": {k.value: [p.pid, p.started] for k, p in saved.processes.items()},
        "failure": _failure(r.failure),
        "last_exit": list(r.last_exit),
        "ready_reached": r.ready_reached,
        "pending_ready": sorted(r.pending_ready),
        "ready_deadline": r.ready_deadline,
        "respawns": r.respawns,
        "respawn_window": list(r.respawn_window),
        "status_text": r.status_text,
        "start_count": r.start_count,
    }


def dumps(saved: Saved) -> str:
    """The snapshot as JSON text."""
    return json.dumps(_data(saved), separators=(",", ":"), sort_keys=True)


def dump(saved: Saved, fh: TextIO) -> None:
    """The snapshot as JSON text, the same as :func:`dumps`, written to ``fh`` a job at a
    time (see :func:`pieces`)."""
    for piece in pieces(saved):
        fh.write(piece)


def pieces(saved: Saved) -> Iterator[str]:
    """The JSON text of :func:`dumps` in pieces, one per job (and the parts around them), so
    that a thousand jobs never become one string of megabytes in the manager's memory (which
    the allocator would keep afterwards) and a writer can stop between two jobs; each piece
    still goes through json's C encoder (``json.dump`` would take the pure-Python one), and
    each job's part is built only when its piece is asked for."""
    head, tail = json.dumps(_data(saved, jobs=False), separators=(",", ":"), sort_keys=True).split(
        '"jobs":[]', 1
    )

    def generate() -> Iterator[str]:
        yield head + '"jobs":['
        for index, job in enumerate(saved.jobs):
            text = json.dumps(_job(job), separators=(",", ":"), sort_keys=True)
            yield ("," if index else "") + text
        yield "]" + tail

    return generate()


def _data(saved: Saved, *, jobs: bool = True) -> dict[str, Any]:
    """The snapshot as JSON values (``jobs``: with the jobs, else with an empty list)."""
    data: dict[str, Any] = {
        "version": VERSION,
        "boot_id": saved.boot_id,
        "manager_pid": saved.manager_pid,
        "started": saved.started,
        "jobs": [_job(j) for j in saved.jobs] if jobs else [],
        "start_order": [list(pair) for pair in saved.start_order],
        "activation_env": dict(saved.activation_env),
        "cgroup": saved.cgroup,
        "bus": None
        if saved.bus is None
        else {
            "process": [saved.bus.process.pid, saved.bus.process.started],
            "address": saved.bus.address,
            "directory": saved.bus.directory,
        },
        "command": None if saved.command is None else [saved.command.pid, saved.command.started],
        "notify_address": saved.notify_address,
        "since": saved.since,
        "times": [list(t) for t in saved.times],
        "log_pipes": [[name, f.fd, *f.file] for name, f in saved.log_pipes],
        "sockets": [
            [list(s.key), s.fd.fd, *s.fd.file, None if s.path_file is None else list(s.path_file)]
            for s in saved.sockets
        ],
    }
    return data


# ------------------------------------------------------------------------------ from JSON
def _typed(value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise SnapshotError(f"{what}: expected {getattr(kind, '__name__', kind)}")
    return value


def _strmap(value: Any, what: str) -> dict[str, str]:
    _typed(value, dict, what)
    for k, v in value.items():
        _typed(k, str, what)
        _typed(v, str, what)
    return dict(value)


def _process(value: Any, what: str) -> SavedProcess:
    _typed(value, list, what)
    if len(value) != 2:
        raise SnapshotError(f"{what}: expected [pid, started]")
    return SavedProcess(_typed(value[0], int, what), _typed(value[1], int, what))


def _pair(value: Any, what: str) -> tuple[int, int]:
    _typed(value, list, what)
    if len(value) != 2:
        raise SnapshotError(f"{what}: expected [dev, ino]")
    return _typed(value[0], int, what), _typed(value[1], int, what)


def _load_pipe(value: Any) -> tuple[str, SavedFd]:
    _typed(value, list, "log pipe")
    if len(value) != 4:
        raise SnapshotError("log pipe: expected [name, fd, dev, ino]")
    name = _typed(value[0], str, "log pipe")
    return name, SavedFd(_typed(value[1], int, "log pipe"), _pair(value[2:], "log pipe"))


def _load_socket(value: Any) -> SavedSocket:
    _typed(value, list, "socket")
    if len(value) != 5:
        raise SnapshotError("socket: expected [key, fd, dev, ino, file]")
    key = _typed(value[0], list, "socket key")
    if len(key) != 4:
        raise SnapshotError("socket key: expected 4 items")
    return SavedSocket(
        (
            _typed(key[0], str, "socket key"),
            _typed(key[1], str, "socket key"),
            _typed(key[2], str, "socket key"),
            _typed(key[3], int, "socket key"),
        ),
        SavedFd(_typed(value[1], int, "socket"), _pair(value[2:4], "socket")),
        None if value[4] is None else _pair(value[4], "socket file"),
    )


def _load_times(value: Any) -> tuple[str, str, float, float | None]:
    _typed(value, list, "times")
    if len(value) != 4:
        raise SnapshotError("times: expected [job, instance, since, running since]")
    running = value[3]
    return (
        _typed(value[0], str, "times"),
        _typed(value[1], str, "times"),
        float(_typed(value[2], (int, float), "times")),
        None if running is None else float(_typed(running, (int, float), "times")),
    )


def _optint(value: Any, what: str) -> int | None:
    return None if value is None else _typed(value, int, what)


def _load_failure(value: Any) -> Failure | None:
    if value is None:
        return None
    _typed(value, dict, "failure")
    return Failure(
        _typed(value.get("process"), str, "failure process"),
        _optint(value.get("status"), "failure status"),
        _optint(value.get("signal"), "failure signal"),
        _typed(value.get("reason", ""), str, "failure reason"),
    )


def _load_job(value: Any) -> SavedJob:
    _typed(value, dict, "job")
    try:
        goal, state = Goal(value["goal"]), State(value["state"])
        processes = {
            ProcessKind(k): _process(v, "process")
            for k, v in _typed(value["processes"], dict, "processes").items()
        }
        window = _typed(value["respawn_window"], list, "respawn window")
        last = _typed(value["last_exit"], list, "last exit")
        restored = Restored(
            goal=goal,
            state=state,
            env=_strmap(value["env"], "env"),
            pids={k: p.pid for k, p in processes.items()},
            failure=_load_failure(value["failure"]),
            last_exit=(_optint(last[0], "last exit"), _optint(last[1], "last exit")),
            ready_reached=_typed(value["ready_reached"], bool, "ready_reached"),
            pending_ready=frozenset(_typed(value["pending_ready"], list, "pending_ready")),
            ready_deadline=float(_typed(value["ready_deadline"], (int, float), "deadline")),
            respawns=_typed(value["respawns"], int, "respawns"),
            respawn_window=(
                float(_typed(window[0], (int, float), "respawn window")),
                _typed(window[1], int, "respawn window"),
            ),
            status_text=_typed(value["status_text"], str, "status_text"),
            start_count=_typed(value["start_count"], int, "start_count"),
        )
        return SavedJob(
            _typed(value["job"], str, "job name"),
            _typed(value["instance"], str, "instance"),
            restored,
            processes,
        )
    except (KeyError, IndexError, ValueError) as err:
        raise SnapshotError(f"bad job record: {err}") from None


def loads(text: str, boot_id: str) -> Saved:
    """Read a snapshot; raises :class:`SnapshotError` for anything unusable, including a
    snapshot taken before the last boot (its pids mean nothing now)."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as err:
        raise SnapshotError(f"not JSON: {err}") from None
    _typed(data, dict, "state")
    if data.get("version") != VERSION:
        raise SnapshotError(f"state format {data.get('version')!r}, not {VERSION}")
    if data.get("boot_id") != boot_id:
        raise SnapshotError("written before the last boot")
    try:
        bus = data.get("bus")
        return Saved(
            boot_id=boot_id,
            manager_pid=_typed(data["manager_pid"], int, "manager_pid"),
            started=_typed(data["started"], bool, "started"),
            jobs=tuple(_load_job(j) for j in _typed(data["jobs"], list, "jobs")),
            start_order=tuple(
                (_typed(p[0], str, "start order"), _typed(p[1], str, "start order"))
                for p in _typed(data["start_order"], list, "start order")
            ),
            activation_env=_strmap(data["activation_env"], "activation_env"),
            cgroup=None if data["cgroup"] is None else _typed(data["cgroup"], str, "cgroup"),
            bus=None
            if bus is None
            else SavedBus(
                _process(_typed(bus, dict, "bus")["process"], "bus process"),
                _typed(bus["address"], str, "bus address"),
                _typed(bus["directory"], str, "bus directory"),
            ),
            command=None if data["command"] is None else _process(data["command"], "command"),
            notify_address=_typed(data.get("notify_address", ""), str, "notify_address"),
            log_pipes=tuple(
                _load_pipe(p) for p in _typed(data.get("log_pipes", []), list, "log pipes")
            ),
            since=float(_typed(data.get("since", 0.0), (int, float), "since")),
            times=tuple(_load_times(t) for t in _typed(data.get("times", []), list, "times")),
            sockets=tuple(
                _load_socket(s) for s in _typed(data.get("sockets", []), list, "sockets")
            ),
        )
    except (KeyError, IndexError, TypeError) as err:
        raise SnapshotError(f"bad state: {err}") from None
