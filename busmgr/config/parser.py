"""The job-file parser: text in, a frozen :class:`JobClass` or diagnostics out.

Model: :func:`parse_job` lexes the text into logical lines (:mod:`busmgr.config.lexer`) and
hands each to its handler in the stanza table (:mod:`busmgr.config.stanzas`). It collects
every error and warning of the file instead of stopping at the first, so ``busmgr check``
shows them all; the job is produced only when there is no ERROR among them.

Invariants: :func:`parse_job` is pure apart from the user and group look-ups of ``setuid`` /
``setgid`` (text in, result out; no file, no process, no bus). :func:`parse_job_file` only adds
reading the file; both the daemon and ``busmgr check`` go through it, so they agree.
Diagnostics come out in line order.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from busmgr.config.diagnostics import Diagnostic, has_errors, sort_key
from busmgr.config.lexer import lex
from busmgr.config.stanzas import Draft, StanzaError, apply_stanza
from busmgr.jobclass import JobClass, Origin

JOB_SUFFIX = ".conf"


@dataclass(frozen=True, slots=True)
class ParseResult:
    """What parsing one file gave: the job (None if any ERROR) and every diagnostic."""

    job: JobClass | None
    diagnostics: tuple[Diagnostic, ...] = ()

    @property
    def errors(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.diagnostics if d.is_error)


def job_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a job (empty, a ``/``, a NUL, a leading dot), or None."""
    if not name:
        return "a job name cannot be empty"
    if "/" in name or "\0" in name:
        return f'bad job name "{name}": it cannot contain "/"'
    if name.startswith("."):
        return f'bad job name "{name}": it cannot start with "."'
    return None


def job_name_for(path: str | os.PathLike[str]) -> str:
    """The job a file defines: its file name without ``.conf``."""
    return Path(path).name.removesuffix(JOB_SUFFIX)


def parse_job(text: str, *, name: str, path: str) -> ParseResult:
    """Parse the text of a job file named ``name``; ``path`` labels diagnostics and ``source``.

    Never raises for bad input: every problem is a diagnostic.
    """
    problem = job_name_problem(name)
    if problem is not None:
        return ParseResult(None, (Diagnostic(path, 0, problem),))
    lexed = lex(text, path)
    draft = Draft(path, JobClass(name=name, source=path, origin=Origin.FILE))
    draft.diagnostics.extend(lexed.diagnostics)
    for line in lexed.lines:
        try:
            apply_stanza(draft, line)
        except StanzaError as exc:
            draft.diagnostics.append(Diagnostic(path, line.line, exc.message))
    if draft.job.units and not draft.job.dbus_name:
        line = draft.seen.get("unit", 0)
        draft.warn(line, '"unit" without "dbus NAME": no activation request can start this job')
    diagnostics = tuple(sorted(draft.diagnostics, key=sort_key))
    return ParseResult(None if has_errors(diagnostics) else draft.job, diagnostics)


#: A judge of a file before its text is used: given its path and the ``fstat`` of the opened
#: file, the message refusing it (``refused in system mode: ...``), or None. System mode
#: refuses files root does not own (see :mod:`busmgr.catalog`); checking the opened file
#: leaves no window for a swap.
Trust = Callable[[str, os.stat_result], str | None]


def read_text(
    path: str | os.PathLike[str], trust: Trust | None = None
) -> tuple[str | None, Diagnostic | None]:
    """A file's text as UTF-8, or a diagnostic saying why it could not be read (or, with
    ``trust``, why it was refused)."""
    label = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            if trust is not None:
                problem = trust(label, os.fstat(fh.fileno()))
                if problem is not None:
                    return None, Diagnostic(label, 0, problem)
            data = fh.read()
    except OSError as exc:
        return None, Diagnostic(label, 0, f"cannot read: {exc.strerror or exc}")
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return None, Diagnostic(label, line, "not valid UTF-8 text")


def parse_job_file(path: str | os.PathLike[str], trust: Trust | None = None) -> ParseResult:
    """Read and parse one job file; the job is named after the file (``foo.conf`` -> ``foo``)."""
    text, problem = read_text(path, trust)
    if text is None:
        return ParseResult(None, (problem,) if problem else ())
    return parse_job(text, name=job_name_for(path), path=os.fspath(path))
