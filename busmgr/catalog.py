"""The catalog: every job class the manager should know, loaded from its directories.

:func:`load_catalog` reads the job directories (and, in session mode, imports the installed
D-Bus ``.service`` files) and returns a :class:`Catalog` value; it logs nothing and changes
nothing, so the caller decides what to report and what to install.

Rules (SPEC §1, §2):

* a job file wins over an imported ``.service`` file for the same job name or bus name; an
  imported file for a name the manager owns itself is skipped;
* system mode refuses a file (job file or import) that root does not own or that others may
  write, and a directory likewise: root would run what it says. The opened file is judged
  (``fstat``), so it cannot be swapped between the check and the read;
* a file that fails to parse keeps its job's previous definition (``previous``), if there was
  one, so an edit with a typo never stops or forgets a job.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from busmgr.config import import_service_dirs, load_directories, xdg_service_dirs
from busmgr.jobclass import JobClass
from busmgr.options import Mode

__all__ = ["Catalog", "load_catalog", "unsafe_file"]


@dataclass(frozen=True)
class Catalog:
    """The result of one load.

    ``classes`` are the jobs to install, by name (kept previous definitions included);
    ``failed`` the names whose file was broken or refused; ``kept`` those of them that keep
    their previous definition; ``diagnostics`` every problem met, as ``FILE:LINE: message``.
    """

    classes: dict[str, JobClass]
    failed: frozenset[str] = frozenset()
    kept: frozenset[str] = frozenset()
    diagnostics: tuple[str, ...] = ()


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


def load_catalog(
    services_dirs: Iterable[Path],
    *,
    mode: Mode,
    import_services: bool,
    environ: Mapping[str, str],
    reserved_bus_names: Collection[str] = (),
    previous: Mapping[str, JobClass] | None = None,
) -> Catalog:
    """Load every job class; see the module docstring for the rules."""
    trust = unsafe_file if mode is Mode.SYSTEM else None
    result = load_directories(services_dirs, trust)
    classes = dict(result.jobs)
    failed = set(result.failed)
    diags = [str(d) for d in result.diagnostics]
    if import_services and mode is Mode.SESSION:
        imported = import_service_dirs(xdg_service_dirs(environ), trust)
        diags += [str(d) for d in imported.diagnostics]
        provided = {c.dbus_name for c in classes.values() if c.dbus_name}
        for cls in imported.jobs.values():
            if cls.dbus_name in provided or cls.dbus_name in reserved_bus_names:
                continue
            if cls.name in classes or cls.name in failed:
                continue
            classes[cls.name] = cls
    kept = set()
    for name in failed:
        if previous and name not in classes and name in previous:
            classes[name] = previous[name]
            kept.add(name)
            diags.append(f"{name}: keeping its previous definition")
    return Catalog(classes, frozenset(failed), frozenset(kept), tuple(diags))
