"""Reaping: the one place that calls ``waitpid``.

:class:`Reaper` makes the manager a child subreaper (orphaned descendants of jobs are
re-parented to it, not to PID 1), reaps every child on ``SIGCHLD`` through the loop's signal
handling, and hands each exit to the callback that :meth:`Reaper.watch` registered for that pid,
or to :attr:`Reaper.on_orphan`, and each stop to the callback :meth:`Reaper.watch_stop`
registered (``expect stop``). No thread, no timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass

import prctl

from busmgr.jobclass import signal_name
from busmgr.process.procfs import child_pids, kill_pid, proc_state

__all__ = ["ExitCallback", "ExitInfo", "Reaper"]

#: Bytes of send buffer for the loop's signal wake-up socket: room for ~10,000 signals.
WAKEUP_BUFFER = 8 << 20


@dataclass(frozen=True, slots=True)
class ExitInfo:
    """How a process ended: exactly one of ``status`` (it exited) and ``signal`` (it was killed)."""

    status: int | None
    signal: int | None

    @classmethod
    def from_wait_status(cls, ws: int) -> ExitInfo:
        """Decode a raw ``waitpid`` status of a process that has terminated."""
        if os.WIFEXITED(ws):
            return cls(status=os.WEXITSTATUS(ws), signal=None)
        if os.WIFSIGNALED(ws):
            return cls(status=None, signal=os.WTERMSIG(ws))
        raise ValueError(f"wait status {ws:#x} is not a termination")

    def describe(self) -> str:
        """``exited with status 3`` or ``killed by signal SEGV``."""
        if self.signal is not None:
            return f"killed by signal {signal_name(self.signal)}"
        return f"exited with status {self.status}"


ExitCallback = Callable[[int, ExitInfo], None]


class Reaper:
    """Reaps every child of the manager and hands each exit to whoever watches that pid.

    Invariants: only :meth:`reap` calls ``waitpid`` (besides :func:`spawn` collecting a child
    that never reached exec); callbacks run from the loop, never inside :meth:`reap`, so they
    may spawn and watch again. An exit of a pid nobody watches is held until the end of the
    current loop turn (a :meth:`watch` in that window still gets it), then given to
    :attr:`on_orphan` and forgotten; a later watch of that pid would wait for a new process
    with the same number, so callers watch a pid as soon as they learn it.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._watchers: dict[int, ExitCallback] = {}
        self._stop_watchers: dict[int, Callable[[int], None]] = {}
        self._unclaimed: dict[int, ExitInfo] = {}
        self.on_orphan: ExitCallback | None = None
        self._on_reap: Callable[[], None] | None = None
        self._started = False

    def start(self) -> None:
        """Become a child subreaper and reap on every SIGCHLD; reaps what already exited."""
        prctl.set_child_subreaper(True)
        self._loop.add_signal_handler(signal.SIGCHLD, self.reap)
        _roomy_wakeup_fd()
        self._started = True
        self.reap()

    def stop(self) -> None:
        """Stop reaping on SIGCHLD. Watches stay registered; the subreaper flag stays set."""
        if self._started:
            self._loop.remove_signal_handler(signal.SIGCHLD)
            self._started = False

    def watch(self, pid: int, callback: ExitCallback) -> None:
        """Call ``callback(pid, exit_info)`` from the loop once ``pid`` has been reaped.

        A pid has at most one watcher; watching it again replaces the callback.
        """
        info = self._unclaimed.pop(pid, None)
        if info is not None:
            self._loop.call_soon(callback, pid, info)
        else:
            self._watchers[pid] = callback

    def watch_stop(self, pid: int, callback: Callable[[int], None]) -> None:
        """Call ``callback(pid)`` from the loop once, when the child ``pid`` is stopped by a
        signal (``expect stop``: it raised SIGSTOP). If it is stopped already, that counts.

        Stops are seen because the manager's SIGCHLD handler has no ``SA_NOCLDSTOP`` and
        :meth:`reap` asks with ``WUNTRACED``; a stop of a pid nobody watches is ignored (the
        kernel reports each stop once, so that costs nothing later).
        """
        if proc_state(pid) == "T":
            self._loop.call_soon(callback, pid)
        else:
            self._stop_watchers[pid] = callback

    def unwatch_stop(self, pid: int) -> None:
        """Forget a :meth:`watch_stop`."""
        self._stop_watchers.pop(pid, None)

    def pending(self) -> set[int]:
        """The pids being watched that have not been reaped yet."""
        return set(self._watchers)

    def reap(self) -> None:
        """Collect every child that has terminated, without blocking."""
        while True:
            try:
                pid, ws = os.waitpid(-1, os.WNOHANG | os.WUNTRACED)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if os.WIFSTOPPED(ws):
                on_stop = self._stop_watchers.pop(pid, None)
                if on_stop is not None:
                    self._loop.call_soon(on_stop, pid)
                continue
            try:
                info = ExitInfo.from_wait_status(ws)
            except ValueError:
                continue  # continued: not an exit (we never ask for those)
            self._stop_watchers.pop(pid, None)
            if self._on_reap is not None:
                self._on_reap()
            callback = self._watchers.pop(pid, None)
            if callback is not None:
                self._loop.call_soon(callback, pid, info)
            else:
                self._unclaimed[pid] = info
                self._loop.call_soon(self._orphaned, pid)

    async def finish(self, timeout: float) -> list[int]:
        """Before the manager exits: no child may outlive it (as PID 1, the kernel would
        SIGKILL them; otherwise they would be re-parented out of reach). Every child still
        there gets SIGTERM (and SIGCONT), SIGKILL once ``timeout`` has passed, and this returns
        when :meth:`reap` has collected them all (or ``timeout`` after the SIGKILL, for a
        process stuck in the kernel). Returns the pids it had to signal. Needs :meth:`start`.
        """
        me = os.getpid()
        wake = asyncio.Event()
        self._on_reap = wake.set
        signalled: dict[int, int] = {}
        try:
            self.reap()
            deadline = self._loop.time() + timeout
            sig = signal.SIGTERM
            while left := child_pids(me):
                now = self._loop.time()
                if now >= deadline:
                    if sig == signal.SIGKILL:
                        break
                    sig, deadline = signal.SIGKILL, now + timeout
                for pid in left:
                    if signalled.get(pid) != sig:
                        signalled[pid] = sig
                        kill_pid(pid, sig)
                        if sig != signal.SIGKILL:
                            kill_pid(pid, signal.SIGCONT)
                wake.clear()
                self.reap()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), deadline - self._loop.time())
        finally:
            self._on_reap = None
        return sorted(signalled)

    def _orphaned(self, pid: int) -> None:
        info = self._unclaimed.pop(pid, None)
        if info is not None and self.on_orphan is not None:
            self.on_orphan(pid, info)


def _roomy_wakeup_fd() -> None:
    """Make the loop's signal wake-up socket hold thousands of signals, and never complain.

    asyncio hears of a signal through one byte the C-level handler writes into its self-pipe
    (``signal.set_wakeup_fd``), read when the loop next polls. A thousand jobs stopped at once
    exit within milliseconds, and while the loop is busy their SIGCHLDs fill a default Unix
    socket buffer (about 280 one-byte writes); Python then prints a traceback per signal to
    stderr ("Exception ignored when trying to write to the signal wakeup fd") and drops the
    byte. A dropped SIGCHLD byte costs nothing (one :meth:`Reaper.reap` collects every exit),
    but a SIGTERM queued behind a full buffer would be lost. So the socket's send buffer is
    raised (as far as the system allows; as root past ``net.core.wmem_max``) and a full buffer
    is no longer reported. Signals are blocked while the wake-up descriptor is swapped, so
    none arrives in between (they are delivered on unblocking).
    """
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    try:
        fd = signal.set_wakeup_fd(-1)
        if fd < 0:
            return
        try:
            with socket.socket(fileno=os.dup(fd)) as sock:
                for option in (getattr(socket, "SO_SNDBUFFORCE", 32), socket.SO_SNDBUF):
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, option, WAKEUP_BUFFER)
                        break
        except OSError:  # not a socket (a pipe set by someone else): leave its size alone
            pass
        finally:
            signal.set_wakeup_fd(fd, warn_on_full_buffer=False)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
