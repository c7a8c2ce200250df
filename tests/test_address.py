"""Bus addresses as the manager hands them out (busmgr.bus.address). Pure."""

from __future__ import annotations

import pytest

from busmgr.bus.address import without_guid


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("unix:path=/run/bus,guid=0123abcd", "unix:path=/run/bus"),
        ("unix:guid=1,path=/run/bus", "unix:path=/run/bus"),
        ("unix:path=/a,guid=1;tcp:host=x,port=1,guid=1", "unix:path=/a;tcp:host=x,port=1"),
        ("unix:path=/run/bus", "unix:path=/run/bus"),
        ("unix:abstract=/tmp/dbus-x", "unix:abstract=/tmp/dbus-x"),
    ],
)
def test_without_guid(address: str, expected: str) -> None:
    assert without_guid(address) == expected
