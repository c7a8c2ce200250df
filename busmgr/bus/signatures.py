"""The D-Bus types and argument names the exported interfaces share.

Owns the annotated types of the arguments, returns and properties of ``Manager1``, ``Job1``
and ``Instance1`` (dbus-fast reads a D-Bus signature from each), and the names of every
method's output arguments and every signal's arguments in the introspection data
(:data:`OUT_ARGS`, :data:`SIGNAL_ARGS`): dbus-fast names only the inputs.

Invariants: every method and signal argument is named (the interface XML in ``docs/`` is held
against live introspection by the tests); a type here is the one signature of its value
wherever it appears on the bus. Nothing here holds state.
"""

from typing import Annotated, Any

from dbus_fast import introspection as intr
from dbus_fast.annotations import DBusSignature

__all__ = [
    "OUT_ARGS",
    "SIGNAL_ARGS",
    "Env",
    "JobRows",
    "ProcessRows",
    "SkippedRows",
    "StrList",
    "TimelineReply",
    "named",
]

Env = Annotated[dict[str, str], DBusSignature("a{ss}")]
JobRows = Annotated[list[list[str]], DBusSignature("a(ssso)")]
SkippedRows = Annotated[list[list[str]], DBusSignature("a(sss)")]
ProcessRows = Annotated[list[list[Any]], DBusSignature("a(su)")]
StrList = Annotated[list[str], DBusSignature("as")]
TimelineReply = Annotated[list[Any], DBusSignature("taa{sv}")]

#: Names of the output arguments of every method (dbus-fast names only the inputs).
OUT_ARGS: dict[str, tuple[str, ...]] = {
    "ActivateName": ("instance",),
    "GetJob": ("job",),
    "ListJobs": ("instances",),
    "RestartJob": ("instance",),
    "StartJob": ("instance",),
    "Start": ("instance",),
    "Restart": ("instance",),
    "GetInstance": ("instance",),
    "GetInstanceByName": ("instance",),
    "GetTimeline": ("startup", "runs"),
    "GetEnv": ("value",),
    "ListEnv": ("env",),
    "ListSkipped": ("entries",),
}
#: Names of the arguments of every signal.
SIGNAL_ARGS: dict[str, tuple[str, ...]] = {
    "JobStarting": ("job", "instance", "env"),
    "JobStarted": ("job", "instance", "env"),
    "JobStopping": ("job", "instance", "env"),
    "JobStopped": ("job", "instance", "env"),
    "EventEmitted": ("name", "env"),
}


def named(interface: intr.Interface) -> intr.Interface:
    """``interface`` with its output and signal arguments named (see :data:`OUT_ARGS`)."""
    for method in interface.methods:
        for arg, name in zip(method.out_args, OUT_ARGS.get(method.name, ()), strict=False):
            arg.name = name
    for sig in interface.signals:
        for arg, name in zip(sig.args, SIGNAL_ARGS.get(sig.name, ()), strict=False):
            arg.name = name
    return interface
