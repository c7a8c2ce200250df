"""The parsed, frozen description of a job: what a job file says, nothing that happens at run time.

Invariants:

* Only :mod:`busmgr.config` builds a :class:`JobClass`; everything here is immutable, so a running
  :class:`busmgr.job.Job` can hold its class while a reload parses a new one beside it.
* Every value is already validated: signal numbers are real signals (or 0, where a stanza allows
  it), numbers are in range. Users and groups are names or numbers that may not exist yet
  (packages create their users when they are installed): a start looks them up and fails
  clearly while they are missing. Run-time code never re-checks syntax.
* Event expressions are trees of :class:`EventMatch` leaves joined by :class:`EventOp` nodes;
  matching them (and the "every operand of an ``and`` again" re-arming rule) is
  :mod:`busmgr.events`' business, not this module's.
"""

from __future__ import annotations

import enum
import re
import signal
from dataclasses import dataclass, field

# Characters that make an ``exec`` line need a shell (Upstart's rule: quotes, variables, globs,
# redirections, pipes, command lists, escapes).
SHELL_METACHARACTERS = frozenset("~`!$^&*()=|\\{}[];\"'<>?")
SHELL = "/bin/sh"


class ProcessKind(enum.Enum):
    """The five processes of a job's life cycle, in the order they run."""

    PRE_START = "pre-start"
    MAIN = "main"
    POST_START = "post-start"
    PRE_STOP = "pre-stop"
    POST_STOP = "post-stop"


class ConsoleMode(enum.Enum):
    """Where a job's stdin/stdout/stderr go: ``/dev/null``, a log file per job, or the manager's."""

    NONE = "none"
    LOG = "log"
    OUTPUT = "output"


#: Where a job file's or an imported service's output goes when it says nothing (SPEC §2, as
#: Upstart >= 1.4): its log file. ``ExecContext()`` itself keeps ``none`` for processes that
#: are not jobs (the private bus, the session command choose their own).
DEFAULT_CONSOLE = ConsoleMode.LOG


class ExpectMode(enum.Enum):
    """How the main process says it is ready (besides owning a ``dbus`` name)."""

    NONE = "none"
    STOP = "stop"
    FORK = "fork"
    DAEMON = "daemon"
    NOTIFY = "notify"


class Origin(enum.Enum):
    """Where a job class came from: a job file, an imported D-Bus ``.service`` file, or an
    imported XDG autostart entry."""

    FILE = "file"
    DBUS_SERVICE = "dbus-service"
    AUTOSTART = "autostart"


_DECIMAL = re.compile(r"[0-9]{1,20}\Z")


def decimal(text: str) -> int | None:
    """``text`` as a non-negative decimal integer of at most 20 ASCII digits, else None.

    The one way busmgr reads a number it did not write: ``str.isdigit`` also accepts ``²`` or
    ``①`` (which ``int`` refuses), and ``int`` refuses more than 4,300 digits.
    """
    return int(text) if _DECIMAL.match(text) else None


def signal_name(signum: int) -> str:
    """The name of a signal without its ``SIG`` prefix (``SEGV``), as events and the bus show it."""
    try:
        return signal.Signals(signum).name.removeprefix("SIG")
    except ValueError:
        return str(signum)


_NUMBER = re.compile(r"[0-9]{1,3}\Z")
_REALTIME = re.compile(r"SIGRT(MIN|MAX)(?:([+-])([0-9]{1,2}))?\Z")


def parse_signal(text: str) -> int | None:
    """A signal given as ``TERM``, ``SIGTERM``, ``term``, ``RTMIN+3`` or a number (any signal
    the kernel knows, as Upstart accepts them); None when it is not one. Signal 0 is not a
    signal here: the stanzas that allow it say so themselves."""
    word = text.strip().upper()
    num = decimal(word)
    if num is not None:
        return num if num in signal.valid_signals() else None
    if not word.startswith("SIG"):
        word = "SIG" + word
    realtime = _REALTIME.match(word)
    if realtime is not None:
        base, sign, offset = realtime.groups()
        num = int(signal.SIGRTMIN if base == "MIN" else signal.SIGRTMAX)
        num += (1 if sign == "+" else -1) * int(offset or 0)
        return num if signal.SIGRTMIN <= num <= signal.SIGRTMAX else None
    member = signal.Signals.__members__.get(word)
    return int(member) if member is not None else None


# The Linux capabilities by number (``include/uapi/linux/capability.h``), named as ``caps keep``
# stores them: lowercase with the ``cap_`` prefix.
CAPABILITIES: dict[str, int] = {
    name: num
    for num, name in enumerate(
        (
            "cap_chown", "cap_dac_override", "cap_dac_read_search", "cap_fowner",
            "cap_fsetid", "cap_kill", "cap_setgid", "cap_setuid", "cap_setpcap",
            "cap_linux_immutable", "cap_net_bind_service", "cap_net_broadcast",
            "cap_net_admin", "cap_net_raw", "cap_ipc_lock", "cap_ipc_owner",
            "cap_sys_module", "cap_sys_rawio", "cap_sys_chroot", "cap_sys_ptrace",
            "cap_sys_pacct", "cap_sys_admin", "cap_sys_boot", "cap_sys_nice",
            "cap_sys_resource", "cap_sys_time", "cap_sys_tty_config", "cap_mknod",
            "cap_lease", "cap_audit_write", "cap_audit_control", "cap_setfcap",
            "cap_mac_override", "cap_mac_admin", "cap_syslog", "cap_wake_alarm",
            "cap_block_suspend", "cap_audit_read", "cap_perfmon", "cap_bpf",
            "cap_checkpoint_restore",
        )
    )
}  # fmt: skip


_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def is_variable_name(name: str) -> bool:
    """True for a valid environment variable name (``[A-Za-z_][A-Za-z0-9_]*``)."""
    return bool(_VAR_NAME.match(name))


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    """One of a job's processes: an ``exec`` line or a ``script`` block.

    ``command`` is the text after ``exec`` (or the script body). ``line`` is where it was
    defined, for error messages.
    """

    command: str
    script: bool = False
    line: int = 0

    @property
    def needs_shell(self) -> bool:
        """Scripts always run under the shell; an exec line only when it has metacharacters."""
        return self.script or any(c in SHELL_METACHARACTERS for c in self.command)

    def argv(self) -> list[str]:
        """The argument vector to execute.

        ``script`` bodies run as ``/bin/sh -e -c BODY``; an exec line with shell
        metacharacters as ``/bin/sh -e -c "exec LINE"``; any other exec line is split on
        whitespace and executed directly, with no shell process in between.
        """
        if self.script:
            return [SHELL, "-e", "-c", self.command]
        if self.needs_shell:
            return [SHELL, "-e", "-c", "exec " + self.command]
        return self.command.split()


@dataclass(frozen=True, slots=True)
class EventArg:
    """One operand of an event match: ``GLOB`` (positional), ``KEY=GLOB`` or ``KEY!=GLOB``.

    ``pattern`` may contain ``$VAR``/``${VAR}`` references to the job's environment, expanded
    when the expression is matched.
    """

    pattern: str
    key: str | None = None
    negate: bool = False

    def __str__(self) -> str:
        if self.key is None:
            return self.pattern
        return f"{self.key}{'!=' if self.negate else '='}{self.pattern}"


@dataclass(frozen=True, slots=True)
class EventMatch:
    """A leaf of an event expression: an event name and the operands its env must match."""

    name: str
    args: tuple[EventArg, ...] = ()

    def __str__(self) -> str:
        return " ".join([self.name, *map(str, self.args)])


@dataclass(frozen=True, slots=True)
class EventOp:
    """``left and right`` or ``left or right``."""

    op: str  # "and" | "or"
    left: EventExpr
    right: EventExpr

    def __str__(self) -> str:
        def side(e: EventExpr) -> str:
            return f"({e})" if isinstance(e, EventOp) and e.op != self.op else str(e)

        return f"{side(self.left)} {self.op} {side(self.right)}"


EventExpr = EventMatch | EventOp


#: The event a D-Bus activation request for a bus name becomes (SPEC §2).
DBUS_ACTIVATION = "dbus-activation"


def activation_match(bus_name: str) -> EventMatch:
    """The leaf ``dbus-activation NAME=<bus_name>``: how a job providing ``bus_name`` is
    started on demand (a bus name has no glob characters, so it matches only itself)."""
    return EventMatch(DBUS_ACTIVATION, (EventArg(bus_name, key="NAME"),))


#: The event a connection on a job's ``socket`` becomes while the job is down: the job's
#: ``activated_by`` has one leaf per socket (:func:`socket_match`).
SOCKET_ACTIVATION = "socket"


def literal_pattern(text: str) -> str:
    """An event operand pattern that matches exactly ``text``: glob characters are put in
    brackets (``*`` -> ``[*]``) and ``$`` is written ``${}`` (the literal-``$`` escape of
    :func:`busmgr.events.expand`)."""
    out = []
    for char in text:
        if char in "*?[":
            out.append(f"[{char}]")
        elif char == "$":
            out.append("${}")
        else:
            out.append(char)
    return "".join(out)


class SocketKind(enum.Enum):
    """``socket unix PATH [MODE]`` or ``socket tcp HOST:PORT``."""

    UNIX = "unix"
    TCP = "tcp"


@dataclass(frozen=True, slots=True)
class SocketSpec:
    """One ``socket`` stanza: a listening socket busmgr creates, holds and passes to the job.

    A ``UNIX`` socket has ``path``: absolute, or ``@NAME`` for the abstract namespace, and the
    ``mode`` its file gets. A ``TCP`` socket has ``host`` (an IPv4 or IPv6 address literal, or
    ``*`` for every address) and ``port`` (1-65535). ``line`` is where the stanza was written.
    Two specs with the same :attr:`key` are the same socket (a reload keeps it open).
    """

    kind: SocketKind
    path: str = ""
    host: str = ""
    port: int = 0
    mode: int = 0o666
    line: int = 0

    @property
    def key(self) -> tuple[str, str, str, int]:
        """What identifies the socket (its address), whatever the mode or the line."""
        return (self.kind.value, self.path, self.host, self.port)

    @property
    def address(self) -> str:
        """``/run/x.sock``, ``@name``, ``127.0.0.1:80``, ``[::1]:80`` or ``*:80``."""
        if self.kind is SocketKind.UNIX:
            return self.path
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.kind.value} {self.address}"

    def event_env(self) -> tuple[tuple[str, str], ...]:
        """The variables of its :data:`SOCKET_ACTIVATION` event: ``PROTO=unix SOCKET_PATH=...``
        or ``PROTO=tcp ADDR=... PORT=...`` (the names Upstart's socket bridge used)."""
        if self.kind is SocketKind.UNIX:
            return (("PROTO", "unix"), ("SOCKET_PATH", self.path))
        return (("PROTO", "tcp"), ("ADDR", self.host), ("PORT", str(self.port)))


def socket_match(spec: SocketSpec) -> EventMatch:
    """The ``activated_by`` leaf of a socket: its event, every value matched literally."""
    return EventMatch(
        SOCKET_ACTIVATION,
        tuple(EventArg(literal_pattern(value), key=key) for key, value in spec.event_env()),
    )


def expr_events(expr: EventExpr | None) -> list[EventMatch]:
    """Every leaf of an expression, left to right."""
    if expr is None:
        return []
    if isinstance(expr, EventMatch):
        return [expr]
    return expr_events(expr.left) + expr_events(expr.right)


@dataclass(frozen=True, slots=True)
class Limit:
    """``limit RESOURCE SOFT HARD``: ``None`` is unlimited; ``resource`` is an RLIMIT_* number."""

    resource: int
    soft: int | None
    hard: int | None


@dataclass(frozen=True, slots=True)
class EnvEntry:
    """``env KEY=VALUE`` or ``env KEY`` (``value`` None: copy from the manager's environment)."""

    key: str
    value: str | None


@dataclass(frozen=True, slots=True)
class ExecContext:
    """What must be set up in the child before ``exec``: credentials, limits, console.

    :attr:`needs_child_setup` is False for the common case, so spawning can take the fast
    ``posix_spawn`` path that runs no Python code in the child.
    """

    setuid: str | None = None
    setgid: str | None = None
    chdir: str | None = None
    chroot: str | None = None
    umask: int | None = None
    nice: int | None = None
    ionice: tuple[int, int] | None = None  # (class, level)
    limits: tuple[Limit, ...] = ()
    oom_score: int | None = None  # -1000 for "never"
    caps_keep: tuple[str, ...] | None = None
    console: ConsoleMode = ConsoleMode.NONE

    @property
    def needs_child_setup(self) -> bool:
        """True if some setting can only be applied in the child between fork and exec."""
        return any(
            v is not None
            for v in (
                self.setuid,
                self.setgid,
                self.chroot,
                self.umask,
                self.nice,
                self.ionice,
                self.oom_score,
                self.caps_keep,
            )
        ) or bool(self.limits)


@dataclass(frozen=True, slots=True)
class RespawnPolicy:
    """``respawn``, ``respawn limit COUNT INTERVAL`` (COUNT 0: no limit), ``respawn delay``."""

    enabled: bool = False
    limit: int = 10
    interval: float = 5.0
    delay: float = 0.0


@dataclass(frozen=True)
class JobClass:
    """Everything one job file (or imported ``.service`` file) says.

    Invariant: ``processes`` maps each defined :class:`ProcessKind` to its spec; a job with no
    ``MAIN`` is valid (an "abstract" job that only runs hooks, or just tracks state).
    """

    name: str
    source: str = ""
    origin: Origin = Origin.FILE
    description: str = ""
    author: str = ""
    version: str = ""
    usage: str = ""
    processes: dict[ProcessKind, ProcessSpec] = field(default_factory=dict)
    task: bool = False
    manual: bool = False
    start_on: EventExpr | None = None
    stop_on: EventExpr | None = None
    emits: tuple[str, ...] = ()
    dbus_name: str | None = None
    # Events that start the job whatever ``manual`` and ``start on`` say, each on its own:
    # the D-Bus activation of its bus name (config adds it for every ``dbus NAME``), and a
    # connection on one of its sockets (one leaf per ``socket``).
    activated_by: tuple[EventMatch, ...] = ()
    # ``socket`` stanzas, in the order given: the main process gets them as fds 3, 4, ...
    sockets: tuple[SocketSpec, ...] = ()
    instance: str = ""
    expect: ExpectMode = ExpectMode.NONE
    ready_timeout: float = 90.0
    respawn: RespawnPolicy = RespawnPolicy()
    normal_exit_codes: frozenset[int] = frozenset()
    normal_exit_signals: frozenset[int] = frozenset()
    kill_signal: int = int(signal.SIGTERM)
    kill_timeout: float = 5.0
    reload_signal: int = int(signal.SIGHUP)
    env: tuple[EnvEntry, ...] = ()
    export: tuple[str, ...] = ()
    context: ExecContext = ExecContext()
    proc_name: str | None = None
    systemd_service: str | None = None  # SystemdService= of an imported .service file
    # The systemd unit names this job stands for (``unit`` stanza, an imported file's
    # SystemdService=): a bus daemon's activation request naming one of them starts this job.
    units: tuple[str, ...] = ()
    # Where ``start on`` / ``stop on`` were written (0: not given, or not from a file), so
    # checks across jobs can point at the offending stanza.
    start_on_line: int = 0
    stop_on_line: int = 0

    def __hash__(self) -> int:  # processes is a dict; identity is what matters for classes
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other

    @property
    def main(self) -> ProcessSpec | None:
        return self.processes.get(ProcessKind.MAIN)

    def exit_failed(self, status: int | None, signum: int | None) -> bool:
        """Whether an exit of the main process while the goal is ``start`` counts as a failure.

        Upstart's rule: an exit listed in ``normal exit`` never fails; otherwise a signal or a
        non-zero status fails, and so does status 0 of a respawning service (it was meant to
        keep running). A task's status 0 is always a success.
        """
        if signum is not None:
            return signum not in self.normal_exit_signals
        if status in self.normal_exit_codes:
            return False
        if status == 0:
            return self.respawn.enabled and not self.task
        return True
