"""The system-call seam: the only module that forks, execs, signals and reaps.

Everything above this module (the job state machine, the bus layer) deals in pids and
:class:`ExitInfo` values and is tested without a single process; everything here is tested with
real ones.

Model
=====

``spawn()`` starts one process and returns its pid, or raises :class:`SpawnError` naming the
setup step that failed (``setuid "nobody": Operation not permitted``, ``exec "/nope": No such
file or directory``). It never returns a pid that did not reach ``exec``; a child that failed
before ``exec`` is reaped by ``spawn()`` itself (the one exception to "only the Reaper reaps": that
pid never existed for anyone else, and the loop cannot run between the fork and that wait).

Every process is the leader of a new session and process group (``setsid``), so a job's
processes can be signalled as a group and found again by session id when there is no cgroup;
its stdin is ``/dev/null``; stdout and stderr are ``/dev/null``, the job's log file (opened
by the manager, appended to, created ``0640`` with its parent directories) or the manager's own.
Signal dispositions and the signal mask are reset to the defaults, and no descriptor other than
0, 1, 2 and ``pass_fds`` survives into the new program.

There are two paths:

* the fast path, ``os.posix_spawn`` (glibc: ``clone(CLONE_VFORK)``, no Python code in the
  child), when the :class:`~busmgr.jobclass.ExecContext` needs no setup between fork and exec
  and there is no ``chdir`` (Python 3.11's ``posix_spawn`` has no chdir file action);
* the slow path, ``os.fork`` and a child that applies the context in the order the privileges
  require (see :func:`_child_setup`) and reports a failure through a close-on-exec pipe: EOF on
  that pipe means ``exec`` succeeded.

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

Cgroups
=======

Where a writable cgroup v2 hierarchy exists, every job instance gets a leaf cgroup (see
:mod:`busmgr.scope` for the layout) and ``spawn(cgroup=LEAF)`` starts the process *inside* it,
so no descendant can escape by forking before it was moved:

* the slow path: the child writes ``0`` to ``LEAF/cgroup.procs`` (itself) right after ``setsid``,
  before anything of the job's runs;
* the fast path: ``posix_spawn`` creates the child in the caller's cgroup, so the manager moves
  *itself* into the leaf, spawns, and moves itself back (two migrations, about 60 us each here,
  against a window of a few microseconds in which a program moved by the parent after
  ``posix_spawn`` could fork a child that stays outside). The manager has no threads and runs
  no other code in between, so nothing observes it in the leaf.

The helpers below (``cgroup_*``) are the only code that reads or writes cgroup files.

Reaping
=======

:class:`Reaper` is the one place that calls ``waitpid``: it makes the manager a child
subreaper (orphaned descendants of jobs are re-parented to it, not to PID 1), reaps every child
on ``SIGCHLD`` through the loop's signal handling, and hands each exit to the callback that
:meth:`Reaper.watch` registered for that pid, or to :attr:`Reaper.on_orphan`, and each stop to
the callback :meth:`Reaper.watch_stop` registered (``expect stop``). No thread, no timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno as errno_mod
import fcntl
import grp
import os
import platform
import pwd
import re
import resource
import shutil
import signal
import socket
import stat
import struct
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import prctl

from busmgr.jobclass import CAPABILITIES, ConsoleMode, ExecContext, signal_name

__all__ = [
    "CgroupError",
    "ExitInfo",
    "ForkEvents",
    "Reaper",
    "SpawnError",
    "cgroup2_mount",
    "cgroup_kill",
    "cgroup_of",
    "cgroup_pids",
    "cgroup_populated",
    "cgroup_remove",
    "child_pids",
    "kill_pid",
    "kill_process_group",
    "parent_pid",
    "proc_state",
    "session_processes",
    "set_cloexec_on_inherited_fds",
    "spawn",
]

DEV_NULL = "/dev/null"
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

# prctl(2) options and capability constants the python-prctl binding does not expose.
_PR_SET_KEEPCAPS = 8
_PR_CAPBSET_DROP = 24
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_RAISE = 2
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_IOPRIO_WHO_PROCESS = 1
_IOPRIO_CLASS_SHIFT = 13
_SYS_IOPRIO_SET = {
    "x86_64": 251,
    "i386": 289,
    "i686": 289,
    "aarch64": 30,
    "riscv64": 30,
    "armv7l": 314,
    "ppc64le": 273,
    "s390x": 282,
}.get(platform.machine())

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


# --------------------------------------------------------------------------------------------
# spawning


def spawn(
    argv: list[str],
    env: Mapping[str, str],
    ctx: ExecContext,
    *,
    log_path: str | None = None,
    proc_name: str | None = None,
    pass_fds: tuple[int, ...] = (),
    cgroup: str | None = None,
    foreground: bool = False,
) -> int:
    """Start ``argv`` with exactly ``env`` in ``ctx``; return its pid once it has exec'd.

    ``foreground`` (only for the command of ``busmgr session -- COMMAND``, with a default
    ``ctx``): stay in the manager's session and process group and inherit its stdin, so an
    interactive command keeps its terminal, as under ``dbus-run-session``.

    ``log_path`` is where stdout and stderr go with ``console log`` (required then, ignored
    otherwise). ``pass_fds`` are descriptors the program inherits at the same numbers.
    ``cgroup`` is a cgroup v2 directory the process is born in (before its first instruction,
    on either path; see "Cgroups" above).
    Raises :class:`SpawnError`, after which no process is left behind. The caller must
    :meth:`Reaper.watch` the pid before the loop runs again.
    """
    if not argv:
        raise SpawnError("exec", "empty command")
    # Mapping -> the dict posix_spawn/execve need; a second copy of a small dict is cheap.
    environ = dict(env)
    link_dir = None
    exec_path = None
    null_fd = out_fd = -1
    try:
        if proc_name is not None and ctx.chroot is None:
            link_dir, exec_path = _name_link(argv[0], environ, ctx.chdir, proc_name)
        null_fd = _open_high(DEV_NULL, os.O_RDWR)
        if ctx.console is ConsoleMode.LOG:
            if log_path is None:
                raise SpawnError("console log", "no log file given")
            out_fd = _open_log(log_path)
        elif ctx.console is ConsoleMode.NONE:
            out_fd = null_fd
        if foreground:
            if ctx.needs_child_setup or ctx.chdir is not None or cgroup is not None:
                raise SpawnError("exec", "a foreground command takes no job settings")
            return _spawn_posix(argv, environ, exec_path, -1, out_fd, pass_fds, setsid=False)
        if ctx.needs_child_setup or ctx.chdir is not None:
            return _spawn_fork(argv, environ, ctx, exec_path, null_fd, out_fd, pass_fds, cgroup)
        if cgroup is None:
            return _spawn_posix(argv, environ, exec_path, null_fd, out_fd, pass_fds)
        home = _own_cgroup_procs()
        _cgroup_join(cgroup, "0")
        try:
            return _spawn_posix(argv, environ, exec_path, null_fd, out_fd, pass_fds)
        finally:
            _cgroup_join_home(home)
    finally:
        if out_fd >= 0 and out_fd != null_fd:
            os.close(out_fd)
        if null_fd >= 0:
            os.close(null_fd)
        if link_dir is not None:
            shutil.rmtree(link_dir, ignore_errors=True)


def _spawn_posix(
    argv: list[str],
    env: dict[str, str],
    exec_path: str | None,
    null_fd: int,
    out_fd: int,
    pass_fds: tuple[int, ...],
    *,
    setsid: bool = True,
) -> int:
    """The fast path: posix_spawn, no Python in the child, nothing to set up but stdio.
    ``null_fd`` -1 leaves stdin as the manager has it."""
    path = exec_path or _which(argv[0], env, None)
    actions: list[tuple[int, int, int]] = []
    if null_fd >= 0:
        actions.append((os.POSIX_SPAWN_DUP2, null_fd, 0))
    if out_fd >= 0:
        actions += [(os.POSIX_SPAWN_DUP2, out_fd, 1), (os.POSIX_SPAWN_DUP2, out_fd, 2)]
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
) -> int:
    """The slow path: fork, set up in the child, report any failure through a CLOEXEC pipe."""
    err_r, err_w = os.pipe()  # both close-on-exec: EOF on err_r means exec succeeded
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _RESET_SIGNALS)
    try:
        pid = os.fork()
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        os.close(err_r)
        os.close(err_w)
        raise
    if pid == 0:  # pragma: no cover - the child; it never returns
        _child_main(argv, env, ctx, exec_path, null_fd, out_fd, pass_fds, err_w, cgroup)
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
) -> None:  # pragma: no cover - runs in the child
    """Run in the forked child: set up, exec, or report the failed step and ``_exit(127)``."""
    step = ["reset signals"]
    try:
        _child_setup(argv, env, ctx, exec_path, null_fd, out_fd, pass_fds, err_w, step, cgroup)
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
    lo = 3
    for keep in sorted({*pass_fds, err_w}):
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
        _ioprio_set(*ctx.ionice)

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
                _prctl(_PR_CAPBSET_DROP, cap)
        if uid:
            _prctl(_PR_SET_KEEPCAPS, 1)

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
        _prctl(_PR_SET_NO_NEW_PRIVS, 1)

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
        return pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except KeyError:
        raise LookupError("no such user") from None


def _getgr(name: str) -> int:
    try:
        return int(name) if name.isdigit() else grp.getgrnam(name).gr_gid
    except KeyError:
        raise LookupError("no such group") from None


def _rlim(value: int | None) -> int:
    return resource.RLIM_INFINITY if value is None else value


def _prctl(option: int, arg2: int, arg3: int = 0) -> None:
    if _libc.prctl(option, ctypes.c_ulong(arg2), ctypes.c_ulong(arg3), 0, 0) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def _ioprio_set(ioclass: int, level: int) -> None:
    if _SYS_IOPRIO_SET is None:
        raise OSError(errno_mod.ENOSYS, os.strerror(errno_mod.ENOSYS))
    prio = (ioclass << _IOPRIO_CLASS_SHIFT) | level
    if _libc.syscall(_SYS_IOPRIO_SET, _IOPRIO_WHO_PROCESS, 0, prio) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


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


# --------------------------------------------------------------------------------------------
# signalling


def kill_process_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to process group ``pgid``; False if the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def kill_pid(pid: int, sig: int) -> bool:
    """Send ``sig`` to one process; False if it no longer exists."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def session_processes(sid: int) -> list[int]:
    """Every live (or zombie) process whose session id is ``sid``, in pid order.

    The fallback to find a job's processes without a cgroup: each job process starts a session
    of its own, and its descendants stay in it unless they call ``setsid`` themselves (a daemon
    that does so escapes; that is what cgroups are for).
    """
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            pid = int(entry)
            with contextlib.suppress(OSError):  # gone meanwhile
                if os.getsid(pid) == sid:
                    found.append(pid)
    found.sort()
    return found


def child_pids(ppid: int) -> list[int]:
    """Every live or zombie process whose parent is ``ppid``, sorted."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields and int(fields[1]) == ppid:
                found.append(int(entry))
    found.sort()
    return found


def parent_pid(pid: int) -> int:
    """The parent of ``pid`` (0 if it is gone)."""
    fields = _stat_fields(pid)
    return int(fields[1]) if fields else 0


def proc_state(pid: int) -> str:
    """The one-letter state of ``pid`` (``R``, ``S``, ``T`` stopped, ``Z`` zombie...); ``""``
    if it is gone."""
    fields = _stat_fields(pid)
    return fields[0] if fields else ""


def _stat_fields(pid: int) -> list[str]:
    """``/proc/PID/stat`` after the command name: ``[state, ppid, pgrp, session, ...]``."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read()
    except OSError:
        return []
    return text[text.rindex(b")") + 2 :].decode().split()


# --------------------------------------------------------------------------------------------
# cgroups (v2 only; see "Cgroups" in the module docstring)


class CgroupError(OSError):
    """A cgroup operation that must succeed did not (creating a job's leaf, joining it)."""


def cgroup2_mount() -> tuple[str, str] | None:
    """``(mount point, own path)`` of the cgroup v2 hierarchy this process is in, or None.

    The own path is what ``/proc/self/cgroup`` says (``0::/PATH``), relative to the mount's
    root as ``/proc/self/mountinfo`` gives it (a container may mount only a subtree).
    """
    own = cgroup_of(os.getpid())
    if own is None:
        return None
    try:
        with open("/proc/self/mountinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        left, sep, right = line.partition(" - ")
        if not sep or right.split()[0] != "cgroup2":
            continue
        fields = left.split()
        root, mountpoint = _unoctal(fields[3]), _unoctal(fields[4])
        if root == "/" or own == root or own.startswith(root.rstrip("/") + "/"):
            rel = own if root == "/" else own[len(root.rstrip("/")) :] or "/"
            return mountpoint, rel
    return None


def _unoctal(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as ``\\ooo``."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def cgroup_of(pid: int) -> str | None:
    """The cgroup v2 path of ``pid`` (``/a/b``), or None if it is gone or there is no v2 line."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            for line in f:
                if line.startswith("0::"):
                    return line[3:].rstrip("\n").removesuffix(" (deleted)")
    except OSError:
        pass
    return None


def cgroup_pids(path: str) -> list[int]:
    """The processes in cgroup directory ``path`` (not its children), sorted; [] if it is gone.

    Exited processes are not listed, even before they are reaped."""
    try:
        with open(os.path.join(path, "cgroup.procs")) as f:
            return sorted(int(x) for x in f.read().split())
    except (FileNotFoundError, ProcessLookupError):
        return []


def cgroup_populated(path: str) -> bool:
    """Whether any live process is in ``path`` or below (``cgroup.events``)."""
    try:
        with open(os.path.join(path, "cgroup.events")) as f:
            for line in f:
                key, _, value = line.partition(" ")
                if key == "populated":
                    return value.strip() == "1"
    except FileNotFoundError:
        return False
    return bool(cgroup_pids(path))


def cgroup_kill(path: str) -> bool:
    """SIGKILL every process in ``path`` and below at once (``cgroup.kill``, Linux 5.14);
    False where that file does not exist (the caller then signals pid by pid)."""
    try:
        with open(os.path.join(path, "cgroup.kill"), "w") as f:
            f.write("1")
    except FileNotFoundError:
        return False
    return True


def cgroup_create(path: str) -> None:
    """Make the directory ``path`` (a leaf, or the manager's own parent of them)."""
    try:
        os.mkdir(path, 0o755)
    except FileExistsError:
        pass
    except OSError as e:
        raise CgroupError(e.errno, f'cgroup "{path}": {e.strerror}') from None


def cgroup_remove(path: str) -> bool:
    """Remove an empty cgroup directory; False if it still has processes or children."""
    try:
        os.rmdir(path)
    except FileNotFoundError:
        return True
    except OSError as e:
        if e.errno in (errno_mod.EBUSY, errno_mod.ENOTEMPTY):
            return False
        raise
    return True


_mount_cache: dict[int, tuple[str, str]] = {}


def _own_cgroup_procs() -> str:
    """The ``cgroup.procs`` file of the caller's current cgroup, to move back to.

    The mount is looked up once per process (mountinfo is long); the own cgroup is read each
    time, so a manager that an administrator moved elsewhere is moved back *there*."""
    pid = os.getpid()
    cached = _mount_cache.get(pid)
    if cached is None:
        found = cgroup2_mount()
        if found is None:
            raise CgroupError(errno_mod.ENOENT, "this process is in no cgroup v2 hierarchy")
        mount, rel = found
        full = cgroup_of(pid) or rel
        cached = _mount_cache[pid] = (mount, full[: len(full) - len(rel)] if rel != "/" else "")
    mount, root = cached
    own = (cgroup_of(pid) or "/")[len(root) :] or "/"
    return os.path.join(mount + own.rstrip("/"), "cgroup.procs")


def _cgroup_join(path: str, pid: str) -> None:
    try:
        with open(os.path.join(path, "cgroup.procs"), "w") as f:
            f.write(pid)
    except OSError as e:
        raise SpawnError(f'cgroup "{path}"', e.strerror or str(e), e.errno or 0) from None


def _cgroup_join_home(procs: str) -> None:
    """Move the manager back where it came from; failing that is a bug worth a crash."""
    with open(procs, "w") as f:
        f.write("0")


# --------------------------------------------------------------------------------------------
# following forks: the kernel's process events connector


_NETLINK_CONNECTOR = 11
_CN_IDX_PROC = 1
_CN_VAL_PROC = 1
_PROC_CN_MCAST_LISTEN = 1
_PROC_EVENT_FORK = 0x00000001
_PROC_EVENT_EXIT = 0x80000000
_NLMSG_DONE = 3
_NLMSG_HDR = struct.Struct("=IHHII")
_CN_MSG = struct.Struct("=IIIIHH")
_PROC_EVENT = struct.Struct("=IIQ")
_FORK_DATA = struct.Struct("=IIII")


def _subscribed(sock: socket.socket) -> bool:
    """Whether the acknowledgement of a subscription (event 0, error 0) is queued on ``sock``."""
    for _ in range(256):  # other events may already be queued ahead of it
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return False
        body = _NLMSG_HDR.size + _CN_MSG.size
        if len(data) >= body + _PROC_EVENT.size + 4:
            what = _PROC_EVENT.unpack_from(data, body)[0]
            if what == 0:
                return struct.unpack_from("=I", data, body + _PROC_EVENT.size)[0] == 0
    return False


class ForkEvents:
    """Every ``fork`` on the machine, as the kernel's process events connector reports it.

    ``ForkEvents.open(callback)`` returns None where the connector is unavailable: it needs
    ``CAP_NET_ADMIN`` and the initial pid namespace (the kernel ignores the subscription of a
    process in any other, so busmgr as a container's PID 1 never gets events), or a kernel
    built without ``CONFIG_PROC_EVENTS``. The callback gets ``(parent, child)`` process ids
    (thread creation is filtered out) for every process fork, in the order they happened.
    :meth:`drain` reads what is queued without waiting, so a caller that just reaped a process
    sees every fork that happened before that exit (the kernel queues the fork event during
    ``fork`` itself, before the parent can exit).
    """

    def __init__(self, sock: socket.socket, callback: Callable[[int, int], None]) -> None:
        self._sock = sock
        self._callback = callback
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def open(
        cls, loop: asyncio.AbstractEventLoop, callback: Callable[[int, int], None]
    ) -> ForkEvents | None:
        """Subscribe and start reading through ``loop``; None where it is not possible."""
        if not hasattr(socket, "AF_NETLINK"):
            return None
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_CONNECTOR)
        except OSError:
            return None
        try:
            sock.setblocking(False)
            sock.bind((0, _CN_IDX_PROC))
            op = struct.pack("=I", _PROC_CN_MCAST_LISTEN)
            cn = _CN_MSG.pack(_CN_IDX_PROC, _CN_VAL_PROC, 0, 0, len(op), 0) + op
            sock.send(_NLMSG_HDR.pack(_NLMSG_HDR.size + len(cn), _NLMSG_DONE, 0, 0, 0) + cn)
            # The kernel handles the request during send() and acknowledges it with an event
            # of type 0 carrying the error; from another pid or user namespace it ignores the
            # request without an answer. No answer (or an error): no events.
            if not _subscribed(sock):
                sock.close()
                return None
        except OSError:
            sock.close()
            return None
        events = cls(sock, callback)
        events._loop = loop
        loop.add_reader(sock.fileno(), events.drain)
        return events

    def drain(self) -> None:
        """Hand every queued fork to the callback; never blocks. A lost message (the socket
        overflowed) is lost: the callers' other rules still apply."""
        while True:
            try:
                data = self._sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # ENOBUFS: events were dropped; go on with the rest
                continue
            offset = 0
            while offset + _NLMSG_HDR.size <= len(data):
                length = _NLMSG_HDR.unpack_from(data, offset)[0]
                if length < _NLMSG_HDR.size:
                    break
                body = offset + _NLMSG_HDR.size + _CN_MSG.size
                if body + _PROC_EVENT.size + _FORK_DATA.size <= offset + length:
                    what = _PROC_EVENT.unpack_from(data, body)[0]
                    if what == _PROC_EVENT_FORK:
                        _pp, ptgid, cpid, ctgid = _FORK_DATA.unpack_from(
                            data, body + _PROC_EVENT.size
                        )
                        if cpid == ctgid:
                            self._callback(ptgid, ctgid)
                offset += (length + 3) & ~3

    def close(self) -> None:
        """Unsubscribe (closing the socket is enough)."""
        if self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._loop = None
        self._sock.close()


# --------------------------------------------------------------------------------------------
# reaping

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

    def unwatch(self, pid: int) -> None:
        """Forget the watcher of ``pid``; its exit will then count as an orphan's."""
        self._watchers.pop(pid, None)

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
