"""Event expressions: operands, operators, precedence, parentheses, quoting."""

from __future__ import annotations

import pytest

from busmgr.config.expr import ExprError, parse_event_expr
from busmgr.jobclass import EventArg, EventMatch, EventOp


def m(name: str, *args: EventArg) -> EventMatch:
    return EventMatch(name, args)


def test_single_event() -> None:
    assert parse_event_expr("startup") == m("startup")


def test_arguments_positional_named_and_negated() -> None:
    assert parse_event_expr("net-device-up eth* ADDRFAM=inet IFACE!=lo") == m(
        "net-device-up",
        EventArg("eth*"),
        EventArg("inet", "ADDRFAM"),
        EventArg("lo", "IFACE", negate=True),
    )


def test_variables_are_kept_verbatim() -> None:
    assert parse_event_expr("tty-removed ${X} TTY=$TTY") == m(
        "tty-removed", EventArg("${X}"), EventArg("$TTY", "TTY")
    )


def test_quoted_values() -> None:
    assert parse_event_expr('foo "a b" KEY="x y" \'K2=(z)\'') == m(
        "foo", EventArg("a b"), EventArg("x y", "KEY"), EventArg("(z)", "K2")
    )


def test_empty_value() -> None:
    assert parse_event_expr('foo KEY=""') == m("foo", EventArg("", "KEY"))


def test_and_or() -> None:
    assert parse_event_expr("a and b") == EventOp("and", m("a"), m("b"))
    assert parse_event_expr("a or b") == EventOp("or", m("a"), m("b"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Upstart: equal precedence, grouped from the left.
        ("a or b and c", EventOp("and", EventOp("or", m("a"), m("b")), m("c"))),
        ("a and b or c", EventOp("or", EventOp("and", m("a"), m("b")), m("c"))),
        ("a and b and c", EventOp("and", EventOp("and", m("a"), m("b")), m("c"))),
        ("a or (b and c)", EventOp("or", m("a"), EventOp("and", m("b"), m("c")))),
        ("((a))", m("a")),
    ],
)
def test_precedence_is_left_to_right(text: str, expected: object) -> None:
    assert parse_event_expr(text) == expected


def test_parentheses_need_no_spaces() -> None:
    assert parse_event_expr("(a X=1)or(b)") == EventOp("or", m("a", EventArg("1", "X")), m("b"))


def test_quoted_operator_is_an_operand() -> None:
    assert parse_event_expr('foo "and" bar') == m("foo", EventArg("and"), EventArg("bar"))


def test_multiline_text() -> None:
    text = "(local-filesystems\n and net-device-up IFACE!=lo)"
    assert str(parse_event_expr(text)) == "local-filesystems and net-device-up IFACE!=lo"


@pytest.mark.parametrize(
    "text",
    [
        "startup",
        "a and b",
        "(a or b) and c",
        "a or b and c",
        "starting foo RESULT=failed EXIT_SIGNAL!=SEGV",
    ],
)
def test_str_round_trips(text: str) -> None:
    expr = parse_event_expr(text)
    assert parse_event_expr(str(expr)) == expr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected an event"),
        ("   ", "expected an event"),
        ("a and", 'expected an event after "and"'),
        ("or b", 'expected an event before "or"'),
        ("a and or b", 'expected an event before "or"'),
        ("(a", 'unclosed "("'),
        ("a)", 'unmatched ")"'),
        ("()", 'unexpected ")"'),
        ("a (b)", 'expected "and" or "or" between "a" and "("'),
        ("a KEY=1 pos", 'positional argument "pos" after named argument "KEY=1"'),
        ("a 1X=2", 'bad variable name "1X"'),
        ("FOO=bar", 'expected an event name, not "FOO=bar"'),
        ('a "open', "unterminated"),
    ],
)
def test_errors(text: str, message: str) -> None:
    with pytest.raises(ExprError) as info:
        parse_event_expr(text)
    assert message in info.value.message


def test_deep_nesting_with_globs_and_negation() -> None:
    assert parse_event_expr("((a and (b or c X!=y*)) or d K=$V)") == EventOp(
        "or",
        EventOp(
            "and",
            m("a"),
            EventOp("or", m("b"), m("c", EventArg("y*", "X", negate=True))),
        ),
        m("d", EventArg("$V", "K")),
    )


@pytest.mark.parametrize(
    ("operand", "arg"),
    [
        ("KEY!=", EventArg("", "KEY", negate=True)),
        ("A=b=c", EventArg("b=c", "A")),  # the first "=" splits
        ("A!=b!=c", EventArg("b!=c", "A", negate=True)),
        ("[!a]*", EventArg("[!a]*")),  # a negated glob class is a positional glob
        ("K=[!a]*", EventArg("[!a]*", "K")),
    ],
)
def test_operand_forms(operand: str, arg: EventArg) -> None:
    assert parse_event_expr(f"ev {operand}") == m("ev", arg)


def test_empty_key_is_an_error() -> None:
    with pytest.raises(ExprError) as info:
        parse_event_expr("ev !=x")
    assert 'bad variable name ""' in info.value.message
