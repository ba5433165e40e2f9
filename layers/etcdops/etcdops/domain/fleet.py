"""The fleet: many clusters watched by one deployment, and the fleet brake (invariant 15).

Pure rules, no I/O and no clock: every time is an argument.

* A cluster **reports** after each health round whether it saw a failure (a member not healthy, or
  no quorum). A report counts for :attr:`FleetLimits.window_seconds` after it was made.
* The **brake** is engaged when at least :attr:`FleetLimits.min_failing` clusters (default 2: one
  failing cluster is that cluster's problem) and more than :attr:`FleetLimits.brake_share` of the
  fleet report failures within the window: so many clusters failing at once point at the observer
  (its network, its permissions, our own deploy) rather than at the clusters. While it is engaged
  no automatic change starts anywhere; it is released by itself once the share falls back.
* At most :attr:`FleetLimits.repair_cap` repairs run at once across the fleet: each holds a
  **slot** (named by its execution) with a lease; a slot whose lease ran out is free again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from etcdops.domain.errors import UsageError

REGISTRY_PATH = "/etcdops/clusters"
"""Where the cluster registry keeps one configuration per cluster (``<path>/<name>``; ClusterRegistryPath)."""
DEFAULT_BRAKE_SHARE = 0.2
DEFAULT_MIN_FAILING = 2
DEFAULT_WINDOW_SECONDS = 180
DEFAULT_REPAIR_CAP = 3
DEFAULT_SLOT_LEASE_SECONDS = 3 * 3600  # longer than any ReplaceMember run (approval included)


@dataclass(frozen=True)
class FleetLimits:
    brake_share: float = DEFAULT_BRAKE_SHARE
    min_failing: int = DEFAULT_MIN_FAILING
    window_seconds: float = DEFAULT_WINDOW_SECONDS
    repair_cap: int = DEFAULT_REPAIR_CAP
    slot_lease_seconds: float = DEFAULT_SLOT_LEASE_SECONDS

    def __post_init__(self) -> None:
        if not 0 < self.brake_share < 1:
            raise UsageError(f"fleet brake share: must be between 0 and 1 (exclusive), got {self.brake_share}")
        if self.min_failing < 1:
            raise UsageError(f"fleet brake minimum: must be at least 1 cluster, got {self.min_failing}")
        if self.window_seconds <= 0:
            raise UsageError(f"fleet window: must be a positive number of seconds, got {self.window_seconds}")
        if self.repair_cap < 1:
            raise UsageError(f"fleet repair cap: must be at least 1, got {self.repair_cap}")
        if self.slot_lease_seconds <= 0:
            raise UsageError(f"fleet slot lease: must be positive, got {self.slot_lease_seconds}")


@dataclass(frozen=True)
class Report:
    """What one cluster's last round saw."""

    cluster: str
    failing: bool
    at: datetime


@dataclass(frozen=True)
class BrakeDecision:
    engaged: bool
    failing: tuple[str, ...]
    fleet_size: int
    reason: str

    @property
    def share(self) -> float:
        return len(self.failing) / self.fleet_size if self.fleet_size else 0.0


def decide_brake(reports: Iterable[Report], fleet: Iterable[str], now: datetime, limits: FleetLimits) -> BrakeDecision:
    """Whether automatic changes pause fleet-wide now. ``fleet`` is every cluster the deployment
    watches (the registry); a report of a cluster not in it, or older than the window, does not count."""
    members = set(fleet)
    oldest = now - timedelta(seconds=limits.window_seconds)
    failing = tuple(sorted({r.cluster for r in reports if r.failing and r.cluster in members and r.at >= oldest}))
    size = len(members)
    share = len(failing) / size if size else 0.0
    engaged = len(failing) >= limits.min_failing and share > limits.brake_share
    what = f"{len(failing)} of {size} clusters ({share:.0%}) reported failures in the last {limits.window_seconds:g} s"
    if engaged:
        reason = (
            f"{what}, more than {limits.brake_share:.0%}: the observer (network, permissions, a deploy) is "
            "the likelier culprit, so automatic changes pause fleet-wide until the share falls back (invariant 15)"
        )
    else:
        limit = f"at most {limits.brake_share:.0%} or fewer than {limits.min_failing}"
        reason = f"{what}: {limit}, automatic changes allowed"
    return BrakeDecision(engaged, failing, size, reason)


@dataclass(frozen=True)
class SlotDecision:
    granted: bool
    holders: dict[str, datetime]  # the slots after the decision (expired ones dropped): execution -> lease end
    reason: str


def decide_slot(holders: Mapping[str, datetime], execution: str, now: datetime, limits: FleetLimits) -> SlotDecision:
    """Whether repair ``execution`` may start under the fleet-wide cap. A slot it already holds is
    kept (a retried round starts the same execution); expired slots are free."""
    live = {name: until for name, until in holders.items() if until > now}
    lease_end = now + timedelta(seconds=limits.slot_lease_seconds)
    if execution in live:
        return SlotDecision(True, {**live, execution: lease_end}, f"{execution} holds a repair slot already")
    if len(live) >= limits.repair_cap:
        running = ", ".join(sorted(live))
        return SlotDecision(
            False,
            live,
            f"{len(live)} repairs run across the fleet ({running}), the cap is {limits.repair_cap} (invariant 15): "
            "this one waits for a free slot",
        )
    return SlotDecision(True, {**live, execution: lease_end}, f"repair slot {len(live) + 1} of {limits.repair_cap}")


def release_slot(holders: Mapping[str, datetime], execution: str) -> dict[str, datetime]:
    return {name: until for name, until in holders.items() if name != execution}
