"""Seed 004's multiprocessing parent: ten workers that ignore SIGTERM.

The parent starts ten workers, each of which ignores TERM, then raises SIGSTOP (the job uses
``expect stop``, so it is ready only once every worker runs). On TERM the parent terminates its
workers, which ignore it, and exits 0 without waiting for them: only a KILL of the whole job
gets rid of them. With the argument ``outside`` it is the seed 000 ``create_numbers.py`` case
instead: the same interpreter and script, started outside busmgr, which must never be touched.
"""

import multiprocessing
import os
import signal
import sys


def worker(ready: "multiprocessing.synchronize.Event") -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ready.set()
    while True:
        signal.pause()


def main() -> None:
    if sys.argv[1:] == ["outside"]:
        print("ready", flush=True)
        sys.stdin.read()  # until the test closes our stdin
        return
    ctx = multiprocessing.get_context("fork")
    processes = []
    for _ in range(10):
        ready = ctx.Event()
        proc = ctx.Process(target=worker, args=(ready,))
        proc.start()
        ready.wait()
        processes.append(proc)

    def graceful_exit(_signum: int, _frame: object) -> None:
        for p in processes:
            p.terminate()
        os._exit(0)

    signal.signal(signal.SIGTERM, graceful_exit)
    os.kill(os.getpid(), signal.SIGSTOP)  # ready: busmgr continues us
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
