"""The bus-signal bridge's pure parts: match rules from expressions, and signals as events."""

from __future__ import annotations

import asyncio

import pytest
from dbus_fast import Message, Variant

from busmgr.bus.signal_events import MatchRule, rule_for, rules_for, signal_event
from busmgr.config import parse_event_expr
from busmgr.events import Event, ExprState, job_env_of
from busmgr.jobclass import EventMatch, JobClass


def leaf(text: str) -> EventMatch:
    expr = parse_event_expr(text)
    assert isinstance(expr, EventMatch)
    return expr


def signal(
    member: str = "Pinged", *body: object, signature: str = "", sender: str = ":1.7"
) -> Message:
    """A signal of ``org.test.Ping`` at ``/org/test/Ping`` as the bus would deliver it."""
    msg = Message.new_signal(
        "/org/test/Ping", "org.test.Ping", member, signature or "s" * len(body), list(body)
    )
    msg.sender = sender
    return msg


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("dbus-signal", "type='signal'"),
        (
            "dbus-signal INTERFACE=org.test.Ping MEMBER=Pinged ARG0=hello",
            "type='signal',interface='org.test.Ping',member='Pinged',arg0='hello'",
        ),
        # positional operands are the header keys in order
        (
            "dbus-signal org.test.Ping Pinged :1.5 /org/test",
            "type='signal',interface='org.test.Ping',member='Pinged',sender=':1.5',"
            "path='/org/test'",
        ),
        # globs, $VAR and != only narrow locally: left out of the rule
        ("dbus-signal INTERFACE=org.test.* MEMBER=Pinged", "type='signal',member='Pinged'"),
        ("dbus-signal MEMBER=Pinged ARG0=$WHO", "type='signal',member='Pinged'"),
        ("dbus-signal MEMBER!=Pinged ARG1=x", "type='signal',arg1='x'"),
        # keys the daemon cannot filter on, and values it would reject
        ("dbus-signal MEMBER=Pinged ARG64=x OTHER=y", "type='signal',member='Pinged'"),
        ("dbus-signal PATH=not/a/path MEMBER=M", "type='signal',member='M'"),
        # canonical order whatever the order in the file; ARG10 after ARG2
        (
            "dbus-signal ARG10=z ARG2=y MEMBER=M",
            "type='signal',member='M',arg2='y',arg10='z'",
        ),
        ('dbus-signal "ARG0=it\'s"', "type='signal',arg0='it'\\''s'"),
    ],
)
def test_rule_for(text: str, rule: str) -> None:
    made = rule_for(leaf(text))
    assert made is not None and made.text() == rule


def test_rule_for_other_events_is_none() -> None:
    assert rule_for(leaf("startup")) is None


def test_rules_for_start_and_stop_on_of_all_jobs_once_each() -> None:
    ping = "dbus-signal INTERFACE=org.test.Ping MEMBER=Pinged"
    jobs = [
        JobClass(name="a", start_on=parse_event_expr(f"{ping} or startup")),
        JobClass(name="b", start_on=parse_event_expr(ping)),
        JobClass(name="c", stop_on=parse_event_expr("dbus-signal MEMBER=Gone")),
        # a manual job ignores its start on: nothing to subscribe for it
        JobClass(name="d", manual=True, start_on=parse_event_expr("dbus-signal MEMBER=Manual")),
    ]
    assert sorted(r.text() for r in rules_for(jobs)) == [
        "type='signal',interface='org.test.Ping',member='Pinged'",
        "type='signal',member='Gone'",
    ]


def test_match_rule_matches_like_the_daemon() -> None:
    rule = rule_for(leaf("dbus-signal INTERFACE=org.test.Ping MEMBER=Pinged ARG0=hello"))
    assert rule is not None
    assert rule.matches(signal("Pinged", "hello"))
    assert not rule.matches(signal("Pinged", "other"))
    assert not rule.matches(signal("Other", "hello"))
    assert not rule.matches(signal("Pinged"))  # no arg0
    assert not rule.matches(signal("Pinged", 5, signature="i"))  # argN only matches strings
    by_sender = MatchRule((("SENDER", "org.example.Foo"),))
    assert not by_sender.matches(signal())
    assert by_sender.matches(signal(), ["org.example.Foo"])
    assert MatchRule((("SENDER", ":1.7"),)).matches(signal())


def test_signal_event_env_in_order_with_text_arguments() -> None:
    msg = signal(
        "Pinged",
        "hello",
        42,
        True,
        [1, 2],
        Variant("s", "inside"),
        "/org/obj",
        signature="sibaivo",
    )
    event = signal_event(msg)
    assert event.name == "dbus-signal"
    assert event.env == (
        ("INTERFACE", "org.test.Ping"),
        ("MEMBER", "Pinged"),
        ("SENDER", ":1.7"),
        ("PATH", "/org/test/Ping"),
        ("ARG0", "hello"),
        ("ARG1", "42"),
        ("ARG2", "true"),
        # ARG3, an array, is left out: ARGn stays the n-th argument
        ("ARG4", "inside"),
        ("ARG5", "/org/obj"),
    )
    assert signal_event(msg, "org.example.Foo").get("SENDER") == "org.example.Foo"


def test_signal_event_drives_an_expression_with_globs_and_positionals() -> None:
    state = ExprState(parse_event_expr("dbus-signal org.test.Ping Pinged ARG0=hel* ARG1!=x"))
    assert not state.handle(signal_event(signal("Pinged", "nothing", "y")), {})
    assert not state.handle(signal_event(signal("Pinged", "hello", "x")), {})
    assert state.handle(signal_event(signal("Pinged", "help", "y")), {})
    env = state.env()
    # In the job, the object path is OBJPATH: the job's PATH stays a search path.
    assert env["OBJPATH"] == "/org/test/Ping" and "PATH" not in env
    assert (env["ARG0"], env["ARG1"]) == ("help", "y")


def test_job_env_of_other_events_is_their_env() -> None:
    event = signal_event(signal("Pinged", "a"))
    assert list(job_env_of(event)) == ["INTERFACE", "MEMBER", "SENDER", "OBJPATH", "ARG0"]
    # any other event keeps its PATH: whoever emits it means it
    assert job_env_of(Event.make("x", {"PATH": "/bin"})) == {"PATH": "/bin"}


class _FailingLink:
    """A link whose writes fail (the connection broke under a write): no reply will come."""

    connected = True
    unique_name = ":1.1"

    def __init__(self) -> None:
        self.sent: list[Message] = []

    def add_handler(self, handler: object) -> None:
        pass

    def require(self) -> _FailingLink:
        return self

    def send(self, msg: Message) -> asyncio.Future[None]:
        self.sent.append(msg)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.set_exception(ConnectionResetError(104, "Connection reset by peer"))
        return fut


async def test_an_add_match_that_could_not_be_written_is_asked_again() -> None:
    # A bug found by the house review: AddMatch write errors were dropped, and the rule counted
    # as subscribed for ever although the bus never got it.
    from busmgr.bus.signal_events import SignalEventBridge

    link = _FailingLink()
    bridge = SignalEventBridge(link, lambda event: None)  # type: ignore[arg-type]
    job = JobClass(name="j", start_on=parse_event_expr("dbus-signal INTERFACE=org.test.Ping"))
    bridge.update([job])
    assert [m.member for m in link.sent] == ["AddMatch"]
    # The failed write's callback was scheduled (call_soon) when it was added; a callback
    # scheduled now runs after it.
    turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(turn.set_result, None)
    await turn
    assert bridge.rules == frozenset()  # not subscribed: the write failed
    bridge.update([job])
    assert [m.member for m in link.sent] == ["AddMatch", "AddMatch"]  # asked again
