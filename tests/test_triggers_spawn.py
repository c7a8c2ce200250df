"""Socket handover by the spawn path (``spawn(listen=...)``): the fast path (``posix_spawn``),
a job with child-side settings (the clone spawn) and the Python fork path (where the clone
library is missing).

The children are short shell commands run to completion; the tests wait for them with
``waitpid`` (synchronous tests: no loop, no Reaper in this module). The fd shuffling itself
(:func:`fd_moves`) is checked on a simulated descriptor table, and once for real in a fresh
interpreter, whose low descriptors the test can arrange.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from busmgr.jobclass import ConsoleMode, ExecContext
from busmgr.process import Listen, SpawnError, clonespawn, set_cloexec_on_inherited_fds, spawn
from busmgr.process.spawnbase import fd_moves

ENV = {"PATH": "/usr/bin:/bin", "LISTEN_PID": "1", "KEEP": "yes"}
FAST = ExecContext(console=ConsoleMode.LOG)
SLOW = ExecContext(console=ConsoleMode.LOG, umask=0o022)  # needs setup in the child
# The shell lists its own descriptors while it waits for ls (a stable moment; no pipeline, whose
# pipes the shell would hold while ls looks).
REPORT = (
    'echo "pid=$$ listen_pid=$LISTEN_PID fds=$LISTEN_FDS names=$LISTEN_FDNAMES keep=$KEEP"; '
    "readlink /proc/$$/fd/3 /proc/$$/fd/4; ls /proc/$$/fd"
)


@pytest.fixture(autouse=True, scope="module")
def _manager_invariant() -> None:
    """The fast path relies on every other descriptor being close-on-exec, which the manager
    establishes at start; so does this module (pytest may inherit a few from its caller)."""
    set_cloexec_on_inherited_fds()


def run(ctx: ExecContext, listen: Listen, log: Path) -> tuple[int, list[str]]:
    pid = spawn(["sh", "-c", REPORT], ENV, ctx, log_path=str(log), listen=listen)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, log.read_text()
    return pid, log.read_text().splitlines()


def inode(sock: socket.socket) -> str:
    return f"socket:[{os.fstat(sock.fileno()).st_ino}]"


@pytest.mark.parametrize(
    ("ctx", "clone"), [(FAST, True), (SLOW, True), (SLOW, False)], ids=["fast", "slow", "fork"]
)
def test_sockets_arrive_as_3_and_4_with_listen_env(
    ctx: ExecContext, clone: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(clonespawn, "enabled", clone)
    with socket.socket(socket.AF_UNIX) as a, socket.socket(socket.AF_UNIX) as b:
        a.bind(str(tmp_path / "a.sock"))
        b.bind(str(tmp_path / "b.sock"))
        listen = Listen((b.fileno(), a.fileno()), ("web", "admin"))
        pid, lines = run(ctx, listen, tmp_path / "out.log")
        assert lines[0] == f"pid={pid} listen_pid={pid} fds=2 names=web:admin keep=yes"
        assert lines[1:3] == [inode(b), inode(a)]  # in the order given
        assert sorted(map(int, lines[3:])) == [0, 1, 2, 3, 4]  # nothing else leaked in
        # the manager's own copies stay close-on-exec
        assert not os.get_inheritable(a.fileno()) and not os.get_inheritable(b.fileno())


def test_fast_path_missing_program_is_a_spawn_error(tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as a, pytest.raises(SpawnError) as err:
        spawn(["/nope/daemon"], ENV, ExecContext(), listen=Listen((a.fileno(),), ("x",)))
    assert str(err.value) == 'exec "/nope/daemon": No such file or directory'


def test_listen_argument_checks() -> None:
    with pytest.raises(SpawnError, match="one name without a colon per socket"):
        spawn(["true"], ENV, ExecContext(), listen=Listen((5,), ("a:b",)))
    with pytest.raises(SpawnError, match="pass_fds must lie above descriptor 4"):
        spawn(["true"], ENV, ExecContext(), listen=Listen((7, 8), ("a", "b")), pass_fds=(4,))


def _apply(table: dict[int, str], moves: list[tuple[int, int, int]]) -> dict[int, str]:
    """Play ``moves`` on a descriptor table (descriptor -> what it refers to)."""
    table = dict(table)
    for how, fd, target in moves:
        if how == os.POSIX_SPAWN_DUP2:
            table[target] = table[fd]
        else:
            del table[fd]
    return table


@pytest.mark.parametrize(
    "sources",
    [(9,), (3,), (4, 3), (3, 4), (5, 3, 4), (4, 9, 3), (10, 11, 12), (5, 4)],
)
def test_fd_moves_never_clobber_a_source(sources: tuple[int, ...]) -> None:
    table = {fd: f"socket{fd}" for fd in sources} | {0: "null", 1: "log", 2: "log"}
    spare = max(sources) + 1
    result = _apply(table, fd_moves(sources, 3, spare))
    for i, fd in enumerate(sources):
        assert result[3 + i] == f"socket{fd}"
    assert not any(spare <= fd for fd in result)  # staging copies are closed again


@pytest.mark.parametrize("path", ["fast", "slow", "fork"])
def test_sockets_already_on_the_target_numbers(path: str, tmp_path: Path) -> None:
    """In a fresh interpreter, sockets at 4 and 3 are handed over as 3 and 4: a plain order of
    dup2 calls would destroy the second one."""
    script = textwrap.dedent(
        f"""
        import os, socket
        from busmgr.jobclass import ConsoleMode, ExecContext
        from busmgr.process import Listen, clonespawn, set_cloexec_on_inherited_fds, spawn
        clonespawn.enabled = {path != "fork"}
        set_cloexec_on_inherited_fds()
        s1, s2 = socket.socket(socket.AF_UNIX), socket.socket(socket.AF_UNIX)
        os.dup2(s1.fileno(), 40, inheritable=False); os.dup2(s2.fileno(), 41, inheritable=False)
        for fd in range(3, 40):
            try: os.close(fd)
            except OSError: pass
        a = os.dup(40); b = os.dup(41)  # the lowest free numbers: 3 and 4
        assert (a, b) == (3, 4), (a, b)
        ino = lambda fd: os.fstat(fd).st_ino
        print(ino(b), ino(a), flush=True)
        ctx = ExecContext(console=ConsoleMode.OUTPUT, umask={"None" if path == "fast" else "0o022"})
        pid = spawn(["sh", "-c", "readlink /proc/$$/fd/3 /proc/$$/fd/4"], {{"PATH": "/bin"}}, ctx,
                    listen=Listen((b, a), ("b", "a")))
        os.waitpid(pid, 0)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True
    ).stdout.split()
    first, second = out[0], out[1]
    assert out[2:] == [f"socket:[{first}]", f"socket:[{second}]"]
