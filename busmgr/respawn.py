"""Respawn accounting: the window of main failures counted against ``respawn limit``.

``respawn limit COUNT INTERVAL`` allows COUNT respawns within INTERVAL seconds. A
:class:`RespawnWindow` is the pure arithmetic of that rule: a frozen value that each failure of
main replaces with the next one. It reads no clock (the caller passes its host's ``now``), so a
job's respawn limit is tested with a hand-moved clock, and a snapshot records the window as it
is (``start``, ``count``) for the next manager to go on counting.
"""

from __future__ import annotations

from dataclasses import dataclass

from busmgr.jobclass import RespawnPolicy


@dataclass(frozen=True, slots=True)
class RespawnWindow:
    """``count`` failures of main counted since ``start`` (the host's monotonic seconds).

    Invariant: ``count >= 0``; a failure more than ``interval`` seconds after ``start`` opens a
    new window that counts just it.
    """

    start: float = 0.0
    count: int = 0

    def counted(self, now: float, policy: RespawnPolicy) -> RespawnWindow:
        """The window once the failure of main at ``now`` is counted."""
        if now - self.start > policy.interval:
            return RespawnWindow(now, 1)
        return RespawnWindow(self.start, self.count + 1)

    def too_fast(self, policy: RespawnPolicy) -> bool:
        """Whether the window holds more failures than the limit allows (limit 0: none)."""
        return bool(policy.limit) and self.count > policy.limit


def too_fast_reason(policy: RespawnPolicy) -> str:
    """The reason a job that respawned too fast fails with."""
    return f"respawned too fast ({policy.limit} in {policy.interval:g}s)"
