"""The state in this process's memory (a :class:`etcdops.adapters.state.StateStore`): unit tests and the local
autopilot. Same semantics as the DynamoDB backend, safe to use from several threads."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from etcdops.adapters.state import (
    DEFAULT_INCIDENT_TTL_SECONDS,
    DEFAULT_STREAK_TTL_SECONDS,
    Approval,
    ConflictError,
    LastDecision,
    Lock,
    LockHeldError,
    LockLostError,
    Repair,
    RepairRecord,
    StreakState,
    check_cluster,
    check_execution,
    check_lease,
    check_owner,
    utc,
)
from etcdops.domain.decisions import Decision, Streak

__all__ = ["InMemoryStateStore"]


@dataclass(frozen=True)
class _Incident:
    kind: str
    recorded_at: datetime
    expires_at: datetime


class InMemoryStateStore:
    """A process-local store with the same semantics, safe to use from several threads."""

    def __init__(
        self,
        *,
        streak_ttl_seconds: int = DEFAULT_STREAK_TTL_SECONDS,
        incident_ttl_seconds: int = DEFAULT_INCIDENT_TTL_SECONDS,
    ) -> None:
        self.streak_ttl_seconds = streak_ttl_seconds
        self.incident_ttl_seconds = incident_ttl_seconds
        self._mutex = threading.Lock()
        self._streaks: dict[str, StreakState] = {}
        self._locks: dict[str, Lock] = {}
        self._incidents: dict[tuple[str, str], _Incident] = {}
        self._decisions: dict[str, LastDecision] = {}
        self._terms: dict[str, int] = {}
        self._approvals: dict[str, Approval] = {}
        self._endpoints: dict[str, list[str]] = {}
        self._member_metrics: dict[str, dict[str, str]] = {}
        self._repairs: dict[tuple[str, str], Repair] = {}

    def load_streaks(self, cluster: str) -> StreakState:
        check_cluster(cluster)
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
        check_cluster(cluster)
        with self._mutex:
            current = self._streaks.get(cluster, StreakState()).version
            if current != expected_version:
                raise ConflictError(cluster, expected_version)
            saved = StreakState(dict(streaks), quorum_loss, expected_version + 1, mixed_versions)
            self._streaks[cluster] = saved
            return saved

    def acquire_lock(self, cluster: str, owner: str, lease_seconds: float, now: datetime) -> Lock:
        check_cluster(cluster)
        check_owner(owner)
        lease = check_lease(lease_seconds)
        now = utc(now)
        with self._mutex:
            held = self._locks.get(cluster)
            if held is not None and held.owner != owner and held.is_active(now):
                raise LockHeldError(cluster, held.owner, held.expires_at)
            lock = Lock(cluster, owner, now, now + lease)
            self._locks[cluster] = lock
            return lock

    def renew_lock(self, cluster: str, owner: str, lease_seconds: float, now: datetime) -> Lock:
        check_cluster(cluster)
        check_owner(owner)
        lease = check_lease(lease_seconds)
        now = utc(now)
        with self._mutex:
            held = self._locks.get(cluster)
            if held is None or held.owner != owner:
                raise LockLostError(cluster, owner, held.owner if held else None)
            lock = Lock(cluster, owner, held.acquired_at, now + lease)
            self._locks[cluster] = lock
            return lock

    def release_lock(self, cluster: str, owner: str) -> bool:
        check_cluster(cluster)
        with self._mutex:
            held = self._locks.get(cluster)
            if held is None or held.owner != owner:
                return False
            del self._locks[cluster]
            return True

    def get_lock(self, cluster: str) -> Lock | None:
        check_cluster(cluster)
        with self._mutex:
            return self._locks.get(cluster)

    def record_incident(
        self, cluster: str, incident_id: str, kind: str, now: datetime, *, ttl_seconds: int | None = None
    ) -> bool:
        check_cluster(cluster)
        now = utc(now)
        ttl = self.incident_ttl_seconds if ttl_seconds is None else ttl_seconds
        with self._mutex:
            existing = self._incidents.get((cluster, incident_id))
            if existing is not None and existing.expires_at > now:
                return False
            self._incidents[(cluster, incident_id)] = _Incident(kind, now, now + timedelta(seconds=ttl))
            return True

    def save_last_decision(self, cluster: str, decision: Decision, now: datetime) -> None:
        check_cluster(cluster)
        with self._mutex:
            self._decisions[cluster] = LastDecision(decision, utc(now))

    def load_last_decision(self, cluster: str) -> LastDecision | None:
        check_cluster(cluster)
        with self._mutex:
            return self._decisions.get(cluster)

    def advance_raft_term(self, cluster: str, term: int, now: datetime) -> int:
        check_cluster(cluster)
        with self._mutex:
            previous = self._terms.get(cluster)
            if previous is not None and term <= previous:
                return 0
            self._terms[cluster] = term
            return 0 if previous is None else term - previous

    def save_endpoints(self, cluster: str, endpoints: list[str], now: datetime) -> None:
        check_cluster(cluster)
        with self._mutex:
            self._endpoints[cluster] = list(endpoints)

    def load_endpoints(self, cluster: str) -> list[str]:
        check_cluster(cluster)
        with self._mutex:
            return list(self._endpoints.get(cluster, []))

    def save_member_metrics(self, cluster: str, members: Mapping[str, str], now: datetime) -> None:
        check_cluster(cluster)
        with self._mutex:
            self._member_metrics[cluster] = dict(members)

    def load_member_metrics(self, cluster: str) -> dict[str, str]:
        check_cluster(cluster)
        with self._mutex:
            return dict(self._member_metrics.get(cluster, {}))

    def record_repair_attempt(self, cluster: str, record: RepairRecord) -> bool:
        check_cluster(cluster)
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
        check_cluster(cluster)
        with self._mutex:
            repair = self._repairs.get((cluster, incident))
            found = next((a for a in repair.attempts if a.number == number), None) if repair else None
            if repair is None or found is None or found.execution != execution or found.outcome is not None:
                return False
            ended = replace(found, outcome=outcome, error=error, cause=cause, ended_at=utc(ended_at))
            attempts = tuple(ended if a.number == number else a for a in repair.attempts)
            self._repairs[(cluster, incident)] = replace(repair, attempts=attempts)
            return True

    def escalate_repair(self, cluster: str, incident: str, now: datetime) -> bool:
        check_cluster(cluster)
        with self._mutex:
            repair = self._repairs.get((cluster, incident), Repair(incident))
            if repair.escalated_at is not None:
                return False
            self._repairs[(cluster, incident)] = replace(repair, escalated_at=utc(now))
            return True

    def load_repair(self, cluster: str, incident: str) -> Repair:
        check_cluster(cluster)
        with self._mutex:
            return self._repairs.get((cluster, incident), Repair(incident))

    def load_repairs(self, cluster: str) -> list[Repair]:
        check_cluster(cluster)
        with self._mutex:
            return [r for (c, _), r in sorted(self._repairs.items()) if c == cluster]

    def save_approval(self, approval: Approval) -> None:
        check_execution(approval.execution)
        check_cluster(approval.cluster)
        with self._mutex:
            self._approvals[approval.execution] = approval

    def load_approval(self, execution: str) -> Approval | None:
        check_execution(execution)
        with self._mutex:
            return self._approvals.get(execution)

    def consume_approval(
        self, execution: str, request_id: str, decision: str, by: str, reason: str | None, now: datetime
    ) -> bool:
        check_execution(execution)
        with self._mutex:
            current = self._approvals.get(execution)
            if current is None or current.request_id != request_id or current.decision is not None:
                return False
            self._approvals[execution] = replace(
                current, decision=decision, decided_by=by, decided_at=utc(now), decision_reason=reason
            )
            return True

    def release_approval(self, execution: str, request_id: str, decided_at: datetime) -> bool:
        check_execution(execution)
        with self._mutex:
            current = self._approvals.get(execution)
            if current is None or current.request_id != request_id or current.decided_at != utc(decided_at):
                return False
            self._approvals[execution] = replace(
                current, decision=None, decided_by=None, decided_at=None, decision_reason=None
            )
            return True
