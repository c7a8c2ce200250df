"""When a job's main process counts as ready.

* :mod:`~busmgr.readiness.expect`: ``expect stop|fork|daemon|notify`` (signals, forks, the
  notify socket);
* :mod:`~busmgr.readiness.busname`: ``dbus NAME`` (the name has an owner, and the owner is one
  of the job's processes).

Both end in ``job.ready(...)`` or ``job.ready_failed(...)``, and only while the job waits in
``spawned``. Neither talks to the bus itself: bus-name readiness reads owners through the
:class:`~busmgr.readiness.busname.NameOwners` protocol, which the bus layer implements.
"""

from busmgr.readiness.busname import BusNameReadiness, NameOwners
from busmgr.readiness.expect import ExpectHost, ExpectReadiness

__all__ = ["BusNameReadiness", "ExpectHost", "ExpectReadiness", "NameOwners"]
