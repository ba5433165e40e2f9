"""Maintenance decisions (pure): when a member's backend is worth defragmenting, in which order the members
go, how far to compact, and whether a NOSPACE alarm may be disarmed.

Defragmentation rewrites one member's bbolt file and blocks that member while it runs (etcd's docs: a few
seconds per GB); it is not replicated, so each member is done on its own. The known-good practice, kept
here: only when a rule says it pays, one member at a time, followers first, the leader last (its leadership
moved away first). NOSPACE recovery is compact -> defragment every member -> disarm only when every
member's database is below ``disarm_ratio`` of the quota (else the alarm would come straight back).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from etcdops.domain.health import ClusterHealth, MemberHealth

MIB = 1024 * 1024


@dataclass(frozen=True)
class DefragRule:
    """Defragment a member when at least ``min_fragmented_ratio`` of its file is free pages and the file is
    at least ``min_db_bytes`` (a small file costs little whatever its share); NOSPACE recovery defragments
    every member regardless."""

    min_fragmented_ratio: float = 0.45
    min_db_bytes: int = 100 * MIB


@dataclass(frozen=True)
class DefragVerdict:
    """Whether to defragment one member, why, and what it should give back (bytes not in use)."""

    member: str
    defragment: bool
    reasons: tuple[str, ...]
    db_size: int
    db_size_in_use: int

    @property
    def reclaimable_bytes(self) -> int:
        return max(0, self.db_size - self.db_size_in_use)


def fragmented_ratio(db_size: int, db_size_in_use: int) -> float:
    """The share of the file that is free pages (0 for an empty or fully used file)."""
    if db_size <= 0:
        return 0.0
    return max(0.0, min(1.0, (db_size - db_size_in_use) / db_size))


def defrag_verdict(member: MemberHealth, rule: DefragRule, *, nospace: bool = False) -> DefragVerdict:
    """The rule applied to one member's last status; a member that did not answer is never defragmented."""
    name = member.name or f"{member.id:x}"
    if not member.healthy or member.db_size is None or member.db_size_in_use is None:
        return DefragVerdict(name, False, (f"{name}: no status this round; not touched",), 0, 0)
    size, used = member.db_size, member.db_size_in_use
    ratio = fragmented_ratio(size, used)
    numbers = f"{name}: {size} bytes, {used} in use ({100 * ratio:.0f} % fragmented)"
    if nospace:
        return DefragVerdict(name, True, (f"{numbers}; NOSPACE recovery defragments every member",), size, used)
    reasons: list[str] = []
    if ratio < rule.min_fragmented_ratio:
        reasons.append(f"below {100 * rule.min_fragmented_ratio:.0f} % fragmented")
    if size < rule.min_db_bytes:
        reasons.append(f"smaller than {rule.min_db_bytes} bytes")
    if reasons:
        return DefragVerdict(name, False, (f"{numbers}; skipped: {' and '.join(reasons)}",), size, used)
    return DefragVerdict(name, True, (f"{numbers}; would give back ~{size - used} bytes",), size, used)


def defrag_order(health: ClusterHealth, names: Sequence[str]) -> list[str]:
    """The members named, learners and followers first (by name), the leader last."""
    leader = health.member(health.leader or 0) if health.leader else None
    leader_name = leader.name if leader else None
    return sorted(names, key=lambda name: (name == leader_name, name))


@dataclass(frozen=True)
class CompactionPlan:
    """Compact to ``revision`` (None: not now) and why."""

    revision: int | None
    reason: str


EXTERNAL_COMPACTOR_KEY = b"compact_rev_key"
"""The key Kubernetes' API server keeps its compaction bookkeeping in: its presence says the API server
compacts this cluster on its own (every 5 minutes by default), and maintenance leaves compaction to it."""


def compaction_plan(
    current_revision: int, retention_revisions: int, *, external_compactor: bool, nospace: bool = False
) -> CompactionPlan:
    """Keep the last ``retention_revisions`` revisions: compact to ``current - retention`` (etcd answers that a
    revision compacted already is compacted: the step takes that as done). An external compactor
    (Kubernetes) is left alone unless the cluster is out of space (its own compaction, a write, is refused
    then)."""
    target = current_revision - retention_revisions
    if external_compactor and not nospace:
        return CompactionPlan(None, "another client compacts this cluster (Kubernetes' compact_rev_key): left to it")
    if target <= 1:
        kept = retention_revisions
        return CompactionPlan(None, f"revision {current_revision}: no history older than the {kept} kept")
    return CompactionPlan(target, f"revision {current_revision}: compact to {target}, keeping {retention_revisions}")


@dataclass(frozen=True)
class DisarmVerdict:
    """Whether the NOSPACE alarm may be disarmed, and each member's numbers for the message."""

    disarm: bool
    limit_bytes: int
    over: tuple[str, ...]
    numbers: tuple[str, ...]


def disarm_verdict(health: ClusterHealth, quota_bytes: int, disarm_ratio: float) -> DisarmVerdict:
    """Disarm only when every member answered and its database is below ``disarm_ratio`` x quota."""
    limit = int(quota_bytes * disarm_ratio)
    over: list[str] = []
    numbers: list[str] = []
    for member in sorted(health.members, key=lambda m: m.name):
        if member.db_size is None:
            over.append(member.label)
            numbers.append(f"{member.label}: no status")
            continue
        numbers.append(f"{member.label}: {member.db_size} bytes ({100 * member.db_size / quota_bytes:.0f} % of quota)")
        if member.db_size >= limit:
            over.append(member.label)
    return DisarmVerdict(not over and bool(health.members), limit, tuple(over), tuple(numbers))
