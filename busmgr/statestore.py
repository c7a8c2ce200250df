"""The state store: the manager's :class:`~busmgr.snapshot.Saved` state in ``--state-dir``.

Model: an observer of the jobs. Any change marks the state dirty and schedules one write,
:data:`DELAY` seconds after the first change since the last write (later if the previous write
was long, see below), so a burst of a thousand job changes costs a handful of writes, not a
thousand, and a write never comes between an activation request and its spawn, nor in the
milliseconds the service then takes to claim its bus name while its caller waits. A process
started less than :data:`DELAY` before the manager died is not in the file; the next manager
does not adopt it, and clears (stops) its job's cgroup leaf. A write costs time in proportion to
the jobs it records, so the gap after a write is also at least :data:`SHARE` times what that
write took: however many jobs there are, writing the state never takes more than about a tenth
of the loop's time. And a write waits while the manager is ``busy`` (events queued to be
handled: a burst under way), for at most :data:`DELAY` more, so a burst of N jobs is recorded
once it settled, not in its middle, where the write would delay the burst itself. A write of
many jobs is done a slice at a time (:data:`WRITE_SLICE` per loop turn, between two jobs), so it
never holds the loop for long; the snapshot it writes is the one taken when it began. A write
replaces ``state.json`` atomically (``state.json.new``, then ``rename``): a manager killed at
any moment leaves the previous state or the new one, never a mix. The periodic writes are not
fsync'd: the file describes running processes, which a power loss takes down with the page
cache; what it must survive is the death of the manager, and the kernel keeps written pages for
that. A re-exec writes with fsync all the same (:meth:`save`).

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
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

from busmgr.events import Event
from busmgr.job import Job
from busmgr.observe import JobObserver
from busmgr.snapshot import Saved, SnapshotError, dump, loads, pieces

log = logging.getLogger("busmgr")

__all__ = ["DELAY", "SHARE", "WRITE_SLICE", "LockError", "StateLock", "StateStore", "boot_id"]

DELAY = 0.1  # seconds between a change and the write that records it (and what follows)
SHARE = 10  # the gap after a write is at least this many times what the write took
WRITE_SLICE = 0.005  # seconds of writing per loop turn
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
        self,
        loop: asyncio.AbstractEventLoop,
        directory: Path,
        snapshot: Callable[[], Saved],
        busy: Callable[[], bool] = lambda: False,
    ) -> None:
        self.loop = loop
        self._busy = busy
        self.path = directory / STATE_FILE
        self._snapshot = snapshot
        self._timer: asyncio.TimerHandle | None = None
        self.writes = 0
        self.enabled = True
        self._last = float("-inf")  # loop time of the last write
        self._gap = DELAY  # the least time between two writes: DELAY, or SHARE x the last
        self._marked = 0.0  # loop time of the first change not yet written
        # A write in progress, a slice per loop turn: its file, the pieces left, the seconds
        # spent on it so far; and whether something changed since its snapshot was taken.
        self._writing: tuple[TextIO, Iterator[str]] | None = None
        self._spent = 0.0
        self._changed_since = False

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
        """Something changed: write :data:`DELAY` seconds from now, or when the gap after the
        previous write is over if that is later (a burst costs one write per :data:`DELAY`)."""
        if self._writing is not None:
            self._changed_since = True  # written after the write in progress
            return
        if self._timer is None and self.enabled:
            now = self.loop.time()
            self._marked = now
            wait = max(DELAY, self._last + self._gap - now)
            self._timer = self.loop.call_later(wait, self._write_later)

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
        left = self._marked + 2 * DELAY - self.loop.time()
        if left > 0 and self._busy():
            # In the middle of a burst: wait for it to settle (a turn later, DELAY more at most).
            self._timer = self.loop.call_later(min(left, DELAY / 10), self._write_later)
            return
        began = time.monotonic()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fh = open(self._tmp, "w")  # noqa: SIM115 (closed by _write_slice or _abort)
        except OSError as err:
            log.warning("%s: cannot save the state: %s", self.path, err.strerror or err)
            return
        self._writing = (fh, pieces(self._snapshot()))
        self._spent = time.monotonic() - began
        self._changed_since = False
        self._write_slice()

    @property
    def _tmp(self) -> Path:
        return self.path.with_name(STATE_FILE + ".new")

    def _write_slice(self) -> None:
        """Write pieces for :data:`WRITE_SLICE` seconds; at the end, put the file in place."""
        if self._writing is None:
            return
        fh, left = self._writing
        began = time.monotonic()
        try:
            for piece in left:
                fh.write(piece)
                if time.monotonic() - began > WRITE_SLICE:
                    self._spent += time.monotonic() - began
                    self.loop.call_soon(self._write_slice)
                    return
            fh.close()
            os.replace(self._tmp, self.path)
        except OSError as err:
            log.warning("%s: cannot save the state: %s", self.path, err.strerror or err)
            self._abort()
            return
        self._spent += time.monotonic() - began
        self._writing = None
        self._done(self._spent)
        if self._changed_since:
            self.mark()

    def _done(self, spent: float) -> None:
        self.writes += 1
        self._last = self.loop.time()
        self._gap = max(DELAY, SHARE * spent)

    def _abort(self) -> None:
        """Give up the write in progress (its file is left half written, never renamed)."""
        if self._writing is not None:
            with contextlib.suppress(OSError):
                self._writing[0].close()
            self._writing = None

    def save(self, *, sync: bool) -> None:
        """Write the state now, at once (``sync``: and flush it to the disk); a write in
        progress is given up for this one. Raises ``OSError``."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._abort()
        began = time.monotonic()
        tmp = self._tmp
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w") as fh:
            dump(self._snapshot(), fh)
            if sync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        self._done(time.monotonic() - began)

    def discard(self) -> None:
        """The manager stopped every job and leaves: nothing to restore next time."""
        self.enabled = False
        self._abort()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
