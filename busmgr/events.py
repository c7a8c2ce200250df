"""Events and the matching of ``start on`` / ``stop on`` expressions against them.

The model (Upstart 0.5, seeds ``002_*`` "Events"):

* An :class:`Event` is a name and an *ordered* environment of ``KEY=VALUE`` pairs. The order
  matters: a positional operand in an expression (``start on started dbus``) matches the env
  value at the same position, so job events always carry ``JOB`` first and ``INSTANCE``
  second, and an event emitted by a client keeps the order the client gave.
* An expression is a tree of :class:`~busmgr.jobclass.EventMatch` leaves joined by
  :class:`~busmgr.jobclass.EventOp` ``and``/``or`` nodes. :func:`match_event` decides whether
  one event satisfies one leaf; :class:`ExprState` holds which leaves have been satisfied so
  far for one job's ``start on`` (or one instance's ``stop on``) and says when the whole
  expression has become true.
* Operand patterns may reference the job's own environment (``stop on tty-removed TTY=$TTY``);
  they are expanded with :func:`expand` *before* they are used as shell globs, so each
  instance of a job matches with its own values.

Invariants:

* Everything here is pure: no I/O, no processes, no bus, no clock. The same inputs always give
  the same answers, which is what lets the manager replay events in tests.
* Every :class:`Event` has a valid name (:func:`validate_event_name`), keys that are variable
  names (``[A-Za-z_][A-Za-z0-9_]*``), no key twice, and no NUL byte anywhere; the constructor
  raises :class:`ValueError` otherwise, so code holding an Event never re-checks it.
* An :class:`ExprState` leaf, once matched, stays matched until :meth:`ExprState.reset`
  (Upstart's ``EventOperator.value``); a node's truth is always recomputed from its leaves,
  never stored, so it cannot drift from them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from types import MappingProxyType

from busmgr.jobclass import EventExpr, EventMatch, EventOp, is_variable_name

__all__ = [
    "JOB_ENV_NAMES",
    "JOB_EVENTS",
    "STOP_EVENTS",
    "Event",
    "ExprState",
    "expand",
    "job_env_of",
    "job_event",
    "match_event",
    "validate_event_env",
    "validate_event_name",
]

#: The four events the manager emits for every job instance, in life-cycle order.
JOB_EVENTS = ("starting", "started", "stopping", "stopped")
#: The job events that carry ``RESULT``, ``PROCESS`` and ``EXIT_STATUS``/``EXIT_SIGNAL``.
STOP_EVENTS = ("stopping", "stopped")

_NO_ENV: Mapping[str, str] = MappingProxyType({})

# Characters an event name may not contain, besides whitespace and control characters: ``=``
# would make ``emit NAME KEY=VALUE`` ambiguous, and the rest have a meaning in a job file's
# expression syntax (grouping, comments, quoting, expansion), so a job could never name the event.
_NAME_FORBIDDEN = frozenset("=()#$\"'\\")
_NAME_RESERVED = frozenset({"and", "or"})


def validate_event_name(name: str) -> str | None:
    """The reason ``name`` cannot be an event name, or None when it can.

    An event name is a non-empty string of printable characters with no whitespace, none of
    ``= ( ) # $ " ' \\``, and is not one of the operator words ``and``/``or``: exactly the
    names a ``start on`` line can spell as a single word. Case matters (``Startup`` is not
    ``startup``). Glob characters are allowed but have no special meaning: names are compared
    exactly, as Upstart's ``strcmp`` does.
    """
    if not isinstance(name, str):
        return f"event name must be a string, not {type(name).__name__}"
    if not name:
        return "event name is empty"
    for char in name:
        if char.isspace() or not char.isprintable():
            return f"event name {name!r} contains whitespace or a control character"
        if char in _NAME_FORBIDDEN:
            return f"event name {name!r} contains {char!r}"
    if name in _NAME_RESERVED:
        return f"event name {name!r} is an operator word"
    return None


def validate_event_env(env: Mapping[str, str]) -> str | None:
    """The reason ``env`` cannot be an event's environment, or None when it can.

    Every key must be a variable name (``[A-Za-z_][A-Za-z0-9_]*``) and every value a string
    without NUL bytes (it ends up in a process environment). The message names the first
    offending key, for the bus layer's ``InvalidArgs`` error.
    """
    for key, value in env.items():
        if not isinstance(key, str) or not is_variable_name(key):
            return f"invalid variable name {key!r} (expected [A-Za-z_][A-Za-z0-9_]*)"
        if not isinstance(value, str):
            return f"value of {key} must be a string, not {type(value).__name__}"
        if "\0" in value:
            return f"value of {key} contains a NUL byte"
    return None


@dataclass(frozen=True, slots=True)
class Event:
    """One emitted event: a name and an ordered environment.

    ``env`` keeps the order in which the variables were given; positional operands match by
    that order. Build one with :meth:`make`, which accepts a mapping or pairs and folds repeated
    keys; the constructor itself rejects anything that breaks the module's invariants.
    """

    name: str
    env: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        error = validate_event_name(self.name)
        if error is not None:
            raise ValueError(error)
        pairs = tuple((key, value) for key, value in self.env)
        keys = [key for key, _ in pairs]
        if len(set(keys)) != len(keys):
            raise ValueError(f"event {self.name}: a variable is given twice in {keys}")
        error = validate_event_env(dict(pairs))
        if error is not None:
            raise ValueError(f"event {self.name}: {error}")
        object.__setattr__(self, "env", pairs)

    @classmethod
    def make(cls, name: str, env: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> Event:
        """An event from a mapping or from ``(key, value)`` pairs, in their order.

        A key given more than once keeps its first position and its last value (as setting an
        environment variable twice does). Raises :class:`ValueError` on an invalid name or key.
        """
        items = env.items() if isinstance(env, Mapping) else env
        folded: dict[str, str] = {}
        for key, value in items:
            folded[key] = value
        return cls(name, tuple(folded.items()))

    def env_dict(self) -> dict[str, str]:
        """The environment as a new dict, in the event's order."""
        return dict(self.env)

    def get(self, key: str) -> str | None:
        """The value of ``key``, or None when the event does not carry it."""
        for k, value in self.env:
            if k == key:
                return value
        return None

    def __str__(self) -> str:
        return " ".join([self.name, *(f"{key}={value}" for key, value in self.env)])


#: Variables an event carries for matching that reach a job's environment under another name,
#: because the job's processes need the original name for themselves: the object path of a
#: ``dbus-signal`` event is ``PATH`` in expressions (``start on dbus-signal PATH=/org/foo``)
#: but ``OBJPATH`` in the job (the name Upstart's D-Bus bridge uses), whose ``PATH`` stays
#: the command search path.
JOB_ENV_NAMES: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {"dbus-signal": MappingProxyType({"PATH": "OBJPATH"})}
)


def job_env_of(event: Event) -> dict[str, str]:
    """The variables ``event`` gives a job it starts or stops, in the event's order.

    The event's env, with the variables :data:`JOB_ENV_NAMES` lists for its name renamed.
    """
    names = JOB_ENV_NAMES.get(event.name)
    if not names:
        return event.env_dict()
    return {names.get(key, key): value for key, value in event.env}


# ---------------------------------------------------------------------------------------------
# Expansion

_NAME_AT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Operators of ``${NAME<op>word}``, longest first so ``:-`` is not read as ``-`` after ``:``.
_BRACE_OPS = (":-", ":+", "-", "+")


def expand(pattern: str, job_env: Mapping[str, str]) -> str:
    """``pattern`` with its variable references replaced from ``job_env``.

    References, as the shell and Upstart's ``environ_expand`` write them:

    * ``$NAME`` and ``${NAME}``: the value; an unset variable expands to the empty string, as in
      the shell. (Upstart instead makes the whole match fail; busmgr prefers the shell rule so
      ``stop on foo X=$UNSET`` simply matches ``X=`` and nothing else.)
    * ``${NAME:-word}`` / ``${NAME-word}``: ``word`` when NAME is unset or empty / unset.
    * ``${NAME:+word}`` / ``${NAME+word}``: ``word`` when NAME is set and non-empty / set, else
      the empty string. ``word`` is itself expanded.
    * ``${}``: a literal ``$`` (Upstart's escape), e.g. ``${}HOME`` is the text ``$HOME``.

    A ``$`` that does not start one of these is kept as it is: a lone ``$``, a trailing ``$``,
    and ``$$`` stay literal (``$$`` is *not* the shell's pid and not an escape: ``$$X`` is a
    literal ``$`` followed by the expansion of ``$X``). A malformed brace reference (no
    closing ``}``, or a bad name such as ``${1}``) is kept literally too; expansion never fails.

    The result is used as a glob, so a value containing ``*``, ``?`` or ``[`` acts as a
    pattern (as in Upstart).
    """
    text, _ = _expand_until(pattern, 0, job_env, until="")
    return text


def _expand_until(text: str, pos: int, env: Mapping[str, str], until: str) -> tuple[str, int]:
    """Expand ``text`` from ``pos`` up to the first character in ``until`` at this nesting level.

    Returns the expansion and the index of that character (``len(text)`` when none was found).
    """
    out: list[str] = []
    end = len(text)
    while pos < end:
        char = text[pos]
        if char in until:
            break
        if char != "$":
            out.append(char)
            pos += 1
            continue
        name = _NAME_AT.match(text, pos + 1)
        if name is not None:
            out.append(env.get(name.group(), ""))
            pos = name.end()
            continue
        if text.startswith("{}", pos + 1):
            out.append("$")
            pos += 3
            continue
        if text.startswith("{", pos + 1):
            braced = _expand_braced(text, pos, env)
            if braced is not None:
                value, pos = braced
                out.append(value)
                continue
        out.append("$")
        pos += 1
    return "".join(out), pos


def _expand_braced(text: str, pos: int, env: Mapping[str, str]) -> tuple[str, int] | None:
    """Expand the ``${...}`` reference whose ``$`` is at ``pos``.

    Returns the value and the index just past the closing brace, or None when the reference is
    malformed (the caller then keeps the ``$`` literally).
    """
    name = _NAME_AT.match(text, pos + 2)
    if name is None:
        return None
    i = name.end()
    op = next((candidate for candidate in _BRACE_OPS if text.startswith(candidate, i)), "")
    word = ""
    if op:
        word, i = _expand_until(text, i + len(op), env, until="}")
    if i >= len(text) or text[i] != "}":
        return None
    value = env.get(name.group())
    if op in (":-", "-"):
        use_word = value is None or (op == ":-" and value == "")
        return (word if use_word else value or ""), i + 1
    if op in (":+", "+"):
        use_word = value is not None and (op == "+" or value != "")
        return (word if use_word else ""), i + 1
    return (value or ""), i + 1


# ---------------------------------------------------------------------------------------------
# Matching one leaf


def match_event(match: EventMatch, event: Event, job_env: Mapping[str, str]) -> bool:
    """Whether ``event`` satisfies the leaf ``match`` for a job whose environment is ``job_env``.

    * Names are compared exactly (case-sensitive, no globs), as Upstart does.
    * Each operand's pattern is first expanded against ``job_env`` (:func:`expand`), then
      matched as a shell glob with :func:`fnmatch.fnmatchcase` (case-sensitive; ``*`` also
      matches ``/``; ``[!...]`` negates a class; a backslash is an ordinary character).
    * A positional operand ``GLOB`` matches the value at its position in the event's env: the
      k-th positional operand of the leaf matches the k-th variable, whatever named operands
      sit between them. There being no k-th variable fails the match. (Upstart only documents
      positionals before named operands, where the two rules agree.)
    * ``KEY=GLOB`` needs the event to carry KEY with a matching value; an absent KEY fails.
    * ``KEY!=GLOB`` matches when the event does not carry KEY, or carries a value that does
      not match.

    Every operand must match. The event and both mappings are only read.
    """
    if match.name != event.name:
        return False
    values = [value for _, value in event.env]
    position = 0
    for arg in match.args:
        if arg.key is None:
            value = values[position] if position < len(values) else None
            position += 1
        else:
            value = event.get(arg.key)
        matched = value is not None and fnmatchcase(value, expand(arg.pattern, job_env))
        if matched == arg.negate:
            return False
    return True


# ---------------------------------------------------------------------------------------------
# The state of one expression


@dataclass(frozen=True, slots=True)
class _Leaf:
    index: int
    match: EventMatch


@dataclass(frozen=True, slots=True)
class _Node:
    op: str  # "and" | "or"
    left: _Leaf | _Node
    right: _Leaf | _Node


def _compile(expr: EventExpr, leaves: list[EventMatch]) -> _Leaf | _Node:
    """The tree with each leaf numbered left to right (equal leaves stay distinct)."""
    if isinstance(expr, EventMatch):
        leaves.append(expr)
        return _Leaf(len(leaves) - 1, expr)
    if isinstance(expr, EventOp) and expr.op in ("and", "or"):
        left = _compile(expr.left, leaves)
        return _Node(expr.op, left, _compile(expr.right, leaves))
    raise ValueError(f"not an event expression node: {expr!r}")


class ExprState:
    """The run-time state of one job's ``start on`` (or one instance's ``stop on``) expression.

    Each leaf is either pending or matched by one event. :meth:`handle` offers an event to every
    pending-or-matched leaf; :attr:`value` is the expression evaluated over the leaves (an
    ``or`` is true when either side is, an ``and`` when both are).

    The re-arming rule (Upstart's ``event_operator_reset``): when the expression fires the job
    acts on it and then calls :meth:`reset`, which makes *every* leaf pending again, including
    leaves that had matched but took no part in the firing. So:

    * ``a-up and b-up`` fires once both have happened (in either order); after the reset both
      must happen again. A second ``b-up`` alone does nothing; an ``a-up`` after it fires.
    * ``a-down or b-down`` fires on each of them.
    * ``(a and b) or (c and d)`` fires as soon as one conjunction is complete; the reset then
      also forgets a half-complete other conjunction, so a ``c`` seen before the firing does
      not count: a whole new ``a and b``, or a whole new ``c and d``, is needed to fire again.

    Between resets, a matched leaf stays matched (a later event cannot unmatch it). When a
    second event matches an already-matched leaf, the later event replaces the earlier one as
    that leaf's event (Upstart would keep the first); the leaf's truth does not change.

    Not thread-safe, no I/O; one instance per expression per job (instance).
    """

    __slots__ = ("_arrived", "_leaves", "_matched", "_root", "expr")

    def __init__(self, expr: EventExpr) -> None:
        self.expr = expr
        leaves: list[EventMatch] = []
        self._root = _compile(expr, leaves)
        self._leaves: tuple[EventMatch, ...] = tuple(leaves)
        # Per leaf: (arrival number, event) of the event that matched it, or None if pending.
        self._matched: list[tuple[int, Event] | None] = [None] * len(leaves)
        self._arrived = 0

    def handle(self, event: Event, job_env: Mapping[str, str]) -> bool:
        """Offer ``event``; True when it matched some leaf and the expression is now true.

        Every leaf the event matches is marked (or re-marked) with it; ``job_env`` expands the
        operands. A True return means "act now": the caller starts or stops the job with
        :attr:`events` and then calls :meth:`reset`. Without a reset, a later event matching a
        leaf of the still-true expression returns True again. An event that matches no leaf
        changes nothing and returns False.
        """
        self._arrived += 1
        hit = False
        for index, leaf in enumerate(self._leaves):
            if match_event(leaf, event, job_env):
                self._matched[index] = (self._arrived, event)
                hit = True
        return hit and self.value

    @property
    def value(self) -> bool:
        """Whether the whole expression is true over the leaves matched since the last reset."""
        return self._value(self._root)

    @property
    def events(self) -> list[Event]:
        """The events that make the expression true, in the order they arrived.

        Only leaves inside true subtrees count (as Upstart's ``event_operator_environment``):
        for ``(a and b) or c`` fired by ``c``, an ``a`` that arrived without its ``b`` is not
        included. An event that matched several such leaves appears once. Empty while the
        expression is false.
        """
        found: dict[int, Event] = {}
        self._collect(self._root, found)
        return [found[arrival] for arrival in sorted(found)]

    def env(self) -> dict[str, str]:
        """The :attr:`events`' environments merged in arrival order, later events winning.

        This is what reaches the job, so each event contributes :func:`job_env_of` it.
        """
        merged: dict[str, str] = {}
        for event in self.events:
            merged.update(job_env_of(event))
        return merged

    def reset(self) -> None:
        """Make every leaf pending again (after the job acted on a firing, or on reload)."""
        self._matched = [None] * len(self._leaves)

    def _value(self, node: _Leaf | _Node) -> bool:
        if isinstance(node, _Leaf):
            return self._matched[node.index] is not None
        if node.op == "and":
            return self._value(node.left) and self._value(node.right)
        return self._value(node.left) or self._value(node.right)

    def _collect(self, node: _Leaf | _Node, found: dict[int, Event]) -> None:
        if not self._value(node):
            return
        if isinstance(node, _Leaf):
            matched = self._matched[node.index]
            if matched is not None:
                found[matched[0]] = matched[1]
            return
        self._collect(node.left, found)
        self._collect(node.right, found)

    def __repr__(self) -> str:
        marks = ", ".join(
            f"{leaf}: {'pending' if m is None else m[1]}"
            for leaf, m in zip(self._leaves, self._matched, strict=True)
        )
        return f"<ExprState {self.expr} [{marks}]>"


# ---------------------------------------------------------------------------------------------
# Job events


def job_event(
    name: str,
    job: str,
    instance: str,
    *,
    bus_name: str = "",
    result: str | None = None,
    process: str | None = None,
    exit_status: int | None = None,
    exit_signal: str | None = None,
    exported: Mapping[str, str] = _NO_ENV,
) -> Event:
    """The ``starting``/``started``/``stopping``/``stopped`` event of one job instance.

    The env is, in this order: ``JOB``, ``INSTANCE`` (``""`` for a job without ``instance``),
    ``BUS_NAME`` when ``bus_name`` is given (a job with ``dbus``), then on
    ``stopping``/``stopped`` only: ``RESULT`` (``ok`` when ``result`` is None), and
    when the result is ``failed``: ``PROCESS`` (which process failed: ``main``, ``pre-start``,
    ... or ``respawn`` when the respawn limit was hit) and ``EXIT_STATUS`` or ``EXIT_SIGNAL``
    (the signal named without ``SIG``: ``SEGV``) when the process exited, and finally the
    job's ``export``ed variables in their order. An exported variable never replaces one of
    the variables above (they describe the event, not the job).

    Raises :class:`ValueError` on a name that is not a job event, on RESULT/PROCESS/EXIT_* for
    ``starting``/``started``, on a result other than ``ok``/``failed``, on PROCESS/EXIT_* with
    ``RESULT=ok``, and on both an exit status and an exit signal.
    """
    if name not in JOB_EVENTS:
        raise ValueError(f"{name!r} is not a job event (one of {', '.join(JOB_EVENTS)})")
    env: dict[str, str] = {"JOB": job, "INSTANCE": instance}
    if bus_name:
        env["BUS_NAME"] = bus_name
    details = (process, exit_status, exit_signal)
    if name not in STOP_EVENTS:
        if result is not None or any(d is not None for d in details):
            raise ValueError(f"{name} events carry no RESULT, PROCESS or EXIT_* variables")
    else:
        result = "ok" if result is None else result
        if result not in ("ok", "failed"):
            raise ValueError(f"RESULT must be ok or failed, not {result!r}")
        env["RESULT"] = result
        if result == "ok" and any(d is not None for d in details):
            raise ValueError("a job that stopped with RESULT=ok has no PROCESS or EXIT_*")
        if exit_status is not None and exit_signal is not None:
            raise ValueError("a process has an exit status or an exit signal, not both")
        if process is not None:
            env["PROCESS"] = process
        if exit_status is not None:
            env["EXIT_STATUS"] = str(exit_status)
        if exit_signal is not None:
            env["EXIT_SIGNAL"] = exit_signal.removeprefix("SIG")
    for key, value in exported.items():
        env.setdefault(key, value)
    return Event.make(name, env)
