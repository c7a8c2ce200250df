"""D-Bus activation: requests from the bus daemon become starts of the jobs that provide names.

* :mod:`~busmgr.bus.activation.requests`: what every backend shares: one start per bus name
  however many requests arrive while it is under way, and the outcome told to the backend (the
  reason of a failure, for the waiting callers);
* :mod:`~busmgr.bus.activation.dbus_daemon`: the dbus-daemon backend (``systemd1`` activator
  mode, or the ``busmgr activate`` helper mode) and its service files.

Every activation is :meth:`busmgr.control.Control.activate_name`, the path ``ActivateName``
takes too: the event ``dbus-activation NAME=...``.
"""

from busmgr.bus.activation.dbus_daemon import ACTIVATOR, HELPER, SYSTEMD, DbusDaemonActivation
from busmgr.bus.activation.requests import ActivationRequests, Failed

__all__ = ["ACTIVATOR", "HELPER", "SYSTEMD", "ActivationRequests", "DbusDaemonActivation", "Failed"]
