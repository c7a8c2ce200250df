"""D-Bus activation: requests from the bus daemon become starts of the jobs that provide names.

* :mod:`~busmgr.bus.activation.requests`: what every backend shares: one start per bus name
  however many requests arrive while it is under way, and the outcome told to the backend (the
  reason of a failure, for the waiting callers);
* :mod:`~busmgr.bus.activation.dbus_daemon`: the dbus-daemon backend (``systemd1`` activator
  mode, or the ``busmgr activate`` helper mode) and its service files;
* :mod:`~busmgr.bus.activation.broker`: the dbus-broker backend (busmgr is the broker's
  launcher: names added and requests answered on its controller connection);
* :mod:`~busmgr.bus.activation.backend`: what the manager needs of any backend.

Every activation is :meth:`busmgr.control.Control.activate_name`, the path ``ActivateName``
takes too: the event ``dbus-activation NAME=...``.
"""

from busmgr.bus.activation.backend import ActivationBackend, BackendFactory
from busmgr.bus.activation.broker import BrokerActivation
from busmgr.bus.activation.dbus_daemon import ACTIVATOR, HELPER, SYSTEMD, DbusDaemonActivation
from busmgr.bus.activation.requests import ActivationRequests, Failed

__all__ = [
    "ACTIVATOR",
    "HELPER",
    "SYSTEMD",
    "ActivationBackend",
    "ActivationRequests",
    "BackendFactory",
    "BrokerActivation",
    "DbusDaemonActivation",
    "Failed",
]
