"""What ``busmgr check`` runs: the daemon's own parsers over files and directories, then the
checks across all the jobs found.

It sits above the loaders (job files, D-Bus ``.service`` files, XDG autostart entries), so none
needs another. Autostart entries are judged for the desktop of ``$XDG_CURRENT_DESKTOP``; an
entry skipped there (``Hidden``, ``OnlyShowIn``...) is no problem and adds nothing, but its
``Exec`` is checked on every desktop.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from busmgr.config.checks import cross_check
from busmgr.config.dbus_service import SERVICE_SUFFIX, parse_service_path, skip_reason
from busmgr.config.desktop import AUTOSTART_SUFFIX, AutostartContext, parse_autostart_path
from busmgr.config.diagnostics import Diagnostic, Severity
from busmgr.config.files import add_job, config_files
from busmgr.config.loader import Collector
from busmgr.config.parser import JOB_SUFFIX, ParseResult, job_name_for, parse_job_file

__all__ = ["check_paths"]


def _parse_any(path: Path, context: AutostartContext) -> ParseResult:
    if path.name.endswith(SERVICE_SUFFIX):
        # A file of a ``system-services`` directory is a system service (User= required).
        result = parse_service_path(path, system=path.parent.name == "system-services")
        reason = skip_reason(result.job) if result.job is not None else None
        if reason is not None:
            note = Diagnostic(os.fspath(path), 0, f"skipped: {reason}", Severity.WARNING)
            return ParseResult(None, (*result.diagnostics, note))
        return result
    if path.name.endswith(AUTOSTART_SUFFIX):
        entry = parse_autostart_path(path, context)
        return ParseResult(entry.job, entry.diagnostics)
    return parse_job_file(path)


def check_paths(
    paths: Iterable[str | os.PathLike[str]], environ: Mapping[str, str] | None = None
) -> list[Diagnostic]:
    """Check job files and directories as ``busmgr check`` does; every diagnostic, in order.

    A directory contributes its ``*.conf`` and ``*.desktop`` files; a file is parsed whatever
    its name (a ``.service`` file as a D-Bus activation file, a ``.desktop`` file as an
    autostart entry judged in ``environ``, default ``os.environ``). Then :func:`cross_check`
    runs over all the jobs that parsed.
    """
    context = AutostartContext.from_environ(os.environ if environ is None else environ)
    collector = Collector()
    for given in paths:
        path = Path(given)
        if path.is_dir():
            files, problems = config_files(path, JOB_SUFFIX)
            entries, more = config_files(path, AUTOSTART_SUFFIX)
            collector.diagnostics.extend(problems + more)
            for file in files:
                collector.add(file, parse_job_file(file))
            for entry in entries:
                _add_named(collector, entry, _parse_any(entry, context))
        elif path.exists():
            _add_named(collector, path, _parse_any(path, context))
        else:
            message = "no such file or directory"
            collector.diagnostics.append(Diagnostic(os.fspath(path), 0, message))
    return [*collector.diagnostics, *cross_check(collector.jobs.values())]


def _add_named(collector: Collector, path: Path, result: ParseResult) -> None:
    """Add the job of a file whose job may be named otherwise than the file (an imported
    ``.service`` file is named after its bus name, an autostart entry ``autostart-ID``)."""
    if result.job is not None and result.job.name != job_name_for(path):
        collector.diagnostics.extend(result.diagnostics)
        collector.diagnostics.extend(add_job(collector.jobs, result.job))
    else:
        collector.add(path, result)
