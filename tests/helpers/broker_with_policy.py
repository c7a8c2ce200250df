"""Run a dbus-broker with the system policy translated from a bus configuration, for tests.

    broker_with_policy.py CONFIG SYSROOT SOCKET

Launches the broker the way busmgr does (its own reaper in this process), listening at SOCKET
(mode 0666, as a system bus socket is) with the policy :func:`busmgr.bus.busconfig.translate`
makes of CONFIG (absolute includes read under SYSROOT), prints the address, and runs until its
stdin closes; then the broker is stopped and this exits 0.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from busmgr import process
from busmgr.bus.broker_launch import launch_broker
from busmgr.bus.busconfig import translate


async def main(config: Path, sysroot: Path, socket_path: Path) -> None:
    loop = asyncio.get_running_loop()
    reaper = process.Reaper(loop)
    reaper.start()
    exited: asyncio.Future[process.ExitInfo] = loop.create_future()
    policy = translate(config, sysroot=sysroot).policy
    broker = await launch_broker(
        os.environ,
        policy,
        watch=reaper.watch,
        on_exit=lambda _pid, info: exited.done() or exited.set_result(info),
        socket_path=socket_path,
        socket_mode=0o666,
    )
    print(broker.address, flush=True)
    stdin_closed = loop.create_future()
    loop.add_reader(
        0, lambda: os.read(0, 4096) or stdin_closed.done() or stdin_closed.set_result(None)
    )
    await asyncio.wait([stdin_closed, exited], return_when=asyncio.FIRST_COMPLETED)
    broker.close()
    await asyncio.wait_for(exited, 10)
    broker.remove()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])))
