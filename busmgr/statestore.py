"""The state store: the manager's :class:`~busmgr.snapshot.Saved` state in ``--state-dir``.

Model: an observer of the jobs. Any change marks the state dirty and schedules one write,
:data:`DELAY` seconds after the first change since the last write, so a burst of a thousand job
changes costs a handful of writes, not a thousand, and a write never comes between an activation
request and its spawn, nor in the milliseconds the service then takes to claim its bus name while
its caller waits: building and writing the snapshot holds the loop for a fraction of a millisecond.
A process started less than :data:`DELAY` before the manager died is not in the file; the next
manager does not adopt it, and clears (stops) its job's cgroup leaf. A write replaces
``state.json`` atomically (``state.json.new``, then ``rename``): a manager killed at any moment
leaves the previous state or the new one, never a mix. The periodic writes are not fsync'd: the
file describes running processes, which a power loss takes down with the page cache; what it must
survive is the death of the manager, and the kernel keeps written pages for that. A re-exec writes
with fsync all the same (:meth:`save`).

The state directory is held by one manager at a time (:class:`StateLock`, an ``flock`` on
``lock``): two managers restoring and writing the same state would each adopt the other's jobs.
A manager that stops cleanly (every job stopped) removes the file: the next one starts afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from collections.abc import Callable
from pathlib import Path

from busmgr.events import Event
from busmgr.job import Job
from busmgr.observe import JobObserver
from busmgr.snapshot import Saved, SnapshotError, dumps, loads

log = logging.getLogger("busmgr")

__all__ = ["DELAY", "LockError", "StateLock", "StateStore", "boot_id"]

DELAY = 0.1  # seconds between a change and the write that records it (and what follows)
STATE_FILE = "state.json"


def boot_id() -> str:
    """This boot's identity (a snapshot from another boot names processes that are gone)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            return fh.read().strip()
    except OSError:
        return ""


class LockError(Exception):
    """Another manager holds the state directory: one line for the user."""


class StateLock:
    """An exclusive ``flock`` on ``<state dir>/lock``, held while the manager runs (released by
    the kernel when it exits, however it exits)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    @classmethod
    def acquire(cls, directory: Path) -> StateLock:
        path = directory / "lock"
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as err:
            raise LockError(f"cannot use the state directory {directory}: {err.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise LockError(
                f"another busmgr (pid {holder or '?'}) uses the state directory {directory}"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(fd)

    def release(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


class StateStore(JobObserver):
    """Writes the state ``snapshot()`` gives, :data:`DELAY` after any change of a job."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, directory: Path, snapshot: Callable[[], Saved]
    ) -> None:
        self.loop = loop
        self.path = directory / STATE_FILE
        self._snapshot = snapshot
        self._timer: asyncio.TimerHandle | None = None
        self.writes = 0
        self.enabled = True

    @staticmethod
    def read(directory: Path, boot: str) -> Saved | None:
        """The state a previous manager left in ``directory``, or None (none, or unusable:
        that is logged and the file set aside as ``state.json.bad``)."""
        path = directory / STATE_FILE
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        except OSError as err:
            log.warning("%s: cannot read the saved state: %s", path, err.strerror)
            return None
        try:
            return loads(text, boot)
        except SnapshotError as err:
            log.warning("%s: saved state not used: %s", path, err)
            with contextlib.suppress(OSError):
                os.replace(path, path.with_name(STATE_FILE + ".bad"))
            return None

    # ------------------------------------------------------------------ observer
    def mark(self) -> None:
        """Something changed: write :data:`DELAY` seconds from now, unless a write is due
        already (a burst costs one write per :data:`DELAY`)."""
        if self._timer is None and self.enabled:
            self._timer = self.loop.call_later(DELAY, self._write_later)

    def job_changed(self, job: Job) -> None:
        self.mark()

    def instance_added(self, job: Job) -> None:
        self.mark()

    def instance_removed(self, job: Job) -> None:
        self.mark()

    def job_event(self, job: Job, event: Event) -> None:
        self.mark()

    # ------------------------------------------------------------------ writing
    def _write_later(self) -> None:
        self._timer = None
        try:
            self.save(sync=False)
        except OSError as err:
            log.warning("%s: cannot save the state: %s", self.path, err.strerror or err)

    def save(self, *, sync: bool) -> None:
        """Write the state now (``sync``: and flush it to the disk). Raises ``OSError``."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        tmp = self.path.with_name(STATE_FILE + ".new")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w") as fh:
            fh.write(dumps(self._snapshot()))
            if sync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        self.writes += 1

    def discard(self) -> None:
        """The manager stopped every job and leaves: nothing to restore next time."""
        self.enabled = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
