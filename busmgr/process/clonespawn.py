"""The clone spawn: the C half of :mod:`busmgr.process.spawning`, loaded with ctypes.

``_clonespawn.c`` (beside this file; setup.py builds it as an optional extension, ``make
install`` copies it) starts one process with ``clone3(CLONE_VM | CLONE_VFORK |
CLONE_INTO_CGROUP)``: like ``posix_spawn`` it copies nothing of the manager, and unlike it the
child is born inside its job's cgroup (no migration, which the kernel makes wait for an RCU
grace period, 8-20 ms after a quiet spell) and can apply every job setting (session, stdio,
sockets, ``oom score``, limits, ``nice``, ``ionice``, groups, ``chroot``, ``chdir``,
``umask``, capabilities, ``setgid``, ``setuid``) in C before ``exec``. It returns once the child
has exec'd, or reports the step that failed; a failed child is reaped in C.

This module only translates: :class:`CloneRequest` (plain values, every name already looked
up by the caller) into the C structure, and a failure into :class:`CloneFailed` (the step, the
errno, which limit). What the steps are called for users is the caller's business.

:func:`available` is False when the library was not built (no compiler at install time) or
its layout does not match this binding; the caller then uses its Python paths.
"""

from __future__ import annotations

import ctypes
import enum
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CloneFailed", "CloneRequest", "Step", "available", "clone_spawn", "use_clone3"]

_UINT64 = (1 << 64) - 1


class Step(enum.IntEnum):
    """The child's steps, in the order it takes them (``enum step`` in the C file)."""

    NONE = 0
    SIGNALS = 1
    SETSID = 2
    CGROUP = 3
    CONSOLE = 4
    LISTEN = 5
    OOM = 6
    LIMIT = 7
    NICE = 8
    IONICE = 9
    GROUPS = 10
    CHROOT = 11
    CHDIR = 12
    CAPS = 13
    SETGID = 14
    SETUID = 15
    EXEC = 16
    CLONE = 17


class CloneFailed(Exception):
    """The child did not reach ``exec``: at ``step`` (the ``index``-th limit for
    :attr:`Step.LIMIT`) with ``errno``. No process is left."""

    def __init__(self, step: Step, errno: int, index: int = 0) -> None:
        super().__init__(f"{step.name.lower()}: {os.strerror(errno)}")
        self.step = step
        self.errno = errno
        self.index = index


@dataclass(frozen=True, slots=True)
class CloneRequest:
    """One spawn, resolved. ``path`` None: the child searches ``search_path`` for
    ``argv[0]`` (after ``chroot``/``chdir``, as ``execvpe`` would). ``moves`` are the listening
    sockets' ``(dup2=0|close=1, fd, target)`` steps, ``n_listen`` how many end at 3, 4, ...;
    the child then sets ``LISTEN_PID`` to its own pid. Ids are -1 and optional values None
    when not set; ``groups`` None leaves the supplementary groups alone."""

    argv: Sequence[str]
    env: Mapping[str, str]
    path: str | None = None
    search_path: str = os.defpath
    cgroup: str | None = None
    setsid: bool = True
    stdin_fd: int = -1
    stdout_fd: int = -1
    stderr_fd: int = -1
    keep_fds: tuple[int, ...] = ()
    moves: tuple[tuple[int, int, int], ...] = ()
    n_listen: int = 0
    oom_score: int | None = None
    limits: tuple[tuple[int, int, int], ...] = ()  # (resource, soft, hard), -1 unlimited
    nice: int | None = None
    ioprio: int = -1
    groups: tuple[int, ...] | None = None
    chroot: str | None = None
    chdir: str | None = None
    umask: int = -1
    caps: tuple[int, ...] | None = None
    cap_last: int = 0
    gid: int = -1
    uid: int = -1


class _Limit(ctypes.Structure):
    _fields_ = [("resource", ctypes.c_int), ("soft", ctypes.c_uint64), ("hard", ctypes.c_uint64)]


class _Spawn(ctypes.Structure):
    """``struct busmgr_spawn``, field by field."""

    _fields_ = [
        ("path", ctypes.c_char_p),
        ("argv", ctypes.POINTER(ctypes.c_char_p)),
        ("envp", ctypes.POINTER(ctypes.c_char_p)),
        ("search_path", ctypes.c_char_p),
        ("cgroup_fd", ctypes.c_int),
        ("cgroup_procs", ctypes.c_char_p),
        ("setsid", ctypes.c_int),
        ("stdin_fd", ctypes.c_int),
        ("stdout_fd", ctypes.c_int),
        ("stderr_fd", ctypes.c_int),
        ("keep_fds", ctypes.POINTER(ctypes.c_int)),
        ("n_keep", ctypes.c_int),
        ("moves", ctypes.POINTER(ctypes.c_int)),
        ("n_moves", ctypes.c_int),
        ("n_listen", ctypes.c_int),
        ("listen_pid_slot", ctypes.c_int),
        ("oom_score_set", ctypes.c_int),
        ("oom_score", ctypes.c_int),
        ("limits", ctypes.POINTER(_Limit)),
        ("n_limits", ctypes.c_int),
        ("nice_set", ctypes.c_int),
        ("nice", ctypes.c_int),
        ("ioprio", ctypes.c_int),
        ("groups_set", ctypes.c_int),
        ("groups", ctypes.POINTER(ctypes.c_uint32)),
        ("n_groups", ctypes.c_int),
        ("chroot_dir", ctypes.c_char_p),
        ("chdir_dir", ctypes.c_char_p),
        ("umask", ctypes.c_int),
        ("caps_set", ctypes.c_int),
        ("caps_mask", ctypes.c_uint64),
        ("cap_last", ctypes.c_int),
        ("gid", ctypes.c_long),
        ("uid", ctypes.c_long),
        ("failed_step", ctypes.c_int),
        ("failed_errno", ctypes.c_int),
        ("failed_index", ctypes.c_int),
        ("used_clone3", ctypes.c_int),
    ]


_lib: ctypes.CDLL | None = None
_loaded = False


def _load() -> ctypes.CDLL | None:
    """The library beside this file (any ``_clonespawn*.so``: setup.py names it after the
    interpreter, ``make install`` may not), or None."""
    global _lib, _loaded
    if _loaded:
        return _lib
    _loaded = True
    for candidate in sorted(Path(__file__).parent.glob("_clonespawn*.so")):
        try:
            lib = ctypes.CDLL(str(candidate))
            lib.busmgr_clonespawn_size.restype = ctypes.c_int
            if lib.busmgr_clonespawn_size() != ctypes.sizeof(_Spawn):
                continue  # built from another version of the C file
            lib.busmgr_clonespawn.argtypes = [ctypes.POINTER(_Spawn)]
            lib.busmgr_clonespawn.restype = ctypes.c_int
            lib.busmgr_clonespawn_use_clone3.argtypes = [ctypes.c_int]
            lib.busmgr_clonespawn_use_clone3.restype = None
        except (OSError, AttributeError):
            continue
        _lib = lib
        break
    return _lib


#: Tests set this False to take the Python paths even where the library exists.
enabled = True


def available() -> bool:
    """Whether :func:`clone_spawn` can be used here."""
    return enabled and _load() is not None


def use_clone3(on: bool) -> None:
    """Try ``clone3`` (the default), or take the library's fallback from now on: ``vfork``,
    the child joining its cgroup itself (what kernels before 5.7, seccomp filters that refuse
    ``clone3`` and other architectures get). For tests."""
    lib = _load()
    if lib is not None:
        lib.busmgr_clonespawn_use_clone3(int(on))


def _strings(values: Sequence[bytes]) -> ctypes.Array[ctypes.c_char_p]:
    array = (ctypes.c_char_p * (len(values) + 1))()
    array[: len(values)] = list(values)
    return array


def _ints(values: Sequence[int]) -> ctypes.Array[ctypes.c_int]:
    return (ctypes.c_int * max(1, len(values)))(*values)


_ENCODING, _ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()


def _bytes(text: str, what: str) -> bytes:
    """``text`` as ``os.fsencode`` would encode it; no NUL byte may be in it."""
    data = text.encode(_ENCODING, _ERRORS)
    if b"\0" in data:
        raise ValueError(f"embedded null byte in {what}")
    return data


def clone_spawn(req: CloneRequest) -> int:
    """Start ``req``; its pid once it has exec'd. Raises :class:`CloneFailed` (nothing left
    running), ``ValueError`` for a string with a NUL byte or an environment name that cannot
    be one (as ``os.execve`` does), ``OSError`` if the cgroup cannot be opened, and
    ``RuntimeError`` if the library is not :func:`available`."""
    lib = _load()
    if lib is None:
        raise RuntimeError("the clone spawn library is not built")
    argv = [_bytes(a, "an argument") for a in req.argv]
    env = [f"{key}={value}".encode(_ENCODING, _ERRORS) for key, value in req.env.items()]
    for (key, _value), entry in zip(req.env.items(), env, strict=True):
        if not key or "=" in key:
            raise ValueError("illegal environment variable name")
        if b"\0" in entry:
            raise ValueError("embedded null byte in the environment")
    slot = -1
    if req.n_listen:
        slot = len(env)
        env.append(b"LISTEN_PID=")  # the child puts its own pid here
    c = _Spawn()
    c_argv, c_env = _strings(argv), _strings(env)
    c.argv, c.envp = c_argv, c_env
    c.path = _bytes(req.path, "the program") if req.path is not None else None
    c.search_path = _bytes(req.search_path, "PATH")
    c.setsid = int(req.setsid)
    c.stdin_fd, c.stdout_fd, c.stderr_fd = req.stdin_fd, req.stdout_fd, req.stderr_fd
    keep = _ints(req.keep_fds)
    c.keep_fds, c.n_keep = keep, len(req.keep_fds)
    moves = _ints([n for move in req.moves for n in move])
    c.moves, c.n_moves, c.n_listen = moves, len(req.moves), req.n_listen
    c.listen_pid_slot = slot
    c.oom_score_set, c.oom_score = req.oom_score is not None, req.oom_score or 0
    limits = (_Limit * max(1, len(req.limits)))(
        *((res, soft & _UINT64, hard & _UINT64) for res, soft, hard in req.limits)
    )
    c.limits, c.n_limits = limits, len(req.limits)
    c.nice_set, c.nice = req.nice is not None, req.nice or 0
    c.ioprio = req.ioprio
    groups = (ctypes.c_uint32 * max(1, len(req.groups or ())))(*(req.groups or ()))
    c.groups_set, c.groups, c.n_groups = req.groups is not None, groups, len(req.groups or ())
    c.chroot_dir = _bytes(req.chroot, "chroot") if req.chroot is not None else None
    c.chdir_dir = _bytes(req.chdir, "chdir") if req.chdir is not None else None
    c.umask = req.umask
    mask = 0
    for cap in req.caps or ():
        mask |= 1 << cap
    c.caps_set, c.caps_mask, c.cap_last = req.caps is not None, mask, req.cap_last
    c.gid, c.uid = req.gid, req.uid
    cgroup_fd = -1
    if req.cgroup is not None:
        cgroup_fd = os.open(req.cgroup, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        c.cgroup_procs = _bytes(os.path.join(req.cgroup, "cgroup.procs"), "the cgroup")
    c.cgroup_fd = cgroup_fd
    try:
        pid = lib.busmgr_clonespawn(ctypes.byref(c))
    finally:
        if cgroup_fd >= 0:
            os.close(cgroup_fd)
    if pid < 0:
        raise CloneFailed(Step(c.failed_step), c.failed_errno, c.failed_index)
    return pid
