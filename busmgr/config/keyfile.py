"""The key-file reader: the syntax of the Desktop Entry Specification, shared by the importers of
XDG autostart entries (:mod:`busmgr.config.desktop`) and D-Bus activation files
(:mod:`busmgr.config.dbus_service`).

Model: a key file is lines of four kinds:

* blank lines and comments (``#`` first, after optional blanks), which mean nothing;
* group headers ``[Group Name]`` (any printable text but ``[`` and ``]``);
* entries ``Key=Value`` or ``Key[locale]=Value`` (blanks around ``=`` are ignored, and so are
  blanks at either end of the line), which belong to the group above them.

:func:`read_key_file` gives a :class:`KeyFile`: its groups in file order, each entry with its
line, its value kept as written. Values are decoded on request, by type:

* :func:`unescape` for strings: ``\\s`` (space), ``\\n``, ``\\t``, ``\\r`` and ``\\\\``; an
  unknown escape is kept as written, so a later level (the ``Exec`` quoting rules) still sees
  it;
* :func:`split_list` for lists: ``;``-separated, ``\\;`` a literal ``;``, each element a string;
  empty elements (the trailing ``;``) are dropped;
* :func:`parse_boolean` for booleans: ``true`` or ``false`` (``1``/``0`` and other letter cases
  accepted, as GLib does);
* :meth:`Group.localized` for locale strings, trying ``lang_COUNTRY@MODIFIER``,
  ``lang_COUNTRY``, ``lang@MODIFIER``, ``lang`` and then the plain key, in the specification's
  order.

Problems are :class:`~busmgr.config.diagnostics.Diagnostic` values with the line: a line of no
kind, a bad header, a bad locale suffix, an entry before any group or a NUL character is an
ERROR; a group or key given again is a WARNING (groups are merged, the last value of a key
wins, as GLib does). After a bad header, the entries up to the next header are ignored rather
than each reported again.

Invariants: reading is pure and total: any text gives a :class:`KeyFile`, never an exception.
Line numbers are 1-based and count ``\\n``, ``\\r\\n`` and a lone ``\\r`` alike.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from busmgr.config.diagnostics import Diagnostic, Severity

__all__ = [
    "Entry",
    "Group",
    "KeyFile",
    "locale_variants",
    "parse_boolean",
    "read_key_file",
    "split_list",
    "unescape",
]

_ESCAPES = {"s": " ", "n": "\n", "t": "\t", "r": "\r", "\\": "\\"}
#: The blanks stripped around keys and values: ASCII ones only (as GLib's g_ascii_isspace); a
#: no-break space is part of a value.
_BLANKS = " \t\f\v"
_TRUE = frozenset({"true", "1"})
_FALSE = frozenset({"false", "0"})


@dataclass(frozen=True, slots=True)
class Entry:
    """One ``Key[locale]=Value`` line: ``value`` as written, without blanks at either end."""

    key: str
    locale: str | None
    value: str
    line: int


@dataclass(frozen=True)
class Group:
    """One group: its name, the line of its (first) header, and its entries by key and locale.

    Invariant: ``entries`` maps ``(key, locale)`` to the last entry given for it.
    """

    name: str
    line: int
    entries: dict[tuple[str, str | None], Entry] = field(default_factory=dict)

    def get(self, key: str) -> Entry | None:
        """The entry ``key`` without a locale suffix, or None."""
        return self.entries.get((key, None))

    def value(self, key: str) -> str | None:
        """The raw value of ``key``, or None when it is not given."""
        entry = self.get(key)
        return None if entry is None else entry.value

    def localized(self, key: str, locale: str) -> Entry | None:
        """The entry of ``key`` that best matches ``locale`` (``lang_COUNTRY.ENC@MOD``), falling
        back to the entry without a locale."""
        for variant in locale_variants(locale):
            entry = self.entries.get((key, variant))
            if entry is not None:
                return entry
        return self.get(key)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries.values())


@dataclass(frozen=True)
class KeyFile:
    """The groups of one file, in file order, and the problems met reading it."""

    path: str
    groups: tuple[Group, ...] = ()
    diagnostics: tuple[Diagnostic, ...] = ()

    def group(self, name: str) -> Group | None:
        return next((g for g in self.groups if g.name == name), None)

    @property
    def first_group(self) -> Group | None:
        return self.groups[0] if self.groups else None


def _lines(text: str) -> Iterator[tuple[int, str]]:
    # splitlines() would also split on \x0b, \x1c, \u2028...: only \n, \r\n and \r end a line.
    return enumerate(text.replace("\r\n", "\n").replace("\r", "\n").split("\n"), 1)


def _header_problem(name: str) -> str | None:
    if "[" in name or "]" in name:
        return "a group name cannot contain [ or ]"
    if any(not ch.isprintable() for ch in name):
        return "a group name cannot contain control characters"
    return None


def _split_key(raw: str) -> tuple[str, str | None] | str:
    """``Key[locale]`` -> (key, locale); a message when it is malformed."""
    key = raw.strip(_BLANKS)
    if not key:
        return "an entry needs a key before ="
    if "[" not in key and "]" not in key:
        return key, None
    base, bracket, rest = key.partition("[")
    base = base.rstrip(_BLANKS)
    if not bracket or not rest.endswith("]") or "[" in rest[:-1] or "]" in rest[:-1]:
        return f'bad key "{key}": expected Key or Key[locale]'
    locale = rest[:-1].strip(_BLANKS)
    if not base or not locale:
        return f'bad key "{key}": expected Key or Key[locale]'
    return base, locale


def read_key_file(text: str, path: str) -> KeyFile:
    """Read ``text`` (the contents of the file at ``path``, which labels the diagnostics)."""
    problems: list[Diagnostic] = []
    groups: dict[str, Group] = {}
    current: Group | None = None
    ignoring = False  # after a bad header, until the next header
    if text.startswith("\ufeff"):
        text = text[1:]  # a UTF-8 byte order mark is not part of the first line
    for number, raw in _lines(text):
        line = raw.strip(_BLANKS)
        if not line or line.startswith("#"):
            continue
        if "\0" in line:
            problems.append(Diagnostic(path, number, "a NUL character in the line"))
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                problem: str | None = "expected [Group Name]"
            else:
                problem = _header_problem(line[1:-1])
            if problem is not None:
                problems.append(Diagnostic(path, number, f'bad group header "{line}": {problem}'))
                current, ignoring = None, True
                continue
            name = line[1:-1]
            ignoring = False
            current = groups.get(name)
            if current is None:
                current = groups[name] = Group(name, number)
            else:
                message = f"group [{name}] given again (first on line {current.line});"
                problems.append(
                    Diagnostic(path, number, message + " its entries are merged", Severity.WARNING)
                )
            continue
        key_text, eq, value = line.partition("=")
        if not eq:
            problems.append(Diagnostic(path, number, f'expected KEY=VALUE, not "{line}"'))
            continue
        if ignoring:
            continue
        split = _split_key(key_text)
        if isinstance(split, str):
            problems.append(Diagnostic(path, number, split))
            continue
        key, locale = split
        if current is None:
            problems.append(Diagnostic(path, number, f'"{key}" is outside any [group]'))
            continue
        first = current.entries.get((key, locale))
        if first is not None:
            label = key if locale is None else f"{key}[{locale}]"
            message = f'"{label}" given again (first on line {first.line}); the last one wins'
            problems.append(Diagnostic(path, number, message, Severity.WARNING))
        current.entries[(key, locale)] = Entry(key, locale, value.strip(_BLANKS), number)
    return KeyFile(path, tuple(groups.values()), tuple(problems))


def unescape(raw: str) -> str:
    """A string value decoded: ``\\s \\n \\t \\r \\\\``; other backslashes are kept as written."""
    if "\\" not in raw:
        return raw
    out: list[str] = []
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch == "\\" and i + 1 < len(raw) and raw[i + 1] in _ESCAPES:
            out.append(_ESCAPES[raw[i + 1]])
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def split_list(raw: str) -> list[str]:
    """A ``;``-separated list: ``\\;`` is a literal ``;``; each element is :func:`unescape` d;
    empty elements are dropped."""
    items: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch == "\\" and i + 1 < len(raw):
            if raw[i + 1] == ";":
                current.append(";")
            else:
                current.append(raw[i : i + 2])  # unescape() decodes it with the element
            i += 2
            continue
        if ch == ";":
            items.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    items.append("".join(current))
    return [unescape(item) for item in items if item]


def parse_boolean(raw: str) -> bool | None:
    """``true``/``false`` (``1``/``0``, any letter case); None when it is neither."""
    word = raw.strip(_BLANKS).lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    return None


def locale_variants(locale: str) -> list[str]:
    """The locale suffixes to try for ``lang_COUNTRY.ENCODING@MODIFIER``, best first (the
    encoding never takes part). ``C``, ``POSIX`` and an empty locale have none."""
    rest, _at, modifier = locale.partition("@")
    rest = rest.partition(".")[0]
    lang, _underscore, country = rest.partition("_")
    if not lang or lang in ("C", "POSIX"):
        return []
    variants = []
    if country and modifier:
        variants.append(f"{lang}_{country}@{modifier}")
    if country:
        variants.append(f"{lang}_{country}")
    if modifier:
        variants.append(f"{lang}@{modifier}")
    variants.append(lang)
    return variants
