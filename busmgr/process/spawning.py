"""Spawning: ``spawn()``, the one entry that starts processes, and its ``posix_spawn`` fast path.

This module owns the entry and what every path needs from it (stdio, the job's log file, the
``proc name`` symlink, the checks of ``listen``), the choice of path, and the fast path (with
its way into a cgroup: the manager's own move). The other paths live beside it:
:mod:`busmgr.process.clonepath` (over the C library of :mod:`busmgr.process.clonespawn`) and
:mod:`busmgr.process.forkpath` (the Python fork and its child's setup); the values all of them
share (:class:`SpawnError`, :class:`Listen`...) are in :mod:`busmgr.process.spawnbase`.

``spawn()`` starts one process and returns its pid, or raises :class:`SpawnError` naming the
setup step that failed (``setuid "nobody": Operation not permitted``, ``exec "/nope": No such
file or directory``). It never returns a pid that did not reach ``exec``; a child that failed
before ``exec`` is reaped by ``spawn()`` itself (the one exception to "only the Reaper reaps": that
pid never existed for anyone else, and the loop cannot run between the fork and that wait).

Every process is the leader of a new session and process group (``setsid``), so a job's
processes can be signalled as a group and found again by session id when there is no cgroup;
its stdin is ``/dev/null``; stdout and stderr are ``/dev/null``, the job's log (the write end of
a pipe the manager reads, or a file opened by the manager, appended to, created ``0640`` with
its parent directories) or the manager's own.
Signal dispositions and the signal mask are reset to the defaults, and no descriptor other than
0, 1, 2 and ``pass_fds`` survives into the new program.

Paths
=====

* the clone path, :mod:`busmgr.process.clonespawn` (a small C library built at install time),
  for every process that needs setup between fork and exec, a ``chdir``, or a cgroup: the child
  is made by ``clone3(CLONE_VM | CLONE_VFORK | CLONE_INTO_CGROUP)`` (nothing of the manager is
  copied, as with ``posix_spawn``), is born in its job's cgroup, applies the
  :class:`~busmgr.jobclass.ExecContext` in C in the order of the fork path's child
  (:mod:`busmgr.process.forkpath`) and execs; users, groups and capabilities are looked up by
  the manager first (:mod:`busmgr.process.clonepath`), and a failed step comes back with its
  errno, in the same words as below;
* the fast path, ``os.posix_spawn`` (glibc: ``clone(CLONE_VFORK)``, no Python code in the
  child), when the :class:`~busmgr.jobclass.ExecContext` needs no setup between fork and exec
  and there is no ``chdir`` (Python 3.11's ``posix_spawn`` has no chdir file action) and no
  cgroup, or where the clone library is missing;
* the slow path, where the clone library is missing: ``os.fork`` and a child that applies the
  context in the order the privileges require (:mod:`busmgr.process.forkpath`) and reports a failure
  through a close-on-exec pipe: EOF on that pipe means ``exec`` succeeded.

Measured (``make bench``, section 1): the clone path costs about what ``posix_spawn`` does,
the fork path ten times that, more as the manager grows (``fork`` copies its page tables).

Around ``fork`` the parent blocks every signal, so no Python handler (and no write to asyncio's
signal wake-up fd) can run in the child before it has reset the dispositions; the parent restores
its mask right after.

Invariants the caller keeps:

* Descriptors 0, 1 and 2 of the manager are open (any of them may be ``/dev/null``).
* Every other descriptor the manager holds is close-on-exec. Python creates them so (PEP 446);
  :func:`set_cloexec_on_inherited_fds` fixes the ones inherited at start. The fast path relies on
  this, since ``posix_spawn`` in Python 3.11 cannot close a range of descriptors.
* No threads: ``fork`` is only safe because the manager runs one asyncio loop in one thread.
* ``spawn()`` blocks the loop until the child has exec'd (the fast path by construction, the
  slow path while it reads the error pipe), so nothing in a child's setup may wait on the
  manager. Passing ``pass_fds`` on the fast path relies on ``dup2(fd, fd)`` clearing the
  close-on-exec flag in ``posix_spawn`` (POSIX 2024; glibc since 2.29).

``proc name``
=============

The kernel sets a process's ``comm`` (``/proc/PID/comm``, what ``ps``/``top``/``pkill`` show) on
``exec`` to the base name of the path given to ``execve``, so ``PR_SET_NAME`` before ``exec``
is undone, and ``/proc/PID/comm`` can only be written by the process itself (another process,
even root, gets ``EINVAL``). So ``spawn()`` resolves the program, places a symlink called NAME
pointing at it in a fresh private directory, and executes the symlink: the new program has its
name from its first instruction, with no race and no wrapper process; ``/proc/PID/exe`` and
``argv`` are unchanged. The directory is removed once ``exec`` has happened. Two cases keep the
program's own name, by design: a ``#!`` script (its interpreter opens the path again after
``exec``, which must not vanish), and ``chroot`` (the symlink would be outside the new root).

Socket activation (``listen``)
==============================

``spawn(listen=Listen(fds, names))`` hands listening sockets over by systemd's ``LISTEN_FDS``
protocol (``sd_listen_fds(3)``): the sockets become descriptors 3, 4, ... of the new program
(not close-on-exec), and its environment gets ``LISTEN_FDS`` (their number),
``LISTEN_FDNAMES`` (colon-separated names) and ``LISTEN_PID``, which must equal the pid of the
process that reads them, or ``sd_listen_fds`` ignores the sockets. The sockets are moved by the
spawn path itself: ``posix_spawn`` file actions on the fast path (staged through spare
descriptor numbers when a socket sits where another one must go), the same steps as ``dup2``
in the child on the clone and slow paths.

``LISTEN_PID`` is only known once the child exists. The clone and slow paths set it in the child
before ``exec``. ``posix_spawn`` cannot run anything in the child, so the fast path executes the
program through a one-line ``/bin/sh`` prelude, ``LISTEN_PID=$$; export LISTEN_PID; exec "$0"
"$@"``, which keeps the pid (``exec`` replaces the shell). Measured on the 2-core development
machine, with a manager-sized parent (busmgr imported, ~50 MB resident), 200 spawns each: the
manager is blocked 0.12-0.13 ms by ``posix_spawn`` with or without the prelude, but 2.9-6.8 ms by
``fork`` + ``exec``; the prelude adds ~0.6 ms before the program's first instruction (``dash``
starting and exec'ing), in the child, not in the manager. The prelude sets ``PWD`` to the working
directory, drops environment variables whose names are not shell identifiers (none that busmgr
sets), and the program gets its resolved path as ``argv[0]``.

Cgroups
=======

``spawn(cgroup=LEAF)`` starts the process *inside* the cgroup v2 directory LEAF, so no
descendant can escape by forking before it was moved:

* the slow path: the child writes ``0`` to ``LEAF/cgroup.procs`` (itself) right after ``setsid``,
  before anything of the job's runs;
* the clone path: ``CLONE_INTO_CGROUP`` (Linux 5.7; before it, the child writes ``0`` to
  ``LEAF/cgroup.procs`` first thing, as on the slow path). Nobody migrates, which matters: a
  migration waits for the kernel's cgroup threadgroup lock, an RCU grace period, 8-20 ms for
  the first move after a quiet spell (every cold activation, every respawn after a while);
* the fast path, where the clone library is missing: ``posix_spawn`` creates the child in the
  caller's cgroup, so the manager moves *itself* into the leaf, spawns, and moves itself
  back. The manager has no threads and runs no other code in between, so nothing observes it
  in the leaf. If it cannot move back, it is stranded in a job's cgroup (killing that job would
  kill the manager): :class:`StrandedError` says so, and the caller must stop the manager; it
  is deliberately not an ``OSError``, so no handler of failed spawns can swallow it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import tempfile
from collections.abc import Mapping

from busmgr.jobclass import ConsoleMode, ExecContext
from busmgr.process import clonespawn
from busmgr.process.cgroups import CgroupError, cgroup_join, cgroup_return, own_cgroup_procs
from busmgr.process.clonepath import spawn_clone
from busmgr.process.forkpath import spawn_fork
from busmgr.process.spawnbase import (
    LISTEN_FDS_START,
    RESET_SIGNALS,
    Listen,
    SpawnError,
    StrandedError,
    fd_moves,
    spare_fd,
    which,
)

__all__ = ["set_cloexec_on_inherited_fds", "spawn"]

DEV_NULL = "/dev/null"
SHELL = "/bin/sh"
_LISTEN_PRELUDE = 'LISTEN_PID=$$; export LISTEN_PID; exec "$0" "$@"'
LOG_MODE = 0o640


def spawn(
    argv: list[str],
    env: Mapping[str, str],
    ctx: ExecContext,
    *,
    log_path: str | None = None,
    log_fd: int | None = None,
    proc_name: str | None = None,
    pass_fds: tuple[int, ...] = (),
    cgroup: str | None = None,
    foreground: bool = False,
    quiet_stdout: bool = False,
    listen: Listen | None = None,
) -> int:
    """Start ``argv`` with exactly ``env`` in ``ctx``; return its pid once it has exec'd.

    ``quiet_stdout`` (with ``console output`` and no job settings: the private bus daemon):
    stdout is ``/dev/null`` while stderr stays the manager's, so the program never holds the
    pipe a parent may be reading the manager's stdout from (it must see EOF when the
    manager exits).

    ``foreground`` (only for the command of ``busmgr session -- COMMAND``, with a default
    ``ctx``): stay in the manager's session and process group and inherit its stdin, so an
    interactive command keeps its terminal, as under ``dbus-run-session``.

    With ``console log``, stdout and stderr go to ``log_fd`` (a descriptor the caller keeps,
    the write end of the manager's log pipe), else to the file ``log_path`` (one of them is
    required then; both are ignored otherwise). ``pass_fds`` are descriptors the program
    inherits at the same numbers.
    ``cgroup`` is a cgroup v2 directory the process is born in (before its first instruction,
    on either path; see "Cgroups" above). ``listen`` hands sockets over by the ``LISTEN_FDS``
    protocol (see "Socket activation" above); ``pass_fds`` must then lie above them.
    Raises :class:`SpawnError`, after which no process is left behind. The caller must
    :meth:`Reaper.watch` the pid before the loop runs again.
    """
    if not argv:
        raise SpawnError("exec", "empty command")
    # Mapping -> the dict posix_spawn/execve need; a second copy of a small dict is cheap.
    environ = dict(env)
    if listen is not None:
        if foreground:
            raise SpawnError("exec", "a foreground command takes no sockets")
        if len(listen.names) != len(listen.fds) or any(":" in n for n in listen.names):
            raise SpawnError("listen", "one name without a colon per socket")
        end = LISTEN_FDS_START + len(listen.fds)
        if any(LISTEN_FDS_START <= fd < end for fd in pass_fds):
            raise SpawnError("listen", f"pass_fds must lie above descriptor {end - 1}")
        environ.pop("LISTEN_PID", None)
        environ.update(listen.env())
    link_dir = None
    exec_path = None
    null_fd = out_fd = -1
    try:
        if proc_name is not None and ctx.chroot is None:
            link_dir, exec_path = _name_link(argv[0], environ, ctx.chdir, proc_name)
        null_fd = _open_high(DEV_NULL, os.O_RDWR)
        if ctx.console is ConsoleMode.LOG:
            if log_fd is not None:
                out_fd = fcntl.fcntl(log_fd, fcntl.F_DUPFD_CLOEXEC, 3)
            elif log_path is None:
                raise SpawnError("console log", "no log file given")
            else:
                out_fd = _open_log(log_path)
        elif ctx.console is ConsoleMode.NONE:
            out_fd = null_fd
        if foreground:
            if ctx.needs_child_setup or ctx.chdir is not None or cgroup is not None:
                raise SpawnError("exec", "a foreground command takes no job settings")
            return _spawn_posix(argv, environ, exec_path, -1, out_fd, pass_fds, setsid=False)
        setup = ctx.needs_child_setup or ctx.chdir is not None
        if (setup or cgroup is not None) and not quiet_stdout and clonespawn.available():
            return spawn_clone(
                argv, environ, ctx, exec_path, null_fd, out_fd, pass_fds, cgroup, listen
            )
        if setup:
            if ctx.ionice is not None:
                import psutil  # noqa: F401  (the child's _ionice uses it; import before fork)
            return spawn_fork(
                argv, environ, ctx, exec_path, null_fd, out_fd, pass_fds, cgroup, listen
            )
        if quiet_stdout:
            if ctx.console is not ConsoleMode.OUTPUT or cgroup is not None:
                raise SpawnError("exec", "quiet_stdout needs console output and no cgroup")
            return _spawn_posix(argv, environ, exec_path, null_fd, -1, pass_fds, stdout_fd=null_fd)
        if cgroup is None:
            return _spawn_posix(argv, environ, exec_path, null_fd, out_fd, pass_fds, listen=listen)
        return _spawn_posix_in(cgroup, argv, environ, exec_path, null_fd, out_fd, pass_fds, listen)
    finally:
        if out_fd >= 0 and out_fd != null_fd:
            os.close(out_fd)
        if null_fd >= 0:
            os.close(null_fd)
        if link_dir is not None:
            shutil.rmtree(link_dir, ignore_errors=True)


def _spawn_posix_in(
    cgroup: str,
    argv: list[str],
    env: dict[str, str],
    exec_path: str | None,
    null_fd: int,
    out_fd: int,
    pass_fds: tuple[int, ...],
    listen: Listen | None = None,
) -> int:
    """The fast path, born in ``cgroup``: the manager joins the leaf, spawns, and goes home."""
    try:
        home = own_cgroup_procs()
        cgroup_join(cgroup)
    except CgroupError as e:
        detail = os.strerror(e.errno) if e.errno else str(e)
        raise SpawnError(f'cgroup "{cgroup}"', detail, e.errno or 0) from None
    pid = 0
    try:
        pid = _spawn_posix(argv, env, exec_path, null_fd, out_fd, pass_fds, listen=listen)
    finally:
        try:
            cgroup_return(home)
        except OSError as e:
            raise StrandedError(
                f"the manager cannot leave the job cgroup {cgroup} for {home}: {e.strerror or e}",
                pid,
            ) from None
    return pid


def _spawn_posix(
    argv: list[str],
    env: dict[str, str],
    exec_path: str | None,
    null_fd: int,
    out_fd: int,
    pass_fds: tuple[int, ...],
    *,
    setsid: bool = True,
    stdout_fd: int = -1,
    listen: Listen | None = None,
) -> int:
    """The fast path: posix_spawn, no Python in the child, nothing to set up but stdio.
    ``null_fd`` -1 leaves stdin as the manager has it. With ``listen``, the program runs
    through the ``LISTEN_PID`` prelude (see "Socket activation" above)."""
    path = exec_path or which(argv[0], env, None)
    actions: list[tuple[int, ...]] = []
    if null_fd >= 0:
        actions.append((os.POSIX_SPAWN_DUP2, null_fd, 0))
    if out_fd >= 0:
        actions += [(os.POSIX_SPAWN_DUP2, out_fd, 1), (os.POSIX_SPAWN_DUP2, out_fd, 2)]
    elif stdout_fd >= 0:
        actions.append((os.POSIX_SPAWN_DUP2, stdout_fd, 1))
    if listen is not None:
        if not os.access(path, os.X_OK):  # else the prelude would say it, as exit status 127
            code = _exec_errno(path)
            raise SpawnError(f'exec "{argv[0]}"', os.strerror(code), code)
        spare = spare_fd(
            listen.fds, pass_fds, (null_fd, out_fd, LISTEN_FDS_START + len(listen.fds))
        )
        for how, fd, target in fd_moves(listen.fds, LISTEN_FDS_START, spare):
            actions.append((how, fd, target) if how == os.POSIX_SPAWN_DUP2 else (how, fd))
        argv = [SHELL, "-c", _LISTEN_PRELUDE, path, *argv[1:]]
        path = SHELL
    # dup2 of a descriptor onto itself clears its close-on-exec flag (POSIX 2024, glibc 2.29).
    actions += [(os.POSIX_SPAWN_DUP2, fd, fd) for fd in pass_fds]
    try:
        return os.posix_spawn(
            path,
            argv,
            env,
            file_actions=actions,
            setsid=setsid,
            setsigdef=RESET_SIGNALS,
            setsigmask=(),
        )
    except OSError as e:
        raise SpawnError(f'exec "{argv[0]}"', e.strerror or str(e), e.errno or 0) from None


def _open_high(path: str, flags: int, mode: int = 0o666) -> int:
    """Open close-on-exec, at a descriptor above 2 even if one of 0-2 happens to be free."""
    fd = os.open(path, flags | os.O_CLOEXEC, mode)
    if fd > 2:
        return fd
    try:  # rare: the manager was started with a standard descriptor closed
        return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    finally:
        os.close(fd)


def _open_log(path: str) -> int:
    """Open a job's log for appending; create it ``0640`` (whatever the umask) with its parents."""
    flags = os.O_WRONLY | os.O_APPEND
    try:
        try:
            return _open_high(path, flags)
        except FileNotFoundError:
            pass
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        try:
            fd = _open_high(path, flags | os.O_CREAT | os.O_EXCL, LOG_MODE)
        except FileExistsError:  # created meanwhile by someone else
            return _open_high(path, flags)
        os.fchmod(fd, LOG_MODE)
        return fd
    except OSError as e:
        raise SpawnError(f'console log "{path}"', e.strerror or str(e), e.errno or 0) from None


def _exec_errno(path: str) -> int:
    """Why ``path`` cannot be executed, as an errno (ENOENT, EACCES...)."""
    try:
        os.stat(path)
    except OSError as e:
        return e.errno or errno.ENOENT
    return errno.EACCES


def _name_link(
    program: str, env: Mapping[str, str], cwd: str | None, name: str
) -> tuple[str | None, str | None]:
    """A private directory holding a symlink ``name`` -> the program, and the symlink's path.

    (None, None) when the program is a ``#!`` script or cannot be found: it then runs under
    its own name (see the module docstring).
    """
    if not name or "/" in name or name in (".", ".."):
        raise SpawnError(f'proc name "{name}"', "not a valid process name")
    target = os.path.abspath(which(program, env, cwd))
    try:
        with open(target, "rb") as f:
            if f.read(2) == b"#!":
                return None, None
    except OSError:
        return None, None  # let exec report it
    link_dir = tempfile.mkdtemp(prefix="busmgr-name-")
    # Traversable by a job that runs as another user, not listable.
    os.chmod(link_dir, 0o711)
    link = os.path.join(link_dir, name)
    os.symlink(target, link)
    return link_dir, link


def set_cloexec_on_inherited_fds() -> None:
    """Mark every descriptor above 2 close-on-exec; the manager calls this once at start.

    Afterwards the fast spawn path cannot leak a descriptor the manager inherited (from its own
    parent, or across a re-exec) into a job.
    """
    for entry in os.listdir("/proc/self/fd"):
        fd = int(entry)
        if fd > 2:
            with contextlib.suppress(OSError):  # the listing's own, now closed, descriptor
                os.set_inheritable(fd, False)
