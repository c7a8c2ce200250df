"""The importer of D-Bus activation files: ``NAME.service`` -> a :class:`JobClass`.

Model: a D-Bus ``.service`` file is a desktop-entry style key file (read by
:mod:`busmgr.config.keyfile`, the reader the autostart importer shares) whose
``[D-BUS Service]`` group says which program provides a bus name::

    [D-BUS Service]
    Name=ca.desrt.dconf
    Exec=/usr/libexec/dconf-service
    User=...            (optional; system services)
    SystemdService=...  (optional)

Each file becomes a job named after its bus name, of origin :attr:`Origin.DBUS_SERVICE`,
providing that name (so it is activated on request and ready when the name is owned), with
``Exec`` as its main process (an ``exec`` line: run directly, or by ``/bin/sh`` if it has shell
metacharacters), ``User`` as ``setuid`` (stored as given: whether it can be applied is decided
at run time) and ``SystemdService`` kept for reference. Other keys and groups are ignored, as
dbus-daemon does; a missing or bad ``Name`` or ``Exec`` is an error.

Invariants: parsing is pure (text in, result out). Among directories, the first one that has a
file for a bus name wins (``$XDG_DATA_HOME`` before ``$XDG_DATA_DIRS``), like dbus-daemon's
search order; later files for that name only add a warning.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterable, Mapping
from pathlib import Path

from busmgr.config.diagnostics import Diagnostic, has_errors
from busmgr.config.files import LoadResult, add_job, config_files, run_steps
from busmgr.config.keyfile import read_key_file
from busmgr.config.parser import ParseResult, Trust, read_text
from busmgr.config.stanzas import bus_name_problem
from busmgr.jobclass import (
    DEFAULT_CONSOLE,
    ExecContext,
    JobClass,
    Origin,
    ProcessKind,
    ProcessSpec,
    activation_match,
)

SERVICE_GROUP = "D-BUS Service"
SERVICE_SUFFIX = ".service"


def parse_service_file(text: str, path: str) -> ParseResult:
    """Parse one D-Bus ``.service`` file into a job named after its bus name."""
    keyfile = read_key_file(text, path)
    diagnostics = list(keyfile.diagnostics)
    group = keyfile.group(SERVICE_GROUP)
    if group is None:
        diagnostics.append(Diagnostic(path, 0, f"no [{SERVICE_GROUP}] group"))
        return ParseResult(None, tuple(diagnostics))
    # Values are taken as written: dbus-daemon applies no string escapes to them.
    keys = {entry.key: (entry.value, entry.line) for entry in group if entry.locale is None}
    name, name_line = keys.get("Name", ("", 0))
    command, exec_line = keys.get("Exec", ("", 0))
    if "Name" not in keys:
        diagnostics.append(Diagnostic(path, 0, f"no Name= in [{SERVICE_GROUP}]"))
    elif (problem := bus_name_problem(name)) is not None:
        diagnostics.append(Diagnostic(path, name_line, f'bad bus name "{name}": {problem}'))
    if "Exec" not in keys:
        diagnostics.append(Diagnostic(path, 0, f"no Exec= in [{SERVICE_GROUP}]"))
    elif not command:
        diagnostics.append(Diagnostic(path, exec_line, "Exec= is empty"))
    if has_errors(diagnostics):
        return ParseResult(None, tuple(diagnostics))
    user = keys.get("User", ("", 0))[0] or None
    job = JobClass(
        name=name,
        source=path,
        origin=Origin.DBUS_SERVICE,
        dbus_name=name,
        processes={ProcessKind.MAIN: ProcessSpec(command, script=False, line=exec_line)},
        context=ExecContext(setuid=user, console=DEFAULT_CONSOLE),
        systemd_service=keys.get("SystemdService", ("", 0))[0] or None,
        activated_by=(activation_match(name),),
    )
    return ParseResult(job, tuple(diagnostics))


def parse_service_path(path: str | os.PathLike[str], trust: Trust | None = None) -> ParseResult:
    """Read and parse one ``.service`` file (``trust`` as for job files)."""
    text, problem = read_text(path, trust)
    if text is None:
        return ParseResult(None, (problem,) if problem else ())
    return parse_service_file(text, os.fspath(path))


def import_steps(
    dirs: Iterable[str | os.PathLike[str]], trust: Trust | None = None
) -> Generator[None, None, LoadResult]:
    """:func:`import_service_dirs` one file at a time (see ``load_steps``)."""
    jobs: dict[str, JobClass] = {}
    diagnostics: list[Diagnostic] = []
    for directory in dirs:
        files, problems = config_files(directory, SERVICE_SUFFIX)
        diagnostics.extend(problems)
        for path in files:
            result = parse_service_path(path, trust)
            diagnostics.extend(result.diagnostics)
            if result.job is not None:
                diagnostics.extend(add_job(jobs, result.job))
            yield
    return LoadResult(jobs, tuple(diagnostics))


def import_service_dirs(
    dirs: Iterable[str | os.PathLike[str]], trust: Trust | None = None
) -> LoadResult:
    """Every ``*.service`` file of ``dirs`` as jobs; the first directory wins for a name."""
    return run_steps(import_steps(dirs, trust))


def xdg_service_dirs(environ: Mapping[str, str]) -> list[Path]:
    """Where session services live, in search order (XDG Base Directory specification).

    ``$XDG_DATA_HOME/dbus-1/services`` (default ``$HOME/.local/share``), then each directory
    of ``$XDG_DATA_DIRS`` (default ``/usr/local/share:/usr/share``) + ``/dbus-1/services``.
    Relative paths are ignored, as the specification says; duplicates are listed once.
    """
    bases: list[str] = []
    data_home = environ.get("XDG_DATA_HOME", "")
    if not data_home and environ.get("HOME"):
        data_home = os.path.join(environ["HOME"], ".local", "share")
    bases.append(data_home)
    bases.extend((environ.get("XDG_DATA_DIRS", "") or "/usr/local/share:/usr/share").split(":"))
    dirs = [Path(base) / "dbus-1" / "services" for base in bases if os.path.isabs(base)]
    return list(dict.fromkeys(dirs))
