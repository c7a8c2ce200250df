"""Loading job directories: ``services.d/*.conf`` -> jobs by name, plus diagnostics.

Model: :func:`load_directories` reads the ``*.conf`` files of each directory (sorted by name,
not recursing, skipping hidden files) with :func:`parse_job_file`. A directory that does not
exist is simply empty (the default directories often do not); one that cannot be read is an
error. A bad file only adds its diagnostics and never stops the others from loading. When two
directories define the same job name, the first directory wins and the later file gets a
warning. :func:`check_paths` is what ``busmgr check`` runs: the same parsing over files or
directories, then the checks across all jobs found (:func:`cross_check`).

Invariants: reading files is the only I/O; nothing here starts processes or touches the bus.
The diagnostics of one file stay together and in line order.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from busmgr.config.checks import cross_check
from busmgr.config.diagnostics import Diagnostic, Severity
from busmgr.config.parser import JOB_SUFFIX, ParseResult, parse_job_file
from busmgr.jobclass import JobClass


@dataclass(frozen=True, slots=True)
class LoadResult:
    """The jobs loaded, by name, and every diagnostic met on the way."""

    jobs: dict[str, JobClass]
    diagnostics: tuple[Diagnostic, ...] = ()

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


def _load_files(files: Iterable[Path], jobs: dict[str, JobClass]) -> list[Diagnostic]:
    diagnostics: list[Diagnostic] = []
    for path in files:
        result = parse_job_file(path)
        diagnostics.extend(result.diagnostics)
        if result.job is not None:
            diagnostics.extend(add_job(jobs, result.job))
    return diagnostics


def load_directories(dirs: Iterable[str | os.PathLike[str]]) -> LoadResult:
    """Load every ``*.conf`` job file of ``dirs``; the first directory wins for a name."""
    jobs: dict[str, JobClass] = {}
    diagnostics: list[Diagnostic] = []
    for directory in dirs:
        files, problems = config_files(directory, JOB_SUFFIX)
        diagnostics.extend(problems)
        diagnostics.extend(_load_files(files, jobs))
    return LoadResult(jobs, tuple(diagnostics))


def _parse_any(path: Path) -> ParseResult:
    # Imported here: the importer builds on this module (LoadResult, config_files, add_job).
    from busmgr.config.dbus_service import SERVICE_SUFFIX, parse_service_path

    if path.name.endswith(SERVICE_SUFFIX):
        return parse_service_path(path)
    return parse_job_file(path)


def check_paths(paths: Iterable[str | os.PathLike[str]]) -> list[Diagnostic]:
    """Check job files and directories as ``busmgr check`` does; every diagnostic, in order.

    A directory contributes its ``*.conf`` files; a file is parsed whatever its name (a
    ``.service`` file as a D-Bus activation file). Then :func:`cross_check` runs over all the
    jobs that parsed.
    """
    jobs: dict[str, JobClass] = {}
    diagnostics: list[Diagnostic] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            files, problems = config_files(path, JOB_SUFFIX)
            diagnostics.extend(problems)
            diagnostics.extend(_load_files(files, jobs))
        elif path.exists():
            result = _parse_any(path)
            diagnostics.extend(result.diagnostics)
            if result.job is not None:
                diagnostics.extend(add_job(jobs, result.job))
        else:
            diagnostics.append(Diagnostic(os.fspath(path), 0, "no such file or directory"))
    diagnostics.extend(cross_check(jobs.values()))
    return diagnostics
