"""``python -m busmgr`` is the ``busmgr`` command."""

from busmgr.cli import main

raise SystemExit(main())
