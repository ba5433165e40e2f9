"""The safety policy: a pure function from what a probe round observed to what etcdops does next.

:func:`decide` takes a :class:`~etcdops.domain.health.ClusterHealth`, the cluster's :class:`History`
(failure streaks, latest verified backup, the operation lock) and a :class:`PolicyConfig`, and
returns a :class:`Decision` that carries its ``reason`` as a sentence for people (SNS messages,
logs, ``etcdops status``). :func:`update_history` folds one probe round into the history first.

Nothing here does I/O or reads the clock: ``now`` is an argument, and the same inputs always give
the same decision (and the same incident id).

The rules, in the words of the safety invariants (docs/design.md):

* **Failed member (invariant 3).** A member counts as failed only when its current probe is
  unhealthy and its failure streak has at least ``failure_threshold`` (K) consecutive failed
  probes with ``last_failed_at - first_failed_at >= failure_window`` (T), or when an EC2 event
  names its instance (stopped, terminated, impaired: ``ec2_failures``).
* **Effective health.** A voter is *healthy* when its probe answered healthy and no EC2 failure
  event names it.
* **Quorum lost (invariant 4).** The observation has no leader (``None`` or ``0``), or fewer
  voters are healthy than the quorum of the voters. A quorum loss never leads to a membership
  change. It is escalated (ESCALATE_QUORUM_LOSS) once it is *confirmed*: it lasted K probes
  spanning T seconds (``History.quorum_loss``), or the failed members alone leave fewer voters
  than a quorum. Until then the decision is WAIT.
* **Replacement (invariant 1).** With ``n`` voters and a failed voter ``t``, let ``H_t`` be the
  number of healthy voters other than ``t``. Replacing ``t`` is remove ``t`` (committed by the
  current ``n``-voter cluster, needing ``quorum_of(n)`` votes) and then add a new member (to the
  ``n - 1``-voter cluster, needing ``quorum_of(n - 1)``). REPLACE_MEMBER is decided only when the
  observation has a leader that is a healthy voter other than ``t`` and
  ``H_t >= max(quorum_of(n), quorum_of(n - 1))``, which is ``H_t >= quorum_of(n)``.
* **One operation at a time (invariant 2).** While the operation lock is held (a lease that has
  not expired at ``now``, or ``lock_held=True``), a decision that would REPLACE or ESCALATE
  becomes WAIT and says what it defers.
* Learners are never replaced here: a failed learner is a NOTIFY. At most one target per
  decision: the voter failed longest (earliest ``first_failed_at``, then the lowest member id).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from etcdops.domain.config import ClusterConfig, HealthConfig, describe_validation_error
from etcdops.domain.decisions import (
    MAX_ATTEMPT_SUFFIX_LENGTH,
    MAX_EXECUTION_NAME_LENGTH,
    MAX_INCIDENT_ID_LENGTH,
    Action,
    BackupRef,
    Decision,
    History,
    LockLike,
    Notification,
    NotificationKind,
    Streak,
)
from etcdops.domain.errors import ConfigError
from etcdops.domain.health import ClusterHealth, MemberHealth, quorum_of
from etcdops.domain.scale import even_voters
from etcdops.domain.wording import count

__all__ = [
    "MAX_ATTEMPT_SUFFIX_LENGTH",
    "MAX_EXECUTION_NAME_LENGTH",
    "MAX_INCIDENT_ID_LENGTH",
    "Action",
    "BackupRef",
    "Decision",
    "History",
    "LockLike",
    "Notification",
    "NotificationKind",
    "PolicyConfig",
    "Streak",
    "decide",
    "incident_id",
    "is_confirmed",
    "update_history",
]


_UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9_-]+")


# ---- inputs -------------------------------------------------------------------------------


class PolicyConfig(BaseModel):
    """The policy's settings: the cluster configuration's ``health`` section itself (not a copy of
    its fields), the ``approval`` mode, the backup age a repair accepts, and the one setting only the
    policy has (``db_size_warn_ratio``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    health: HealthConfig = HealthConfig()
    approval: Literal["auto", "always"] = Field(
        default="auto", description="'always': a replacement waits for a human approval"
    )
    backup_max_age_seconds: float = Field(default=2 * 3600.0, gt=0)
    db_size_warn_ratio: float = Field(
        default=0.8, gt=0, le=1, description="notify when a member's db size reaches this share of quota"
    )

    @property
    def failure_window(self) -> timedelta:
        return timedelta(seconds=self.health.failure_window_seconds)

    @property
    def backup_max_age(self) -> timedelta:
        return timedelta(seconds=self.backup_max_age_seconds)

    @property
    def mixed_versions_warn(self) -> timedelta:
        return timedelta(minutes=self.health.mixed_versions_warn_minutes)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, where: str = "policy") -> PolicyConfig:
        """Validate a configuration mapping; :class:`ConfigError` names the bad field."""
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            raise ConfigError(f"{where}.{describe_validation_error(exc)}") from None

    @classmethod
    def from_cluster_config(cls, config: ClusterConfig) -> PolicyConfig:
        """The policy settings of a cluster configuration document (``health``, ``backup``, ``approval``)."""
        return cls(
            health=config.health,
            approval=config.approval,
            **({"backup_max_age_seconds": config.backup.max_age_minutes * 60.0} if config.backup else {}),
        )


# ---- ids ----------------------------------------------------------------------------------


def _utc(when: datetime) -> datetime:
    """Aware UTC; a naive datetime is taken to be UTC already."""
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _slug(text: str) -> str:
    return _UNSAFE_ID_CHARS.sub("-", text).strip("-_") or "x"


def _make_id(parts: Iterable[str], identity: str) -> str:
    """Join slugged ``parts`` and a digest of ``identity`` into an id that, with an attempt suffix,
    is a valid execution name (<= 76 characters)."""
    digest = hashlib.sha256(identity.encode()).hexdigest()[:10]
    head = "-".join(_slug(p) for p in parts)
    head = head[: MAX_INCIDENT_ID_LENGTH - len(digest) - 1].rstrip("-_")
    return f"{head}-{digest}" if head else digest


def incident_id(cluster: str, kind: str, first_failed_at: datetime, member_id: int | None = None) -> str:
    """The deterministic id of one incident: the same cluster, kind, member and streak start give
    the same id (so duplicate triggers start one execution per attempt); at most 76 chars of
    ``[A-Za-z0-9_-]``, so ``<id>-a<N>`` is a valid execution name.
    """
    start = _utc(first_failed_at)
    subject = f"{member_id:x}" if member_id is not None else "cluster"
    identity = f"{cluster}|{kind}|{member_id}|{start.isoformat()}"
    return _make_id([cluster[:24], kind, subject, start.strftime("%Y%m%dT%H%M%SZ")], identity)


def _notification_key(cluster: str, kind: NotificationKind, subject: str) -> str:
    return _make_id([cluster[:24], str(kind), subject[:20]], f"{cluster}|{kind}|{subject}")


# ---- history ------------------------------------------------------------------------------


def _lock_active(lock: LockLike | None, now: datetime) -> bool:
    return lock is not None and _utc(lock.expires_at) > now


def _has_leader(observation: ClusterHealth) -> bool:
    return observation.leader is not None and observation.leader != 0


def _healthy_voters(observation: ClusterHealth, ec2_failures: frozenset[int]) -> tuple[MemberHealth, ...]:
    return tuple(m for m in observation.voters if m.healthy and m.id not in ec2_failures)


def _quorum_lost(observation: ClusterHealth, ec2_failures: frozenset[int]) -> bool:
    return not _has_leader(observation) or len(_healthy_voters(observation, ec2_failures)) < observation.quorum


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
    healthy = _healthy_voters(observation, ec2_failures)
    others_healthy = [m for m in healthy if m.id != target_id]
    needed = max(quorum_of(n), quorum_of(n - 1)) if target_id is not None else quorum_of(n)
    leader_ok = _has_leader(observation) and any(m.id == observation.leader for m in others_healthy)
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
    now = _utc(now)
    streaks: dict[int, Streak] = {}
    for member in observation.members:
        if member.healthy and member.id not in ec2_failures:
            continue
        previous = history.streaks.get(member.id)
        streaks[member.id] = previous.extended(now) if previous is not None else Streak.start(now)
    if _quorum_lost(observation, ec2_failures):
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


# ---- the decision -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Failure:
    member: MemberHealth
    first_failed_at: datetime
    why: str


def _progress(streak: Streak | None, config: PolicyConfig) -> str:
    count = streak.count if streak else 0
    span = int(streak.span.total_seconds()) if streak else 0
    return (
        f"{count} of {config.health.failure_threshold} failed probes over {span} s "
        f"of {config.health.failure_window_seconds} s"
    )


def _failures(
    observation: ClusterHealth,
    history: History,
    config: PolicyConfig,
    now: datetime,
    ec2_failures: frozenset[int],
) -> tuple[list[_Failure], list[MemberHealth]]:
    """Members failed under invariant 3, longest failed first; and the unconfirmed failing ones."""
    failed: list[_Failure] = []
    failing: list[MemberHealth] = []
    for member in observation.members:
        streak = history.streaks.get(member.id)
        if member.id in ec2_failures:
            start = _utc(streak.first_failed_at) if streak else now
            failed.append(_Failure(member, start, "EC2 reports its instance stopped, terminated or impaired"))
        elif not member.healthy and streak is not None and is_confirmed(streak, config):
            why = f"it failed {streak.count} consecutive probes over {int(streak.span.total_seconds())} s" + (
                f" ({member.error})" if member.error else ""
            )
            failed.append(_Failure(member, _utc(streak.first_failed_at), why))
        elif not member.healthy:
            failing.append(member)
    failed.sort(key=lambda f: (f.first_failed_at, f.member.id))
    return failed, failing


def _notifications(
    cluster: str,
    observation: ClusterHealth,
    history: History,
    config: PolicyConfig,
    now: datetime,
    failed_learners: list[_Failure],
    cert_not_after: Mapping[str, datetime],
) -> tuple[Notification, ...]:
    out: list[Notification] = []
    alarms = sorted(set(observation.alarms), key=lambda a: (a.alarm, a.member_id))
    nospace = [a for a in alarms if a.alarm.upper() == "NOSPACE"]
    for alarm in alarms:
        if alarm.alarm.upper() == "NOSPACE":
            if alarm is not nospace[0]:
                continue
            # NOSPACE is the cluster's condition (members raise it one by one as each hits the quota):
            # one incident per cluster, not one per member that reports it
            members = ", ".join(f"{a.member_id:x}" for a in nospace)
            out.append(
                Notification(
                    NotificationKind.ALARM_NOSPACE,
                    f"etcd alarm NOSPACE raised by member(s) {members} on cluster {cluster}: the cluster refuses "
                    "writes until space is freed (compact, defragment, disarm).",
                    _notification_key(cluster, NotificationKind.ALARM_NOSPACE, "NOSPACE"),
                    alarm.member_id,
                )
            )
            continue
        name = alarm.alarm.upper()
        kind = {"NOSPACE": NotificationKind.ALARM_NOSPACE, "CORRUPT": NotificationKind.ALARM_CORRUPT}.get(
            name, NotificationKind.ALARM_OTHER
        )
        detail = {
            "CORRUPT": "its data differs from the other members; it needs a human and likely a replace",
        }.get(name, "check the member")
        out.append(
            Notification(
                kind,
                f"etcd alarm {name} raised by member {alarm.member_id:x} on cluster {cluster}: {detail}.",
                _notification_key(cluster, kind, f"{name}-{alarm.member_id:x}"),
                alarm.member_id,
            )
        )
    warn_at = config.db_size_warn_ratio * config.health.quota_backend_bytes
    for member in sorted(observation.members, key=lambda m: m.id):
        if member.db_size is not None and member.db_size >= warn_at:
            share = 100.0 * member.db_size / config.health.quota_backend_bytes
            out.append(
                Notification(
                    NotificationKind.DB_SIZE_HIGH,
                    f"Member {member.label} of cluster {cluster} has a {member.db_size}-byte database, "
                    f"{share:.0f} % of the {config.health.quota_backend_bytes}-byte quota (warning at "
                    f"{100 * config.db_size_warn_ratio:.0f} %); compact and defragment before NOSPACE.",
                    _notification_key(cluster, NotificationKind.DB_SIZE_HIGH, f"{member.id:x}"),
                    member.id,
                )
            )
    for failure in failed_learners:
        out.append(
            Notification(
                NotificationKind.LEARNER_FAILED,
                f"Learner {failure.member.label} of cluster {cluster} has failed: {failure.why}. "
                "Learners are not replaced automatically; the runbook that added it should remove it.",
                _notification_key(cluster, NotificationKind.LEARNER_FAILED, f"{failure.member.id:x}"),
                failure.member.id,
            )
        )
    warn = timedelta(days=config.health.certificate_warn_days)
    for name in sorted(cert_not_after):
        not_after = _utc(cert_not_after[name])
        if not_after <= now:
            kind, text = NotificationKind.CERT_EXPIRED, f"expired at {not_after.isoformat()}"
        elif not_after - now <= warn:
            days = (not_after - now).days
            kind, text = (
                NotificationKind.CERT_EXPIRING,
                f"expires at {not_after.isoformat()} (in {days} days)",
            )
        else:
            continue
        out.append(
            Notification(
                kind,
                f"Certificate {name} of cluster {cluster} {text}; rotate it.",
                _notification_key(cluster, kind, name),
            )
        )
    backup = history.latest_backup
    if history.backup_unknown is not None:
        out.append(
            Notification(
                NotificationKind.BACKUP_UNREADABLE,
                f"The backup catalogue of cluster {cluster} cannot be read ({history.backup_unknown}), so the "
                "newest verified backup and its age are unknown; check the HealthCheck function's S3 and KMS "
                "permissions on the backup destination.",
                _notification_key(cluster, NotificationKind.BACKUP_UNREADABLE, "catalogue"),
            )
        )
    elif backup is None and observation.cluster_id is None:
        pass  # no member answered: which incarnation's backups count is unknown (the escalation says so)
    elif backup is None:
        out.append(
            Notification(
                NotificationKind.BACKUP_MISSING,
                f"Cluster {cluster} has no verified backup of its current incarnation (cluster id "
                f"{observation.cluster_id:x}; backups of an earlier cluster with the same name do not count); "
                "run the Backup job.",
                _notification_key(cluster, NotificationKind.BACKUP_MISSING, "none"),
            )
        )
    elif now - _utc(backup.created_at) > config.backup_max_age:
        age_min = int((now - _utc(backup.created_at)).total_seconds() // 60)
        out.append(
            Notification(
                NotificationKind.BACKUP_STALE,
                f"The latest verified backup {backup.id} of cluster {cluster} is {age_min} minutes old "
                f"(limit {int(config.backup_max_age_seconds // 60)} minutes); check the Backup job.",
                _notification_key(cluster, NotificationKind.BACKUP_STALE, backup.id),
            )
        )
    return tuple(out)


def _mixed_versions(
    cluster: str, observation: ClusterHealth, history: History, config: PolicyConfig, now: datetime
) -> tuple[Notification, ...]:
    """A cluster whose members have run different etcd versions for longer than an upgrade takes:
    one notification per mixed period (the key carries the period's start)."""
    streak, versions = history.mixed_versions, observation.member_versions
    if streak is None or len(versions) < 2 or now - _utc(streak.first_failed_at) < config.mixed_versions_warn:
        return ()
    since = _utc(streak.first_failed_at)
    minutes = int((now - since).total_seconds() // 60)
    each = "; ".join(f"{v} on {', '.join(m.label for m in members)}" for v, members in versions.items())
    return (
        Notification(
            NotificationKind.MIXED_VERSIONS,
            f"Cluster {cluster} has run mixed etcd versions for {minutes} minutes (since {since.isoformat()}; "
            f"warning after {config.health.mixed_versions_warn_minutes} minutes): {each}; cluster version "
            f"{observation.cluster_version or 'unknown'}. A mixed cluster runs at its lowest version, and going "
            "back by swapping binaries works only while it is mixed: finish the upgrade or roll it back.",
            _notification_key(
                cluster, NotificationKind.MIXED_VERSIONS, f"{since.strftime('%Y%m%dT%H%M%SZ')}-{'-'.join(versions)}"
            ),
        ),
    )


def _even_voters(cluster: str, observation: ClusterHealth, history: History, now: datetime) -> tuple[Notification, ...]:
    """An even number of voters, once per set of voters; not while an operation holds the lock (a runbook
    adding or removing members passes through even sizes on purpose)."""
    notice = None if _lock_active(history.lock, now) else even_voters(cluster, observation)
    if notice is None:
        return ()
    message, voters = notice
    key = _notification_key(cluster, NotificationKind.EVEN_VOTERS, voters)
    return (Notification(NotificationKind.EVEN_VOTERS, message, key),)


def _escalation(
    cluster: str,
    observation: ClusterHealth,
    history: History,
    ec2_failures: frozenset[int],
    failed_voters: list[_Failure],
    now: datetime,
    notifications: tuple[Notification, ...],
) -> Decision:
    voters = observation.voters
    healthy = _healthy_voters(observation, ec2_failures)
    if history.quorum_loss is not None:
        start = _utc(history.quorum_loss.first_failed_at)
    elif failed_voters:
        start = failed_voters[0].first_failed_at
    else:
        start = now
    hosts_gone = any(m.id in ec2_failures for m in voters)
    mode = "new-hosts" if hosts_gone else "in-place"
    backup = history.latest_backup
    backup_id = backup.id if backup is not None else None
    restore_input: dict[str, str | None] = {"cluster": cluster, "backup_id": backup_id, "mode": mode}
    why = "no leader" if not _has_leader(observation) else "a leader is reported"
    down = [m.label for m in voters if m not in healthy]
    if voters and all(m.id == 0 for m in voters):
        why = (
            "no leader, and no known endpoint answered the member list (every member is down, or every "
            "stored endpoint is stale)"
        )
    if backup is not None:
        backup_text = (
            f"Restore from the latest verified backup {backup.id} (created {_utc(backup.created_at).isoformat()})"
        )
    elif history.backup_unknown is not None:
        backup_text = (
            f"The latest verified backup is UNKNOWN (the backup catalogue cannot be read: {history.backup_unknown}); "
            "find it with `etcdops backup list`. Restore"
        )
    elif observation.cluster_id is None:
        backup_text = (
            "No backup can be named: no member answered, so the live cluster id is unknown and a backup counts "
            "only for the cluster incarnation it was taken of (invariant 11); choose one with `etcdops backup "
            "list`, which shows each backup's cluster id, and put its id in the input. Restore"
        )
    else:
        backup_text = (
            f"There is NO verified backup of this cluster incarnation (cluster id {observation.cluster_id:x}) to "
            "restore from; backups of an earlier cluster with the same name do not count. Restore"
        )
    reason = (
        f"Quorum lost on cluster {cluster}: {why}, {len(healthy)} of {len(voters)} voting members healthy "
        f"(quorum {observation.quorum})"
        + (f"; down: {', '.join(down)}" if down else "")
        + ". No automatic membership change is made. "
        + f"{backup_text} by starting RestoreCluster with input {_json_like(restore_input)} "
        + f"(mode {mode}: "
        + ("EC2 reports member hosts gone" if hosts_gone else "the member hosts are still there")
        + "); it waits for a human approval."
    )
    return Decision(
        action=Action.ESCALATE_QUORUM_LOSS,
        reason=reason,
        cluster=cluster,
        incident_id=incident_id(cluster, "quorum-loss", start),
        notifications=notifications,
        backup_id=backup_id,
        restore_input=restore_input,
    )


def _json_like(data: Mapping[str, str | None]) -> str:
    inner = ", ".join(f'"{k}": ' + ("null" if v is None else f'"{v}"') for k, v in data.items())
    return "{" + inner + "}"


def _decide_unlocked(
    observation: ClusterHealth,
    history: History,
    config: PolicyConfig,
    cluster: str,
    now: datetime,
    ec2_failures: frozenset[int],
    cert_not_after: Mapping[str, datetime],
) -> Decision:
    failed, failing = _failures(observation, history, config, now, ec2_failures)
    failed_voters = [f for f in failed if not f.member.is_learner]
    failed_learners = [f for f in failed if f.member.is_learner]
    notes = (
        *_notifications(cluster, observation, history, config, now, failed_learners, cert_not_after),
        *_mixed_versions(cluster, observation, history, config, now),
        *_even_voters(cluster, observation, history, now),
    )
    voters = observation.voters
    n = len(voters)
    healthy = _healthy_voters(observation, ec2_failures)

    # Invariant 4: quorum lost -> never a membership change; escalate once confirmed.
    if _quorum_lost(observation, ec2_failures):
        standing = n - len(failed_voters)  # voters not (yet) confirmed failed
        if is_confirmed(history.quorum_loss, config) or standing < observation.quorum:
            return _escalation(cluster, observation, history, ec2_failures, failed_voters, now, notes)
        why = "no leader" if not _has_leader(observation) else f"{len(healthy)} of {n} voters healthy"
        return Decision(
            action=Action.WAIT,
            reason=(
                f"Quorum appears lost on cluster {cluster} ({why}, quorum {observation.quorum}); "
                f"confirming before escalating: {_progress(history.quorum_loss, config)}. "
                "No membership change while quorum is lost."
            ),
            cluster=cluster,
            notifications=notes,
        )

    if failed_voters:
        target = failed_voters[0]
        safety = change_safety(observation, target.member.id, ec2_failures)
        needed, leader_ok = safety.needed, safety.leader_ok
        if not safety.safe:
            # Unreachable when quorum holds and the target is failed; kept as a guard (invariant 1).
            return Decision(
                action=Action.WAIT,
                reason=(
                    f"Member {target.member.label} of cluster {cluster} has failed ({target.why}), "
                    f"but replacing it is not safe now: {safety.others_healthy} healthy voters besides it, "
                    f"{needed} needed"
                    + ("" if leader_ok else ", and the leader is not a healthy voter other than it")
                    + "."
                ),
                cluster=cluster,
                target_member_id=target.member.id,
                target_member_name=target.member.name,
                target_member_label=target.member.label,
                notifications=notes,
            )
        approval = config.approval == "always"
        others = len(failed_voters) - 1
        turn = "its turn" if others == 1 else "their turn"
        more = f" {count(others, 'more failed voter waits', 'more failed voters wait')} {turn}." if others else ""
        return Decision(
            action=Action.REPLACE_MEMBER,
            reason=(
                f"Replace member {target.member.label} of cluster {cluster}: {target.why}. "
                f"It is safe: the leader is up and {safety.others_healthy} other voters are healthy, "
                f"at least the quorum {needed} of the {n}-voter cluster during the change."
                + more
                + (" Waiting for a human approval (approval: always)." if approval else "")
            ),
            cluster=cluster,
            target_member_id=target.member.id,
            target_member_name=target.member.name,
            target_member_label=target.member.label,
            incident_id=incident_id(cluster, "replace", target.first_failed_at, target.member.id),
            requires_approval=approval,
            notifications=notes,
        )

    failing_voters = sorted((m for m in failing if not m.is_learner), key=lambda m: m.id)
    if failing_voters:
        watched = min(
            failing_voters,
            key=lambda m: (_utc(s.first_failed_at) if (s := history.streaks.get(m.id)) else now, m.id),
        )
        return Decision(
            action=Action.WAIT,
            reason=(
                f"Member {watched.label} of cluster {cluster} is failing "
                f"({_progress(history.streaks.get(watched.id), config)}); not yet declared failed."
            ),
            cluster=cluster,
            target_member_id=watched.id,
            target_member_name=watched.name,
            target_member_label=watched.label,
            notifications=notes,
        )

    if notes:
        kinds = ", ".join(dict.fromkeys(str(n.kind) for n in notes))
        return Decision(
            action=Action.NOTIFY,
            reason=f"Cluster {cluster} keeps quorum; {count(len(notes), 'thing needs', 'things need')} "
            f"attention: {kinds}.",
            cluster=cluster,
            notifications=notes,
        )
    return Decision(
        action=Action.NONE,
        reason=f"Cluster {cluster} is healthy: {len(healthy)} of {n} voting members healthy, leader present.",
        cluster=cluster,
    )


def decide(
    observation: ClusterHealth,
    history: History,
    config: PolicyConfig,
    *,
    cluster: str,
    now: datetime,
    ec2_failures: frozenset[int] = frozenset(),
    lock_held: bool = False,
    cert_not_after: Mapping[str, datetime] | None = None,
) -> Decision:
    """Decide what to do about one cluster (see the module docstring for the rules).

    ``history`` should already include this observation (:func:`update_history`). ``cluster`` is
    the cluster's name (used in reasons, incident ids and the RestoreCluster input);
    ``ec2_failures`` the member ids whose instances EC2 reports stopped, terminated or impaired;
    ``lock_held`` says an operation is running even if ``history.lock`` does not show it;
    ``cert_not_after`` maps certificate names to their expiry.
    """
    now = _utc(now)
    decision = _decide_unlocked(
        observation, history, config, cluster, now, frozenset(ec2_failures), cert_not_after or {}
    )
    locked = lock_held or _lock_active(history.lock, now)
    if not locked or decision.action not in (Action.REPLACE_MEMBER, Action.ESCALATE_QUORUM_LOSS):
        return decision
    lock = history.lock if _lock_active(history.lock, now) else None
    holder = (
        f"{lock.owner} holds the operation lock until {_utc(lock.expires_at).isoformat()}"
        if lock is not None
        else "an operation is running"
    )
    deferred = "replacing" if decision.action is Action.REPLACE_MEMBER else "escalating"
    return replace(
        decision,
        action=Action.WAIT,
        reason=f"Not {deferred} yet: {holder}. Deferred: {decision.reason}",
        requires_approval=False,
        backup_id=None,
        restore_input=None,
    )
