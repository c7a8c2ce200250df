"""The bus-signal bridge: D-Bus signals that some job waits for become ``dbus-signal`` events.

Model (STYLE rule 9, Upstart's ``upstart-dbus-bridge``): a job says
``start on dbus-signal INTERFACE=org.test.Ping MEMBER=Pinged ARG0=hello`` (or ``stop on``).
The bridge subscribes to exactly what the current job expressions need and nothing more, and
turns every signal that arrives through one of its subscriptions into the event::

    dbus-signal INTERFACE=... MEMBER=... SENDER=... PATH=... ARG0=... ARG1=...

which then goes through the ordinary event queue, where each job's expression decides (globs,
``!=`` and ``$VAR`` included) whether it starts or stops something.

Subscriptions: one match rule per ``dbus-signal`` leaf of every ``start on`` (of jobs that are
not ``manual``) and every ``stop on``, built only from operands that are plain strings: a
``KEY=VALUE`` whose value has no glob character and no ``$`` reference, for the keys
INTERFACE, MEMBER, SENDER, PATH and ARG0..ARG63 (a positional operand counts as the key at its
position: INTERFACE, MEMBER, SENDER, PATH). Globs, ``!=`` and ``$VAR`` only narrow what the
job accepts, so they are left out of the rule and matched locally. Equal rules are subscribed
once; a reload (:meth:`SignalEventBridge.update`) adds the new rules and removes the old.

The event's variables, always in this order (so positional operands work): INTERFACE, MEMBER,
SENDER, PATH, then ``ARGn`` for each argument ``n`` of the body that reads as text (strings,
object paths, signatures as they are; booleans as ``true``/``false``; numbers in decimal; a
variant holding one of these). Other arguments (arrays, structs, dicts, bytes) are left out,
so ``ARGn`` always means the n-th argument of the signal. In the environment of a job the
event starts, PATH is renamed OBJPATH (:data:`busmgr.events.JOB_ENV_NAMES`): the job's own
PATH must stay a command search path.

SENDER is the sender's unique name (``:1.42``), except when a job names a well-known name in a
SENDER operand and the sender owns that name now: then SENDER is that well-known name, so
``SENDER=org.example.Foo`` matches locally as it does in the bus's rule.

Invariants:

* A signal becomes an event only if it matches one of the bridge's own current rules (the
  connection also receives signals for other subscriptions, ``NameOwnerChanged`` among them).
* The manager's own signals never become events (a bare ``start on dbus-signal`` would
  otherwise feed its own ``EventEmitted`` back into the queue forever).
* The pure parts (:func:`rule_for`, :func:`rules_for`, :func:`signal_event`) do no I/O and are
  tested without a bus; only :class:`SignalEventBridge` talks to the bus.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from dbus_fast import Message, MessageType, Variant
from dbus_fast.validators import (
    is_bus_name_valid,
    is_interface_name_valid,
    is_member_name_valid,
    is_object_path_valid,
)

from busmgr.bus.link import DBUS, DBUS_PATH, BusLink
from busmgr.bus.names import NameWatcher
from busmgr.events import Event
from busmgr.jobclass import EventMatch, JobClass, expr_events

log = logging.getLogger("busmgr")

#: The event name of a bus signal.
DBUS_SIGNAL = "dbus-signal"
#: The header variables of a ``dbus-signal`` event, in their order (positional operands).
HEADER_KEYS = ("INTERFACE", "MEMBER", "SENDER", "PATH")
_RULE_KEY = {"INTERFACE": "interface", "MEMBER": "member", "SENDER": "sender", "PATH": "path"}
_VALID: dict[str, Callable[[str], bool]] = {
    "INTERFACE": is_interface_name_valid,
    "MEMBER": is_member_name_valid,
    "SENDER": is_bus_name_valid,
    "PATH": is_object_path_valid,
}
_ARG_KEY = re.compile(r"ARG(0|[1-9][0-9]?)")
_MAX_ARG = 63  # the D-Bus specification allows arg0 .. arg63 in match rules
_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True, slots=True)
class MatchRule:
    """A D-Bus match rule for signals: ``(event key, value)`` pairs, in a canonical order.

    Keys are the event's variable names (INTERFACE, MEMBER, SENDER, PATH, ARGn); no key twice.
    """

    fields: tuple[tuple[str, str], ...] = ()

    def text(self) -> str:
        """The rule as the bus daemon reads it: ``type='signal',interface='...',arg0='...'``."""
        parts = ["type='signal'"]
        for key, value in self.fields:
            name = _RULE_KEY.get(key) or f"arg{key[3:]}"
            parts.append(f"{name}={_quote(value)}")
        return ",".join(parts)

    def matches(self, msg: Message, sender_names: Iterable[str] = ()) -> bool:
        """Whether the signal ``msg`` satisfies every field (as the daemon would decide).

        ``sender_names`` are the well-known names the sender owns now: a SENDER field matches
        the unique name or one of them. An ARGn field matches only a string argument.
        """
        for key, value in self.fields:
            if key == "SENDER":
                if value != msg.sender and value not in sender_names:
                    return False
            elif key in _RULE_KEY:
                if getattr(msg, _RULE_KEY[key]) != value:
                    return False
            else:
                index = int(key[3:])
                body = msg.body
                if index >= len(body) or not isinstance(body[index], str):
                    return False
                if body[index] != value:
                    return False
        return True


def _quote(value: str) -> str:
    """A match-rule value: quoted with ``'``; a ``'`` inside is written ``'\\''``."""
    return "'" + value.replace("'", "'\\''") + "'"


def _plain(value: str) -> bool:
    return not (_GLOB_CHARS & set(value)) and "$" not in value


def _rule_key(key: str) -> str | None:
    """The event key as a rule key, or None if the daemon cannot filter on it."""
    if key in _RULE_KEY:
        return key
    found = _ARG_KEY.fullmatch(key)
    if found is not None and int(found.group(1)) <= _MAX_ARG:
        return key
    return None


def rule_for(match: EventMatch) -> MatchRule | None:
    """The match rule that brings every signal ``match`` can accept; None if not ``dbus-signal``.

    Only plain-string ``KEY=VALUE`` operands (and positional ones for the header keys) go into
    the rule; a value the daemon would reject for its key (an invalid path, say) is left out
    too, and the local match then decides. The first operand for a key wins.
    """
    if match.name != DBUS_SIGNAL:
        return None
    fields: dict[str, str] = {}
    position = 0
    for arg in match.args:
        if arg.key is None:
            key = HEADER_KEYS[position] if position < len(HEADER_KEYS) else None
            position += 1
        else:
            key = _rule_key(arg.key)
        if key is None or arg.negate or not _plain(arg.pattern) or key in fields:
            continue
        valid = _VALID.get(key)
        if valid is not None and not valid(arg.pattern):
            continue
        fields[key] = arg.pattern
    order = {key: i for i, key in enumerate(HEADER_KEYS)}
    ordered = sorted(fields.items(), key=lambda kv: (order.get(kv[0], 4), len(kv[0]), kv[0]))
    return MatchRule(tuple(ordered))


def rules_for(classes: Iterable[JobClass]) -> set[MatchRule]:
    """Every rule the jobs' expressions need: ``start on`` of non-manual jobs, and ``stop on``."""
    rules: set[MatchRule] = set()
    for cls in classes:
        leaves = expr_events(cls.stop_on)
        if not cls.manual:
            leaves = expr_events(cls.start_on) + leaves
        for leaf in leaves:
            rule = rule_for(leaf)
            if rule is not None:
                rules.add(rule)
    return rules


def _text(value: object) -> str | None:
    """An argument as event text, or None when it does not read as text."""
    if isinstance(value, Variant):
        value = value.value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if "\0" not in value else None
    if isinstance(value, int | float):
        return str(value)
    return None


def signal_event(msg: Message, sender: str | None = None) -> Event:
    """The ``dbus-signal`` event for the signal ``msg`` (see the module docstring).

    ``sender`` replaces the message's unique sender name (a well-known name it owns).
    """
    env: dict[str, str] = {
        "INTERFACE": msg.interface or "",
        "MEMBER": msg.member or "",
        "SENDER": sender or msg.sender or "",
        "PATH": msg.path or "",
    }
    for index, value in enumerate(msg.body):
        text = _text(value)
        if text is not None:
            env[f"ARG{index}"] = text
    return Event.make(DBUS_SIGNAL, env)


_REPLIES = (MessageType.METHOD_RETURN, MessageType.ERROR)


def _well_known_senders(rules: Iterable[MatchRule]) -> set[str]:
    return {
        value
        for rule in rules
        for key, value in rule.fields
        if key == "SENDER" and not value.startswith(":")
    }


class SignalEventBridge:
    """Keeps the connection's signal subscriptions equal to what the jobs need; emits events.

    ``emit(event)`` queues an event (the manager's ``EventQueue.emit``). ``names`` tracks the
    owners of well-known SENDER names. :meth:`update` sends the AddMatch and RemoveMatch calls
    at once, before it returns: a client that gets the manager's reply to a reload (or sees
    its address after start-up) knows the bus has the new rules, because the bus handles one
    connection's messages in order. The replies arrive later through the message handler; a
    refused rule is logged and not asked for again until the jobs stop and start needing it.
    """

    def __init__(
        self,
        link: BusLink,
        emit: Callable[[Event], object],
        names: NameWatcher | None = None,
    ) -> None:
        self._link = link
        self._emit = emit
        self._names = names
        self._wanted: set[MatchRule] = set()
        # Counted as subscribed from the moment AddMatch is sent: a signal it brings may come
        # before the reply does.
        self._subscribed: set[MatchRule] = set()
        self._rejected: set[MatchRule] = set()
        self._pending: dict[int, tuple[str, MatchRule]] = {}  # serial -> (member, rule)
        self._watching: set[str] = set()
        self._tasks: set[asyncio.Task[str]] = set()
        link.add_handler(self._on_message)

    @property
    def rules(self) -> frozenset[MatchRule]:
        """The rules subscribed now (AddMatch sent and not refused)."""
        return frozenset(self._subscribed)

    def update(self, classes: Iterable[JobClass]) -> None:
        """Follow the expressions of ``classes`` (all the manager's current job classes)."""
        self._wanted = rules_for(classes)
        self._rejected &= self._wanted
        if not self._link.connected:
            return
        wanted = self._wanted - self._rejected
        for rule in sorted(wanted - self._subscribed, key=MatchRule.text):
            self._subscribed.add(rule)
            self._send("AddMatch", rule)
        for rule in sorted(self._subscribed - wanted, key=MatchRule.text):
            self._subscribed.discard(rule)
            self._send("RemoveMatch", rule)
        if self._names is not None:
            for name in sorted(_well_known_senders(wanted) - self._watching):
                self._watching.add(name)
                task = asyncio.get_running_loop().create_task(self._names.watch(name))
                self._tasks.add(task)
                task.add_done_callback(self._watched)

    def _watched(self, task: asyncio.Task[str]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("dbus-signal: cannot watch a sender name: %s", task.exception())

    def _send(self, member: str, rule: MatchRule) -> None:
        msg = Message(
            destination=DBUS,
            path=DBUS_PATH,
            interface=DBUS,
            member=member,
            signature="s",
            body=[rule.text()],
        )
        written = self._link.require().send(msg)
        written.add_done_callback(lambda fut: self._written(fut, msg.serial))
        self._pending[msg.serial] = (member, rule)

    def _written(self, fut: asyncio.Future[object], serial: int) -> None:
        """A write that failed gets no reply: forget it, and count an AddMatch as not
        subscribed, so the next :meth:`update` asks again."""
        err = None if fut.cancelled() else fut.exception()
        if err is None:
            return
        member, rule = self._pending.pop(serial, ("", None))
        if rule is None:
            return
        log.warning("dbus-signal: %s %s could not be sent: %s", member, rule.text(), err)
        if member == "AddMatch":
            self._subscribed.discard(rule)

    def _reply(self, msg: Message) -> None:
        member, rule = self._pending.pop(msg.reply_serial)
        if msg.message_type is not MessageType.ERROR:
            return
        reason = msg.body[0] if msg.body else msg.error_name
        log.warning("dbus-signal: %s %s failed: %s", member, rule.text(), reason)
        if member == "AddMatch" and rule in self._subscribed:
            self._subscribed.discard(rule)
            self._rejected.add(rule)

    def _sender_names(self, sender: str | None) -> list[str]:
        """The well-known SENDER names of the current rules that ``sender`` owns now."""
        if self._names is None or not sender:
            return []
        owners: Mapping[str, str] = self._names.owners
        return [
            name
            for name in sorted(_well_known_senders(self._subscribed))
            if owners.get(name) == sender
        ]

    def _on_message(self, msg: Message) -> None:
        if msg.message_type in _REPLIES and msg.reply_serial in self._pending:
            self._reply(msg)
            return
        if msg.message_type is not MessageType.SIGNAL or not self._subscribed:
            return
        if msg.sender is not None and msg.sender == self._link.unique_name:
            return
        names = self._sender_names(msg.sender)
        if not any(rule.matches(msg, names) for rule in self._subscribed):
            return
        try:
            event = signal_event(msg, names[0] if names else None)
        except ValueError as err:  # a member name the event model cannot carry, say
            log.warning("dbus-signal: %s.%s ignored: %s", msg.interface, msg.member, err)
            return
        self._emit(event)
