"""The system bus's XML configuration, translated into dbus-broker's policy.

dbus-daemon reads ``/usr/share/dbus-1/system.conf`` and the files it includes
(``system.d/*.conf``, ``/etc/dbus-1/system.d/*.conf``, ``system-local.conf``); dbus-broker reads
nothing, and its launcher must hand it the same rules as one policy value
(:mod:`busmgr.bus.broker_policy`). :func:`translate` is that translation, done the way
``dbus-broker-launch`` does it, so a bus run by busmgr allows and refuses what it would:

* files are read in document order, an ``<include>`` at its place (relative to the including
  file; ``ignore_missing``), an ``<includedir>`` as its ``*.conf`` files in name order;
  ``if_selinux_enabled`` includes are skipped (busmgr runs without SELinux);
* each ``<allow>``/``<deny>`` inside a ``<policy>`` becomes one rule whose priority is its
  position, raised by its context: ``mandatory`` over ``at_console`` over ``user`` over
  ``group`` over ``default`` — the highest priority that matches decides, as the last
  matching rule of the strongest context does in dbus-daemon;
* ``user``/``group`` attributes are connect rules (only in ``default``/``mandatory``); ``own``
  and ``own_prefix`` ownership rules; ``send_*`` and ``receive_*`` message rules (``"*"`` is
  any); rules on replies and errors are dropped (the broker always lets expected replies
  through and never unexpected ones), a ``deny`` with ``eavesdrop="true"`` too (it only
  concerned eavesdropping, which the broker does not have), and an ``allow`` keeps its rule;
* ``<policy user=...>`` rules go to that uid, ``group=`` to that gid, ``default`` rules apply
  to every uid (a uid's own batch repeats them before its own rules); ``at_console`` rules:
  without a seat manager no user is at a console, so, as dbus-broker-launch without logind
  does, uids up to
  :data:`SYSTEM_UID_MAX` get the ``at_console="false"`` rules and the others the ``true``
  ones;
* the launcher's own uid may always connect (dbus-daemon's rule for its own user).

Everything else in the files (``<listen>``, ``<user>``, ``<limit>``...) is no policy and is
ignored. A problem — unreadable XML, an unknown element or attribute, a user or group that
does not exist — never stops the translation: the element is dropped and the problem is a
``FILE:LINE: message`` in :attr:`Translation.diagnostics`.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from xml.parsers import expat

from busmgr.bus.broker_policy import (
    ANY_UID,
    MAX_FDS,
    Batch,
    Connect,
    Own,
    Policy,
    Range,
    Xmit,
)

__all__ = ["SYSTEM_CONF", "SYSTEM_UID_MAX", "Translation", "translate"]

SYSTEM_CONF = Path("/usr/share/dbus-1/system.conf")
SYSTEM_UID_MAX = 999  # Debian's SYS_UID_MAX (login.defs); the at_console split
MAX_INCLUDE_DEPTH = 16

# Contexts, weakest first (the broker's priority order).
DEFAULT, GROUP, USER, AT_CONSOLE, NO_CONSOLE, MANDATORY = 1, 2, 3, 4, 5, 6
_CONTEXTS = 7
_BAND = (2**64 - 1) // _CONTEXTS

_TYPES = {"method_call": 1, "method_return": 2, "error": 3, "signal": 4}
_SEND = {
    "send_destination",
    "send_path",
    "send_interface",
    "send_member",
    "send_error",
    "send_type",
    "send_broadcast",
    "send_requested_reply",
}
_RECEIVE = {
    "receive_sender",
    "receive_path",
    "receive_interface",
    "receive_member",
    "receive_error",
    "receive_type",
    "receive_requested_reply",
    "eavesdrop",
}
_RULE_ATTRS = {"user", "group", "own", "own_prefix", "min_fds", "max_fds", "log"} | _SEND | _RECEIVE
_IGNORED = {
    "type",
    "user",
    "fork",
    "keep_umask",
    "listen",
    "pidfile",
    "auth",
    "servicedir",
    "standard_session_servicedirs",
    "standard_system_servicedirs",
    "servicehelper",
    "limit",
    "syslog",
    "allow_anonymous",
}

Resolve = Callable[[str], int | None]


def _user(name: str) -> int | None:
    if name.isdigit():
        return int(name)
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(name).pw_uid
    return None


def _group(name: str) -> int | None:
    if name.isdigit():
        return int(name)
    with contextlib.suppress(KeyError):
        return grp.getgrnam(name).gr_gid
    return None


@dataclass
class _Entries:
    connect: list[Connect] = field(default_factory=list)
    own: list[Own] = field(default_factory=list)
    send: list[Xmit] = field(default_factory=list)
    receive: list[Xmit] = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.connect or self.own or self.send or self.receive)


@dataclass(frozen=True)
class Translation:
    """The policy, the bus type, and every problem met (``FILE:LINE: message``)."""

    policy: Policy
    diagnostics: tuple[str, ...]
    files: tuple[Path, ...]


class _Translator:
    def __init__(
        self, resolve_user: Resolve, resolve_group: Resolve, self_uid: int, sysroot: Path | None
    ) -> None:
        self.sysroot = sysroot
        self.resolve_user = resolve_user
        self.resolve_group = resolve_group
        self.diagnostics: list[str] = []
        self.files: list[Path] = []
        self.priority = 0
        self.default = _Entries()
        self.at_console = _Entries()
        self.no_console = _Entries()
        self.uids: dict[int, _Entries] = {}
        self.gids: dict[int, _Entries] = {}
        self.selinux: list[tuple[str, str]] = []
        self.apparmor = False
        self.bus_type = ""
        # The launcher's own user may connect (the lowest priority of all).
        self.priority += 1
        self.uids.setdefault(self_uid, _Entries()).connect.append(Connect(True, self.priority))

    def note(self, where: str, message: str) -> None:
        self.diagnostics.append(f"{where}: {message}")

    # ------------------------------------------------------------------ reading
    def locate(self, base: Path, name: str) -> Path:
        """An include's file: relative to the including file, absolute under the sysroot."""
        path = Path(name)
        if path.is_absolute():
            return self.sysroot / path.relative_to("/") if self.sysroot else path
        return base.parent / path

    def read(self, path: Path, depth: int, *, ignore_missing: bool = False) -> None:
        if depth > MAX_INCLUDE_DEPTH:
            self.note(str(path), "includes nested too deep; not read")
            return
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            if not ignore_missing:
                self.note(str(path), "no such file")
            return
        except OSError as err:
            self.note(str(path), err.strerror or str(err))
            return
        self.files.append(path)
        _File(self, path, depth).parse(data)

    def include_dir(self, directory: Path, depth: int) -> None:
        with contextlib.suppress(OSError):
            for name in sorted(os.listdir(directory)):
                if name.endswith(".conf"):
                    self.read(directory / name, depth + 1)

    # ------------------------------------------------------------------ rules
    def entries(self, context: int, ident: int | None) -> _Entries | None:
        if context == USER:
            return None if ident is None else self.uids.setdefault(ident, _Entries())
        if context == GROUP:
            return None if ident is None else self.gids.setdefault(ident, _Entries())
        if context == AT_CONSOLE:
            return self.at_console
        if context == NO_CONSOLE:
            return self.no_console
        return self.default

    def rule(
        self, where: str, allow: bool, attrs: dict[str, str], context: int, ident: int | None
    ) -> None:
        unknown = sorted(set(attrs) - _RULE_ATTRS)
        if unknown:
            self.note(where, f"unknown attribute {unknown[0]}; rule dropped")
            return
        keys = set(attrs) - {"min_fds", "max_fds", "log"}
        self.priority += 1
        priority = _BAND * context + self.priority
        try:
            min_fds = int(attrs.get("min_fds", "0"))
            max_fds = int(attrs.get("max_fds", str(MAX_FDS)))
        except ValueError:
            self.note(where, "min_fds and max_fds take a number; rule dropped")
            return
        if keys & {"user", "group"}:
            self._connect(where, allow, attrs, keys, context, priority)
        elif keys & {"own", "own_prefix"}:
            self._own(where, allow, attrs, keys, context, ident, priority)
        elif keys & _SEND:
            self._xmit(
                where, allow, attrs, keys, "send", context, ident, priority, min_fds, max_fds
            )
        elif keys & _RECEIVE:
            self._xmit(
                where, allow, attrs, keys, "receive", context, ident, priority, min_fds, max_fds
            )
        else:
            self.note(where, "a rule with nothing to match; dropped")

    def _connect(
        self,
        where: str,
        allow: bool,
        attrs: dict[str, str],
        keys: set[str],
        context: int,
        priority: int,
    ) -> None:
        if keys - {"user", "group"} or keys == {"user", "group"}:
            self.note(where, "user or group may not be combined with other attributes; dropped")
            return
        if context in (USER, GROUP):
            self.note(where, "connection rules are not allowed in a user or group policy")
            return
        record = Connect(allow, priority)
        if "user" in attrs:
            if attrs["user"] == "*":
                self.default.connect.append(record)
                return
            uid = self.resolve_user(attrs["user"])
            if uid is None:
                self.note(where, f"no user {attrs['user']}; rule dropped")
                return
            self.uids.setdefault(uid, _Entries()).connect.append(record)
        else:
            if attrs["group"] == "*":
                self.default.connect.append(record)
                return
            gid = self.resolve_group(attrs["group"])
            if gid is None:
                self.note(where, f"no group {attrs['group']}; rule dropped")
                return
            self.gids.setdefault(gid, _Entries()).connect.append(record)

    def _own(
        self,
        where: str,
        allow: bool,
        attrs: dict[str, str],
        keys: set[str],
        context: int,
        ident: int | None,
        priority: int,
    ) -> None:
        if keys - {"own", "own_prefix"} or keys == {"own", "own_prefix"}:
            self.note(where, "own may not be combined with other attributes; dropped")
            return
        if "own" in attrs:
            record = (
                Own(allow, priority, "", True)
                if attrs["own"] == "*"
                else Own(allow, priority, attrs["own"], False)
            )
        else:
            record = Own(allow, priority, attrs["own_prefix"], True)
        target = self.entries(context, ident)
        if target is not None:
            target.own.append(record)

    def _xmit(
        self,
        where: str,
        allow: bool,
        attrs: dict[str, str],
        keys: set[str],
        kind: str,
        context: int,
        ident: int | None,
        priority: int,
        min_fds: int,
        max_fds: int,
    ) -> None:
        other = (_RECEIVE if kind == "send" else _SEND) - {"eavesdrop"}
        if keys & other or keys & {"user", "group", "own", "own_prefix"}:
            self.note(where, f"{kind} rules may not be combined with other kinds; dropped")
            return
        message_type = 0
        if f"{kind}_type" in attrs:
            message_type = _TYPES.get(attrs[f"{kind}_type"], -1)
            if message_type < 0:
                self.note(where, f"unknown {kind}_type {attrs[f'{kind}_type']}; rule dropped")
                return
        if message_type in (2, 3):
            return  # replies and errors: the broker decides those itself
        if attrs.get("eavesdrop") == "true" and not allow:
            return  # only ever concerned eavesdropping
        broadcast = 0
        if kind == "send" and "send_broadcast" in attrs:
            broadcast = {"true": 1, "false": 2}.get(attrs["send_broadcast"], -1)
            if broadcast < 0:
                self.note(where, "send_broadcast takes true or false; rule dropped")
                return

        def value(key: str) -> str:
            text = attrs.get(key, "")
            return "" if text == "*" else text

        name_key = "send_destination" if kind == "send" else "receive_sender"
        record = Xmit(
            allow,
            priority,
            value(name_key),
            value(f"{kind}_path"),
            value(f"{kind}_interface"),
            value(f"{kind}_member"),
            message_type,
            broadcast,
            min_fds,
            max_fds,
        )
        target = self.entries(context, ident)
        if target is not None:
            (target.send if kind == "send" else target.receive).append(record)

    # ------------------------------------------------------------------ the result
    def policy(self) -> Policy:
        top = max(self.default.connect, key=lambda c: c.priority, default=None)
        default_connect = top or Connect(False, 1)

        def specific_connect(entries: _Entries) -> Connect | None:
            best = max(entries.connect, key=lambda c: c.priority, default=None)
            if best is not None and top is not None and best.priority <= top.priority:
                return None
            return best

        def batch(entries: _Entries, base: _Entries | None, connect: Connect) -> Batch:
            own = (base.own if base else []) + entries.own
            send = (base.send if base else []) + entries.send
            receive = (base.receive if base else []) + entries.receive
            return Batch(connect, tuple(own), tuple(send), tuple(receive))

        uids: list[tuple[int, Batch]] = [(ANY_UID, batch(self.default, None, default_connect))]
        for uid in sorted(self.uids):
            entries = self.uids[uid]
            connect = specific_connect(entries)
            if connect is None and not (entries.own or entries.send or entries.receive):
                continue
            uids.append((uid, batch(entries, self.default, connect or default_connect)))
        ranges: list[Range] = []
        for gid in sorted(self.gids):
            entries = self.gids[gid]
            connect = specific_connect(entries)
            if connect is None and not (entries.own or entries.send or entries.receive):
                continue
            ranges.append(Range(True, gid, gid, batch(entries, None, connect or default_connect)))
        # No seat manager: nobody is at a console (see the module docstring). Console rules
        # hold no connect rule (those go to their uid, gid or the default): theirs is the
        # weakest refusal, which any other connect rule outranks.
        weakest = Connect(False, 1)
        if not self.no_console.empty():
            ranges.append(Range(False, 0, SYSTEM_UID_MAX, batch(self.no_console, None, weakest)))
        if not self.at_console.empty():
            ranges.append(
                Range(False, SYSTEM_UID_MAX + 1, ANY_UID, batch(self.at_console, None, weakest))
            )
        return Policy(
            uids=tuple(uids),
            ranges=tuple(ranges),
            selinux=tuple(self.selinux),
            apparmor=self.apparmor,
            bus_type=self.bus_type,
        )


class _File:
    """One file's elements, handed to the translator as expat reads them."""

    def __init__(self, translator: _Translator, path: Path, depth: int) -> None:
        self.t = translator
        self.path = path
        self.depth = depth
        self.line = 0
        self.stack: list[tuple[str, dict[str, str]]] = []
        self.policy: tuple[int, int | None] | None = None
        self.buffer = ""

    def where(self) -> str:
        return f"{self.path}:{self.line}"

    def parse(self, data: bytes) -> None:
        """Read the whole file first: a file that is not valid XML contributes nothing (half
        of it could drop a ``deny`` its other half has), then apply its elements in order."""
        events: list[tuple[int, str, object]] = []
        parser = expat.ParserCreate()
        parser.StartElementHandler = lambda name, attrs: events.append(
            (parser.CurrentLineNumber, "start", (name, attrs))
        )
        parser.EndElementHandler = lambda name: events.append(
            (parser.CurrentLineNumber, "end", name)
        )
        parser.CharacterDataHandler = lambda data: events.append(
            (parser.CurrentLineNumber, "text", data)
        )
        try:
            parser.Parse(data, True)
        except expat.ExpatError as err:
            reason = expat.errors.messages[err.code]
            self.t.note(f"{self.path}:{err.lineno}", f"not valid XML: {reason}; file ignored")
            return
        for line, kind, value in events:
            self.line = line
            if kind == "start":
                name, attrs = value  # type: ignore[misc]
                self.start(name, attrs)
            elif kind == "end":
                self.end(value)  # type: ignore[arg-type]
            else:
                self.buffer += value  # type: ignore[operator]

    def start(self, name: str, attrs: dict[str, str]) -> None:
        parent = self.stack[-1][0] if self.stack else ""
        self.stack.append((name, attrs))
        self.buffer = ""
        if name == "busconfig" or (name in _IGNORED and parent == "busconfig"):
            return
        if name in ("include", "includedir", "type"):
            return  # handled with their text, at the end tag
        if name == "policy" and parent == "busconfig":
            self.policy = self._context(attrs)
        elif name in ("allow", "deny") and parent == "policy":
            if self.policy is not None:
                context, ident = self.policy
                self.t.rule(self.where(), name == "allow", attrs, context, ident)
        elif name == "selinux" and parent == "busconfig":
            pass
        elif name == "associate" and parent == "selinux":
            if "own" in attrs and "context" in attrs:
                self.t.selinux.append((attrs["own"], attrs["context"]))
            else:
                self.t.note(self.where(), "associate needs own and context")
        elif name == "apparmor" and parent == "busconfig":
            self.t.apparmor = attrs.get("mode", "enabled") != "disabled"
        else:
            self.t.note(self.where(), f"unknown element <{name}> in <{parent}>; ignored")

    def _context(self, attrs: dict[str, str]) -> tuple[int, int | None] | None:
        if len(attrs) != 1:
            self.t.note(
                self.where(), "a policy takes exactly one of context, user, group, at_console"
            )
            return None
        ((key, value),) = attrs.items()
        if key == "context" and value in ("default", "mandatory"):
            return (DEFAULT if value == "default" else MANDATORY, None)
        if key == "at_console" and value in ("true", "false"):
            return (AT_CONSOLE if value == "true" else NO_CONSOLE, None)
        if key in ("user", "group"):
            ident = (self.t.resolve_user if key == "user" else self.t.resolve_group)(value)
            if ident is None:
                self.t.note(self.where(), f"no {key} {value}; its policy is dropped")
            return (USER if key == "user" else GROUP, ident)
        self.t.note(self.where(), f"policy {key}={value!r} is not a policy context")
        return None

    def end(self, name: str) -> None:
        _name, attrs = self.stack.pop()
        text = self.buffer.strip()
        self.buffer = ""
        parent = self.stack[-1][0] if self.stack else ""
        if name == "policy":
            self.policy = None
        elif name == "type" and parent == "busconfig":
            self.t.bus_type = text
        elif name == "include" and parent == "busconfig":
            if attrs.get("if_selinux_enabled") == "yes":
                return
            target = self.t.locate(self.path, text)
            self.t.read(target, self.depth + 1, ignore_missing=attrs.get("ignore_missing") == "yes")
        elif name == "includedir" and parent == "busconfig":
            self.t.include_dir(self.t.locate(self.path, text), self.depth)


def translate(
    path: Path = SYSTEM_CONF,
    *,
    resolve_user: Resolve = _user,
    resolve_group: Resolve = _group,
    self_uid: int | None = None,
    sysroot: Path | None = None,
) -> Translation:
    """Translate the bus configuration at ``path`` (and what it includes) into the broker's
    policy. ``resolve_user``/``resolve_group`` map names to ids (None: no such one);
    ``self_uid`` is the launcher's uid (default: ours); ``sysroot`` a directory that absolute
    include paths are read under (tests, images), instead of ``/``."""
    uid = os.getuid() if self_uid is None else self_uid
    translator = _Translator(resolve_user, resolve_group, uid, sysroot)
    translator.read(path, 0)
    return Translation(translator.policy(), tuple(translator.diagnostics), tuple(translator.files))
