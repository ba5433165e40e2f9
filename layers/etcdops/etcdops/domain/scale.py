"""Scaling a cluster between 3, 5 and 7 voting members: the rules, pure.

The ScaleCluster runbook (:mod:`etcdops.app.runbook.scale`) observes the cluster and drives the hosts; what
it may do comes from here:

* which sizes it scales to (:func:`size_refusal`): an odd number of voters, 3, 5 or 7. An even number
  tolerates no more failed members than the odd number below it, and a network split in halves leaves no
  majority on either side; more than 7 voters slow every write and add no useful tolerance; a single voter
  tolerates none.
* when it may change anything (:func:`refusals`): every member healthy, a leader, no alarm, no learner.
* the next change from what the cluster is now (:func:`next_change`): one member at a time, never a second
  learner (a new member joins as a learner and is promoted before the next one comes), never the leader
  (leadership is handed on first), so that on the way the cluster never tolerates fewer failures than it
  does at the start or will at the end (:func:`plan`, :func:`tolerance`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from etcdops.domain.health import ClusterHealth, MemberHealth
from etcdops.domain.wording import count

SIZES = (3, 5, 7)
"""The sizes etcdops scales a cluster to."""
LARGEST = SIZES[-1]


def tolerance(voters: int) -> int:
    """How many voters can fail while the others still form a majority."""
    return max(0, (voters - 1) // 2)


def size_refusal(size: object) -> str | None:
    """Why ``size`` is not a size etcdops scales to, in one line; None when it is one."""
    if isinstance(size, bool) or not isinstance(size, int):
        return f"size {size!r} is not a whole number; etcdops scales to 3, 5 or 7 members"
    if size < 1:
        return f"size {size} is below 1; etcdops scales to 3, 5 or 7 members"
    if size > LARGEST:
        return (
            f"size {size} is beyond {LARGEST}: more voters slow every write (each needs a majority of them) "
            f"and add no useful fault tolerance; etcdops scales to 3, 5 or 7 members"
        )
    if size % 2 == 0:
        return (
            f"size {size} is even: {size} voters tolerate {count(tolerance(size), 'failed member')}, no more than "
            f"{size - 1} do, and a split in halves leaves no majority; use {size - 1} or {size + 1}"
        )
    if size == 1:
        return "size 1 tolerates no failed member; etcdops scales to 3, 5 or 7 members"
    return None


def refusals(health: ClusterHealth) -> list[str]:
    """Why the cluster cannot change its size now (empty: it can): every member must be healthy, with a
    leader, no alarm raised, and no learner (etcdops adds one member at a time, never a second learner)."""
    reasons = [f"member {m.label} is not healthy ({m.error or 'no answer'})" for m in health.members if not m.healthy]
    if not health.has_quorum:
        reasons.append("the cluster has no leader with a quorum of healthy voters")
    reasons += [f"learner {m.label} is in the cluster; promote or remove it first" for m in health.learners]
    reasons += [f"alarm {a.alarm} is raised on member {a.member_id:x}" for a in health.alarms]
    return reasons


ChangeKind = Literal["add", "remove", "done"]


@dataclass(frozen=True)
class Change:
    """The next membership change: add a member (as a learner, then promoted), remove ``member``, or done.
    ``voters_after`` is how many voters the cluster has once the change is complete."""

    kind: ChangeKind
    voters_after: int
    member: MemberHealth | None = None


def removal_order(health: ClusterHealth) -> list[MemberHealth]:
    """The voters a scale-in removes, first to last: never the leader; members etcdops added most recently
    (the highest name) first."""
    followers = [m for m in health.voters if m.id != health.leader]
    return sorted(followers, key=lambda m: (m.name, m.id), reverse=True)


def next_change(health: ClusterHealth, size: int) -> Change:
    """What to do next towards ``size`` voters, from a fresh probe the caller made sure :func:`refusals`
    has nothing against. Converges: the answer depends only on what the cluster is now."""
    voters = len(health.voters)
    if voters < size:
        return Change("add", voters + 1)
    if voters > size:
        return Change("remove", voters - 1, removal_order(health)[0])
    return Change("done", voters)


@dataclass(frozen=True)
class Stage:
    """The membership after one change of a plan: how many voters and learners."""

    voters: int
    learners: int

    @property
    def tolerance(self) -> int:
        return tolerance(self.voters)


def plan(voters: int, size: int) -> list[Stage]:
    """Every membership the cluster passes through from ``voters`` voters to ``size``, one change at a
    time: a new member is first a learner, then a voter; a removed one is gone at once."""
    stages: list[Stage] = []
    while voters != size:
        if voters < size:
            stages.append(Stage(voters, 1))
            voters += 1
        else:
            voters -= 1
        stages.append(Stage(voters, 0))
    return stages


def even_voters(cluster: str, health: ClusterHealth) -> tuple[str, str] | None:
    """HealthCheck's notice for a cluster that runs with an even number of voters, and the identity of the
    incident (its voters: a notice once per set of voters), or None. A notice, not a repair: the operator
    chooses the size (:func:`size_refusal` says why an even one is refused)."""
    voters = sorted(health.voters, key=lambda m: m.id)
    n = len(voters)
    if n == 0 or n % 2 or health.cluster_id is None:
        return None
    sizes = " or ".join(str(s) for s in (n - 1, n + 1) if s in SIZES) or str(LARGEST)
    message = (
        f"Cluster {cluster} runs with {n} voting members ({', '.join(m.label for m in voters)}): an even number "
        f"tolerates {count(tolerance(n), 'failed member')}, no more than {n - 1} do, and a network split in halves "
        f"leaves no majority. Scale it to {sizes} (etcdops runbook start scale --size N)."
    )
    return message, "-".join(f"{m.id:x}" for m in voters)


def summary(cluster: str, voters: int, size: int) -> str:
    """What the runbook is about to do, for the approval request and the start message."""
    path = " -> ".join(str(n) for n in [voters, *(s.voters for s in plan(voters, size) if not s.learners)])
    if size > voters:
        how = (
            "one member at a time: launch a host, add it as a learner, start it, promote it once it caught up, "
            "wait until every voter is healthy, send clients to it; then the next"
        )
    else:
        how = (
            "one member at a time, never the leader (leadership is handed on first): remove it, wait until every "
            "voter is healthy, take its host out of the load balancer and retire it; then the next"
        )
    return f"Scale etcd cluster {cluster} from {voters} to {size} voting members ({path}), {how}."


def outcome(doc: Mapping[str, Any]) -> str:
    """A finished ScaleCluster in one line (``runbook show``): the sizes and each member added or removed."""
    before, size = doc.get("voters_before"), doc.get("size")
    changes = doc.get("changes") or []
    if not changes:
        return f"{size} voting members already; nothing changed"
    done = ", ".join(f"{'added' if c.get('kind') == 'add' else 'removed'} {c.get('name')}" for c in changes)
    return f"{before} -> {size} voting members: {done}"
