"""Diagnostics: what the parser says about a file, as ``PATH:LINE: message``.

Model: a :class:`Diagnostic` is one finding at one place. An ``ERROR`` means the file (or the
set of files, for checks across jobs) must not be used as written; a ``WARNING`` means it
loads but something is ignored or suspicious. Line 0 stands for the file as a whole (it could
not be read, its name is bad...), shown as ``PATH: message``.

Invariant: diagnostics are values (frozen, hashable), so a parse result can
be compared, sorted and printed without reference to the text it came from.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass


class Severity(enum.Enum):
    """How bad a finding is: an ERROR rejects the job, a WARNING only informs."""

    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One finding: the file, the 1-based line (0: the whole file), the message, the severity."""

    path: str
    line: int
    message: str
    severity: Severity = Severity.ERROR

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line > 0 else self.path
        if self.severity is Severity.WARNING:
            return f"{where}: warning: {self.message}"
        return f"{where}: {self.message}"

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR


def sort_key(diagnostic: Diagnostic) -> tuple[str, int]:
    """Order by place: file, then line (a stable sort keeps the order of findings on a line)."""
    return (diagnostic.path, diagnostic.line)


def has_errors(diagnostics: Iterable[Diagnostic]) -> bool:
    """True if any of ``diagnostics`` is an ERROR."""
    return any(d.is_error for d in diagnostics)
