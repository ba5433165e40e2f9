"""Folding probe rounds into the history (failure streaks), and whether a membership change is safe."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from etcdops.domain.decisions import History, LockLike, Streak
from etcdops.domain.health import ClusterHealth, MemberHealth, quorum_of
from etcdops.domain.policy.ids import utc
from etcdops.domain.policy.settings import PolicyConfig


def lock_active(lock: LockLike | None, now: datetime) -> bool:
    return lock is not None and utc(lock.expires_at) > now


def has_leader(observation: ClusterHealth) -> bool:
    return observation.leader is not None and observation.leader != 0


def healthy_voters(observation: ClusterHealth, ec2_failures: frozenset[int]) -> tuple[MemberHealth, ...]:
    return tuple(m for m in observation.voters if m.healthy and m.id not in ec2_failures)


def quorum_lost(observation: ClusterHealth, ec2_failures: frozenset[int]) -> bool:
    return not has_leader(observation) or len(healthy_voters(observation, ec2_failures)) < observation.quorum


@dataclass(frozen=True)
class Safety:
    """Whether removing or replacing ``target`` keeps invariant 1, and the numbers behind it."""

    safe: bool
    others_healthy: int
    needed: int
    leader_ok: bool


def change_safety(
    observation: ClusterHealth, target_id: int | None, ec2_failures: frozenset[int] = frozenset()
) -> Safety:
    """Invariant 1 for a change of ``target_id`` (None: adding a member).

    The cluster must have a leader that is a healthy voter other than the target, and the healthy
    voters other than the target must reach both the current quorum (so the change can commit)
    and the quorum of the cluster after the target's removal.
    """
    n = len(observation.voters)
    healthy = healthy_voters(observation, ec2_failures)
    others_healthy = [m for m in healthy if m.id != target_id]
    needed = max(quorum_of(n), quorum_of(n - 1)) if target_id is not None else quorum_of(n)
    leader_ok = has_leader(observation) and any(m.id == observation.leader for m in others_healthy)
    return Safety(leader_ok and len(others_healthy) >= needed, len(others_healthy), needed, leader_ok)


def update_history(
    history: History,
    observation: ClusterHealth,
    now: datetime,
    ec2_failures: frozenset[int] = frozenset(),
) -> History:
    """Fold one probe round into ``history``.

    A member whose probe failed, or that an EC2 failure event names, starts or extends its streak;
    a healthy probe resets it; a member missing from the observation is dropped. The quorum-loss
    streak is extended while quorum is lost and reset when it is back. The mixed-versions streak is
    extended while the members report more than one server version and reset once every member
    reports the same one (a round where some member did not answer leaves it as it was). Backup and
    lock are kept.
    """
    now = utc(now)
    streaks: dict[int, Streak] = {}
    for member in observation.members:
        if member.healthy and member.id not in ec2_failures:
            continue
        previous = history.streaks.get(member.id)
        streaks[member.id] = previous.extended(now) if previous is not None else Streak.start(now)
    if quorum_lost(observation, ec2_failures):
        quorum_loss = history.quorum_loss.extended(now) if history.quorum_loss else Streak.start(now)
    else:
        quorum_loss = None
    mixed = history.mixed_versions
    if len(observation.member_versions) > 1:
        mixed = mixed.extended(now) if mixed is not None else Streak.start(now)
    elif observation.versions_known:
        mixed = None
    return replace(history, streaks=streaks, quorum_loss=quorum_loss, mixed_versions=mixed)


def is_confirmed(streak: Streak | None, config: PolicyConfig) -> bool:
    """K consecutive failed probes spanning at least T seconds (invariant 3)."""
    if streak is None:
        return False
    return streak.count >= config.health.failure_threshold and streak.span >= config.failure_window
