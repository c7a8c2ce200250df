"""``python -m busmgr`` is the ``busmgr`` command."""

from busmgr.cli import entry

entry()
