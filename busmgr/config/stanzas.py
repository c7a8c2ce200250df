"""The stanza table: one keyword -> one handler, as Upstart's ``parse_job.c``.

Model: :data:`STANZAS` maps the first word of each logical line to a handler. A handler reads
its :class:`LogicalLine` and records what it means in a :class:`Draft` (by replacing fields
of the draft's frozen :class:`JobClass`), or raises :class:`StanzaError` with a message naming
the problem; the parser turns that into ``PATH:LINE: message`` and goes on with the next line,
so every error of a file is reported at once. Keywords of two words (``start on``,
``respawn limit``, ``normal exit`` ...) are dispatched on their first word, and the handler
checks the second, as Upstart does.

Invariants:

* A handler either changes the draft or raises, never both: all checks come before the first
  ``draft.set*`` call, so a rejected stanza leaves no trace in the job.
* Every value stored is validated (ranges, signal names, capability names, bus name and unit
  name syntax), so run-time code never re-checks it. Users and groups are the exception: one
  that does not exist yet is a warning (packages create their users when they are installed),
  and a start fails with a clear error while it is missing.
* Single-valued stanzas given twice: the last wins (Upstart's rule) with a warning; the main
  process or a hook given twice is an error. ``env``, ``export``, ``emits``, ``normal exit``
  and ``caps keep`` accumulate.
* Upstart stanzas busmgr does not implement (``apparmor``, ``cgroup``, ``console owner``, and
  ChromeOS Upstart's ``tmpfiles``) are accepted with a warning naming them, so real Upstart job
  files load unchanged.
"""

from __future__ import annotations

import difflib
import grp
import pwd
import re
import resource
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from busmgr.config.diagnostics import Diagnostic, Severity
from busmgr.config.expr import ExprError, parse_event_expr
from busmgr.config.lexer import HOOK_KEYWORDS, LogicalLine
from busmgr.config.triggers import SOCKET_USAGE, TriggerError, parse_socket, trigger_problem
from busmgr.jobclass import (
    CAPABILITIES,
    DBUS_ACTIVATION,
    ConsoleMode,
    EnvEntry,
    ExpectMode,
    JobClass,
    Limit,
    ProcessKind,
    ProcessSpec,
    SocketSpec,
    activation_match,
    decimal,
    is_variable_name,
    parse_signal,
    socket_match,
)


class StanzaError(Exception):
    """A malformed stanza; the message names the problem (the parser adds path and line)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class Draft:
    """The job being parsed from one file, and what was said about it so far.

    Mutable on purpose (the one mutable object of parsing). Handlers record single values with
    :meth:`set` (and :meth:`set_context`, :meth:`set_respawn`) and append to the accumulating
    fields (``processes``, ``env``, ``export``, ``units``, ``sockets``, ``emits``, ``normal_codes``,
    ``normal_signals``, ``limits``, ``caps``); :meth:`build` makes the frozen
    :class:`JobClass` once, at the end. Every stanza costs constant time (no copy of what
    came before), so parsing is linear in the size of the file. ``seen`` remembers where each
    single-valued stanza was first given.
    """

    path: str
    base: JobClass
    diagnostics: list[Diagnostic] = field(default_factory=list)
    seen: dict[str, int] = field(default_factory=dict)
    fields: dict[str, object] = field(default_factory=dict)
    context: dict[str, object] = field(default_factory=dict)
    respawn: dict[str, object] = field(default_factory=dict)
    processes: dict[ProcessKind, ProcessSpec] = field(default_factory=dict)
    env: list[EnvEntry] = field(default_factory=list)
    export: dict[str, None] = field(default_factory=dict)
    units: dict[str, None] = field(default_factory=dict)
    sockets: list[SocketSpec] = field(default_factory=list)
    emits: dict[str, None] = field(default_factory=dict)
    normal_codes: set[int] = field(default_factory=set)
    normal_signals: set[int] = field(default_factory=set)
    limits: dict[int, Limit] = field(default_factory=dict)
    caps: dict[str, None] | None = None

    def set(self, **changes: object) -> None:
        self.fields.update(changes)

    def set_context(self, **changes: object) -> None:
        self.context.update(changes)

    def set_respawn(self, **changes: object) -> None:
        self.respawn.update(changes)

    def build(self) -> JobClass:
        """The frozen job: the base with everything recorded."""
        base = self.base
        context = replace(
            base.context,
            **self.context,
            limits=(*base.context.limits, *self.limits.values()),
            caps_keep=tuple(self.caps) if self.caps is not None else base.context.caps_keep,
        )
        activated_by = base.activated_by
        name = self.fields.get("dbus_name")
        if isinstance(name, str):  # a job provides one name: a later "dbus" replaces it
            activated_by = tuple(m for m in activated_by if m.name != DBUS_ACTIVATION)
        activated_by += tuple(socket_match(spec) for spec in self.sockets)
        if isinstance(name, str):
            activated_by += (activation_match(name),)
        return replace(
            base,
            **self.fields,
            activated_by=activated_by,
            sockets=(*base.sockets, *self.sockets),
            processes={**base.processes, **self.processes},
            env=(*base.env, *self.env),
            export=(*base.export, *self.export),
            units=(*base.units, *(u for u in self.units if u not in base.units)),
            emits=(*base.emits, *self.emits),
            normal_exit_codes=base.normal_exit_codes | self.normal_codes,
            normal_exit_signals=base.normal_exit_signals | self.normal_signals,
            context=context,
            respawn=replace(base.respawn, **self.respawn),
        )

    def warn(self, line: int, message: str) -> None:
        self.diagnostics.append(Diagnostic(self.path, line, message, Severity.WARNING))

    def once(self, key: str, line: int) -> None:
        """Note a single-valued stanza; warn if it was given before (the last one wins)."""
        first = self.seen.setdefault(key, line)
        if first != line:
            self.warn(line, f'"{key}" given again (first on line {first}); the last one wins')


Handler = Callable[[Draft, LogicalLine], None]


# -- helpers ---------------------------------------------------------------------------------


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean "X"?)`` for the closest of ``choices``, or an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


def _quote_list(choices: Iterable[str]) -> str:
    items = [f'"{c}"' for c in choices]
    return ", ".join(items[:-1]) + f" or {items[-1]}" if len(items) > 1 else items[0]


def _head(line: LogicalLine, count: int) -> str:
    return " ".join(w.text for w in line.words[:count])


def _args(
    line: LogicalLine, skip: int, usage: str, *, count: int | None = None, minimum: int = 0
) -> list[str]:
    """The dequoted words after the first ``skip``, checked against an exact or least count."""
    args = [w.text for w in line.words[skip:]]
    wanted = count if count is not None else minimum
    if len(args) < wanted:
        raise StanzaError(f'"{_head(line, len(line.words))}" is incomplete (usage: {usage})')
    if count is not None and len(args) > count:
        extra = " ".join(args[count:])
        raise StanzaError(
            f'unexpected "{extra}" after "{_head(line, skip + count)}" (usage: {usage})'
        )
    return args


def _sub(line: LogicalLine, choices: Iterable[str], usage: str) -> str:
    """The second word of a two-word stanza (``respawn limit``), which must be a choice."""
    options = tuple(choices)
    if len(line.words) < 2:
        raise StanzaError(f'"{line.keyword}" needs one of {_quote_list(options)} (usage: {usage})')
    word = line.words[1].text
    if word not in options:
        hint = did_you_mean(word, options) or f" (expected {_quote_list(options)})"
        raise StanzaError(f'unknown argument "{word}" to "{line.keyword}"{hint}')
    return word


# ASCII digits only (str.isdigit() also accepts "²" and "①", which int() refuses), and few
# enough of them that int() never refuses the length (Python's 4,300-digit limit).
_INT = re.compile(r"[+-]?[0-9]{1,20}\Z")
_SECONDS = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,9})?\Z")


def _int(text: str, what: str, low: int, high: int) -> int:
    if not _INT.match(text):
        raise StanzaError(f'bad {what} "{text}": not an integer')
    value = int(text)
    if not low <= value <= high:
        raise StanzaError(f'bad {what} "{text}": must be from {low} to {high}')
    return value


def _seconds(text: str, what: str, *, positive: bool = False) -> float:
    if not _SECONDS.match(text):
        raise StanzaError(f'bad {what} "{text}": not a number of seconds')
    value = float(text)
    if positive and value <= 0:
        raise StanzaError(f'bad {what} "{text}": must be more than 0')
    return value


def _signal(text: str, what: str, *, zero: bool = False) -> int:
    """A signal name or number; with ``zero``, also ``0`` (Upstart accepts it: no signal)."""
    if zero and text.strip() in ("0", "00", "000"):
        return 0
    signum = parse_signal(text)
    if signum is None:
        raise StanzaError(f'unknown signal "{text}" in "{what}"')
    return signum


def _absolute(draft: Draft, line: LogicalLine, path: str, what: str) -> str:
    if not path:
        raise StanzaError(f'"{what}" needs a directory')
    if path.startswith("/"):
        return path
    draft.warn(line.line, f'relative path "{path}" in "{what}" is taken from "/"')
    return "/" + path


_BUS_ELEMENT = re.compile(r"[A-Za-z_-][A-Za-z0-9_-]*\Z")


def bus_name_problem(name: str) -> str | None:
    """Why ``name`` is not a well-known D-Bus bus name (D-Bus specification), or None."""
    if not name:
        return "a bus name cannot be empty"
    if len(name) > 255:
        return "a bus name has at most 255 characters"
    if name.startswith(":"):
        return 'a unique name (starting with ":") cannot be provided by a job'
    elements = name.split(".")
    if len(elements) < 2:
        return 'a bus name has at least two elements separated by "."'
    for element in elements:
        if not element:
            return 'a bus name cannot have empty elements (".." or a "." at either end)'
        if "0" <= element[0] <= "9":
            return f'element "{element}" starts with a digit'
        if not _BUS_ELEMENT.match(element):
            return f'element "{element}" has characters other than [A-Za-z0-9_-]'
    return None


# -- processes -------------------------------------------------------------------------------

# The hook keywords are the values of their ProcessKind ("pre-start" ...).
_HOOKS: Mapping[str, ProcessKind] = {keyword: ProcessKind(keyword) for keyword in HOOK_KEYWORDS}


def _define(draft: Draft, kind: ProcessKind, spec: ProcessSpec, what: str) -> None:
    old = draft.processes.get(kind)
    if old is not None:
        old_what = "script" if old.script else "exec"
        if kind is ProcessKind.MAIN:
            raise StanzaError(
                f'second main process: "{what}" here, but "{old_what}" on line {old.line} '
                "already defines it (a job has one exec or script)"
            )
        raise StanzaError(f'duplicate "{kind.value}" process: already defined on line {old.line}')
    draft.processes[kind] = spec


def _exec_spec(line: LogicalLine, skip: int) -> ProcessSpec:
    command = line.rest(skip)
    if not command:
        raise StanzaError(f'"{_head(line, skip)}" needs a command to run')
    return ProcessSpec(command, script=False, line=line.line)


def _script_spec(line: LogicalLine, skip: int) -> ProcessSpec:
    _args(line, skip, f"{_head(line, skip)} ... end script", count=0)
    return ProcessSpec(line.body or "", script=True, line=line.line)


def stanza_exec(draft: Draft, line: LogicalLine) -> None:
    _define(draft, ProcessKind.MAIN, _exec_spec(line, 1), "exec")


def stanza_script(draft: Draft, line: LogicalLine) -> None:
    _define(draft, ProcessKind.MAIN, _script_spec(line, 1), "script")


def stanza_hook(draft: Draft, line: LogicalLine) -> None:
    kind = _HOOKS[line.keyword]
    how = _sub(line, ("exec", "script"), f"{line.keyword} exec COMMAND | {line.keyword} script")
    spec = _exec_spec(line, 2) if how == "exec" else _script_spec(line, 2)
    _define(draft, kind, spec, f"{line.keyword} {how}")


# -- kind and triggers -----------------------------------------------------------------------


def stanza_task(draft: Draft, line: LogicalLine) -> None:
    _args(line, 1, "task", count=0)
    draft.set(task=True)


def stanza_manual(draft: Draft, line: LogicalLine) -> None:
    _args(line, 1, "manual", count=0)
    draft.set(manual=True)


def stanza_on(draft: Draft, line: LogicalLine) -> None:
    which = line.keyword  # "start" | "stop"
    if len(line.words) < 2 or line.words[1].text != "on":
        got = f', not "{line.words[1].text}"' if len(line.words) >= 2 else ""
        raise StanzaError(f'expected "on" after "{which}"{got} (usage: {which} on EVENT...)')
    text = line.rest(2)
    if not text:
        raise StanzaError(f'"{which} on" needs an event expression')
    try:
        expr = parse_event_expr(text)
    except ExprError as exc:
        raise StanzaError(f'bad "{which} on" expression: {exc.message}') from None
    problem = trigger_problem(expr)
    if problem is not None:
        raise StanzaError(f'bad "{which} on" expression: {problem}')
    draft.once(f"{which} on", line.line)
    if which == "start":
        draft.set(start_on=expr, start_on_line=line.line)
    else:
        draft.set(stop_on=expr, stop_on_line=line.line)


def stanza_emits(draft: Draft, line: LogicalLine) -> None:
    events = _args(line, 1, "emits EVENT...", minimum=1)
    if any(not e for e in events):
        raise StanzaError('"emits" with an empty event name')
    draft.emits.update(dict.fromkeys(events))


def stanza_dbus(draft: Draft, line: LogicalLine) -> None:
    usage = "dbus [system-bus|session-bus] BUS_NAME"
    args = _args(line, 1, usage, minimum=1)
    if len(args) > 2:
        raise StanzaError(f'unexpected "{" ".join(args[2:])}" (usage: {usage})')
    if len(args) == 2:
        bus = args[0]
        if bus not in ("system-bus", "session-bus"):
            hint = did_you_mean(bus, ("system-bus", "session-bus"))
            raise StanzaError(f'unknown bus "{bus}" in "dbus"{hint} (usage: {usage})')
    name = args[-1]
    problem = bus_name_problem(name)
    if problem is not None:
        raise StanzaError(f'bad bus name "{name}": {problem}')
    draft.once("dbus", line.line)
    # The bus named in Upstart's two-word form is accepted and not kept: a job provides its
    # name on the bus of the manager that runs it. Its sockets' leaves stay.
    draft.set(dbus_name=name)  # its activation match is added by Draft.build


# systemd's unit names (systemd.unit(5)): at most 255 characters of [A-Za-z0-9:_.\-@]; the
# ones a bus daemon's activation request can name are services.
_UNIT = re.compile(r"[A-Za-z0-9:_.\\@-]+\.service\Z")
UNIT_NAME_MAX = 255


def unit_name_problem(unit: str) -> str | None:
    """Why ``unit`` is not a systemd service unit name (``upower.service``), or None."""
    if len(unit) > UNIT_NAME_MAX:
        return f"a unit name has at most {UNIT_NAME_MAX} characters"
    if not unit.endswith(".service"):
        if "." in unit:
            return "a bus daemon only asks for services (NAME.service)"
        return f'a bus daemon only asks for services (did you mean "{unit}.service"?)'
    if not _UNIT.match(unit) or unit.startswith(("@", ".")) or unit == ".service":
        return "a unit name is made of [A-Za-z0-9:_.\\@-] and ends in .service"
    return None


def stanza_unit(draft: Draft, line: LogicalLine) -> None:
    """``unit NAME.service...``: the systemd units this job stands for. A bus daemon that
    activates through systemd asks for a unit (``SystemdService=`` of the installed D-Bus
    ``.service`` file); the request reaches the job that declares it."""
    units = _args(line, 1, "unit NAME.service...", minimum=1)
    for unit in units:
        problem = unit_name_problem(unit)
        if problem is not None:
            raise StanzaError(f'bad unit name "{unit}": {problem}')
    draft.seen.setdefault("unit", line.line)
    draft.units.update(dict.fromkeys(units))


def stanza_instance(draft: Draft, line: LogicalLine) -> None:
    (template,) = _args(line, 1, "instance NAME-TEMPLATE", count=1)
    if not template:
        raise StanzaError('"instance" needs a non-empty name template')
    if draft.sockets:
        raise StanzaError(_SOCKET_INSTANCE.format(line=draft.sockets[0].line))
    draft.once("instance", line.line)
    draft.set(instance=template)


_SOCKET_INSTANCE = (
    'a job with "socket" (line {line}) cannot have "instance": one set of listening sockets '
    "is handed to one process"
)


def stanza_socket(draft: Draft, line: LogicalLine) -> None:
    args = _args(line, 1, SOCKET_USAGE, minimum=1)
    try:
        spec = parse_socket(args, line.line)
    except TriggerError as err:
        raise StanzaError(err.message) from None
    if draft.fields.get("instance") or draft.base.instance:
        first = draft.seen.get("instance", 0)
        raise StanzaError(
            f'a job with "instance" (line {first}) cannot have "socket": one set of listening '
            "sockets is handed to one process"
        )
    for other in (*draft.base.sockets, *draft.sockets):
        if other.key == spec.key:
            raise StanzaError(f"socket {spec} given twice (first on line {other.line})")
    draft.sockets.append(spec)


# -- readiness and lifetime ------------------------------------------------------------------

_EXPECT = {m.value: m for m in ExpectMode}


def stanza_expect(draft: Draft, line: LogicalLine) -> None:
    usage = "expect stop|fork|daemon|notify|none"
    _sub(line, _EXPECT, usage)
    (mode,) = _args(line, 1, usage, count=1)
    draft.once("expect", line.line)
    draft.set(expect=_EXPECT[mode])


def stanza_ready(draft: Draft, line: LogicalLine) -> None:
    usage = "ready timeout SECONDS"
    _sub(line, ("timeout",), usage)
    (value,) = _args(line, 2, usage, count=1)
    timeout = _seconds(value, "ready timeout", positive=True)
    draft.once("ready timeout", line.line)
    draft.set(ready_timeout=timeout)


def stanza_respawn(draft: Draft, line: LogicalLine) -> None:
    if len(line.words) == 1:
        draft.set_respawn(enabled=True)
        return
    what = _sub(
        line, ("limit", "delay"), "respawn | respawn limit COUNT INTERVAL | respawn delay SECONDS"
    )
    if what == "delay":
        (value,) = _args(line, 2, "respawn delay SECONDS", count=1)
        delay = _seconds(value, "respawn delay")
        draft.once("respawn delay", line.line)
        draft.set_respawn(delay=delay)
        return
    usage = "respawn limit COUNT INTERVAL | respawn limit unlimited"
    if len(line.words) >= 3 and line.words[2].text == "unlimited":
        _args(line, 3, usage, count=0)
        count, interval = 0, 0.0
    else:
        count_text, interval_text = _args(line, 2, usage, count=2)
        count = _int(count_text, "respawn limit COUNT", 0, 2**31 - 1)
        interval = _seconds(interval_text, "respawn limit INTERVAL")
        if interval == 0:
            count = 0  # Upstart: a zero interval, like a zero count, means no limit
    draft.once("respawn limit", line.line)
    draft.set_respawn(limit=count, interval=interval)


def stanza_normal(draft: Draft, line: LogicalLine) -> None:
    usage = "normal exit STATUS|SIGNAL..."
    _sub(line, ("exit",), usage)
    codes: set[int] = set()
    signals: set[int] = set()
    for value in _args(line, 2, usage, minimum=1):
        if decimal(value) is not None:
            codes.add(_int(value, "exit status", 0, 255))
            continue
        signum = parse_signal(value)
        if signum is None:
            raise StanzaError(
                f'bad "normal exit" value "{value}": not an exit status (0-255) or a signal name'
            )
        signals.add(signum)
    draft.normal_codes |= codes
    draft.normal_signals |= signals


def stanza_kill(draft: Draft, line: LogicalLine) -> None:
    usage = "kill signal SIGNAL | kill timeout SECONDS"
    what = _sub(line, ("signal", "timeout"), usage)
    (value,) = _args(line, 2, usage, count=1)
    draft.once(f"kill {what}", line.line)
    if what == "signal":
        draft.set(kill_signal=_signal(value, "kill signal"))
    else:
        draft.set(kill_timeout=_seconds(value, "kill timeout"))


def stanza_reload(draft: Draft, line: LogicalLine) -> None:
    usage = "reload signal SIGNAL"
    _sub(line, ("signal",), usage)
    (value,) = _args(line, 2, usage, count=1)
    # Upstart accepts 0: a reload then only checks that the main process is there.
    signum = _signal(value, "reload signal", zero=True)
    draft.once("reload signal", line.line)
    draft.set(reload_signal=signum)


# -- environment and credentials -------------------------------------------------------------


def stanza_env(draft: Draft, line: LogicalLine) -> None:
    (arg,) = _args(
        line, 1, 'env KEY=VALUE | env KEY (quote values with spaces: env K="a b")', count=1
    )
    key, eq, value = arg.partition("=")
    if not is_variable_name(key):
        raise StanzaError(f'bad variable name "{key}" in "env"')
    draft.env.append(EnvEntry(key, value if eq else None))


def stanza_export(draft: Draft, line: LogicalLine) -> None:
    names = _args(line, 1, "export KEY...", minimum=1)
    for name in names:
        if not is_variable_name(name):
            raise StanzaError(f'bad variable name "{name}" in "export"')
    draft.export.update(dict.fromkeys(names))


_ID_MAX = 2**32 - 2  # (uid_t) -1 means "no change" to setuid(2) and friends
_NUMERIC_ID = re.compile(r"[0-9]{1,10}\Z")  # ASCII digits: int() refuses "²" and 5,000 digits


def _numeric_id(text: str) -> int | None:
    """``text`` as a uid/gid number, or None when it is a name (or far too long a number)."""
    return int(text) if _NUMERIC_ID.match(text) else None


def _credential(
    draft: Draft, line: LogicalLine, kind: str, name: str, exists: Callable[[str], bool]
) -> None:
    """Check a ``setuid``/``setgid`` value: a bad one is an error; one that does not exist
    yet only a warning (it is looked up again at every start, which fails while it is
    missing)."""
    number = _numeric_id(name)
    too_big = (number is not None and number > _ID_MAX) or (
        name.isascii() and name.isdigit() and number is None
    )
    if not name or "\0" in name or ":" in name or too_big:
        raise StanzaError(f'{kind}: bad {"user" if kind == "setuid" else "group"} "{name}"')
    if not exists(name):
        what = "user" if kind == "setuid" else "group"
        draft.warn(
            line.line,
            f'{kind}: no such {what} "{name}" (yet): the job fails to start until it exists',
        )


def stanza_setuid(draft: Draft, line: LogicalLine) -> None:
    (user,) = _args(line, 1, "setuid USER", count=1)
    _credential(draft, line, "setuid", user, _user_exists)
    draft.once("setuid", line.line)
    draft.set_context(setuid=user)


def _user_exists(user: str) -> bool:
    try:
        pwd.getpwnam(user)
    except KeyError:
        number = _numeric_id(user)
        return number is not None and _uid_exists(number)
    return True


def _group_exists(group: str) -> bool:
    try:
        grp.getgrnam(group)
    except KeyError:
        number = _numeric_id(group)
        return number is not None and _gid_exists(number)
    return True


def _uid_exists(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except (KeyError, OverflowError):
        return False
    return True


def _gid_exists(gid: int) -> bool:
    try:
        grp.getgrgid(gid)
    except (KeyError, OverflowError):
        return False
    return True


def stanza_setgid(draft: Draft, line: LogicalLine) -> None:
    (group,) = _args(line, 1, "setgid GROUP", count=1)
    _credential(draft, line, "setgid", group, _group_exists)
    draft.once("setgid", line.line)
    draft.set_context(setgid=group)


def stanza_chdir(draft: Draft, line: LogicalLine) -> None:
    (path,) = _args(line, 1, "chdir DIR", count=1)
    directory = _absolute(draft, line, path, "chdir")
    draft.once("chdir", line.line)
    draft.set_context(chdir=directory)


def stanza_chroot(draft: Draft, line: LogicalLine) -> None:
    (path,) = _args(line, 1, "chroot DIR", count=1)
    directory = _absolute(draft, line, path, "chroot")
    draft.once("chroot", line.line)
    draft.set_context(chroot=directory)


def stanza_umask(draft: Draft, line: LogicalLine) -> None:
    (value,) = _args(line, 1, "umask OCTAL", count=1)
    if not re.fullmatch(r"[0-7]{1,4}", value) or int(value, 8) > 0o777:
        raise StanzaError(f'bad umask "{value}": expected an octal mask from 000 to 777')
    draft.once("umask", line.line)
    draft.set_context(umask=int(value, 8))


def stanza_nice(draft: Draft, line: LogicalLine) -> None:
    (value,) = _args(line, 1, "nice N", count=1)
    nice = _int(value, "nice value", -20, 19)
    draft.once("nice", line.line)
    draft.set_context(nice=nice)


# I/O scheduling classes of ioprio_set(2): IOPRIO_CLASS_NONE, _RT, _BE, _IDLE.
IONICE_CLASSES: Mapping[str, int] = {"none": 0, "realtime": 1, "best-effort": 2, "idle": 3}
_IONICE_DEFAULT_LEVEL = 4  # the kernel's level for a nice value of 0


def stanza_ionice(draft: Draft, line: LogicalLine) -> None:
    (value,) = _args(line, 1, "ionice CLASS[:LEVEL]", count=1)
    name, colon, level_text = value.partition(":")
    if decimal(name) is not None:
        klass = _int(name, "ionice class", 0, 3)
    elif name in IONICE_CLASSES:
        klass = IONICE_CLASSES[name]
    else:
        hint = did_you_mean(name, IONICE_CLASSES) or " (expected idle, best-effort or realtime)"
        raise StanzaError(f'unknown ionice class "{name}"{hint}')
    if klass in (0, 3):  # none and idle have no levels
        if colon:
            raise StanzaError(f'ionice class "{name}" takes no level')
        level = 0
    else:
        level = _int(level_text, "ionice level", 0, 7) if colon else _IONICE_DEFAULT_LEVEL
    draft.once("ionice", line.line)
    draft.set_context(ionice=(klass, level))


LIMIT_RESOURCES: Mapping[str, int] = {
    name: getattr(resource, "RLIMIT_" + name.upper())
    for name in (
        "as", "core", "cpu", "data", "fsize", "memlock", "msgqueue", "nice",
        "nofile", "nproc", "rss", "rtprio", "sigpending", "stack", "rttime",
    )
}  # fmt: skip
_RLIM_MAX = 2**63 - 1


def _limit_value(text: str, what: str) -> int | None:
    if text == "unlimited":
        return None
    value = decimal(text)
    if value is None or value > _RLIM_MAX:
        raise StanzaError(f'bad {what} "{text}": expected a number or "unlimited"')
    return value


def stanza_limit(draft: Draft, line: LogicalLine) -> None:
    usage = "limit RESOURCE SOFT|unlimited HARD|unlimited"
    name, soft_text, hard_text = _args(line, 1, usage, count=3)
    if name not in LIMIT_RESOURCES:
        hint = did_you_mean(name, LIMIT_RESOURCES)
        raise StanzaError(f'unknown resource "{name}" in "limit"{hint}')
    soft = _limit_value(soft_text, f"soft limit for {name}")
    hard = _limit_value(hard_text, f"hard limit for {name}")
    if hard is not None and (soft is None or soft > hard):
        raise StanzaError(f"soft limit {soft_text} for {name} exceeds hard limit {hard_text}")
    resource_id = LIMIT_RESOURCES[name]
    draft.once(f"limit {name}", line.line)
    draft.limits.pop(resource_id, None)  # the last one wins, and goes last
    draft.limits[resource_id] = Limit(resource_id, soft, hard)


OOM_SCORE_MIN, OOM_SCORE_MAX = -1000, 1000
OOM_ADJ_MIN, OOM_ADJ_MAX = -17, 15


def oom_adj_to_score(adj: int) -> int:
    """The kernel's conversion of a legacy ``oom_adj`` (-17..15) to ``oom_score_adj``."""
    if adj == OOM_ADJ_MIN:
        return OOM_SCORE_MIN
    if adj == OOM_ADJ_MAX:
        return OOM_SCORE_MAX
    return int(adj * OOM_SCORE_MAX / -OOM_ADJ_MIN)


def stanza_oom(draft: Draft, line: LogicalLine) -> None:
    if len(line.words) >= 2 and line.words[1].text == "score":
        (value,) = _args(line, 2, "oom score N|never", count=1)
        score = OOM_SCORE_MIN if value == "never" else _int(value, "oom score", -1000, 1000)
    else:  # Upstart's older "oom ADJ|never", on the -17..15 scale
        (value,) = _args(line, 1, "oom score N|never", count=1)
        score = (
            OOM_SCORE_MIN
            if value == "never"
            else oom_adj_to_score(_int(value, "oom adjustment", OOM_ADJ_MIN, OOM_ADJ_MAX))
        )
    draft.once("oom", line.line)
    draft.set_context(oom_score=score)


PROC_NAME_MAX = 15  # bytes, as PR_SET_NAME keeps (TASK_COMM_LEN - 1)


def stanza_proc(draft: Draft, line: LogicalLine) -> None:
    usage = "proc name NAME"
    _sub(line, ("name",), usage)
    (name,) = _args(line, 2, usage, count=1)
    size = len(name.encode())
    if not name or size > PROC_NAME_MAX or "\0" in name:
        raise StanzaError(f'bad process name "{name}": 1 to {PROC_NAME_MAX} bytes (it has {size})')
    draft.once("proc name", line.line)
    draft.set(proc_name=name)


def canonical_capability(text: str) -> str | None:
    """``cap_net_bind_service`` for any of its spellings, None if it is no capability."""
    name = text.lower()
    if not name.startswith("cap_"):
        name = "cap_" + name
    return name if name in CAPABILITIES else None


def stanza_caps(draft: Draft, line: LogicalLine) -> None:
    usage = "caps keep CAPABILITY..."
    _sub(line, ("keep",), usage)
    caps: list[str] = []
    for text in _args(line, 2, usage, minimum=1):
        cap = canonical_capability(text)
        if cap is None:
            hint = did_you_mean("cap_" + text.lower().removeprefix("cap_"), CAPABILITIES)
            raise StanzaError(f'unknown capability "{text}" in "caps keep"{hint}')
        caps.append(cap)
    draft.caps = {**(draft.caps or {}), **dict.fromkeys(caps)}


_CONSOLE = {"none": ConsoleMode.NONE, "log": ConsoleMode.LOG, "output": ConsoleMode.OUTPUT}


def stanza_console(draft: Draft, line: LogicalLine) -> None:
    usage = "console none|log|output"
    mode = _sub(line, (*_CONSOLE, "owner"), usage)
    _args(line, 2, usage, count=0)
    draft.once("console", line.line)
    if mode == "owner":
        draft.warn(line.line, '"console owner" is not supported by busmgr; using "console output"')
        mode = "output"
    draft.set_context(console=_CONSOLE[mode])


# -- metadata and unsupported stanzas --------------------------------------------------------


def stanza_metadata(draft: Draft, line: LogicalLine) -> None:
    key = line.keyword
    (text,) = _args(line, 1, f'{key} "TEXT"', count=1)
    draft.once(key, line.line)
    draft.set(**{key: text})


def stanza_unsupported(draft: Draft, line: LogicalLine) -> None:
    draft.warn(line.line, f'"{line.keyword}" is not supported by busmgr; stanza ignored')


STANZAS: Mapping[str, Handler] = {
    # processes
    "exec": stanza_exec,
    "script": stanza_script,
    "pre-start": stanza_hook,
    "post-start": stanza_hook,
    "pre-stop": stanza_hook,
    "post-stop": stanza_hook,
    # kind and triggers
    "task": stanza_task,
    "manual": stanza_manual,
    "start": stanza_on,
    "stop": stanza_on,
    "emits": stanza_emits,
    "dbus": stanza_dbus,
    "unit": stanza_unit,
    "instance": stanza_instance,
    "socket": stanza_socket,
    # readiness and lifetime
    "expect": stanza_expect,
    "ready": stanza_ready,
    "respawn": stanza_respawn,
    "normal": stanza_normal,
    "kill": stanza_kill,
    "reload": stanza_reload,
    # environment and credentials
    "env": stanza_env,
    "export": stanza_export,
    "setuid": stanza_setuid,
    "setgid": stanza_setgid,
    "chdir": stanza_chdir,
    "chroot": stanza_chroot,
    "umask": stanza_umask,
    "nice": stanza_nice,
    "ionice": stanza_ionice,
    "limit": stanza_limit,
    "oom": stanza_oom,
    "proc": stanza_proc,
    "caps": stanza_caps,
    "console": stanza_console,
    # metadata
    "description": stanza_metadata,
    "author": stanza_metadata,
    "version": stanza_metadata,
    "usage": stanza_metadata,
    # Upstart stanzas busmgr accepts and ignores
    "apparmor": stanza_unsupported,
    "cgroup": stanza_unsupported,
    "tmpfiles": stanza_unsupported,  # ChromeOS Upstart
}


def apply_stanza(draft: Draft, line: LogicalLine) -> None:
    """Run the handler for ``line`` on ``draft``; raises :class:`StanzaError` if it is bad.

    An unknown keyword is an error with the closest known keyword as a hint.
    """
    handler = STANZAS.get(line.keyword)
    if handler is None and line.keyword == "end":
        raise StanzaError(f'"{line.text.strip()}" without a block to end')
    if handler is None:
        raise StanzaError(f'unknown stanza "{line.keyword}"{did_you_mean(line.keyword, STANZAS)}')
    handler(draft, line)
