"""Reading a job's log on the command line: the last lines across rotations, and following it.

A log is the file ``PATH`` and its rotated predecessors ``PATH.1`` (newest) ... ``PATH.N``
(:mod:`busmgr.logsink`). :func:`last_lines` reads backwards from ``PATH`` into the rotated
files until it has enough lines. :func:`follow` writes what is appended from now on, as
``tail -F`` does: it waits on inotify (no polling) and reads the log's files by inode, so when
the manager rotates the file (once or many times between two looks) it finishes the old ones
and goes on with the new ones: no line is lost or repeated.

Lines are bytes: a log holds whatever the job wrote.
"""

from __future__ import annotations

import os
import select
import struct
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["follow", "last_lines", "log_files"]

_BLOCK = 65536

# inotify(7)
_IN_MODIFY = 0x2
_IN_MOVED_FROM = 0x40
_IN_MOVED_TO = 0x80
_IN_CREATE = 0x100
_IN_DELETE = 0x200
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
_EVENT = struct.Struct("iIII")


def log_files(path: Path) -> list[Path]:
    """``path`` and its rotated files that exist, newest first."""
    found = [path] if path.exists() else []
    n = 1
    while True:
        older = path.with_name(f"{path.name}.{n}")
        if not older.exists():
            return found
        found.append(older)
        n += 1


def last_lines(path: Path, count: int) -> list[bytes]:
    """The last ``count`` lines of the log (each without its newline), oldest first."""
    if count <= 0:
        return []
    lines: list[bytes] = []
    for file in log_files(path):
        try:
            data = _tail_bytes(file, count - len(lines))
        except OSError:
            continue
        chunk = data.split(b"\n")
        if chunk and chunk[-1] == b"":
            chunk.pop()
        lines = chunk[-(count - len(lines)) :] + lines
        if len(lines) >= count:
            break
    return lines[-count:]


def _tail_bytes(file: Path, count: int) -> bytes:
    """Enough of the end of ``file`` to hold its last ``count`` lines (or all of it)."""
    with open(file, "rb") as fh:
        end = fh.seek(0, os.SEEK_END)
        start = end
        data = b""
        while start > 0 and data.count(b"\n") <= count:
            start = max(0, start - _BLOCK)
            fh.seek(start)
            data = fh.read(end - start)
        return data


class _Inotify:
    def __init__(self, directory: Path) -> None:
        import ctypes  # only `log -f` needs it

        libc = ctypes.CDLL(None, use_errno=True)
        self._libc = libc
        fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self.fd = fd
        mask = _IN_MODIFY | _IN_MOVED_FROM | _IN_MOVED_TO | _IN_CREATE | _IN_DELETE
        if libc.inotify_add_watch(fd, os.fsencode(directory), mask) < 0:
            err = ctypes.get_errno()
            os.close(fd)
            raise OSError(err, f"cannot watch {directory}: {os.strerror(err)}")

    def wait(self, timeout: float | None, hangup_fd: int | None) -> list[tuple[int, str]]:
        """The events of the next batch (mask, name); [] after ``timeout``. BrokenPipeError
        when ``hangup_fd`` (a pipe we write to) has lost its reader."""
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        if hangup_fd is not None:
            poller.register(hangup_fd, 0)  # POLLERR and POLLHUP are always reported
        ready = poller.poll(None if timeout is None else timeout * 1000)
        if any(fd == hangup_fd and ev & (select.POLLERR | select.POLLHUP) for fd, ev in ready):
            raise BrokenPipeError("the reader of our output went away")
        if not any(fd == self.fd for fd, _ in ready):
            return []
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return []
        events, i = [], 0
        while i + _EVENT.size <= len(data):
            _wd, mask, _cookie, length = _EVENT.unpack_from(data, i)
            name = data[i + _EVENT.size : i + _EVENT.size + length].rstrip(b"\0")
            events.append((mask, os.fsdecode(name)))
            i += _EVENT.size + length
        return events

    def close(self) -> None:
        os.close(self.fd)


class _Follower:
    """Reads a log and its rotated files by inode, so that no rotation, however many happen
    between two looks, loses or repeats a byte: every file of the log is held open (so its
    inode cannot be reused) with the offset read so far; a file that left the listing is read
    on, and closed once it is deleted (rotated beyond ``keep``), never while it only has
    another name (a look between two renames of a rotation misses it); a new file is read from
    its start."""

    def __init__(self, path: Path, write: Callable[[bytes], None]) -> None:
        self.path = path
        self.write = write
        self.files: dict[int, BinaryIO] = {}

    def scan(self, *, skip_existing: bool = False) -> None:
        listing = []
        for file in reversed(log_files(self.path)):  # oldest first
            try:
                listing.append((file, os.stat(file).st_ino))
            except OSError:
                continue
        present = {ino for _, ino in listing}
        for ino in [i for i in self.files if i not in present]:  # older than any listed
            fh = self.files[ino]
            _copy(fh, self.write)
            if os.fstat(fh.fileno()).st_nlink > 0:
                continue  # renamed, not deleted: a look in the middle of a rotation
            del self.files[ino]
            fh.close()
        for file, ino in listing:
            fh = self.files.get(ino)
            if fh is None:
                fh = _open_at_start(file)
                if fh is None:
                    continue
                if os.fstat(fh.fileno()).st_ino != ino:  # renamed meanwhile: next look
                    fh.close()
                    continue
                if skip_existing:
                    fh.seek(0, os.SEEK_END)
                self.files[ino] = fh
            _copy(fh, self.write)

    def close(self) -> None:
        for fh in self.files.values():
            fh.close()
        self.files.clear()


def follow(
    path: Path,
    write: Callable[[bytes], None],
    *,
    keep_going: Callable[[], bool] = lambda: True,
    tick: float | None = None,
    hangup_fd: int | None = None,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Write what is appended to the log ``path`` from now on, across rotations, until
    ``keep_going()`` is false (checked after every batch of changes, and every ``tick``
    seconds if given). The directory must exist; the file need not, yet. ``on_ready`` is
    called once the watch is in place: nothing written after that is missed. BrokenPipeError
    as soon as ``hangup_fd`` (our stdout, when it is a pipe) has no reader any more."""
    watch = _Inotify(path.parent)
    follower = _Follower(path, write)
    try:
        follower.scan(skip_existing=True)
        if on_ready is not None:
            on_ready()
        while keep_going():
            events = watch.wait(tick, hangup_fd)
            if not events or any(name.startswith(path.name) for _mask, name in events):
                follower.scan()
    finally:
        watch.close()
        follower.close()


def _open_at_start(path: Path) -> BinaryIO | None:
    try:
        return open(path, "rb")  # kept open while following
    except OSError:
        return None


def _copy(fh: BinaryIO, write: Callable[[bytes], None]) -> None:
    while chunk := fh.read(_BLOCK):
        write(chunk)
