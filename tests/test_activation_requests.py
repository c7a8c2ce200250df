"""Activation requests without a bus: one start per key at a time, failures reported once, and
never for an activation the bus already served (the name had an owner)."""

from __future__ import annotations

import asyncio

from busmgr.bus.activation import ActivationRequests, Failed
from busmgr.errors import ManagerError

from conftest import until


class Activator:
    """``activate_name`` that waits until the test decides how it ends."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.outcomes: list[asyncio.Future[None]] = []

    async def activate_name(self, bus_name: str, *, quiet: bool = False) -> tuple[str, str]:
        self.calls.append(bus_name)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.outcomes.append(fut)
        await fut
        return bus_name, ""


async def settle(requests: ActivationRequests) -> None:
    """Until every activation task under way has finished."""
    await asyncio.wait_for(asyncio.gather(*requests._tasks), 5)


async def test_requests_for_a_key_under_way_are_merged_and_a_failure_reported_once() -> None:
    activator = Activator()
    requests = ActivationRequests(activator)
    failures: list[Failed] = []
    requests.request("u", "org.x.Y", failures.append)
    requests.request("u", "org.x.Y", failures.append)
    await until(lambda: len(activator.calls) == 1)
    assert activator.calls == ["org.x.Y"]
    activator.outcomes[0].set_exception(ManagerError("JobFailed", "job y failed: boom"))
    await settle(requests)
    assert failures == [Failed("org.busmgr.Error.JobFailed", "job y failed: boom")]
    assert not requests.pending("u")


async def test_a_served_activation_reports_no_failure_and_a_new_request_starts_anew() -> None:
    activator = Activator()
    requests = ActivationRequests(activator)
    failures: list[Failed] = []
    requests.request("u", "org.x.Y", failures.append)
    requests.name_owned("org.x.Y")  # the bus delivered: this activation is over for it
    requests.request("u", "org.x.Y", failures.append)  # a new one, not merged
    await until(lambda: len(activator.calls) == 2)
    activator.outcomes[0].set_exception(ManagerError("JobFailed", "stopped"))  # the first
    activator.outcomes[1].set_result(None)
    await settle(requests)
    assert failures == []


async def test_a_failure_is_not_reported_when_the_bus_says_the_name_has_an_owner() -> None:
    # The manager may hear of a process's exit before it hears of its name: the bus decides
    # whether the waiting calls were served (a wrapper that exited once another process owned
    # the name, a job stopped as soon as it was ready).
    owners = {"org.x.Served": True, "org.x.Lost": False}
    asked: list[str] = []

    async def has_owner(name: str) -> bool:
        asked.append(name)
        return owners[name]

    activator = Activator()
    requests = ActivationRequests(activator, has_owner)
    failures: list[tuple[str, Failed]] = []
    for name in owners:
        requests.request(name, name, lambda f, name=name: failures.append((name, f)))
    await until(lambda: len(activator.calls) == 2)
    for outcome in activator.outcomes:
        outcome.set_exception(ManagerError("JobFailed", "job x failed: main exited"))
    await settle(requests)
    assert sorted(asked) == ["org.x.Lost", "org.x.Served"]
    assert failures == [
        ("org.x.Lost", Failed("org.busmgr.Error.JobFailed", "job x failed: main exited"))
    ]


async def test_a_bus_that_cannot_say_leaves_the_failure_reported() -> None:
    async def has_owner(name: str) -> bool:
        raise ConnectionError("the bus went away")

    activator = Activator()
    requests = ActivationRequests(activator, has_owner)
    failures: list[Failed] = []
    requests.request("u", "org.x.Y", failures.append)
    await until(lambda: len(activator.calls) == 1)
    activator.outcomes[0].set_exception(ManagerError("JobFailed", "job y failed: boom"))
    await settle(requests)
    assert failures == [Failed("org.busmgr.Error.JobFailed", "job y failed: boom")]
