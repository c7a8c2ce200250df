"""Event expressions: the text of ``start on`` / ``stop on`` -> an :data:`EventExpr` tree.

Grammar (Upstart's ``parse_on``)::

    expr    := operand (("and" | "or") operand)*
    operand := "(" expr ")" | EVENT arg*
    arg     := GLOB | KEY=GLOB | KEY!=GLOB

Precedence: as in Upstart, ``and`` and ``or`` have *equal* precedence and group from the left
(``parse_on_operator`` collects everything to its left before pushing the new operator), so
``a or b and c`` is ``(a or b) and c``. Use parentheses to say otherwise. Expressions may span
lines inside parentheses; the lexer has already joined those lines.

Words are split and dequoted as everywhere in a job file (:func:`split_words`); parentheses
are words of their own. Only an unquoted ``and``/``or`` is an operator, so ``"and"`` is an
ordinary operand. Positional arguments (``GLOB``) must come before named ones, as Upstart
requires. Patterns are kept verbatim, ``$VAR`` references included: they are expanded against
the job's environment when the expression is matched, not here.

Invariant: the result only holds :class:`EventMatch` leaves with a non-empty event name and
:class:`EventOp` nodes whose ``op`` is ``"and"`` or ``"or"``, at most :data:`MAX_EVENTS` leaves
and :data:`MAX_DEPTH` levels of parentheses, so nothing that walks the tree (matching, printing,
the registry's index) can recurse without bound. Larger expressions are errors.
"""

from __future__ import annotations

from busmgr.config.lexer import LexError, Word, split_words
from busmgr.jobclass import EventArg, EventExpr, EventMatch, EventOp, is_variable_name

OPERATORS = ("and", "or")
#: Events one expression may name, and parentheses it may nest.
MAX_EVENTS = 128
MAX_DEPTH = 16


class ExprError(Exception):
    """A malformed event expression; the message says what and where in the expression."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _is_operator(word: Word) -> bool:
    return not word.quoted and word.text in OPERATORS


def _is_paren(word: Word, which: str) -> bool:
    return word.raw == which


def parse_event_arg(text: str) -> EventArg:
    """One dequoted argument: ``KEY=GLOB``, ``KEY!=GLOB`` or a positional ``GLOB``."""
    eq = text.find("=")
    if eq < 0:
        return EventArg(text)
    negate = eq > 0 and text[eq - 1] == "!"
    key = text[: eq - 1] if negate else text[:eq]
    if not is_variable_name(key):
        raise ExprError(f'bad variable name "{key}" in "{text}"')
    return EventArg(text[eq + 1 :], key, negate)


class _Parser:
    """Recursive descent over the word list; ``pos`` is the next word to look at."""

    def __init__(self, words: tuple[Word, ...]) -> None:
        self.words = words
        self.pos = 0
        self.depth = 0
        self.events = 0

    def peek(self) -> Word | None:
        return self.words[self.pos] if self.pos < len(self.words) else None

    def expr(self) -> EventExpr:
        left = self.operand()
        while (word := self.peek()) is not None and _is_operator(word):
            self.pos += 1
            if self.peek() is None:
                raise ExprError(f'expected an event after "{word.text}"')
            left = EventOp(word.text, left, self.operand())
        return left

    def operand(self) -> EventExpr:
        word = self.peek()
        if word is None:
            raise ExprError("expected an event")
        if _is_paren(word, "("):
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise ExprError(f"parentheses nested more than {MAX_DEPTH} deep")
            self.pos += 1
            inner = self.expr()
            self.depth -= 1
            close = self.peek()
            if close is None:
                raise ExprError('unclosed "("')
            if not _is_paren(close, ")"):
                raise ExprError(f'expected "and", "or" or ")" before "{close.text}"')
            self.pos += 1
            return inner
        if _is_paren(word, ")"):
            raise ExprError('unexpected ")"')
        if _is_operator(word):
            raise ExprError(f'expected an event before "{word.text}"')
        return self.match()

    def match(self) -> EventMatch:
        self.events += 1
        if self.events > MAX_EVENTS:
            raise ExprError(f"more than {MAX_EVENTS} events in one expression")
        name = self.words[self.pos].text
        if not name or "=" in name:
            raise ExprError(f'expected an event name, not "{name}"')
        self.pos += 1
        args: list[EventArg] = []
        while (word := self.peek()) is not None:
            if _is_operator(word) or _is_paren(word, ")"):
                break
            if _is_paren(word, "("):
                raise ExprError(f'expected "and" or "or" between "{name}" and "("')
            arg = parse_event_arg(word.text)
            if arg.key is None and args and args[-1].key is not None:
                raise ExprError(
                    f'positional argument "{word.text}" after named argument "{args[-1]}"'
                )
            args.append(arg)
            self.pos += 1
        return EventMatch(name, tuple(args))


def parse_event_expr(text: str) -> EventExpr:
    """Parse an event expression; raises :class:`ExprError` when it is malformed."""
    try:
        words = split_words(text, specials="()")
    except LexError as exc:
        raise ExprError(exc.message) from None
    parser = _Parser(words)
    result = parser.expr()
    extra = parser.peek()
    if extra is not None:
        if _is_paren(extra, ")"):
            raise ExprError('unmatched ")"')
        raise ExprError(f'expected "and" or "or" before "{extra.text}"')
    return result
