"""Loading directories of job files, and ``busmgr check``'s check_paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from busmgr.config import Severity, check_paths, load_directories


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text)
    return path


def test_loads_every_conf_file_sorted(tmp_path: Path) -> None:
    write(tmp_path, "b.conf", "exec /bin/b\n")
    write(tmp_path, "a.conf", "exec /bin/a\n")
    result = load_directories([tmp_path])
    assert list(result.jobs) == ["a", "b"]
    assert result.diagnostics == ()
    assert result.jobs["a"].source == str(tmp_path / "a.conf")


def test_one_bad_file_does_not_stop_the_others(tmp_path: Path) -> None:
    write(tmp_path, "a.conf", "exec /bin/a\n")
    write(tmp_path, "bad.conf", "respwan\nnice 99\n")
    write(tmp_path, "c.conf", "exec /bin/c\n")
    result = load_directories([tmp_path])
    assert sorted(result.jobs) == ["a", "c"]
    assert result.failed == frozenset({"bad"})
    assert [str(d) for d in result.diagnostics] == [
        f'{tmp_path / "bad.conf"}:1: unknown stanza "respwan" (did you mean "respawn"?)',
        f'{tmp_path / "bad.conf"}:2: bad nice value "99": must be from -20 to 19',
    ]


def test_warnings_keep_the_job(tmp_path: Path) -> None:
    write(tmp_path, "a.conf", "exec /bin/a\ncgroup cpu\n")
    result = load_directories([tmp_path])
    assert list(result.jobs) == ["a"]
    assert [d.severity for d in result.diagnostics] == [Severity.WARNING]


def test_skips_other_files_hidden_files_and_subdirectories(tmp_path: Path) -> None:
    write(tmp_path, "a.conf", "task\n")
    write(tmp_path, "notes.txt", "junk\n")
    write(tmp_path, ".hidden.conf", "junk\n")
    write(tmp_path, "a.conf.dpkg-old", "junk\n")
    write(tmp_path / "sub.conf", "x.conf", "junk\n")
    write(tmp_path / "deeper", "d.conf", "task\n")
    assert list(load_directories([tmp_path]).jobs) == ["a"]


def test_symlinked_files_are_followed(tmp_path: Path) -> None:
    target = write(tmp_path / "elsewhere", "real.conf", "task\n")
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "linked.conf").symlink_to(target)
    assert list(load_directories([tmp_path / "jobs"]).jobs) == ["linked"]


def test_first_directory_wins_with_a_warning(tmp_path: Path) -> None:
    first = write(tmp_path / "one", "a.conf", "exec /bin/first\n")
    second = write(tmp_path / "two", "a.conf", "exec /bin/second\n")
    write(tmp_path / "two", "b.conf", "exec /bin/b\n")
    result = load_directories([tmp_path / "one", tmp_path / "two"])
    assert sorted(result.jobs) == ["a", "b"]
    main = result.jobs["a"].main
    assert main is not None
    assert main.command == "/bin/first"
    (diag,) = result.diagnostics
    assert diag.severity is Severity.WARNING
    assert diag.path == str(second)
    assert f"already defined by {first}" in diag.message


def test_a_bad_file_still_claims_its_name(tmp_path: Path) -> None:
    bad = write(tmp_path / "one", "a.conf", "respwan\n")
    write(tmp_path / "two", "a.conf", "exec /bin/second\n")
    result = load_directories([tmp_path / "one", tmp_path / "two"])
    assert result.jobs == {}
    assert result.failed == frozenset({"a"})
    assert [d.severity for d in result.diagnostics] == [Severity.ERROR, Severity.WARNING]
    assert f"already defined by {bad}" in result.diagnostics[1].message


def test_missing_directory_is_empty_but_a_file_is_an_error(tmp_path: Path) -> None:
    plain = write(tmp_path, "plain", "x")
    result = load_directories([tmp_path / "missing", plain])
    assert result.jobs == {}
    assert [str(d) for d in result.diagnostics] == [f"{plain}: not a directory"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads everything")
def test_unreadable_file_is_a_diagnostic(tmp_path: Path) -> None:
    path = write(tmp_path, "secret.conf", "task\n")
    path.chmod(0)
    write(tmp_path, "ok.conf", "task\n")
    result = load_directories([tmp_path])
    assert list(result.jobs) == ["ok"]
    assert "cannot read" in result.diagnostics[0].message


def test_check_paths_files_and_directories(tmp_path: Path) -> None:
    write(tmp_path / "d", "a.conf", "exec /bin/a\nemits thing\n")
    write(tmp_path / "d", "bad.conf", "nice x\n")
    single = write(tmp_path, "single.conf", "start on thing\nexec /bin/s\n")
    diagnostics = check_paths([tmp_path / "d", single])
    assert [(Path(d.path).name, d.line, d.severity) for d in diagnostics] == [
        ("bad.conf", 1, Severity.ERROR)
    ]


def test_check_paths_missing_path(tmp_path: Path) -> None:
    (diag,) = check_paths([tmp_path / "nope.conf"])
    assert str(diag) == f"{tmp_path / 'nope.conf'}: no such file or directory"


def test_check_paths_runs_the_cross_checks(tmp_path: Path) -> None:
    a = write(tmp_path, "a.conf", "start on starting b\nexec /bin/a\n")
    write(tmp_path, "b.conf", "\nstart on starting a\nstop on never-emitted\nexec /bin/b\n")
    diagnostics = check_paths([tmp_path])
    text = [str(d) for d in diagnostics]
    assert f"{a}:1: blocking cycle: a waits for b waits for a" in text
    assert any('warning: event "never-emitted"' in t for t in text)


def test_check_paths_accepts_a_service_file(tmp_path: Path) -> None:
    path = write(tmp_path, "org.example.Foo.service", "[D-BUS Service]\nName=org.example.Foo\n")
    (diag,) = check_paths([path])
    assert "no Exec=" in diag.message
