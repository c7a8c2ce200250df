"""The environment of job processes, built in layers (SPEC §1 "Job environment", §4).

Later layers win:

1. the base: session mode, the manager's own environment at start (minus the variables that
   are the manager's alone, :data:`PRIVATE`) plus ``DBUS_SESSION_BUS_ADDRESS``; system mode,
   only ``PATH``, ``TERM`` and ``DBUS_SYSTEM_BUS_ADDRESS``;
2. the activation environment (``SetEnvironment`` / ``UpdateActivationEnvironment``, and
   ``busmgr setenv`` / ``unsetenv``): variables set, and variables unset (which, in session
   mode, hide those of layer 1 too, as systemd's ``UnsetEnvironment`` and Upstart's
   ``unset-env`` do; system mode's fixed base stays). In session mode for every job; in system
   mode only for the jobs that provide a bus name (the services a bus daemon would have
   activated, and which it would have given that environment), never for the others;
3. for a job that provides a bus name, ``DBUS_STARTER_ADDRESS`` and ``DBUS_STARTER_BUS_TYPE``
   (``system`` or ``session``), as dbus-daemon sets them for the services it activates;
4. the job's ``env`` stanzas (``env KEY`` copies from the manager's environment; values may
   reference the layers below as ``$VAR``);
5. the env of the event that started the job, then the start request's env (the caller passes
   them as ``layers``).

Authority (system mode): only root may change the activation environment directly (the caller
policy, :mod:`busmgr.bus.auth`, refuses everyone else before a request gets here). What the bus
daemon forwards from ``UpdateActivationEnvironment`` comes from a caller busmgr cannot see (the
daemon lets root and its own user through), so it is taken without the variables that decide
what a root process loads or where it connects (:func:`unsafe_variable`: ``PATH``, ``LD_*``,
interpreter and toolkit search paths, ``DBUS_*``...): those are dropped, and the caller is told
which.

Invariant: :class:`Environment` holds the only mutable copy of the activation environment; the
manager's own environment (``environ``) never changes after start. A name is never both set
and unset in the activation layer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from busmgr.errors import ManagerError
from busmgr.events import expand
from busmgr.jobclass import JobClass, is_variable_name
from busmgr.options import Mode

__all__ = ["DEFAULT_PATH", "PRIVATE", "Environment", "unsafe_variable"]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: Variables of the manager's own environment that must not leak into jobs: they describe the
#: manager's own start (its bus, its own supervisor's notify socket and sockets) or its control.
PRIVATE = frozenset(
    {
        "BUSMGR_ADDRESS",
        "NOTIFY_SOCKET",
        "DBUS_STARTER_ADDRESS",
        "DBUS_STARTER_BUS_TYPE",
        "LISTEN_PID",
        "LISTEN_FDS",
        "LISTEN_FDNAMES",
        "INVOCATION_ID",
    }
)

# Variables that make a program load code, find its programs, or talk to another bus than the
# one it should: glibc's list of variables it ignores in setuid programs ("unsecvars"), the
# shells' start-up files, interpreters' and toolkits' module paths, and busmgr's and D-Bus's own.
_UNSAFE_NAMES = frozenset(
    {
        "PATH", "HOME", "SHELL", "ENV", "BASH_ENV", "SHELLOPTS", "BASHOPTS", "CDPATH", "IFS",
        "PS4", "GCONV_PATH", "GETCONF_DIR", "HOSTALIASES", "LOCALDOMAIN", "LOCPATH",
        "NIS_PATH", "NLSPATH", "RESOLV_HOST_CONF", "RES_OPTIONS", "TMPDIR", "TZDIR",
        "GI_TYPELIB_PATH", "CLASSPATH", "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "TERMINFO",
        "TERMINFO_DIRS", "NOTIFY_SOCKET", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES",
    }
)  # fmt: skip
_UNSAFE_PREFIXES = (
    "LD_", "DBUS_", "BUSMGR_", "MALLOC_", "GLIBC_", "BASH_FUNC_", "PYTHON", "PERL", "RUBY",
    "NODE_", "LUA_", "GIO_", "GTK_", "GST_", "QT_", "XDG_",
)  # fmt: skip


def unsafe_variable(name: str) -> bool:
    """True for a variable that must not reach root's jobs from a caller busmgr cannot vouch
    for (see the module docstring)."""
    return name in _UNSAFE_NAMES or name.startswith(_UNSAFE_PREFIXES)


class Environment:
    """The layers of every job's environment below the ``env`` stanzas."""

    def __init__(self, mode: Mode, environ: Mapping[str, str]) -> None:
        self.mode = mode
        self.environ: Mapping[str, str] = dict(environ)
        self.bus_address = ""  # set once the manager is on its bus
        self.activation: dict[str, str] = {}
        self.unset: set[str] = set()

    def base(self, cls: JobClass | None = None) -> dict[str, str]:
        """Layers 1 to 3: what every process of ``cls`` starts from (``None``: a process that
        is no job's, like the session command)."""
        provides_name = cls is not None and bool(cls.dbus_name)
        if self.mode is Mode.SYSTEM:
            env = {"PATH": DEFAULT_PATH, "TERM": self.environ.get("TERM", "linux")}
            if self.bus_address:
                env["DBUS_SYSTEM_BUS_ADDRESS"] = self.bus_address
            if provides_name:
                env.update(self.activation)
        else:
            env = {k: v for k, v in self.environ.items() if k not in PRIVATE}
            env.setdefault("PATH", DEFAULT_PATH)
            if self.bus_address:
                env["DBUS_SESSION_BUS_ADDRESS"] = self.bus_address
            for key in self.unset:
                env.pop(key, None)
            env.update(self.activation)
        if provides_name and self.bus_address:
            env["DBUS_STARTER_ADDRESS"] = self.bus_address
            env["DBUS_STARTER_BUS_TYPE"] = self.mode.value
        return env

    def job_env(self, cls: JobClass, *layers: Mapping[str, str]) -> dict[str, str]:
        """The environment of a start of ``cls`` with ``layers`` (event env, request env)."""
        env = self.base(cls)
        for entry in cls.env:
            if entry.value is None:
                if entry.key in self.environ:
                    env[entry.key] = self.environ[entry.key]
            else:
                env[entry.key] = expand(entry.value, env)
        for layer in layers:
            env.update(layer)
        return env

    def update_activation(
        self, set_vars: Iterable[str], unset: Iterable[str], *, vouched: bool = True
    ) -> list[str]:
        """``UnsetAndSetEnvironment``: drop ``unset`` (names), then apply ``set_vars``
        (``KEY=VALUE``; items that are not are ignored, as systemd does).

        ``vouched`` is False for what the bus daemon forwards on behalf of a caller busmgr
        cannot see: in system mode its :func:`unsafe_variable` names are not applied. Returns
        the names that were refused (empty when everything was applied)."""
        for key in unset:
            self.activation.pop(key, None)
            self.unset.add(key)
        refused = []
        for item in set_vars:
            key, sep, value = item.partition("=")
            if not (sep and is_variable_name(key) and "\0" not in value):
                continue
            if self.mode is Mode.SYSTEM and not vouched and unsafe_variable(key):
                refused.append(key)
                continue
            self.activation[key] = value
            self.unset.discard(key)
        return refused

    def set(self, key: str, value: str) -> None:
        """``busmgr setenv KEY=VALUE``: ``key`` in every job started from now on. Raises
        ``InvalidArgs`` for a name that is no variable name or a value with a NUL."""
        _check_name(key)
        if "\0" in value:
            raise ManagerError("InvalidArgs", f"the value of {key} contains a NUL character")
        self.update_activation([f"{key}={value}"], [])

    def remove(self, key: str) -> None:
        """``busmgr unsetenv KEY``: no job started from now on gets ``key`` (whether or not it
        was set: unsetting is idempotent)."""
        _check_name(key)
        self.update_activation([], [key])


def _check_name(key: str) -> None:
    if not is_variable_name(key):
        raise ManagerError(
            "InvalidArgs", f"invalid variable name {key!r} (expected [A-Za-z_][A-Za-z0-9_]*)"
        )
