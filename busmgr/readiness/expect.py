"""``expect stop|fork|daemon|notify``: when a job's main process counts as ready.

One :class:`ExpectReadiness` per manager, held by the supervisor (a plain member, made at
start-up). The supervisor calls :meth:`ExpectReadiness.before_main` just before it spawns the
main process of an ``expect`` job, :meth:`ExpectReadiness.watch` from ``watch_readiness``, and
tells it about exits (:meth:`ExpectReadiness.main_exited`,
:meth:`ExpectReadiness.orphan_exited`). The outcome is always one of
``job.ready("expect", main_pid=...)`` or ``job.ready_failed(...)``, only while the job is in
``spawned`` waiting for ``expect`` (a stop or the ready timeout end the wait from the job's side).

``expect stop``
    The main process raises SIGSTOP when it is ready. The :class:`~busmgr.process.Reaper` reports
    the stop (``WUNTRACED``); the job becomes ready, then busmgr sends SIGCONT.

``expect fork`` / ``expect daemon`` (follow one or two forks to the daemon)
    Readiness is the convention every forking daemon follows: the original process exits with
    status 0 once the daemon is set up (systemd's ``Type=forking`` relies on the same). Then the
    daemon is found among the job's processes, with two sources of truth:

    * where the kernel's process events connector works (root in the initial pid namespace),
      every fork is seen as it happens, so the generation of each descendant of main is known
      exactly: the daemon is the live generation-1 (fork) or generation-2 (daemon) process.
      While only shallower generations live, the wait goes on (the seed 003 test program's
      first child may not have forked yet when its parent exits);
    * elsewhere (or with ``BUSMGR_FORK_EVENTS=0``), the daemon is a live child of the manager,
      i.e. re-parented to the subreaper when its parent exited, that was not there before
      main was spawned and belongs to the job (see :meth:`ExpectReadiness._by_survival`). For
      ``expect daemon`` a candidate that still has a child is the intermediate of a double
      fork and is waited out. Limitation: a program whose first child has not forked yet
      when the parent exits is taken at that first child (and the job then ends when that
      child exits); daemons that wait for their daemon to be set up before the parent exits
      (dnsmasq, ``daemon(3)`` with a pipe) are followed correctly, as is ``expect fork``.

    In both, the daemon must be the manager's child before it counts (the intermediate has
    exited), so the Reaper gets its exit. Failure cases: main exits non-zero or by a signal
    (the job fails it, see :meth:`busmgr.job.Job._main_exited`); main exits 0 and no daemon is
    left (``ready_failed``).

    Why not ptrace (what Upstart did): tracing stops the daemon at every fork and every signal,
    a bug or a crash of the manager leaves it stopped, and a traced setuid program loses its
    privileges; the cgroup (or the subreaper) already keeps the daemon in the job, so watching
    passively is enough.

``expect notify``
    One datagram socket per manager in the abstract namespace (``NOTIFY_SOCKET=@busmgr-...``:
    no file to clean up, and a job running as another user can reach it without a directory
    it may traverse). ``SO_PASSCRED`` makes the kernel attach each sender's pid; a message
    counts only if that pid is a process of some ``expect notify`` job's scope, and acts on that
    job alone: ``READY=1`` (ready), ``STATUS=...`` (``StatusText``), ``MAINPID=N`` (the main
    process, if N is the job's). A sender that has exited before its message is read cannot be
    checked and is ignored.
"""

from __future__ import annotations

import array
import asyncio
import logging
import os
import secrets
import signal
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from busmgr import process
from busmgr.job import Job, State
from busmgr.jobclass import ExpectMode, decimal
from busmgr.scope import ProcessScope

log = logging.getLogger("busmgr")

__all__ = ["ExpectHost", "ExpectReadiness"]

_FORKS = {ExpectMode.FORK: 1, ExpectMode.DAEMON: 2}
_UCRED = struct.Struct("=iII")  # pid, uid, gid
_MAX_DATAGRAM = 4096


class ExpectHost(Protocol):
    """What ``expect`` readiness needs from the supervisor."""

    loop: asyncio.AbstractEventLoop
    reaper: process.Reaper

    def jobs(self) -> Iterable[Job]:
        """Every job instance."""
        ...

    def scope(self, job: Job) -> ProcessScope: ...

    def adopt(self, job: Job, pid: int) -> None:
        """``pid`` is now the job's main process (the daemon a fork led to, or ``MAINPID``)."""
        ...

    def changed(self, job: Job) -> None: ...


@dataclass
class _Follow:
    """Following one ``expect fork|daemon`` job from its main process to the daemon.

    ``before`` are the scope's pids from before main was spawned (never the daemon);
    ``generation`` maps each known descendant of main to its depth (main is 0), filled by fork
    events in the order they happened; ``main_gone`` is set once main exited with status 0.
    """

    job: Job
    forks: int
    before: frozenset[int]
    main: int = 0
    generation: dict[int, int] = field(default_factory=dict)
    main_gone: bool = False


class ExpectReadiness:
    """The ``expect`` machinery of one manager. Invariant: a :class:`_Follow` exists exactly
    while its job may still become ready through a fork (dropped on any outcome); the fork
    events subscription is open exactly while some follow exists and the kernel offers it."""

    def __init__(self, host: ExpectHost) -> None:
        self.host = host
        self._follows: dict[Job, _Follow] = {}
        self._events: process.ForkEvents | None = None
        self._notify: socket.socket | None = None
        self.notify_address = ""

    # ------------------------------------------------------------------ wiring from the host
    def before_main(self, job: Job) -> None:
        """Main of ``job`` is about to be spawned (the host calls this right before)."""
        expect = job.jobclass.expect
        if expect in _FORKS:
            before = frozenset(self.host.scope(job).pids()) | set(process.child_pids(os.getpid()))
            self._follows[job] = _Follow(job, _FORKS[expect], before)
            if self._events is None and os.environ.get("BUSMGR_FORK_EVENTS", "1") != "0":
                self._events = process.ForkEvents.open(self.host.loop, self._forked)
        elif expect is ExpectMode.NOTIFY:
            self._open_notify()

    def spawn_env(self, job: Job) -> dict[str, str]:
        """Variables every process of ``job`` gets (``NOTIFY_SOCKET`` for ``expect notify``)."""
        if job.jobclass.expect is ExpectMode.NOTIFY:
            self._open_notify()
            return {"NOTIFY_SOCKET": self.notify_address}
        return {}

    def watch(self, job: Job) -> None:
        """Begin watching ``expect`` for ``job``, which is in ``spawned`` with main running."""
        expect = job.jobclass.expect
        main = job.main_pid
        if expect is ExpectMode.STOP:
            self.host.reaper.watch_stop(main, lambda pid: self._stopped(job, pid))
        elif expect in _FORKS:
            follow = self._follows.get(job)
            if follow is None:  # before_main was not called: follow without a snapshot
                follow = self._follows[job] = _Follow(job, _FORKS[expect], frozenset())
            follow.main = main
            follow.generation = {main: 0}
        elif expect is ExpectMode.NOTIFY:
            self._open_notify()

    def main_exited(self, job: Job, pid: int, info: process.ExitInfo) -> None:
        """The main process ``pid`` of ``job`` was reaped (after the job heard of it)."""
        follow = self._follows.get(job)
        if follow is None or follow.main != pid:
            return
        if info.status == 0 and info.signal is None:
            follow.main_gone = True
            self._settle(follow)
        else:
            self._drop(job)  # the job failed the start itself

    def orphan_exited(self, pid: int) -> None:
        """A re-parented process was reaped: an intermediate may be gone now."""
        for follow in list(self._follows.values()):
            if follow.main_gone:
                self._settle(follow)

    def forget(self, job: Job) -> None:
        """``job`` is at rest: drop whatever was watched for it."""
        self._drop(job)

    def close(self) -> None:
        """Close the fork events subscription and the notify socket (manager exit)."""
        self._follows.clear()
        self._close_events()
        if self._notify is not None:
            self.host.loop.remove_reader(self._notify.fileno())
            self._notify.close()
            self._notify = None

    # --------------------------------------------------------------------- expect stop
    def _stopped(self, job: Job, pid: int) -> None:
        if self._waiting(job) and job.main_pid == pid:
            log.debug("%s: main process %d stopped itself: ready", job.label, pid)
            job.ready("expect")
        process.kill_pid(pid, signal.SIGCONT)

    # ------------------------------------------------------------------- expect fork/daemon
    def _forked(self, parent: int, child: int) -> None:
        for follow in list(self._follows.values()):
            depth = follow.generation.get(parent)
            if depth is not None and child not in follow.generation:
                follow.generation[child] = depth + 1
                log.debug("%s: process %d forked new child %d", follow.job.label, parent, child)
                if follow.main_gone:
                    self.host.loop.call_soon(self._settle, follow)

    def _settle(self, follow: _Follow) -> None:
        """Main has exited 0: take the daemon if it is there, fail if none can come, or wait
        (for a fork event or the exit of an intermediate)."""
        job = follow.job
        if self._follows.get(job) is not follow:
            return
        if not self._waiting(job):
            self._drop(job)
            return
        if self._events is not None:
            self._events.drain()  # every fork that happened before what woke us up
            if self._follows.get(job) is not follow:
                return
        if self._events is not None and not self._events.broken:
            daemon, pending = self._by_generation(follow)
        else:
            daemon, pending = self._by_survival(follow)
        if daemon:
            self._drop(job)
            self.host.adopt(job, daemon)
            log.debug("%s: followed %d to daemon %d", job.label, follow.main, daemon)
            job.ready("expect", main_pid=daemon)
        elif not pending:
            self._drop(job)
            what = "fork" if follow.forks == 1 else "double fork"
            job.ready_failed(
                f"main process exited with status 0 but left no daemon (expect "
                f"{job.jobclass.expect.value}: no live process after a {what})"
            )

    def _by_generation(self, follow: _Follow) -> tuple[int, bool]:
        """(daemon pid or 0, whether some live shallower descendant may still fork)."""
        me = os.getpid()
        pending = False
        for pid, depth in follow.generation.items():
            if depth == 0 or not _alive(pid):
                continue
            if depth == follow.forks:
                if process.parent_pid(pid) == me:
                    return pid, True
                pending = True  # its parent (an intermediate) has not exited yet
            elif depth < follow.forks:
                pending = True
        return 0, pending

    def _by_survival(self, follow: _Follow) -> tuple[int, bool]:
        """The same without fork events: the candidates are the manager's children that were
        not before main was spawned, are no process the Reaper already watches, and belong to
        the job (its cgroup; without one, its sessions, or no other job's: a daemon that
        called ``setsid`` has left every scope)."""
        job = follow.job
        scope = self.host.scope(job)
        watched = self.host.reaper.pending()
        others = [
            self.host.scope(j)
            for j in self.host.jobs()
            if j is not job and (j.pids or j.state is not State.WAITING)
        ]
        mine = []
        for pid in process.child_pids(os.getpid()):
            if pid in follow.before or pid in watched or not _alive(pid):
                continue
            if scope.contains(pid) or (
                scope.cgroup is None and not any(o.contains(pid) for o in others)
            ):
                mine.append(pid)
        if follow.forks == 2:
            # An intermediate of a double fork still has its child; the daemon, just set up,
            # normally has none yet (see the module docstring for when this guess is wrong).
            settled = [p for p in mine if not process.child_pids(p)]
            if settled:
                return settled[0], True
        elif mine:
            return mine[0], True
        return 0, bool(mine)

    def _drop(self, job: Job) -> None:
        self._follows.pop(job, None)
        if not self._follows:
            self._close_events()

    def _close_events(self) -> None:
        if self._events is not None:
            self._events.close()
            self._events = None

    @staticmethod
    def _waiting(job: Job) -> bool:
        return job.state is State.SPAWNED and "expect" in job.pending_ready

    # -------------------------------------------------------------------- expect notify
    def _open_notify(self) -> None:
        if self._notify is not None:
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        name = f"busmgr-notify-{os.getpid()}-{secrets.token_hex(6)}"
        sock.bind("\0" + name)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        sock.setblocking(False)
        self._notify = sock
        self.notify_address = "@" + name
        self.host.loop.add_reader(sock.fileno(), self._notify_readable)

    def _notify_readable(self) -> None:
        sock = self._notify
        if sock is None:
            return
        while True:
            try:
                data, ancdata, _flags, _addr = sock.recvmsg(
                    _MAX_DATAGRAM, socket.CMSG_SPACE(_UCRED.size) + socket.CMSG_SPACE(64)
                )
            except (BlockingIOError, InterruptedError):
                return
            pid = 0
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = _UCRED.unpack_from(payload)[0]
                elif level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds = array.array("i")
                    fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
                    for fd in fds:  # file descriptor store is not supported: never keep them
                        os.close(fd)
            self._notified(pid, data.decode("utf-8", "replace"))

    def _notified(self, pid: int, text: str) -> None:
        job = next(
            (
                j
                for j in self.host.jobs()
                if j.jobclass.expect is ExpectMode.NOTIFY and self.host.scope(j).contains(pid)
            ),
            None,
        )
        if job is None:
            log.warning("notify message from pid %d, which is no expect notify job's: ignored", pid)
            return
        fields = dict(line.partition("=")[::2] for line in text.splitlines() if "=" in line)
        scope = self.host.scope(job)
        main = decimal(fields.get("MAINPID", ""))
        if main and main != job.main_pid:
            if scope.contains(main):
                self.host.adopt(job, main)
                job.ready("mainpid", main_pid=main)
            else:
                log.warning("%s: MAINPID=%s is not a process of the job: ignored", job.label, main)
        if "STATUS" in fields and fields["STATUS"] != job.status_text:
            job.status_text = fields["STATUS"]
            self.host.changed(job)
        if fields.get("READY") == "1" and self._waiting(job):
            log.debug("%s: READY=1 from pid %d", job.label, pid)
            job.ready("expect")


def _alive(pid: int) -> bool:
    state = process.proc_state(pid)
    return bool(state) and state not in ("Z", "X")
