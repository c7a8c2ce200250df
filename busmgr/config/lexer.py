"""The lexer: job-file text -> logical stanza lines, each with the line number it starts on.

Model (Upstart's, from libnih's ``nih_config`` functions): a job file is a sequence of
stanzas, one per *logical* line. A logical line is one physical line, extended

* by a trailing backslash: the backslash, the newline and the whitespace around them become
  one space (``exec foo \\`` / ``  --bar`` is ``exec foo --bar``);
* by an open quote: a quoted string may span lines, the newline again becoming one space;
* by an open parenthesis, in ``start on`` and ``stop on`` only: an event expression may be
  continued on the following lines while a ``(`` is unclosed.

Comments start with ``#`` at the start of a word, outside quotes and not escaped, and run to
the end of the physical line. Upstart would also end a word at a ``#`` in its middle; busmgr
follows the shell instead, so ``exec curl http://h/#x`` keeps its ``#``.
Blank and comment-only lines produce nothing.

Quoting (Upstart's): double and single quotes group words, and both kinds are removed when a
word is dequoted; a backslash escapes the next character everywhere, also inside quotes, and
is removed when dequoting. An ``exec`` line keeps its quotes and backslashes (the shell or the
word splitter interprets them), so a :class:`LogicalLine` keeps its text as written, minus
comments and continuations, beside its dequoted :class:`Word` list.

A line that is ``script`` or ``HOOK script`` (``pre-start script`` ...) opens a block that
runs to the next line consisting of ``end script`` (optionally followed by a comment); the
body between them is kept verbatim, minus the indentation common to all its lines.

Invariants: every :class:`LogicalLine` has at least one word; line numbers are 1-based and
point at the first physical line of the stanza. Lexing never stops at the first error: an
unterminated quote, parenthesis or continuation drops that one stanza line and lexing resumes
on the next physical line; only an unterminated ``script`` block (which swallows the rest of
the file) ends it, with an error naming the line where the block began.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass

from busmgr.config.diagnostics import Diagnostic

WHITESPACE = " \t\r\n"
#: The longest physical line, and the longest stanza its continuations may make.
MAX_LINE = 65536
HOOK_KEYWORDS = ("pre-start", "post-start", "pre-stop", "post-stop")

# Characters that make a physical line need the careful scan: quotes, escapes, comments and
# parentheses (an expression continued on the next lines).
_SPECIAL_CHARS = frozenset("\"'\\#()")
_ON_STANZA = re.compile(r"[ \t]*(start|stop)[ \t]+on(?:[ \t(]|\Z)")
_END_SCRIPT = re.compile(r"[ \t]*end[ \t]+script[ \t]*(?:#.*)?\Z")


class LexError(Exception):
    """Text that cannot be split into words: an unterminated quote or a dangling backslash."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.scanned = 0  # characters read before giving up (see iter_lex)


@dataclass(frozen=True, slots=True)
class Word:
    """One word of a logical line: its dequoted ``text`` and where it was in the line's text.

    ``raw`` is the word as written (``text[start:end]`` of the line). A word is ``quoted`` if
    any quote or backslash was involved, so ``"and"`` can be told from the operator ``and``.
    """

    text: str
    raw: str
    start: int
    end: int

    @property
    def quoted(self) -> bool:
        return any(c in self.raw for c in "\"'\\")


@dataclass(frozen=True, slots=True)
class LogicalLine:
    """One stanza: its text (comments and continuations removed), words and script body.

    ``line`` is where the stanza starts, ``end_line`` the last physical line it used (the
    ``end script`` line for a block). ``body`` is the script body for ``script`` and
    ``HOOK script`` lines, else None.
    """

    line: int
    text: str
    words: tuple[Word, ...]
    end_line: int
    body: str | None = None

    @property
    def keyword(self) -> str:
        return self.words[0].text

    def rest(self, count: int) -> str:
        """The text after the first ``count`` words, as written (quotes kept), stripped."""
        if count <= 0:
            return self.text.strip()
        if count > len(self.words):
            return ""
        return self.text[self.words[count - 1].end :].strip()


@dataclass(frozen=True, slots=True)
class LexResult:
    """The logical lines of a text, in order, and what went wrong on the way (errors only)."""

    lines: tuple[LogicalLine, ...]
    diagnostics: tuple[Diagnostic, ...]


_PLAIN_WORD = re.compile(r"[^ \t\r\n]+")
_QUOTING = frozenset("\"'\\")


def split_words(text: str, specials: str = "") -> tuple[Word, ...]:
    """Split ``text`` into dequoted words, Upstart style.

    Words are separated by unquoted whitespace; each character of ``specials`` (``"()"`` for
    event expressions) is a word of its own when unquoted. Raises :class:`LexError` for an
    unterminated quote or a backslash at the very end.
    """
    if not (_QUOTING.intersection(text) or (specials and set(specials).intersection(text))):
        # The common case, no quoting at all: words are the runs of non-blanks.
        return tuple(
            Word(m.group(), m.group(), m.start(), m.end()) for m in _PLAIN_WORD.finditer(text)
        )
    words: list[Word] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in WHITESPACE:
            i += 1
            continue
        if c in specials:
            words.append(Word(c, c, i, i + 1))
            i += 1
            continue
        start, out, quote = i, [], ""
        while i < n:
            c = text[i]
            if c == "\\":
                if i + 1 >= n:
                    raise LexError("a backslash at the end of the line escapes nothing")
                out.append(" " if text[i + 1] == "\n" else text[i + 1])
                i += 2
            elif quote:
                if c == quote:
                    quote = ""
                else:
                    out.append(c)
                i += 1
            elif c in "\"'":
                quote = c
                i += 1
            elif c in WHITESPACE or c in specials:
                break
            else:
                out.append(c)
                i += 1
        if quote:
            raise LexError(f"unterminated {quote} quote")
        words.append(Word("".join(out), text[start:i], start, i))
    return tuple(words)


class _Unfinished(Exception):
    """A logical line that the end of the file cut short."""

    scanned = 0  # characters read before giving up


def _join(lines: list[str], first: int) -> tuple[str, int]:
    """Join the physical lines from ``first`` into one logical line's text.

    Returns the text (comments removed) and the index of the next physical line. Raises
    :class:`_Unfinished` if a quote, parenthesis or continuation is still open at the end.
    """
    plain = lines[first]
    if not _SPECIAL_CHARS.intersection(plain):
        return plain, first + 1  # nothing that could continue the line or start a comment
    done: list[str] = []  # the text of the physical lines before this one, joined by " "
    size = 0  # len("".join(done))
    quote = ""
    depth = 0
    word_start = True  # the next character would begin a word (for "#" comments)
    j = first
    while True:
        line = lines[j]
        if j > first:
            line = line.lstrip(" \t")
        j += 1
        buf: list[str] = []
        k, escaped_newline = 0, False
        while k < len(line):
            c = line[k]
            if c == "\\":
                if k + 1 == len(line):
                    escaped_newline = True
                    break
                buf.append(line[k : k + 2])
                word_start = False
                k += 2
                continue
            if quote:
                if c == quote:
                    quote = ""
            elif c in "\"'":
                quote = c
            elif c == "#" and word_start:
                break  # a comment: the rest of this physical line
            elif c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
            buf.append(c)
            word_start = not quote and c in " \t"
            k += 1
        current = "".join(buf)
        if size + len(current) > MAX_LINE:
            too_long = LexError(f"stanza longer than {MAX_LINE:,} characters")
            too_long.scanned = size + len(current)
            raise too_long
        on_stanza = _ON_STANZA.match(("".join(done[:4]) + current)[:64])  # the keyword
        in_expr = depth > 0 and on_stanza is not None
        if not (escaped_newline or quote or in_expr):
            return "".join(done) + current, j
        if j >= len(lines):
            if quote:
                unfinished = _Unfinished(f"unterminated {quote} quote")
            elif escaped_newline:
                unfinished = _Unfinished(
                    'a trailing "\\" continues the line past the end of the file'
                )
            else:
                which = on_stanza.group(1) if on_stanza else "start"
                unfinished = _Unfinished(f'unclosed "(" in the "{which} on" expression')
            unfinished.scanned = size + len(current)
            raise unfinished
        # Continued: this line's trailing blanks and the newline become one space (a line that
        # adds nothing but blanks adds nothing).
        kept = current.rstrip(" \t\r")
        if kept:
            if done and not done[-1].endswith(" "):
                done.append(" ")
            done.append(kept)
            done.append(" ")
            size += len(kept) + 1
        elif not done:
            done.append(" ")
            size += 1
        word_start = not quote


def _opens_block(words: tuple[Word, ...]) -> bool:
    """``script`` or ``HOOK script`` (extra words are the stanza handler's error to report)."""
    if words[0].text == "script":
        return True
    return len(words) >= 2 and words[0].text in HOOK_KEYWORDS and words[1].text == "script"


def _dedent(body_lines: list[str]) -> str:
    if not body_lines:
        return ""
    return textwrap.dedent("\n".join(body_lines) + "\n")


def iter_lex(text: str, path: str = "<string>") -> Iterator[LogicalLine | Diagnostic]:
    """The logical lines of ``text`` and the problems met, in line order, one at a time.

    A physical line longer than :data:`MAX_LINE` characters is an error at that line (and is
    skipped), as is a logical line that continuations make longer than that: the lexer's work
    is linear in the size of the text and bounded per line.
    """
    physical = text.replace("\r\n", "\n").split("\n")
    # Characters the lexer may scan again after an unfinished stanza (it resumes on the next
    # line, re-reading what the failed stanza had read): bounded, so that a file made of
    # nothing but unfinished stanzas still costs time linear in its size.
    rescan_budget = 2 * len(text) + MAX_LINE
    i = 0
    while i < len(physical):
        if len(physical[i]) > MAX_LINE:
            yield Diagnostic(path, i + 1, f"line longer than {MAX_LINE:,} characters")
            i += 1
            continue
        try:
            joined, after = _join(physical, i)
            words = split_words(joined)
        except (_Unfinished, LexError) as exc:
            yield Diagnostic(path, i + 1, str(exc))
            rescan_budget -= exc.scanned
            if rescan_budget < 0:
                message = "too many unfinished stanzas: the rest of the file is not read"
                yield Diagnostic(path, i + 2, message)
                return
            i += 1  # drop this stanza's first line only and carry on with the next
            continue
        if not words:
            i = after
            continue
        if not _opens_block(words):
            yield LogicalLine(i + 1, joined, words, after)
            i = after
            continue
        end = next((k for k in range(after, len(physical)) if _END_SCRIPT.match(physical[k])), None)
        if end is None:
            message = f'unterminated script block begun on line {i + 1}: no "end script"'
            yield Diagnostic(path, i + 1, message)
            return
        body = _dedent(physical[after:end])
        yield LogicalLine(i + 1, joined, words, end + 1, body)
        i = end + 1


def lex(text: str, path: str = "<string>") -> LexResult:
    """Split ``text`` into logical lines; ``path`` only labels the diagnostics."""
    out: list[LogicalLine] = []
    diagnostics: list[Diagnostic] = []
    for item in iter_lex(text, path):
        if isinstance(item, Diagnostic):
            diagnostics.append(item)
        else:
            out.append(item)
    return LexResult(tuple(out), tuple(diagnostics))
