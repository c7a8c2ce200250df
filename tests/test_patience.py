"""How long busmgr lets an activation take: the bus's limit read from its configuration as the
daemon reads it, and the margin kept before the earlier of the bus's and the caller's timeout."""

from __future__ import annotations

from pathlib import Path

from busmgr.bus.patience import CALLER_TIMEOUT, patience, service_start_timeout


def limit(ms: int) -> str:
    return f'<limit name="service_start_timeout">{ms}</limit>'


def busconfig(*body: str) -> str:
    return "<busconfig>" + "".join(body) + "</busconfig>"


def test_the_last_limit_wins_through_includes_and_include_directories(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.conf").write_text(busconfig(limit(4000)))
    (tmp_path / "d" / "b.conf").write_text(busconfig(limit(5000)))
    (tmp_path / "d" / "c.txt").write_text(busconfig(limit(1)))  # not a .conf: not read
    (tmp_path / "more.conf").write_text(busconfig(limit(3000)))
    main = tmp_path / "bus.conf"
    main.write_text(busconfig(limit(2000), "<include>more.conf</include>"))
    assert service_start_timeout(main) == 3.0
    main.write_text(
        busconfig("<include>more.conf</include>", "<includedir>d</includedir>", "<user>x</user>")
    )
    assert service_start_timeout(main) == 5.0
    main.write_text(busconfig(limit(6000), '<include ignore_missing="yes">gone.conf</include>'))
    assert service_start_timeout(main) == 6.0


def test_no_limit_unreadable_or_broken_files_say_nothing(tmp_path: Path) -> None:
    plain = tmp_path / "plain.conf"
    plain.write_text(busconfig("<type>session</type>"))
    assert service_start_timeout(plain) is None
    assert service_start_timeout(tmp_path / "missing.conf") is None
    broken = tmp_path / "broken.conf"
    broken.write_text("<busconfig><limit")
    assert service_start_timeout(broken) is None
    loop = tmp_path / "loop.conf"
    loop.write_text(busconfig("<include>loop.conf</include>", limit(7000)))
    assert service_start_timeout(loop) == 7.0


def test_the_machines_own_configurations() -> None:
    # Debian: session.conf says 120 s (which the callers' 25 s cuts short), system.conf says
    # nothing (the daemon's 25 s).
    session = Path("/usr/share/dbus-1/session.conf")
    if session.is_file():
        assert service_start_timeout(session) == 120.0


def test_busmgr_answers_a_margin_before_the_earlier_timeout() -> None:
    assert patience(None) == 22.5  # dbus-daemon's default 25 s
    assert patience(120.0) == 22.5  # the callers' own 25 s come first
    assert patience(3.0) == 2.5  # at least half a second of margin
    assert patience(0.6) == 0.3  # never less than half the time
    assert CALLER_TIMEOUT == 25.0
