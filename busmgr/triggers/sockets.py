"""The socket bridge: busmgr holds each job's listening sockets; a connection starts the job.

Model (launchd's and systemd's socket activation, as an Upstart bridge): for every job with
``socket`` stanzas, the bridge creates the listening sockets when the job is loaded and keeps
them open for as long as the job declares them, across starts, stops, restarts and reloads. The
job's main process gets them as descriptors 3, 4, ... by the ``LISTEN_FDS`` protocol
(:meth:`SocketBridge.listen_fds`, called by the supervisor at each spawn of main), and accepts
on them itself; the manager never accepts a connection.

While the job is at rest (``waiting`` with goal stop) the bridge watches its sockets; the first
one that becomes readable (a connection is waiting) is the event::

    socket PROTO=unix SOCKET_PATH=/run/app.sock     (or PROTO=tcp ADDR=127.0.0.1 PORT=8080)

which the job's ``activated_by`` matches (one leaf per socket, added by the parser), so it goes
through the ordinary event queue and starts the job. While the job is anywhere else (starting,
running, stopping, restarting) the sockets are not watched: connections wait in the socket's
backlog and are accepted by the next main process. So a connection made while the job is down
or restarting is served once it is up, never refused. When the job comes back to rest with a
connection still waiting, it is started again.

Trigger limit: a job that keeps coming back to rest without taking the waiting connection (it
fails at once, or exits without accepting) would be started again and again. More than
:data:`TRIGGER_BURST` activations within :data:`TRIGGER_INTERVAL` seconds pause the job's
activation, with an error in the log; its sockets stay open (clients wait, they are not
refused), and any other start of the job (``busmgr start``, an event) or a reload resumes it.

Failures are the job's alone: a socket that cannot be created (a port in use, a missing
directory, a path held by a live socket of another program) is logged as
``FILE:LINE: socket ...: reason``; the job's sockets are tried again when it is started, and a
start fails (``JobFailed``, naming the socket) while one still cannot be created.

Invariants: a socket address is held at most once (for the first job by name that declares
it); a Unix socket file is created by the bridge and removed by it (only if it is still the one
it created) when no job declares it any more or the manager exits; sockets are blocking (the job
inherits the open file description, flags included) and close-on-exec in the manager.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import stat
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from busmgr.events import Event
from busmgr.job import Goal, Job, State
from busmgr.jobclass import SOCKET_ACTIVATION, JobClass, SocketKind, SocketSpec
from busmgr.process import Listen, SpawnError

log = logging.getLogger("busmgr")

__all__ = ["SocketBridge", "open_socket"]

#: At most this many socket activations of one job ...
TRIGGER_BURST = 20
#: ... within this many seconds (systemd's defaults for sockets that pass a listener).
TRIGGER_INTERVAL = 2.0

Key = tuple[str, str, str, int]


@dataclass
class _Held:
    """A socket the bridge holds: for which job, and the identity of its file (if any)."""

    spec: SocketSpec
    sock: socket.socket
    owner: str
    inode: tuple[int, int] | None
    watched: bool = False


@dataclass
class _Group:
    """The activation state of one job with sockets."""

    name: str
    source: str
    keys: list[Key] = field(default_factory=list)
    active: bool = False  # the job left rest since the bridge last saw it at rest
    triggered: bool = False  # an activation event went out and the job has not left rest yet
    paused: bool = False  # the trigger limit was hit
    recent: deque[float] = field(default_factory=deque)


def _clear_stale(path: str) -> None:
    """Remove a socket file nobody listens on (a previous manager's); refuse anything else."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise OSError(errno.EEXIST, f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # stale: nobody listens
        return
    except FileNotFoundError:
        return
    except BlockingIOError:
        pass  # someone listens and its backlog is full
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, f"{path} is in use by another program")


def open_socket(spec: SocketSpec) -> tuple[socket.socket, tuple[int, int] | None]:
    """Create, bind and listen on ``spec``; the socket and its file's ``(dev, ino)``.

    Raises ``OSError`` whose ``strerror`` says why (``Address already in use``, ``directory
    /run/app does not exist``...).
    """
    if spec.kind is SocketKind.UNIX:
        return _open_unix(spec)
    return _open_tcp(spec), None


def _open_unix(spec: SocketSpec) -> tuple[socket.socket, tuple[int, int] | None]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if spec.path.startswith("@"):
            sock.bind("\0" + spec.path[1:])
            inode = None
        else:
            directory = os.path.dirname(spec.path)
            if not os.path.isdir(directory):
                raise OSError(errno.ENOENT, f"directory {directory} does not exist")
            _clear_stale(spec.path)
            sock.bind(spec.path)
            os.chmod(spec.path, spec.mode)
            st = os.lstat(spec.path)
            inode = (st.st_dev, st.st_ino)
        sock.listen(socket.SOMAXCONN)
    except BaseException:
        sock.close()
        raise
    return sock, inode


def _open_tcp(spec: SocketSpec) -> socket.socket:
    if spec.host == "*":
        try:
            sock = _bind_tcp(socket.AF_INET6, "::", spec.port, dual=True)
        except OSError as err:
            if err.errno not in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
                raise
            sock = _bind_tcp(socket.AF_INET, "0.0.0.0", spec.port)
        return sock
    family = socket.AF_INET6 if ":" in spec.host else socket.AF_INET
    return _bind_tcp(family, spec.host, spec.port)


def _bind_tcp(family: int, host: str, port: int, *, dual: bool = False) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if dual:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
        sock.listen(socket.SOMAXCONN)
    except BaseException:
        sock.close()
        raise
    return sock


def _close(held: _Held) -> None:
    held.sock.close()
    if held.inode is None:
        return
    with contextlib.suppress(OSError):
        st = os.lstat(held.spec.path)
        if (st.st_dev, st.st_ino) == held.inode:
            os.unlink(held.spec.path)


def _spec_of(key: Key) -> SocketSpec:
    """A spec with just enough of ``key`` to close the socket it names (its path)."""
    kind, path, host, port = key
    return SocketSpec(SocketKind(kind), path=path, host=host, port=port)


def _reason(err: OSError) -> str:
    return err.strerror or str(err)


def _at_rest(job: Job) -> bool:
    return job.state is State.WAITING and job.goal is Goal.STOP


class SocketBridge:
    """Holds the jobs' sockets and turns connections into activation events.

    ``emit(event)`` queues an event (the manager's ``EventQueue.emit``); ``instance(name)`` is
    the one instance of the job ``name`` (jobs with sockets have no ``instance``), or None.
    Told of every job change through :meth:`job_changed` (the manager subscribes it as an
    observer).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        emit: Callable[[Event], object],
        instance: Callable[[str], Job | None],
    ) -> None:
        self._loop = loop
        self._emit = emit
        self._instance = instance
        self._held: dict[Key, _Held] = {}
        self._groups: dict[str, _Group] = {}
        self._failed: dict[tuple[Key, str], str] = {}  # (key, job) -> the reason last logged
        # Sockets the manager's previous image handed over (a re-exec), until a job holds them.
        self._adopted: dict[Key, tuple[socket.socket, tuple[int, int] | None]] = {}

    # ------------------------------------------------------------------ following the jobs
    def update(self, classes: Iterable[JobClass]) -> None:
        """Follow the ``socket`` stanzas of ``classes`` (all the manager's current classes)."""
        wanted: dict[Key, tuple[JobClass, SocketSpec]] = {}
        groups: dict[str, _Group] = {}
        for cls in sorted(classes, key=lambda c: c.name):
            if not cls.sockets:
                continue
            group = self._groups.get(cls.name) or _Group(cls.name, cls.source)
            group.source = cls.source
            group.keys = []
            group.paused = False  # a reload resumes a paused activation
            group.recent.clear()
            for spec in cls.sockets:
                first = wanted.get(spec.key)
                if first is not None:
                    self._fail(cls, spec, f'already held for job "{first[0].name}"')
                    continue
                wanted[spec.key] = (cls, spec)
                group.keys.append(spec.key)
            groups[cls.name] = group
        for name in set(self._groups) - set(groups):
            self._disarm(self._groups[name])
        for key in list(self._held):
            if key not in wanted:
                self._unwatch(self._held[key])
                _close(self._held.pop(key))
        for failed in list(self._failed):
            if failed[0] not in wanted:
                del self._failed[failed]
        self._groups = groups
        for cls, spec in wanted.values():
            self._hold(cls, spec)
        for key in list(self._adopted):  # handed over, but no job declares it any more
            sock, inode = self._adopted.pop(key)
            _close(_Held(_spec_of(key), sock, "", inode))
        for group in groups.values():
            self._refresh(group)

    def _hold(self, cls: JobClass, spec: SocketSpec) -> _Held | None:
        """The socket for ``spec``, held for ``cls`` (created if need be); None on failure,
        which is logged once per reason."""
        held = self._held.get(spec.key)
        if held is not None:
            if held.owner != cls.name:
                self._unwatch(held)
                held.owner = cls.name
            if held.inode is not None and held.spec.mode != spec.mode:
                with contextlib.suppress(OSError):
                    os.chmod(spec.path, spec.mode)
            held.spec = spec
            return held
        adopted = self._adopted.pop(spec.key, None)
        try:
            sock, inode = adopted if adopted is not None else open_socket(spec)
        except OSError as err:
            self._fail(cls, spec, _reason(err))
            return None
        self._failed.pop((spec.key, cls.name), None)
        held = self._held[spec.key] = _Held(spec, sock, cls.name, inode)
        log.debug("%s: listening on %s", cls.name, spec)
        return held

    def _fail(self, cls: JobClass, spec: SocketSpec, reason: str) -> None:
        if self._failed.get((spec.key, cls.name)) == reason:
            return
        self._failed[(spec.key, cls.name)] = reason
        where = f"{cls.source}:{spec.line}" if cls.source else cls.name
        log.error("%s: socket %s: %s (job %s)", where, spec, reason, cls.name)

    # ------------------------------------------------------------------ across an exec
    def held(self) -> list[tuple[Key, int, tuple[int, int] | None]]:
        """Every socket held: its key, descriptor and socket file's ``(dev, ino)``."""
        return [(key, h.sock.fileno(), h.inode) for key, h in self._held.items()]

    def adopt(self, key: Key, fd: int, inode: tuple[int, int] | None) -> None:
        """Take over a socket the manager's previous image held (listed by :meth:`held`,
        checked by the caller); the job that declares ``key`` gets it at the next update,
        instead of a new one, so a running job keeps listening on the socket clients reach."""
        sock = socket.socket(fileno=fd)
        sock.set_inheritable(False)
        self._adopted[key] = (sock, inode)

    def detach(self) -> None:
        """The manager is about to exec: stop watching, and keep every socket open and its
        file in place for the next image."""
        for group in self._groups.values():
            self._disarm(group)

    def close(self) -> None:
        """Close every socket (removing the files the bridge created)."""
        for group in self._groups.values():
            self._disarm(group)
        for held in self._held.values():
            _close(held)
        self._held.clear()
        self._groups.clear()

    # ------------------------------------------------------------------ the supervisor's side
    def listen_fds(self, job: Job) -> Listen | None:
        """The sockets ``job``'s main process gets, in stanza order; None if it has none.

        A socket that could not be created before is tried again now; raises ``SpawnError``
        naming the socket if it still cannot be (the start then fails).
        """
        cls = job.jobclass
        if not cls.sockets:
            return None
        fds: list[int] = []
        for spec in cls.sockets:
            held = self._held.get(spec.key)
            if held is not None and held.owner != cls.name:
                raise SpawnError(f"socket {spec}", f'held for job "{held.owner}"')
            if held is None:
                held = self._hold(cls, spec)
            if held is None:
                reason = self._failed.get((spec.key, cls.name), "cannot be created")
                raise SpawnError(f"socket {spec}", reason)
            fds.append(held.sock.fileno())
        name = job.name.replace(":", "_")
        return Listen(tuple(fds), (name,) * len(fds))

    # ------------------------------------------------------------------ activation
    def job_changed(self, job: Job) -> None:
        """Watch the job's sockets while it is at rest, and only then."""
        group = self._groups.get(job.name)
        if group is None or job.instance:
            return
        if _at_rest(job):
            if group.active:
                group.active = False
                group.triggered = False
        else:
            group.active = True
            if group.paused and job.goal is not Goal.STOP:
                log.info("%s: socket activation resumed", job.name)
                group.paused = False
                group.recent.clear()
        self._refresh(group)

    def _refresh(self, group: _Group) -> None:
        job = self._instance(group.name)
        if job is None or not _at_rest(job) or group.triggered or group.paused:
            self._disarm(group)
            return
        for key in group.keys:
            held = self._held.get(key)
            if held is not None and held.owner == group.name and not held.watched:
                held.watched = True
                self._loop.add_reader(held.sock.fileno(), self._readable, group, key)

    def _disarm(self, group: _Group) -> None:
        for key in group.keys:
            held = self._held.get(key)
            if held is not None and held.owner == group.name:
                self._unwatch(held)

    def _unwatch(self, held: _Held) -> None:
        if held.watched:
            held.watched = False
            self._loop.remove_reader(held.sock.fileno())

    def _readable(self, group: _Group, key: Key) -> None:
        """A connection waits on ``key`` while the job is at rest: activate it (once)."""
        self._disarm(group)
        held = self._held.get(key)
        if held is None or group.triggered or group.paused:
            return
        now = self._loop.time()
        recent = group.recent
        while recent and now - recent[0] > TRIGGER_INTERVAL:
            recent.popleft()
        if len(recent) >= TRIGGER_BURST:
            group.paused = True
            log.error(
                "%s: socket activation paused: activated %d times within %gs and a connection "
                "still waits; the sockets stay open; start the job or reload to resume",
                group.name,
                len(recent),
                TRIGGER_INTERVAL,
            )
            return
        recent.append(now)
        group.triggered = True
        self._emit(Event.make(SOCKET_ACTIVATION, held.spec.event_env()))
