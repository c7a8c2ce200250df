"""The syntax of on-demand triggers: ``socket`` stanzas and the ``file`` and ``timer`` events.

* ``socket unix PATH [MODE]``: PATH absolute (``/run/app.sock``) or ``@NAME`` (the abstract
  namespace, no file); MODE the socket file's permissions in octal (default ``0666``).
  ``socket tcp HOST:PORT``: HOST an IPv4 address, ``[IPv6]``, ``localhost`` (127.0.0.1) or
  ``*`` (every address, IPv6 and IPv4); PORT from 1 to 65535. No name is ever looked up (a
  resolver would block the manager or need a thread).
* ``file FILE=PATH [EVENT=created|modified|deleted|nonempty]`` in ``start on``/``stop on``
  (positionally ``file PATH [EVENT]``): PATH is absolute and plain (no ``//``, ``.``, ``..``
  or trailing ``/``), with glob characters only in its last component, or starts with a
  ``$VAR`` reference expanded against the job's environment when the watch is set up.
  ``nonempty`` is about a directory: FILE names it, without glob characters. Without EVENT
  every kind is watched.
* ``timer EVERY=DURATION`` or ``timer ON="CALENDAR"`` (:mod:`busmgr.config.schedule`): exactly
  one of them, a plain value (no ``$`` reference, no ``!=``).

Invariants: pure (no file system, no clock); every problem is a :class:`TriggerError` whose
message names the bad part; everything a bridge needs at run time is parsed again from the
frozen job class with the same functions, so a job that loaded never fails to parse there.
"""

from __future__ import annotations

import ipaddress
import posixpath
from dataclasses import dataclass

from busmgr.config.schedule import Calendar, ScheduleError, parse_calendar, parse_duration
from busmgr.jobclass import EventExpr, EventMatch, SocketKind, SocketSpec, expr_events

__all__ = [
    "FILE_EVENT",
    "FILE_KINDS",
    "SOCKET_USAGE",
    "TIMER_EVENT",
    "FileTarget",
    "TimerSpec",
    "TriggerError",
    "file_leaf",
    "file_target",
    "parse_socket",
    "timer_leaf",
    "trigger_problem",
]

#: The event of a change to a watched path.
FILE_EVENT = "file"
#: The kinds of change a ``file`` event has as EVENT.
FILE_KINDS = ("created", "modified", "deleted", "nonempty")
#: The event of a timer that is due.
TIMER_EVENT = "timer"
SOCKET_USAGE = "socket unix PATH [MODE] | socket tcp HOST:PORT"
UNIX_PATH_MAX = 107  # bytes of sun_path, less the terminating NUL
_GLOB = frozenset("*?[")


class TriggerError(ValueError):
    """A malformed ``socket`` stanza or ``file``/``timer`` operand; ``message`` says why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# -- sockets ---------------------------------------------------------------------------------


def parse_socket(args: list[str], line: int = 0) -> SocketSpec:
    """The socket of the stanza arguments ``args`` (the words after ``socket``)."""
    if not args:
        raise TriggerError(f'"socket" needs a kind and an address (usage: {SOCKET_USAGE})')
    kind, rest = args[0], args[1:]
    if kind == "unix":
        return _unix_socket(rest, line)
    if kind == "tcp":
        return _tcp_socket(rest, line)
    raise TriggerError(f'unknown socket kind "{kind}" (usage: {SOCKET_USAGE})')


def _unix_socket(args: list[str], line: int) -> SocketSpec:
    if not args or len(args) > 2:
        raise TriggerError(f"socket unix takes PATH and an optional MODE (usage: {SOCKET_USAGE})")
    path = args[0]
    if "\0" in path:
        raise TriggerError("socket unix: the path contains a NUL byte")
    if path.startswith("@"):
        if len(path) == 1:
            raise TriggerError('socket unix: an abstract socket needs a name after "@"')
        if len(args) == 2:
            raise TriggerError(f"socket unix {path}: an abstract socket has no file mode")
    else:
        problem = _plain_absolute(path)
        if problem is not None:
            raise TriggerError(f"socket unix {path}: {problem}")
    if len(path.encode("utf-8", "surrogateescape")) > UNIX_PATH_MAX:
        raise TriggerError(f"socket unix {path}: longer than {UNIX_PATH_MAX} bytes")
    mode = 0o666
    if len(args) == 2:
        text = args[1]
        if not (1 <= len(text) <= 4 and all(c in "01234567" for c in text)) or int(text, 8) > 0o777:
            raise TriggerError(f'socket unix {path}: bad mode "{text}" (octal, 000 to 777)')
        mode = int(text, 8)
    return SocketSpec(SocketKind.UNIX, path=path, mode=mode, line=line)


def _tcp_socket(args: list[str], line: int) -> SocketSpec:
    if len(args) != 1:
        raise TriggerError(f"socket tcp takes one HOST:PORT (usage: {SOCKET_USAGE})")
    text = args[0]
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise TriggerError(f'socket tcp "{text}": expected HOST:PORT')
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            if ipaddress.ip_address(host).version != 6:
                raise ValueError
        except ValueError:
            raise TriggerError(f'socket tcp "{text}": "{host}" is not an IPv6 address') from None
    elif host == "localhost":
        host = "127.0.0.1"
    elif host != "*":
        try:
            if ipaddress.ip_address(host).version != 4:
                raise ValueError
        except ValueError:
            raise TriggerError(
                f'socket tcp "{text}": "{host}" is not an IP address '
                "(write IPv4 as 127.0.0.1, IPv6 as [::1], every address as *; "
                "no name is looked up)"
            ) from None
    if not (port_text.isascii() and port_text.isdigit()) or not 1 <= int(port_text) <= 65535:
        raise TriggerError(f'socket tcp "{text}": bad port "{port_text}" (1 to 65535)')
    host = str(ipaddress.ip_address(host)) if host != "*" else host
    return SocketSpec(SocketKind.TCP, host=host, port=int(port_text), line=line)


def _plain_absolute(path: str) -> str | None:
    """Why ``path`` is not a plain absolute path (see the module docstring), or None."""
    if not path.startswith("/"):
        return "the path must be absolute"
    plain = posixpath.normpath("/" + path.lstrip("/"))
    if path != plain:
        return f'write the path plainly, as "{plain}"'
    return None


# -- event operands --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileTarget:
    """What one ``file`` leaf watches: a path (its last component may be a glob) and the
    kinds of change it wants (``nonempty`` alone, or some of the other three).

    For ``nonempty`` :attr:`directory` is the path itself; otherwise its parent, with
    :attr:`name` the pattern of the entries in it.
    """

    path: str
    kinds: frozenset[str]

    @property
    def nonempty(self) -> bool:
        return "nonempty" in self.kinds

    @property
    def directory(self) -> str:
        return self.path if self.nonempty else posixpath.dirname(self.path)

    @property
    def name(self) -> str:
        return "" if self.nonempty else posixpath.basename(self.path)


def _operands(match: EventMatch, keys: tuple[str, ...]) -> dict[str, str]:
    """The operands of ``match`` by key (positional ones take ``keys`` in order)."""
    found: dict[str, str] = {}
    position = 0
    for arg in match.args:
        key = arg.key
        if key is None:
            if position >= len(keys):
                raise TriggerError(f'"{match}": unexpected operand "{arg.pattern}"')
            key = keys[position]
            position += 1
        if key not in keys:
            wanted = ", ".join(f"{k}=" for k in keys)
            raise TriggerError(f'"{match}": unknown operand "{key}" (expected {wanted})')
        if arg.negate:
            raise TriggerError(f'"{match}": {key}!= is not supported here (use {key}=)')
        if key in found:
            raise TriggerError(f'"{match}": {key} given twice')
        found[key] = arg.pattern
    return found


def file_leaf(match: EventMatch) -> tuple[str, frozenset[str]]:
    """The FILE pattern (not yet expanded) and the kinds a ``file`` leaf asks for."""
    found = _operands(match, ("FILE", "EVENT"))
    path = found.get("FILE")
    if path is None:
        raise TriggerError(f'"{match}": FILE= is needed (the path to watch)')
    kind = found.get("EVENT")
    if kind is None:
        kinds = frozenset(k for k in FILE_KINDS if k != "nonempty")
    elif kind in FILE_KINDS:
        kinds = frozenset({kind})
    else:
        raise TriggerError(f'"{match}": EVENT must be {", ".join(FILE_KINDS)}, not "{kind}"')
    if not path.startswith("$"):
        file_target(path, kinds)
    elif kind == "nonempty" and _GLOB & set(path):
        raise TriggerError(f'"{match}": a nonempty directory is named without glob characters')
    return path, kinds


def file_target(path: str, kinds: frozenset[str]) -> FileTarget:
    """The target of an expanded FILE path; raises :class:`TriggerError` if it cannot be
    watched (not absolute, not plain, globs outside the last component)."""
    problem = _plain_absolute(path)
    if problem is not None:
        raise TriggerError(f'FILE "{path}": {problem}')
    if "\0" in path:
        raise TriggerError(f'FILE "{path}": the path contains a NUL byte')
    directory, _, name = path.rpartition("/")
    if _GLOB & set(directory):
        raise TriggerError(
            f'FILE "{path}": glob characters only in the last component (no directory is '
            "watched recursively)"
        )
    if "nonempty" in kinds and _GLOB & set(name):
        raise TriggerError(f'FILE "{path}": a nonempty directory is named without globs')
    if "nonempty" not in kinds and path == "/":
        raise TriggerError('FILE "/": name a file or a pattern in a directory')
    return FileTarget(path, kinds)


@dataclass(frozen=True, slots=True)
class TimerSpec:
    """One ``timer`` leaf: ``EVERY`` (``interval`` seconds, monotonic) or ``ON`` (a calendar,
    wall clock). ``key`` and ``text`` are the operand as written: the event carries them."""

    key: str
    text: str
    interval: float = 0.0
    calendar: Calendar | None = None


def timer_leaf(match: EventMatch) -> TimerSpec:
    """The timer a ``timer`` leaf asks for."""
    found = _operands(match, ("EVERY", "ON"))
    if len(found) != 1 or any(arg.key is None for arg in match.args):
        raise TriggerError(f'"{match}": give exactly one of EVERY=DURATION or ON="CALENDAR"')
    ((key, text),) = found.items()
    if "$" in text:
        raise TriggerError(f'"{match}": a timer takes no $VAR reference')
    try:
        if key == "EVERY":
            return TimerSpec(key, text, interval=parse_duration(text))
        return TimerSpec(key, text, calendar=parse_calendar(text))
    except ScheduleError as err:
        raise TriggerError(f'"{match}": {err}') from None


def trigger_problem(expr: EventExpr | None) -> str | None:
    """Why a ``file`` or ``timer`` leaf of ``expr`` cannot work, or None."""
    for leaf in expr_events(expr):
        try:
            if leaf.name == FILE_EVENT:
                file_leaf(leaf)
            elif leaf.name == TIMER_EVENT:
                timer_leaf(leaf)
        except TriggerError as err:
            return err.message
    return None
