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
metacharacters) and ``SystemdService`` as the unit it stands for (an activation request that
names the unit reaches the job). Other keys and groups are ignored, as dbus-daemon does; a
missing or bad ``Name`` or ``Exec`` is an error.

Session and system services differ as they do for dbus-daemon: a system service
(``system=True``, from a ``dbus-1/system-services`` directory) must say which ``User`` it runs
as, and runs as that user with that user's groups (``setuid``; a user that does not exist yet
is a warning, and the start fails while it is missing); a session service runs as the session's
user, and its ``User=`` is ignored.

A valid file whose ``Exec`` is ``/bin/false`` (systemd ships such files for its own services:
only systemd can start them) makes no job: the importer lists it as :class:`Skipped`, with the
reason, so a request for it is answered with that reason instead of a job that always fails.

Invariants: parsing is pure (text in, result out). Among directories, the first one that has a
file for a bus name wins (``$XDG_DATA_HOME`` before ``$XDG_DATA_DIRS``; ``/usr/local/share``
before ``/usr/share`` before ``/lib``), like dbus-daemon's search order; later files for that
name only add a warning.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Generator, Iterable, Mapping
from pathlib import Path

from busmgr.config.diagnostics import Diagnostic, Severity, has_errors
from busmgr.config.files import LoadResult, Skipped, add_job, config_files, run_steps
from busmgr.config.keyfile import read_key_file
from busmgr.config.parser import ParseResult, Trust, read_text
from busmgr.config.stanzas import bus_name_problem, unit_name_problem
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

#: dbus-daemon's standard system service directories (``<standard_system_servicedirs/>``), in
#: its search order.
SYSTEM_SERVICE_DIRS = (
    Path("/usr/local/share/dbus-1/system-services"),
    Path("/usr/share/dbus-1/system-services"),
    Path("/lib/dbus-1/system-services"),
)

#: Programs that only say "not here": a service file running one of them stands for a service
#: another manager (systemd) starts.
_PLACEHOLDERS = frozenset({"/bin/false", "/usr/bin/false", "false"})


def parse_service_file(text: str, path: str, *, system: bool = False) -> ParseResult:
    """Parse one D-Bus ``.service`` file into a job named after its bus name; ``system`` for a
    system service (``User=`` required and applied; see the module docstring)."""
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
    user, user_line = keys.get("User", ("", 0))
    if system and not user:
        diagnostics.append(
            Diagnostic(path, user_line, "a system service needs User= (the user it runs as)")
        )
    unit, unit_line = keys.get("SystemdService", ("", 0))
    if unit and (problem := unit_name_problem(unit)) is not None:
        diagnostics.append(Diagnostic(path, unit_line, f'bad SystemdService "{unit}": {problem}'))
    if has_errors(diagnostics):
        return ParseResult(None, tuple(diagnostics))
    if system and not _user_exists(user):
        diagnostics.append(
            Diagnostic(
                path,
                user_line,
                f'no such user "{user}" (yet): the service fails to start until it exists',
                Severity.WARNING,
            )
        )
    job = JobClass(
        name=name,
        source=path,
        origin=Origin.DBUS_SERVICE,
        dbus_name=name,
        processes={ProcessKind.MAIN: ProcessSpec(command, script=False, line=exec_line)},
        context=ExecContext(setuid=user if system else None, console=DEFAULT_CONSOLE),
        systemd_service=unit or None,
        units=(unit,) if unit else (),
        activated_by=(activation_match(name),),
    )
    return ParseResult(job, tuple(diagnostics))


def _user_exists(user: str) -> bool:
    """Whether ``user`` (a name or a uid) exists; a nonsense value (a NUL, a uid of 5,000
    digits) does not."""
    try:
        if user.isascii() and user.isdigit():
            pwd.getpwuid(int(user))
        else:
            pwd.getpwnam(user)
    except (KeyError, OverflowError, ValueError):
        return False
    return True


def skip_reason(job: JobClass) -> str | None:
    """Why an imported service makes no job (its ``Exec`` only fails: a service only systemd
    starts), or None."""
    main = job.main
    if main is None or main.needs_shell:
        return None
    argv = main.argv()
    if argv and argv[0] in _PLACEHOLDERS:
        unit = f" (SystemdService={job.systemd_service})" if job.systemd_service else ""
        return (
            f"{job.dbus_name}: Exec={main.command}: a placeholder for a service only systemd "
            f"starts{unit}"
        )
    return None


def parse_service_path(
    path: str | os.PathLike[str], trust: Trust | None = None, *, system: bool = False
) -> ParseResult:
    """Read and parse one ``.service`` file (``trust`` as for job files)."""
    text, problem = read_text(path, trust)
    if text is None:
        return ParseResult(None, (problem,) if problem else ())
    return parse_service_file(text, os.fspath(path), system=system)


def import_steps(
    dirs: Iterable[str | os.PathLike[str]], trust: Trust | None = None, *, system: bool = False
) -> Generator[None, None, LoadResult]:
    """:func:`import_service_dirs` one file at a time (see ``load_steps``)."""
    jobs: dict[str, JobClass] = {}
    skipped: dict[str, Skipped] = {}
    diagnostics: list[Diagnostic] = []
    for directory in dirs:
        files, problems = config_files(directory, SERVICE_SUFFIX)
        diagnostics.extend(problems)
        for path in files:
            result = parse_service_path(path, trust, system=system)
            diagnostics.extend(result.diagnostics)
            job = result.job
            if job is not None and job.dbus_name in skipped:
                first = skipped[job.dbus_name].source
                message = f'"{job.dbus_name}" is already named by {first}; this file is ignored'
                diagnostics.append(Diagnostic(job.source, 0, message, Severity.WARNING))
            elif job is not None and (reason := skip_reason(job)) is not None:
                if job.name not in jobs:  # a file of an earlier directory wins
                    skipped[job.name] = Skipped(
                        job.name, job.source, reason, job.dbus_name or job.name, job.units
                    )
            elif job is not None:
                diagnostics.extend(add_job(jobs, job))
            yield
    return LoadResult(jobs, tuple(diagnostics), skipped=tuple(skipped.values()))


def import_service_dirs(
    dirs: Iterable[str | os.PathLike[str]], trust: Trust | None = None, *, system: bool = False
) -> LoadResult:
    """Every ``*.service`` file of ``dirs`` as jobs (or skipped, with the reason); the first
    directory wins for a name."""
    return run_steps(import_steps(dirs, trust, system=system))


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
