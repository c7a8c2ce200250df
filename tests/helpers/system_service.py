"""A system service for the system bus tests, run by the machine's own ``/usr/bin/python3``.

It is installed by the tests as a D-Bus ``system-services`` file with ``User=nobody``, so it
must run as any user: it uses only the interpreter of the system and its Debian packages
``python3-dbus`` and ``python3-gi`` (``.ci/system-deps``), not the test virtualenv (which lives
where ``nobody`` may not read).

``system_service.py NAME``: connects to the bus that started it (``$DBUS_STARTER_ADDRESS``, as a
service activated by dbus-daemon does; else ``$DBUS_SYSTEM_BUS_ADDRESS``), exports
``/org/busmgr/Test`` with interface ``org.busmgr.Test``, then owns NAME:

* ``Whoami() -> (uuau)``: its uid, gid and supplementary groups, and its pid;
* ``Getenv(s) -> s``: a variable of its environment (``""`` if unset).

SIGTERM ends it with status 0.
"""

import os
import signal
import sys

import dbus
import dbus.mainloop.glib
import dbus.service
from gi.repository import GLib

INTERFACE = "org.busmgr.Test"


class Test(dbus.service.Object):
    @dbus.service.method(INTERFACE, in_signature="", out_signature="uuauu")
    def Whoami(self):
        return os.getuid(), os.getgid(), sorted(os.getgroups()), os.getpid()

    @dbus.service.method(INTERFACE, in_signature="s", out_signature="s")
    def Getenv(self, key):
        return os.environ.get(key, "")


def main() -> None:
    name = sys.argv[1]
    dbus.mainloop.glib.DBusGMainLoop(set_as_default=True)
    address = os.environ.get("DBUS_STARTER_ADDRESS") or os.environ["DBUS_SYSTEM_BUS_ADDRESS"]
    bus = dbus.bus.BusConnection(address)
    loop = GLib.MainLoop()
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
    Test(bus, "/org/busmgr/Test")
    keep = dbus.service.BusName(name, bus, do_not_queue=True)
    loop.run()
    del keep


if __name__ == "__main__":
    main()
