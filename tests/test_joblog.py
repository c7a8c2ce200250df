"""Job log file names: one file per instance, never shared (the reliability issue found the
instances ``a/b`` and ``a_b`` writing to one file)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from busmgr.joblog import log_name


def test_names_of_jobs_and_instances() -> None:
    assert log_name("svc", "") == "svc.log"
    assert log_name("getty", "tty1") == "getty/tty1.log"
    assert log_name("x", "a/b") == "x/a%2fb.log"
    assert log_name("x", "a_b") == "x/a_b.log"
    assert log_name("x", ".hidden") == "x/%2ehidden.log"
    assert log_name("x", "50%") == "x/50%25.log"


@given(st.text(min_size=1), st.text(min_size=1))
def test_two_instances_never_share_a_file(a: str, b: str) -> None:
    if a != b:
        assert log_name("job", a) != log_name("job", b)
    name = log_name("job", a).removeprefix("job/")
    assert "/" not in name and not name.startswith(".")
