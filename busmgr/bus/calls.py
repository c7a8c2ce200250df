"""The way of a method call to the manager's objects: checked, authorized, translated.

Owns what happens to a call before and around the control operation it becomes: the unique
name of its caller (:data:`CALLER`), the check of its arguments and of a manager shutting down
(:class:`CallCheck`, a handler of the connection that runs before dbus-fast dispatches the
call), the caller policy (:mod:`busmgr.bus.auth`) asked before every control method
(:meth:`Operations.run`), and a :class:`busmgr.errors.ManagerError` translated into the D-Bus
error ``org.busmgr.Error.<name>`` (:func:`translate_now`, :meth:`Operations.run`).

Invariants: no control method runs before the policy allowed its caller; a call with the
right member but the wrong argument types gets ``org.busmgr.Error.InvalidArgs`` (dbus-fast
would say UnknownMethod); a manager that is shutting down answers only the methods that change
nothing (:data:`READS`); no ``ManagerError`` reaches dbus-fast untranslated.
"""

import inspect
from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar
from typing import Any

from dbus_fast import Message, MessageType
from dbus_fast.errors import DBusError
from dbus_fast.service import ServiceInterface

from busmgr import ERROR_PREFIX, JOB_INTERFACE, MANAGER_INTERFACE, MANAGER_PATH
from busmgr.bus.auth import CallerPolicy
from busmgr.config import Skipped
from busmgr.control import Control
from busmgr.errors import ManagerError

__all__ = ["CALLER", "READS", "CallCheck", "Operations", "translate_now"]

# The unique name of the caller of the method call being dispatched. The bus face's message
# handler sets it just before dbus-fast dispatches the call, and the task running an async
# method copies it then: so a control method knows who called it (for the system bus's uid
# check) without reaching into dbus-fast's dispatch.
CALLER: ContextVar[str] = ContextVar("busmgr_caller", default="")

#: Methods a manager that is shutting down still answers (they change nothing).
READS = frozenset(
    {"ListJobs", "GetJob", "GetTimeline", "GetInstance", "GetInstanceByName", "ListSkipped"}
)


class Operations:
    """What the bus face calls: the control operations, behind the caller policy."""

    def __init__(
        self,
        control: Control,
        policy: CallerPolicy,
        reload_configuration: Callable[[], Awaitable[None] | None],
        reexec: Callable[[], Awaitable[None]],
        *,
        skipped: Callable[[], Iterable[Skipped]] = tuple,
    ) -> None:
        self.control = control
        self.policy = policy
        self.reload_configuration = reload_configuration
        self.reexec = reexec
        self.skipped = skipped

    async def run(self, member: str, call: Callable[[], Any]) -> Any:
        """Run a control method: check the caller may call it, then translate errors."""
        try:
            await self.policy.authorize(CALLER.get(), member)
            result = call()
            if inspect.isawaitable(result):
                result = await result
            return result
        except ManagerError as err:
            raise DBusError(ERROR_PREFIX + err.name, err.message) from None


def translate_now(fn: Callable[[], Any]) -> Any:
    """``fn()``, its :class:`ManagerError` as the D-Bus error (for the methods that only read,
    which need no policy)."""
    try:
        return fn()
    except ManagerError as err:
        raise DBusError(ERROR_PREFIX + err.name, err.message) from None


def method_signatures(interfaces: Iterable[ServiceInterface]) -> dict[tuple[str, str], str]:
    """``(interface, member)`` -> the signature of its input arguments."""
    sigs: dict[tuple[str, str], str] = {}
    for iface in interfaces:
        intro = iface.introspect()
        for m in intro.methods:
            sigs[(intro.name, m.name)] = "".join(a.signature for a in m.in_args)
    return sigs


class CallCheck:
    """The connection's handler of every call to the manager's objects, before dbus-fast
    dispatches it: notes its caller, answers bad arguments and calls a manager shutting down
    refuses."""

    def __init__(self, control: Control, interfaces: Iterable[ServiceInterface]) -> None:
        self._control = control
        self._signatures = method_signatures(interfaces)

    def __call__(self, msg: Message) -> Message | bool | None:
        """Answer a call with the right member but wrong argument types with
        ``org.busmgr.Error.InvalidArgs`` (dbus-fast would say UnknownMethod)."""
        if msg.message_type is not MessageType.METHOD_CALL or not msg.path:
            return None
        if not msg.path.startswith(MANAGER_PATH):
            return None
        CALLER.set(msg.sender or "")
        ifaces = [msg.interface] if msg.interface else [MANAGER_INTERFACE, JOB_INTERFACE]
        for iface in ifaces:
            want = self._signatures.get((iface, msg.member))
            if want is not None and want != msg.signature:
                return Message.new_error(
                    msg,
                    ERROR_PREFIX + "InvalidArgs",
                    f"{iface}.{msg.member} takes arguments ({want}), got ({msg.signature})",
                )
        if (
            self._control.shutting_down
            and msg.interface in (MANAGER_INTERFACE, JOB_INTERFACE)
            and msg.member not in READS
        ):
            return Message.new_error(
                msg, ERROR_PREFIX + "ShuttingDown", "the manager is shutting down"
            )
        return None
