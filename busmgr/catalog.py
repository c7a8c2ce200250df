"""The catalog: every job class the manager should know, loaded from its directories.

:func:`load_catalog` reads the job directories (and, unless told not to, imports the installed
D-Bus ``.service`` files: session services in session mode, system services in system mode)
and returns a :class:`Catalog` value; it logs nothing and changes nothing, so the caller
decides what to report and what to install.

Rules (SPEC §1, §2, §4):

* a job file wins over an imported ``.service`` file for the same job name or bus name; an
  imported file for a name the manager owns itself is skipped; an imported file that only
  systemd can start (``Exec=/bin/false``) makes no job and is listed in ``skipped``;
* every systemd unit an imported file names (``SystemdService=``) maps to its bus name, even
  when a job file provides that name instead, so a bus daemon's activation request for the
  unit reaches the job that provides the name; a job's own ``unit`` stanza maps too, and wins;
* a desktop session (``autostart``) also imports the XDG autostart entries
  (:mod:`busmgr.config.desktop`); a job file of the same name (``autostart-ID``) wins, and the
  entries that are not jobs are listed in ``skipped`` with the reason;
* system mode refuses a file (job file or import) that root does not own or that others may
  write, and a directory likewise: root would run what it says. The opened file is judged
  (``fstat``), so it cannot be swapped between the check and the read;
* a file that fails to parse keeps its job's previous definition (``previous``), if there was
  one, so an edit with a typo never stops or forgets a job.
"""

from __future__ import annotations

import asyncio
import os
import stat
import time
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from busmgr.config import (
    SYSTEM_SERVICE_DIRS,
    AutostartContext,
    Skipped,
    autostart_dirs,
    autostart_steps,
    import_steps,
    load_steps,
    run_steps,
    xdg_service_dirs,
)
from busmgr.jobclass import JobClass
from busmgr.options import Mode

__all__ = [
    "Catalog",
    "Sources",
    "catalog_steps",
    "load_catalog",
    "load_catalog_sliced",
    "service_dirs",
    "unsafe_file",
]

#: Seconds of parsing per loop turn in :func:`load_catalog_sliced`.
SLICE = 0.01


@dataclass(frozen=True)
class Catalog:
    """The result of one load.

    ``classes`` are the jobs to install, by name (kept previous definitions included);
    ``failed`` the names whose file was broken or refused; ``kept`` those of them that keep
    their previous definition; ``diagnostics`` every problem met, as ``FILE:LINE: message``;
    ``skipped`` the imported files and autostart entries that make no job, each with its
    reason; ``errors`` the diagnostics that are errors in job files (the user's own
    configuration: a broken installed ``.service`` file is only reported in ``diagnostics``);
    ``units`` every systemd unit name known to stand for a bus name (unit -> bus name).
    """

    classes: dict[str, JobClass]
    failed: frozenset[str] = frozenset()
    kept: frozenset[str] = frozenset()
    diagnostics: tuple[str, ...] = ()
    skipped: tuple[Skipped, ...] = ()
    errors: tuple[str, ...] = ()
    units: Mapping[str, str] = field(default_factory=dict)


def _unsafe_stat(what: str, st: os.stat_result) -> str | None:
    if st.st_uid != 0:
        return f"{what} is owned by uid {st.st_uid}, not root"
    if st.st_mode & 0o022:
        return f"{what} is writable by group or others (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def unsafe_file(path: str, st: os.stat_result) -> str | None:
    """Why a system-mode file must not be trusted (root runs what it says), or None.

    ``st`` is the ``fstat`` of the opened file; its directory must belong to root and be
    writable by no one else too."""
    problem = _unsafe_stat(path, st)
    if problem is None:
        parent = os.path.dirname(path) or "."
        try:
            problem = _unsafe_stat(parent, os.stat(parent))
        except OSError as err:
            problem = f"{parent}: {err.strerror}"
    return None if problem is None else f"refused in system mode: {problem}"


@dataclass(frozen=True)
class Sources:
    """Where a manager's jobs come from: its job directories, and (when asked) the installed
    D-Bus ``.service`` files, except those for ``reserved_bus_names`` (names the manager owns
    itself); and (session mode, a desktop session: ``autostart``) the XDG autostart entries of
    ``environ``'s configuration directories. ``import_dirs`` are where the ``.service`` files
    are; empty means the mode's standard directories (:func:`service_dirs`)."""

    services_dirs: tuple[Path, ...]
    mode: Mode
    import_services: bool
    environ: Mapping[str, str]
    reserved_bus_names: frozenset[str] = frozenset()
    autostart: bool = False
    import_dirs: tuple[Path, ...] = ()


def service_dirs(sources: Sources) -> tuple[Path, ...]:
    """Where the installed D-Bus services of ``sources`` are: ``import_dirs`` if given, else
    dbus-daemon's standard system service directories (system mode) or the XDG data
    directories' ``dbus-1/services`` (session mode)."""
    if sources.import_dirs:
        return sources.import_dirs
    if sources.mode is Mode.SYSTEM:
        return SYSTEM_SERVICE_DIRS
    return tuple(xdg_service_dirs(sources.environ))


def catalog_steps(
    sources: Sources, previous: Mapping[str, JobClass] | None = None
) -> Generator[None, None, Catalog]:
    """The load, one file at a time: yields after each file, returns the :class:`Catalog`.
    ``previous`` are the classes loaded before (a broken file keeps its job's)."""
    trust = unsafe_file if sources.mode is Mode.SYSTEM else None
    result = yield from load_steps(sources.services_dirs, trust)
    classes = dict(result.jobs)
    failed = set(result.failed)
    diags = [str(d) for d in result.diagnostics]
    errors = tuple(str(d) for d in result.diagnostics if d.is_error)
    units: dict[str, str] = {}
    skipped: list[Skipped] = []
    if sources.import_services:
        system = sources.mode is Mode.SYSTEM
        imported = yield from import_steps(service_dirs(sources), trust, system=system)
        diags += [str(d) for d in imported.diagnostics]
        provided = {c.dbus_name for c in classes.values() if c.dbus_name}
        reserved = sources.reserved_bus_names
        for cls in imported.jobs.values():
            units.update(dict.fromkeys(cls.units, cls.dbus_name or ""))
            if cls.dbus_name in provided or cls.dbus_name in reserved:
                continue
            if cls.name in classes or cls.name in failed:
                continue
            classes[cls.name] = cls
        for skip in imported.skipped:
            units.update(dict.fromkeys(skip.units, skip.bus_name))
            if skip.bus_name not in provided and skip.bus_name not in reserved:
                skipped.append(skip)
    if sources.autostart and sources.mode is Mode.SESSION:
        context = AutostartContext.from_environ(sources.environ)
        entries = yield from autostart_steps(autostart_dirs(sources.environ), context, trust)
        diags += [str(d) for d in entries.diagnostics]
        skipped += entries.skipped
        for cls in entries.jobs.values():
            if cls.name in classes or cls.name in failed:
                first = classes[cls.name].source if cls.name in classes else "a job file"
                skipped.append(Skipped(cls.name, cls.source, f"{first} defines {cls.name}"))
                continue
            classes[cls.name] = cls
        failed |= entries.failed - set(classes)
    kept = set()
    for name in sorted(failed):
        if previous and name not in classes and name in previous:
            classes[name] = previous[name]
            kept.add(name)
            diags.append(f"{name}: keeping its previous definition")
    for cls in classes.values():
        if cls.dbus_name:
            units.update(dict.fromkeys(cls.units, cls.dbus_name))
    return Catalog(
        classes,
        frozenset(failed),
        frozenset(kept),
        tuple(diags),
        skipped=tuple(skipped),
        errors=errors,
        units=units,
    )


def load_catalog(sources: Sources, previous: Mapping[str, JobClass] | None = None) -> Catalog:
    """Load every job class at once; see the module docstring for the rules."""
    return run_steps(catalog_steps(sources, previous))


async def load_catalog_sliced(
    sources: Sources, previous: Mapping[str, JobClass] | None = None
) -> Catalog:
    """:func:`load_catalog` on an event loop: at most :data:`SLICE` seconds of parsing per
    loop turn, so bus callers are answered while hundreds of files are read."""
    steps = catalog_steps(sources, previous)
    deadline = time.monotonic() + SLICE
    while True:
        try:
            next(steps)
        except StopIteration as done:
            catalog: Catalog = done.value
            return catalog
        if time.monotonic() > deadline:
            await asyncio.sleep(0)  # let the loop run other callbacks, then go on
            deadline = time.monotonic() + SLICE
