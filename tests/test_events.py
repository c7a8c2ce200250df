"""Unit tests for busmgr.events: pure matching, no processes, no bus, no loop."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from busmgr.events import (
    Event,
    ExprState,
    expand,
    job_env_of,
    job_event,
    match_event,
    validate_event_env,
    validate_event_name,
)
from busmgr.jobclass import EventArg, EventExpr, EventMatch, EventOp


def leaf(name: str, *operands: str) -> EventMatch:
    """A leaf from job-file-like operands: ``GLOB``, ``KEY=GLOB`` or ``KEY!=GLOB``."""
    args = []
    for text in operands:
        if "!=" in text:
            key, pattern = text.split("!=", 1)
            args.append(EventArg(pattern, key, negate=True))
        elif "=" in text:
            key, pattern = text.split("=", 1)
            args.append(EventArg(pattern, key))
        else:
            args.append(EventArg(text))
    return EventMatch(name, tuple(args))


def AND(left: EventExpr, right: EventExpr) -> EventOp:
    return EventOp("and", left, right)


def OR(left: EventExpr, right: EventExpr) -> EventOp:
    return EventOp("or", left, right)


def ev(name: str, *pairs: str) -> Event:
    return Event.make(name, [tuple(p.split("=", 1)) for p in pairs])  # type: ignore[misc]


def feed(
    state: ExprState, events: Sequence[Event], env: dict[str, str] | None = None
) -> list[bool]:
    return [state.handle(e, env or {}) for e in events]


# --- Event -----------------------------------------------------------------------------------


def test_event_keeps_order_and_prints_like_upstart() -> None:
    e = Event.make("stopping", [("JOB", "hersql"), ("RESULT", "failed")])
    assert e.env == (("JOB", "hersql"), ("RESULT", "failed"))
    assert str(e) == "stopping JOB=hersql RESULT=failed"
    assert e.get("RESULT") == "failed"
    assert e.get("PROCESS") is None
    assert e.env_dict() == {"JOB": "hersql", "RESULT": "failed"}
    assert str(Event.make("startup")) == "startup"


def test_event_make_from_mapping_and_repeated_keys() -> None:
    assert Event.make("x", {"B": "1", "A": "2"}).env == (("B", "1"), ("A", "2"))
    # First position, last value.
    folded = Event.make("x", [("A", "1"), ("B", "2"), ("A", "3")])
    assert folded.env == (("A", "3"), ("B", "2"))


def test_event_is_frozen_and_hashable() -> None:
    e = ev("a", "X=1")
    assert e == ev("a", "X=1")
    assert hash(e) == hash(ev("a", "X=1"))
    with pytest.raises(AttributeError):
        e.name = "b"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("name", "env"),
    [
        ("", ()),
        ("has space", ()),
        ("a=b", ()),
        ("ok", (("1BAD", "x"),)),
        ("ok", (("A", "1"), ("A", "2"))),  # the constructor does not fold, make() does
        ("ok", (("A", "nul\0"),)),
    ],
)
def test_event_constructor_rejects_broken_invariants(
    name: str, env: tuple[tuple[str, str], ...]
) -> None:
    with pytest.raises(ValueError):
        Event(name, env)


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("startup", True),
        ("dbus-activation", True),
        ("net-device-up", True),
        (":sys:startup", True),
        ("tty.added_1", True),
        ("", False),
        (" startup", False),
        ("two words", False),
        ("tab\there", False),
        ("new\nline", False),
        ("a=b", False),
        ("(x", False),
        ("x)", False),
        ("#x", False),
        ("$x", False),
        ('"q"', False),
        ("and", False),
        ("or", False),
    ],
)
def test_validate_event_name(name: str, ok: bool) -> None:
    assert (validate_event_name(name) is None) == ok


@pytest.mark.parametrize(
    ("env", "error_contains"),
    [
        ({}, None),
        ({"A": "1", "_b2": "", "DISPLAY": ":0"}, None),
        ({"": "x"}, "''"),
        ({"1A": "x"}, "'1A'"),
        ({"A-B": "x"}, "'A-B'"),
        ({"A B": "x"}, "'A B'"),
        ({"A=B": "x"}, "'A=B'"),
        ({"OK": "x", "BAD KEY": "y"}, "'BAD KEY'"),
        ({"A": "a\0b"}, "NUL"),
    ],
)
def test_validate_event_env(env: dict[str, str], error_contains: str | None) -> None:
    error = validate_event_env(env)
    if error_contains is None:
        assert error is None
    else:
        assert error is not None and error_contains in error


# --- expand ----------------------------------------------------------------------------------

ENV = {"TTY": "tty1", "IFACE": "eth0", "EMPTY": "", "GLOB": "eth*"}


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("plain", "plain"),
        ("$TTY", "tty1"),
        ("${TTY}", "tty1"),
        ("${TTY}x", "tty1x"),
        ("$TTYx", ""),  # the name runs on: TTYx is unset
        ("/dev/$TTY-", "/dev/tty1-"),
        ("$TTY$IFACE", "tty1eth0"),
        ("$UNSET", ""),
        ("${UNSET}", ""),
        ("a${UNSET}b", "ab"),
        ("${UNSET:-def}", "def"),
        ("${EMPTY:-def}", "def"),
        ("${EMPTY-def}", ""),
        ("${TTY:-def}", "tty1"),
        ("${UNSET-$TTY}", "tty1"),
        ("${UNSET:-${IFACE}}", "eth0"),
        ("${TTY:+alt}", "alt"),
        ("${EMPTY:+alt}", ""),
        ("${EMPTY+alt}", "alt"),
        ("${UNSET+alt}", ""),
        ("$", "$"),
        ("a$", "a$"),
        ("$ x", "$ x"),
        ("$$", "$$"),
        ("$$TTY", "$tty1"),
        ("${}", "$"),
        ("${}TTY", "$TTY"),
        ("$1", "$1"),
        ("${1}", "${1}"),
        ("${TTY", "${TTY"),
        ("${TTY:-x", "${TTY:-x"),
        ("${TTY?x}", "${TTY?x}"),
    ],
)
def test_expand(pattern: str, expected: str) -> None:
    assert expand(pattern, ENV) == expected


# --- match_event -----------------------------------------------------------------------------

IFACE_UP = ev("interface-up", "IFACE=eth0", "ADDRFAM=Ethernet", "ADDRESS=01:23:45:67:89:0a")


@pytest.mark.parametrize(
    ("match", "event", "job_env", "expected"),
    [
        # names: exact, case-sensitive, no globs
        (leaf("startup"), ev("startup"), {}, True),
        (leaf("startup"), ev("Startup"), {}, False),
        (leaf("start*"), ev("startup"), {}, False),
        (leaf("startup"), ev("startup", "A=1"), {}, True),  # extra variables are fine
        # KEY=GLOB
        (leaf("interface-up", "IFACE=eth*", "ADDRFAM=Ethernet"), IFACE_UP, {}, True),
        (leaf("interface-up", "IFACE=wlan*"), IFACE_UP, {}, False),
        (leaf("interface-up", "IFACE=ETH0"), IFACE_UP, {}, False),
        (leaf("interface-up", "IFACE=eth?"), IFACE_UP, {}, True),
        (leaf("interface-up", "IFACE=eth[0-3]"), IFACE_UP, {}, True),
        (leaf("interface-up", "IFACE=eth[!0]"), IFACE_UP, {}, False),
        (leaf("interface-up", "IFACE=eth"), IFACE_UP, {}, False),  # whole value
        (leaf("interface-up", "MISSING=*"), IFACE_UP, {}, False),
        (leaf("desktop-start", "DISPLAY=:*"), ev("desktop-start", "DISPLAY=:0"), {}, True),
        (leaf("x", "P=*"), ev("x", "P=/a/b"), {}, True),  # * crosses /
        (leaf("x", "P="), ev("x", "P="), {}, True),
        # KEY!=GLOB
        (leaf("net-device-up", "IFACE!=lo"), ev("net-device-up", "IFACE=eth0"), {}, True),
        (leaf("net-device-up", "IFACE!=lo"), ev("net-device-up", "IFACE=lo"), {}, False),
        (leaf("net-device-up", "IFACE!=l*"), ev("net-device-up", "IFACE=lo"), {}, False),
        (leaf("net-device-up", "IFACE!=lo"), ev("net-device-up"), {}, True),  # absent
        (leaf("net-device-up", "IFACE!=$IF"), ev("net-device-up", "IFACE=lo"), {"IF": "lo"}, False),
        # positional
        (leaf("interface-up", "eth0"), IFACE_UP, {}, True),
        (leaf("interface-up", "wlan*"), IFACE_UP, {}, False),
        (leaf("interface-up", "eth*", "Ethernet"), IFACE_UP, {}, True),
        (leaf("interface-up", "*", "Ethernet", "01:*"), IFACE_UP, {}, True),
        (leaf("interface-up", "*", "*", "*", "*"), IFACE_UP, {}, False),  # beyond the env
        (leaf("interface-up", "Ethernet"), IFACE_UP, {}, False),  # position, not any value
        (leaf("started", "dbus"), job_event("started", "dbus", ""), {}, True),
        (leaf("started", "dbus"), job_event("started", "hal", ""), {}, False),
        (leaf("started", "getty", "tty1"), job_event("started", "getty", "tty1"), {}, True),
        (leaf("started", "getty", "tty1"), job_event("started", "getty", "tty2"), {}, False),
        (leaf("x", ""), ev("x", "A="), {}, True),
        (leaf("x", ""), ev("x"), {}, False),
        # the k-th positional operand matches the k-th variable, named operands between
        (leaf("interface-up", "eth0", "ADDRESS=01:*", "Ethernet"), IFACE_UP, {}, True),
        # positional then named
        (
            leaf("stopping", "hersql", "RESULT=failed"),
            job_event("stopping", "hersql", ""),
            {},
            False,
        ),
        # $VAR expansion before globbing
        (leaf("interface-down", "$IFACE"), ev("interface-down", "IFACE=eth0"), ENV, True),
        (leaf("interface-down", "$IFACE"), ev("interface-down", "IFACE=eth1"), ENV, False),
        (leaf("interface-down", "${IFACE}"), ev("interface-down", "IFACE=eth0"), ENV, True),
        (leaf("interface-down", "IFACE=${IFACE}"), ev("interface-down", "IFACE=eth0"), ENV, True),
        (leaf("x", "A=$GLOB"), ev("x", "A=eth9"), ENV, True),  # expanded value is a glob
        (leaf("x", "A=pre-$TTY-*"), ev("x", "A=pre-tty1-post"), ENV, True),
        (leaf("x", "A=$UNSET"), ev("x", "A="), {}, True),  # unset expands to ""
        (leaf("x", "A=$UNSET"), ev("x", "A=v"), {}, False),
        (leaf("x", "A=$$"), ev("x", "A=$$"), {}, True),
    ],
)
def test_match_event(
    match: EventMatch, event: Event, job_env: dict[str, str], expected: bool
) -> None:
    assert match_event(match, event, job_env) is expected


@pytest.mark.parametrize(
    ("job_env", "expected"),
    [({"TTY": "tty1"}, True), ({"TTY": "tty2"}, False), ({}, False)],
)
def test_getty_stops_only_its_own_instance(job_env: dict[str, str], expected: bool) -> None:
    """``stop on tty-removed TTY=$TTY`` with each instance's environment."""
    stop_on = leaf("tty-removed", "TTY=$TTY")
    removed = ev("tty-removed", "TTY=tty1")
    assert match_event(stop_on, removed, job_env) is expected
    state = ExprState(stop_on)
    assert state.handle(removed, job_env) is expected


def test_hersql_backup_matches_failed_stopping() -> None:
    start_on = leaf("stopping", "hersql", "RESULT=failed", "EXIT_SIGNAL=SEGV")
    crashed = job_event(
        "stopping", "hersql", "", result="failed", process="main", exit_signal="SEGV"
    )
    assert str(crashed) == (
        "stopping JOB=hersql INSTANCE= RESULT=failed PROCESS=main EXIT_SIGNAL=SEGV"
    )
    assert match_event(start_on, crashed, {})
    assert not match_event(start_on, job_event("stopping", "hersql", ""), {})
    aborted = job_event(
        "stopping", "hersql", "", result="failed", process="main", exit_signal="ABRT"
    )
    assert not match_event(start_on, aborted, {})
    exited = job_event("stopping", "hersql", "", result="failed", process="main", exit_status=1)
    assert not match_event(start_on, exited, {})
    assert not match_event(
        start_on,
        job_event("stopping", "othersql", "", result="failed", process="main", exit_signal="SEGV"),
        {},
    )


# --- job_event -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        (dict(name="starting"), "starting JOB=j INSTANCE=i"),
        (dict(name="started"), "started JOB=j INSTANCE=i"),
        (dict(name="stopping"), "stopping JOB=j INSTANCE=i RESULT=ok"),
        (dict(name="stopped", result="ok"), "stopped JOB=j INSTANCE=i RESULT=ok"),
        (
            dict(name="stopped", result="failed", process="main", exit_status=2),
            "stopped JOB=j INSTANCE=i RESULT=failed PROCESS=main EXIT_STATUS=2",
        ),
        (
            dict(name="stopped", result="failed", process="pre-start", exit_signal="SIGKILL"),
            "stopped JOB=j INSTANCE=i RESULT=failed PROCESS=pre-start EXIT_SIGNAL=KILL",
        ),
        (
            dict(name="stopped", result="failed", process="respawn"),
            "stopped JOB=j INSTANCE=i RESULT=failed PROCESS=respawn",
        ),
        (
            dict(name="started", exported={"IFACE": "eth0", "A": "1"}),
            "started JOB=j INSTANCE=i IFACE=eth0 A=1",
        ),
        (
            dict(name="stopping", exported={"JOB": "evil", "RESULT": "x", "IFACE": "eth0"}),
            "stopping JOB=j INSTANCE=i RESULT=ok IFACE=eth0",
        ),
    ],
)
def test_job_event_env_order(kwargs: dict[str, object], expected: str) -> None:
    name = kwargs.pop("name")
    assert str(job_event(name, "j", "i", **kwargs)) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(name="restarting"),
        dict(name="starting", result="ok"),
        dict(name="started", process="main"),
        dict(name="started", exit_status=0),
        dict(name="stopped", result="maybe"),
        dict(name="stopped", result="ok", exit_status=0),
        dict(name="stopped", result="ok", process="main"),
        dict(name="stopped", result="failed", process="main", exit_status=1, exit_signal="TERM"),
        dict(name="started", exported={"bad key": "x"}),
    ],
)
def test_job_event_rejects_nonsense(kwargs: dict[str, object]) -> None:
    name = kwargs.pop("name")
    with pytest.raises(ValueError):
        job_event(name, "j", "i", **kwargs)  # type: ignore[arg-type]


def test_exported_variable_reaches_dependent_job() -> None:
    """``start on started JOBNAME`` / ``stop on interface-down $IFACE`` from the seeds."""
    started = job_event("started", "ifup", "eth0", exported={"IFACE": "eth0"})
    state = ExprState(leaf("started", "ifup"))
    assert state.handle(started, {})
    assert state.env() == {"JOB": "ifup", "INSTANCE": "eth0", "IFACE": "eth0"}
    stop = leaf("interface-down", "$IFACE")
    assert match_event(stop, ev("interface-down", "IFACE=eth0"), state.env())
    assert not match_event(stop, ev("interface-down", "IFACE=eth1"), state.env())


# --- ExprState -------------------------------------------------------------------------------

A_UP, B_UP, C_UP = ev("a-up", "N=1"), ev("b-up", "N=2"), ev("c-up", "N=3")


def test_single_leaf_fires_on_each_match_after_reset() -> None:
    state = ExprState(leaf("startup"))
    assert not state.handle(ev("other"), {})
    assert state.handle(ev("startup"), {})
    assert state.events == [ev("startup")]
    state.reset()
    assert not state.value and state.events == []
    assert state.handle(ev("startup"), {})


def test_and_rearming_rule() -> None:
    """``start on a-up and b-up``: once fired, both must happen again."""
    state = ExprState(AND(leaf("a-up"), leaf("b-up")))
    assert feed(state, [A_UP, B_UP]) == [False, True]
    assert state.events == [A_UP, B_UP]
    state.reset()
    assert feed(state, [B_UP]) == [False]
    assert feed(state, [A_UP]) == [True]
    assert state.events == [B_UP, A_UP]  # arrival order


@pytest.mark.parametrize(
    ("sequence", "fired"),
    [
        (["a", "b"], [False, True]),
        (["b", "a"], [False, True]),
        (["a", "a", "b"], [False, False, True]),
        (["a", "c", "b"], [False, False, True]),
        (["b", "b"], [False, False]),
    ],
)
def test_and_in_any_order(sequence: list[str], fired: list[bool]) -> None:
    events = {"a": A_UP, "b": B_UP, "c": C_UP}
    state = ExprState(AND(leaf("a-up"), leaf("b-up")))
    assert feed(state, [events[s] for s in sequence]) == fired


def test_or_refires_on_either() -> None:
    state = ExprState(OR(leaf("a-down"), leaf("b-down")))
    for event in [ev("a-down"), ev("b-down"), ev("b-down"), ev("a-down")]:
        assert state.handle(event, {})
        assert state.events == [event]
        state.reset()
    assert not state.handle(ev("c-down"), {})


@pytest.mark.parametrize(
    ("sequence", "fired", "events"),
    [
        (["c"], [True], ["c"]),
        (["a", "c"], [False, True], ["c"]),  # the lone a took no part
        (["a", "b"], [False, True], ["a", "b"]),
        (["b", "a"], [False, True], ["b", "a"]),
        (["b", "c"], [False, True], ["c"]),
    ],
)
def test_nested_and_or(sequence: list[str], fired: list[bool], events: list[str]) -> None:
    """``(a and b) or c``."""
    by_name = {"a": A_UP, "b": B_UP, "c": C_UP}
    state = ExprState(OR(AND(leaf("a-up"), leaf("b-up")), leaf("c-up")))
    assert feed(state, [by_name[s] for s in sequence]) == fired
    assert state.events == [by_name[s] for s in events]


def test_or_of_ands_reset_forgets_the_half_complete_side() -> None:
    """``(a and b) or (c and d)``: a reset clears every leaf, the other side's c included."""
    d_up = ev("d-up")
    state = ExprState(OR(AND(leaf("a-up"), leaf("b-up")), AND(leaf("c-up"), leaf("d-up"))))
    assert feed(state, [C_UP, A_UP, B_UP]) == [False, False, True]
    assert state.events == [A_UP, B_UP]
    state.reset()
    assert feed(state, [d_up]) == [False]  # the c before the reset does not count
    assert feed(state, [C_UP]) == [True]
    assert state.events == [d_up, C_UP]


def test_without_reset_a_true_expression_fires_again() -> None:
    state = ExprState(AND(leaf("a-up"), leaf("b-up")))
    assert feed(state, [A_UP, B_UP, B_UP, ev("unrelated")]) == [False, True, True, False]


def test_later_event_replaces_earlier_on_the_same_leaf() -> None:
    first, second = ev("a-up", "IFACE=eth0", "X=1"), ev("a-up", "IFACE=eth1")
    state = ExprState(AND(leaf("a-up"), leaf("b-up")))
    assert feed(state, [first, B_UP, second]) == [False, True, True]
    assert state.events == [B_UP, second]
    assert state.env() == {"N": "2", "IFACE": "eth1"}


def test_events_in_arrival_order_and_env_merge_later_wins() -> None:
    # The tree order is b, a; the arrival order a, b decides.
    a = ev("a-up", "SHARED=from-a", "A=1")
    b = ev("b-up", "SHARED=from-b", "B=2")
    state = ExprState(AND(leaf("b-up"), leaf("a-up")))
    assert feed(state, [a, b]) == [False, True]
    assert state.events == [a, b]
    assert state.env() == {"SHARED": "from-b", "A": "1", "B": "2"}
    assert list(state.env()) == ["SHARED", "A", "B"]


def test_one_event_matching_two_leaves_counts_once() -> None:
    e = ev("net", "IFACE=eth0", "UP=1")
    state = ExprState(AND(leaf("net", "IFACE=eth*"), leaf("net", "UP=1")))
    assert state.handle(e, {})
    assert state.events == [e]


def test_equal_leaves_are_tracked_separately() -> None:
    state = ExprState(AND(leaf("tick"), leaf("tick")))
    assert state.handle(ev("tick"), {})  # one event satisfies both copies
    state.reset()
    assert not state.value


def test_handle_expands_with_the_given_job_env() -> None:
    state = ExprState(OR(leaf("tty-removed", "TTY=$TTY"), leaf("shutdown")))
    assert not state.handle(ev("tty-removed", "TTY=tty2"), {"TTY": "tty1"})
    assert state.handle(ev("tty-removed", "TTY=tty2"), {"TTY": "tty2"})


def test_bad_expression_node_is_rejected() -> None:
    with pytest.raises(ValueError):
        ExprState(EventOp("xor", leaf("a"), leaf("b")))
    with pytest.raises(ValueError):
        ExprState("startup")  # type: ignore[arg-type]


def test_repr_names_pending_and_matched_leaves() -> None:
    state = ExprState(AND(leaf("a-up"), leaf("b-up")))
    state.handle(A_UP, {})
    text = repr(state)
    assert "a-up: a-up N=1" in text and "b-up: pending" in text


# --- from job-file text to firing ---------------------------------------------------------


def test_parsed_expression_with_globs_vars_negation_nesting_and_rearming() -> None:
    """``start on (a-up IFACE=eth* or a-up $WANT) and b-up HOST!=$HOSTNAME``, end to end."""
    from busmgr.config import parse_event_expr

    state = ExprState(parse_event_expr("(a-up IFACE=eth* or a-up $WANT) and b-up HOST!=$HOSTNAME"))
    job_env = {"WANT": "wlan0", "HOSTNAME": "me"}
    lo, wlan, eth = ev("a-up", "IFACE=lo"), ev("a-up", "IFACE=wlan0"), ev("a-up", "IFACE=eth3")
    mine, other = ev("b-up", "HOST=me"), ev("b-up", "HOST=other")
    assert [state.handle(e, job_env) for e in (lo, mine, other, wlan)] == [
        False,  # lo: neither eth* nor $WANT
        False,  # HOST=me is excluded by !=
        False,  # the b side alone
        True,  # $WANT expands to wlan0, matched by position
    ]
    assert state.events == [other, wlan]
    assert state.env() == {"HOST": "other", "IFACE": "wlan0"}
    state.reset()
    # Re-armed: both sides are needed again.
    assert [state.handle(e, job_env) for e in (eth, eth, ev("b-up"))] == [False, False, True]
    assert state.env() == {"IFACE": "eth3"}


def test_job_env_of_renames_only_for_dbus_signal() -> None:
    signal = ev("dbus-signal", "INTERFACE=i.f", "PATH=/o", "ARG0=x")
    assert job_env_of(signal) == {"INTERFACE": "i.f", "OBJPATH": "/o", "ARG0": "x"}
    assert job_env_of(ev("other", "PATH=/bin")) == {"PATH": "/bin"}
    state = ExprState(leaf("dbus-signal", "PATH=/o"))
    assert state.handle(signal, {}) and state.env()["OBJPATH"] == "/o"
