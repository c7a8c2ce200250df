"""The life of a manager process: ``busmgr session`` and ``busmgr daemon``.

Both commands become one :class:`Plan` (a frozen value: the mode, the directories, which bus,
what to print, the session command) and run the same code path, :func:`run`:

1. set up the process (its name, the pidfile, reaping, cgroups, signal handlers);
2. start the private bus (``session``) or launch the mode's bus (``daemon --launch-bus``,
   :mod:`busmgr.bus.launch`), connect, own the names, load the jobs, emit ``startup``, print
   the address, start the session command;
3. wait for SIGTERM/SIGINT (or the command's exit, or ``EndSession``, or a fatal error), then
   stop every job in reverse start order, close the bus, stop the private bus, and make sure no
   child outlives the manager.

Every problem a user can cause before the manager runs (no ``dbus-daemon``, a bad address, a
bus that refuses the manager's name) is one line on stderr and exit status 1, never a
traceback. A bug is reported in one line too; its traceback goes to
``<state dir>/internal-errors.log``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import signal
import sys
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from busmgr import process, trace
from busmgr.bus.launch import BusLauncher, DbusDaemonLauncher
from busmgr.bus.link import LinkError
from busmgr.jobclass import ConsoleMode, ExecContext, JobClass
from busmgr.keeper import BusKeeper
from busmgr.logsink import LogRotation
from busmgr.manager import Manager, ManagerConfig
from busmgr.options import (
    DaemonOptions,
    Mode,
    SessionOptions,
    default_activation_dir,
    default_log_dir,
    default_services_dirs,
    default_state_dir,
    standard_bus_address,
)
from busmgr.snapshot import SavedProcess
from busmgr.statestore import LockError, StateLock, StateStore, boot_id

log = logging.getLogger("busmgr")

__all__ = ["Plan", "daemon_plan", "run", "run_daemon", "run_session", "session_plan"]

STARTUP, SHUTDOWN = "start-up", "shutdown"  # the trace's keys for these steps
COMMAND_GRACE = 10.0  # seconds a session command has to exit after SIGTERM/SIGINT
FINISH_TIMEOUT = 5.0  # seconds leftover children get between TERM and KILL at exit


class PlanError(Exception):
    """The command line asks for something that cannot run here: one line for the user."""


@dataclass(frozen=True)
class Plan:
    """Everything one manager process does, resolved (no defaults left open).

    ``address`` is the bus to connect to; None with ``private_bus`` (the session's own) or a
    ``launcher`` (the bus the manager launches). ``activation_dir`` is where the activation
    files of the jobs go on a bus that is not the session's own (None: none are written).
    ``broker``: the private bus (or, with ``standard_broker``, the mode's own bus, configured
    by ``bus_config``) is a dbus-broker busmgr launches (and activates for), not a dbus-daemon.
    """

    config: ManagerConfig
    private_bus: bool = False
    address: str | None = None
    print_address: bool = False
    address_file: Path | None = None
    pidfile: Path | None = None
    command: tuple[str, ...] = ()
    broker: bool = False
    launcher: BusLauncher | None = None
    activation_dir: Path | None = None
    standard_broker: bool = False
    bus_config: Path | None = None


def session_plan(opts: SessionOptions, environ: Mapping[str, str]) -> Plan:
    """``busmgr session``: a private bus, session mode (a desktop session with
    ``opts.desktop``: ``XDG_CURRENT_DESKTOP`` is its name from the start)."""
    mode = Mode.SESSION
    if opts.desktop is not None:
        environ = {**environ, "XDG_CURRENT_DESKTOP": opts.desktop.name}
    config = ManagerConfig(
        mode=mode,
        services_dirs=opts.services_dirs or default_services_dirs(mode, environ),
        state_dir=opts.state_dir or default_state_dir(mode, environ),
        import_services=not opts.no_import,
        environ=dict(environ),
        desktop=opts.desktop,
        log_dir=opts.log_dir or default_log_dir(mode, environ, opts.state_dir),
        log_rotation=_rotation(opts),
        import_dirs=opts.import_dirs,
    )
    return Plan(
        config,
        private_bus=True,
        print_address=opts.print_address,
        address_file=opts.address_file,
        pidfile=opts.pidfile,
        command=opts.command,
        broker=opts.broker,
    )


def daemon_plan(
    opts: DaemonOptions, environ: Mapping[str, str], *, systemd_runs: bool = False
) -> Plan:
    """``busmgr daemon``: an existing bus, or the mode's bus launched by the manager. Raises
    :class:`PlanError` when there is none.

    When ``systemd_runs`` the machine, busmgr on an existing bus never claims
    ``org.freedesktop.systemd1`` (systemd would own it any moment: its bus connection may
    come up after busmgr's), and in system mode it leaves the installed system services to
    systemd unless an ``--import-dir`` asks for them."""
    mode = opts.mode
    activation_dir = opts.activation_dir or default_activation_dir(mode, environ)
    launcher: BusLauncher | None = None
    address = None
    if opts.launch_bus:
        if not opts.broker:  # dbus-broker is launched by the keeper, as for a session
            launcher = _launcher(opts, activation_dir, environ)
    else:
        address = opts.address or standard_bus_address(mode, environ)
        if address is None:
            raise PlanError(
                "no session bus: DBUS_SESSION_BUS_ADDRESS is not set "
                "(give --address, or run `busmgr session` for a private bus)"
            )
    beside_systemd = systemd_runs and not opts.launch_bus  # on the bus systemd activates for
    leave_to_systemd = mode is Mode.SYSTEM and beside_systemd and not opts.import_dirs
    config = ManagerConfig(
        mode=mode,
        services_dirs=opts.services_dirs or default_services_dirs(mode, environ),
        state_dir=opts.state_dir or default_state_dir(mode, environ),
        import_services=not opts.no_import and not leave_to_systemd,
        environ=dict(environ),
        log_dir=opts.log_dir or default_log_dir(mode, environ, opts.state_dir),
        log_rotation=_rotation(opts),
        import_dirs=opts.import_dirs,
        claim_systemd1=not beside_systemd,
    )
    return Plan(
        config,
        address=address,
        pidfile=opts.pidfile,
        launcher=launcher,
        activation_dir=activation_dir,
        print_address=opts.print_address,
        address_file=opts.address_file,
        broker=opts.broker,
        standard_broker=opts.broker,
        bus_config=opts.bus_config,
    )


def _launcher(
    opts: DaemonOptions, activation_dir: Path | None, environ: Mapping[str, str]
) -> BusLauncher:
    """How ``--launch-bus`` starts the mode's bus (see :mod:`busmgr.bus.launch`): the system
    bus where its configuration says; a user's bus at ``$XDG_RUNTIME_DIR/bus``, where
    ``sd_bus``, GDBus and libdbus look for it."""
    listen = None
    if opts.mode is Mode.SESSION:
        runtime = environ.get("XDG_RUNTIME_DIR", "")
        if not os.path.isabs(runtime) or activation_dir is None:
            raise PlanError("--session --launch-bus needs XDG_RUNTIME_DIR (where the bus listens)")
        listen = f"unix:path={Path(runtime) / 'bus'}"
    if activation_dir is None:
        raise PlanError("--launch-bus needs a directory for its activation files")
    return DbusDaemonLauncher(opts.mode, activation_dir, opts.bus_config, listen)


def systemd_runs() -> bool:
    """Whether systemd is this machine's service manager (``sd_booted()``)."""
    return os.path.isdir("/run/systemd/system")


def _rotation(opts: SessionOptions | DaemonOptions) -> LogRotation:
    default = LogRotation()
    return LogRotation(
        max_bytes=opts.log_max_bytes or default.max_bytes,
        keep=default.keep if opts.log_keep is None else opts.log_keep,
    )


def run_session(opts: SessionOptions) -> int:
    """``busmgr session``: a private bus, the manager on it, optionally a command inside."""
    return run(session_plan(opts, os.environ))


def run_daemon(opts: DaemonOptions) -> int:
    """``busmgr daemon``: the manager on an existing bus."""
    try:
        plan = daemon_plan(opts, os.environ, systemd_runs=systemd_runs())
    except PlanError as err:
        print(f"busmgr: {err}", file=sys.stderr)
        return 1
    return run(plan)


def run(plan: Plan) -> int:
    """Run the manager of ``plan`` until it is told to stop; returns the exit status."""
    _logging()
    return asyncio.run(_main(plan))


# ============================================================================ the process
def _logging() -> None:
    level = os.environ.get("BUSMGR_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO), format="busmgr: %(message)s", stream=sys.stderr
    )


def _setup_process(pidfile: Path | None) -> None:
    """Name the process ``busmgr`` and write the pidfile atomically."""
    import prctl

    with contextlib.suppress(OSError):
        prctl.set_name("busmgr")
    if pidfile is not None:
        _write_atomically(pidfile, f"{os.getpid()}\n")


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".new")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class _BugReporter:
    """The loop's exception handler: an exception nobody caught is a bug. One line on stderr,
    the traceback in ``<state dir>/internal-errors.log``, and the manager stops (exit 1)."""

    def __init__(self, manager: Manager) -> None:
        self.manager = manager
        self.path = manager.config.state_dir / "internal-errors.log"

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        err = context.get("exception")
        message = context.get("message", "unhandled exception")
        if err is not None:
            self.record(message, err)
            self.manager.fatal(f"internal error: {message}: {err!r} (details in {self.path})")
        else:
            log.error("%s", message)

    def record(self, message: str, err: BaseException) -> None:
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as fh:
                fh.write(f"--- {message}\n")
                fh.write("".join(traceback.format_exception(err)))


def _exit_code(info: process.ExitInfo) -> int:
    if info.signal is not None:
        return 128 + info.signal
    return info.status or 0


# ============================================================================ the run
def _watch_loop(environ: Mapping[str, str]) -> None:
    """``BUSMGR_LOOP_DEBUG=SECONDS`` (a debug option, off by default): log every callback
    that holds the loop longer than SECONDS (the tests use 0.1; see :mod:`busmgr.loopwatch`)."""
    limit = environ.get("BUSMGR_LOOP_DEBUG", "")
    with contextlib.suppress(ValueError):
        if limit and float(limit) > 0:
            from busmgr import loopwatch

            loopwatch.watch(float(limit))


async def _main(plan: Plan) -> int:
    loop = asyncio.get_running_loop()
    _watch_loop(plan.config.environ)
    if plan.config.environ.get("BUSMGR_TRACE", "") not in ("", "0"):
        trace.enable()  # a debug option: one line of step times per activation, and start-up
        trace.begin(STARTUP, f"main ({process.proc_age():.3g}s after exec)")
    state_dir = plan.config.state_dir
    try:
        lock = StateLock.acquire(state_dir)
    except LockError as err:
        print(f"busmgr: {err}", file=sys.stderr)
        return 1
    saved = StateStore.read(state_dir, boot_id())
    manager = Manager(plan.config)
    with contextlib.suppress(ValueError):  # a debug option: how long Reexec waits for jobs
        manager.reexecution.wait = float(plan.config.environ.get("BUSMGR_REEXEC_WAIT", "10"))
    loop.set_exception_handler(_BugReporter(manager))
    manager.supervisor.start(
        plan.config.environ,
        cgroup_name=_cgroup_name(state_dir),
        saved_cgroup=saved.cgroup if saved else None,
    )
    _setup_process(plan.pidfile)
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, manager.request_shutdown, 0)
    loop.add_signal_handler(signal.SIGHUP, manager.request_reload)
    loop.add_signal_handler(signal.SIGUSR2, manager.reexecution.request)
    keeper = BusKeeper(
        manager,
        None if plan.private_bus else plan.address,
        plan.config.environ,
        plan.activation_dir,
        saved.bus if saved else None,
        broker=plan.broker,
        launcher=plan.launcher,
        standard=plan.config.mode if plan.standard_broker else None,
        bus_config=plan.bus_config,
    )
    if plan.address_file is not None:
        address_file = plan.address_file
        keeper.on_back = lambda address: _write_atomically(address_file, address + "\n")
    reexec = saved is not None and saved.manager_pid == os.getpid()
    status = 1
    try:
        for directory in plan.config.services_dirs:
            if not directory.is_dir():
                log.warning("warning: job directory %s does not exist: no jobs from it", directory)
        address = await keeper.start()
        if trace.ON:
            trace.step(STARTUP, "on the bus")
        await manager.begin(
            keeper.servicedir,
            own_servicedir=keeper.private,
            saved=saved,
            backend=keeper.backend,
            handed_over=reexec,
        )
        if plan.print_address and not reexec:
            print(address, flush=True)
        if plan.address_file is not None:
            _write_atomically(plan.address_file, address + "\n")
        if saved is not None and saved.command is not None:
            _watch_command(manager, saved.command.pid)
        elif plan.command and not reexec:
            _start_command(manager, plan.command)
        if trace.ON:
            trace.end(STARTUP, "ready")
        await manager.stopped
        if trace.ON:
            trace.begin(SHUTDOWN, "stop")
        if manager.reexecution.requested:
            await _reexec(manager, keeper, lock)  # returns only if the exec failed
        clean = await manager.stop_everything()
        if trace.ON:
            trace.step(SHUTDOWN, "jobs stopped")
        status = manager.exit_status if clean or manager.exit_status else 1
    except (process.SpawnError, LinkError, PlanError, OSError) as err:
        print(f"busmgr: {_one_line(err)}", file=sys.stderr)
        status = 1
    except Exception as err:  # a bug: one line for the user, the traceback in the state dir
        reporter = _BugReporter(manager)
        reporter.record("start-up", err)
        print(f"busmgr: internal error: {err!r} (details in {reporter.path})", file=sys.stderr)
        status = 1
    finally:
        manager.control.shutting_down = True
        await manager.close()
        if trace.ON:
            trace.step(SHUTDOWN, "off the bus")
        await keeper.stop()
        if trace.ON:
            trace.step(SHUTDOWN, "bus stopped")
        if plan.address_file is not None:
            with contextlib.suppress(FileNotFoundError):
                plan.address_file.unlink()
        if plan.pidfile is not None:
            with contextlib.suppress(FileNotFoundError):
                plan.pidfile.unlink()
        await manager.supervisor.finish(FINISH_TIMEOUT)
        if not any(job.pids for job in manager.registry.jobs()):
            manager.store.discard()  # every job stopped: nothing to take back next time
        lock.release()
        if trace.ON:
            trace.end(SHUTDOWN, "done")
    return status


def _cgroup_name(state_dir: Path) -> str:
    """The manager's cgroup directory's name, stable for one state directory: a manager
    started again after a crash finds the leaves of the jobs it takes back."""
    digest = hashlib.sha256(str(state_dir.absolute()).encode()).hexdigest()
    return f"busmgr-{digest[:12]}"


async def _reexec(manager: Manager, keeper: BusKeeper, lock: StateLock) -> None:
    """Replace this image with a new one of the manager (possibly a newer version), keeping
    every job and the private bus: the state is saved; leave the bus (after the reply to
    ``Reexec`` went out), stop reaping, save the state a last time with the descriptors the
    jobs depend on (their log pipes, their sockets), which stay open across the exec; exec.
    If the exec fails, say so and carry on to a normal shutdown (the jobs are stopped)."""
    await manager.close(keep_files=True)
    await keeper.stop(keep_bus=True)
    manager.supervisor.detach()
    process.pass_on(manager.reexecution.hand_over())  # the jobs' log pipes and sockets
    argv = _own_argv()
    log.info("re-executing: %s", " ".join(argv))
    lock.release()
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(sys.executable, [sys.executable, *argv[1:]])
    except OSError as err:
        log.critical("cannot re-execute the manager: %s; stopping every job", err)
        manager.exit_status = 1
        manager.store.enabled = True


def _own_argv() -> list[str]:
    """The command line this process was started with (``/proc/self/cmdline``)."""
    try:
        with open("/proc/self/cmdline", "rb") as fh:
            words = fh.read().split(b"\0")
    except OSError:
        return [sys.executable, *sys.argv]
    return [os.fsdecode(w) for w in words if w] or [sys.executable, *sys.argv]


def _one_line(err: BaseException) -> str:
    """An error as one line; an ``OSError`` names the file it is about."""
    if isinstance(err, OSError) and not isinstance(err, process.SpawnError):
        where = f" ({err.filename})" if err.filename else ""
        return f"{err.strerror or err}{where}"
    return " ".join(str(err).split())


def _watch_command(manager: Manager, pid: int) -> None:
    """The session command a previous image started: the session still ends with it."""
    started = process.proc_start_time(pid)
    manager.command_record = lambda: SavedProcess(pid, started)

    def ended(info: process.ExitInfo | None) -> None:
        manager.request_shutdown(_exit_code(info) if info is not None else 0)

    manager.supervisor.watch_exit(pid, ended)
    _forward_signals(manager, pid, lambda: False)


def _start_command(manager: Manager, command: tuple[str, ...]) -> None:
    """``busmgr session -- COMMAND``: run it in the session; the session ends with it."""
    loop = manager.loop
    env = manager.environment.job_env(JobClass(name="session-command"))
    try:
        pid = process.spawn(
            list(command), env, ExecContext(console=ConsoleMode.OUTPUT), foreground=True
        )
    except process.SpawnError as err:
        print(f"busmgr: {err}", file=sys.stderr)
        manager.request_shutdown(127)
        return
    started = process.proc_start_time(pid)
    manager.command_record = lambda: SavedProcess(pid, started)
    command_exit: asyncio.Future[process.ExitInfo] = loop.create_future()
    manager.supervisor.reaper.watch(pid, lambda _p, info: command_exit.set_result(info))
    command_exit.add_done_callback(lambda f: manager.request_shutdown(_exit_code(f.result())))
    _forward_signals(manager, pid, command_exit.done)


def _forward_signals(manager: Manager, pid: int, ended: Callable[[], bool]) -> None:
    """The session ends when its command does: SIGTERM/SIGINT go to the command, and the
    session ends anyway if the command is still there after a grace period."""
    loop = manager.loop

    def forward(signum: int) -> None:
        if ended():
            manager.request_shutdown(0)
            return
        process.kill_pid(pid, signum)
        loop.call_later(COMMAND_GRACE, manager.request_shutdown, 128 + signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, forward, signum)
