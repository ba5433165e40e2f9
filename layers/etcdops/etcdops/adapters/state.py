"""The autopilot's state: the records it remembers between invocations, and one small protocol per concern.

A caller names the protocols it uses (the approval use cases an :class:`ApprovalStore`, a runbook a
:class:`LockStore` and an :class:`IncidentStore`, ...); :class:`StateStore` is all of them, what a
backend implements. Two backends behave the same and are tested by the same suite:
:class:`etcdops.adapters.state_memory.InMemoryStateStore` (unit tests, the local autopilot) and
:class:`etcdops.adapters.state_dynamodb.DynamoStateStore` (a DynamoDB table, client passed in).

Every time is an argument (``now``); nothing here reads the clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol

from etcdops.domain.decisions import Decision, Streak
from etcdops.domain.errors import EtcdopsError, UsageError

__all__ = [
    "DEFAULT_INCIDENT_TTL_SECONDS",
    "DEFAULT_STREAK_TTL_SECONDS",
    "Approval",
    "ApprovalStore",
    "ConflictError",
    "DecisionStore",
    "IncidentStore",
    "LastDecision",
    "Lock",
    "LockHeldError",
    "LockLostError",
    "LockStore",
    "ObservationStore",
    "Repair",
    "RepairRecord",
    "RepairStore",
    "StateStore",
    "StreakState",
    "StreakStore",
]

DEFAULT_STREAK_TTL_SECONDS: Final = 7 * 24 * 3600
DEFAULT_INCIDENT_TTL_SECONDS: Final = 7 * 24 * 3600


# ---- errors -------------------------------------------------------------------------------


class ConflictError(EtcdopsError):
    """Someone else saved the streaks since they were loaded: reload, reapply, retry."""

    retryable = True

    def __init__(self, cluster: str, expected_version: int) -> None:
        super().__init__(f"failure streaks of cluster {cluster} changed since version {expected_version} was loaded")
        self.cluster = cluster
        self.expected_version = expected_version


class LockHeldError(EtcdopsError):
    """The cluster's operation lock is held by another owner whose lease has not expired.

    Not transient: the holder may run for half an hour, so a runbook does not retry in place; it
    stops and says who holds the lock (the autopilot's next round, or the operator, tries again).
    """

    def __init__(self, cluster: str, holder: str, expires_at: datetime) -> None:
        super().__init__(f"the operation lock of cluster {cluster} is held by {holder} until {expires_at.isoformat()}")
        self.cluster = cluster
        self.holder = holder
        self.expires_at = expires_at


class LockLostError(EtcdopsError):
    """A lease cannot be renewed: the lock is gone or now belongs to another owner."""

    def __init__(self, cluster: str, owner: str, holder: str | None) -> None:
        now_held = f"it is held by {holder}" if holder else "it is not held"
        super().__init__(f"{owner} no longer holds the operation lock of cluster {cluster}: {now_held}")
        self.cluster = cluster
        self.owner = owner
        self.holder = holder


# ---- records ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lock:
    """The per-cluster operation lock (invariant 2). Fits ``policy.LockLike``."""

    cluster: str
    owner: str
    acquired_at: datetime  # when this lease was (re-)acquired
    expires_at: datetime

    def is_active(self, now: datetime) -> bool:
        return utc(now) < self.expires_at


@dataclass(frozen=True)
class StreakState:
    """The failure streaks of a cluster as stored; ``version`` 0 means never saved."""

    streaks: Mapping[int, Streak] = field(default_factory=dict)
    quorum_loss: Streak | None = None
    version: int = 0
    mixed_versions: Streak | None = None  # rounds whose members reported more than one etcd version


@dataclass(frozen=True)
class LastDecision:
    decision: Decision
    decided_at: datetime


@dataclass(frozen=True)
class RepairRecord:
    """One repair attempt as recorded: the execution started for it, its input, and (once it ended
    and said so, or a round saw it end) its outcome."""

    incident: str
    number: int
    execution: str
    recorded_at: datetime
    document: str  # the execution input, JSON
    outcome: str | None = None  # an AttemptStatus value
    error: str | None = None
    cause: str | None = None
    ended_at: datetime | None = None


@dataclass(frozen=True)
class Repair:
    """Every attempt to repair one incident, numbered from 1, and whether a human was told."""

    incident: str
    attempts: tuple[RepairRecord, ...] = ()
    escalated_at: datetime | None = None


@dataclass(frozen=True)
class Approval:
    """One runbook execution waiting for (or given) a human decision (invariant 8).

    ``request_id`` names this request: a retried approval step stores a new request with a new
    task token, and links signed for the old one stop working. ``task_token`` is left out of
    ``repr`` so the record can be logged.
    """

    execution: str
    cluster: str
    runbook: str
    request_id: str
    task_token: str = field(repr=False)
    summary: str
    reason: str
    requested_at: datetime
    expires_at: datetime
    execution_arn: str | None = None
    decision: str | None = None  # "approve" | "reject"
    decided_by: str | None = None
    decided_at: datetime | None = None
    decision_reason: str | None = None

    def is_expired(self, now: datetime) -> bool:
        return utc(now) >= utc(self.expires_at)


# ---- shared by the backends ------------------------------------------------------------------


def utc(when: datetime) -> datetime:
    """``when`` in UTC (a naive time is taken as UTC)."""
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def check_cluster(cluster: str) -> str:
    if not cluster:
        raise UsageError("cluster name must not be empty")
    return cluster


def check_execution(execution: str) -> str:
    if not execution:
        raise UsageError("execution name must not be empty")
    return execution


def check_lease(lease_seconds: float) -> timedelta:
    if not lease_seconds > 0:
        raise UsageError(f"lease_seconds must be positive, got {lease_seconds}")
    return timedelta(seconds=lease_seconds)


def check_owner(owner: str) -> None:
    if not owner:
        raise UsageError("lock owner must not be empty")


# ---- the protocols ---------------------------------------------------------------------------


class StreakStore(Protocol):
    """The failure streaks of each cluster, saved whole with one conditional write."""

    def load_streaks(self, cluster: str) -> StreakState:
        """The cluster's streaks and their version (an empty state with version 0 if none)."""

    def save_streaks(
        self,
        cluster: str,
        streaks: Mapping[int, Streak],
        quorum_loss: Streak | None,
        *,
        expected_version: int,
        now: datetime,
        mixed_versions: Streak | None = None,
    ) -> StreakState:
        """Replace the cluster's streaks if their version is still ``expected_version``.

        Returns the saved state (version ``expected_version + 1``); raises :class:`ConflictError`
        when another writer got there first.
        """


class LockStore(Protocol):
    """The per-cluster operation lock (invariant 2)."""

    def acquire_lock(self, cluster: str, owner: str, lease_seconds: float, now: datetime) -> Lock:
        """Take the lock if it is free, expired, or already ``owner``'s (which re-acquires it and
        extends the lease); otherwise raise :class:`LockHeldError` naming the holder and expiry."""

    def renew_lock(self, cluster: str, owner: str, lease_seconds: float, now: datetime) -> Lock:
        """Extend ``owner``'s lease to ``now + lease_seconds``; :class:`LockLostError` if the lock
        is gone or belongs to someone else."""

    def release_lock(self, cluster: str, owner: str) -> bool:
        """Release ``owner``'s lock; False (not an error) when ``owner`` does not hold it."""

    def get_lock(self, cluster: str) -> Lock | None:
        """The lock record, expired or not (use :meth:`Lock.is_active`); None if there is none."""


class IncidentStore(Protocol):
    """What was already announced, so each incident is told once."""

    def record_incident(
        self, cluster: str, incident_id: str, kind: str, now: datetime, *, ttl_seconds: int | None = None
    ) -> bool:
        """True the first time ``incident_id`` is recorded (announce it), False after that, until
        the record's TTL (default ``incident_ttl_seconds``) has passed."""


class DecisionStore(Protocol):
    """The health round's last decision (what `etcdops status` shows)."""

    def save_last_decision(self, cluster: str, decision: Decision, now: datetime) -> None: ...

    def load_last_decision(self, cluster: str) -> LastDecision | None: ...


class ObservationStore(Protocol):
    """What the rounds saw: the highest raft term (leader changes), the members' client URLs (seeds) and
    what each member's own metrics said last (the base of the next round's deltas)."""

    def advance_raft_term(self, cluster: str, term: int, now: datetime) -> int:
        """Record ``term`` if it is higher than the highest term recorded; return by how much it
        moved (0 the first time, and 0 when it did not move). Atomic: concurrent callers that saw
        the same move count it once between them."""

    def save_endpoints(self, cluster: str, endpoints: list[str], now: datetime) -> None:
        """Remember the client URLs of the members a round saw (the next round's extra seeds)."""

    def load_endpoints(self, cluster: str) -> list[str]:
        """The client URLs saved last ([] if none)."""

    def save_member_metrics(self, cluster: str, members: Mapping[str, str], now: datetime) -> None:
        """Remember what the round kept of each member's own metrics (member name -> a JSON document),
        replacing what was kept before: the next round computes its deltas from it (a Lambda keeps
        nothing between invocations)."""

    def load_member_metrics(self, cluster: str) -> dict[str, str]:
        """What the last round kept of each member's metrics ({} if nothing)."""


class RepairStore(Protocol):
    """Every attempt to repair an incident and whether it was escalated (invariant 12)."""

    def record_repair_attempt(self, cluster: str, record: RepairRecord) -> bool:
        """Record attempt ``record.number`` of ``record.incident`` if it is not recorded yet: True
        for the one caller that recorded it (that caller starts its execution), False for the others."""

    def finish_repair_attempt(
        self,
        cluster: str,
        incident: str,
        number: int,
        execution: str,
        outcome: str,
        error: str | None,
        cause: str | None,
        ended_at: datetime,
    ) -> bool:
        """Record how attempt ``number`` ended, once (False: not recorded as ``execution``, or ended already)."""

    def escalate_repair(self, cluster: str, incident: str, now: datetime) -> bool:
        """Mark the repair of ``incident`` escalated: True the first time only (send the escalation then)."""

    def load_repair(self, cluster: str, incident: str) -> Repair:
        """The attempts of ``incident`` in order (none yet: an empty Repair)."""

    def load_repairs(self, cluster: str) -> list[Repair]:
        """Every repair of ``cluster`` still on record (records expire after ``incident_ttl_seconds``)."""


class ApprovalStore(Protocol):
    """Approval requests and their decisions (invariant 8), found by execution name."""

    def save_approval(self, approval: Approval) -> None:
        """Store a new approval request for ``approval.execution``, replacing any earlier one
        (a retried approval step asks again with a new task token and request id)."""

    def load_approval(self, execution: str) -> Approval | None:
        """The execution's approval request, decided or not; None if there is none."""

    def consume_approval(
        self, execution: str, request_id: str, decision: str, by: str, reason: str | None, now: datetime
    ) -> bool:
        """Record the decision if request ``request_id`` is the execution's current request and
        is not decided yet: True for the first use, False for every later one (atomic)."""

    def release_approval(self, execution: str, request_id: str, decided_at: datetime) -> bool:
        """Undo the decision recorded at ``decided_at`` (its delivery to Step Functions failed
        in a way worth retrying); False if the record no longer carries that decision."""


class StateStore(
    StreakStore, LockStore, IncidentStore, DecisionStore, ObservationStore, RepairStore, ApprovalStore, Protocol
):
    """Every concern at once: what a backend implements and what the health round uses. Other callers
    name the protocols they use."""
