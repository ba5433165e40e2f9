"""What a decision tells people besides its action: alarms, database size, failed learners, certificates,
backups and mixed versions, each under a key that makes it once per incident."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from etcdops.domain.decisions import History, Notification, NotificationKind
from etcdops.domain.health import ClusterHealth, MemberHealth
from etcdops.domain.policy.history import lock_active
from etcdops.domain.policy.ids import notification_key, utc
from etcdops.domain.policy.settings import PolicyConfig
from etcdops.domain.scale import even_voters as even_voter_notice


@dataclass(frozen=True)
class Failure:
    member: MemberHealth
    first_failed_at: datetime
    why: str


def notifications(
    cluster: str,
    observation: ClusterHealth,
    history: History,
    config: PolicyConfig,
    now: datetime,
    failed_learners: list[Failure],
    cert_not_after: Mapping[str, datetime],
    ca_not_after: Mapping[str, datetime] | None = None,
) -> tuple[Notification, ...]:
    """Every notice of this round, alarms first, then sizes, failed learners, certificates, CAs, backups."""
    return (
        *_alarms(cluster, observation),
        *_sizes(cluster, observation, config),
        *_learners(cluster, failed_learners),
        *_certificates(cluster, config, now, cert_not_after),
        *ca_expiring(cluster, config, now, ca_not_after or {}),
        *_backups(cluster, observation, history, config, now),
    )


def _alarms(cluster: str, observation: ClusterHealth) -> list[Notification]:
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
                    notification_key(cluster, NotificationKind.ALARM_NOSPACE, "NOSPACE"),
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
                notification_key(cluster, kind, f"{name}-{alarm.member_id:x}"),
                alarm.member_id,
            )
        )
    return out


def _sizes(cluster: str, observation: ClusterHealth, config: PolicyConfig) -> list[Notification]:
    out: list[Notification] = []
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
                    notification_key(cluster, NotificationKind.DB_SIZE_HIGH, f"{member.id:x}"),
                    member.id,
                )
            )
    return out


def _learners(cluster: str, failed_learners: list[Failure]) -> list[Notification]:
    out: list[Notification] = []
    for failure in failed_learners:
        out.append(
            Notification(
                NotificationKind.LEARNER_FAILED,
                f"Learner {failure.member.label} of cluster {cluster} has failed: {failure.why}. "
                "Learners are not replaced automatically; the runbook that added it should remove it.",
                notification_key(cluster, NotificationKind.LEARNER_FAILED, f"{failure.member.id:x}"),
                failure.member.id,
            )
        )
    return out


def _expiring(
    not_after_by_name: Mapping[str, datetime], now: datetime, warn_days: int
) -> Iterator[tuple[str, bool, str]]:
    """Each name whose end of validity is within ``warn_days`` or past, in name order: the name, whether
    it has expired, and when ("expired at T" or "expires at T (in N days)")."""
    warn = timedelta(days=warn_days)
    for name in sorted(not_after_by_name):
        not_after = utc(not_after_by_name[name])
        if not_after <= now:
            yield name, True, f"expired at {not_after.isoformat()}"
        elif not_after - now <= warn:
            yield name, False, f"expires at {not_after.isoformat()} (in {(not_after - now).days} days)"


def _certificates(
    cluster: str, config: PolicyConfig, now: datetime, cert_not_after: Mapping[str, datetime]
) -> list[Notification]:
    out: list[Notification] = []
    for name, expired, when in _expiring(cert_not_after, now, config.health.certificate_warn_days):
        kind = NotificationKind.CERT_EXPIRED if expired else NotificationKind.CERT_EXPIRING
        out.append(
            Notification(
                kind,
                f"Certificate {name} of cluster {cluster} {when}; rotate it.",
                notification_key(cluster, kind, name),
            )
        )
    return out


def ca_expiring(
    cluster: str, config: PolicyConfig, now: datetime, ca_not_after: Mapping[str, datetime]
) -> list[Notification]:
    """A CA the clients trust (named by subject and serial) that expires within ``health.ca_warn_days``, or
    expired: once per CA (its name is the incident), asking for a CA rotation. Only a human starts one (it
    restarts every member twice and cuts off clients that keep the old CA), so this changes nothing."""
    out: list[Notification] = []
    for name, expired, when in _expiring(ca_not_after, now, config.health.ca_warn_days):
        kind = NotificationKind.CA_EXPIRED if expired else NotificationKind.CA_EXPIRING
        text = f"{when}: no certificate it issued is accepted any more" if expired else when
        out.append(
            Notification(
                kind,
                f"The CA {name} of cluster {cluster} {text}. Member certificates renewed from it end with it. "
                f"Rotate the CA: etcdops runbook start rotate-certs --ca (three phases, each member restarted "
                "in turn; clients need the new CA's bundle and certificates before phase 3).",
                notification_key(cluster, kind, name),
            )
        )
    return out


def _backups(
    cluster: str, observation: ClusterHealth, history: History, config: PolicyConfig, now: datetime
) -> list[Notification]:
    out: list[Notification] = []
    backup = history.latest_backup
    if history.backup_unknown is not None:
        out.append(
            Notification(
                NotificationKind.BACKUP_UNREADABLE,
                f"The backup catalogue of cluster {cluster} cannot be read ({history.backup_unknown}), so the "
                "newest verified backup and its age are unknown; check the HealthCheck function's S3 and KMS "
                "permissions on the backup destination.",
                notification_key(cluster, NotificationKind.BACKUP_UNREADABLE, "catalogue"),
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
                notification_key(cluster, NotificationKind.BACKUP_MISSING, "none"),
            )
        )
    elif now - utc(backup.created_at) > config.backup_max_age:
        age_min = int((now - utc(backup.created_at)).total_seconds() // 60)
        out.append(
            Notification(
                NotificationKind.BACKUP_STALE,
                f"The latest verified backup {backup.id} of cluster {cluster} is {age_min} minutes old "
                f"(limit {int(config.backup_max_age_seconds // 60)} minutes); check the Backup job.",
                notification_key(cluster, NotificationKind.BACKUP_STALE, backup.id),
            )
        )
    return out


def mixed_versions(
    cluster: str, observation: ClusterHealth, history: History, config: PolicyConfig, now: datetime
) -> tuple[Notification, ...]:
    """A cluster whose members have run different etcd versions for longer than an upgrade takes:
    one notification per mixed period (the key carries the period's start)."""
    streak, versions = history.mixed_versions, observation.member_versions
    if streak is None or len(versions) < 2 or now - utc(streak.first_failed_at) < config.mixed_versions_warn:
        return ()
    since = utc(streak.first_failed_at)
    minutes = int((now - since).total_seconds() // 60)
    each = "; ".join(f"{v} on {', '.join(m.label for m in members)}" for v, members in versions.items())
    return (
        Notification(
            NotificationKind.MIXED_VERSIONS,
            f"Cluster {cluster} has run mixed etcd versions for {minutes} minutes (since {since.isoformat()}; "
            f"warning after {config.health.mixed_versions_warn_minutes} minutes): {each}; cluster version "
            f"{observation.cluster_version or 'unknown'}. A mixed cluster runs at its lowest version, and going "
            "back by swapping binaries works only while it is mixed: finish the upgrade or roll it back.",
            notification_key(
                cluster, NotificationKind.MIXED_VERSIONS, f"{since.strftime('%Y%m%dT%H%M%SZ')}-{'-'.join(versions)}"
            ),
        ),
    )


def even_voters(cluster: str, observation: ClusterHealth, history: History, now: datetime) -> tuple[Notification, ...]:
    """An even number of voters, once per set of voters; not while an operation holds the lock (a runbook
    adding or removing members passes through even sizes on purpose)."""
    notice = None if lock_active(history.lock, now) else even_voter_notice(cluster, observation)
    if notice is None:
        return ()
    message, voters = notice
    key = notification_key(cluster, NotificationKind.EVEN_VOTERS, voters)
    return (Notification(NotificationKind.EVEN_VOTERS, message, key),)
