"""Job files can't hurt the manager: whatever the text, parsing gives a job or diagnostics
(never another exception), in time linear in the text, with every limit an ``FILE:LINE`` error.

The files of the reliability issue are pinned down one by one; hypothesis then throws stanza-like
text and arbitrary text at the parser."""

from __future__ import annotations

import string
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from busmgr.config import STANZAS, parse_event_expr, parse_job
from busmgr.config.expr import ExprError
from busmgr.config.parser import MAX_FILE_SIZE, parse_job_steps


def parse(text: str):  # type: ignore[no-untyped-def]
    return parse_job(text, name="j", path="j.conf")


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("start on " + "(" * 500 + "a" + ")" * 500, 1, "parentheses nested more than 16 deep"),
        (
            "task\nstop on " + " and ".join(f"e{i}" for i in range(1000)),
            2,
            "more than 128 events in one expression",
        ),
        ("respawn limit ² 5", 1, 'bad respawn limit COUNT "²": not an integer'),
        ("nice ①", 1, 'bad nice value "①": not an integer'),
        ("normal exit ³", 1, 'bad "normal exit" value "³"'),
        ("limit nofile ² unlimited", 1, "bad soft limit for nofile"),
        ("nice " + "9" * 4400, 1, 'bad nice value "999'),
        ("kill timeout " + "9" * 4400, 1, 'bad kill timeout "999'),
        ("exec " + "x" * 70000, 1, "line longer than 65,536 characters"),
        ("exec a \\\n" * 20000, 1, "stanza longer than 65,536 characters"),
    ],
)
def test_hostile_files_are_errors_with_their_line(text: str, line: int, message: str) -> None:
    result = parse(text + "\n")
    assert result.job is None
    matching = [d for d in result.errors if message in d.message]
    assert matching and matching[0].line == line, [str(d) for d in result.diagnostics]
    assert all(len(d.message) <= 240 for d in result.diagnostics)


def test_a_file_over_the_size_limit_is_refused_whole() -> None:
    result = parse("env A=b\n" * (MAX_FILE_SIZE // 8 + 1))
    assert result.job is None
    assert [str(d) for d in result.diagnostics] == ["j.conf: larger than 1024 KiB: not a job file"]


def test_parsing_is_linear_in_the_size_of_the_file() -> None:
    # A regression test for quadratic parsing (1 MB of env lines took 29 s): ten times the text
    # takes about ten times as long, not a hundred. Ratios within one run, generous bounds.
    def cost(lines: int) -> float:
        text = "".join(f'env K{i}="v {i}"\n' for i in range(lines))
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            assert parse(text).job is not None
            best = min(best, time.perf_counter() - start)
        return best

    small, large = cost(2000), cost(20000)
    assert large / small < 30


def test_large_files_are_parsed_in_bounded_steps() -> None:
    text = "".join(f'env K{i}="v a l"\n' for i in range(20000))
    steps = parse_job_steps(text, name="j", path="j.conf")
    count = 0
    while True:
        try:
            next(steps)
        except StopIteration as done:
            assert done.value.job is not None
            break
        count += 1
    assert count == 20000 // 500  # a yield every 500 stanzas: no step parses the whole file


WORDS = st.sampled_from(
    [*STANZAS, "on", "and", "or", "(", ")", "script", "end", "limit", "exit", "signal", "=",
     "KEY=v", "$X", "${X:-y}", "\\", '"', "'", "#", "²", "①", "-1", "0", "99999999999999999999999",
     "TERM", "SIGKILL", "unlimited", "never", "org.test.Name", "tcp", "\t"]
)  # fmt: skip
STANZA_LINES = st.lists(st.lists(WORDS, min_size=1, max_size=8).map(" ".join), max_size=40).map(
    "\n".join
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(STANZA_LINES, st.text(max_size=3000)))
def test_any_text_gives_a_job_or_diagnostics(text: str) -> None:
    start = time.perf_counter()
    result = parse(text)  # never raises
    assert time.perf_counter() - start < 2.0
    assert (result.job is None) == bool(result.errors)
    for d in result.diagnostics:
        assert d.path == "j.conf" and d.line >= 0 and d.message and "\n" not in d.message


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "and", "or", "(", ")", "X=1", "!", "="]), max_size=60))
def test_any_expression_gives_a_tree_or_an_expression_error(words: list[str]) -> None:
    try:
        tree = parse_event_expr(" ".join(words))
    except ExprError as err:
        assert err.message
    else:
        assert str(tree)  # printing walks the whole tree: bounded depth


@given(st.text(alphabet=string.digits + "²³①٣", min_size=1, max_size=30))
def test_numbers_in_any_script_never_raise(digits: str) -> None:
    result = parse(f"nice {digits}\nkill timeout {digits}\nrespawn limit {digits} 5\n")
    assert (result.job is None) == bool(result.errors)
