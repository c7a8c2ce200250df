"""The slow spawn path: ``os.fork`` and a Python child that applies the job's settings.

Used only where the clone library (:mod:`busmgr.process.clonespawn`) is missing and the
:class:`~busmgr.jobclass.ExecContext` needs setup between fork and exec (see "Paths" in
:mod:`busmgr.process.spawning`, which chooses). :func:`spawn_fork` forks; the child
(:func:`_child_setup`) applies the context in the order the privileges require (credentials,
limits, ``nice``/``ionice``, ``chroot``/``chdir``, ``umask``, capabilities), then execs, and
reports a failed step through a close-on-exec pipe: EOF on that pipe means ``exec`` succeeded.
The C child of the clone path takes the same steps in the same order and fails in the same
words.

Invariants:

* :func:`spawn_fork` returns only a pid that reached ``exec``; a child that failed before it is
  reaped here (that pid never existed for anyone else), and :class:`SpawnError` names the step.
* Around ``fork`` the parent blocks every signal, so no Python handler (and no write to
  asyncio's signal wake-up fd) runs in the child before it has reset the dispositions; the
  parent restores its mask right after.
* The child never returns into the manager's code: it execs or ``_exit(127)``.
* The manager has no threads (``fork`` is only safe because of that).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import resource
import signal
from collections.abc import Iterable

import prctl

from busmgr.jobclass import ExecContext
from busmgr.process.credentials import RLIMIT_NAMES, cap_last, cap_number, getgr, getpw, rlim
from busmgr.process.spawnbase import (
    LISTEN_FDS_START,
    RESET_SIGNALS,
    Listen,
    SpawnError,
    fd_moves,
    spare_fd,
)

__all__ = ["CHILD_FAILED", "spawn_fork"]

CHILD_FAILED = 127  # exit status of a child that did not reach exec, as a shell's

# prctl(2) options and capability constants the python-prctl binding does not expose (it has
# the bounding set, keepcaps and no_new_privs, used below, but no ambient capabilities).
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_RAISE = 2
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_libc = ctypes.CDLL(None, use_errno=True)


def spawn_fork(
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
        floor = spare_fd(listen.fds, pass_fds, (LISTEN_FDS_START + len(listen.fds),))
        high = fcntl.fcntl(err_w, fcntl.F_DUPFD_CLOEXEC, floor)
        os.close(err_w)
        err_w = high
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, RESET_SIGNALS)
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
    for sig in RESET_SIGNALS:
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
        spare = spare_fd(listen.fds, pass_fds, (err_w, LISTEN_FDS_START + len(listen.fds)))
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
        pw = getpw(ctx.setuid)
        uid, gid, user = pw.pw_uid, pw.pw_gid, pw.pw_name
    if ctx.setgid is not None:
        step[0] = f'setgid "{ctx.setgid}"'
        gid = getgr(ctx.setgid)

    if ctx.oom_score is not None:
        step[0] = f"oom score {ctx.oom_score}"
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(ctx.oom_score))
    for lim in ctx.limits:
        step[0] = f"limit {RLIMIT_NAMES.get(lim.resource, lim.resource)}"
        resource.setrlimit(lim.resource, (rlim(lim.soft), rlim(lim.hard)))
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
        kept = [cap_number(name) for name in ctx.caps_keep]
        for cap in range(cap_last()):
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
