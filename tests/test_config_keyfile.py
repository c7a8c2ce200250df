"""The key-file reader (busmgr.config.keyfile): the Desktop Entry Specification's syntax, shared by
the D-Bus .service and autostart importers. Pure: strings in, values out; fuzzed."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from busmgr.config.diagnostics import Severity
from busmgr.config.keyfile import (
    locale_variants,
    parse_boolean,
    read_key_file,
    split_list,
    unescape,
)

ENTRY = """\
# a comment
[Desktop Entry]
Type = Application
Name=Files
Name[de]=Dateien
Name[sr@latin]=Datoteke
Name[pt_BR]=Arquivos
Exec=nautilus --new-window %U

  # an indented comment
[Desktop Action new]
Name=New Window
"""


def test_groups_entries_and_lines() -> None:
    keyfile = read_key_file(ENTRY, "f.desktop")
    assert keyfile.diagnostics == ()
    assert [g.name for g in keyfile.groups] == ["Desktop Entry", "Desktop Action new"]
    assert keyfile.first_group is keyfile.groups[0]
    group = keyfile.group("Desktop Entry")
    assert group is not None and group.line == 2
    entry = group.get("Type")
    assert entry is not None
    assert (entry.key, entry.locale, entry.value, entry.line) == ("Type", None, "Application", 3)
    assert group.value("Exec") == "nautilus --new-window %U"
    assert group.value("Nope") is None
    assert [e.key for e in group] == ["Type", "Name", "Name", "Name", "Name", "Exec"]
    action = keyfile.group("Desktop Action new")
    assert action is not None and action.value("Name") == "New Window"
    assert keyfile.group("Missing") is None


@pytest.mark.parametrize(
    ("locale", "name"),
    [
        ("de_DE.UTF-8", "Dateien"),
        ("de", "Dateien"),
        ("sr_RS.UTF-8@latin", "Datoteke"),
        ("pt_BR", "Arquivos"),
        ("pt_PT", "Files"),
        ("C", "Files"),
        ("", "Files"),
    ],
)
def test_localized_lookup(locale: str, name: str) -> None:
    group = read_key_file(ENTRY, "f.desktop").group("Desktop Entry")
    assert group is not None
    entry = group.localized("Name", locale)
    assert entry is not None and entry.value == name


def test_locale_variants_order() -> None:
    assert locale_variants("sr_RS.UTF-8@latin") == ["sr_RS@latin", "sr_RS", "sr@latin", "sr"]
    assert locale_variants("de_DE") == ["de_DE", "de"]
    assert locale_variants("en@quot") == ["en@quot", "en"]
    assert locale_variants("POSIX") == []


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("[Desktop Entry\nA=1\n", 1, 'bad group header "[Desktop Entry": expected [Group Name]'),
        ("[a[b]]\n", 1, "a group name cannot contain [ or ]"),
        ("[a\x01]\n", 1, "a group name cannot contain control characters"),
        ("A=1\n[g]\n", 1, '"A" is outside any [group]'),
        ("[g]\njunk\n", 2, 'expected KEY=VALUE, not "junk"'),
        ("[g]\n=value\n", 2, "an entry needs a key before ="),
        ("[g]\nName[de=x\n", 2, 'bad key "Name[de": expected Key or Key[locale]'),
        ("[g]\nName[]=x\n", 2, 'bad key "Name[]"'),
        ("[g]\nName[a]b]=x\n", 2, 'bad key "Name[a]b]"'),
        ("[g]\nA=1\x002\n", 2, "a NUL character in the line"),
    ],
)
def test_errors_name_the_line(text: str, line: int, message: str) -> None:
    keyfile = read_key_file(text, "x.desktop")
    errors = [d for d in keyfile.diagnostics if d.is_error]
    assert [(d.path, d.line) for d in errors] == [("x.desktop", line)], errors
    assert message in errors[0].message


def test_entries_after_a_bad_header_are_not_reported_again() -> None:
    keyfile = read_key_file("[g\nA=1\nB=2\n[h]\nC=3\n", "x")
    assert [d.line for d in keyfile.diagnostics] == [1]
    assert [g.name for g in keyfile.groups] == ["h"]


def test_repeated_key_warns_and_the_last_wins() -> None:
    keyfile = read_key_file("[g]\nA=1\nA[de]=x\nA=2\nA[de]=y\n", "x")
    assert [(d.line, d.severity) for d in keyfile.diagnostics] == [
        (4, Severity.WARNING),
        (5, Severity.WARNING),
    ]
    assert '"A" given again (first on line 2); the last one wins' in keyfile.diagnostics[0].message
    assert '"A[de]" given again' in keyfile.diagnostics[1].message
    group = keyfile.group("g")
    assert group is not None
    assert group.value("A") == "2"
    entry = group.localized("A", "de")
    assert entry is not None and entry.value == "y"


def test_repeated_group_is_merged_with_a_warning() -> None:
    keyfile = read_key_file("[g]\nA=1\n[h]\n[g]\nB=2\n", "x")
    assert [(d.line, d.severity) for d in keyfile.diagnostics] == [(4, Severity.WARNING)]
    group = keyfile.group("g")
    assert group is not None
    assert (group.value("A"), group.value("B"), group.line) == ("1", "2", 1)
    assert [g.name for g in keyfile.groups] == ["g", "h"]


def test_line_ends_and_byte_order_mark() -> None:
    keyfile = read_key_file("\ufeff[g]\r\nA=1\rB= 2 \nC=x\x0by\x1cz\n", "x")
    assert keyfile.diagnostics == ()
    group = keyfile.group("g")
    assert group is not None
    assert [(e.key, e.value, e.line) for e in group] == [
        ("A", "1", 2),
        ("B", "2", 3),
        ("C", "x\x0by\x1cz", 4),  # only \n, \r\n and \r end a line
    ]


def test_empty_and_comment_only_files() -> None:
    assert read_key_file("", "x").groups == ()
    assert read_key_file("# nothing\n\n", "x").diagnostics == ()


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("plain", "plain"),
        (r"a\sb", "a b"),
        (r"\s\slead", "  lead"),
        (r"x\ny\tz\rw", "x\ny\tz\rw"),
        (r"back\\slash", "back\\slash"),
        (r"keep \$ and \" and \;", r"keep \$ and \" and \;"),
        ("trailing\\", "trailing\\"),
    ],
)
def test_unescape(raw: str, value: str) -> None:
    assert unescape(raw) == value


@pytest.mark.parametrize(
    ("raw", "items"),
    [
        ("GNOME;KDE;", ["GNOME", "KDE"]),
        ("GNOME;KDE", ["GNOME", "KDE"]),
        ("", []),
        (";;a;;", ["a"]),
        (r"a\;b;c", ["a;b", "c"]),
        (r"one\stwo;x\\;y", ["one two", "x\\", "y"]),
    ],
)
def test_split_list(raw: str, items: list[str]) -> None:
    assert split_list(raw) == items


@pytest.mark.parametrize(
    ("raw", "value"),
    [("true", True), ("false", False), ("True", True), ("1", True), ("0", False), ("yes", None)],
)
def test_parse_boolean(raw: str, value: bool | None) -> None:
    assert parse_boolean(raw) == value


# ----------------------------------------------------------------------------------- fuzzing
@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_text_reads_without_raising(text: str) -> None:
    keyfile = read_key_file(text, "fuzz.desktop")
    lines = text.replace("\r\n", "\n").replace("\r", "\n").count("\n") + 1
    for diagnostic in keyfile.diagnostics:
        assert 1 <= diagnostic.line <= lines
        assert diagnostic.path == "fuzz.desktop"
    for group in keyfile.groups:
        for entry in group:
            assert 1 <= entry.line <= lines
            assert entry.value == entry.value.strip(" \t")
            unescape(entry.value)
            split_list(entry.value)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["[", "]", "=", "\n", "\r", "#", ";", "\\", " ", "a", "A[b]"])))
def test_syntax_soup_reads_without_raising(parts: list[str]) -> None:
    read_key_file("".join(parts), "soup")


def _escape(value: str) -> str:
    """What a writer of key files does (the inverse of unescape for a whole value)."""
    out = value.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")
    out = out.replace("\r", "\\r")
    if out.startswith(" "):
        out = "\\s" + out[1:]
    if out.endswith(" "):
        out = out[:-1] + "\\s"
    return out


_VALUE_TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\0\x0b\x0c\x1c\x1d\x1e\x1f")
)
_KEYS = st.text(string.ascii_letters + string.digits + "-", min_size=1, max_size=12)
_GROUPS = st.text(string.ascii_letters + " -", min_size=1, max_size=12).map(str.strip).filter(bool)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_GROUPS, st.dictionaries(_KEYS, _VALUE_TEXT, max_size=6), max_size=4))
def test_written_values_read_back(groups: dict[str, dict[str, str]]) -> None:
    text = ""
    for name, entries in groups.items():
        text += f"[{name}]\n" + "".join(f"{k}={_escape(v)}\n" for k, v in entries.items())
    keyfile = read_key_file(text, "x")
    assert keyfile.diagnostics == ()
    assert {g.name: {e.key: unescape(e.value) for e in g} for g in keyfile.groups} == groups


@settings(max_examples=200, deadline=None)
@given(st.lists(_VALUE_TEXT.filter(bool), max_size=6))
def test_written_lists_read_back(items: list[str]) -> None:
    raw = "".join(_escape(item).replace(";", "\\;") + ";" for item in items)
    assert split_list(raw) == items
