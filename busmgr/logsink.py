"""Job output through pipes the manager owns: read on the loop, written to rotated files.

Model: each process a job with ``console log`` spawns (pre-start, main, the hooks) gets a
pipe (a :class:`LogPipe`) as its stdout and stderr, which it shares with whatever it forks,
and whose read end the manager reads on its event loop. The manager, never the job, writes what
it read to the instance's :class:`RotatingFile` and rotates it. So:

* rotation never loses or splits a line: the file is renamed between two writes of the
  manager, at a line boundary (a line longer than the size limit is split at the hard limit,
  twice the size limit, so that one endless line cannot grow a file without bound);
* a job cannot fill the disk: one instance's log takes at most ``max_bytes * 2 * (keep + 1)``
  bytes, and a job that writes faster than the manager reads blocks on its full pipe;
* a disk that is full or unwritable never blocks a job either: the output is read and dropped,
  with one warning in the manager's log until writing works again.

Invariants: each spawned process gets a pipe of its own, and the manager keeps only its read
end (non-blocking, close-on-exec): the write end (blocking, so a job's writes wait for the
manager) lives in the process and whatever it forks, and the pipe is closed once all of them
are gone (end of file). So the manager holds one descriptor per live process group of a job,
and none per log file between two writes. One callback reads at most :data:`READ_PER_TURN`
bytes, so a flood from one job never holds the loop. Every pipe the manager holds is listed by
:meth:`LogSinks.fds`, the one place a re-exec of the manager needs to hand them across (and
:meth:`LogSinks.adopt` takes them back).

Names: a job without ``instance`` logs to ``<job>.log``; an instance to
``<job>/<instance>.log``, the instance name percent-encoded where it could not stand in a file
name as it is (``%``, ``/``, a leading ``.``, control characters). So two instances never
share a file (``a/b`` is ``a%2fb``, ``a_b`` stays ``a_b``), and a job name (no ``/``, no
leading ``.``) never collides with another job's directory. Rotated files add ``.1`` (the
newest) to ``.KEEP``.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio

__all__ = [
    "DEFAULT_ROTATION",
    "READ_PER_TURN",
    "LogPipe",
    "LogRotation",
    "LogSinks",
    "RotatingFile",
    "log_name",
    "parse_size",
    "rotated_paths",
]

log = logging.getLogger("busmgr")

LOG_MODE = 0o640
DIR_MODE = 0o755
READ_CHUNK = 65536
#: Bytes one readable callback takes from one pipe before the loop gets a turn.
READ_PER_TURN = 4 * READ_CHUNK
#: Bytes a final drain takes at most (a descendant that keeps writing cannot hold it forever).
DRAIN_LIMIT = 16 * READ_CHUNK


@dataclass(frozen=True)
class LogRotation:
    """How big one log file may grow (``max_bytes``) and how many rotated ones are kept."""

    max_bytes: int = 1024 * 1024
    keep: int = 5

    def __post_init__(self) -> None:
        if self.max_bytes < 1:
            raise ValueError("a log file's size limit must be at least 1 byte")
        if self.keep < 0:
            raise ValueError("the number of rotated log files cannot be negative")


#: The rotation when none is given: 1 MiB files, five rotated ones kept.
DEFAULT_ROTATION = LogRotation()

_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


def parse_size(text: str) -> int:
    """``65536``, ``64K``, ``1M``, ``2G`` (binary units) -> bytes; ValueError if not one."""
    word = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = word[-1:] if word[-1:] in _SIZE_UNITS and word[-1:] else ""
    number = word[: len(word) - len(unit)]
    if not number.isascii() or not number.isdigit() or int(number) < 1:
        raise ValueError(f'"{text}" is not a size (a positive number, optionally K, M or G)')
    return int(number) * _SIZE_UNITS[unit]


def _encode(name: str) -> str:
    out = []
    for i, ch in enumerate(name):
        if ch in "%/" or not ch.isprintable() or (i == 0 and ch == "."):
            out.extend(f"%{b:02x}" for b in ch.encode("utf-8", "surrogatepass"))
        else:
            out.append(ch)
    return "".join(out)


def log_name(job: str, instance: str) -> str:
    """The log file of one job instance, relative to the log directory."""
    if not instance:
        return f"{job}.log"
    return f"{job}/{_encode(instance)}.log"


def rotated_paths(path: Path, keep: int) -> list[Path]:
    """``path`` and its rotated files, oldest first (``path.KEEP`` ... ``path.1``, ``path``)."""
    return [path.with_name(f"{path.name}.{i}") for i in range(keep, 0, -1)] + [path]


class RotatingFile:
    """One log file, appended to by the manager only, rotated by size at line boundaries.

    ``written`` counts every byte given to :meth:`write` (dropped ones included), so a reader
    can tell how much output came since a mark whatever rotations happened meanwhile.
    """

    def __init__(
        self, path: Path, rotation: LogRotation, warn: Callable[[str], None] | None = None
    ) -> None:
        self.path = path
        self.rotation = rotation
        self.written = 0
        self._warn = warn or (lambda text: log.warning("%s", text))
        self._fd = -1
        self._size = 0
        self._at_line_start = True
        self._failing = False
        self.open()

    def open(self) -> None:
        """Open (creating it ``0640`` with its directories) for appending; raises OSError."""
        flags = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC
        try:
            fd = os.open(self.path, flags)
        except FileNotFoundError:
            self.path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            fd = os.open(self.path, flags | os.O_CREAT, LOG_MODE)
            os.fchmod(fd, LOG_MODE)
        self._fd = _above_stdio(fd)
        self._size = os.fstat(self._fd).st_size
        self._at_line_start = self._size == 0 or self._last_byte_is_newline()

    def _last_byte_is_newline(self) -> bool:
        # The descriptor is write-only: read the last byte through a second one.
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return True
        try:
            return os.pread(fd, 1, self._size - 1) == b"\n"
        except OSError:
            return True
        finally:
            os.close(fd)

    def write(self, data: bytes) -> None:
        """Append ``data``, rotating first whenever the file is full at a line boundary."""
        self.written += len(data)
        limit = self.rotation.max_bytes
        hard = 2 * limit
        while data:
            if self._size >= limit and (self._at_line_start or self._size >= hard):
                self._rotate()
            room = limit - self._size
            newline = data.find(b"\n", max(room - 1, 0))
            piece = data if newline < 0 else data[: newline + 1]
            piece = piece[: max(hard - self._size, 1)]
            self._append(piece)
            data = data[len(piece) :]

    def _append(self, piece: bytes) -> None:
        try:
            if self._fd < 0:
                self.open()
            view = memoryview(piece)
            while view:
                done = os.write(self._fd, view)
                view = view[done:]
        except OSError as err:
            if not self._failing:
                self._failing = True
                reason = err.strerror or err
                self._warn(f"cannot write the log {self.path}: {reason}; dropping output")
            return
        if self._failing:
            self._failing = False
            self._warn(f"writing the log {self.path} again")
        self._size += len(piece)
        self._at_line_start = piece.endswith(b"\n")

    def _rotate(self) -> None:
        """``path.KEEP-1`` -> ``path.KEEP`` ... ``path`` -> ``path.1``, then a new ``path``."""
        self.close()
        names = rotated_paths(self.path, self.rotation.keep)
        try:
            if self.rotation.keep == 0:
                self.path.unlink(missing_ok=True)
            for older, newer in itertools.pairwise(names):
                with contextlib.suppress(FileNotFoundError):
                    os.replace(newer, older)
            self.open()
        except OSError as err:
            self._warn(f"cannot rotate the log {self.path}: {err.strerror or err}")
            self._fd = -1
        self._size = 0
        self._at_line_start = True

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _above_stdio(fd: int) -> int:
    """``fd``, or a close-on-exec copy of it above 2 (the manager's 0-2 are open; this only
    matters if one of them was closed when it started)."""
    if fd > 2:
        return fd
    import fcntl

    try:
        return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    finally:
        os.close(fd)


class LogPipe:
    """One pipe of an instance: the manager holds its read end only."""

    def __init__(self, read_fd: int) -> None:
        self.read_fd = read_fd

    def pump(self, file: RotatingFile, limit: int) -> bool:
        """Move what the pipe holds (at most ``limit`` bytes) to ``file``; False once the pipe
        is at its end (every writer gone), True otherwise."""
        moved = 0
        while moved < limit:
            try:
                chunk = os.read(self.read_fd, min(READ_CHUNK, limit - moved))
            except BlockingIOError:
                return True
            except OSError as err:
                if err.errno == errno.EINTR:
                    continue
                raise
            if not chunk:
                return False
            file.write(chunk)
            moved += len(chunk)
        return True

    def close(self) -> None:
        if self.read_fd >= 0:
            os.close(self.read_fd)
            self.read_fd = -1


class LogSinks:
    """Every log of one manager, by name (relative to ``directory``), and their pipes.

    Each spawn of a logging process gets a pipe of its own (:meth:`writer`); the caller closes
    the write end once the process has it, so the manager holds one descriptor per live
    process group (the read end), and none for a log between writes (the file is opened for
    each batch it receives). A pipe is closed when it reaches its end: every process that had
    it (and every descendant that inherited it) is gone. ``written(name)`` survives (until
    :meth:`forget`), so a tail can say how much of a file came from the current start attempt.
    """

    def __init__(
        self,
        directory: Path,
        rotation: LogRotation = DEFAULT_ROTATION,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.directory = directory
        self.rotation = rotation
        self._loop = loop
        self._files: dict[str, RotatingFile] = {}
        self._pipes: dict[str, list[LogPipe]] = {}
        self._written: dict[str, int] = {}

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            # Imported here: the command line uses this module's names without an event loop.
            import asyncio

            self._loop = asyncio.get_running_loop()
        return self._loop

    def path(self, name: str) -> Path:
        return self.directory / name

    def _file(self, name: str) -> RotatingFile:
        """The log ``name``'s file: checked (opened, created) the first time, then kept (it
        holds no descriptor) until :meth:`forget`."""
        file = self._files.get(name)
        if file is None:
            file = RotatingFile(self.path(name), self.rotation)  # raises if it cannot open
            file.close()  # opened again for each batch: no descriptor held between writes
            file.written = self._written.get(name, 0)
            self._files[name] = file
        return file

    def writer(self, name: str) -> int:
        """A new pipe for one process of the log ``name``: its write end, which the caller
        closes once the process has it. Raises OSError if the file cannot be opened (checked
        now, so the spawn fails with a clear reason) or no pipe can be made."""
        self._file(name)
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        read_fd, write_fd = _above_stdio(read_fd), _above_stdio(write_fd)
        os.set_blocking(read_fd, False)
        self._adopt(name, read_fd)
        return write_fd

    def _adopt(self, name: str, read_fd: int) -> None:
        pipe = LogPipe(read_fd)
        self._pipes.setdefault(name, []).append(pipe)
        self.loop.add_reader(read_fd, self._readable, name, pipe)

    def _pump(self, name: str, pipe: LogPipe, limit: int) -> None:
        file = self._file(name)
        try:
            if not pipe.pump(file, limit):
                self._close_pipe(name, pipe)
        finally:
            file.close()
            self._written[name] = file.written

    def _close_pipe(self, name: str, pipe: LogPipe) -> None:
        self.loop.remove_reader(pipe.read_fd)
        pipe.close()
        pipes = self._pipes.get(name, [])
        if pipe in pipes:
            pipes.remove(pipe)
        if not pipes:
            self._pipes.pop(name, None)

    def _readable(self, name: str, pipe: LogPipe) -> None:
        if pipe.read_fd >= 0:
            self._pump(name, pipe, READ_PER_TURN)

    def drain(self, name: str) -> None:
        """Write out what the pipes of ``name`` hold now (a process of the job just exited:
        its last words are in the pipe, and a tail must see them)."""
        for pipe in list(self._pipes.get(name, [])):
            self._pump(name, pipe, DRAIN_LIMIT)

    def written(self, name: str) -> int:
        """Bytes of output the log ``name`` received while this manager ran."""
        return self._written.get(name, 0)

    def release(self, name: str) -> None:
        """No process of the instance is left: drain its pipes and close them."""
        for pipe in list(self._pipes.get(name, [])):
            self._pump(name, pipe, DRAIN_LIMIT)
            if pipe.read_fd >= 0:
                self._close_pipe(name, pipe)

    def forget(self, name: str) -> None:
        """The instance is gone for good."""
        self.release(name)
        self._files.pop(name, None)
        self._written.pop(name, None)

    def close(self) -> None:
        for name in list(self._pipes):
            self.release(name)
        self._files.clear()

    # ------------------------------------------------------------ across an exec
    def fds(self) -> dict[str, list[int]]:
        """Every pipe the manager holds (its read ends), by log name."""
        return {name: [p.read_fd for p in pipes] for name, pipes in self._pipes.items()}

    def adopt(self, name: str, read_fd: int) -> None:
        """Take over a pipe listed by :meth:`fds` of the manager before an exec."""
        self._file(name)
        os.set_inheritable(read_fd, False)
        os.set_blocking(read_fd, False)
        self._adopt(name, read_fd)
