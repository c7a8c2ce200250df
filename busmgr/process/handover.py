"""Descriptors handed from one image of the manager to the next across ``exec`` (``Reexec``).

The manager holds descriptors its jobs depend on: the read ends of their log pipes (a job
writing to a pipe nobody reads any more is killed by SIGPIPE) and their listening sockets (a
new socket at the same address would leave the running job listening on one nobody can reach).
Before the exec, :func:`pass_on` makes them survive it; the new image checks each recorded
number with :func:`same_file` before it uses it, so a number that means something else now is
never taken for what it was.

Invariant: only descriptors recorded by the image that execs are ever taken back: a manager
that crashed hands nothing over (its descriptors died with it).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

__all__ = ["identity", "pass_on", "same_file"]


def identity(fd: int) -> tuple[int, int]:
    """``(st_dev, st_ino)`` of what ``fd`` is open on (a pipe, a socket, a file)."""
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def same_file(fd: int, recorded: tuple[int, int]) -> bool:
    """Whether ``fd`` is open, and on what it was recorded open on (:func:`identity`)."""
    try:
        return identity(fd) == recorded
    except OSError:
        return False


def pass_on(fds: Iterable[int]) -> None:
    """Clear close-on-exec on ``fds``: they survive the manager's exec."""
    for fd in fds:
        os.set_inheritable(fd, True)
