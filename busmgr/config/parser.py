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
import re
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path

from busmgr.config.diagnostics import Diagnostic, has_errors, sort_key
from busmgr.config.files import run_steps
from busmgr.config.lexer import iter_lex
from busmgr.config.stanzas import Draft, StanzaError, apply_stanza
from busmgr.jobclass import DEFAULT_CONSOLE, ExecContext, JobClass, Origin

JOB_SUFFIX = ".conf"
#: The largest configuration file busmgr reads (real job files are a few KiB).
MAX_FILE_SIZE = 1 << 20
#: The longest diagnostic message (quoted values are cut short).
MAX_MESSAGE = 240
#: Stanzas parsed between two yields of :func:`parse_job_steps`.
STEP_LINES = 500


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


_LONG_QUOTED = re.compile(r'"([^"]{80})[^"]+"')


def _shorten(message: str) -> str:
    """A message that quotes a huge value (a 5,000-digit number) stays one readable line: a
    long quoted value is cut short, then the message if it still is too long."""
    message = _LONG_QUOTED.sub(lambda m: f'"{m.group(1)}..."', message)
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 3] + "..."


def parse_job_steps(text: str, *, name: str, path: str) -> Generator[None, None, ParseResult]:
    """:func:`parse_job`, yielding every :data:`STEP_LINES` stanzas so that a caller on an
    event loop can let other work run in between (a large file never blocks it for long)."""
    problem = job_name_problem(name)
    if problem is not None:
        return ParseResult(None, (Diagnostic(path, 0, problem),))
    if len(text) > MAX_FILE_SIZE:
        message = f"larger than {MAX_FILE_SIZE // 1024} KiB: not a job file"
        return ParseResult(None, (Diagnostic(path, 0, message),))
    job = JobClass(
        name=name,
        source=path,
        origin=Origin.FILE,
        context=ExecContext(console=DEFAULT_CONSOLE),
    )
    draft = Draft(path, job)
    for count, item in enumerate(iter_lex(text, path), start=1):
        if isinstance(item, Diagnostic):
            draft.diagnostics.append(item)
        else:
            try:
                apply_stanza(draft, item)
            except StanzaError as exc:
                draft.diagnostics.append(Diagnostic(path, item.line, _shorten(exc.message)))
        if count % STEP_LINES == 0:
            yield
    if draft.units and not (draft.fields.get("dbus_name") or job.dbus_name):
        line = draft.seen.get("unit", 0)
        draft.warn(line, '"unit" without "dbus NAME": no activation request can start this job')
    diagnostics = tuple(sorted(draft.diagnostics, key=sort_key))
    return ParseResult(None if has_errors(diagnostics) else draft.build(), diagnostics)


def parse_job(text: str, *, name: str, path: str) -> ParseResult:
    """Parse the text of a job file named ``name``; ``path`` labels diagnostics and ``source``.

    Never raises for bad input: every problem is a diagnostic. Linear in the size of the text,
    which may be at most :data:`MAX_FILE_SIZE` characters.
    """
    return run_steps(parse_job_steps(text, name=name, path=path))


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
            data = fh.read(MAX_FILE_SIZE + 1)
    except OSError as exc:
        return None, Diagnostic(label, 0, f"cannot read: {exc.strerror or exc}")
    if len(data) > MAX_FILE_SIZE:
        return None, Diagnostic(label, 0, f"larger than {MAX_FILE_SIZE // 1024} KiB: not read")
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return None, Diagnostic(label, line, "not valid UTF-8 text")


def parse_job_file_steps(
    path: str | os.PathLike[str], trust: Trust | None = None
) -> Generator[None, None, ParseResult]:
    """:func:`parse_job_file`, a slice at a time (see :func:`parse_job_steps`)."""
    text, problem = read_text(path, trust)
    if text is None:
        return ParseResult(None, (problem,) if problem else ())
    return (yield from parse_job_steps(text, name=job_name_for(path), path=os.fspath(path)))


def parse_job_file(path: str | os.PathLike[str], trust: Trust | None = None) -> ParseResult:
    """Read and parse one job file; the job is named after the file (``foo.conf`` -> ``foo``)."""
    return run_steps(parse_job_file_steps(path, trust))
