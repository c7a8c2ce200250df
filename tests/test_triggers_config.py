"""The trigger syntax (pure): ``socket`` stanzas, ``file`` and ``timer`` operands, durations,
calendar expressions; each good form, each bad one with its message, and fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from busmgr.config import cross_check, parse_event_expr, parse_job
from busmgr.config.schedule import ScheduleError, parse_calendar, parse_duration
from busmgr.config.triggers import (
    FileTarget,
    TriggerError,
    file_leaf,
    file_target,
    parse_socket,
    timer_leaf,
)
from busmgr.events import Event, match_event
from busmgr.jobclass import (
    EventMatch,
    JobClass,
    SocketKind,
    SocketSpec,
    literal_pattern,
    socket_match,
)
from busmgr.triggers import uses_triggers

PATH = "services.d/j.conf"


def parse(text: str, name: str = "j") -> tuple[JobClass | None, list[str]]:
    result = parse_job(text, name=name, path=f"services.d/{name}.conf")
    return result.job, [str(d) for d in result.diagnostics]


def leaf(text: str) -> EventMatch:
    expr = parse_event_expr(text)
    assert isinstance(expr, EventMatch)
    return expr


# -- socket stanzas --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "spec"),
    [
        (["unix", "/run/app.sock"], SocketSpec(SocketKind.UNIX, path="/run/app.sock")),
        (["unix", "/run/a.sock", "600"], SocketSpec(SocketKind.UNIX, "/run/a.sock", mode=0o600)),
        (["unix", "@busmgr-app"], SocketSpec(SocketKind.UNIX, path="@busmgr-app")),
        (["tcp", "127.0.0.1:8080"], SocketSpec(SocketKind.TCP, host="127.0.0.1", port=8080)),
        (["tcp", "localhost:80"], SocketSpec(SocketKind.TCP, host="127.0.0.1", port=80)),
        (["tcp", "[::1]:443"], SocketSpec(SocketKind.TCP, host="::1", port=443)),
        (["tcp", "[0:0::1]:443"], SocketSpec(SocketKind.TCP, host="::1", port=443)),
        (["tcp", "*:65535"], SocketSpec(SocketKind.TCP, host="*", port=65535)),
    ],
)
def test_good_socket(args: list[str], spec: SocketSpec) -> None:
    assert parse_socket(args) == spec


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "needs a kind and an address"),
        (["udp", "1.2.3.4:5"], 'unknown socket kind "udp"'),
        (["unix"], "socket unix takes PATH and an optional MODE"),
        (["unix", "/a", "600", "x"], "socket unix takes PATH and an optional MODE"),
        (["unix", "run/app.sock"], "socket unix run/app.sock: the path must be absolute"),
        (["unix", "/run//app.sock"], 'write the path plainly, as "/run/app.sock"'),
        (["unix", "/run/../app.sock"], 'write the path plainly, as "/app.sock"'),
        (["unix", "/run/app/"], 'write the path plainly, as "/run/app"'),
        (["unix", "/" + "x" * 107], "longer than 107 bytes"),
        (["unix", "@"], "an abstract socket needs a name"),
        (["unix", "@x", "600"], "an abstract socket has no file mode"),
        (["unix", "/a", "999"], 'bad mode "999"'),
        (["unix", "/a", "1777"], 'bad mode "1777"'),
        (["unix", "/a", "rw"], 'bad mode "rw"'),
        (["tcp"], "socket tcp takes one HOST:PORT"),
        (["tcp", "8080"], 'socket tcp "8080": expected HOST:PORT'),
        (["tcp", "example.org:80"], '"example.org" is not an IP address'),
        (["tcp", "[127.0.0.1]:80"], '"127.0.0.1" is not an IPv6 address'),
        (["tcp", "::1:80"], '"::1" is not an IP address'),
        (["tcp", "127.0.0.1:0"], 'bad port "0"'),
        (["tcp", "127.0.0.1:65536"], 'bad port "65536"'),
        (["tcp", "127.0.0.1:http"], 'bad port "http"'),
        (["tcp", "127.0.0.1:٣"], 'bad port "٣"'),
    ],
)
def test_bad_socket(args: list[str], message: str) -> None:
    with pytest.raises(TriggerError) as err:
        parse_socket(args)
    assert message in err.value.message


def test_socket_stanzas_make_activation_leaves() -> None:
    job, diags = parse(
        "socket unix /run/a*b.sock\nsocket tcp [::1]:80\ndbus org.example.A\nexec /bin/true\n"
    )
    assert diags == [] and job is not None
    assert [str(s) for s in job.sockets] == ["unix /run/a*b.sock", "tcp [::1]:80"]
    assert [s.line for s in job.sockets] == [1, 2]
    # one leaf per socket, and dbus (given after them) keeps them
    assert [m.name for m in job.activated_by] == ["socket", "socket", "dbus-activation"]
    unix = Event.make("socket", {"PROTO": "unix", "SOCKET_PATH": "/run/a*b.sock"})
    other = Event.make("socket", {"PROTO": "unix", "SOCKET_PATH": "/run/aXb.sock"})
    tcp = Event.make("socket", {"PROTO": "tcp", "ADDR": "::1", "PORT": "80"})
    assert match_event(job.activated_by[0], unix, {})
    assert not match_event(job.activated_by[0], other, {})  # "*" in the path is literal
    assert match_event(job.activated_by[1], tcp, {})


def test_literal_pattern_matches_only_itself() -> None:
    for text in ["/a/*", "a?b", "[x]", "$HOME/x", "${}", "plain"]:
        spec = SocketSpec(SocketKind.UNIX, path=text)
        event = Event.make("socket", spec.event_env())
        assert match_event(socket_match(spec), event, {"HOME": "/root"}), text
    assert literal_pattern("$A*") == "${}A[*]"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("socket unix /a\nsocket unix /a\n", "2: socket unix /a given twice (first on line 1)"),
        ("instance $X\nsocket unix /a\n", 'a job with "instance" (line 1) cannot have "socket"'),
        ("socket unix /a\ninstance $X\n", 'a job with "socket" (line 1) cannot have "instance"'),
        ("socket tcp 1.2.3.4\n", '1: socket tcp "1.2.3.4": expected HOST:PORT'),
    ],
)
def test_bad_socket_in_a_job(text: str, message: str) -> None:
    job, diags = parse(text + "exec /bin/true\n")
    assert job is None
    assert any(message in d for d in diags), diags


def test_two_jobs_with_one_socket_is_a_check_error() -> None:
    a, _ = parse("socket tcp 127.0.0.1:99\nexec /bin/a\n", "a")
    b, _ = parse("exec /bin/b\nsocket tcp 127.0.0.1:99\n", "b")
    c, _ = parse("socket tcp 127.0.0.1:98\nexec /bin/c\n", "c")
    assert a and b and c
    found = [str(d) for d in cross_check([b, a, c])]
    assert found == ['services.d/b.conf:2: socket tcp 127.0.0.1:99 is also declared by job "a"']


def test_trigger_events_are_builtin() -> None:
    job, _ = parse("start on file FILE=/x/* or timer EVERY=1h or socket PROTO=unix\nexec /a\n")
    assert job is not None
    assert cross_check([job]) == []


# -- file operands ---------------------------------------------------------------------------

ALL = frozenset({"created", "modified", "deleted"})


@pytest.mark.parametrize(
    ("text", "path", "kinds"),
    [
        ("file FILE=/var/spool/x/* EVENT=created", "/var/spool/x/*", {"created"}),
        ("file /var/spool/x/*.job created", "/var/spool/x/*.job", {"created"}),
        ("file FILE=/etc/app.conf", "/etc/app.conf", ALL),
        ("file FILE=/var/spool/x EVENT=nonempty", "/var/spool/x", {"nonempty"}),
        ("file EVENT=deleted FILE=/tmp/x", "/tmp/x", {"deleted"}),
        ("file FILE=$HOME/inbox/* EVENT=created", "$HOME/inbox/*", {"created"}),
    ],
)
def test_good_file_leaf(text: str, path: str, kinds: set[str]) -> None:
    assert file_leaf(leaf(text)) == (path, frozenset(kinds))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("file", "FILE= is needed"),
        ("file EVENT=created", "FILE= is needed"),
        ("file FILE=x/* EVENT=created", 'FILE "x/*": the path must be absolute'),
        ("file FILE=/var/*/x", "glob characters only in the last component"),
        ("file FILE=/var/x/ EVENT=nonempty", 'write the path plainly, as "/var/x"'),
        ("file FILE=/var/* EVENT=nonempty", "a nonempty directory is named without globs"),
        ("file FILE=$D/* EVENT=nonempty", "a nonempty directory is named without glob"),
        ("file FILE=/x EVENT=changed", "EVENT must be created, modified, deleted, nonempty"),
        ("file FILE=/x EVENT=*", "EVENT must be created"),
        ("file FILE!=/x", "FILE!= is not supported here"),
        ("file FILE=/x FILE=/y", "FILE given twice"),
        ("file FILE=/x PATH=/y", 'unknown operand "PATH"'),
        ("file /x created extra", 'unexpected operand "extra"'),
        ("file FILE=/", "name a file or a pattern in a directory"),
    ],
)
def test_bad_file_leaf(text: str, message: str) -> None:
    with pytest.raises(TriggerError) as err:
        file_leaf(leaf(text))
    assert message in err.value.message


def test_file_target_directory_and_name() -> None:
    created = file_target("/var/spool/x/*.job", frozenset({"created"}))
    assert (created.directory, created.name) == ("/var/spool/x", "*.job")
    nonempty = file_target("/var/spool/x", frozenset({"nonempty"}))
    assert (nonempty.directory, nonempty.name) == ("/var/spool/x", "")
    assert file_target("/a", ALL) == FileTarget("/a", ALL)


def test_bad_file_leaf_is_a_file_line_error() -> None:
    _job, diags = parse("exec /a\nstart on startup or file FILE=relative EVENT=created\n")
    assert diags == [
        'services.d/j.conf:2: bad "start on" expression: FILE "relative": the path must be absolute'
    ]


# -- timer operands, durations and calendars -------------------------------------------------


def test_good_timer_leaf() -> None:
    every = timer_leaf(leaf("timer EVERY=30s"))
    assert (every.key, every.text, every.interval, every.calendar) == ("EVERY", "30s", 30.0, None)
    on = timer_leaf(leaf('timer ON="Mon..Fri 09:00"'))
    assert (on.key, on.text) == ("ON", "Mon..Fri 09:00")
    assert on.calendar is not None and on.calendar.weekdays == frozenset(range(5))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("timer", "give exactly one of EVERY=DURATION or ON"),
        ("timer 30s", "give exactly one of EVERY=DURATION or ON"),
        ("timer EVERY=1s ON=daily", "give exactly one of"),
        ("timer EVERY=$T", "a timer takes no $VAR reference"),
        ("timer EVERY!=1s", "EVERY!= is not supported here"),
        ("timer AT=09:00", 'unknown operand "AT"'),
        ("timer EVERY=soon", 'bad duration "soon"'),
        ("timer EVERY=0s", "too short"),
        ('timer ON="Mon..Fri 25:00"', "bad hour 25: must be from 0 to 23"),
    ],
)
def test_bad_timer_leaf(text: str, message: str) -> None:
    with pytest.raises(TriggerError) as err:
        timer_leaf(leaf(text))
    assert message in err.value.message


def test_bad_timer_is_a_file_line_error() -> None:
    _job, diags = parse('exec /a\n\nstop on timer ON="Fri..Mon 09:00"\n')
    assert diags == [
        'services.d/j.conf:3: bad "stop on" expression: "timer ON=Fri..Mon 09:00": bad weekday '
        'range "Fri..Mon": it ends before it starts'
    ]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30", 30.0),
        ("30s", 30.0),
        ("1.5s", 1.5),
        ("250ms", 0.25),
        ("5min", 300.0),
        ("1h 30min", 5400.0),
        ("2d12h", 216000.0),
        ("1w", 604800.0),
        (" 2 minutes ", 120.0),
        ("1H", 3600.0),
    ],
)
def test_good_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty duration"),
        ("s", "expected a number"),
        ("3x", 'unknown unit "x"'),
        ("5 10s", "a number without a unit must be alone"),
        ("-1s", "expected a number"),
        ("1e3s", 'unknown unit "e"'),
        ("1ms", "too short"),
        ("11000d", "too long"),
    ],
)
def test_bad_duration(text: str, message: str) -> None:
    with pytest.raises(ScheduleError) as err:
        parse_duration(text)
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("text", "fields"),
    [
        ("Mon..Fri 09:00", {"weekdays": {0, 1, 2, 3, 4}, "hours": {9}, "minutes": {0}}),
        ("Sat,sunday 10:30:15", {"weekdays": {5, 6}, "seconds": {15}}),
        ("*:0/15", {"hours": None, "minutes": {0, 15, 30, 45}, "seconds": {0}}),
        ("*:*:*", {"hours": None, "minutes": None, "seconds": None}),
        ("9..17/4:00", {"hours": {9, 13, 17}}),
        ("*/6:00", {"hours": {0, 6, 12, 18}}),
        ("*-*-01 00:00", {"days": {1}, "months": None, "years": None}),
        ("12-24", {"months": {12}, "days": {24}, "hours": {0}}),
        ("2030-1,7-1", {"years": {2030}, "months": {1, 7}, "days": {1}}),
        ("Mon", {"weekdays": {0}, "hours": {0}, "minutes": {0}, "seconds": {0}}),
        ("hourly", {"hours": None, "minutes": {0}, "seconds": {0}}),
        ("weekly", {"weekdays": {0}, "hours": {0}}),
        ("quarterly", {"months": {1, 4, 7, 10}, "days": {1}}),
        ("09:00 UTC", {"utc": True, "hours": {9}}),
    ],
)
def test_good_calendar(text: str, fields: dict[str, object]) -> None:
    calendar = parse_calendar(text)
    assert calendar.text == text
    for name, value in fields.items():
        got = getattr(calendar, name)
        assert got == (frozenset(value) if isinstance(value, set) else value), name


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty calendar expression"),
        ("UTC", "nothing to schedule"),
        ("Funday 09:00", 'bad weekday "Funday"'),
        ("Mon 09:00 extra", 'unexpected "extra"'),
        ("Fri..Mon", 'bad weekday range "Fri..Mon"'),
        ("Mon..Fro", 'bad weekday "Mon..Fro"'),
        ("24:00", "bad hour 24"),
        ("12:60", "bad minute 60"),
        ("12:00:61", "bad second 61"),
        ("12", 'unexpected "12"'),
        ("1:2:3:4", 'bad time "1:2:3:4"'),
        ("*-13-01", "bad month 13"),
        ("*-02-30", "names a day that never exists"),
        ("04-31", "names a day that never exists"),
        ("1969-01-01", "bad year 1969"),
        ("1-2-3-4", 'bad date "1-2-3-4"'),
        ("10..5:00", 'bad hour range "10..5"'),
        ("*/0:00", "bad hour repetition 0: must be from 1 to 24"),
        ("a:00", 'bad hour "a"'),
        (",:00", 'bad hour "": not a number'),
    ],
)
def test_bad_calendar(text: str, message: str) -> None:
    with pytest.raises(ScheduleError) as err:
        parse_calendar(text)
    assert message in str(err.value)


# -- fuzzing ---------------------------------------------------------------------------------

_WORDS = st.sampled_from(
    ["unix", "tcp", "/run/a", "@x", "600", "127.0.0.1:80", "[::1]:1", "*:5", "::", "0", "/", ""]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(_WORDS, st.text(max_size=12)), max_size=4))
def test_fuzz_socket(args: list[str]) -> None:
    try:
        spec = parse_socket(args)
    except TriggerError as err:
        assert err.message
        return
    assert spec.kind in (SocketKind.UNIX, SocketKind.TCP)
    # what parsed is always a socket the bridge can create an event for
    Event.make("socket", spec.event_env())
    assert match_event(socket_match(spec), Event.make("socket", spec.event_env()), {})


_DURATION = st.text(alphabet="0123456789.smhdwinecrsu ", max_size=14)


@settings(max_examples=400, deadline=None)
@given(_DURATION)
def test_fuzz_duration(text: str) -> None:
    try:
        seconds = parse_duration(text)
    except ScheduleError:
        return
    assert 0.01 <= seconds <= 10 * 366 * 86400


_CALENDAR = st.text(alphabet="0123456789*/.,:- MonTueFriSatUCdailyhourly", max_size=24)


@settings(max_examples=500, deadline=None)
@given(_CALENDAR, st.floats(min_value=0, max_value=7e9, allow_nan=False))
def test_fuzz_calendar(text: str, now: float) -> None:
    try:
        calendar = parse_calendar(text)
    except ScheduleError:
        return
    due = calendar.next_after(now)
    assert due is None or due > now


_LEAF = st.text(alphabet="filetmrFILEVNTRYO=/*?[]$ xab:.-", max_size=30)


@settings(max_examples=500, deadline=None)
@given(_LEAF)
def test_fuzz_job_file_with_triggers(text: str) -> None:
    """Whatever follows ``start on file``/``timer``, parsing gives a job or FILE:LINE errors."""
    for prefix in ("start on file ", "stop on timer ", "socket "):
        job, diags = parse(f"exec /bin/true\n{prefix}{text}\n")
        assert job is not None or any(d.startswith("services.d/j.conf:2: ") for d in diags)


def test_which_jobs_the_bridges_care_about() -> None:
    def job(text: str) -> JobClass:
        parsed, diags = parse(text + "exec /bin/true\n")
        assert parsed is not None, diags
        return parsed

    assert uses_triggers(job("socket unix /run/a\n"))
    assert uses_triggers(job("start on startup or timer EVERY=1s\n"))
    assert uses_triggers(job("stop on file FILE=/a\n"))
    assert uses_triggers(job("manual\nstop on timer ON=daily\n"))
    assert not uses_triggers(job("manual\nstart on timer ON=daily\n"))  # start on is ignored
    assert not uses_triggers(job("start on startup\nstop on socket\n"))
