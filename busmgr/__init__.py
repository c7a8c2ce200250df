"""busmgr: a D-Bus activated service manager.

Data flows one way: job file -> :class:`busmgr.jobclass.JobClass` (frozen, built only by
:mod:`busmgr.config`) -> :class:`busmgr.job.Job` (state machine) -> :mod:`busmgr.process`
(spawn, reap, kill) -> :mod:`busmgr.bus` (signals and properties).
"""

__version__ = "0.1.0"

MANAGER_BUS_NAME = "org.busmgr.Manager1"
MANAGER_PATH = "/org/busmgr/Manager1"
MANAGER_INTERFACE = "org.busmgr.Manager1"
JOB_INTERFACE = "org.busmgr.Job1"
INSTANCE_INTERFACE = "org.busmgr.Instance1"
ERROR_PREFIX = "org.busmgr.Error."
