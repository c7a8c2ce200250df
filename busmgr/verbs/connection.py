"""Running a client verb: connect to the manager's bus, run the verb, report its failure.

A client verb is an ``async`` function of a connected
:class:`busmgr.bus.client.ManagerClient`, the parsed arguments and the stream to write to,
returning the exit status (:data:`ClientVerb`); an error reply propagates as it is
(:class:`busmgr.bus.client.ErrorReply`) and :func:`run_client` turns it, and every other
failure it knows, into one line on stderr. Verbs marked ``light`` run over the blocking
transport (:mod:`busmgr.bus.wire`, :func:`busmgr.bus.client.run_blocking`) without asyncio
or dbus-fast, whose imports would cost a one-call command more than its call; any other runs on
an event loop over dbus-fast, imported only then.

:class:`Decided` and :func:`watch_signals` are how a verb that follows signals (``start`` of a
``respawn`` job, ``events --follow``) stops waiting once it knows enough.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Awaitable, Callable
from typing import TextIO

from busmgr import ERROR_PREFIX, MANAGER_BUS_NAME
from busmgr.bus.client import (
    CALL_TIMEOUT,
    ConnectError,
    ManagerClient,
    blocking_supported,
    connect,
    connect_blocking,
    is_error_reply,
    run_blocking,
)
from busmgr.verbs import EXIT_FAILED, EXIT_USAGE, PROG
from busmgr.verbs.output import describe_action, format_error

ClientVerb = Callable[[ManagerClient, argparse.Namespace, TextIO], Awaitable[int]]


class ManagerGone(Exception):
    """The manager left the bus and did not come back in time."""


class Decided(Exception):
    """Ends a watch of signals: what it waited for is known (a start's fate, an owner change)."""


async def watch_signals(
    client: ManagerClient, seconds: float | None, hangup_fd: int | None = None
) -> bool:
    """Dispatch signals for ``seconds`` (None: until something is decided); True if a
    watcher decided something (raised :class:`Decided`)."""
    try:
        await client.dispatch_signals(seconds, hangup_fd)
    except Decided:
        return True
    return False


def pipe_fd(out: TextIO) -> int | None:
    """``out``'s descriptor if it is a pipe (whose reader may go away), else None."""
    import stat

    try:
        fd = out.fileno()
        return fd if stat.S_ISFIFO(os.fstat(fd).st_mode) else None
    except (OSError, ValueError, AttributeError):
        return None


def report(action: str, err: BaseException) -> int | None:
    """The exit status for a failure of a client verb, after its one line on stderr; None if
    ``err`` is not a failure we know (it propagates)."""
    if is_error_reply(err):
        print(format_error(action, err), file=sys.stderr)
        return EXIT_USAGE if str(getattr(err, "type", "")) == ERROR_PREFIX + "InvalidArgs" else 1
    if isinstance(err, TimeoutError):
        print(
            f"{PROG}: {action}: no reply from {MANAGER_BUS_NAME} in {CALL_TIMEOUT:g} seconds",
            file=sys.stderr,
        )
        return EXIT_FAILED
    if isinstance(err, ManagerGone):
        print(f"{PROG}: {action}: {err}", file=sys.stderr)
        return EXIT_FAILED
    if isinstance(err, EOFError | ConnectionError) and not isinstance(err, BrokenPipeError):
        reason = str(err) or "the bus closed the connection"
        print(f"{PROG}: {action}: lost the connection to the bus: {reason}", file=sys.stderr)
        return EXIT_FAILED
    return None


def run_client(args: argparse.Namespace) -> int:
    """Connect, run the verb, and turn every failure into one line on stderr."""
    action = describe_action(args)
    address = args.bus_address
    if not (getattr(args, "light", False) and blocking_supported(address)):
        import asyncio

        return asyncio.run(_run_client_async(args, action))
    try:
        bus = connect_blocking(address)
    except ConnectError as e:
        print(f"{PROG}: {action}: {e}", file=sys.stderr)
        return EXIT_FAILED
    try:
        return run_blocking(args.run(ManagerClient(bus), args, sys.stdout))
    except Exception as e:
        status = report(action, e)
        if status is None:
            raise
        return status
    finally:
        bus.close()


async def _run_client_async(args: argparse.Namespace, action: str) -> int:
    """:func:`run_client` over dbus-fast, on an event loop (verbs not marked ``light``)."""
    import contextlib

    try:
        bus = await connect(args.bus_address)
    except ConnectError as e:
        print(f"{PROG}: {action}: {e}", file=sys.stderr)
        return EXIT_FAILED
    try:
        return await args.run(ManagerClient(bus), args, sys.stdout)
    except Exception as e:
        status = report(action, e)
        if status is None:
            raise
        return status
    finally:
        bus.disconnect()
        with contextlib.suppress(Exception):
            await bus.wait_for_disconnect()
