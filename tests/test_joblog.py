"""Job log file names: one file per instance, never shared (the reliability issue found the
instances ``a/b`` and ``a_b`` writing to one file); nothing kept about an instance once it is
gone."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from busmgr.job import Job
from busmgr.jobclass import JobClass, ProcessKind, ProcessSpec
from busmgr.joblog import JobLog, log_name

MAIN = ProcessKind.MAIN


class QuietHost:
    """A job host that does nothing (no process is started here)."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


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


def test_an_instance_asked_about_after_its_removal_is_not_kept(tmp_path: Path) -> None:
    # A caller quoting a failure asks after the failed instance was removed; the log must
    # answer without keeping the instance (it did, in a dict of names: the soak bench found
    # every failed instance held for the manager's lifetime).
    joblog = JobLog(tmp_path)
    cls = JobClass(name="getty", instance="$TTY", processes={MAIN: ProcessSpec("sleep 60")})
    job = Job(cls, "tty1", {}, QuietHost())  # type: ignore[arg-type]
    joblog.instance_added(job)
    assert joblog.name(job) == "getty/tty1.log"
    joblog.instance_removed(job)
    assert joblog.name(job) == "getty/tty1.log"
    assert joblog.path_text(job) == f"{tmp_path}/getty/tty1.log"
    assert joblog.tail(job) == []
    gone = weakref.ref(job)
    del job
    gc.collect()
    assert gone() is None
