"""Leaves ORPHANS (default 100) children that exit only after this process has exited.

Each child blocks reading a pipe whose only writer is this process, so they all see EOF, and
exit, once it is gone: by then they have been re-parented to the subreaper (or PID 1). Their
pids go to ``$OUT`` first.
"""

import os
import sys

count = int(sys.argv[1]) if len(sys.argv) > 1 else 100
r, w = os.pipe()
pids = []
for _ in range(count):
    pid = os.fork()
    if pid == 0:
        os.close(w)
        os.read(r, 1)  # EOF once the parent exited
        os._exit(0)
    pids.append(pid)
os.close(r)
with open(os.environ["OUT"] + ".new", "w") as f:
    f.write(" ".join(map(str, pids)) + "\n")
os.replace(os.environ["OUT"] + ".new", os.environ["OUT"])
