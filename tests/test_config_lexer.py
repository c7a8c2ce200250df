"""The lexer: logical lines, comments, continuations, quoting and script blocks."""

from __future__ import annotations

import pytest

from busmgr.config.lexer import LexError, lex, split_words


def texts(source: str) -> list[tuple[int, str]]:
    result = lex(source)
    assert result.diagnostics == ()
    return [(line.line, line.text.strip()) for line in result.lines]


def test_blank_lines_and_comments_produce_nothing() -> None:
    assert lex("\n# a comment\n   \n\t# indented comment\n").lines == ()


def test_line_numbers_are_where_each_stanza_starts() -> None:
    assert texts("\n\ntask\n# x\nrespawn\n") == [(3, "task"), (5, "respawn")]


def test_comment_after_a_stanza_is_removed() -> None:
    assert texts("exec /bin/foo --bar  # run it\n") == [(1, "exec /bin/foo --bar")]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('description "not # a comment"\n', 'description "not # a comment"'),
        ("env A='x # y'\n", "env A='x # y'"),
        ("exec curl http://host/#frag\n", "exec curl http://host/#frag"),
        ("exec echo \\# not a comment\n", "exec echo \\# not a comment"),
    ],
)
def test_hash_inside_quotes_words_or_escaped_is_kept(source: str, expected: str) -> None:
    assert texts(source) == [(1, expected)]


def test_trailing_backslash_continues_the_line() -> None:
    source = "exec /bin/foo \\\n    --bar \\\n    --baz\ntask\n"
    assert texts(source) == [(1, "exec /bin/foo --bar --baz"), (4, "task")]


def test_open_parenthesis_continues_start_on_and_stop_on() -> None:
    source = (
        "start on (filesystem  # comment inside\n"
        "          and net-device-up IFACE!=lo)\n"
        "stop on (runlevel [!2345]\n"
        "   or\n"
        "   stopping foo)\n"
        "task\n"
    )
    assert texts(source) == [
        (1, "start on (filesystem and net-device-up IFACE!=lo)"),
        (3, "stop on (runlevel [!2345] or stopping foo)"),
        (6, "task"),
    ]


def test_parenthesis_does_not_continue_other_stanzas() -> None:
    assert texts("exec foo (\ntask\n") == [(1, "exec foo ("), (2, "task")]


def test_quoted_parenthesis_does_not_continue() -> None:
    assert texts('start on foo X="("\ntask\n') == [(1, 'start on foo X="("'), (2, "task")]


def test_quote_may_span_lines() -> None:
    assert texts('description "a long\n   description"\ntask\n') == [
        (1, 'description "a long description"'),
        (3, "task"),
    ]


def test_crlf_line_endings() -> None:
    assert texts("task\r\nrespawn\r\n") == [(1, "task"), (2, "respawn")]


def test_script_block_body_is_verbatim_minus_common_indentation() -> None:
    source = (
        "pre-start script\n"
        "    # a shell comment stays\n"
        "    if [ -x /bin/true ]; then\n"
        '        echo "quoted # kept"\n'
        "    fi\n"
        "end script\n"
        "exec /bin/foo\n"
    )
    result = lex(source)
    assert result.diagnostics == ()
    block, main = result.lines
    assert (block.line, block.end_line, block.keyword) == (1, 6, "pre-start")
    assert block.body == (
        '# a shell comment stays\nif [ -x /bin/true ]; then\n    echo "quoted # kept"\nfi\n'
    )
    assert (main.line, main.text) == (7, "exec /bin/foo")


def test_script_block_with_quotes_and_end_script_comment() -> None:
    source = "script  # main\n  echo 'it''s'\n  echo \"(\"\n  end script # done\ntask\n"
    result = lex(source)
    assert result.diagnostics == ()
    assert [line.keyword for line in result.lines] == ["script", "task"]
    assert result.lines[0].body == "echo 'it''s'\necho \"(\"\n"


def test_empty_script_block() -> None:
    result = lex("script\nend script\n")
    assert result.lines[0].body == ""


def test_unterminated_script_block_names_the_line_it_began() -> None:
    result = lex("task\n\npost-stop script\n  rm -f /tmp/x\n")
    assert [line.keyword for line in result.lines] == ["task"]
    (diag,) = result.diagnostics
    assert diag.line == 3
    assert "unterminated script block begun on line 3" in diag.message


def test_unterminated_quote_is_an_error_and_lexing_goes_on() -> None:
    result = lex('description "oops\ntask\n')
    # The quote swallows the rest of the file; the error names the line it started on and
    # the lexer resumes on the next physical line.
    assert [(d.line, d.message) for d in result.diagnostics] == [(1, 'unterminated " quote')]
    assert [(line.line, line.keyword) for line in result.lines] == [(2, "task")]


def test_unclosed_parenthesis_at_end_of_file() -> None:
    result = lex("start on (a and\n  b\n")
    assert [d.line for d in result.diagnostics] == [1]
    assert 'unclosed "(" in the "start on" expression' in result.diagnostics[0].message
    assert [line.keyword for line in result.lines] == ["b"]


def test_backslash_at_end_of_file() -> None:
    result = lex("exec foo \\")
    assert [d.line for d in result.diagnostics] == [1]
    assert "past the end of the file" in result.diagnostics[0].message


def test_rest_keeps_quotes_as_written() -> None:
    (line,) = lex("pre-start exec /bin/echo \"a  b\" 'c'\n").lines
    assert line.rest(2) == "/bin/echo \"a  b\" 'c'"
    assert line.rest(0) == line.text.strip()
    assert line.rest(9) == ""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a b\tc", ["a", "b", "c"]),
        ('"a b" c', ["a b", "c"]),
        ("'a \"b\"'", ['a "b"']),
        ('FOO=""', ["FOO="]),
        ('FOO="x y"z', ["FOO=x yz"]),
        ("a\\ b", ["a b"]),
        ('"a\\"b"', ['a"b']),
        ("'a\\'b'", ["a'b"]),  # as Upstart: a backslash escapes inside single quotes too
    ],
)
def test_split_words_dequotes(text: str, expected: list[str]) -> None:
    assert [w.text for w in split_words(text)] == expected


def test_split_words_specials_and_quoted_flag() -> None:
    words = split_words('(a "and")', specials="()")
    assert [(w.text, w.quoted) for w in words] == [
        ("(", False),
        ("a", False),
        ("and", True),
        (")", False),
    ]


@pytest.mark.parametrize("text", ['"open', "'open", "trailing\\"])
def test_split_words_errors(text: str) -> None:
    with pytest.raises(LexError):
        split_words(text)


def test_hash_after_an_escaped_space_is_not_a_comment() -> None:
    assert texts("exec echo a\\ #b\n") == [(1, "exec echo a\\ #b")]


def test_comment_line_inside_a_continued_expression() -> None:
    source = "start on (a\n  # only a comment here\n  or b)\n"
    assert texts(source) == [(1, "start on (a or b)")]
