"""The clone spawn path's Python half: a job's settings resolved for the C child, its failure
put in words.

:func:`spawn_clone` turns an :class:`~busmgr.jobclass.ExecContext` into a
:class:`~busmgr.process.clonespawn.CloneRequest` (users, groups, supplementary groups and
capabilities looked up here, in the manager, before the child exists; the listening sockets'
moves computed; the program resolved unless the child must search it after ``chroot`` or
``chdir``) and starts it with :func:`~busmgr.process.clonespawn.clone_spawn`. The child is
born in ``cgroup`` by ``CLONE_INTO_CGROUP``: nothing here moves the manager.

Invariants: a failure is a :class:`~busmgr.process.spawnbase.SpawnError` whose step reads as
the fork path's (:mod:`busmgr.process.forkpath`) for the same setting, whether it was found
by a lookup here or by the C child (:func:`_step_text`); no process is left behind by a
failure (the C half reaps its failed child). :mod:`busmgr.process.spawning` calls this only
when :func:`~busmgr.process.clonespawn.available`.
"""

from __future__ import annotations

import os

from busmgr.jobclass import ExecContext
from busmgr.process import clonespawn
from busmgr.process.clonespawn import CloneFailed, CloneRequest, Step
from busmgr.process.credentials import RLIMIT_NAMES, cap_last, cap_number, getgr, getpw, rlim
from busmgr.process.spawnbase import (
    LISTEN_FDS_START,
    Listen,
    SpawnError,
    fd_moves,
    spare_fd,
    which,
)

__all__ = ["spawn_clone"]


def spawn_clone(
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
    """The clone path (see "Paths" in :mod:`busmgr.process.spawning`): every setting resolved
    here, applied by the C child, which is born in ``cgroup``. Users, groups and capabilities
    are looked up before the child exists, so a missing one fails with the same words as in
    the child."""
    uid = gid = -1
    groups: tuple[int, ...] | None = None
    if ctx.setuid is not None:
        try:
            pw = getpw(ctx.setuid)
        except LookupError as e:
            raise SpawnError(f'setuid "{ctx.setuid}"', str(e)) from None
        uid, gid = pw.pw_uid, pw.pw_gid
    if ctx.setgid is not None:
        try:
            gid = getgr(ctx.setgid)
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
            caps = tuple(cap_number(name) for name in ctx.caps_keep)
        except LookupError as e:
            raise SpawnError("caps keep", str(e)) from None
    moves: tuple[tuple[int, int, int], ...] = ()
    if listen is not None:
        spare = spare_fd(
            listen.fds, pass_fds, (null_fd, out_fd, LISTEN_FDS_START + len(listen.fds))
        )
        moves = tuple(
            (0 if how == os.POSIX_SPAWN_DUP2 else 1, fd, target)
            for how, fd, target in fd_moves(listen.fds, LISTEN_FDS_START, spare)
        )
    where = ctx.chdir or ("/" if ctx.chroot is not None else None)
    path = exec_path
    if path is None and where is None:
        path = which(argv[0], env, None)  # else the child searches, in its root and directory
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
        limits=tuple((lim.resource, rlim(lim.soft), rlim(lim.hard)) for lim in ctx.limits),
        nice=ctx.nice,
        ioprio=ioprio,
        groups=groups,
        chroot=ctx.chroot,
        chdir=where,
        umask=-1 if ctx.umask is None else ctx.umask,
        caps=caps,
        cap_last=cap_last() if caps is not None else 0,
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
    """What the child was doing, in the words of :func:`busmgr.process.forkpath._child_setup`."""
    step = failed.step
    if step is Step.CGROUP:
        return f'cgroup "{cgroup}"'
    if step is Step.OOM:
        return f"oom score {ctx.oom_score}"
    if step is Step.LIMIT:
        res = ctx.limits[failed.index].resource if failed.index < len(ctx.limits) else -1
        return f"limit {RLIMIT_NAMES.get(res, res)}"
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
