"""Profile the manager during cold activations: where its own time goes, function by function.

Usage: ``.venv/bin/python bench/profile_activation.py [N]`` (default 150 activations). Not part
of ``make bench``: it needs py-spy (``.venv/bin/pip install py-spy``; attaching to a process
needs root or ``ptrace`` rights), which busmgr itself does not depend on.

A ``busmgr session --no-import`` runs one job, ``dbus ca.desrt.dconf`` + ``exec
/usr/libexec/dconf-service`` (what busmgr makes of the installed service file). py-spy samples
the manager at 2000 Hz while this script calls ``Peer.Ping`` on the unowned name N times, each
time killing the service (SIGKILL) and waiting until the name is free again. It prints the
functions with the most samples of their own and with the most samples in all, leaving out the
samples in which the loop waited for something (``select``), and the median first-call time.
"""

from __future__ import annotations

import asyncio
import collections
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchlib

NAME = "ca.desrt.dconf"
JOB = f"dbus {NAME}\nexec /usr/libexec/dconf-service\n"


async def profile(rounds: int, out: Path) -> list[float]:
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy")
    firsts: list[float] = []
    async with benchlib.Session({NAME: JOB}, label="profile") as s:
        assert s.bus is not None
        watch = benchlib.NameWatch(s.bus)
        await watch.subscribe()
        await benchlib.call(s.bus, benchlib.ping(NAME))  # warms the page cache
        await s.stop(NAME)
        await watch.wait_unowned(NAME)
        argv = [spy, "record", "-r", "2000", "-p", str(s.pid), "-f", "raw", "-o", str(out)]
        sampler = subprocess.Popen(
            [*argv, "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            for _ in range(rounds):
                t0 = time.perf_counter()
                await benchlib.call(s.bus, benchlib.ping(NAME))
                firsts.append((time.perf_counter() - t0) * 1000)
                pid = (
                    await benchlib.call(
                        s.bus,
                        benchlib.method(
                            benchlib.DBUS,
                            benchlib.DBUS_PATH,
                            benchlib.DBUS,
                            "GetConnectionUnixProcessID",
                            "s",
                            [NAME],
                        ),
                    )
                )[0]
                os.kill(pid, signal.SIGKILL)  # the session's own service
                await watch.wait_unowned(NAME)
        finally:
            sampler.send_signal(signal.SIGINT)
            _, err = sampler.communicate(timeout=60)
        if sampler.returncode not in (0, -signal.SIGINT) and not out.exists():
            raise SystemExit(f"py-spy failed: {err.decode(errors='replace')[-300:]}")
    return firsts


def report(raw: Path, top: int = 25) -> None:
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    busy = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if any("select (selectors.py" in f for f in frames[-2:]):
            continue  # the loop waiting
        n = int(count)
        busy += n
        own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
    print(f"\n{busy} samples with the manager busy (2000 Hz)\n\nown samples:")
    for frame, n in own.most_common(top):
        print(f"{n:6d}  {frame}")
    print("\nsamples in all (the function and what it called):")
    for frame, n in total.most_common(top + 15):
        print(f"{n:6d}  {frame}")


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 150
    with tempfile.TemporaryDirectory(prefix="busmgr-profile-") as tmp:
        raw = Path(tmp) / "profile.txt"
        firsts = asyncio.run(profile(rounds, raw))
        print(f"median first call: {statistics.median(firsts):.2f} ms over {rounds} activations")
        report(raw)


if __name__ == "__main__":
    main()
