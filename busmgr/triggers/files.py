"""The file bridge: changes to paths some job asks about become ``file`` events (inotify).

Model: every ``file`` leaf of the jobs' ``start on`` (jobs that are not ``manual``) and
``stop on`` is a :class:`~busmgr.config.triggers.FileTarget`: a directory and what to report
in it. ``FILE=/var/spool/example/* EVENT=created`` watches ``/var/spool/example`` for entries
matching ``*``; ``FILE=/etc/app.conf EVENT=modified`` watches ``/etc`` for ``app.conf``;
``FILE=/var/spool/example EVENT=nonempty`` watches the directory itself. What happens becomes::

    file FILE=/var/spool/example/job1 EVENT=created

and goes through the ordinary event queue. The kinds, from inotify:

* ``created``: an entry was created in, or moved into, the directory (``IN_CREATE``,
  ``IN_MOVED_TO``);
* ``modified``: a file opened for writing was closed (``IN_CLOSE_WRITE``: once per writer,
  after it is done, not once per ``write()``), or a file was moved onto the name
  (``IN_MOVED_TO``: how editors and configuration tools replace a file atomically), which is
  also ``created``;
* ``deleted``: an entry was deleted or moved away (``IN_DELETE``, ``IN_MOVED_FROM``);
* ``nonempty`` (``FILE`` is the directory): the directory has entries when its watch begins
  (the manager starts, a reload adds the leaf, the directory appears), and each time an entry
  is added to it, so a queue left full before a shutdown is seen at start.

A directory that does not exist yet is waited for: the nearest existing ancestor is watched for
the next component of the path, and so on down. When the directory appears, the entries already
in it are reported as ``created`` (they were created after the job asked) and ``nonempty``
holds. A watched directory that is deleted or moved away is waited for again the same way.

``FILE`` values may reference the job's environment (``FILE=$HOME/inbox/*``): they are expanded
when the jobs change (a reload), against the environment a job gets from the manager and its
``env`` stanzas. One that does not expand to a usable path is a logged failure of that job.

Invariants: only directories some current job needs are watched (the nearest existing
ancestors of missing ones included), each once, and none once no job needs it (the inotify
descriptor itself is closed when nothing is watched). One inotify record gives at most one
event per ``(FILE, EVENT)``. Reading is level-triggered and bounded per loop turn, so a burst
of changes never holds the loop. A lost queue (``IN_Q_OVERFLOW``) is logged; the watches are
set up again and ``nonempty`` is re-checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import posixpath
import time
from collections.abc import Callable, Iterable, Mapping
from fnmatch import fnmatchcase

from busmgr.config.triggers import (
    FILE_EVENT,
    FileTarget,
    TriggerError,
    file_leaf,
    file_target,
)
from busmgr.events import Event, expand
from busmgr.jobclass import JobClass, expr_events
from busmgr.triggers import kernel
from busmgr.triggers.kernel import Inotify, InotifyEvent

log = logging.getLogger("busmgr")

__all__ = ["FileBridge"]

_CREATED = kernel.IN_CREATE | kernel.IN_MOVED_TO
_KIND_MASK = {
    "created": _CREATED,
    "nonempty": _CREATED,
    "modified": kernel.IN_CLOSE_WRITE | kernel.IN_MOVED_TO,
    "deleted": kernel.IN_DELETE | kernel.IN_MOVED_FROM,
}
_SELF = kernel.IN_DELETE_SELF | kernel.IN_MOVE_SELF
_GONE = _SELF | kernel.IN_IGNORED | kernel.IN_UNMOUNT
#: Seconds of reading inotify records per loop turn.
SLICE = 0.02
#: Rounds of setting up watches while directories keep appearing under the bridge's feet.
_SYNC_ROUNDS = 8


def _kinds(mask: int) -> tuple[str, ...]:
    """The kinds of change an inotify record about an entry is."""
    if mask & kernel.IN_MOVED_TO:
        return ("created", "modified")
    if mask & kernel.IN_CREATE:
        return ("created",)
    if mask & kernel.IN_CLOSE_WRITE:
        return ("modified",)
    if mask & (kernel.IN_DELETE | kernel.IN_MOVED_FROM):
        return ("deleted",)
    return ()


def _nearest(directory: str) -> tuple[str, str] | None:
    """The nearest existing directory above ``directory`` and the next component below it."""
    child = directory
    parent = posixpath.dirname(child)
    while parent != child:
        if os.path.isdir(parent):
            return parent, posixpath.basename(child)
        child, parent = parent, posixpath.dirname(parent)
    return None


def _has_entries(directory: str) -> bool:
    try:
        with os.scandir(directory) as entries:
            return next(entries, None) is not None
    except OSError:
        return False


class FileBridge:
    """Keeps inotify watches equal to what the jobs' ``file`` leaves need; emits events.

    ``emit(event)`` queues an event (the manager's ``EventQueue.emit``); ``job_env(cls)`` is
    the environment ``$VAR`` references in FILE expand against.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        emit: Callable[[Event], object],
        job_env: Callable[[JobClass], Mapping[str, str]],
    ) -> None:
        self._loop = loop
        self._emit = emit
        self._job_env = job_env
        self._inotify: Inotify | None = None
        self._targets: dict[FileTarget, list[str]] = {}  # target -> names of the jobs
        self._wd: dict[str, int] = {}  # watched directory -> watch descriptor
        self._mask: dict[str, int] = {}
        self._paths: dict[int, set[str]] = {}  # watch descriptor -> directories
        self._content: dict[str, list[FileTarget]] = {}  # existing target directories
        self._pending: dict[str, set[str]] = {}  # ancestor -> components waited for
        self._problems: dict[str, str] = {}  # directory -> why it cannot be watched (logged)

    @property
    def watched(self) -> dict[str, int]:
        """The directories watched now and their inotify masks."""
        return dict(self._mask)

    # ------------------------------------------------------------------ following the jobs
    def update(self, classes: Iterable[JobClass]) -> None:
        """Follow the ``file`` leaves of ``classes`` (all the manager's current job classes)."""
        wanted: dict[FileTarget, list[str]] = {}
        for cls in classes:
            for target in self._targets_of(cls):
                wanted.setdefault(target, []).append(cls.name)
        added = set(wanted) - set(self._targets)
        self._targets = wanted
        self._sync(added)

    def _targets_of(self, cls: JobClass) -> list[FileTarget]:
        leaves = [(leaf, cls.stop_on_line) for leaf in expr_events(cls.stop_on)]
        if not cls.manual:
            leaves = [(leaf, cls.start_on_line) for leaf in expr_events(cls.start_on)] + leaves
        targets: list[FileTarget] = []
        env: Mapping[str, str] | None = None
        for leaf, line in leaves:
            if leaf.name != FILE_EVENT:
                continue
            try:
                path, kinds = file_leaf(leaf)
                if "$" in path:
                    env = self._job_env(cls) if env is None else env
                    path = expand(path, env)
                targets.append(file_target(path, kinds))
            except TriggerError as err:
                where = f"{cls.source}:{line}" if cls.source and line else cls.name
                log.warning("%s: %s: not watched: %s", where, cls.name, err.message)
        return targets

    def close(self) -> None:
        """Drop every watch and the inotify descriptor."""
        self._targets = {}
        self._sync(set())

    # ------------------------------------------------------------------ watches
    def _sync(self, added: set[FileTarget]) -> None:
        """Make the watches what the targets need now; report what began (see the module
        docstring): ``added`` targets are new to the bridge, directories that were not
        watched for their content before have just appeared."""
        before = set(self._content)
        content: dict[str, list[FileTarget]] = {}
        pending: dict[str, set[str]] = {}
        for _ in range(_SYNC_ROUNDS):
            content, pending = self._plan()
            if self._apply(content, pending) and not any(
                os.path.isdir(posixpath.join(parent, name))
                for parent, names in pending.items()
                for name in names
            ):
                break
        self._content, self._pending = content, pending
        for directory, targets in content.items():
            appeared = directory not in before
            for target in targets:
                if target in added or appeared:
                    self._began(directory, target, appeared and target not in added)

    def _plan(self) -> tuple[dict[str, list[FileTarget]], dict[str, set[str]]]:
        content: dict[str, list[FileTarget]] = {}
        pending: dict[str, set[str]] = {}
        for target in self._targets:
            directory = target.directory
            if os.path.isdir(directory):
                content.setdefault(directory, []).append(target)
                continue
            found = _nearest(directory)
            if found is not None:
                pending.setdefault(found[0], set()).add(found[1])
        return content, pending

    def _apply(self, content: dict[str, list[FileTarget]], pending: dict[str, set[str]]) -> bool:
        """Set the watches; False when a directory vanished meanwhile (plan again)."""
        masks: dict[str, int] = {}
        for directory, targets in content.items():
            for target in targets:
                for kind in target.kinds:
                    masks[directory] = masks.get(directory, _SELF) | _KIND_MASK[kind]
        for parent in pending:
            masks[parent] = masks.get(parent, _SELF) | _CREATED
        for directory in list(self._wd):
            if directory not in masks:
                self._unwatch(directory)
        if not masks:
            self._close_inotify()
            return True
        inotify = self._open_inotify()
        if inotify is None:
            return True
        complete = True
        for directory, mask in masks.items():
            if self._mask.get(directory) == mask:
                continue
            try:
                wd = inotify.add_watch(directory, mask | kernel.IN_ONLYDIR)
            except OSError as err:
                if err.errno in (errno.ENOENT, errno.ENOTDIR):
                    complete = False
                    continue
                self._problem(directory, err.strerror or str(err))
                continue
            self._problems.pop(directory, None)
            self._forget(directory)
            self._wd[directory] = wd
            self._mask[directory] = mask
            self._paths.setdefault(wd, set()).add(directory)
        return complete

    def _problem(self, directory: str, reason: str) -> None:
        if self._problems.get(directory) == reason:
            return
        self._problems[directory] = reason
        users = sorted(
            {
                name
                for target, names in self._targets.items()
                if target.directory == directory or target.directory.startswith(directory + "/")
                for name in names
            }
        )
        log.error("file: cannot watch %s (for %s): %s", directory, ", ".join(users), reason)

    def _forget(self, directory: str) -> None:
        wd = self._wd.pop(directory, None)
        self._mask.pop(directory, None)
        if wd is not None:
            paths = self._paths.get(wd, set())
            paths.discard(directory)
            if not paths:
                self._paths.pop(wd, None)

    def _unwatch(self, directory: str) -> None:
        wd = self._wd.get(directory)
        self._forget(directory)
        if wd is not None and wd not in self._paths and self._inotify is not None:
            with contextlib.suppress(OSError):
                self._inotify.rm_watch(wd)

    def _open_inotify(self) -> Inotify | None:
        """The inotify instance, made on first use; None (logged) if the kernel refuses one."""
        if self._inotify is None:
            try:
                self._inotify = Inotify()
            except OSError as err:
                self._problem("inotify", str(err))
                return None
            self._loop.add_reader(self._inotify.fd, self._readable)
        return self._inotify

    def _close_inotify(self) -> None:
        if self._inotify is not None:
            self._loop.remove_reader(self._inotify.fd)
            self._inotify.close()
            self._inotify = None
        self._wd.clear()
        self._mask.clear()
        self._paths.clear()

    # ------------------------------------------------------------------ what happened
    def _began(self, directory: str, target: FileTarget, appeared: bool) -> None:
        """The watch of ``target``'s directory began: ``nonempty`` holds if it has entries;
        in a directory that has just appeared, its entries were ``created``."""
        if target.nonempty:
            if _has_entries(directory):
                self._send(directory, "nonempty")
            return
        if not appeared or "created" not in target.kinds:
            return
        try:
            with os.scandir(directory) as entries:
                names = sorted(entry.name for entry in entries)
        except OSError:
            return
        for name in names:
            if fnmatchcase(name, target.name):
                self._send(posixpath.join(directory, name), "created")

    def _send(self, path: str, kind: str) -> None:
        self._emit(Event.make(FILE_EVENT, (("FILE", path), ("EVENT", kind))))

    def _readable(self) -> None:
        """Read what inotify has (for at most :data:`SLICE` seconds; the rest on the next
        turn) and turn it into events."""
        inotify = self._inotify
        if inotify is None:
            return
        deadline = time.monotonic() + SLICE
        resync = False
        while True:
            records = inotify.read()
            for record in records:
                resync = self._record(record) or resync
            if not records or time.monotonic() > deadline:
                break
        if resync:
            self._sync(set())

    def _record(self, record: InotifyEvent) -> bool:
        """Handle one inotify record; True when the watches must be set up again."""
        if record.mask & kernel.IN_Q_OVERFLOW:
            log.warning("file: inotify's queue overflowed; some changes were not seen")
            for directory, targets in self._content.items():
                for target in targets:
                    self._began(directory, target, False)
            return True
        directories = self._paths.get(record.wd)
        if not directories:
            return False
        if record.mask & _GONE:
            for directory in list(directories):
                self._forget(directory)
                # If it is back by the time the watches are set up again, it is new: its
                # entries are reported as created.
                self._content.pop(directory, None)
            if not record.mask & kernel.IN_IGNORED and self._inotify is not None:
                with contextlib.suppress(OSError):
                    self._inotify.rm_watch(record.wd)
            return True
        try:
            name = record.name.decode("utf-8")
        except UnicodeDecodeError:
            log.debug("file: a name that is not UTF-8 in %s ignored", sorted(directories))
            return False
        kinds = _kinds(record.mask)
        created = "created" in kinds
        resync = False
        found: list[tuple[str, str]] = []
        for directory in sorted(directories):
            if created and name in self._pending.get(directory, ()):
                resync = True
            for target in self._content.get(directory, ()):
                if target.nonempty:
                    if created:
                        found.append((directory, "nonempty"))
                elif fnmatchcase(name, target.name):
                    path = posixpath.join(directory, name)
                    found += [(path, kind) for kind in kinds if kind in target.kinds]
        for path, kind in dict.fromkeys(found):  # once each, in order
            self._send(path, kind)
        return resync
