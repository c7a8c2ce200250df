"""Loading job directories: ``services.d/*.conf`` -> jobs by name, plus diagnostics.

Model: :func:`load_directories` reads the ``*.conf`` files of each directory (sorted by name,
not recursing, skipping hidden files) with :func:`parse_job_file`. A directory that does not
exist is simply empty (the default directories often do not); one that cannot be read is an
error. A bad file only adds its diagnostics and never stops the others from loading. When two
directories define the same job name, the first directory wins and the later file gets a
warning; a file that failed to parse still claims its name (an override with a typo does not
silently fall back to the file it overrides), and the name is listed in ``failed`` so a
reload can keep the job's previous class. ``busmgr check`` runs the same parsing through
:func:`busmgr.config.check.check_paths`.

Invariants: reading files is the only I/O; nothing here starts processes or touches the bus.
The diagnostics of one file stay together and in line order.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from busmgr.config.diagnostics import Diagnostic, Severity
from busmgr.config.files import LoadResult, config_files, run_steps
from busmgr.config.parser import (
    JOB_SUFFIX,
    ParseResult,
    Trust,
    job_name_for,
    parse_job_file_steps,
)
from busmgr.jobclass import JobClass


@dataclass
class Collector:
    """Jobs by name as files are read in order (mutable: it accumulates one load)."""

    jobs: dict[str, JobClass] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # name -> file that claimed it
    diagnostics: list[Diagnostic] = field(default_factory=list)

    def add(self, path: Path, result: ParseResult) -> None:
        """Take a parsed file; the first file of a name wins, even if it had errors."""
        name, source = job_name_for(path), os.fspath(path)
        first = self.jobs[name].source if name in self.jobs else self.failed.get(name)
        if first is not None:
            message = f'job "{name}" is already defined by {first}; this file is ignored'
            self.diagnostics.append(Diagnostic(source, 0, message, Severity.WARNING))
            return
        self.diagnostics.extend(result.diagnostics)
        if result.job is None:
            self.failed[name] = source
        else:
            self.jobs[name] = result.job

    def result(self) -> LoadResult:
        return LoadResult(self.jobs, tuple(self.diagnostics), frozenset(self.failed))


def load_steps(
    dirs: Iterable[str | os.PathLike[str]], trust: Trust | None = None
) -> Generator[None, None, LoadResult]:
    """:func:`load_directories` one file at a time: yields after each file and returns the
    result, so a caller on an event loop can let other work run between files."""
    collector = Collector()
    for directory in dirs:
        files, problems = config_files(directory, JOB_SUFFIX)
        collector.diagnostics.extend(problems)
        for path in files:
            collector.add(path, (yield from parse_job_file_steps(path, trust)))
            yield
    return collector.result()


def load_directories(
    dirs: Iterable[str | os.PathLike[str]], trust: Trust | None = None
) -> LoadResult:
    """Load every ``*.conf`` job file of ``dirs``; the first directory wins for a name.

    With ``trust``, each opened file is judged before its text is parsed (a refused file
    fails like a file with errors: it claims its name and is listed in ``failed``)."""
    return run_steps(load_steps(dirs, trust))
