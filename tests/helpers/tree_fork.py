"""A forking daemon for ``expect fork|daemon`` tests: ``tree_fork.py FORKS [STATUS]``.

Forks FORKS times; the first child calls ``setsid``, as daemons do. The last child writes its
pid to ``$OUT`` (when set) and waits for a signal. Each parent exits with STATUS (default 0)
once everything below it is set up (it reads a pipe until its children closed it), the
convention of daemons that report start-up errors through their exit status (dnsmasq does
this; seed 003's test program, which exits at once, is ``doublefork.c``). FORKS 0 exits with
STATUS without forking.
"""

import os
import signal
import sys

forks = int(sys.argv[1])
status = int(sys.argv[2]) if len(sys.argv) > 2 else 0
if forks == 0:
    sys.exit(status)
writers = []
for i in range(forks):
    r, w = os.pipe()
    if os.fork() > 0:
        os.close(w)
        for fd in writers:
            os.close(fd)
        os.read(r, 1)  # EOF: the child is set up (or gone)
        os._exit(status)
    os.close(r)
    writers.append(w)
    if i == 0:
        os.setsid()
out = os.environ.get("OUT")
if out:
    with open(out + ".new", "w") as f:
        f.write(f"{os.getpid()}\n")
    os.replace(out + ".new", out)
for fd in writers:
    os.close(fd)
signal.pause()
