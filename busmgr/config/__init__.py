"""Job configuration: job files and D-Bus activation files -> frozen :class:`JobClass` values.

The pipeline is lexer (logical lines) -> stanza table (one handler per keyword) -> parser
(one file, all its diagnostics) -> loader (directories; the first wins for a name) and, beside
it, the importers of key files (one reader, :mod:`busmgr.config.keyfile`): D-Bus ``.service``
files and XDG autostart entries (``.desktop``). Checks across jobs (events nothing emits,
cycles of blocking events) are separate, run by ``busmgr check``.

Invariant: this package is the only builder of :class:`busmgr.jobclass.JobClass`; the daemon
and ``busmgr check`` use the same functions, so they always agree about a file.
"""

from busmgr.config.check import check_paths
from busmgr.config.checks import BUILTIN_EVENTS, cross_check
from busmgr.config.dbus_service import (
    SYSTEM_SERVICE_DIRS,
    import_service_dirs,
    import_steps,
    parse_service_file,
    parse_service_path,
    skip_reason,
    xdg_service_dirs,
)
from busmgr.config.desktop import (
    AutostartContext,
    AutostartImport,
    autostart_dirs,
    autostart_steps,
    import_autostart,
)
from busmgr.config.diagnostics import Diagnostic, Severity, has_errors
from busmgr.config.expr import ExprError, parse_event_expr
from busmgr.config.files import LoadResult, Skipped, run_steps
from busmgr.config.loader import load_directories, load_steps
from busmgr.config.parser import ParseResult, job_name_for, parse_job, parse_job_file
from busmgr.config.stanzas import STANZAS, bus_name_problem

__all__ = [
    "BUILTIN_EVENTS",
    "STANZAS",
    "SYSTEM_SERVICE_DIRS",
    "AutostartContext",
    "AutostartImport",
    "Diagnostic",
    "ExprError",
    "LoadResult",
    "ParseResult",
    "Severity",
    "Skipped",
    "autostart_dirs",
    "autostart_steps",
    "bus_name_problem",
    "check_paths",
    "cross_check",
    "has_errors",
    "import_autostart",
    "import_service_dirs",
    "import_steps",
    "job_name_for",
    "load_directories",
    "load_steps",
    "parse_event_expr",
    "parse_job",
    "parse_job_file",
    "parse_service_file",
    "parse_service_path",
    "run_steps",
    "skip_reason",
    "xdg_service_dirs",
]
