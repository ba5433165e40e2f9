"""The HealthCheck metrics: computed purely from one probe round, published as CloudWatch EMF.

:func:`compute_health_metrics` turns what a round observed into :class:`HealthMetrics`;
:func:`publish_health_metrics` hands them to a :class:`HealthMetricsSink`. Every metric has the
dimension ``cluster``; ``RaftIndexLag`` also has ``member``. The README's "Health checks and alarms"
section says what each one means and what to do when its alarm fires.

========================== ======= ===========================================================
metric                     unit    value
========================== ======= ===========================================================
HasLeader                  Count   1 when a healthy member reports a leader, else 0
HealthyMembers             Count   members (voters and learners) that answered healthy
VotingMembers              Count   voting members in the membership
QuorumMargin               Count   healthy voters minus the quorum (0: one more loss stops it)
LeaderChanges              Count   raft term moves since the previous round (elections)
DbSize                     Bytes   the largest member database
DbSizeQuotaRatio           None    DbSize / the backend quota (etcd raises NOSPACE at 1)
Fragmentation              None    the largest 1 - in-use / size over the members
ActiveAlarms               Count   active etcd alarms; also NoSpaceAlarm and CorruptAlarm
CertificateExpiryDays      None    days until the earliest certificate a member serves expires
CaCertificateExpiryDays    None    days until the earliest CA the clients trust (tls.ca) expires
NewestVerifiedBackupAge    Seconds age of the newest verified backup (absent when there is none)
LastRestoreDrillAge        Seconds since the newest drill that restored its backup (none yet: since
                                   the oldest backup; absent when there is no backup)
MaxRaftIndexLag            Count   the largest raft index lag of a member behind the leader
RaftIndexLag (per member)  Count   the leader's raft index minus the member's
ClusterVersion             None    etcd's cluster version as major * 100 + minor (305 for 3.5)
MemberVersions             Count   distinct server versions among the members (2+: mixed versions)
MaxWalFsyncP99             Seconds the highest member's WAL fsync p99 since the previous round
MaxBackendCommitP99        Seconds the highest member's backend commit p99 since the previous round
MaxPeerRttP99              Seconds the highest member's peer round trip p99 since the previous round
ProposalsFailed            Count   failed raft proposals since the previous round, all members
MaxLeaderChanges15m        Count   the most leader changes a member saw in the last 15 minutes
MaxDbQuotaUsedPercent      Percent the fullest member database as a share of that member's quota
MinHoursToQuota            None    the soonest a member database reaches its quota at its growth
                                   since the previous round (absent when none grows)
FragmentedMembers          Count   members with less than half of the file in use and > 100 MiB in use
========================== ======= ===========================================================

Per member (dimensions ``cluster`` and ``member``), from each member's own ``/metrics`` and the
previous round's sample (:mod:`etcdops.app.member_metrics`): ``WalFsyncP99``, ``BackendCommitP99``,
``PeerRttP99`` (Seconds), ``ProposalsFailed``, ``ProposalsPending``, ``LeaderChanges15m`` (Count),
``DbGrowthPerHour`` (Bytes), ``DbQuotaUsedPercent`` (Percent), ``HoursToQuota``; the first round
after a member appears has only the gauges.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from etcdops.domain.health import ClusterHealth
from etcdops.domain.member_metrics import MemberIntervalStats

COUNT, BYTES, SECONDS, PERCENT, NO_UNIT = "Count", "Bytes", "Seconds", "Percent", "None"


class HealthMetricsSink(Protocol):
    """Where metrics go: Powertools ``Metrics`` (through :class:`EmfHealthMetrics`) or a recorder."""

    def add_metric(self, name: str, unit: str, value: float) -> None: ...

    def add_member_metric(self, member: str, name: str, unit: str, value: float) -> None: ...


@dataclass(frozen=True)
class HealthMetrics:
    has_leader: bool
    healthy_members: int
    voting_members: int
    quorum_margin: int
    leader_changes: int
    db_size: int | None
    db_size_quota_ratio: float | None
    fragmentation: float | None
    nospace_alarms: int
    corrupt_alarms: int
    active_alarms: int
    certificate_expiry_days: float | None
    newest_verified_backup_age: float | None
    raft_index_lag: Mapping[str, int] = field(default_factory=dict)
    cluster_version: int | None = None
    member_versions: int | None = None
    members: Mapping[str, MemberIntervalStats] = field(default_factory=dict)  # from their own /metrics
    last_restore_drill_age: float | None = None
    ca_certificate_expiry_days: float | None = None

    def _highest(self, name: str) -> float | None:
        values = [v for s in self.members.values() for n, _, v in s.points() if n == name]
        return max(values) if values else None

    def _lowest(self, name: str) -> float | None:
        values = [v for s in self.members.values() for n, _, v in s.points() if n == name]
        return min(values) if values else None

    def _fragmented_members(self) -> int | None:
        known = [s.fragmented for s in self.members.values() if s.fragmented is not None]
        return sum(known) if known else None

    def _failed_proposals(self) -> float | None:
        values = [s.proposals_failed for s in self.members.values() if s.proposals_failed is not None]
        return sum(values) if values else None

    @property
    def max_raft_index_lag(self) -> int | None:
        return max(self.raft_index_lag.values()) if self.raft_index_lag else None

    def cluster_points(self) -> list[tuple[str, str, float]]:
        """(name, unit, value) of every cluster-level metric that has a value this round."""
        points: list[tuple[str, str, float | int | None]] = [
            ("HasLeader", COUNT, int(self.has_leader)),
            ("HealthyMembers", COUNT, self.healthy_members),
            ("VotingMembers", COUNT, self.voting_members),
            ("QuorumMargin", COUNT, self.quorum_margin),
            ("LeaderChanges", COUNT, self.leader_changes),
            ("DbSize", BYTES, self.db_size),
            ("DbSizeQuotaRatio", NO_UNIT, self.db_size_quota_ratio),
            ("Fragmentation", NO_UNIT, self.fragmentation),
            ("ActiveAlarms", COUNT, self.active_alarms),
            ("NoSpaceAlarm", COUNT, self.nospace_alarms),
            ("CorruptAlarm", COUNT, self.corrupt_alarms),
            ("CertificateExpiryDays", NO_UNIT, self.certificate_expiry_days),
            ("CaCertificateExpiryDays", NO_UNIT, self.ca_certificate_expiry_days),
            ("NewestVerifiedBackupAge", SECONDS, self.newest_verified_backup_age),
            ("LastRestoreDrillAge", SECONDS, self.last_restore_drill_age),
            ("MaxRaftIndexLag", COUNT, self.max_raft_index_lag),
            ("ClusterVersion", NO_UNIT, self.cluster_version),
            ("MemberVersions", COUNT, self.member_versions),
            ("MaxWalFsyncP99", SECONDS, self._highest("WalFsyncP99")),
            ("MaxBackendCommitP99", SECONDS, self._highest("BackendCommitP99")),
            ("MaxPeerRttP99", SECONDS, self._highest("PeerRttP99")),
            ("ProposalsFailed", COUNT, self._failed_proposals()),
            ("MaxLeaderChanges15m", COUNT, self._highest("LeaderChanges15m")),
            ("MaxDbQuotaUsedPercent", PERCENT, self._highest("DbQuotaUsedPercent")),
            ("MinHoursToQuota", NO_UNIT, self._lowest("HoursToQuota")),
            ("FragmentedMembers", COUNT, self._fragmented_members()),
        ]
        return [(name, unit, float(value)) for name, unit, value in points if value is not None]

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {name: value for name, _, value in self.cluster_points()}
        data["RaftIndexLag"] = dict(self.raft_index_lag)
        data["Members"] = {m: {n: v for n, _, v in s.points()} for m, s in sorted(self.members.items())}
        return data


def compute_health_metrics(
    observation: ClusterHealth,
    *,
    now: datetime,
    quota_bytes: int,
    leader_changes: int = 0,
    ec2_failures: Iterable[int] = (),
    served_certificates: Mapping[str, datetime] | None = None,
    newest_verified_backup_at: datetime | None = None,
    trusted_cas: Mapping[str, datetime] | None = None,
) -> HealthMetrics:
    """The metrics of one round.

    Members named by an EC2 failure count as unhealthy (as the policy counts them).
    ``served_certificates`` maps a member to the expiry of the certificate it served;
    ``newest_verified_backup_at`` is the creation time of the newest verified backup;
    ``trusted_cas`` maps each CA the clients trust to its expiry.
    """
    failed = frozenset(ec2_failures)
    healthy = [m for m in observation.members if m.healthy and m.id not in failed]
    healthy_voters = [m for m in healthy if not m.is_learner]
    voters = observation.voters
    has_leader = bool(observation.leader) and any(m.id == observation.leader for m in healthy_voters)

    sizes = [m.db_size for m in observation.members if m.db_size is not None]
    db_size = max(sizes) if sizes else None

    alarms = {(a.member_id, a.alarm.upper()) for a in observation.alarms}
    nospace = sum(1 for _, name in alarms if name == "NOSPACE")
    corrupt = sum(1 for _, name in alarms if name == "CORRUPT")

    expiry_days = _days_left(served_certificates, now)

    backup_age = None
    if newest_verified_backup_at is not None:
        backup_age = max(0.0, (now - newest_verified_backup_at).total_seconds())

    return HealthMetrics(
        has_leader=has_leader,
        healthy_members=len(healthy),
        voting_members=len(voters),
        quorum_margin=len(healthy_voters) - observation.quorum,
        leader_changes=max(0, leader_changes),
        db_size=db_size,
        db_size_quota_ratio=round(db_size / quota_bytes, 4) if db_size is not None else None,
        fragmentation=_fragmentation(observation),
        nospace_alarms=nospace,
        corrupt_alarms=corrupt,
        active_alarms=len(alarms),
        certificate_expiry_days=expiry_days,
        ca_certificate_expiry_days=_days_left(trusted_cas, now),
        newest_verified_backup_age=backup_age,
        raft_index_lag=_raft_index_lag(observation),
        cluster_version=version_number(observation.cluster_version),
        member_versions=len(observation.member_versions) or None,
    )


def _fragmentation(observation: ClusterHealth) -> float | None:
    """The largest share of a member's database file not in use (None when no member said both sizes)."""
    shares = [
        1.0 - m.db_size_in_use / m.db_size
        for m in observation.members
        if m.db_size and m.db_size_in_use is not None and m.db_size_in_use <= m.db_size
    ]
    return round(max(shares), 4) if shares else None


def _raft_index_lag(observation: ClusterHealth) -> dict[str, int]:
    """How far each member's raft index is behind the leader's (empty without a leader that said its index)."""
    lag: dict[str, int] = {}
    leader = observation.member(observation.leader) if observation.leader else None
    if leader is not None and leader.raft_index is not None:
        for member in observation.members:
            if member.raft_index is not None:
                lag[member.name or f"{member.id:x}"] = max(0, leader.raft_index - member.raft_index)
    return lag


def _days_left(not_after: Mapping[str, datetime] | None, now: datetime) -> float | None:
    """Days until the earliest of ``not_after`` (negative once past); None without any."""
    if not not_after:
        return None
    return round((min(not_after.values()) - now).total_seconds() / 86400.0, 3)


def version_number(version: str | None) -> int | None:
    """``3.5.0`` -> 305 (major * 100 + minor): a version as a metric value that orders correctly."""
    parts = (version or "").split(".")
    if len(parts) < 2 or not parts[0].isdigit() or not parts[1].isdigit():
        return None
    return int(parts[0]) * 100 + int(parts[1])


def publish_health_metrics(metrics: HealthMetrics, sink: HealthMetricsSink) -> None:
    for name, unit, value in metrics.cluster_points():
        sink.add_metric(name, unit, value)
    for member, lag in sorted(metrics.raft_index_lag.items()):
        sink.add_member_metric(member, "RaftIndexLag", COUNT, lag)
    for member, stats in sorted(metrics.members.items()):
        for name, unit, value in stats.points():
            sink.add_member_metric(member, name, unit, value)


class RecordingMetrics:
    """Keeps the last value of each metric (the local stack, tests)."""

    def __init__(self) -> None:
        self.values: dict[str, float] = {}
        self.member_values: dict[tuple[str, str], float] = {}
        self.dimensions: dict[str, str] = {}

    def add_dimension(self, name: str, value: str) -> None:
        self.dimensions[name] = value

    def add_metric(self, name: str, unit: str, value: float) -> None:
        self.values[name] = value

    def add_member_metric(self, member: str, name: str, unit: str, value: float) -> None:
        self.member_values[(member, name)] = value


class EmfHealthMetrics:
    """Adapts Powertools ``Metrics`` (cluster-level, flushed by ``@metrics.log_metrics``); member
    metrics are written at once as their own EMF documents with the ``cluster`` and ``member``
    dimensions."""

    def __init__(self, metrics: Any) -> None:
        self.metrics = metrics
        self.cluster: str | None = None

    def add_dimension(self, name: str, value: str) -> None:
        if name == "cluster":
            self.cluster = value
        self.metrics.add_dimension(name, value)

    def add_metric(self, name: str, unit: str, value: float) -> None:
        self.metrics.add_metric(name=name, unit=unit, value=value)

    def add_member_metric(self, member: str, name: str, unit: str, value: float) -> None:
        from aws_lambda_powertools.metrics import MetricUnit, single_metric

        dimensions = {"cluster": self.cluster} if self.cluster else {}
        with single_metric(
            name=name,
            unit=MetricUnit(unit),
            value=value,
            namespace=self.metrics.namespace,
            default_dimensions=dimensions,
        ) as metric:
            metric.add_dimension("member", member)
