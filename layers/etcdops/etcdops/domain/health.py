"""The health model: what one probe round observed about a cluster, and what follows from it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import datetime

# etcd reports each active alarm in Status.errors as "memberID:<decimal id> alarm:<NAME> "
_ALARM_REPORT = re.compile(r"^memberID:\d+ alarm:[A-Z_]+\s*$")


@dataclass(frozen=True)
class Alarm:
    """An active etcd alarm (``NOSPACE`` or ``CORRUPT``) raised by one member."""

    member_id: int
    alarm: str


@dataclass(frozen=True)
class MemberHealth:
    """One member as the probe saw it. Status fields are ``None`` when the member did not answer."""

    id: int
    name: str
    client_urls: tuple[str, ...]
    peer_urls: tuple[str, ...]
    is_learner: bool
    healthy: bool
    error: str | None = None
    db_size: int | None = None
    db_size_in_use: int | None = None
    raft_index: int | None = None
    raft_term: int | None = None
    version: str | None = None
    leader: int | None = None  # the leader this member reports, 0/None when it sees none

    @property
    def label(self) -> str:
        """How messages name the member, always with something a person can find it by: its name and
        id; a member added but not started yet (no name) by its id and peer URL; a member whose
        identity is unknown (the member list could not be read: id 0) by the endpoint that was tried."""
        if self.name:
            return f"{self.name} ({self.id:x})" if self.id else self.name
        if self.id == 0:
            return f"the member at {self.client_urls[0]}" if self.client_urls else "an unknown member"
        peer = f", peer {self.peer_urls[0]}" if self.peer_urls else ""
        return f"not-yet-started member {self.id:x}{peer}"


@dataclass(frozen=True)
class ClusterHealth:
    """One probe round over every member of a cluster."""

    cluster_id: int | None
    leader: int | None
    members: tuple[MemberHealth, ...]
    alarms: tuple[Alarm, ...] = ()
    observed_at: datetime | None = None
    errors: tuple[str, ...] = field(default=())  # round-level problems, e.g. membership unknown
    cluster_version: str | None = None  # etcd's cluster version (e.g. "3.5.0"), None when no member said

    @property
    def member_versions(self) -> dict[str, tuple[MemberHealth, ...]]:
        """The server versions the members reported (members that did not answer are left out)."""
        versions: dict[str, list[MemberHealth]] = {}
        for m in self.members:
            if m.version:
                versions.setdefault(m.version, []).append(m)
        return {version: tuple(members) for version, members in sorted(versions.items())}

    @property
    def versions_known(self) -> bool:
        """Whether every member reported its server version this round."""
        return bool(self.members) and all(m.version for m in self.members)

    @property
    def voters(self) -> tuple[MemberHealth, ...]:
        return tuple(m for m in self.members if not m.is_learner)

    @property
    def learners(self) -> tuple[MemberHealth, ...]:
        return tuple(m for m in self.members if m.is_learner)

    @property
    def healthy_voters(self) -> tuple[MemberHealth, ...]:
        return tuple(m for m in self.voters if m.healthy)

    @property
    def quorum(self) -> int:
        """Votes needed for a majority of the voting members."""
        return quorum_of(len(self.voters))

    @property
    def has_quorum(self) -> bool:
        return bool(self.leader) and len(self.healthy_voters) >= self.quorum

    @property
    def quorum_margin(self) -> int:
        """Healthy voters minus the quorum: how many more voters the cluster can lose."""
        return len(self.healthy_voters) - self.quorum

    def member(self, member_id: int) -> MemberHealth | None:
        return next((m for m in self.members if m.id == member_id), None)


def quorum_of(voters: int) -> int:
    """The majority of ``voters`` voting members."""
    return voters // 2 + 1


def _only_alarm_reports(error: str | None) -> bool:
    parts = [p for p in (error or "").split("; ") if p.strip()]
    return bool(parts) and all(_ALARM_REPORT.match(p) for p in parts)


def discount_alarm_reports(health: ClusterHealth) -> ClusterHealth:
    """Members that answered status and the read but were marked unhealthy only because etcd lists
    the cluster's alarms in their status (``NOSPACE``, ``CORRUPT``) count as serving here: the
    alarms are cluster conditions, reported in ``health.alarms`` and notified on their own; they are
    not member failures to replace, nor a quorum loss to escalate. The leader is derived again."""
    members = tuple(
        replace(m, healthy=True, error=None) if not m.healthy and m.leader and _only_alarm_reports(m.error) else m
        for m in health.members
    )
    if members == health.members:
        return health
    leaders: dict[int, int] = {}
    for m in members:
        if m.healthy and m.leader:
            leaders[m.leader] = leaders.get(m.leader, 0) + 1
    leader = max(leaders, key=lambda k: leaders[k]) if leaders else None
    return replace(health, members=members, leader=leader)
