"""The environment of job processes, built in layers (SPEC §1 "Job environment").

Later layers win:

1. the base: session mode, the manager's own environment at start (minus the variables that
   are the manager's alone, :data:`PRIVATE`) plus the bus address; system mode, only ``PATH``
   and ``TERM``;
2. the activation environment (``SetEnvironment`` / ``UpdateActivationEnvironment``, and
   ``busmgr setenv`` / ``unsetenv``): variables set, and variables unset (which hide those of
   layer 1 too, as systemd's ``UnsetEnvironment`` and Upstart's ``unset-env`` do);
3. the job's ``env`` stanzas (``env KEY`` copies from the manager's environment; values may
   reference the layers below as ``$VAR``);
4. the env of the event that started the job, then the start request's env (the caller passes
   them as ``layers``).

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

__all__ = ["DEFAULT_PATH", "PRIVATE", "Environment"]

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


class Environment:
    """The layers of every job's environment below the event and request layers."""

    def __init__(self, mode: Mode, environ: Mapping[str, str]) -> None:
        self.mode = mode
        self.environ: Mapping[str, str] = dict(environ)
        self.bus_address = ""  # set once the manager is on its bus
        self.activation: dict[str, str] = {}
        self.unset: set[str] = set()

    def base(self) -> dict[str, str]:
        """Layer 1 and 2: what every process of every job starts from."""
        if self.mode is Mode.SYSTEM:
            env = {"PATH": DEFAULT_PATH, "TERM": self.environ.get("TERM", "linux")}
        else:
            env = {k: v for k, v in self.environ.items() if k not in PRIVATE}
            env.setdefault("PATH", DEFAULT_PATH)
            if self.bus_address:
                env["DBUS_SESSION_BUS_ADDRESS"] = self.bus_address
        for key in self.unset:
            env.pop(key, None)
        env.update(self.activation)
        return env

    def job_env(self, cls: JobClass, *layers: Mapping[str, str]) -> dict[str, str]:
        """The environment of a start of ``cls`` with ``layers`` (event env, request env)."""
        env = self.base()
        for entry in cls.env:
            if entry.value is None:
                if entry.key in self.environ:
                    env[entry.key] = self.environ[entry.key]
            else:
                env[entry.key] = expand(entry.value, env)
        for layer in layers:
            env.update(layer)
        return env

    def update_activation(self, set_vars: Iterable[str], unset: Iterable[str]) -> None:
        """``UnsetAndSetEnvironment``: drop ``unset`` (names), then apply ``set_vars``
        (``KEY=VALUE``; items that are not are ignored, as systemd does)."""
        for key in unset:
            self.activation.pop(key, None)
            self.unset.add(key)
        for item in set_vars:
            key, sep, value = item.partition("=")
            if sep and is_variable_name(key) and "\0" not in value:
                self.activation[key] = value
                self.unset.discard(key)

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
