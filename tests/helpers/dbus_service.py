"""A D-Bus service for the activation tests: it claims a bus name, or fails to, on command.

Run by test job files as ``exec $PYTHON $TESTS_HELPERS/dbus_service.py --name NAME [OPTIONS]``
on the bus of ``$DBUS_SESSION_BUS_ADDRESS``. Object ``--path`` (default ``/org/test/Service``),
interface ``org.test.Service``:

* ``Echo(s) -> s`` returns its argument; ``Pid() -> u`` the service's pid;
* ``Getenv(s) -> s`` the value of an environment variable of the service (``""`` if unset);
* ``ReleaseName() -> u`` gives up the bus name while the service keeps running (the
  ``ReleaseName`` reply code);
* ``Activated() -> u`` how many times ``org.freedesktop.Application.Activate`` was called.

With ``--application`` the service is also a D-Bus activatable application (Desktop Entry
Specification): ``org.freedesktop.Application`` at the path its name gives (``org.test.App`` ->
``/org/test/App``), whose ``Activate(a{sv})`` only counts the calls.

Behaviour options, in the order they take effect:

* ``--print-to FILE`` appends ``PID\\n`` to FILE first (one line per spawn, so a test counts
  spawns); ``--say TEXT`` (repeatable) prints TEXT on stdout;
* ``--exit-before-claim STATUS`` exits with STATUS, ``--signal-before-claim SIG`` kills itself
  with SIG, before connecting to the bus;
* ``--claim-delay SECONDS`` waits before claiming the name (the object is exported first);
* ``--claim-on-signal`` claims the name when it gets SIGUSR1 (a test decides when);
* ``--never-claim`` connects but never claims the name.

The object is exported before the name is claimed, so a caller the bus delivers to once the
name has an owner is always served. SIGTERM ends the service with status 0.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from typing import Annotated, Any

from dbus_fast import BusType
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusSignature, DBusStr, DBusUInt32
from dbus_fast.service import ServiceInterface, dbus_method

INTERFACE = "org.test.Service"
PlatformData = Annotated[dict[str, Any], DBusSignature("a{sv}")]


class Service(ServiceInterface):
    """The test interface; ``bus`` and ``name`` are set before the name is claimed."""

    def __init__(self, bus: MessageBus, name: str) -> None:
        super().__init__(INTERFACE)
        self._bus = bus
        self._name = name
        self.activated = 0

    @dbus_method()
    def Activated(self) -> DBusUInt32:
        return self.activated

    @dbus_method()
    def Echo(self, text: DBusStr) -> DBusStr:
        return text

    @dbus_method()
    def Pid(self) -> DBusUInt32:
        return os.getpid()

    @dbus_method()
    def Getenv(self, key: DBusStr) -> DBusStr:
        return os.environ.get(key, "")

    @dbus_method()
    async def ReleaseName(self) -> DBusUInt32:
        return int(await self._bus.release_name(self._name))


class Application(ServiceInterface):
    """``org.freedesktop.Application``: Activate counts on the service."""

    def __init__(self, service: Service) -> None:
        super().__init__("org.freedesktop.Application")
        self._service = service

    # No return annotation: with postponed annotations dbus-fast would read "None" as the
    # reply's signature; without one the reply is empty, as the interface says.
    @dbus_method()
    def Activate(self, platform_data: PlatformData):  # type: ignore[no-untyped-def]
        self._service.activated += 1


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    stop: asyncio.Future[None] = loop.create_future()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, lambda: stop.done() or stop.set_result(None))
    bus = await MessageBus(bus_type=BusType.SESSION).connect()
    service = Service(bus, args.name)
    bus.export(args.path, service)
    if args.application:
        path = "/" + args.name.replace(".", "/").replace("-", "_")
        bus.export(path, Application(service))
    if args.claim_delay:
        await asyncio.sleep(args.claim_delay)  # job-side: a service that is slow to claim
    if args.claim_on_signal:
        told: asyncio.Future[None] = loop.create_future()
        loop.add_signal_handler(signal.SIGUSR1, lambda: told.done() or told.set_result(None))
        print("waiting for SIGUSR1 to claim the name", flush=True)
        await told
    if not args.never_claim:
        await bus.request_name(args.name)
        print(f"claimed {args.name} as pid {os.getpid()}", flush=True)
    await asyncio.wait(
        [stop, asyncio.ensure_future(bus.wait_for_disconnect())],
        return_when=asyncio.FIRST_COMPLETED,
    )
    bus.disconnect()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True)
    parser.add_argument("--path", default="/org/test/Service")
    parser.add_argument("--print-to", metavar="FILE")
    parser.add_argument("--say", action="append", default=[], metavar="TEXT")
    parser.add_argument("--exit-before-claim", type=int, metavar="STATUS")
    parser.add_argument("--signal-before-claim", metavar="SIG")
    parser.add_argument("--claim-delay", type=float, default=0.0, metavar="SECONDS")
    parser.add_argument("--claim-on-signal", action="store_true")
    parser.add_argument("--never-claim", action="store_true")
    parser.add_argument("--application", action="store_true")
    args = parser.parse_args()
    if args.print_to:
        fd = os.open(args.print_to, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.close(fd)
    for text in args.say:
        print(text, flush=True)
    if args.exit_before_claim is not None:
        raise SystemExit(args.exit_before_claim)
    if args.signal_before_claim:
        signum = signal.Signals["SIG" + args.signal_before_claim.removeprefix("SIG")]
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
