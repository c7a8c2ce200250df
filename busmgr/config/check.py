"""What ``busmgr check`` runs: the daemon's own parsers over files and directories, then the
checks across all the jobs found.

It sits above both loaders (job files and D-Bus ``.service`` files), so neither needs the other.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from busmgr.config.checks import cross_check
from busmgr.config.dbus_service import SERVICE_SUFFIX, parse_service_path, skip_reason
from busmgr.config.diagnostics import Diagnostic, Severity
from busmgr.config.files import add_job, config_files
from busmgr.config.loader import Collector
from busmgr.config.parser import JOB_SUFFIX, ParseResult, job_name_for, parse_job_file

__all__ = ["check_paths"]


def _parse_any(path: Path) -> ParseResult:
    if path.name.endswith(SERVICE_SUFFIX):
        # A file of a ``system-services`` directory is a system service (User= required).
        result = parse_service_path(path, system=path.parent.name == "system-services")
        reason = skip_reason(result.job) if result.job is not None else None
        if reason is not None:
            note = Diagnostic(os.fspath(path), 0, f"skipped: {reason}", Severity.WARNING)
            return ParseResult(None, (*result.diagnostics, note))
        return result
    return parse_job_file(path)


def check_paths(paths: Iterable[str | os.PathLike[str]]) -> list[Diagnostic]:
    """Check job files and directories as ``busmgr check`` does; every diagnostic, in order.

    A directory contributes its ``*.conf`` files; a file is parsed whatever its name (a
    ``.service`` file as a D-Bus activation file). Then :func:`cross_check` runs over all the
    jobs that parsed.
    """
    collector = Collector()
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
