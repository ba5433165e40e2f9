"""The fleet brake and the fleet-wide repair cap as a health round applies them (invariant 15).

Each round reports whether it saw a failure; before a repair starts, the round asks the gate, which
(1) decides the brake from every cluster's recent reports and changes it with a conditional write, the
one writer of each change sending its one message, and (2) takes a repair slot under the cap with a
conditional write, first freeing the slots of executions Step Functions reports ended. While the brake
is engaged, every round that saw no failure checks it too, so it is released as soon as the share falls
back, whether or not a repair is waiting. A one-cluster
stack has no fleet (no fan-out saved the members): its rounds never brake, and the cap still holds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from etcdops.adapters.aws import Notifier
from etcdops.adapters.fleet_state import FleetStore
from etcdops.domain.fleet import BrakeDecision, FleetLimits, decide_brake, decide_slot, release_slot

__all__ = ["BRAKE_KIND", "RELEASED_KIND", "FleetGate"]

log = logging.getLogger("etcdops.app.fleet")

BRAKE_KIND = "fleet-brake"
RELEASED_KIND = "fleet-brake-released"
_SAVE_ATTEMPTS = 8


@dataclass
class FleetGate:
    store: FleetStore
    limits: FleetLimits
    notifier: Notifier | None
    ended: Callable[[str], bool]  # execution name -> Step Functions reports it ended

    def report(self, cluster: str, failing: bool, now: datetime) -> list[str]:
        """Record what a round saw. A round that saw no failure while the brake is engaged also checks
        whether the share fell back: the brake is released (and said so, once) by the rounds of the
        clusters that recovered, not only when the next repair asks to start (one read otherwise)."""
        self.store.report(cluster, failing, now)
        if failing or not self.store.load_brake().engaged:
            return []
        return self.check_brake(now)[1]

    def check_brake(self, now: datetime) -> tuple[BrakeDecision, list[str]]:
        """The brake now, and what changing it did (said by the one caller whose write changed it)."""
        members = self.store.load_members()
        if members is None:
            decision = BrakeDecision(False, (), 1, "one cluster, no fleet: the fleet brake does not apply")
        else:
            decision = decide_brake(self.store.load_reports(), members, now, self.limits)
        if decision.engaged == self.store.load_brake().engaged:
            return decision, []
        if not self.store.set_brake(decision.engaged, decision.reason, now):
            return decision, []  # another round changed it first and said so
        kind = BRAKE_KIND if decision.engaged else RELEASED_KIND
        if decision.engaged:
            subject = f"etcdops: FLEET BRAKE - {len(decision.failing)} of {decision.fleet_size} clusters failing"
            body = (
                f"{decision.reason}.\n\nFailing: {', '.join(decision.failing)}\n\nNo automatic membership change "
                "starts on any cluster until the share falls back; check the observer first (its network path to "
                "the clusters, its IAM permissions, the last deploy of this stack)."
            )
        else:
            subject = "etcdops: fleet brake released - automatic changes resume"
            body = f"{decision.reason}."
        log.warning("%s: %s", kind, decision.reason)
        if self.notifier is None:
            log.warning("no notification topic configured; not sending: %s", subject)
        else:
            self.notifier.publish(subject, body, {"kind": kind, "cluster": "fleet"})
        return decision, [f"{'engaged' if decision.engaged else 'released'} the fleet brake"]

    def may_start(self, execution: str, now: datetime) -> tuple[str | None, list[str]]:
        """None when repair ``execution`` may start (it holds a slot now), else why it waits; and what
        changing the brake did."""
        brake, done = self.check_brake(now)
        if brake.engaged:
            return f"fleet brake engaged: {brake.reason}", done
        for _ in range(_SAVE_ATTEMPTS):
            slots = self.store.load_slots()
            holders = dict(slots.holders)
            for name in list(holders):
                if name != execution and self.ended(name):
                    holders = release_slot(holders, name)
            slot = decide_slot(holders, execution, now, self.limits)
            if not slot.granted:
                return slot.reason, done
            if self.store.save_slots(slot.holders, slots.version):
                log.info("%s: %s", execution, slot.reason)
                return None, done
        return "the repair slots changed under every attempt to take one: the next round tries again", done
