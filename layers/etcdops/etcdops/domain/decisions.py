"""What the safety policy remembers between rounds and what it decides: its data types, no logic.

The policy (:mod:`etcdops.domain.policy`) computes these; the state stores keep them and the health
round acts on them. They live apart from the policy so that a store can hold a ``Decision`` or a
``Streak`` without importing the decision logic (the import contracts check it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

MAX_EXECUTION_NAME_LENGTH = 80
"""Step Functions execution names are 1-80 characters of ``[A-Za-z0-9_-]``."""
MAX_ATTEMPT_SUFFIX_LENGTH = 4
"""Room for ``-a<N>`` (N up to 99): each repair attempt's execution is ``<incident>-a<N>``."""
MAX_INCIDENT_ID_LENGTH = MAX_EXECUTION_NAME_LENGTH - MAX_ATTEMPT_SUFFIX_LENGTH


# ---- what the policy remembers ------------------------------------------------------------------


@dataclass(frozen=True)
class Streak:
    """Consecutive failed probes of one member (or consecutive rounds without quorum)."""

    first_failed_at: datetime
    last_failed_at: datetime
    count: int

    @property
    def span(self) -> timedelta:
        return self.last_failed_at - self.first_failed_at

    def extended(self, now: datetime) -> Streak:
        return Streak(self.first_failed_at, max(self.last_failed_at, now), self.count + 1)

    @staticmethod
    def start(now: datetime) -> Streak:
        return Streak(now, now, 1)


@dataclass(frozen=True)
class BackupRef:
    """The latest verified backup of the observed cluster incarnation: the one a restore may point at."""

    id: str
    created_at: datetime


@dataclass(frozen=True)
class DeltaChainRef:
    """Where the delta chain of the observed cluster ends (read when quorum is lost): a restore ``--latest``
    reaches ``last_revision``, stored at ``updated_at``."""

    cluster_id: str
    last_revision: int
    updated_at: datetime


class LockLike(Protocol):
    """What the policy needs to know about the per-cluster operation lock (``state.Lock`` fits)."""

    @property
    def owner(self) -> str: ...

    @property
    def expires_at(self) -> datetime: ...


@dataclass(frozen=True)
class History:
    """What the policy remembers between probe rounds of one cluster.

    ``streaks`` maps member id to its failure streak; ``quorum_loss`` is the streak of rounds that
    observed quorum lost; ``latest_backup`` the newest verified backup (or None); ``backup_unknown``
    why the backup catalogue could not be read (then ``latest_backup`` is None because it is unknown,
    not because there is none); ``lock`` the cluster's operation lock as last read (an expired lease
    does not count as held); ``mixed_versions`` the streak of rounds whose members reported more
    than one etcd server version; ``delta_chain`` the cluster's delta chain when quorum is lost and one
    covers this incarnation (the escalation then offers the point-in-time restore ``--latest``).
    Treat instances as immutable: :func:`update_history` returns a new one.
    """

    streaks: Mapping[int, Streak] = field(default_factory=dict)
    quorum_loss: Streak | None = None
    latest_backup: BackupRef | None = None
    lock: LockLike | None = None
    backup_unknown: str | None = None
    mixed_versions: Streak | None = None
    delta_chain: DeltaChainRef | None = None


# ---- outputs ------------------------------------------------------------------------------


class Action(StrEnum):
    NONE = "NONE"
    REPLACE_MEMBER = "REPLACE_MEMBER"
    ESCALATE_QUORUM_LOSS = "ESCALATE_QUORUM_LOSS"
    NOTIFY = "NOTIFY"
    WAIT = "WAIT"


class NotificationKind(StrEnum):
    ALARM_NOSPACE = "alarm-nospace"
    ALARM_CORRUPT = "alarm-corrupt"
    ALARM_OTHER = "alarm"
    CERT_EXPIRING = "cert-expiring"
    CERT_EXPIRED = "cert-expired"
    CA_EXPIRING = "ca-expiring"
    CA_EXPIRED = "ca-expired"
    BACKUP_MISSING = "backup-missing"
    BACKUP_STALE = "backup-stale"
    BACKUP_UNREADABLE = "backup-unreadable"
    DB_SIZE_HIGH = "db-size-high"
    LEARNER_FAILED = "learner-failed"
    MIXED_VERSIONS = "mixed-versions"
    EVEN_VOTERS = "even-voters"


@dataclass(frozen=True)
class Notification:
    """Something people should hear about that needs no automatic change.

    ``key`` is deterministic for the same condition (a valid execution-name-like id), so the
    caller can send each one once (``StateStore.record_incident``) rather than once a minute.
    """

    kind: NotificationKind
    message: str
    key: str
    member_id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": str(self.kind), "message": self.message, "key": self.key, "member_id": self.member_id}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Notification:
        return cls(NotificationKind(data["kind"]), data["message"], data["key"], data.get("member_id"))


@dataclass(frozen=True)
class Decision:
    """What to do, and why.

    * ``target_member_id``/``target_member_name``: the member to replace (REPLACE_MEMBER), or the
      member being watched (WAIT on an unconfirmed failure); ``target_member_label`` how messages
      name it (never "unnamed": see :attr:`MemberHealth.label`).
    * ``incident_id``: set for REPLACE_MEMBER and ESCALATE_QUORUM_LOSS (and a WAIT that defers
      one); the same for every trigger of the same failure. Each repair attempt's execution is
      named after it (``<incident>-a<N>``, see :mod:`etcdops.domain.repair`).
    * ``requires_approval``: a REPLACE_MEMBER that must wait for a human (``approval: always``).
    * ``backup_id``/``restore_input``: for ESCALATE_QUORUM_LOSS, the latest verified backup
      (None when there is none, and the reason says so) and the RestoreCluster input to use.
    """

    action: Action
    reason: str
    cluster: str
    target_member_id: int | None = None
    target_member_name: str | None = None
    target_member_label: str | None = None
    incident_id: str | None = None
    requires_approval: bool = False
    notifications: tuple[Notification, ...] = ()
    backup_id: str | None = None
    restore_input: Mapping[str, str | bool | None] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (SNS messages, the last-decision record, ``--json`` output)."""
        return {
            "action": str(self.action),
            "reason": self.reason,
            "cluster": self.cluster,
            "target_member_id": self.target_member_id,
            "target_member_name": self.target_member_name,
            "target_member_label": self.target_member_label,
            "incident_id": self.incident_id,
            "requires_approval": self.requires_approval,
            "notifications": [n.to_dict() for n in self.notifications],
            "backup_id": self.backup_id,
            "restore_input": dict(self.restore_input) if self.restore_input is not None else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Decision:
        restore = data.get("restore_input")
        return cls(
            action=Action(data["action"]),
            reason=data["reason"],
            cluster=data["cluster"],
            target_member_id=data.get("target_member_id"),
            target_member_name=data.get("target_member_name"),
            target_member_label=data.get("target_member_label"),
            incident_id=data.get("incident_id"),
            requires_approval=bool(data.get("requires_approval", False)),
            notifications=tuple(Notification.from_dict(n) for n in data.get("notifications", ())),
            backup_id=data.get("backup_id"),
            restore_input=dict(restore) if restore is not None else None,
        )
