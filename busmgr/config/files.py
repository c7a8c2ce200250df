"""Listing configuration files and collecting jobs by name: what every loader shares.

:func:`config_files` lists a directory's files of one suffix; :func:`add_job` applies the
"first one wins" rule; :class:`LoadResult` is what a load returns. The job-file loader
(:mod:`busmgr.config.loader`) and the D-Bus ``.service`` importer
(:mod:`busmgr.config.dbus_service`) both build on this module, and neither on the other.

Invariants: reading directory entries is the only I/O.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from busmgr.config.diagnostics import Diagnostic, Severity
from busmgr.jobclass import JobClass

__all__ = ["LoadResult", "Skipped", "add_job", "config_files", "run_steps"]


@dataclass(frozen=True, slots=True)
class Skipped:
    """A file that is valid but deliberately not made a job: the job it would be (``name``),
    the file, and why not. An imported D-Bus ``.service`` file that only systemd can start
    names its ``bus_name`` and the systemd ``units`` it names, so an activation request for
    one of them can be answered with ``reason``; an autostart entry has neither."""

    name: str
    source: str
    reason: str
    bus_name: str = ""
    units: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.source}: skipped: {self.reason}"


@dataclass(frozen=True, slots=True)
class LoadResult:
    """The jobs loaded, by name, and every diagnostic met on the way."""

    jobs: dict[str, JobClass]
    diagnostics: tuple[Diagnostic, ...] = ()
    failed: frozenset[str] = frozenset()  # names whose (winning) file has errors
    skipped: tuple[Skipped, ...] = ()  # valid files that make no job, with the reason

    @property
    def errors(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.diagnostics if d.is_error)


def config_files(
    directory: str | os.PathLike[str], suffix: str
) -> tuple[list[Path], list[Diagnostic]]:
    """The regular files ``*SUFFIX`` of ``directory``, sorted; hidden files are skipped.

    A missing directory has no files; one that is not a directory or cannot be listed is an
    error diagnostic.
    """
    path = Path(directory)
    try:
        entries = sorted(os.scandir(path), key=lambda e: e.name)
    except FileNotFoundError:
        return [], []
    except NotADirectoryError:
        return [], [Diagnostic(os.fspath(path), 0, "not a directory")]
    except OSError as exc:
        return [], [Diagnostic(os.fspath(path), 0, f"cannot list: {exc.strerror or exc}")]
    files: list[Path] = []
    for entry in entries:
        if entry.name.startswith(".") or not entry.name.endswith(suffix):
            continue
        if len(entry.name) == len(suffix):
            continue  # a bare ".conf" names no job
        try:
            regular = entry.is_file()  # follows symlinks
        except OSError:
            regular = False
        if regular:
            files.append(Path(entry.path))
    return files, []


def add_job(jobs: dict[str, JobClass], job: JobClass) -> list[Diagnostic]:
    """Add ``job`` unless its name is taken (the first one wins); a warning if it is."""
    first = jobs.get(job.name)
    if first is None:
        jobs[job.name] = job
        return []
    message = f'job "{job.name}" is already defined by {first.source}; this file is ignored'
    return [Diagnostic(job.source, 0, message, Severity.WARNING)]


T = TypeVar("T")


def run_steps(steps: Generator[None, None, T]) -> T:
    """Run a stepwise load (it yields after each file) to its end, at once."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value
