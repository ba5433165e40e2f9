"""The autopilot's state behind one small interface: failure streaks, the operation lock, incidents.

:class:`StateStore` is the interface; :class:`InMemoryStateStore` backs unit tests and the local
stack, :class:`DynamoStateStore` a DynamoDB table (client passed in). Both behave the same and
are tested by the same suite.

Every time is an argument (``now``); nothing here reads the clock. DynamoDB TTL attributes
(``ttl``, epoch seconds) are derived from ``now``.

Single-table design (:data:`TABLE_KEY_SCHEMA`), one partition per cluster, ``pk = "cluster#<name>"``:

=====================  ==========================================================================
``sk``                 item
=====================  ==========================================================================
``streaks``            all failure streaks of the cluster in one item (``members`` map, optional
                       ``quorum_loss`` and ``mixed_versions``), a ``version`` number checked on
                       every write, ``ttl``
``lock``               the operation lock: ``owner``, ``acquired_at``, ``expires_at``,
                       ``expires_at_us`` (epoch microseconds, compared in conditions), ``ttl``
``incident#<id>``      one incident or notification already announced: ``kind``, ``recorded_at``,
                       ``ttl``
``lastdecision``       the last policy decision as JSON, ``decided_at``
``raftterm``           the highest raft term seen (``term``), ``updated_at``: counts leader changes
``endpoints``          the client URLs of the members the last round saw (``endpoints``, a list):
                       seeds besides the configured endpoints, so stale configuration cannot blind
                       the next round (invariant 10)
``repair#<incident>#a<NN>``  one repair attempt (invariant 12): ``execution``, ``recorded_at``, the
                       execution ``document`` (JSON), and once it ended ``outcome``, ``error``,
                       ``cause``, ``ended_at``; ``ttl``
``repair#<incident>#escalated``  the repair was escalated to a human (``escalated_at``), once
=====================  ==========================================================================

Approvals are found by execution alone (``etcdops approve EXECUTION``, a signed link), so they
live in their own partition, ``pk = "approval#<execution name>"``, ``sk = "approval"``: the
:class:`Approval` (task token, request id, what and why, ``expires_at``), and once decided its
``decision``, ``decided_by``, ``decided_at``. ``ttl`` is the expiry plus
:data:`APPROVAL_TTL_GRACE_SECONDS`. Execution names must therefore be unique across runbooks.

The streaks of a cluster live in one item, not one item per member, so a probe round is saved
with one conditional write: it either lands whole or raises :class:`ConflictError` and the caller
reloads, folds its observation in again and retries. (Per-member items would need a transaction;
a partly written round retried on top of itself would count probes twice.)
"""

from __future__ import annotations

import json
import math
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import ClientError

from etcdops.domain.decisions import Decision, Streak
from etcdops.domain.errors import EtcdopsError, UsageError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
else:
    DynamoDBClient = Any

__all__ = [
    "APPROVAL_TTL_GRACE_SECONDS",
    "DEFAULT_INCIDENT_TTL_SECONDS",
    "DEFAULT_STREAK_TTL_SECONDS",
    "TABLE_ATTRIBUTE_DEFINITIONS",
    "TABLE_KEY_SCHEMA",
    "TTL_ATTRIBUTE",
    "Approval",
    "ConflictError",
    "DynamoStateStore",
    "InMemoryStateStore",
    "LastDecision",
    "Lock",
    "LockHeldError",
    "LockLostError",
    "Repair",
    "RepairRecord",
    "StateStore",
    "StreakState",
    "table_definition",
]

TABLE_KEY_SCHEMA: Final[tuple[dict[str, str], ...]] = (
    {"AttributeName": "pk", "KeyType": "HASH"},
    {"AttributeName": "sk", "KeyType": "RANGE"},
)
TABLE_ATTRIBUTE_DEFINITIONS: Final[tuple[dict[str, str], ...]] = (
    {"AttributeName": "pk", "AttributeType": "S"},
    {"AttributeName": "sk", "AttributeType": "S"},
)
TTL_ATTRIBUTE: Final = "ttl"
"""DynamoDB TimeToLiveSpecification.AttributeName (epoch seconds)."""

DEFAULT_STREAK_TTL_SECONDS: Final = 7 * 24 * 3600
DEFAULT_INCIDENT_TTL_SECONDS: Final = 7 * 24 * 3600
LOCK_TTL_GRACE_SECONDS: Final = 24 * 3600
"""An expired lock item stays this long after its lease (for post-mortems) before TTL removes it."""
APPROVAL_TTL_GRACE_SECONDS: Final = 7 * 24 * 3600
"""An approval record stays this long after it expires (who decided what, for post-mortems)."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def table_definition(table_name: str) -> dict[str, Any]:
    """``create_table`` keyword arguments for the state table (template.yaml mirrors these)."""
    return {
        "TableName": table_name,
        "KeySchema": [dict(k) for k in TABLE_KEY_SCHEMA],
        "AttributeDefinitions": [dict(a) for a in TABLE_ATTRIBUTE_DEFINITIONS],
        "BillingMode": "PAY_PER_REQUEST",
    }


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
        return _utc(now) < self.expires_at


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
        return _utc(now) >= _utc(self.expires_at)


# ---- helpers ------------------------------------------------------------------------------


def _utc(when: datetime) -> datetime:
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _epoch_us(when: datetime) -> int:
    return (_utc(when) - _EPOCH) // timedelta(microseconds=1)


def _epoch_s_ceil(when: datetime) -> int:
    return math.ceil(_epoch_us(when) / 1_000_000)


def _pk(cluster: str) -> str:
    if not cluster:
        raise UsageError("cluster name must not be empty")
    return f"cluster#{cluster}"


def _approval_pk(execution: str) -> str:
    if not execution:
        raise UsageError("execution name must not be empty")
    return f"approval#{execution}"


def _check_lease(lease_seconds: float) -> timedelta:
    if not lease_seconds > 0:
        raise UsageError(f"lease_seconds must be positive, got {lease_seconds}")
    return timedelta(seconds=lease_seconds)


def _check_owner(owner: str) -> None:
    if not owner:
        raise UsageError("lock owner must not be empty")


# ---- the interface ------------------------------------------------------------------------


class StateStore(ABC):
    """Where the autopilot keeps what it must remember between invocations."""

    def __init__(
        self,
        *,
        streak_ttl_seconds: int = DEFAULT_STREAK_TTL_SECONDS,
        incident_ttl_seconds: int = DEFAULT_INCIDENT_TTL_SECONDS,
    ) -> None:
        self.streak_ttl_seconds = streak_ttl_seconds
        self.incident_ttl_seconds = incident_ttl_seconds

    # streaks
    @abstractmethod
    def load_streaks(self, cluster: str) -> StreakState:
        """The cluster's streaks and their version (an empty state with version 0 if none)."""

    @abstractmethod
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

    # lock
    @abstractmethod
    def acquire_lock(self, cluster: str, owner: str, lease_seconds: float, now: datetime) -> Lock:
        """Take the lock if it is free, expired, or already ``owner``'s (which re-acquires it and
        extends the lease); otherwise raise :class:`LockHeldError` naming the holder and expiry."""

    @abstractmethod
    def renew_lock(self, cluster: str, owner: str, lease_seconds: float, now: datetime) -> Lock:
        """Extend ``owner``'s lease to ``now + lease_seconds``; :class:`LockLostError` if the lock
        is gone or belongs to someone else."""

    @abstractmethod
    def release_lock(self, cluster: str, owner: str) -> bool:
        """Release ``owner``'s lock; False (not an error) when ``owner`` does not hold it."""

    @abstractmethod
    def get_lock(self, cluster: str) -> Lock | None:
        """The lock record, expired or not (use :meth:`Lock.is_active`); None if there is none."""

    # incidents
    @abstractmethod
    def record_incident(
        self, cluster: str, incident_id: str, kind: str, now: datetime, *, ttl_seconds: int | None = None
    ) -> bool:
        """True the first time ``incident_id`` is recorded (announce it), False after that, until
        the record's TTL (default ``incident_ttl_seconds``) has passed."""

    # last decision
    @abstractmethod
    def save_last_decision(self, cluster: str, decision: Decision, now: datetime) -> None: ...

    @abstractmethod
    def load_last_decision(self, cluster: str) -> LastDecision | None: ...

    # raft term
    @abstractmethod
    def advance_raft_term(self, cluster: str, term: int, now: datetime) -> int:
        """Record ``term`` if it is higher than the highest term recorded; return by how much it
        moved (0 the first time, and 0 when it did not move). Atomic: concurrent callers that saw
        the same move count it once between them."""

    # the endpoints seen last
    @abstractmethod
    def save_endpoints(self, cluster: str, endpoints: list[str], now: datetime) -> None:
        """Remember the client URLs of the members a round saw (the next round's extra seeds)."""

    @abstractmethod
    def load_endpoints(self, cluster: str) -> list[str]:
        """The client URLs saved last ([] if none)."""

    # repair attempts
    @abstractmethod
    def record_repair_attempt(self, cluster: str, record: RepairRecord) -> bool:
        """Record attempt ``record.number`` of ``record.incident`` if it is not recorded yet: True
        for the one caller that recorded it (that caller starts its execution), False for the others."""

    @abstractmethod
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

    @abstractmethod
    def escalate_repair(self, cluster: str, incident: str, now: datetime) -> bool:
        """Mark the repair of ``incident`` escalated: True the first time only (send the escalation then)."""

    @abstractmethod
    def load_repair(self, cluster: str, incident: str) -> Repair:
        """The attempts of ``incident`` in order (none yet: an empty Repair)."""

    @abstractmethod
    def load_repairs(self, cluster: str) -> list[Repair]:
        """Every repair of ``cluster`` still on record (records expire after ``incident_ttl_seconds``)."""

    # approvals
    @abstractmethod
    def save_approval(self, approval: Approval) -> None:
        """Store a new approval request for ``approval.execution``, replacing any earlier one
        (a retried approval step asks again with a new task token and request id)."""

    @abstractmethod
    def load_approval(self, execution: str) -> Approval | None:
        """The execution's approval request, decided or not; None if there is none."""

    @abstractmethod
    def consume_approval(
        self, execution: str, request_id: str, decision: str, by: str, reason: str | None, now: datetime
    ) -> bool:
        """Record the decision if request ``request_id`` is the execution's current request and
        is not decided yet: True for the first use, False for every later one (atomic)."""

    @abstractmethod
    def release_approval(self, execution: str, request_id: str, decided_at: datetime) -> bool:
        """Undo the decision recorded at ``decided_at`` (its delivery to Step Functions failed
        in a way worth retrying); False if the record no longer carries that decision."""


# ---- in memory ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Incident:
    kind: str
    recorded_at: datetime
    expires_at: datetime


class InMemoryStateStore(StateStore):
    """A process-local store with the same semantics, safe to use from several threads."""

    def __init__(
        self,
        *,
        streak_ttl_seconds: int = DEFAULT_STREAK_TTL_SECONDS,
        incident_ttl_seconds: int = DEFAULT_INCIDENT_TTL_SECONDS,
    ) -> None:
        super().__init__(streak_ttl_seconds=streak_ttl_seconds, incident_ttl_seconds=incident_ttl_seconds)
        self._mutex = threading.Lock()
        self._streaks: dict[str, StreakState] = {}
        self._locks: dict[str, Lock] = {}
        self._incidents: dict[tuple[str, str], _Incident] = {}
        self._decisions: dict[str, LastDecision] = {}
        self._terms: dict[str, int] = {}
        self._approvals: dict[str, Approval] = {}
        self._endpoints: dict[str, list[str]] = {}
        self._repairs: dict[tuple[str, str], Repair] = {}

    def load_streaks(self, cluster: str) -> StreakState:
        _pk(cluster)
        with self._mutex:
            return self._streaks.get(cluster, StreakState())

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
        _pk(cluster)
        with self._mutex:
            current = self._streaks.get(cluster, StreakState()).version
            if current != expected_version:
                raise ConflictError(cluster, expected_version)
            saved = StreakState(dict(streaks), quorum_loss, expected_version + 1, mixed_versions)
            self._streaks[cluster] = saved
            return saved

    def acquire_lock(self, cluster: str, owner: str, lease_seconds: float, now: datetime) -> Lock:
        _pk(cluster)
        _check_owner(owner)
        lease = _check_lease(lease_seconds)
        now = _utc(now)
        with self._mutex:
            held = self._locks.get(cluster)
            if held is not None and held.owner != owner and held.is_active(now):
                raise LockHeldError(cluster, held.owner, held.expires_at)
            lock = Lock(cluster, owner, now, now + lease)
            self._locks[cluster] = lock
            return lock

    def renew_lock(self, cluster: str, owner: str, lease_seconds: float, now: datetime) -> Lock:
        _pk(cluster)
        _check_owner(owner)
        lease = _check_lease(lease_seconds)
        now = _utc(now)
        with self._mutex:
            held = self._locks.get(cluster)
            if held is None or held.owner != owner:
                raise LockLostError(cluster, owner, held.owner if held else None)
            lock = Lock(cluster, owner, held.acquired_at, now + lease)
            self._locks[cluster] = lock
            return lock

    def release_lock(self, cluster: str, owner: str) -> bool:
        _pk(cluster)
        with self._mutex:
            held = self._locks.get(cluster)
            if held is None or held.owner != owner:
                return False
            del self._locks[cluster]
            return True

    def get_lock(self, cluster: str) -> Lock | None:
        _pk(cluster)
        with self._mutex:
            return self._locks.get(cluster)

    def record_incident(
        self, cluster: str, incident_id: str, kind: str, now: datetime, *, ttl_seconds: int | None = None
    ) -> bool:
        _pk(cluster)
        now = _utc(now)
        ttl = self.incident_ttl_seconds if ttl_seconds is None else ttl_seconds
        with self._mutex:
            existing = self._incidents.get((cluster, incident_id))
            if existing is not None and existing.expires_at > now:
                return False
            self._incidents[(cluster, incident_id)] = _Incident(kind, now, now + timedelta(seconds=ttl))
            return True

    def save_last_decision(self, cluster: str, decision: Decision, now: datetime) -> None:
        _pk(cluster)
        with self._mutex:
            self._decisions[cluster] = LastDecision(decision, _utc(now))

    def load_last_decision(self, cluster: str) -> LastDecision | None:
        _pk(cluster)
        with self._mutex:
            return self._decisions.get(cluster)

    def advance_raft_term(self, cluster: str, term: int, now: datetime) -> int:
        _pk(cluster)
        with self._mutex:
            previous = self._terms.get(cluster)
            if previous is not None and term <= previous:
                return 0
            self._terms[cluster] = term
            return 0 if previous is None else term - previous

    def save_endpoints(self, cluster: str, endpoints: list[str], now: datetime) -> None:
        _pk(cluster)
        with self._mutex:
            self._endpoints[cluster] = list(endpoints)

    def load_endpoints(self, cluster: str) -> list[str]:
        _pk(cluster)
        with self._mutex:
            return list(self._endpoints.get(cluster, []))

    def record_repair_attempt(self, cluster: str, record: RepairRecord) -> bool:
        _pk(cluster)
        with self._mutex:
            repair = self._repairs.get((cluster, record.incident), Repair(record.incident))
            if any(a.number == record.number for a in repair.attempts):
                return False
            attempts = tuple(sorted((*repair.attempts, record), key=lambda a: a.number))
            self._repairs[(cluster, record.incident)] = replace(repair, attempts=attempts)
            return True

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
        _pk(cluster)
        with self._mutex:
            repair = self._repairs.get((cluster, incident))
            found = next((a for a in repair.attempts if a.number == number), None) if repair else None
            if repair is None or found is None or found.execution != execution or found.outcome is not None:
                return False
            ended = replace(found, outcome=outcome, error=error, cause=cause, ended_at=_utc(ended_at))
            attempts = tuple(ended if a.number == number else a for a in repair.attempts)
            self._repairs[(cluster, incident)] = replace(repair, attempts=attempts)
            return True

    def escalate_repair(self, cluster: str, incident: str, now: datetime) -> bool:
        _pk(cluster)
        with self._mutex:
            repair = self._repairs.get((cluster, incident), Repair(incident))
            if repair.escalated_at is not None:
                return False
            self._repairs[(cluster, incident)] = replace(repair, escalated_at=_utc(now))
            return True

    def load_repair(self, cluster: str, incident: str) -> Repair:
        _pk(cluster)
        with self._mutex:
            return self._repairs.get((cluster, incident), Repair(incident))

    def load_repairs(self, cluster: str) -> list[Repair]:
        _pk(cluster)
        with self._mutex:
            return [r for (c, _), r in sorted(self._repairs.items()) if c == cluster]

    def save_approval(self, approval: Approval) -> None:
        _approval_pk(approval.execution)
        _pk(approval.cluster)
        with self._mutex:
            self._approvals[approval.execution] = approval

    def load_approval(self, execution: str) -> Approval | None:
        _approval_pk(execution)
        with self._mutex:
            return self._approvals.get(execution)

    def consume_approval(
        self, execution: str, request_id: str, decision: str, by: str, reason: str | None, now: datetime
    ) -> bool:
        _approval_pk(execution)
        with self._mutex:
            current = self._approvals.get(execution)
            if current is None or current.request_id != request_id or current.decision is not None:
                return False
            self._approvals[execution] = replace(
                current, decision=decision, decided_by=by, decided_at=_utc(now), decision_reason=reason
            )
            return True

    def release_approval(self, execution: str, request_id: str, decided_at: datetime) -> bool:
        _approval_pk(execution)
        with self._mutex:
            current = self._approvals.get(execution)
            if current is None or current.request_id != request_id or current.decided_at != _utc(decided_at):
                return False
            self._approvals[execution] = replace(
                current, decision=None, decided_by=None, decided_at=None, decision_reason=None
            )
            return True


# ---- DynamoDB -----------------------------------------------------------------------------


def _is_condition_failure(exc: ClientError) -> bool:
    code: object = exc.response.get("Error", {}).get("Code")
    return code == "ConditionalCheckFailedException"


def _repair_prefix(incident: str) -> str:
    return f"repair#{incident}#"


def _attempt_sk(incident: str, number: int) -> str:
    return f"{_repair_prefix(incident)}a{number:02d}"


def _repairs_from_items(items: list[dict[str, Any]]) -> dict[str, Repair]:
    repairs: dict[str, Repair] = {}
    for item in items:
        incident = item["incident"]["S"]
        repair = repairs.get(incident, Repair(incident))
        if "escalated_at" in item:
            repair = replace(repair, escalated_at=datetime.fromisoformat(item["escalated_at"]["S"]))
        else:

            def text(name: str, item: dict[str, Any] = item) -> str | None:
                return item[name]["S"] if name in item else None

            ended = text("ended_at")
            record = RepairRecord(
                incident=incident,
                number=int(item["attempt"]["N"]),
                execution=item["execution"]["S"],
                recorded_at=datetime.fromisoformat(item["recorded_at"]["S"]),
                document=item["document"]["S"],
                outcome=text("outcome"),
                error=text("error"),
                cause=text("cause"),
                ended_at=datetime.fromisoformat(ended) if ended else None,
            )
            repair = replace(repair, attempts=tuple(sorted((*repair.attempts, record), key=lambda a: a.number)))
        repairs[incident] = repair
    return repairs


def _streak_to_item(streak: Streak) -> dict[str, Any]:
    return {
        "M": {
            "first": {"S": _utc(streak.first_failed_at).isoformat()},
            "last": {"S": _utc(streak.last_failed_at).isoformat()},
            "count": {"N": str(streak.count)},
        }
    }


def _streak_from_item(attr: Mapping[str, Any]) -> Streak:
    m = attr["M"]
    return Streak(
        datetime.fromisoformat(m["first"]["S"]),
        datetime.fromisoformat(m["last"]["S"]),
        int(m["count"]["N"]),
    )


def _lock_from_item(cluster: str, item: Mapping[str, Any]) -> Lock:
    return Lock(
        cluster=cluster,
        owner=item["owner"]["S"],
        acquired_at=datetime.fromisoformat(item["acquired_at"]["S"]),
        expires_at=datetime.fromisoformat(item["expires_at"]["S"]),
    )


def _approval_from_item(item: Mapping[str, Any]) -> Approval:
    def text(name: str) -> str | None:
        return item[name]["S"] if name in item else None

    decided_at = text("decided_at")
    return Approval(
        execution=item["execution"]["S"],
        cluster=item["cluster"]["S"],
        runbook=item["runbook"]["S"],
        request_id=item["request_id"]["S"],
        task_token=item["task_token"]["S"],
        summary=item["summary"]["S"],
        reason=item["reason"]["S"],
        requested_at=datetime.fromisoformat(item["requested_at"]["S"]),
        expires_at=datetime.fromisoformat(item["expires_at"]["S"]),
        execution_arn=text("execution_arn"),
        decision=text("decision"),
        decided_by=text("decided_by"),
        decided_at=datetime.fromisoformat(decided_at) if decided_at else None,
        decision_reason=text("decision_reason"),
    )


class DynamoStateStore(StateStore):
    """The state in a DynamoDB table with the key schema :data:`TABLE_KEY_SCHEMA`.

    ``dynamodb_client`` is a boto3 DynamoDB client made by the caller.
    """

    _ACQUIRE_ATTEMPTS = 3

    def __init__(
        self,
        table_name: str,
        dynamodb_client: DynamoDBClient,
        *,
        streak_ttl_seconds: int = DEFAULT_STREAK_TTL_SECONDS,
        incident_ttl_seconds: int = DEFAULT_INCIDENT_TTL_SECONDS,
    ) -> None:
        super().__init__(streak_ttl_seconds=streak_ttl_seconds, incident_ttl_seconds=incident_ttl_seconds)
        if not table_name:
            raise UsageError("table_name must not be empty")
        self.table_name = table_name
        self._client = dynamodb_client

    def _key(self, cluster: str, sk: str) -> dict[str, Any]:
        return {"pk": {"S": _pk(cluster)}, "sk": {"S": sk}}

    def _get(self, cluster: str, sk: str) -> dict[str, Any] | None:
        response = self._client.get_item(TableName=self.table_name, Key=self._key(cluster, sk), ConsistentRead=True)
        item: dict[str, Any] | None = response.get("Item")
        return item

    # streaks

    def load_streaks(self, cluster: str) -> StreakState:
        item = self._get(cluster, "streaks")
        if item is None:
            return StreakState()
        members = {int(k): _streak_from_item(v) for k, v in item.get("members", {"M": {}})["M"].items()}
        quorum_loss = _streak_from_item(item["quorum_loss"]) if "quorum_loss" in item else None
        mixed = _streak_from_item(item["mixed_versions"]) if "mixed_versions" in item else None
        return StreakState(members, quorum_loss, int(item["version"]["N"]), mixed)

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
        new_version = expected_version + 1
        item: dict[str, Any] = {
            **self._key(cluster, "streaks"),
            "version": {"N": str(new_version)},
            "members": {"M": {str(member_id): _streak_to_item(s) for member_id, s in streaks.items()}},
            "updated_at": {"S": _utc(now).isoformat()},
            TTL_ATTRIBUTE: {"N": str(_epoch_s_ceil(now) + self.streak_ttl_seconds)},
        }
        if quorum_loss is not None:
            item["quorum_loss"] = _streak_to_item(quorum_loss)
        if mixed_versions is not None:
            item["mixed_versions"] = _streak_to_item(mixed_versions)
        if expected_version == 0:
            condition = "attribute_not_exists(pk)"
            values: dict[str, Any] = {}
        else:
            condition = "#version = :expected"
            values = {":expected": {"N": str(expected_version)}}
        try:
            self._client.put_item(
                TableName=self.table_name,
                Item=item,
                ConditionExpression=condition,
                **({"ExpressionAttributeNames": {"#version": "version"}} if values else {}),
                **({"ExpressionAttributeValues": values} if values else {}),
            )
        except ClientError as exc:
            if _is_condition_failure(exc):
                raise ConflictError(cluster, expected_version) from exc
            raise
        return StreakState(dict(streaks), quorum_loss, new_version, mixed_versions)

    # lock

    def _lock_item(self, cluster: str, owner: str, acquired_at: datetime, expires_at: datetime) -> dict[str, Any]:
        return {
            **self._key(cluster, "lock"),
            "owner": {"S": owner},
            "acquired_at": {"S": acquired_at.isoformat()},
            "expires_at": {"S": expires_at.isoformat()},
            "expires_at_us": {"N": str(_epoch_us(expires_at))},
            TTL_ATTRIBUTE: {"N": str(_epoch_s_ceil(expires_at) + LOCK_TTL_GRACE_SECONDS)},
        }

    def acquire_lock(self, cluster: str, owner: str, lease_seconds: float, now: datetime) -> Lock:
        _check_owner(owner)
        lease = _check_lease(lease_seconds)
        now = _utc(now)
        lock = Lock(cluster, owner, now, now + lease)
        for _ in range(self._ACQUIRE_ATTEMPTS):
            try:
                self._client.put_item(
                    TableName=self.table_name,
                    Item=self._lock_item(cluster, owner, lock.acquired_at, lock.expires_at),
                    ConditionExpression="attribute_not_exists(pk) OR #exp <= :now OR #owner = :owner",
                    ExpressionAttributeNames={"#exp": "expires_at_us", "#owner": "owner"},
                    ExpressionAttributeValues={
                        ":now": {"N": str(_epoch_us(now))},
                        ":owner": {"S": owner},
                    },
                )
                return lock
            except ClientError as exc:
                if not _is_condition_failure(exc):
                    raise
            held = self.get_lock(cluster)
            if held is not None and held.is_active(now):
                raise LockHeldError(cluster, held.owner, held.expires_at)
            # released or expired between our write and our read: try again
        held = self.get_lock(cluster)
        raise LockHeldError(cluster, held.owner if held else "another owner", held.expires_at if held else now)

    def renew_lock(self, cluster: str, owner: str, lease_seconds: float, now: datetime) -> Lock:
        _check_owner(owner)
        lease = _check_lease(lease_seconds)
        now = _utc(now)
        expires_at = now + lease
        try:
            response = self._client.update_item(
                TableName=self.table_name,
                Key=self._key(cluster, "lock"),
                UpdateExpression="SET #expiry = :expiry, #exp = :exp, #ttl = :ttl",
                ConditionExpression="#owner = :owner",
                ExpressionAttributeNames={
                    "#expiry": "expires_at",
                    "#exp": "expires_at_us",
                    "#ttl": TTL_ATTRIBUTE,
                    "#owner": "owner",
                },
                ExpressionAttributeValues={
                    ":expiry": {"S": expires_at.isoformat()},
                    ":exp": {"N": str(_epoch_us(expires_at))},
                    ":ttl": {"N": str(_epoch_s_ceil(expires_at) + LOCK_TTL_GRACE_SECONDS)},
                    ":owner": {"S": owner},
                },
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if not _is_condition_failure(exc):
                raise
            held = self.get_lock(cluster)
            raise LockLostError(cluster, owner, held.owner if held else None) from exc
        return _lock_from_item(cluster, response["Attributes"])

    def release_lock(self, cluster: str, owner: str) -> bool:
        try:
            self._client.delete_item(
                TableName=self.table_name,
                Key=self._key(cluster, "lock"),
                ConditionExpression="#owner = :owner",
                ExpressionAttributeNames={"#owner": "owner"},
                ExpressionAttributeValues={":owner": {"S": owner}},
            )
        except ClientError as exc:
            if _is_condition_failure(exc):
                return False
            raise
        return True

    def get_lock(self, cluster: str) -> Lock | None:
        item = self._get(cluster, "lock")
        return _lock_from_item(cluster, item) if item is not None else None

    # incidents

    def record_incident(
        self, cluster: str, incident_id: str, kind: str, now: datetime, *, ttl_seconds: int | None = None
    ) -> bool:
        ttl = self.incident_ttl_seconds if ttl_seconds is None else ttl_seconds
        now = _utc(now)
        expires = now + timedelta(seconds=ttl)
        try:
            self._client.put_item(
                TableName=self.table_name,
                Item={
                    **self._key(cluster, f"incident#{incident_id}"),
                    "kind": {"S": kind},
                    "recorded_at": {"S": now.isoformat()},
                    "expires_at_us": {"N": str(_epoch_us(expires))},
                    TTL_ATTRIBUTE: {"N": str(_epoch_s_ceil(expires))},
                },
                # DynamoDB deletes expired items lazily: an expired record counts as absent.
                ConditionExpression="attribute_not_exists(pk) OR #exp <= :now",
                ExpressionAttributeNames={"#exp": "expires_at_us"},
                ExpressionAttributeValues={":now": {"N": str(_epoch_us(now))}},
            )
        except ClientError as exc:
            if _is_condition_failure(exc):
                return False
            raise
        return True

    # last decision

    def save_last_decision(self, cluster: str, decision: Decision, now: datetime) -> None:
        self._client.put_item(
            TableName=self.table_name,
            Item={
                **self._key(cluster, "lastdecision"),
                "decision": {"S": json.dumps(decision.to_dict(), sort_keys=True)},
                "decided_at": {"S": _utc(now).isoformat()},
            },
        )

    def load_last_decision(self, cluster: str) -> LastDecision | None:
        item = self._get(cluster, "lastdecision")
        if item is None:
            return None
        return LastDecision(
            Decision.from_dict(json.loads(item["decision"]["S"])),
            datetime.fromisoformat(item["decided_at"]["S"]),
        )

    # raft term

    def advance_raft_term(self, cluster: str, term: int, now: datetime) -> int:
        try:
            response = self._client.update_item(
                TableName=self.table_name,
                Key=self._key(cluster, "raftterm"),
                UpdateExpression="SET #term = :term, updated_at = :now",
                ConditionExpression="attribute_not_exists(#term) OR #term < :term",
                ExpressionAttributeNames={"#term": "term"},
                ExpressionAttributeValues={":term": {"N": str(term)}, ":now": {"S": _utc(now).isoformat()}},
                ReturnValues="UPDATED_OLD",
            )
        except ClientError as exc:
            if _is_condition_failure(exc):
                return 0
            raise
        previous = response.get("Attributes", {}).get("term")
        return 0 if previous is None else term - int(previous["N"])

    # the endpoints seen last

    def save_endpoints(self, cluster: str, endpoints: list[str], now: datetime) -> None:
        self._client.put_item(
            TableName=self.table_name,
            Item={
                **self._key(cluster, "endpoints"),
                "endpoints": {"L": [{"S": e} for e in endpoints]},
                "updated_at": {"S": _utc(now).isoformat()},
            },
        )

    def load_endpoints(self, cluster: str) -> list[str]:
        item = self._get(cluster, "endpoints")
        return [e["S"] for e in item["endpoints"]["L"]] if item is not None else []

    # repair attempts

    def record_repair_attempt(self, cluster: str, record: RepairRecord) -> bool:
        expires = _utc(record.recorded_at) + timedelta(seconds=self.incident_ttl_seconds)
        try:
            self._client.put_item(
                TableName=self.table_name,
                Item={
                    **self._key(cluster, _attempt_sk(record.incident, record.number)),
                    "incident": {"S": record.incident},
                    "attempt": {"N": str(record.number)},
                    "execution": {"S": record.execution},
                    "recorded_at": {"S": _utc(record.recorded_at).isoformat()},
                    "document": {"S": record.document},
                    TTL_ATTRIBUTE: {"N": str(_epoch_s_ceil(expires))},
                },
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ClientError as exc:
            if _is_condition_failure(exc):
                return False
            raise
        return True

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
        values: dict[str, Any] = {
            ":execution": {"S": execution},
            ":outcome": {"S": outcome},
            ":ended": {"S": _utc(ended_at).isoformat()},
        }
        update = "SET #outcome = :outcome, ended_at = :ended"
        for name, value in (("error", error), ("cause", cause)):
            if value is not None:
                update += f", #{name} = :{name}"
                values[f":{name}"] = {"S": value}
        names = {"#outcome": "outcome", "#execution": "execution"}
        names.update({f"#{n}": n for n, v in (("error", error), ("cause", cause)) if v is not None})
        try:
            self._client.update_item(
                TableName=self.table_name,
                Key=self._key(cluster, _attempt_sk(incident, number)),
                UpdateExpression=update,
                ConditionExpression=(
                    "attribute_exists(pk) AND #execution = :execution AND attribute_not_exists(#outcome)"
                ),
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            if _is_condition_failure(exc):
                return False
            raise
        return True

    def escalate_repair(self, cluster: str, incident: str, now: datetime) -> bool:
        expires = _utc(now) + timedelta(seconds=self.incident_ttl_seconds)
        try:
            self._client.put_item(
                TableName=self.table_name,
                Item={
                    **self._key(cluster, f"{_repair_prefix(incident)}escalated"),
                    "incident": {"S": incident},
                    "escalated_at": {"S": _utc(now).isoformat()},
                    TTL_ATTRIBUTE: {"N": str(_epoch_s_ceil(expires))},
                },
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ClientError as exc:
            if _is_condition_failure(exc):
                return False
            raise
        return True

    def _repair_items(self, cluster: str, prefix: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
            "ExpressionAttributeValues": {":pk": {"S": _pk(cluster)}, ":prefix": {"S": prefix}},
            "ConsistentRead": True,
        }
        while True:
            page = self._client.query(**kwargs)
            items.extend(page.get("Items", []))
            if not page.get("LastEvaluatedKey"):
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def load_repair(self, cluster: str, incident: str) -> Repair:
        items = self._repair_items(cluster, _repair_prefix(incident))
        return _repairs_from_items(items).get(incident, Repair(incident))

    def load_repairs(self, cluster: str) -> list[Repair]:
        return [r for _, r in sorted(_repairs_from_items(self._repair_items(cluster, "repair#")).items())]

    # approvals

    def _approval_key(self, execution: str) -> dict[str, Any]:
        return {"pk": {"S": _approval_pk(execution)}, "sk": {"S": "approval"}}

    def save_approval(self, approval: Approval) -> None:
        _pk(approval.cluster)
        item: dict[str, Any] = {
            **self._approval_key(approval.execution),
            "execution": {"S": approval.execution},
            "cluster": {"S": approval.cluster},
            "runbook": {"S": approval.runbook},
            "request_id": {"S": approval.request_id},
            "task_token": {"S": approval.task_token},
            "summary": {"S": approval.summary},
            "reason": {"S": approval.reason},
            "requested_at": {"S": _utc(approval.requested_at).isoformat()},
            "expires_at": {"S": _utc(approval.expires_at).isoformat()},
            TTL_ATTRIBUTE: {"N": str(_epoch_s_ceil(approval.expires_at) + APPROVAL_TTL_GRACE_SECONDS)},
        }
        if approval.execution_arn:
            item["execution_arn"] = {"S": approval.execution_arn}
        # a new request is never stored decided: the decision fields are written by consume only
        self._client.put_item(TableName=self.table_name, Item=item)

    def load_approval(self, execution: str) -> Approval | None:
        response = self._client.get_item(
            TableName=self.table_name, Key=self._approval_key(execution), ConsistentRead=True
        )
        item: dict[str, Any] | None = response.get("Item")
        return _approval_from_item(item) if item is not None else None

    def consume_approval(
        self, execution: str, request_id: str, decision: str, by: str, reason: str | None, now: datetime
    ) -> bool:
        values: dict[str, Any] = {
            ":rid": {"S": request_id},
            ":decision": {"S": decision},
            ":by": {"S": by},
            ":at": {"S": _utc(now).isoformat()},
        }
        update = "SET #decision = :decision, decided_by = :by, decided_at = :at"
        if reason is not None:
            update += ", decision_reason = :reason"
            values[":reason"] = {"S": reason}
        try:
            self._client.update_item(
                TableName=self.table_name,
                Key=self._approval_key(execution),
                UpdateExpression=update,
                ConditionExpression="attribute_exists(pk) AND request_id = :rid AND attribute_not_exists(#decision)",
                ExpressionAttributeNames={"#decision": "decision"},
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            if _is_condition_failure(exc):
                return False
            raise
        return True

    def release_approval(self, execution: str, request_id: str, decided_at: datetime) -> bool:
        try:
            self._client.update_item(
                TableName=self.table_name,
                Key=self._approval_key(execution),
                UpdateExpression="REMOVE #decision, decided_by, decided_at, decision_reason",
                ConditionExpression="request_id = :rid AND decided_at = :at",
                ExpressionAttributeNames={"#decision": "decision"},
                ExpressionAttributeValues={":rid": {"S": request_id}, ":at": {"S": _utc(decided_at).isoformat()}},
            )
        except ClientError as exc:
            if _is_condition_failure(exc):
                return False
            raise
        return True
