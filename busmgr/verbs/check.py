"""``check``: job files parsed offline, with the manager's own parser, without a bus."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from busmgr.options import Mode, default_services_dirs
from busmgr.verbs import EXIT_FAILED, EXIT_OK


def run_check(args: argparse.Namespace) -> int:
    from busmgr.config import Severity, check_paths

    paths = [Path(p) for p in args.paths] or list(default_services_dirs(Mode.SESSION, os.environ))
    failed = False
    for diagnostic in check_paths(paths):
        print(diagnostic, file=sys.stderr)
        failed = failed or diagnostic.severity == Severity.ERROR
    return EXIT_FAILED if failed else EXIT_OK
