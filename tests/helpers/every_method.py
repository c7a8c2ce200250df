"""Call every method of every object a bus name exports, and say how each call went.

Run by the system mode tests as ``nobody`` (``setpriv``), with the machine's own
``/usr/bin/python3`` and its ``python3-dbus`` (the test virtualenv is not readable by nobody):

    every_method.py ADDRESS NAME [NAME...] [--also DEST PATH IFACE MEMBER SIGNATURE]...

The objects are found by introspecting the first NAME from ``/``; each method is then called
under every NAME (one connection may own several), with a zero value of each argument type
(empty strings and arrays, zeros, ``/``). ``--also`` adds a call that introspection cannot
show. One JSON line per call on stdout: ``{"dest", "path", "interface", "member", "error",
"message"}``, ``error`` empty when the call succeeded.
"""

import json
import sys
import xml.etree.ElementTree as ET

import dbus


def zero(signature):
    """A zero value for one complete type."""
    if signature.startswith("a{"):
        return dbus.Dictionary({}, signature=signature[2:-1])
    if signature.startswith("a"):
        return dbus.Array([], signature=signature[1:])
    if signature.startswith("("):
        return dbus.Struct([zero(t) for t in dbus.Signature(signature[1:-1])])
    return {"s": "x", "o": dbus.ObjectPath("/"), "g": dbus.Signature(""), "b": False,
            "d": 0.0, "v": "x"}.get(signature, 0)  # fmt: skip


def call(bus, dest, path, interface, member, signature):
    args = [zero(t) for t in dbus.Signature(signature)]
    try:
        bus.call_blocking(dest, path, interface, member, signature, args, timeout=10)
    except dbus.exceptions.DBusException as err:
        return err.get_dbus_name() or "", err.get_dbus_message() or ""
    return "", ""


def methods(bus, dest):
    found, paths = [], ["/"]
    while paths:
        path = paths.pop()
        xml = bus.call_blocking(
            dest, path, "org.freedesktop.DBus.Introspectable", "Introspect", "", [], timeout=10
        )
        root = ET.fromstring(str(xml))
        paths += [path.rstrip("/") + "/" + node.attrib["name"] for node in root.findall("node")]
        for iface in root.findall("interface"):
            for method in iface.findall("method"):
                ins = [a for a in method.findall("arg") if a.attrib.get("direction") != "out"]
                signature = "".join(a.attrib["type"] for a in ins)
                found.append((path, iface.attrib["name"], method.attrib["name"], signature))
    return found


def main():
    argv = sys.argv[1:]
    extra = []
    while "--also" in argv:
        at = argv.index("--also")
        extra.append(tuple(argv[at + 1 : at + 6]))
        del argv[at : at + 6]
    address, names = argv[0], argv[1:]
    bus = dbus.bus.BusConnection(address)
    calls = [(dest, *m) for m in methods(bus, names[0]) for dest in names] + extra
    for dest, path, interface, member, signature in calls:
        error, message = call(bus, dest, path, interface, member, signature)
        record = {"dest": dest, "path": path, "interface": interface, "member": member,
                  "error": error, "message": message}  # fmt: skip
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
