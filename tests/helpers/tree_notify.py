"""An ``expect notify`` service: sd_notify by hand (no libsystemd).

Writes ``$NOTIFY_SOCKET`` to ``$OUT.socket``, sends ``STATUS=warming up``, then for each line
read from the FIFO ``$OUT.fifo`` sends that line as a notification (``READY=1``, ``STATUS=...``).
After the FIFO is closed by the writer it waits for a signal.
"""

import os
import signal
import socket

address = os.environ["NOTIFY_SOCKET"]
out = os.environ["OUT"]
with open(out + ".socket.new", "w") as f:
    f.write(address)
os.replace(out + ".socket.new", out + ".socket")
target = "\0" + address[1:] if address.startswith("@") else address
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.sendto(b"STATUS=warming up", target)
with open(out + ".fifo") as fifo:
    for line in fifo:
        sock.sendto(line.strip().replace("\\n", "\n").encode(), target)
signal.pause()
