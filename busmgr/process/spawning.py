"""Spawning: the only code that forks and execs.

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
  :class:`~busmgr.jobclass.ExecContext` in C in the order of :func:`_child_setup` and execs;
  users, groups and capabilities are looked up by the manager first, and a failed step comes
  back with its errno, in the same words as below;
* the fast path, ``os.posix_spawn`` (glibc: ``clone(CLONE_VFORK)``, no Python code in the
  child), when the :class:`~busmgr.jobclass.ExecContext` needs no setup between fork and exec
  and there is no ``chdir`` (Python 3.11's ``posix_spawn`` has no chdir file action) and no
  cgroup, or where the clone library is missing;
* the slow path, where the clone library is missing: ``os.fork`` and a child that applies the
  context in the order the privileges require (see :func:`_child_setup`) and reports a failure
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
import ctypes
import errno
import fcntl
import grp
import os
import pwd
import resource
import shutil
import signal
import stat
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import prctl

from busmgr.jobclass import CAPABILITIES, ConsoleMode, ExecContext, decimal
from busmgr.process import clonespawn
from busmgr.process.cgroups import CgroupError, cgroup_join, cgroup_return, own_cgroup_procs
from busmgr.process.clonespawn import CloneFailed, CloneRequest, Step

__all__ = [
    "Listen",
    "SpawnError",
    "StrandedError",
    "set_cloexec_on_inherited_fds",
    "spawn",
]

DEV_NULL = "/dev/null"
SHELL = "/bin/sh"
#: Descriptor number of the first passed socket (SD_LISTEN_FDS_START).
LISTEN_FDS_START = 3
_LISTEN_PRELUDE = 'LISTEN_PID=$$; export LISTEN_PID; exec "$0" "$@"'
LOG_MODE = 0o640
CHILD_FAILED = 127  # exit status of a child that did not reach exec, as a shell's

# Every signal whose disposition a child must get back to SIG_DFL (the manager ignores SIGPIPE,
# as Python does, and catches SIGCHLD/SIGTERM/SIGINT/SIGHUP).
_RESET_SIGNALS = frozenset(signal.valid_signals()) - {signal.SIGKILL, signal.SIGSTOP}

_RLIMIT_NAMES = {
    getattr(resource, n): n.removeprefix("RLIMIT_")
    for n in dir(resource)
    if n.startswith("RLIMIT_")
}

# prctl(2) options and capability constants the python-prctl binding does not expose (it has
# the bounding set, keepcaps and no_new_privs, used below, but no ambient capabilities).
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_RAISE = 2
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_libc = ctypes.CDLL(None, use_errno=True)


class SpawnError(OSError):
    """A process could not be started; ``str()`` names the step and the error.

    ``step`` is what was being done (``exec "/usr/bin/foo"``, ``setuid "nobody"``), ``detail``
    why it failed (``No such file or directory``), ``errno`` the error number when there is one.
    """

    def __init__(self, step: str, detail: str | None = None, errno: int = 0) -> None:
        # A single argument is a complete message (callers outside this module use that form).
        super().__init__(step if detail is None else f"{step}: {detail}")
        self.step = step
        self.detail = detail or ""
        self.errno = errno


@dataclass(frozen=True, slots=True)
class Listen:
    """Listening sockets for a main process: their descriptors (in the manager) and names.

    Invariant: ``names`` has one entry per descriptor, none containing ``:``.
    """

    fds: tuple[int, ...]
    names: tuple[str, ...]

    def env(self) -> dict[str, str]:
        """``LISTEN_FDS`` and ``LISTEN_FDNAMES`` (``LISTEN_PID`` is set by the spawn path)."""
        return {"LISTEN_FDS": str(len(self.fds)), "LISTEN_FDNAMES": ":".join(self.names)}


FdMove = tuple[int, int, int]  # (POSIX_SPAWN_DUP2, source, target) or (POSIX_SPAWN_CLOSE, fd, 0)


def fd_moves(sources: tuple[int, ...], first: int, spare: int) -> list[FdMove]:
    """The ``dup2``/``close`` steps that put ``sources`` at ``first``, ``first + 1``, ...

    Done in order, a ``dup2`` onto a target must not destroy a source still to be moved; when
    one would, every source is first copied to ``spare``, ``spare + 1``, ... (above every
    descriptor involved), moved from there and the copies closed. A source already at its
    target is ``dup2``'d onto itself, which clears its close-on-exec flag in ``posix_spawn``.
    Pure: tested without descriptors.
    """
    targets = [first + i for i in range(len(sources))]
    clash = any(
        sources[j] == targets[i] for i in range(len(sources)) for j in range(i + 1, len(sources))
    )
    dup2, close = os.POSIX_SPAWN_DUP2, os.POSIX_SPAWN_CLOSE
    if not clash:
        return [(dup2, src, dst) for src, dst in zip(sources, targets, strict=True)]
    staged = [spare + i for i in range(len(sources))]
    moves: list[FdMove] = [(dup2, src, tmp) for src, tmp in zip(sources, staged, strict=True)]
    moves += [(dup2, tmp, dst) for tmp, dst in zip(staged, targets, strict=True)]
    moves += [(close, tmp, 0) for tmp in staged]
    return moves


def _spare_fd(*groups: Iterable[int]) -> int:
    return max((fd for group in groups for fd in group), default=2) + 1


class StrandedError(Exception):
    """The manager moved itself into a job's cgroup to spawn and could not move back.

    Fatal for the manager (see "Cgroups" above). ``pid`` is the process that was spawned (0 if
    the spawn itself failed too): it exists and must be watched like any other.
    """

    def __init__(self, message: str, pid: int) -> None:
        super().__init__(message)
        self.pid = pid


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
            return _spawn_clone(
                argv, environ, ctx, exec_path, null_fd, out_fd, pass_fds, cgroup, listen
            )
        if setup:
            if ctx.ionice is not None:
                import psutil  # noqa: F401  (the child's _ionice uses it; import before fork)
            return _spawn_fork(
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


def _spawn_clone(
    argv: list[str],
    env: dict[str, str],
    ctx: ExecContext,
    exec_path: str | None,
    null_fd: int,
    out_fd: int,
    pass_fds: tuple[int, ...],
    cgroup: str | None,
    listen: Listen | None,
) -> int:
    """The clone path (see "Paths" above): every setting resolved here, applied by the C
    child, which is born in ``cgroup``. Users, groups and capabilities are looked up before
    the child exists, so a missing one fails with the same words as in the child."""
    uid = gid = -1
    groups: tuple[int, ...] | None = None
    if ctx.setuid is not None:
        try:
            pw = _getpw(ctx.setuid)
        except LookupError as e:
            raise SpawnError(f'setuid "{ctx.setuid}"', str(e)) from None
        uid, gid = pw.pw_uid, pw.pw_gid
    if ctx.setgid is not None:
        try:
            gid = _getgr(ctx.setgid)
        except LookupError as e:
            raise SpawnError(f'setgid "{ctx.setgid}"', str(e)) from None
    if ctx.setuid is not None:
        try:
            groups = tuple(os.getgrouplist(pw.pw_name, gid))
        except OSError as e:
            raise SpawnError(f'setuid "{ctx.setuid}"', e.strerror or str(e), e.errno or 0) from None
    elif ctx.setgid is not None:
        groups = ()
    caps = None
    if ctx.caps_keep is not None:
        try:
            caps = tuple(_cap_number(name) for name in ctx.caps_keep)
        except LookupError as e:
            raise SpawnError("caps keep", str(e)) from None
    moves: tuple[tuple[int, int, int], ...] = ()
    if listen is not None:
        spare = _spare_fd(
            listen.fds, pass_fds, (null_fd, out_fd, LISTEN_FDS_START + len(listen.fds))
        )
        moves = tuple(
            (0 if how == os.POSIX_SPAWN_DUP2 else 1, fd, target)
            for how, fd, target in fd_moves(listen.fds, LISTEN_FDS_START, spare)
        )
    where = ctx.chdir or ("/" if ctx.chroot is not None else None)
    path = exec_path
    if path is None and where is None:
        path = _which(argv[0], env, None)  # else the child searches, in its root and directory
    ioprio = -1
    if ctx.ionice is not None:
        ioclass, level = ctx.ionice
        ioprio = (ioclass << 13) | (level if ioclass in (1, 2) else 0)
    request = CloneRequest(
        argv=argv,
        env=env,
        path=path,
        search_path=env.get("PATH", os.defpath),
        cgroup=cgroup,
        stdin_fd=null_fd,
        stdout_fd=out_fd,
        stderr_fd=out_fd,
        keep_fds=pass_fds,
        moves=moves,
        n_listen=len(listen.fds) if listen is not None else 0,
        oom_score=ctx.oom_score,
        limits=tuple((lim.resource, _rlim(lim.soft), _rlim(lim.hard)) for lim in ctx.limits),
        nice=ctx.nice,
        ioprio=ioprio,
        groups=groups,
        chroot=ctx.chroot,
        chdir=where,
        umask=-1 if ctx.umask is None else ctx.umask,
        caps=caps,
        cap_last=_cap_last() if caps is not None else 0,
        gid=gid,
        uid=uid,
    )
    try:
        return clonespawn.clone_spawn(request)
    except ValueError as e:
        raise SpawnError(f'exec "{argv[0]}"', str(e)) from None
    except OSError as e:  # the cgroup directory cannot be opened
        raise SpawnError(f'cgroup "{cgroup}"', e.strerror or str(e), e.errno or 0) from None
    except CloneFailed as e:
        raise SpawnError(_step_text(e, argv, ctx, cgroup), os.strerror(e.errno), e.errno) from None


def _step_text(failed: CloneFailed, argv: list[str], ctx: ExecContext, cgroup: str | None) -> str:
    """What the child was doing, in the words of :func:`_child_setup`."""
    step = failed.step
    if step is Step.CGROUP:
        return f'cgroup "{cgroup}"'
    if step is Step.OOM:
        return f"oom score {ctx.oom_score}"
    if step is Step.LIMIT:
        res = ctx.limits[failed.index].resource if failed.index < len(ctx.limits) else -1
        return f"limit {_RLIMIT_NAMES.get(res, res)}"
    if step is Step.NICE:
        return f"nice {ctx.nice}"
    if step is Step.IONICE and ctx.ionice is not None:
        return "ionice {}:{}".format(*ctx.ionice)
    if step is Step.GROUPS or step is Step.SETUID:
        return f'setuid "{ctx.setuid}"' if ctx.setuid is not None else f'setgid "{ctx.setgid}"'
    if step is Step.SETGID:
        return f'setgid "{ctx.setgid}"' if ctx.setgid is not None else f'setuid "{ctx.setuid}"'
    if step is Step.CHROOT:
        return f'chroot "{ctx.chroot}"'
    if step is Step.CHDIR:
        return f'chdir "{ctx.chdir or "/"}"'
    if step is Step.CAPS:
        return "caps keep"
    if step is Step.EXEC:
        return f'exec "{argv[0]}"'
    return {
        Step.SIGNALS: "reset signals",
        Step.SETSID: "setsid",
        Step.CONSOLE: "console",
        Step.LISTEN: "listen",
        Step.CLONE: "clone",
    }.get(step, step.name.lower())


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
    path = exec_path or _which(argv[0], env, None)
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
        spare = _spare_fd(
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
            setsigdef=_RESET_SIGNALS,
            setsigmask=(),
        )
    except OSError as e:
        raise SpawnError(f'exec "{argv[0]}"', e.strerror or str(e), e.errno or 0) from None


def _spawn_fork(
    argv: list[str],
    env: dict[str, str],
    ctx: ExecContext,
    exec_path: str | None,
    null_fd: int,
    out_fd: int,
    pass_fds: tuple[int, ...],
    cgroup: str | None = None,
    listen: Listen | None = None,
) -> int:
    """The slow path: fork, set up in the child, report any failure through a CLOEXEC pipe."""
    err_r, err_w = os.pipe()  # both close-on-exec: EOF on err_r means exec succeeded
    if listen is not None and err_w < LISTEN_FDS_START + len(listen.fds):
        # The child moves sockets onto 3, 4, ...: keep the error pipe out of their way.
        floor = _spare_fd(listen.fds, pass_fds, (LISTEN_FDS_START + len(listen.fds),))
        high = fcntl.fcntl(err_w, fcntl.F_DUPFD_CLOEXEC, floor)
        os.close(err_w)
        err_w = high
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _RESET_SIGNALS)
    try:
        pid = os.fork()
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        os.close(err_r)
        os.close(err_w)
        raise
    if pid == 0:  # pragma: no cover - the child; it never returns
        _child_main(argv, env, ctx, exec_path, null_fd, out_fd, pass_fds, err_w, cgroup, listen)
    signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    os.close(err_w)
    try:
        report = _read_all(err_r)
    finally:
        os.close(err_r)
    if not report:
        return pid
    # The child is about to _exit(127), if it has not already: collect it, so the failed
    # attempt leaves no zombie and the Reaper never sees a pid nobody was told about.
    os.waitpid(pid, 0)
    step, _, rest = report.decode("utf-8", "replace").partition("\0")
    code_text, _, detail = rest.partition("\0")
    code = int(code_text or 0)
    raise SpawnError(step, os.strerror(code) if code else detail, code)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    return b"".join(chunks)


def _child_main(
    argv: list[str],
    env: dict[str, str],
    ctx: ExecContext,
    exec_path: str | None,
    null_fd: int,
    out_fd: int,
    pass_fds: tuple[int, ...],
    err_w: int,
    cgroup: str | None,
    listen: Listen | None = None,
) -> None:  # pragma: no cover - runs in the child
    """Run in the forked child: set up, exec, or report the failed step and ``_exit(127)``."""
    step = ["reset signals"]
    try:
        _child_setup(
            argv, env, ctx, exec_path, null_fd, out_fd, pass_fds, err_w, step, cgroup, listen
        )
    except BaseException as e:
        code = e.errno if isinstance(e, OSError) and e.errno else 0
        detail = str(e) if not code else ""
        with contextlib.suppress(BaseException):
            os.write(err_w, f"{step[0]}\0{code}\0{detail}".encode("utf-8", "replace"))
    finally:
        os._exit(CHILD_FAILED)


def _child_setup(
    argv: list[str],
    env: dict[str, str],
    ctx: ExecContext,
    exec_path: str | None,
    null_fd: int,
    out_fd: int,
    pass_fds: tuple[int, ...],
    err_w: int,
    step: list[str],
    cgroup: str | None = None,
    listen: Listen | None = None,
) -> None:  # pragma: no cover - runs in the child
    """Apply ``ctx`` in the child, then exec. ``step[0]`` names the step in progress.

    The order is forced by privileges and by what the new root still contains:
    signals first (they are blocked until then); session; the job's cgroup (before the
    credentials change and before anything of the job can fork); stdio; user and group lookups,
    ``oom_score_adj`` (``/proc``), limits, nice and ionice while still root and before
    ``chroot`` (raising a hard limit, lowering nice or the oom score need privileges; ``/proc``
    and the NSS files may not exist in the new root); supplementary groups, ``chroot`` then
    ``chdir``; ``umask``; the capability bounding set (needs ``CAP_SETPCAP``) and
    ``PR_SET_KEEPCAPS``; ``setgid`` before ``setuid`` (after it we could not); then the kept
    capabilities as permitted/effective/inheritable and ambient, ``no_new_privs``, and exec.
    """
    signal.set_wakeup_fd(-1)
    for sig in _RESET_SIGNALS:
        with contextlib.suppress(OSError, ValueError):
            signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())

    step[0] = "setsid"
    os.setsid()

    if cgroup is not None:
        step[0] = f'cgroup "{cgroup}"'
        with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
            f.write("0")

    step[0] = "console"
    _dup_onto(null_fd, 0)
    if out_fd >= 0:
        _dup_onto(out_fd, 1)
        _dup_onto(out_fd, 2)
    for fd in pass_fds:
        os.set_inheritable(fd, True)
    kept = set(pass_fds)
    if listen is not None:
        step[0] = "listen"
        spare = _spare_fd(listen.fds, pass_fds, (err_w, LISTEN_FDS_START + len(listen.fds)))
        for how, fd, target in fd_moves(listen.fds, LISTEN_FDS_START, spare):
            if how == os.POSIX_SPAWN_DUP2:
                os.dup2(fd, target)
            else:
                os.close(fd)
        for i in range(len(listen.fds)):
            os.set_inheritable(LISTEN_FDS_START + i, True)
            kept.add(LISTEN_FDS_START + i)
        env["LISTEN_PID"] = str(os.getpid())
    lo = 3
    for keep in sorted({*kept, err_w}):
        if keep >= lo:
            os.closerange(lo, keep)
            lo = keep + 1
    os.closerange(lo, 1 << 20)

    uid = gid = None
    user = None
    if ctx.setuid is not None:
        step[0] = f'setuid "{ctx.setuid}"'
        pw = _getpw(ctx.setuid)
        uid, gid, user = pw.pw_uid, pw.pw_gid, pw.pw_name
    if ctx.setgid is not None:
        step[0] = f'setgid "{ctx.setgid}"'
        gid = _getgr(ctx.setgid)

    if ctx.oom_score is not None:
        step[0] = f"oom score {ctx.oom_score}"
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(ctx.oom_score))
    for lim in ctx.limits:
        step[0] = f"limit {_RLIMIT_NAMES.get(lim.resource, lim.resource)}"
        resource.setrlimit(lim.resource, (_rlim(lim.soft), _rlim(lim.hard)))
    if ctx.nice is not None:
        step[0] = f"nice {ctx.nice}"
        os.setpriority(os.PRIO_PROCESS, 0, ctx.nice)
    if ctx.ionice is not None:
        step[0] = "ionice {}:{}".format(*ctx.ionice)
        _ionice(*ctx.ionice)

    if user is not None and gid is not None:
        step[0] = f'setuid "{ctx.setuid}"'
        os.initgroups(user, gid)
    elif gid is not None:
        step[0] = f'setgid "{ctx.setgid}"'
        os.setgroups([])

    if ctx.chroot is not None:
        step[0] = f'chroot "{ctx.chroot}"'
        os.chroot(ctx.chroot)
    if ctx.chdir is not None or ctx.chroot is not None:
        where = ctx.chdir or "/"
        step[0] = f'chdir "{where}"'
        os.chdir(where)
    if ctx.umask is not None:
        os.umask(ctx.umask)

    kept: list[int] | None = None
    if ctx.caps_keep is not None:
        step[0] = "caps keep"
        kept = [_cap_number(name) for name in ctx.caps_keep]
        for cap in range(_cap_last()):
            if cap not in kept:
                prctl.capbset_drop(cap)
        if uid:
            prctl.set_keepcaps(True)

    if gid is not None:
        step[0] = f'setgid "{ctx.setgid}"' if ctx.setgid is not None else f'setuid "{ctx.setuid}"'
        os.setgid(gid)
    if uid is not None:
        step[0] = f'setuid "{ctx.setuid}"'
        os.setuid(uid)

    if kept is not None:
        step[0] = "caps keep"
        _capset(kept)
        if uid:
            for cap in kept:
                _prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_RAISE, cap)
        prctl.set_no_new_privs(True)

    step[0] = f'exec "{argv[0]}"'
    if exec_path is not None:
        os.execve(exec_path, argv, env)
    os.execvpe(argv[0], argv, env)


def _dup_onto(fd: int, target: int) -> None:  # pragma: no cover - runs in the child
    if fd == target:
        os.set_inheritable(fd, True)
    else:
        os.dup2(fd, target)


def _getpw(name: str) -> pwd.struct_passwd:
    try:
        uid = decimal(name)
        return pwd.getpwuid(uid) if uid is not None else pwd.getpwnam(name)
    except KeyError:
        raise LookupError("no such user") from None


def _getgr(name: str) -> int:
    try:
        gid = decimal(name)
        return gid if gid is not None else grp.getgrnam(name).gr_gid
    except KeyError:
        raise LookupError("no such group") from None


def _rlim(value: int | None) -> int:
    return resource.RLIM_INFINITY if value is None else value


def _prctl(option: int, arg2: int, arg3: int = 0) -> None:
    if _libc.prctl(option, ctypes.c_ulong(arg2), ctypes.c_ulong(arg3), 0, 0) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def _ionice(ioclass: int, level: int) -> None:  # pragma: no cover - runs in the child
    """``ioprio_set`` through psutil, which knows the system call on every architecture
    (psutil is imported by :func:`spawn` before the fork when a job has ``ionice``)."""
    import psutil

    # The none (0) and idle (3) classes take no level.
    psutil.Process().ionice(ioclass, level if ioclass in (1, 2) else None)


def _cap_number(name: str) -> int:
    """``cap_net_bind_service`` (as ``caps keep`` stores it), ``CAP_NET_BIND_SERVICE`` or
    ``net_bind_service`` -> 10."""
    word = name.strip().lower()
    num = CAPABILITIES.get(word if word.startswith("cap_") else "cap_" + word)
    if num is None:
        raise LookupError(f"unknown capability {name!r}")
    return num


def _cap_last() -> int:
    """One past the highest capability the running kernel knows."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read()) + 1
    except OSError:
        return prctl.CAP_LAST_CAP + 1


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def _capset(caps: Iterable[int]) -> None:
    """Make ``caps`` exactly the permitted, effective and inheritable sets of this process."""
    mask = 0
    for cap in caps:
        mask |= 1 << cap
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i in range(2):
        word = (mask >> (32 * i)) & 0xFFFFFFFF
        data[i].effective = data[i].permitted = data[i].inheritable = word
    if _libc.capset(ctypes.byref(header), data) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


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


def _which(name: str, env: Mapping[str, str], cwd: str | None) -> str:
    """The file ``execvpe`` would run for ``name``, searching the job's ``PATH``, not ours.

    A name with a slash is returned as is (joined to ``cwd`` when relative). If nothing is
    found the name itself is returned, so exec fails with the natural error.
    """
    if "/" in name:
        return os.path.join(cwd, name) if cwd and not name.startswith("/") else name
    for d in env.get("PATH", os.defpath).split(os.pathsep):
        candidate = os.path.join(d or ".", name)
        with contextlib.suppress(OSError):
            st = os.stat(candidate)
            if stat.S_ISREG(st.st_mode) and os.access(candidate, os.X_OK):
                return candidate
    return name


def _name_link(
    program: str, env: Mapping[str, str], cwd: str | None, name: str
) -> tuple[str | None, str | None]:
    """A private directory holding a symlink ``name`` -> the program, and the symlink's path.

    (None, None) when the program is a ``#!`` script or cannot be found: it then runs under
    its own name (see the module docstring).
    """
    if not name or "/" in name or name in (".", ".."):
        raise SpawnError(f'proc name "{name}"', "not a valid process name")
    target = os.path.abspath(_which(program, env, cwd))
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
