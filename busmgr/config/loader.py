"""Loading job directories: ``services.d/*.conf`` -> jobs by name, plus diagnostics.

Model: :func:`load_directories` reads the ``*.conf`` files of each directory (sorted by name,
not recursing, skipping hidden files) with :func:`parse_job_file`. A directory that does not
exist is simply empty (the default directories often do not); one that cannot be read is an
error. A bad file only adds its diagnostics and never stops the others from loading. When two
directories define the same job name, the first directory wins and the later file gets a
warning; a file that failed to parse still claims its name (an override with a typo does not
silently fall back to the file it overrides), and the name is listed in ``failed`` so a
reload can keep the job's previous class. :func:`check_paths` is what ``busmgr check`` runs:
the same parsing over files or directories, then the checks across all jobs found
(:func:`cross_check`).

Invariants: reading files is the only I/O; nothing here starts processes or touches the bus.
The diagnostics of one file stay together and in line order.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from busmgr.config.checks import cross_check
from busmgr.config.diagnostics import Diagnostic, Severity
from busmgr.config.parser import JOB_SUFFIX, ParseResult, job_name_for, parse_job_file
from busmgr.jobclass import JobClass


@dataclass(frozen=True, slots=True)
class LoadResult:
    """The jobs loaded, by name, and every diagnostic met on the way."""

    jobs: dict[str, JobClass]
    diagnostics: tuple[Diagnostic, ...] = ()
    failed: frozenset[str] = frozenset()  # names whose (winning) file has errors

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


@dataclass
class _Collector:
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


def load_directories(dirs: Iterable[str | os.PathLike[str]]) -> LoadResult:
    """Load every ``*.conf`` job file of ``dirs``; the first directory wins for a name."""
    collector = _Collector()
    for directory in dirs:
        files, problems = config_files(directory, JOB_SUFFIX)
        collector.diagnostics.extend(problems)
        for path in files:
            collector.add(path, parse_job_file(path))
    return collector.result()


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
    collector = _Collector()
    for given in paths:
        path = Path(given)
        if path.is_dir():
            files, problems = config_files(path, JOB_SUFFIX)
            collector.diagnostics.extend(problems)
            for file in files:
                collector.add(file, parse_job_file(file))
        elif path.exists():
            result = _parse_any(path)
            if result.job is not None and result.job.name != job_name_for(path):
                # An imported .service file is named after its bus name, not its file.
                collector.diagnostics.extend(result.diagnostics)
                collector.diagnostics.extend(add_job(collector.jobs, result.job))
            else:
                collector.add(path, result)
        else:
            message = "no such file or directory"
            collector.diagnostics.append(Diagnostic(os.fspath(path), 0, message))
    return [*collector.diagnostics, *cross_check(collector.jobs.values())]
