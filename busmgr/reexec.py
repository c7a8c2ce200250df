"""Re-execution: the hand-over to the manager's next image, and the take-over by it.

``Reexec`` (the bus method, or SIGUSR2) replaces the manager's image with a new one and keeps
every job. :class:`Reexecution` owns the three steps that are the manager's part of it:

* :meth:`Reexecution.run`: wait (at most ``wait`` seconds) until every job can be saved as it
  is (:func:`busmgr.restore.restorable`) and no event is being handled, save the state, forbid
  any further write, and ask the runtime to stop with ``requested`` set (the runtime execs);
* :meth:`Reexecution.hand_over`: the last state write, with the descriptors the next image takes
  over (the jobs' log pipes and listening sockets), which the runtime keeps open across the exec;
* :meth:`Reexecution.take_over`: in the next image, adopt those descriptors, each checked to be
  the file that was recorded.

Invariant: ``handed`` is empty until :meth:`hand_over`, which runs right before the exec (a
descriptor does not outlive a crash, so a state file written before then records none).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from busmgr import process
from busmgr.errors import ManagerError
from busmgr.eventqueue import EventQueue
from busmgr.events import Event
from busmgr.job import Job
from busmgr.joblog import JobLog
from busmgr.observe import JobObserver
from busmgr.registry import Registry
from busmgr.restore import restorable
from busmgr.snapshot import Saved, SavedFd, SavedSocket
from busmgr.statestore import StateStore
from busmgr.triggers.sockets import SocketBridge

log = logging.getLogger("busmgr")

__all__ = ["REEXEC_WAIT", "Handed", "Reexecution"]

REEXEC_WAIT = 10.0  # seconds Reexec waits for every job to be at rest

# The descriptors recorded for the next image: the log pipes by job, and the sockets.
Handed = tuple[tuple[tuple[str, SavedFd], ...], tuple[SavedSocket, ...]]


class _Moved(JobObserver):
    """Sets an event whenever a job changes or an event is handled (what Reexec waits on)."""

    def __init__(self, moved: asyncio.Event) -> None:
        self._moved = moved

    def job_changed(self, job: Job) -> None:
        self._moved.set()

    def event_emitted(self, event: Event) -> None:
        self._moved.set()


class Reexecution:
    """One manager's re-execution (see the module docstring). ``observer`` must be subscribed
    to the manager's observers for :meth:`run` to see jobs move."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        registry: Registry,
        queue: EventQueue,
        store: StateStore,
        joblog: JobLog,
        sockets: SocketBridge,
        request_shutdown: Callable[[int], None],
    ) -> None:
        self._loop = loop
        self._registry = registry
        self._queue = queue
        self._store = store
        self._joblog = joblog
        self._sockets = sockets
        self._request_shutdown = request_shutdown
        self.wait = REEXEC_WAIT
        self.refusal = ""  # why this manager cannot re-execute, if it cannot
        self.requested = False
        self.handed: Handed = ((), ())
        self._moved = asyncio.Event()  # set whenever a job changes or an event is handled
        self.observer: JobObserver = _Moved(self._moved)
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        """``Reexec``: wait (at most ``wait`` seconds) until every job can be saved as it is
        and no event is being handled, save the state, and have the runtime exec the manager
        again. Raises ``Busy`` naming the jobs still between states."""
        if self.refusal:
            raise ManagerError("NotSupported", self.refusal)
        deadline = self._loop.time() + self.wait
        while True:
            busy = [
                f"{j.label} ({j.state.value})" for j in self._registry.jobs() if not restorable(j)
            ]
            if not busy and not len(self._queue):
                break
            left = deadline - self._loop.time()
            if left <= 0:
                what = ", ".join(busy) or "events being handled"
                raise ManagerError("Busy", f"not re-executing: jobs between states: {what}")
            self._moved.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._moved.wait(), left)
        self._store.save(sync=True)
        self._store.enabled = False  # nothing may change the file between here and the exec
        self.requested = True
        self._request_shutdown(0)

    def request(self) -> None:
        """:meth:`run` from a signal handler (SIGUSR2); a refusal is logged."""

        async def reexec() -> None:
            try:
                await self.run()
            except ManagerError as err:
                log.warning("%s", err.message)

        task = self._loop.create_task(reexec())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def hand_over(self) -> list[int]:
        """The last state write before the manager execs itself: everything, and the
        descriptors the next image takes over (log pipes, sockets), which are returned so the
        runtime keeps them open across the exec. Nothing changes after this."""
        log_pipes = tuple(
            (name, SavedFd(fd, process.identity(fd)))
            for name, fds in self._joblog.sinks.fds().items()
            for fd in fds
        )
        sockets = tuple(
            SavedSocket(key, SavedFd(fd, process.identity(fd)), path_file)
            for key, fd, path_file in self._sockets.held()
        )
        self.handed = (log_pipes, sockets)
        self._store.save(sync=True)
        return [f.fd for _name, f in log_pipes] + [s.fd.fd for s in sockets]

    def take_over(self, saved: Saved) -> None:
        """The log pipes and sockets the previous image handed over, each checked to be what
        was recorded (a descriptor that is not is left alone, and said)."""
        for name, pipe in saved.log_pipes:
            if process.same_file(pipe.fd, pipe.file):
                self._joblog.sinks.adopt(name, pipe.fd)
            else:
                log.warning("re-exec: the log pipe of %s was not handed over", name)
        for sock in saved.sockets:
            if process.same_file(sock.fd.fd, sock.fd.file):
                self._sockets.adopt(sock.key, sock.fd.fd, sock.path_file)
            else:
                log.warning("re-exec: the socket %s was not handed over", "/".join(
                    str(part) for part in sock.key if part))  # fmt: skip
