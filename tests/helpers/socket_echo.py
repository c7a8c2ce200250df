"""A socket-activated echo server, as a daemon that uses ``sd_listen_fds`` would be.

It takes its listening sockets by the ``LISTEN_FDS`` protocol: they must be descriptors 3, 4,
... with ``LISTEN_PID`` equal to its own pid (else it exits 3 with the reason on stderr), and
answers each line a client sends with ``PID NAMES FDS LINE``: its pid, ``LISTEN_FDNAMES``, the
descriptors it has open (to show that nothing else leaked in), and the line. One connection at a
time, until killed. ``ECHO_EXIT_AFTER=N`` makes it exit 0 after N connections (a server that
exits when idle).
"""

from __future__ import annotations

import os
import selectors
import socket
import sys


def _is_open(fd: int) -> bool:
    """Whether ``fd`` is open now (the listing's own descriptor is closed once it is read)."""
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def main() -> int:
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        print(f"LISTEN_PID={os.environ.get('LISTEN_PID')} but pid {os.getpid()}", file=sys.stderr)
        return 3
    count = int(os.environ.get("LISTEN_FDS", "0"))
    if count < 1:
        print("no LISTEN_FDS", file=sys.stderr)
        return 3
    fds = [fd for fd in sorted(int(e) for e in os.listdir("/proc/self/fd")) if _is_open(fd)]
    selector = selectors.DefaultSelector()
    for fd in range(3, 3 + count):
        selector.register(socket.socket(fileno=fd), selectors.EVENT_READ)
    names = os.environ.get("LISTEN_FDNAMES", "")
    left = int(os.environ.get("ECHO_EXIT_AFTER", "0")) or -1
    while left != 0:
        for key, _ in selector.select():
            listener = key.fileobj
            assert isinstance(listener, socket.socket)
            conn, _ = listener.accept()
            with conn, conn.makefile("rwb") as stream:
                line = stream.readline().decode().strip()
                reply = f"{os.getpid()} {names} {','.join(map(str, fds))} {line}\n"
                stream.write(reply.encode())
                stream.flush()
            left -= 1
            if left == 0:
                break
    return 0


if __name__ == "__main__":
    sys.exit(main())
