"""Drive one peer supervisor (supervisord or circus) for the peers benchmark.

Runs under the interpreter of the peers' virtual environment (``benchlib.peer_venv()``), never
under busmgr's: it imports the peer's own client library. Usage::

    python peerdriver.py supervisord|circus N WORKDIR

It writes a configuration of N programs ``job0000``... (``sleep 1000``, restarted when they
die; stopped when the driver is ready), starts the daemon in the foreground, and then answers
one JSON request per line on stdin with one JSON reply per line on stdout:

* ``{"op": "start_all"}``: start every program with one call that returns once all run
  (supervisord: ``startAllProcesses(wait=True)``; circus: ``start`` with ``waiting``);
  ``{"ns": ...}`` is the call's duration, as the caller sees it.
* ``{"op": "stop_all"}``: the same for stopping (the programs are reaped by then).
* ``{"op": "pids"}``: ``{"pids": {name: pid}}`` of the running programs (not timed).
* ``{"op": "list", "count": K, "budget": S}`` / ``{"op": "get", ...}``: K calls, one after
  another (fewer if S seconds ran out), asking for every program's state / for one program's
  state; ``{"ns": total, "count": calls made}``.
* ``{"op": "quit"}``: stop the daemon (SIGTERM, waited for) and exit.

The first line printed is ``{"pid": daemon pid}`` once the daemon answers calls. Nothing here
sleeps to wait: the daemon's readiness is a line it logs, then one call that must succeed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

TIMEOUT = 120.0

SUPERVISORD_HEAD = """\
[unix_http_server]
file={work}/supervisor.sock

[supervisord]
logfile=/dev/stdout
logfile_maxbytes=0
pidfile={work}/supervisord.pid
nodaemon=true
minfds=1024
minprocs=200

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
"""

SUPERVISORD_PROGRAM = """
[program:{name}]
command=sleep 1000
autostart=false
autorestart=true
startsecs=0
startretries=1000
stdout_logfile=NONE
stderr_logfile=NONE
"""

CIRCUS_HEAD = """\
[circus]
endpoint = ipc://{work}/endpoint
pubsub_endpoint = ipc://{work}/pubsub
statsd = false
"""

CIRCUS_WATCHER = """
[watcher:{name}]
cmd = sleep 1000
numprocesses = 1
autostart = true
respawn = true
max_retry = -1
"""


def wait_for_line(
    proc: subprocess.Popen[bytes], marker: bytes, what: str, then: bytes = b"", count: int = 0
) -> threading.Event:
    """Read ``proc``'s log until ``marker``, then keep draining it in a thread (a full pipe
    would block the daemon). Raises if the daemon exits first. The event returned is set once
    ``count`` more lines containing ``then`` were logged after the marker."""
    assert proc.stdout is not None
    stream = proc.stdout
    seen = []
    for line in stream:
        if marker in line:
            break
        seen.append(line.decode(errors="replace").strip())
    else:
        raise RuntimeError(f"{what} did not start: {' | '.join(seen[-5:])}")
    done = threading.Event()

    def drain() -> None:
        left = count
        if left <= 0:
            done.set()
        for line in stream:
            if left > 0 and then in line:
                left -= 1
                if left == 0:
                    done.set()
        done.set()

    threading.Thread(target=drain, daemon=True).start()
    return done


def names(n: int) -> list[str]:
    return [f"job{i:04d}" for i in range(n)]


class Supervisord:
    def __init__(self, n: int, work: Path) -> None:
        conf = work / "supervisord.conf"
        conf.write_text(
            SUPERVISORD_HEAD.format(work=work)
            + "".join(SUPERVISORD_PROGRAM.format(name=name) for name in names(n))
        )
        exe = Path(sys.executable).with_name("supervisord")
        self.proc = subprocess.Popen(
            [str(exe), "-c", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        self.sock = work / "supervisor.sock"

    def ready(self) -> None:
        # It logs this line once its socket listens (it binds before writing the pid file).
        wait_for_line(self.proc, b"supervisord started with pid", "supervisord")
        import xmlrpc.client

        from supervisor.xmlrpc import SupervisorTransport

        self.rpc = xmlrpc.client.ServerProxy(
            "http://127.0.0.1", transport=SupervisorTransport(None, None, f"unix://{self.sock}")
        ).supervisor
        if self.rpc.getState()["statename"] != "RUNNING":
            raise RuntimeError("supervisord is not running")

    def start_all(self) -> None:
        self.rpc.startAllProcesses(True)

    def stop_all(self) -> None:
        self.rpc.stopAllProcesses(True)

    def pids(self) -> dict[str, int]:
        return {p["name"]: p["pid"] for p in self.rpc.getAllProcessInfo() if p["pid"]}

    def list(self) -> None:
        self.rpc.getAllProcessInfo()

    def get(self) -> None:
        self.rpc.getProcessInfo("job0000")


class Circus:
    def __init__(self, n: int, work: Path) -> None:
        conf = work / "circus.ini"
        conf.write_text(
            CIRCUS_HEAD.format(work=work)
            + "".join(CIRCUS_WATCHER.format(name=name) for name in names(n))
        )
        exe = Path(sys.executable).with_name("circusd")
        self.proc = subprocess.Popen(
            [str(exe), "--log-output", "-", "--log-level", "info", str(conf)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.n = n
        self.endpoint = f"ipc://{work}/endpoint"

    def ready(self) -> None:
        # The arbiter listens once it logs this, and has started every watcher once it logged
        # "NAME started" for each.
        started = wait_for_line(
            self.proc, b"Arbiter now waiting for commands", "circusd", b" started", self.n
        )
        if not started.wait(TIMEOUT):
            raise RuntimeError("circusd did not start its watchers")
        from circus.client import CircusClient

        self.client = CircusClient(endpoint=self.endpoint, timeout=TIMEOUT)
        # circus's `start` of all watchers starts only those with autostart, so they have it:
        # they are stopped here, as busmgr's and supervisord's programs are at first.
        self.stop_all()

    def _call(self, command: str, **props: Any) -> dict[str, Any]:
        reply = self.client.call({"command": command, "properties": props})
        if reply.get("status") == "error":
            raise RuntimeError(f"circus {command}: {reply}")
        return reply

    def start_all(self) -> None:
        self._call("start", waiting=True)

    def stop_all(self) -> None:
        self._call("stop", waiting=True)

    def pids(self) -> dict[str, int]:
        out = {}
        for name in self._call("list")["watchers"]:
            found = self._call("list", name=name).get("pids") or []
            if found:
                out[name] = found[0]
        return out

    def list(self) -> None:
        self._call("status")

    def get(self) -> None:
        self._call("status", name="job0000")


def main() -> None:
    kind, n, work = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    peer = Supervisord(n, work) if kind == "supervisord" else Circus(n, work)
    out = sys.stdout

    def reply(obj: dict[str, Any]) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    try:
        peer.ready()
        reply({"pid": peer.proc.pid})
        for line in sys.stdin:
            req = json.loads(line)
            op = req["op"]
            if op == "quit":
                break
            if op == "pids":
                reply({"pids": peer.pids()})
                continue
            count = int(req.get("count", 1))
            budget = float(req.get("budget", 0)) * 1e9  # ns; 0: no limit
            fn = getattr(peer, op)
            t0 = time.perf_counter_ns()
            done = 0
            while done < count:
                fn()
                done += 1
                if budget and time.perf_counter_ns() - t0 > budget:
                    break
            reply({"ns": time.perf_counter_ns() - t0, "count": done})
    finally:
        if peer.proc.poll() is None:
            peer.proc.send_signal(signal.SIGTERM)
            try:
                peer.proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                os.kill(peer.proc.pid, signal.SIGKILL)
                peer.proc.wait()


if __name__ == "__main__":
    main()
