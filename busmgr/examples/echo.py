"""An example D-Bus service: ``org.example.Echo`` at ``/org/example/Echo``.

``Echo(s) -> s`` returns its argument; ``Pid() -> u`` the service's pid. It claims its bus
name only once its object is exported, so a caller that activated it is served at once.
Run by ``services.d/echo.conf``; activated on the first call to ``org.example.Echo``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal

from dbus_fast import BusType
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusStr, DBusUInt32
from dbus_fast.service import ServiceInterface, dbus_method


class Echo(ServiceInterface):
    def __init__(self, interface: str) -> None:
        super().__init__(interface)

    @dbus_method()
    def Echo(self, text: DBusStr) -> DBusStr:
        return text

    @dbus_method()
    def Pid(self) -> DBusUInt32:
        return os.getpid()


async def serve(name: str, path: str, interface: str) -> None:
    bus = await MessageBus(bus_type=BusType.SESSION).connect()
    bus.export(path, Echo(interface))
    await bus.request_name(name)
    print(f"serving {name} as pid {os.getpid()}", flush=True)
    stop = asyncio.get_running_loop().create_future()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set_result, None)
    await stop
    bus.disconnect()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", default="org.example.Echo")
    parser.add_argument("--path", default="/org/example/Echo")
    parser.add_argument("--interface", default="org.example.Echo")
    args = parser.parse_args()
    asyncio.run(serve(args.name, args.path, args.interface))


if __name__ == "__main__":
    main()
