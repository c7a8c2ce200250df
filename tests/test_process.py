"""busmgr.process with real processes: spawn (every path), the Reaper, signalling helpers.

Every test runs three times (:func:`spawn_path`): with the clone spawn (the C library, where
it was built), with that library's own fallback (``vfork``, the child joining its cgroup
itself: older kernels, seccomp filters refusing ``clone3``), and with the Python paths alone
(``posix_spawn``, the manager moving itself into a job's cgroup, ``fork``), which busmgr takes
where the library is missing.

The Reaper calls ``waitpid(-1)`` and makes the pytest process a child subreaper, so the whole
module shares one loop and one Reaper (module-scoped fixtures), the subreaper flag is cleared at
the end, and every long-running child is killed (by its own process group, which only it and its
descendants are in) before its test ends. Nothing here sleeps: tests wait on futures that Reaper
callbacks or pipe readers resolve, each under a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import pwd
import re
import resource
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import prctl
import psutil
import pytest

from busmgr.jobclass import ConsoleMode, ExecContext, Limit
from busmgr.process import (
    ExitInfo,
    ForkEvents,
    Reaper,
    SpawnError,
    cgroup2_mount,
    cgroup_create,
    cgroup_kill,
    cgroup_of,
    cgroup_pids,
    cgroup_populated,
    cgroup_remove,
    child_pids,
    clonespawn,
    kill_pid,
    kill_process_group,
    parent_pid,
    proc_state,
    session_processes,
    set_cloexec_on_inherited_fds,
    spawn,
)
from busmgr.scope import ProcessScope

TIMEOUT = 10.0
ENV = {"PATH": "/usr/bin:/bin"}
SLEEP = shutil.which("sleep") or "/bin/sleep"
IS_ROOT = os.geteuid() == 0
CAP_NET_BIND_SERVICE = 10
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root to change credentials")

# Any setting that forces the fork path while changing nothing observable in these tests.
SLOW = ExecContext(umask=0o022)
PLAIN = ExecContext()


CLONE, VFORK, PYTHON = "clone", "vfork", "python"


@pytest.fixture(scope="module", autouse=True, params=[CLONE, VFORK, PYTHON])
def spawn_path(request: pytest.FixtureRequest) -> Iterator[str]:
    """Which spawn paths ``spawn()`` may take: the clone spawn, its ``vfork`` fallback
    (both skipped, with the reason, where the library was not built), or only the Python
    ones."""
    if request.param != PYTHON and not clonespawn.available():
        pytest.skip("the clone spawn library is not built (setup.py; needs gcc)")
    saved = clonespawn.enabled
    clonespawn.enabled = request.param != PYTHON
    clonespawn.use_clone3(request.param == CLONE)
    yield request.param
    clonespawn.enabled = saved
    clonespawn.use_clone3(True)


@pytest.fixture(scope="module")
async def reaper() -> AsyncIterator[Reaper]:
    # The fast path relies on every inherited descriptor being close-on-exec; the manager
    # establishes that at start, and so does this module (pytest may inherit a few from its
    # caller).
    set_cloexec_on_inherited_fds()
    r = Reaper(asyncio.get_running_loop())
    r.start()
    yield r
    r.stop()
    prctl.set_child_subreaper(False)


@dataclass
class Orphans:
    """Collects the Reaper's orphan reports; tests await the pids they expect."""

    seen: dict[int, ExitInfo] = field(default_factory=dict)
    waiting: dict[int, asyncio.Future[ExitInfo]] = field(default_factory=dict)

    def __call__(self, pid: int, info: ExitInfo) -> None:
        self.seen[pid] = info
        fut = self.waiting.pop(pid, None)
        if fut is not None and not fut.done():
            fut.set_result(info)

    async def wait(self, pid: int) -> ExitInfo:
        if pid in self.seen:
            return self.seen[pid]
        fut = asyncio.get_running_loop().create_future()
        self.waiting[pid] = fut
        return await asyncio.wait_for(fut, TIMEOUT)


@pytest.fixture(scope="module")
def orphans(reaper: Reaper) -> Iterator[Orphans]:
    o = Orphans()
    reaper.on_orphan = o
    yield o
    reaper.on_orphan = None


@dataclass
class Child:
    pid: int
    exited: asyncio.Future[ExitInfo]

    async def wait(self) -> ExitInfo:
        return await asyncio.wait_for(asyncio.shield(self.exited), TIMEOUT)


class Spawner:
    """spawn() + Reaper.watch(); kills whatever is still running when the test ends."""

    def __init__(self, reaper: Reaper, orphans: Orphans) -> None:
        self.reaper = reaper
        self.orphans = orphans
        self.children: list[Child] = []

    def start(
        self,
        argv: list[str],
        ctx: ExecContext = PLAIN,
        env: dict[str, str] | None = None,
        **kw: object,
    ) -> Child:
        pid = spawn(argv, ENV if env is None else env, ctx, **kw)  # type: ignore[arg-type]
        fut: asyncio.Future[ExitInfo] = asyncio.get_running_loop().create_future()

        def done(_pid: int, info: ExitInfo) -> None:
            if not fut.done():
                fut.set_result(info)

        self.reaper.watch(pid, done)
        child = Child(pid, fut)
        self.children.append(child)
        return child

    async def run(self, argv: list[str], ctx: ExecContext = PLAIN, **kw: object) -> ExitInfo:
        return await self.start(argv, ctx, **kw).wait()

    async def cleanup(self) -> None:
        """Kill what is left of each child's session (a failed test may leave descendants)."""
        for child in self.children:
            leftovers = [pid for pid in session_processes(child.pid) if pid != child.pid]
            if not child.exited.done():
                kill_process_group(child.pid, signal.SIGKILL)
            for pid in leftovers:
                kill_pid(pid, signal.SIGKILL)
            if not child.exited.done():
                await child.wait()
            for pid in leftovers:
                await self.orphans.wait(pid)


@pytest.fixture
async def procs(reaper: Reaper, orphans: Orphans) -> AsyncIterator[Spawner]:
    s = Spawner(reaper, orphans)
    try:
        yield s
    finally:
        await s.cleanup()


def stat_fields(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the command name: [state, ppid, pgrp, session, ...]."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()


def status_field(pid: int, key: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == key:
            return value.strip()
    raise KeyError(key)


def open_fds(pid: int) -> set[int]:
    """The descriptors ``pid`` has open, but for those of its dynamic loader: a program that
    has just exec'd may still be loading its libraries (``ld.so.cache``, ``libc.so.6``), and a
    descriptor closed while it was being looked at was the loader's too."""
    found = set()
    for entry in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{entry}")
        except FileNotFoundError:
            continue
        if not (target.endswith("/ld.so.cache") or re.search(r"\.so(\.[0-9]+)*$", target)):
            found.add(int(entry))
    return found


async def read_line(fd: int) -> bytes:
    """One line from a pipe, read through the loop (never blocking it)."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[bytes] = loop.create_future()
    buf = bytearray()

    def readable() -> None:
        chunk = os.read(fd, 4096)
        buf.extend(chunk)
        if (b"\n" in buf or not chunk) and not fut.done():
            fut.set_result(bytes(buf))

    loop.add_reader(fd, readable)
    try:
        return await asyncio.wait_for(fut, TIMEOUT)
    finally:
        loop.remove_reader(fd)


def fd_path(fd: int) -> str:
    """How a shell script writes to an inherited descriptor (dash only knows ``>&0``..``>&9``)."""
    return f"/proc/self/fd/{fd}"


@contextlib.contextmanager
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    try:
        yield r, w
    finally:
        for fd in (r, w):
            with contextlib.suppress(OSError):
                os.close(fd)


# --------------------------------------------------------------------------------------------
# ExitInfo


def test_exit_info_from_status() -> None:
    info = ExitInfo.from_wait_status(3 << 8)
    assert info == ExitInfo(status=3, signal=None)
    assert info.describe() == "exited with status 3"


def test_exit_info_from_signal() -> None:
    info = ExitInfo.from_wait_status(signal.SIGSEGV)
    assert info == ExitInfo(status=None, signal=signal.SIGSEGV)
    assert info.describe() == "killed by signal SEGV"


def test_exit_info_rejects_stopped() -> None:
    with pytest.raises(ValueError):
        ExitInfo.from_wait_status(0x137F)  # WIFSTOPPED, SIGSTOP


# --------------------------------------------------------------------------------------------
# spawn: stdio, session, environment, signals, descriptors


@pytest.mark.parametrize("ctx", [ExecContext(), SLOW], ids=["fast", "slow"])
async def test_new_session_and_dev_null(
    procs: Spawner, ctx: ExecContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not ctx.needs_child_setup:

        def no_fork() -> int:
            raise AssertionError("the fast path must not fork")

        monkeypatch.setattr(os, "fork", no_fork)
    child = procs.start([SLEEP, "60"], ctx)
    fields = stat_fields(child.pid)
    assert int(fields[1]) == os.getpid()  # ppid
    assert int(fields[2]) == child.pid  # process group leader
    assert int(fields[3]) == child.pid  # session leader
    for fd in (0, 1, 2):
        assert os.readlink(f"/proc/{child.pid}/fd/{fd}") == "/dev/null"
    assert open_fds(child.pid) == {0, 1, 2}


async def test_echo_fast_path_exits_zero(procs: Spawner) -> None:
    assert await procs.run(["echo", "hello"]) == ExitInfo(0, None)


@pytest.mark.parametrize("ctx", [ExecContext(), SLOW], ids=["fast", "slow"])
async def test_signals_reset(procs: Spawner, ctx: ExecContext) -> None:
    # The manager (like any Python program) ignores SIGPIPE and has handlers installed; block
    # a signal too, to see that the child's mask is cleared.
    assert signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})
    try:
        child = procs.start([SLEEP, "60"], ctx)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
    # glibc keeps its two internal signals (32, 33: invisible to programs, not in
    # valid_signals()) to itself: posix_spawn and the clone spawn leave them as the manager has
    # them until exec resets them, a moment after a vfork parent goes on. Only the signals a
    # program can see must be default.
    visible = sum(1 << (sig - 1) for sig in signal.valid_signals())
    assert int(status_field(child.pid, "SigIgn"), 16) & visible == 0
    assert int(status_field(child.pid, "SigBlk"), 16) == 0
    assert int(status_field(child.pid, "SigCgt"), 16) & visible == 0


@pytest.mark.parametrize("ctx", [ExecContext(), SLOW], ids=["fast", "slow"])
async def test_env_passed_exactly(procs: Spawner, ctx: ExecContext, tmp_path: Path) -> None:
    log = tmp_path / "env.log"
    env = {"A": "1", "B": "two words", "EMPTY": ""}
    ctx = ExecContext(umask=ctx.umask, console=ConsoleMode.LOG)
    info = await procs.start(["/usr/bin/env"], ctx, env=env, log_path=str(log)).wait()
    assert info == ExitInfo(0, None)
    assert log.read_text().splitlines() == ["A=1", "B=two words", "EMPTY="]


async def test_path_search_uses_job_path(procs: Spawner, tmp_path: Path) -> None:
    prog = tmp_path / "only-here"
    prog.write_text("#!/bin/sh\nexit 42\n")
    prog.chmod(0o755)
    env = {"PATH": f"/nonexistent:{tmp_path}"}
    assert await procs.start(["only-here"], env=env).wait() == ExitInfo(42, None)


@pytest.mark.parametrize("ctx", [ExecContext(), SLOW], ids=["fast", "slow"])
async def test_console_log(procs: Spawner, ctx: ExecContext, tmp_path: Path) -> None:
    log = tmp_path / "new" / "dirs" / "job.log"
    ctx = ExecContext(umask=ctx.umask, console=ConsoleMode.LOG)
    script = "echo out; echo err >&2; readlink /proc/self/fd/0"
    for _ in range(2):
        info = await procs.run(["sh", "-c", script], ctx, log_path=str(log))
        assert info == ExitInfo(0, None)
    assert log.read_text() == "out\nerr\n/dev/null\n" * 2  # appended, not truncated
    assert stat.S_IMODE(log.stat().st_mode) == 0o640


async def test_console_log_unwritable(procs: Spawner, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    ctx = ExecContext(console=ConsoleMode.LOG)
    with pytest.raises(SpawnError, match=r'^console log ".*/file/job.log": Not a directory$'):
        procs.start(["true"], ctx, log_path=str(tmp_path / "file" / "job.log"))


@pytest.mark.parametrize("ctx", [ExecContext(), SLOW], ids=["fast", "slow"])
async def test_console_output(
    procs: Spawner, ctx: ExecContext, capfd: pytest.CaptureFixture[str]
) -> None:
    ctx = ExecContext(umask=ctx.umask, console=ConsoleMode.OUTPUT)
    assert await procs.run(["sh", "-c", "echo to-out; echo to-err >&2"], ctx) == ExitInfo(0, None)
    out, err = capfd.readouterr()
    assert "to-out" in out
    assert "to-err" in err


@pytest.mark.parametrize("ctx", [ExecContext(), SLOW], ids=["fast", "slow"])
async def test_pass_fds_and_no_leaks(procs: Spawner, ctx: ExecContext, tmp_path: Path) -> None:
    log = tmp_path / "fds.log"
    ctx = ExecContext(umask=ctx.umask, console=ConsoleMode.LOG)
    with pipe() as (_r, w), pipe() as (_r2, stray):
        # A descriptor someone made inheritable by hand does not reach a forked child; the fast
        # path relies on the manager's invariant instead (see set_cloexec_on_inherited_fds).
        if ctx.needs_child_setup:
            os.set_inheritable(stray, True)
        # The shell lists its own descriptors while it waits for ls: a stable moment (looking
        # from outside right after spawn() would race with the new program's dynamic loader).
        info = await procs.run(
            ["sh", "-c", "ls /proc/$$/fd"], ctx, pass_fds=(w,), log_path=str(log)
        )
        assert info == ExitInfo(0, None)
        assert {int(fd) for fd in log.read_text().split()} == {0, 1, 2, w}
        assert not os.get_inheritable(w)  # the manager's own copy stays close-on-exec


@pytest.mark.parametrize("ctx", [PLAIN, SLOW], ids=["fast", "slow"])
async def test_pass_fds_writable(procs: Spawner, ctx: ExecContext) -> None:
    with pipe() as (r, w):
        procs.start(["sh", "-c", f"echo ready >{fd_path(w)}"], ctx, pass_fds=(w,))
        os.close(w)
        assert await read_line(r) == b"ready\n"


# --------------------------------------------------------------------------------------------
# spawn failures


@pytest.mark.parametrize("ctx", [ExecContext(), SLOW], ids=["fast", "slow"])
async def test_missing_binary(procs: Spawner, ctx: ExecContext) -> None:
    with pytest.raises(SpawnError) as exc:
        procs.start(["/nope", "arg"], ctx)
    assert str(exc.value) == 'exec "/nope": No such file or directory'
    assert exc.value.step == 'exec "/nope"'


@pytest.mark.parametrize("ctx", [ExecContext(), SLOW], ids=["fast", "slow"])
async def test_missing_binary_on_path(procs: Spawner, ctx: ExecContext) -> None:
    with pytest.raises(SpawnError, match=r'^exec "no-such-program-x": No such file or directory$'):
        procs.start(["no-such-program-x"], ctx)


async def test_not_executable(procs: Spawner, tmp_path: Path) -> None:
    f = tmp_path / "data"
    f.write_text("")
    with pytest.raises(SpawnError, match=r'^exec ".*/data": Permission denied$'):
        procs.start([str(f)])


async def test_failed_child_is_collected_by_spawn(
    procs: Spawner, reaper: Reaper, orphans: Orphans
) -> None:
    # The slow path's child exits 127 after reporting; spawn() reaps it itself, so a sentinel
    # process exiting afterwards is the only thing the Reaper hears of.
    before = dict(orphans.seen)
    with pytest.raises(SpawnError):
        procs.start(["/nope"], SLOW)
    assert await procs.run(["true"]) == ExitInfo(0, None)
    assert orphans.seen == before
    assert reaper.pending() == set()


async def test_unknown_user(procs: Spawner) -> None:
    with pytest.raises(SpawnError, match=r'^setuid "no-such-user-x": no such user$'):
        procs.start(["true"], ExecContext(setuid="no-such-user-x"))


async def test_unknown_group(procs: Spawner) -> None:
    with pytest.raises(SpawnError, match=r'^setgid "no-such-group-x": no such group$'):
        procs.start(["true"], ExecContext(setgid="no-such-group-x"))


async def test_bad_chdir(procs: Spawner) -> None:
    with pytest.raises(SpawnError, match=r'^chdir "/nonexistent-dir": No such file or directory$'):
        procs.start(["true"], ExecContext(chdir="/nonexistent-dir"))


@needs_root
async def test_bad_chroot(procs: Spawner) -> None:
    with pytest.raises(SpawnError, match=r'^chroot "/nonexistent-dir": No such file or directory$'):
        procs.start(["true"], ExecContext(chroot="/nonexistent-dir"))


async def test_unknown_capability(procs: Spawner) -> None:
    with pytest.raises(SpawnError, match=r"^caps keep: unknown capability 'frobnicate'$"):
        procs.start(["true"], ExecContext(caps_keep=("frobnicate",)))


@pytest.mark.skipif(IS_ROOT, reason="as root setuid succeeds; the success is tested instead")
async def test_setuid_not_permitted(procs: Spawner) -> None:
    with pytest.raises(SpawnError, match=r'^setuid "nobody": Operation not permitted$'):
        procs.start(["true"], ExecContext(setuid="nobody"))


# --------------------------------------------------------------------------------------------
# spawn: execution context


@needs_root
async def test_setuid_nobody(procs: Spawner) -> None:
    pw = pwd.getpwnam("nobody")
    child = procs.start([SLEEP, "60"], ExecContext(setuid="nobody"))
    uids = status_field(child.pid, "Uid").split()
    gids = status_field(child.pid, "Gid").split()
    groups = {int(g) for g in status_field(child.pid, "Groups").split()}
    assert uids == [str(pw.pw_uid)] * 4
    assert gids == [str(pw.pw_gid)] * 4
    assert groups == set(os.getgrouplist("nobody", pw.pw_gid))
    assert int(status_field(child.pid, "CapEff"), 16) == 0
    assert int(status_field(child.pid, "CapPrm"), 16) == 0


@needs_root
async def test_setgid_only(procs: Spawner) -> None:
    pw = pwd.getpwnam("nobody")
    child = procs.start([SLEEP, "60"], ExecContext(setgid=str(pw.pw_gid)))
    assert status_field(child.pid, "Uid").split()[0] == "0"
    assert status_field(child.pid, "Gid").split() == [str(pw.pw_gid)] * 4
    assert status_field(child.pid, "Groups") == ""  # root's supplementary groups dropped


async def test_umask_nice_limits_oom_chdir_ionice(procs: Spawner, tmp_path: Path) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    new_hard = min(hard, 4096) if hard != resource.RLIM_INFINITY else 4096
    ctx = ExecContext(
        chdir=str(tmp_path),
        umask=0o027,
        nice=7,
        ionice=(2, 5),  # best-effort, level 5
        limits=(Limit(resource.RLIMIT_NOFILE, 123, new_hard), Limit(resource.RLIMIT_CORE, 0, 0)),
        oom_score=321,  # raising it needs no privilege (lowering needs CAP_SYS_RESOURCE)
    )
    child = procs.start([SLEEP, "60"], ctx)
    p = psutil.Process(child.pid)
    assert status_field(child.pid, "Umask") == "0027"
    assert p.nice() == 7
    assert p.ionice() == (psutil.IOPRIO_CLASS_BE, 5)
    assert p.rlimit(psutil.RLIMIT_NOFILE) == (123, new_hard)
    assert p.rlimit(psutil.RLIMIT_CORE) == (0, 0)
    assert Path(f"/proc/{child.pid}/oom_score_adj").read_text().strip() == "321"
    assert os.readlink(f"/proc/{child.pid}/cwd") == str(tmp_path)
    assert os.readlink(f"/proc/{child.pid}/fd/1") == "/dev/null"


async def test_chdir_alone_uses_relative_program(procs: Spawner, tmp_path: Path) -> None:
    (tmp_path / "prog").write_text("#!/bin/sh\npwd\n")
    (tmp_path / "prog").chmod(0o755)
    log = tmp_path / "out.log"
    ctx = ExecContext(chdir=str(tmp_path), console=ConsoleMode.LOG)
    assert await procs.run(["./prog"], ctx, log_path=str(log)) == ExitInfo(0, None)
    assert log.read_text() == f"{tmp_path}\n"


def make_chroot(root: Path, program: str) -> str:
    """Copy ``program`` and the shared objects it needs under ``root``; return its path there."""
    ldd = subprocess.run(["ldd", program], capture_output=True, text=True, check=False)
    if ldd.returncode != 0 and "not a dynamic executable" not in ldd.stdout + ldd.stderr:
        pytest.skip(f"cannot list the libraries of {program}")
    for path in [program, *re.findall(r"(/\S+) \(0x", ldd.stdout)]:
        dest = root / path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.realpath(path), dest)
    return "/" + program.lstrip("/")


@needs_root
@pytest.mark.skipif(shutil.which("ldd") is None, reason="needs ldd to copy a binary's libraries")
async def test_chroot(procs: Spawner, tmp_path: Path) -> None:
    inside = make_chroot(tmp_path, os.path.realpath(SLEEP))
    child = procs.start([inside, "60"], ExecContext(chroot=str(tmp_path)))
    assert os.readlink(f"/proc/{child.pid}/root") == str(tmp_path)
    assert os.readlink(f"/proc/{child.pid}/cwd") == str(tmp_path)  # "/" inside
    # stdio was opened before the chroot, which has no /dev/null.
    assert os.readlink(f"/proc/{child.pid}/fd/0") == "/dev/null"


@needs_root
@pytest.mark.parametrize("user", [None, "nobody"])
async def test_caps_keep(procs: Spawner, user: str | None) -> None:
    ctx = ExecContext(setuid=user, caps_keep=("net_bind_service",))
    child = procs.start([SLEEP, "60"], ctx)
    kept = 1 << CAP_NET_BIND_SERVICE
    assert int(status_field(child.pid, "CapBnd"), 16) == kept
    assert int(status_field(child.pid, "CapEff"), 16) == kept
    assert int(status_field(child.pid, "CapPrm"), 16) == kept
    # Root gets the kept capability back at exec from the bounding set; any other user
    # only through the ambient set.
    assert int(status_field(child.pid, "CapAmb"), 16) == (kept if user else 0)
    assert status_field(child.pid, "NoNewPrivs") == "1"
    if user:
        assert status_field(child.pid, "Uid").split()[0] == str(pwd.getpwnam(user).pw_uid)


@needs_root
async def test_caps_keep_lets_nobody_bind_low_port(procs: Spawner, tmp_path: Path) -> None:
    python = "/usr/bin/python3"  # not a venv under /root, which nobody cannot traverse
    if not os.access(python, os.X_OK):
        pytest.skip("needs a system /usr/bin/python3")
    code = "import socket; s = socket.socket(); s.bind(('127.0.0.1', 1)); print('bound')"
    log = tmp_path / "bind.log"
    cases = [(("CAP_NET_BIND_SERVICE",), "bound")]
    unprivileged = Path("/proc/sys/net/ipv4/ip_unprivileged_port_start")
    if not unprivileged.exists() or int(unprivileged.read_text()) > 1:
        cases.append(((), "Permission"))
    for caps, expected in cases:
        log.write_text("")
        ctx = ExecContext(setuid="nobody", caps_keep=caps, console=ConsoleMode.LOG)
        await procs.run([python, "-c", code], ctx, log_path=str(log))
        assert expected in log.read_text()


async def named(procs: Spawner, ctx: ExecContext, name: str) -> tuple[Child, str]:
    """A shell started with ``proc name``, once it runs (it says so through a FIFO any user
    may write), and its script. The kernel names a new program a moment after it lets a
    vfork parent go on: looking at once could see the old name. The shell keeps its own name
    (it execs nothing) and then waits, with no child, opening a FIFO nobody writes to."""
    where = Path(tempfile.mkdtemp(prefix="busmgr-test-", dir="/tmp"))
    try:
        where.chmod(0o755)
        fifo, hold = where / "up", where / "hold"
        for path in (fifo, hold):
            os.mkfifo(path)
            path.chmod(0o666)
        fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)  # never EOF: we write too
        try:
            script = f"echo up >{fifo}; read x <{hold}"
            child = procs.start(["sh", "-c", script], ctx, proc_name=name)
            assert await read_line(fd) == b"up\n"
        finally:
            os.close(fd)
    finally:
        shutil.rmtree(where)
    return child, script


@pytest.mark.parametrize("ctx", [ExecContext(), SLOW], ids=["fast", "slow"])
async def test_proc_name(
    procs: Spawner, ctx: ExecContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    links = tmp_path / "tmp"
    links.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(links))  # where spawn() puts its symlink
    child, script = await named(procs, ctx, "my-daemon")
    assert Path(f"/proc/{child.pid}/comm").read_text() == "my-daemon\n"
    sh = shutil.which("sh") or "/bin/sh"
    assert os.path.realpath(f"/proc/{child.pid}/exe") == os.path.realpath(sh)
    assert Path(f"/proc/{child.pid}/cmdline").read_bytes() == b"sh\x00-c\x00" + (
        script.encode() + b"\x00"
    )
    assert list(links.iterdir()) == []  # removed once exec had happened


@needs_root
async def test_proc_name_as_other_user(procs: Spawner) -> None:
    child, _ = await named(procs, ExecContext(setuid="nobody"), "nobodyd")
    assert Path(f"/proc/{child.pid}/comm").read_text() == "nobodyd\n"


async def test_proc_name_truncated_by_kernel(procs: Spawner) -> None:
    child, _ = await named(procs, PLAIN, "a-very-long-process-name")
    assert Path(f"/proc/{child.pid}/comm").read_text() == "a-very-long-pro\n"  # 15 bytes


async def test_proc_name_invalid(procs: Spawner) -> None:
    with pytest.raises(SpawnError, match=r'^proc name "a/b": not a valid process name$'):
        procs.start([SLEEP, "60"], proc_name="a/b")


async def test_proc_name_keeps_script_runnable(procs: Spawner, tmp_path: Path) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\nexit 9\n")
    script.chmod(0o755)
    assert await procs.run([str(script)], proc_name="renamed") == ExitInfo(9, None)


# --------------------------------------------------------------------------------------------
# Reaper


async def test_reaper_exit_status(procs: Spawner, reaper: Reaper) -> None:
    child = procs.start(["sh", "-c", "exit 3"])
    assert child.pid in reaper.pending() or child.exited.done()
    info = await child.wait()
    assert info == ExitInfo(3, None)
    assert info.describe() == "exited with status 3"
    assert child.pid not in reaper.pending()


async def test_reaper_signal(procs: Spawner) -> None:
    info = await procs.run(["sh", "-c", "kill -SEGV $$"])
    assert info == ExitInfo(None, signal.SIGSEGV)
    assert info.describe() == "killed by signal SEGV"


async def test_reaper_killed(procs: Spawner) -> None:
    child = procs.start([SLEEP, "60"])
    assert kill_pid(child.pid, signal.SIGKILL)
    assert await child.wait() == ExitInfo(None, signal.SIGKILL)
    assert not kill_pid(child.pid, 0)


async def test_watch_after_reaped(reaper: Reaper, orphans: Orphans) -> None:
    pid = spawn(["sh", "-c", "exit 5"], ENV, ExecContext())
    # Wait for the exit without collecting it, then reap before anyone watches.
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
    reaper.reap()
    fut: asyncio.Future[tuple[int, ExitInfo]] = asyncio.get_running_loop().create_future()
    reaper.watch(pid, lambda p, info: fut.set_result((p, info)))
    assert await asyncio.wait_for(fut, TIMEOUT) == (pid, ExitInfo(5, None))
    assert pid not in orphans.seen


async def test_unwatched_child_is_orphan(reaper: Reaper, orphans: Orphans) -> None:
    pid = spawn(["sh", "-c", "exit 4"], ENV, ExecContext())
    assert await orphans.wait(pid) == ExitInfo(4, None)


async def test_orphaned_grandchild_reaped(procs: Spawner, orphans: Orphans) -> None:
    with pipe() as (r, w):
        child = procs.start(["sh", "-c", f"{SLEEP} 60 & echo $! >{fd_path(w)}"], pass_fds=(w,))
        os.close(w)
        grandchild = int(await read_line(r))
        assert await child.wait() == ExitInfo(0, None)
    # Re-parented to us (the subreaper), not to PID 1; reported as an orphan when it dies.
    assert psutil.Process(grandchild).ppid() == os.getpid()
    assert os.getsid(grandchild) == child.pid
    assert kill_pid(grandchild, signal.SIGTERM)
    assert await orphans.wait(grandchild) == ExitInfo(None, signal.SIGTERM)


# --------------------------------------------------------------------------------------------
# signalling helpers


async def test_session_processes_and_kill_group(procs: Spawner, orphans: Orphans) -> None:
    with pipe() as (r, w):
        script = f"{SLEEP} 60 & a=$!; {SLEEP} 60 & echo $a $! >{fd_path(w)}; wait"
        child = procs.start(["sh", "-c", script], pass_fds=(w,))
        os.close(w)
        sleepers = [int(p) for p in (await read_line(r)).split()]
    assert session_processes(child.pid) == sorted([child.pid, *sleepers])
    assert kill_process_group(child.pid, signal.SIGTERM)
    assert await child.wait() == ExitInfo(None, signal.SIGTERM)
    for pid in sleepers:
        assert await orphans.wait(pid) == ExitInfo(None, signal.SIGTERM)
    assert session_processes(child.pid) == []
    assert not kill_process_group(child.pid, signal.SIGTERM)


def test_session_processes_of_nothing() -> None:
    assert session_processes(2**22 + 1) == []


@pytest.mark.spawn_paths(CLONE, PYTHON)  # the vfork fallback: posix_spawn alone, as CLONE
async def test_fast_spawn_many(procs: Spawner, spawn_path: str) -> None:
    children = [procs.start(["true"]) for _ in range(50)]
    results = await asyncio.gather(*(c.wait() for c in children))
    assert results == [ExitInfo(0, None)] * 50


def test_spawn_error_message_forms() -> None:
    assert str(SpawnError('exec "/x"', "No such file or directory", 2)) == (
        'exec "/x": No such file or directory'
    )
    assert str(SpawnError("dbus-daemon exited early")) == "dbus-daemon exited early"


# --------------------------------------------------------------------------------------------
# /proc helpers, stops, fork events


async def test_proc_helpers(procs: Spawner) -> None:
    with pipe() as (r, w):
        child = procs.start(
            ["sh", "-c", f"{SLEEP} 60 & echo $! >{fd_path(w)}; wait"], pass_fds=(w,)
        )
        os.close(w)
        sleeper = int(await read_line(r))
    assert child_pids(child.pid) == [sleeper]
    assert parent_pid(sleeper) == child.pid
    assert child.pid in child_pids(os.getpid())
    assert proc_state(sleeper) in ("S", "R")
    assert proc_state(2**22 + 1) == "" and parent_pid(2**22 + 1) == 0


@pytest.mark.parametrize("ctx", [PLAIN, SLOW], ids=["fast", "slow"])
async def test_watch_stop_then_continue(procs: Spawner, reaper: Reaper, ctx: ExecContext) -> None:
    child = procs.start(["sh", "-c", "kill -STOP $$; exit 7"], ctx)
    stopped: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    reaper.watch_stop(child.pid, stopped.set_result)
    assert await asyncio.wait_for(stopped, TIMEOUT) == child.pid
    assert proc_state(child.pid) == "T"
    # Watching a pid that is stopped already reports at once.
    again: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    reaper.watch_stop(child.pid, again.set_result)
    assert await asyncio.wait_for(again, TIMEOUT) == child.pid
    reaper.unwatch_stop(child.pid)
    assert kill_pid(child.pid, signal.SIGCONT)
    assert await child.wait() == ExitInfo(7, None)


async def test_fork_events_follow_a_double_fork(procs: Spawner, orphans: Orphans) -> None:
    forks: list[tuple[int, int]] = []
    events = ForkEvents.open(asyncio.get_running_loop(), lambda p, c: forks.append((p, c)))
    if events is None:
        pytest.skip("the process events connector needs CAP_NET_ADMIN in the initial pid ns")
    try:
        with pipe() as (r, w):
            script = f"(sh -c 'echo $$ >{fd_path(w)}; exec {SLEEP} 60' &) ; wait"
            child = procs.start(["sh", "-c", script], pass_fds=(w,))
            os.close(w)
            grandchild = int(await read_line(r))
        assert await child.wait() == ExitInfo(0, None)
        events.drain()
        mine = {c: p for p, c in forks}
        # sh forked the subshell, which forked the grandchild and exited.
        middle = mine[grandchild]
        assert mine[middle] == child.pid
    finally:
        events.close()
    kill_pid(grandchild, signal.SIGKILL)
    await orphans.wait(grandchild)


# --------------------------------------------------------------------------------------------
# cgroups


@pytest.fixture(scope="module", autouse=True)
def _no_cgroup_left() -> Iterator[None]:
    """The test cgroup goes once the module's processes are reaped: :func:`cgroup_dir`'s own
    teardown kills them, but they are reaped (and leave the cgroup) only by the teardown of
    the fixtures that started them, which runs after it."""
    yield
    found = cgroup2_mount()
    if found is not None:
        path = found[0] + found[1].rstrip("/") + f"/busmgr-test-{os.getpid()}"
        with contextlib.suppress(OSError):
            os.rmdir(path)


@pytest.fixture
def cgroup_dir() -> Iterator[str]:
    found = cgroup2_mount()
    if found is None or not os.access(found[0] + found[1].rstrip("/"), os.W_OK):
        pytest.skip("needs a writable cgroup2 hierarchy")
    path = found[0] + found[1].rstrip("/") + f"/busmgr-test-{os.getpid()}"
    cgroup_create(path)
    try:
        yield path
    finally:
        cgroup_kill(path)
        with contextlib.suppress(OSError):
            os.rmdir(path)


@pytest.mark.parametrize("ctx", [PLAIN, SLOW], ids=["fast", "slow"])
async def test_spawn_into_cgroup_catches_an_immediate_double_fork(
    procs: Spawner, orphans: Orphans, cgroup_dir: str, ctx: ExecContext
) -> None:
    own = cgroup_of(os.getpid())
    with pipe() as (r, w):
        script = f"(setsid sh -c 'echo $$ >{fd_path(w)}; exec {SLEEP} 60' &) ; exit 0"
        child = procs.start(["sh", "-c", script], ctx, pass_fds=(w,), cgroup=cgroup_dir)
        os.close(w)
        daemon = int(await read_line(r))
    assert cgroup_of(os.getpid()) == own  # the fast path moved the manager back
    assert await child.wait() == ExitInfo(0, None)
    assert cgroup_pids(cgroup_dir) == [daemon]
    assert cgroup_of(daemon) == own.rstrip("/") + "/" + os.path.basename(cgroup_dir)
    assert cgroup_populated(cgroup_dir)
    assert not cgroup_remove(cgroup_dir)  # busy
    assert cgroup_kill(cgroup_dir)
    assert await orphans.wait(daemon) == ExitInfo(None, signal.SIGKILL)
    assert not cgroup_populated(cgroup_dir)
    assert cgroup_pids(cgroup_dir) == []


@pytest.mark.spawn_paths(CLONE, VFORK)  # the Python fast path moves the manager
async def test_the_clone_spawn_is_born_in_the_cgroup_without_moving_the_manager(
    procs: Spawner, cgroup_dir: str, monkeypatch: pytest.MonkeyPatch, spawn_path: str
) -> None:
    # The migration of the manager itself (the Python fast path's way in) waits for an RCU
    # grace period after a quiet spell: the clone spawn must never take it, with or without
    # settings, and the process must be in its leaf before its first instruction (born there
    # by clone3; on the vfork fallback it moves itself, before exec).
    from busmgr.process import spawning

    def moved(_path: str) -> None:
        raise AssertionError("the manager moved itself into the job's cgroup")

    monkeypatch.setattr(spawning, "cgroup_join", moved)
    leaf = os.path.basename(cgroup_dir)
    for ctx in (PLAIN, SLOW):
        with pipe() as (r, w):
            child = procs.start(
                ["sh", "-c", f"grep ^0:: /proc/self/cgroup >{fd_path(w)}"], ctx, pass_fds=(w,),
                cgroup=cgroup_dir,
            )  # fmt: skip
            os.close(w)
            line = (await read_line(r)).decode().strip()
        assert await child.wait() == ExitInfo(0, None)
        assert line == "0::" + cgroup_of(os.getpid()).rstrip("/") + "/" + leaf


async def test_spawn_into_missing_cgroup_fails_cleanly(procs: Spawner) -> None:
    with pytest.raises(SpawnError, match=r'^cgroup "/nonexistent/cg"'):
        procs.start([SLEEP, "60"], cgroup="/nonexistent/cg")
    with pytest.raises(SpawnError, match=r'^cgroup "/nonexistent/cg"'):
        procs.start([SLEEP, "60"], SLOW, cgroup="/nonexistent/cg")


async def test_scope_in_a_cgroup_signals_every_process_and_only_those(
    procs: Spawner, orphans: Orphans, cgroup_dir: str
) -> None:
    scope = ProcessScope(
        "t",
        (
            cgroup_dir + "/leaf",
            cgroup_of(os.getpid()).rstrip("/") + "/" + os.path.basename(cgroup_dir) + "/leaf",
        ),
    )
    leaf = scope.cgroup_dir()
    assert leaf == cgroup_dir + "/leaf" and os.path.isdir(leaf)
    outside = procs.start([SLEEP, "60"])
    with pipe() as (r, w):
        script = f"{SLEEP} 60 & setsid {SLEEP} 60 & echo $! >{fd_path(w)}; wait"
        child = procs.start(["sh", "-c", script], pass_fds=(w,), cgroup=leaf)
        os.close(w)
        await read_line(r)
    scope.adopt(child.pid)
    members = scope.pids()
    assert len(members) == 3 and child.pid in members
    assert all(scope.contains(p) for p in members)
    assert not scope.contains(outside.pid)
    assert scope.alive()
    scope.kill(signal.SIGTERM)
    assert await child.wait() == ExitInfo(None, signal.SIGTERM)
    for pid in members:
        if pid != child.pid:
            assert await orphans.wait(pid) == ExitInfo(None, signal.SIGTERM)
    assert not scope.alive()
    assert scope.release()
    assert not os.path.exists(leaf)
    assert kill_pid(outside.pid, 0)  # untouched


@pytest.mark.spawn_paths(PYTHON)  # the clone spawn never moves the manager
async def test_a_manager_stranded_in_a_job_cgroup_is_not_a_spawn_failure(
    procs: Spawner, cgroup_dir: str, monkeypatch: pytest.MonkeyPatch, spawn_path: str
) -> None:
    # A bug found by the house review: a failed move back home after a fast-path spawn was
    # caught as a failed spawn (an OSError), and the manager stayed in the job's leaf.
    from busmgr.process import StrandedError, spawning
    from busmgr.process.cgroups import cgroup_return, own_cgroup_procs

    home = own_cgroup_procs()

    def refuse(_procs: str) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(spawning, "cgroup_return", refuse)
    try:
        with pytest.raises(StrandedError) as err:
            spawn([SLEEP, "60"], ENV, PLAIN, cgroup=cgroup_dir)
    finally:
        cgroup_return(home)  # really home again, whatever happened
    assert not isinstance(err.value, OSError)
    assert err.value.pid > 0 and "cannot leave the job cgroup" in str(err.value)
    assert cgroup_of(err.value.pid) == cgroup_of(os.getpid()).rstrip("/") + "/" + os.path.basename(
        cgroup_dir
    )
    assert kill_pid(err.value.pid, signal.SIGKILL)
    procs.reaper.watch(err.value.pid, lambda *_: None)


def test_fork_events_stop_reading_on_a_persistent_error() -> None:
    # A bug found by the house review: any OSError but EAGAIN made drain() read again at once,
    # for ever. Only ENOBUFS (events lost) is worth reading again.
    class Broken:
        reads = 0

        def fileno(self) -> int:
            return -1 if self.closed else 99

        closed = False

        def recv(self, size: int) -> bytes:
            self.reads += 1
            if self.reads > 100:
                raise AssertionError("drain() keeps reading a broken socket")
            raise OSError(errno.EIO, "Input/output error")

        def close(self) -> None:
            self.closed = True

    sock = Broken()
    events = ForkEvents(sock, lambda parent, child: None)  # type: ignore[arg-type]
    events.drain()
    assert events.broken and sock.closed and sock.reads == 1
    events.drain()  # closed: nothing more to read, no error
    assert sock.reads == 1


_EXIT_STORM = """
import asyncio, os, shutil, sys
from busmgr.process import Reaper

async def main():
    loop = asyncio.get_running_loop()
    reaper = Reaper(loop)
    reaper.start()
    true, env = shutil.which("true"), dict(os.environ)
    # All spawned in one callback: they exit while the loop is busy, so their SIGCHLDs pile up
    # in the loop's wake-up socket before it is read.
    pids = [os.posix_spawn(true, ["true"], env) for _ in range(int(sys.argv[1]))]
    done = [loop.create_future() for _ in pids]
    for pid, fut in zip(pids, done):
        reaper.watch(pid, lambda _pid, _info, fut=fut: fut.set_result(None))
    await asyncio.wait_for(asyncio.gather(*done), 60)
    print(len(done))

asyncio.run(main())
"""


def test_reaper_storm_of_exits_is_quiet() -> None:
    """1,500 children that exit while the loop is busy (far more than a default wake-up socket
    holds): every one is reaped, and nothing is printed (Python used to print a traceback per
    SIGCHLD that found the wake-up socket full)."""
    done = subprocess.run(
        [sys.executable, "-c", _EXIT_STORM, "1500"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1500"
    assert done.stderr == ""


def test_boot_ticks_bracket_a_new_process_start_time() -> None:
    import subprocess

    from busmgr.process import boot_ticks, proc_start_time

    before = boot_ticks()
    child = subprocess.Popen(["sleep", "5"])
    after = boot_ticks()
    try:
        assert before <= proc_start_time(child.pid) <= after
    finally:
        child.kill()
        child.wait()
