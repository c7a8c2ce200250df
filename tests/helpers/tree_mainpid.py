"""An ``expect notify`` service whose main process is a child it starts: it starts ``sleep``,
writes the child's pid to ``$OUT``, then sends ``MAINPID=<child>`` and ``READY=1``, and waits for
a signal."""

import os
import signal
import socket
import subprocess

child = subprocess.Popen(["sleep", "1000"])
with open(os.environ["OUT"] + ".new", "w") as f:
    f.write(str(child.pid))
os.replace(os.environ["OUT"] + ".new", os.environ["OUT"])
address = os.environ["NOTIFY_SOCKET"]
target = "\0" + address[1:] if address.startswith("@") else address
with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
    sock.sendto(f"MAINPID={child.pid}\nREADY=1".encode(), target)
signal.pause()
