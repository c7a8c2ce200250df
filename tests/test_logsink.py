"""Job log files: names, rotation by size at line boundaries, the pipe the manager reads, and
the command line's reading of a rotated log. Real files and pipes, no bus, no manager."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from busmgr.logsink import LogRotation, LogSinks, RotatingFile, log_name, parse_size
from busmgr.logview import last_lines, log_files


def test_log_names_never_collide() -> None:
    assert log_name("hello", "") == "hello.log"
    assert log_name("tty", "a/b") == "tty/a%2fb.log"
    assert log_name("tty", "a_b") == "tty/a_b.log"
    assert log_name("tty", "a%2fb") == "tty/a%252fb.log"
    assert log_name("tty", ".hidden") == "tty/%2ehidden.log"
    assert log_name("tty", "x\ny") == "tty/x%0ay.log"


@given(st.text(min_size=1), st.text(min_size=1))
def test_different_instances_get_different_files(a: str, b: str) -> None:
    if a != b:
        assert log_name("j", a) != log_name("j", b)
    name = log_name("j", a)
    assert name.count("/") == 1 and not name.split("/")[1].startswith(".")


@pytest.mark.parametrize(
    ("text", "size"),
    [("100", 100), ("64K", 65536), ("1M", 1 << 20), ("2g", 2 << 30), ("1MiB", 1 << 20)],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "0", "-1", "1T", "K", "1.5M", "²"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


def _all_lines(path: Path) -> list[bytes]:
    out: list[bytes] = []
    for file in reversed(log_files(path)):
        out += file.read_bytes().splitlines()
    return out


def test_rotation_keeps_every_line_whole_and_bounds_the_files(tmp_path: Path) -> None:
    path = tmp_path / "job.log"
    f = RotatingFile(path, LogRotation(max_bytes=100, keep=3))
    lines = [f"line {i:03d} {'x' * (i % 17)}".encode() for i in range(40)]
    for line in lines:
        f.write(line + b"\n")
    f.close()
    files = log_files(path)
    assert len(files) == 4  # the file and three rotated ones
    for file in files:
        data = file.read_bytes()
        assert data.endswith(b"\n")  # rotation happens at line boundaries only
        assert len(data) <= 200
    kept = _all_lines(path)
    assert kept == lines[-len(kept) :]  # the newest lines, in order, none split or lost


def test_a_line_longer_than_the_limit_is_split_at_the_hard_limit(tmp_path: Path) -> None:
    path = tmp_path / "job.log"
    f = RotatingFile(path, LogRotation(max_bytes=10, keep=5))
    f.write(b"y" * 55)
    f.close()
    assert all(len(p.read_bytes()) <= 20 for p in log_files(path))
    assert sum(len(p.read_bytes()) for p in log_files(path)) == 55


def test_keep_zero_truncates(tmp_path: Path) -> None:
    path = tmp_path / "job.log"
    f = RotatingFile(path, LogRotation(max_bytes=10, keep=0))
    for _ in range(5):
        f.write(b"0123456789\n")
    f.close()
    assert log_files(path) == [path]
    assert path.read_bytes() == b"0123456789\n"


def test_a_new_file_is_0640(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        RotatingFile(tmp_path / "d" / "job.log", LogRotation()).close()
    finally:
        os.umask(old)
    assert (tmp_path / "d" / "job.log").stat().st_mode & 0o777 == 0o640


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=30), st.integers(1, 50))
def test_nothing_is_lost_before_the_oldest_kept_file(chunks: list[bytes], limit: int) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "job.log"
        f = RotatingFile(path, LogRotation(max_bytes=limit, keep=1000))
        for chunk in chunks:
            f.write(chunk)
        f.close()
        assert b"".join(p.read_bytes() for p in reversed(log_files(path))) == b"".join(chunks)
        assert all(len(p.read_bytes()) <= 2 * limit for p in log_files(path))


def test_last_lines_read_across_rotated_files(tmp_path: Path) -> None:
    path = tmp_path / "job.log"
    f = RotatingFile(path, LogRotation(max_bytes=30, keep=10))
    for i in range(20):
        f.write(f"line {i}\n".encode())
    f.close()
    assert last_lines(path, 12) == [f"line {i}".encode() for i in range(8, 20)]
    assert last_lines(path, 0) == []
    assert last_lines(tmp_path / "none.log", 5) == []


async def test_the_manager_reads_each_pipe_to_its_end_and_holds_no_other_descriptor(
    tmp_path: Path,
) -> None:
    sinks = LogSinks(tmp_path, LogRotation(max_bytes=4096, keep=2))
    first = sinks.writer("job.log")
    second = sinks.writer("job.log")  # a hook spawned while main runs: a pipe of its own
    assert len(sinks.fds()["job.log"]) == 2
    os.write(first, b"hello\n")
    os.write(second, b"world\n")
    sinks.drain("job.log")  # as when a process of the job exits
    assert sorted((tmp_path / "job.log").read_bytes().splitlines()) == [b"hello", b"world"]
    assert sinks.written("job.log") == 12
    # The last writer of a pipe goes away: the loop reads the rest and closes it.
    os.write(first, b"bye\n")
    os.close(first)
    for _ in range(100):  # one loop turn at a time, until the reader callback has run
        if len(sinks.fds().get("job.log", [])) == 1:
            break
        await asyncio.sleep(0)
    assert len(sinks.fds()["job.log"]) == 1
    assert (tmp_path / "job.log").read_bytes().endswith(b"bye\n")
    # No descriptor of the log file is held between writes.
    held = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor is gone by now
            held.add(os.readlink(f"/proc/self/fd/{fd}"))
    assert str(tmp_path / "job.log") not in held
    sinks.release("job.log")
    assert sinks.fds() == {}
    assert sinks.written("job.log") == 16  # survives the release, for tails
    os.close(second)


async def test_an_unopenable_log_is_an_error_at_once(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    sinks = LogSinks(tmp_path / "file")
    with pytest.raises(OSError):
        sinks.writer("job.log")
    assert sinks.fds() == {}


def test_following_survives_any_number_of_rotations_between_two_looks(tmp_path: Path) -> None:
    from busmgr.logview import _Follower

    path = tmp_path / "job.log"
    f = RotatingFile(path, LogRotation(max_bytes=64, keep=3))
    f.write(b"old line\n")
    got: list[bytes] = []
    follower = _Follower(path, got.append)
    follower.scan(skip_existing=True)  # what was there before is not followed
    expected = b""
    n = 0
    for burst in (1, 3, 7, 2, 4):  # lines per burst: 0 to a few rotations between looks
        for _ in range(burst):
            line = f"line {n:04d} {'x' * (n % 11)}\n".encode()
            f.write(line)
            expected += line
            n += 1
        follower.scan()
    follower.close()
    f.close()
    assert b"".join(got) == expected


def test_following_reads_a_file_rotated_away_before_it_was_looked_at(tmp_path: Path) -> None:
    from busmgr.logview import _Follower

    path = tmp_path / "job.log"
    f = RotatingFile(path, LogRotation(max_bytes=16, keep=1))
    got: list[bytes] = []
    follower = _Follower(path, got.append)
    follower.scan(skip_existing=True)
    f.write(b"aaaaaaaaaaaaaaaa\n")  # the file the follower holds, rotated away below
    follower.scan()
    f.write(b"bbbbbbbbbbbbbbbb\n")
    f.write(b"cccccccccccccccc\n")
    f.write(b"dddd\n")
    follower.scan()
    follower.close()
    f.close()
    # Files never seen and already deleted are lost to the follower (as to tail -F); every
    # byte of a file it held is read, in order.
    text = b"".join(got)
    assert text.startswith(b"aaaaaaaaaaaaaaaa\n") and text.endswith(b"dddd\n")


def test_following_repeats_nothing_when_it_looks_in_the_middle_of_a_rotation(
    tmp_path: Path,
) -> None:
    # A rotation renames job.log.2 -> .3, .1 -> .2, job.log -> .1 one after the other: a look
    # between two renames finds a gap in the numbers (no job.log.2 for a moment). The files
    # beyond it still exist, renamed: they must not be read again from their start later.
    from busmgr.logview import _Follower

    path = tmp_path / "job.log"
    names = [path] + [path.with_name(f"job.log.{n}") for n in (1, 2, 3)]
    for n, name in enumerate(names):
        name.write_bytes(f"file {n}\n".encode())
    got: list[bytes] = []
    follower = _Follower(path, got.append)
    follower.scan()  # reads job.log.3, .2, .1, job.log (oldest first)
    os.replace(names[2], names[3])  # .2 -> .3: the old .3 is deleted; now there is no .2
    follower.scan()  # sees job.log, job.log.1 only (the listing stops at the gap)
    os.replace(names[1], names[2])
    os.replace(names[0], names[1])
    path.write_bytes(b"file new\n")
    follower.scan()
    follower.close()
    assert b"".join(got) == b"file 3\nfile 2\nfile 1\nfile 0\nfile new\n"
