"""The importer of XDG autostart entries: ``NAME.desktop`` -> a job, a skip with its reason, or a
refusal with ``FILE:LINE``.

Model (the Desktop Application Autostart Specification and the Desktop Entry Specification):
the autostart directories are ``$XDG_CONFIG_HOME/autostart`` (default ``~/.config``), then
``DIR/autostart`` for each ``DIR`` of ``$XDG_CONFIG_DIRS`` (default ``/etc/xdg``), in that order
of importance; an entry is known by its file name, and the most important directory that has a
file of that name decides for it (a user's ``Hidden=true`` copy disables the system's entry).
The less important files of the same name are listed as skipped, "overridden by" the one used.

Each entry (its ``[Desktop Entry]`` group, read by :mod:`busmgr.config.keyfile`) is judged in
this order, and the first rule that applies decides:

1. a syntax error, or no ``[Desktop Entry]`` group: refused (ERROR diagnostics);
2. ``Hidden=true``: skipped (the entry is deleted, so nothing else of it is checked);
3. no ``Type``: refused; a ``Type`` other than ``Application``: skipped;
4. ``Exec`` (unless ``DBusActivatable=true``): refused when missing or malformed (quoting, an
   unknown field code); this is checked on every desktop, so ``busmgr check`` finds it;
5. ``X-GNOME-Autostart-enabled=false``: skipped;
6. ``OnlyShowIn`` / ``NotShowIn`` against ``$XDG_CURRENT_DESKTOP`` (a ``:``-separated list;
   the first of its names that either list mentions decides, as GLib does): skipped when not
   shown;
7. an autostart condition: ``AutostartCondition`` / ``X-GNOME-Autostart-Condition`` of kind
   ``if-exists FILE`` / ``unless-exists FILE`` (relative to ``$XDG_CONFIG_HOME``), and KDE's
   ``X-KDE-autostart-condition=FILE:GROUP:KEY:DEFAULT`` (a boolean in a key file of
   ``$XDG_CONFIG_HOME``) are evaluated; any other kind (``GSettings ...``, ``GNOME3 ...``)
   cannot be, and the entry is skipped, saying so (running a screen reader whose condition is
   off would be worse than not running an entry);
8. ``TryExec`` that is not an executable file (a bare name is looked up in ``$PATH``): skipped;
9. otherwise it is a job.

The job is named ``autostart-`` + the file name without ``.desktop`` (of origin
:attr:`Origin.AUTOSTART`, its ``source`` the entry's path). Its main process is ``Exec`` with the
field codes expanded for a start without files (``%f %F %u %U`` and the deprecated codes
vanish, ``%i`` is ``--icon ICON``, ``%c`` the translated ``Name``, ``%k`` the entry's path,
``%%`` a ``%``), turned into an ``exec`` line that runs exactly that argument vector (quoted for
``/bin/sh`` only when it needs to be). An entry with ``DBusActivatable=true`` (its file name
is then its bus name) is a task that calls ``org.freedesktop.Application.Activate`` with
``gdbus``: the bus activates the name through busmgr, and the task is done when the
application is up. ``X-GNOME-AutoRestart=true`` is ``respawn``; ``Path`` is ``chdir``; output
goes to the job's log.

Phases: the job starts on ``desktop-phase PHASE=P``, where P is one of :data:`PHASES`, from
``X-GNOME-Autostart-Phase`` or ``X-KDE-autostart-phase`` (0, 1, 2: Initialization, Desktop,
Applications); the KDE key is preferred when ``KDE`` is among the current desktops, the GNOME
key otherwise. GNOME's phases before Initialization (``EarlyInitialization``,
``PreDisplayServer``, ``DisplayServer``) run in Initialization, the first phase busmgr has;
``Application`` and any unknown value mean Applications (an unknown one with a warning).
``X-GNOME-Autostart-Delay=N`` (seconds, N > 0) makes it start on ``desktop-delay PHASE=P
DELAY=N`` instead, which :mod:`busmgr.desktop` emits N seconds after the phase began.

Invariants: :func:`parse_autostart_entry` is pure given its :class:`AutostartContext` (whose
``program_exists`` and ``file_exists`` are the only look-ups at the file system); the import
(:func:`autostart_steps`) only adds listing and reading files. Every entry ends as exactly one
of: a job, a :class:`Skipped` with a reason, or ERROR diagnostics (and a :class:`Skipped`
"refused" row, so ``busmgr list`` shows it too). Nothing here raises for bad input.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from busmgr.config.diagnostics import Diagnostic, Severity, has_errors
from busmgr.config.files import Skipped, config_files, run_steps
from busmgr.config.keyfile import (
    Group,
    parse_boolean,
    read_key_file,
    split_list,
    unescape,
)
from busmgr.config.parser import Trust, read_text
from busmgr.config.stanzas import bus_name_problem
from busmgr.jobclass import (
    SHELL_METACHARACTERS,
    ConsoleMode,
    EventArg,
    EventMatch,
    ExecContext,
    JobClass,
    Origin,
    ProcessKind,
    ProcessSpec,
    RespawnPolicy,
)
from busmgr.options import xdg_config_home

__all__ = [
    "AUTOSTART_SUFFIX",
    "DELAY_EVENT",
    "END_EVENT",
    "ENTRY_GROUP",
    "JOB_PREFIX",
    "PHASES",
    "PHASE_EVENT",
    "START_EVENT",
    "AutostartContext",
    "AutostartImport",
    "AutostartResult",
    "ExecError",
    "Skipped",
    "autostart_dirs",
    "autostart_steps",
    "command_line",
    "exec_argv",
    "import_autostart",
    "parse_autostart_entry",
    "parse_autostart_path",
]

AUTOSTART_SUFFIX = ".desktop"
ENTRY_GROUP = "Desktop Entry"
JOB_PREFIX = "autostart-"

#: The events of a desktop session (emitted by :mod:`busmgr.desktop` and ``EndSession``).
START_EVENT = "desktop-start"
PHASE_EVENT = "desktop-phase"
DELAY_EVENT = "desktop-delay"
END_EVENT = "desktop-end"

#: The phases, in the order they begin.
PHASES = ("Initialization", "WindowManager", "Panel", "Desktop", "Applications")

_GNOME_PHASES = {
    "EarlyInitialization": "Initialization",
    "PreDisplayServer": "Initialization",
    "DisplayServer": "Initialization",
    **{phase: phase for phase in PHASES},
    "Application": "Applications",
}
_KDE_PHASES = {"0": "Initialization", "1": "Desktop", "2": "Applications"}
_CONDITION_KEYS = ("AutostartCondition", "X-GNOME-Autostart-Condition", "X-KDE-autostart-condition")

#: Field codes that stand for files or URLs, or are deprecated: they vanish at autostart.
_VANISHING_CODES = frozenset("fFuUdDnNvm")
_QUOTED_ESCAPES = frozenset('"`$\\')

#: How a ``DBusActivatable`` entry is started: the Activate call of the application's
#: ``org.freedesktop.Application`` interface, which makes the bus activate its name.
ACTIVATE_METHOD = "org.freedesktop.Application.Activate"
GDBUS = "gdbus"


# ============================================================================ context and results
def _program_exists(name: str, search_path: str) -> bool:
    """Whether ``name`` is an executable file (a bare name is looked up in ``search_path``)."""
    if "/" in name:
        return os.path.isfile(name) and os.access(name, os.X_OK)
    return shutil.which(name, path=search_path) is not None


def _read_config(path: str) -> str | None:
    """The text of a configuration file, or None when it cannot be read as UTF-8."""
    text, _problem = read_text(path)
    return text


@dataclass(frozen=True)
class AutostartContext:
    """What an entry is judged against: the current desktops (``$XDG_CURRENT_DESKTOP``), the
    locale of translated names, ``$XDG_CONFIG_HOME`` (conditions name files there), and the
    look-ups at the file system (tests give their own)."""

    desktops: tuple[str, ...] = ()
    locale: str = ""
    config_home: str = ""
    program_exists: Callable[[str], bool] = field(default=lambda _name: True)
    file_exists: Callable[[str], bool] = field(default=lambda _path: False)
    read_config: Callable[[str], str | None] = field(default=lambda _path: None)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> AutostartContext:
        """The context of a session whose environment is ``environ``."""
        desktops = tuple(d for d in environ.get("XDG_CURRENT_DESKTOP", "").split(":") if d)
        locale = next((environ[k] for k in ("LC_ALL", "LC_MESSAGES", "LANG") if environ.get(k)), "")
        search_path = environ.get("PATH") or os.defpath
        return cls(
            desktops=desktops,
            locale=locale,
            config_home=str(xdg_config_home(environ)),
            program_exists=lambda name: _program_exists(name, search_path),
            file_exists=os.path.exists,
            read_config=_read_config,
        )


@dataclass(frozen=True, slots=True)
class AutostartResult:
    """One entry judged: the job, or the reason it was skipped, and every diagnostic. With
    ERROR diagnostics both are None (the entry is refused)."""

    job: JobClass | None
    skipped: str | None = None
    diagnostics: tuple[Diagnostic, ...] = ()


@dataclass(frozen=True)
class AutostartImport:
    """Every entry of the autostart directories: jobs by name, skipped entries (refused ones
    included, with the reason), diagnostics, and the names of the refused entries."""

    jobs: dict[str, JobClass]
    skipped: tuple[Skipped, ...] = ()
    diagnostics: tuple[Diagnostic, ...] = ()
    failed: frozenset[str] = frozenset()


# ============================================================================ Exec
class ExecError(ValueError):
    """An ``Exec`` value that cannot be turned into an argument vector."""


def _split_words(text: str) -> list[str]:
    """Split a (string-unescaped) ``Exec`` value into words: blanks separate them; ``"..."``
    quotes with ``\\"``, ``\\` ``, ``\\$`` and ``\\\\`` escaped inside (the specification's
    rule); ``'...'`` quotes literally and a backslash outside quotes escapes the next character
    (what GLib's shell-like parser accepts too, and real entries use)."""
    words: list[str] = []
    current: list[str] = []
    in_word = False
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in " \t\n":
            if in_word:
                words.append("".join(current))
                current, in_word = [], False
            i += 1
            continue
        in_word = True
        if ch == '"':
            i += 1
            while True:
                if i >= n:
                    raise ExecError("a double quote is not closed")
                ch = text[i]
                if ch == '"':
                    i += 1
                    break
                if ch == "\\" and i + 1 < n and text[i + 1] in _QUOTED_ESCAPES:
                    current.append(text[i + 1])
                    i += 2
                    continue
                current.append(ch)
                i += 1
        elif ch == "'":
            end = text.find("'", i + 1)
            if end < 0:
                raise ExecError("a single quote is not closed")
            current.append(text[i + 1 : end])
            i = end + 1
        elif ch == "\\" and i + 1 < n:
            current.append(text[i + 1])
            i += 2
        else:
            current.append(ch)
            i += 1
    if in_word:
        words.append("".join(current))
    return words


def _expand_word(word: str, name: str, icon: str, source: str) -> list[str]:
    """One word with its field codes expanded: zero, one or (``%i``) two arguments."""
    if len(word) == 2 and word[0] == "%" and word[1] in _VANISHING_CODES:
        return []
    if word == "%i":
        return ["--icon", icon] if icon else []
    out: list[str] = []
    i = 0
    while i < len(word):
        ch = word[i]
        if ch != "%":
            out.append(ch)
            i += 1
            continue
        if i + 1 >= len(word):
            raise ExecError('a lone "%" at the end of an argument (write "%%" for a percent sign)')
        code = word[i + 1]
        if code == "%":
            out.append("%")
        elif code == "c":
            out.append(name)
        elif code == "k":
            out.append(source)
        elif code == "i":
            out.append(icon)
        elif code not in _VANISHING_CODES:
            raise ExecError(f'unknown field code "%{code}"')
        i += 2
    expanded = "".join(out)
    return [expanded] if expanded or not word else []


def exec_argv(value: str, *, name: str = "", icon: str = "", source: str = "") -> list[str]:
    """The argument vector of an ``Exec`` value as written in the file (string escapes are
    decoded here first, then the quoting rules, then the field codes). Raises
    :class:`ExecError` with the problem."""
    words = _split_words(unescape(value))
    argv: list[str] = []
    for word in words:
        argv.extend(_expand_word(word, name, icon, source))
    if not argv:
        raise ExecError("no program to run")
    if not argv[0]:
        raise ExecError("the program name is empty")
    return argv


def _quote(arg: str, first: bool) -> str:
    # "=" matters to the shell only in the first word (an assignment); elsewhere it is plain,
    # though it still makes the line go through the shell (see ProcessSpec.needs_shell).
    special = SHELL_METACHARACTERS if first else SHELL_METACHARACTERS - {"="}
    plain = arg and not any(ch in special or ch.isspace() for ch in arg)
    return arg if plain else "'" + arg.replace("'", "'\\''") + "'"


def command_line(argv: list[str]) -> str:
    """An ``exec`` line (:class:`ProcessSpec`) that runs exactly ``argv``: the words as they
    are when none needs quoting (run directly), else each word that does in single quotes
    (then ``/bin/sh`` runs it, and its quoting gives back ``argv``)."""
    return " ".join(_quote(arg, i == 0) for i, arg in enumerate(argv))


def _object_path(bus_name: str) -> str:
    """The object path of an application's bus name (Desktop Entry Specification, D-Bus
    activation: ``.`` becomes ``/``, ``-`` becomes ``_``)."""
    return "/" + bus_name.replace(".", "/").replace("-", "_")


def activate_argv(bus_name: str) -> list[str]:
    """The command that starts a ``DBusActivatable`` application, through the bus."""
    return [
        GDBUS,
        "call",
        "--session",
        "--dest",
        bus_name,
        "--object-path",
        _object_path(bus_name),
        "--method",
        ACTIVATE_METHOD,
        "{}",
    ]


# ============================================================================ one entry
def entry_id(path: str | os.PathLike[str]) -> str:
    """The entry's id: its file name without ``.desktop``."""
    return Path(path).name.removesuffix(AUTOSTART_SUFFIX)


def job_name_of(path: str | os.PathLike[str]) -> str:
    """The job an entry becomes: ``autostart-`` + its id."""
    return JOB_PREFIX + entry_id(path)


def _shown(group: Group, desktops: tuple[str, ...]) -> str | None:
    """Why ``OnlyShowIn`` / ``NotShowIn`` hide the entry on ``desktops``, or None."""
    only_raw, not_raw = group.value("OnlyShowIn"), group.value("NotShowIn")
    only = split_list(only_raw or "")
    hidden = split_list(not_raw or "")
    for desktop in desktops:
        if desktop in only:
            return None
        if desktop in hidden:
            return f"NotShowIn={not_raw} includes {desktop}"
    if only_raw is None:
        return None
    current = ":".join(desktops) if desktops else "no desktop (XDG_CURRENT_DESKTOP is not set)"
    return f"OnlyShowIn={only_raw} does not include {current}"


_KDE_TRUE = frozenset({"true", "on", "yes", "1"})


def _kde_condition(value: str, context: AutostartContext) -> bool | None:
    """KDE's ``FILE:GROUP:KEY:DEFAULT``: the boolean KEY of GROUP in ``$XDG_CONFIG_HOME/FILE``
    (a key file), DEFAULT when it is not there; None when the condition is malformed."""
    parts = value.split(":")
    if len(parts) != 4 or not all(parts[:3]):
        return None
    filename, group_name, key, default = parts
    text = context.read_config(os.path.join(context.config_home, filename))
    group = read_key_file(text, filename).group(group_name) if text is not None else None
    raw = group.value(key) if group is not None else None
    return (raw if raw is not None else default).strip().lower() in _KDE_TRUE


def _condition(group: Group, context: AutostartContext) -> str | None:
    """Why an autostart condition keeps the entry from starting, or None."""
    for key in _CONDITION_KEYS:
        raw = group.value(key)
        if raw is None or not raw.strip():
            continue
        value = unescape(raw).strip()
        if key == "X-KDE-autostart-condition":
            met = _kde_condition(value, context)
            if met is None:
                return f"{key}={raw}: not FILE:GROUP:KEY:DEFAULT"
            if not met:
                return f"{key}={raw}: the setting is off"
            continue
        words = value.split(None, 1)
        kind = words[0].lower()
        argument = words[1].strip() if len(words) > 1 else ""
        if kind in ("if-exists", "unless-exists") and argument:
            target = os.path.join(context.config_home, argument)
            exists = context.file_exists(target)
            if exists != (kind == "if-exists"):
                return f"{key}={raw}: {target} {'exists' if exists else 'does not exist'}"
            continue
        return f"{key}={raw}: busmgr cannot evaluate this kind of condition"
    return None


def _phase(group: Group, context: AutostartContext, path: str) -> tuple[str, int, list[Diagnostic]]:
    """The entry's phase, the line it was given on (0: default) and any warning."""
    gnome, kde = group.get("X-GNOME-Autostart-Phase"), group.get("X-KDE-autostart-phase")
    order = (kde, gnome) if "KDE" in context.desktops else (gnome, kde)
    entry = next((e for e in order if e is not None), None)
    if entry is None:
        return "Applications", 0, []
    value = unescape(entry.value).strip()
    table = _KDE_PHASES if entry is kde else _GNOME_PHASES
    phase = table.get(value)
    if phase is not None:
        return phase, entry.line, []
    message = f'{entry.key}={entry.value}: unknown phase; starting it in "Applications"'
    return "Applications", entry.line, [Diagnostic(path, entry.line, message, Severity.WARNING)]


def _delay(group: Group, path: str) -> tuple[float, list[Diagnostic]]:
    entry = group.get("X-GNOME-Autostart-Delay")
    if entry is None:
        return 0.0, []
    try:
        delay = float(entry.value)
    except ValueError:
        delay = -1.0
    if not (0 <= delay < 86400):  # also refuses nan and inf
        message = f"X-GNOME-Autostart-Delay={entry.value}: not a number of seconds; no delay"
        return 0.0, [Diagnostic(path, entry.line, message, Severity.WARNING)]
    return delay, []


def _boolean(group: Group, key: str, path: str, problems: list[Diagnostic]) -> bool:
    entry = group.get(key)
    if entry is None:
        return False
    value = parse_boolean(entry.value)
    if value is None:
        message = f'{key}={entry.value}: not a boolean (true or false); taken as "false"'
        problems.append(Diagnostic(path, entry.line, message, Severity.WARNING))
        return False
    return value


def _start_on(phase: str, delay: float) -> EventMatch:
    if delay > 0:
        return EventMatch(
            DELAY_EVENT, (EventArg(phase, key="PHASE"), EventArg(f"{delay:g}", key="DELAY"))
        )
    return EventMatch(PHASE_EVENT, (EventArg(phase, key="PHASE"),))


def parse_autostart_entry(text: str, path: str, context: AutostartContext) -> AutostartResult:
    """Judge one entry (the text of the file at ``path``); see the module docstring."""
    keyfile = read_key_file(text, path)
    problems = list(keyfile.diagnostics)
    group = keyfile.group(ENTRY_GROUP)
    if group is None and not has_errors(problems):
        problems.append(Diagnostic(path, 0, f"no [{ENTRY_GROUP}] group"))
    if group is None or has_errors(problems):
        return AutostartResult(None, None, tuple(problems))

    def skip(reason: str) -> AutostartResult:
        return AutostartResult(None, reason, tuple(problems))

    def refuse(line: int, message: str) -> AutostartResult:
        problems.append(Diagnostic(path, line, message))
        return AutostartResult(None, None, tuple(problems))

    if _boolean(group, "Hidden", path, problems):
        return skip("Hidden=true: the entry is disabled")
    kind = group.get("Type")
    if kind is None:
        return refuse(0, f"no Type= in [{ENTRY_GROUP}]")
    if unescape(kind.value) != "Application":
        return skip(f"Type={kind.value}: only applications are started")

    name_entry = group.localized("Name", context.locale)
    name = unescape(name_entry.value) if name_entry else entry_id(path)
    if name_entry is None:
        message = f"no Name= in [{ENTRY_GROUP}]; using the file name"
        problems.append(Diagnostic(path, 0, message, Severity.WARNING))
    icon = unescape(group.value("Icon") or "")
    activatable = _boolean(group, "DBusActivatable", path, problems)
    bus_name = entry_id(path)
    if activatable and (problem := bus_name_problem(bus_name)) is not None:
        line = group.get("DBusActivatable")
        message = (
            f'DBusActivatable=true, but the file name "{bus_name}" is not a bus name '
            f"({problem}); using Exec"
        )
        problems.append(Diagnostic(path, line.line if line else 0, message, Severity.WARNING))
        activatable = False
    exec_entry = group.get("Exec")
    argv: list[str] | None = None
    if exec_entry is not None:
        try:
            argv = exec_argv(exec_entry.value, name=name, icon=icon, source=path)
        except ExecError as err:
            return refuse(exec_entry.line, f"Exec={exec_entry.value}: {err}")
    use_bus = activatable and context.program_exists(GDBUS)
    if argv is None and not use_bus:
        missing = f" (and {GDBUS} is not installed for DBusActivatable)" if activatable else ""
        return refuse(0, f"no Exec= in [{ENTRY_GROUP}]{missing}")

    enabled = group.value("X-GNOME-Autostart-enabled")
    if enabled is not None and parse_boolean(enabled) is False:
        return skip("X-GNOME-Autostart-enabled=false: the entry is disabled")
    if (hidden := _shown(group, context.desktops)) is not None:
        return skip(hidden)
    if (unmet := _condition(group, context)) is not None:
        return skip(unmet)
    try_exec = group.value("TryExec")
    if try_exec and not context.program_exists(unescape(try_exec)):
        where = "is not an executable file" if "/" in try_exec else "is not found in PATH"
        return skip(f"TryExec={try_exec} {where}")

    phase, phase_line, phase_problems = _phase(group, context, path)
    delay, delay_problems = _delay(group, path)
    problems += phase_problems + delay_problems
    restart = _boolean(group, "X-GNOME-AutoRestart", path, problems)
    workdir = unescape(group.value("Path") or "") or None
    if use_bus:
        main = ProcessSpec(command_line(activate_argv(bus_name)), line=0)
    else:
        main = ProcessSpec(command_line(argv or []), line=exec_entry.line if exec_entry else 0)
    job = JobClass(
        name=job_name_of(path),
        source=path,
        origin=Origin.AUTOSTART,
        description=name,
        processes={ProcessKind.MAIN: main},
        task=use_bus,
        start_on=_start_on(phase, delay),
        start_on_line=phase_line,
        respawn=RespawnPolicy(enabled=restart and not use_bus),
        context=ExecContext(chdir=workdir, console=ConsoleMode.LOG),
    )
    return AutostartResult(job, None, tuple(problems))


def parse_autostart_path(
    path: str | os.PathLike[str], context: AutostartContext, trust: Trust | None = None
) -> AutostartResult:
    """Read and judge one entry (``trust`` as for job files)."""
    text, problem = read_text(path, trust)
    if text is None:
        return AutostartResult(None, None, (problem,) if problem else ())
    return parse_autostart_entry(text, os.fspath(path), context)


# ============================================================================ the directories
def autostart_dirs(environ: Mapping[str, str]) -> list[Path]:
    """The autostart directories, most important first (XDG Base Directory specification:
    relative paths are ignored; a directory is listed once)."""
    bases = [xdg_config_home(environ)]
    config_dirs = environ.get("XDG_CONFIG_DIRS", "") or "/etc/xdg"
    bases += [Path(d) for d in config_dirs.split(":") if os.path.isabs(d)]
    return list(dict.fromkeys(base / "autostart" for base in bases))


def _refusal(result: AutostartResult) -> str:
    first = next((d for d in result.diagnostics if d.is_error), None)
    if first is None:
        return "refused"
    where = f"line {first.line}: " if first.line > 0 else ""
    return f"refused: {where}{first.message}"


def _utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:  # undecodable bytes of a file name (surrogate escapes)
        return False
    return True


def autostart_steps(
    dirs: Iterable[str | os.PathLike[str]], context: AutostartContext, trust: Trust | None = None
) -> Generator[None, None, AutostartImport]:
    """Judge every entry of ``dirs`` (most important first), yielding after each file (see
    ``load_steps``); returns the :class:`AutostartImport`."""
    jobs: dict[str, JobClass] = {}
    skipped: list[Skipped] = []
    diagnostics: list[Diagnostic] = []
    failed: set[str] = set()
    decided: dict[str, str] = {}  # file name -> the path that decides for it
    for directory in dirs:
        files, problems = config_files(directory, AUTOSTART_SUFFIX)
        diagnostics.extend(problems)
        for path in files:
            name, source = job_name_of(path), os.fspath(path)
            if not _utf8(source):
                # A job name, a bus string and a log line must be text: say where, and go on.
                label = os.fsencode(source).decode(errors="replace")
                diagnostics.append(Diagnostic(label, 0, "the path is not valid UTF-8; ignored"))
                continue
            if path.name in decided:
                skipped.append(Skipped(name, source, f"overridden by {decided[path.name]}"))
                continue
            decided[path.name] = source
            result = parse_autostart_path(path, context, trust)
            diagnostics.extend(result.diagnostics)
            if result.job is not None:
                jobs[name] = result.job
            elif result.skipped is not None:
                skipped.append(Skipped(name, source, result.skipped))
            else:
                skipped.append(Skipped(name, source, _refusal(result)))
                failed.add(name)
            yield
    return AutostartImport(jobs, tuple(skipped), tuple(diagnostics), frozenset(failed))


def import_autostart(
    dirs: Iterable[str | os.PathLike[str]], context: AutostartContext, trust: Trust | None = None
) -> AutostartImport:
    """:func:`autostart_steps` at once."""
    return run_steps(autostart_steps(dirs, context, trust))
