"""What the ``busmgr`` verbs do; :mod:`busmgr.cli` parses the command line and names them.

One module per kind of verb, each imported only when one of its verbs runs:

* :mod:`~busmgr.verbs.show` (``list``, ``status``), :mod:`~busmgr.verbs.control` (``start``,
  ``stop``, ``emit``, the environment... : the manager's operations),
  :mod:`~busmgr.verbs.follow` (``events``, ``log``), :mod:`~busmgr.verbs.pictures` (``graph``,
  ``plot``): clients of the manager's bus API (SPEC §3), run by
  :mod:`~busmgr.verbs.connection`; they hold no job logic;
* :mod:`~busmgr.verbs.check`: job files checked offline with the manager's own parser;
* :mod:`~busmgr.verbs.serve` (``session``, ``daemon``): the manager itself, handed over to
  :mod:`busmgr.runtime`.

What they show is built by the pure functions of :mod:`~busmgr.verbs.output`. Modules only some
verbs need (asyncio, dbus-fast, the runtime, the views) are imported inside those verbs, so
that a one-call command costs little more than its call.

Exit statuses (SPEC §1): 0 ok, 1 the operation failed (error reply, job failed, no bus), 2
usage error (the manager's ``InvalidArgs`` too), 3 ``status``: not running, 141 the reader of
our output went away (as a C program killed by SIGPIPE). Every error is one line on stderr.
"""

PROG = "busmgr"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a process killed by ^C
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what `busmgr list | head -1` would give in C
