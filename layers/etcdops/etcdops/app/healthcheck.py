"""HealthCheck: probe every member, remember, publish metrics, and act on the policy's decision.

One round (:func:`run_health_round`) is the same in AWS and in the local stack:

1. Decide whether the trigger concerns this cluster at all. An alarm of another cluster, an EC2
   event of an instance that is not a member, an alarm that is back to OK: a logged, explained
   skip, before anything is probed or recorded.
2. Probe every member in parallel under the config's deadline, and meanwhile read the certificate
   each member serves (bounded by the same deadline, so a frozen member stalls neither).
3. Fold the round into the failure streaks (one conditional write; a concurrent round makes us
   reload and fold again), read the operation lock and the newest verified backup of the live
   cluster incarnation (invariant 11), and let :func:`etcdops.domain.policy.decide` decide. The decision
   and its reason are saved as the last decision.
4. Publish the metrics (:mod:`etcdops.adapters.healthmetrics`).
5. Act. REPLACE_MEMBER starts the ReplaceMember state machine with the decision's incident id as
   the execution name: every trigger of the same failure computes the same name, so duplicate
   alarms and overlapping schedules start one execution (``ExecutionAlreadyExists``, or the
   running execution's own answer to a start with its name and input, means it is already
   running). Which round started it is what the attempt's record says, not Step Functions' answer.
   Escalations and notifications are published once per incident
   (``IncidentStore.record_incident``), not once per round.

Observing (step 2) is :mod:`etcdops.app.health_observation`; acting on the decision is
:mod:`etcdops.app.health_actions`; the EC2 and Step Functions calls are
:mod:`etcdops.adapters.health_aws`; the Lambda wiring is :mod:`etcdops.entrypoints.health_check`.
Nothing here reads the environment or creates a client.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from etcdops.adapters.aws import Notifier
from etcdops.adapters.backup.store import BackupStore
from etcdops.adapters.etcd.client import EtcdClient
from etcdops.adapters.etcd.membership import merge_endpoints
from etcdops.adapters.health_aws import CLUSTER_TAG, MEMBER_TAG, InstanceDirectory, ReplaceStarter
from etcdops.adapters.healthmetrics import (
    HealthMetrics,
    HealthMetricsSink,
    compute_health_metrics,
    publish_health_metrics,
)
from etcdops.adapters.state import ConflictError, Lock, StateStore
from etcdops.adapters.state_delta import DeltaChainStore
from etcdops.app.backup.catalogue import newest_verified, restore_drill_age
from etcdops.app.backup.delta import covering_chain
from etcdops.app.fleet import FleetGate
from etcdops.app.health_actions import act, renew_certificates_if_due
from etcdops.app.health_certificates import own_certificates
from etcdops.app.health_observation import Observation, observe
from etcdops.app.member_metrics import fold_member_metrics
from etcdops.domain.backup.manifest import Manifest, cluster_id_text
from etcdops.domain.config import ClusterConfig
from etcdops.domain.errors import EtcdopsError
from etcdops.domain.health import ClusterHealth, MemberHealth, discount_alarm_reports
from etcdops.domain.member_metrics import StarvationThresholds
from etcdops.domain.policy import BackupRef, Decision, History, PolicyConfig, decide, update_history
from etcdops.domain.policy.history import quorum_lost

log = logging.getLogger("etcdops.app.healthcheck")

_SAVE_ATTEMPTS = 8


# ---- triggers -----------------------------------------------------------------------------------------


class TriggerKind(StrEnum):
    SCHEDULE = "schedule"
    ALARM = "alarm"
    EC2_STATE = "ec2-state-change"
    EC2_STATUS = "ec2-status-check"
    MANUAL = "manual"


@dataclass(frozen=True)
class Trigger:
    """Why a round runs. ``instance_id``/``instance_failed``: an EC2 event about an instance;
    ``cluster``: the cluster an alarm names; ``ignore``: why the event needs no round at all."""

    kind: TriggerKind
    description: str
    cluster: str | None = None
    instance_id: str | None = None
    instance_failed: bool = False
    ignore: str | None = None

    @classmethod
    def manual(cls, description: str = "manual run") -> Trigger:
        return cls(TriggerKind.MANUAL, description)


# ---- what a round needs and returns -------------------------------------------------------------------


@dataclass
class HealthContext:
    """Everything a round uses, built by :func:`health_job` (AWS) or the local health loop."""

    config: ClusterConfig
    client: EtcdClient
    state: StateStore
    metrics: HealthMetricsSink
    notifier: Notifier | None
    replace: ReplaceStarter | None
    instances: InstanceDirectory
    backups: BackupStore | None
    certificate_timeout: float | None = None  # default: the probe deadline
    starvation: StarvationThresholds = field(default_factory=StarvationThresholds)
    fleet: FleetGate | None = None  # the fleet brake and repair cap (invariant 15); None: not applied
    rotate: ReplaceStarter | None = None  # RotateCertificates, started near a certificate's expiry
    chains: DeltaChainStore | None = None  # the delta chain heads (read when quorum is lost: the escalation)


@dataclass(frozen=True)
class HealthRoundResult:
    cluster: str
    trigger: Trigger
    skipped: str | None = None
    health: ClusterHealth | None = None
    decision: Decision | None = None
    metrics: HealthMetrics | None = None
    actions: tuple[str, ...] = ()
    ec2_failures: frozenset[int] = frozenset()

    def to_dict(self) -> dict[str, Any]:
        from etcdops.app.probe import health_to_dict

        return {
            "cluster": self.cluster,
            "trigger": {"kind": str(self.trigger.kind), "description": self.trigger.description},
            "skipped": self.skipped,
            "decision": self.decision.to_dict() if self.decision else None,
            "metrics": self.metrics.to_dict() if self.metrics else None,
            "actions": list(self.actions),
            "health": health_to_dict(self.health) if self.health else None,
        }


def round_seeds(config: ClusterConfig, state: StateStore) -> list[str]:
    """Where a round looks for the member list: the configured endpoints, then the members the last
    round saw (so a configuration that went stale cannot blind the autopilot)."""
    return merge_endpoints(config.endpoints, state.load_endpoints(config.name))


def trigger_skip(trigger: Trigger, config: ClusterConfig) -> str | None:
    """Why ``trigger`` needs no round for the cluster of ``config`` (None: run the round)."""
    if trigger.ignore is not None:
        return trigger.ignore
    if trigger.cluster is not None and trigger.cluster != config.name:
        return f"{trigger.description}: it is about cluster {trigger.cluster!r}, this function watches {config.name!r}"
    return None


# ---- observation --------------------------------------------------------------------------------------


def _fold(state: StateStore, cluster: str, health: ClusterHealth, now: datetime, ec2: frozenset[int]) -> History:
    """Fold this round into the stored streaks with one conditional write (reload on conflict)."""
    for _ in range(_SAVE_ATTEMPTS):
        stored = state.load_streaks(cluster)
        before = History(stored.streaks, stored.quorum_loss, mixed_versions=stored.mixed_versions)
        history = update_history(before, health, now, ec2_failures=ec2)
        try:
            state.save_streaks(
                cluster,
                history.streaks,
                history.quorum_loss,
                expected_version=stored.version,
                now=now,
                mixed_versions=history.mixed_versions,
            )
        except ConflictError:
            continue
        return history
    raise ConflictError(cluster, stored.version)


def _member_named(health: ClusterHealth, name: str) -> MemberHealth | None:
    return next((m for m in health.members if m.name == name), None)


# ---- the round ----------------------------------------------------------------------------------------


def run_health_round(ctx: HealthContext, trigger: Trigger, now: datetime) -> HealthRoundResult:
    cluster = ctx.config.name
    skip = trigger_skip(trigger, ctx.config)
    member_name = None if skip is not None else _trigger_member(ctx, trigger)
    if skip is not None or member_name == "":
        return _skipped(cluster, trigger, skip or _not_a_member(trigger, cluster))

    observed = observe(ctx.client, ctx.config, ctx.state, ctx.certificate_timeout, now)
    health = observed.health
    fleet_notes: list[str] = []
    if ctx.fleet is not None:  # what this cluster saw counts towards the fleet brake (invariant 15)
        fleet_notes = ctx.fleet.report(cluster, saw_failure(health), now)

    ec2_failures: frozenset[int] = frozenset()
    if member_name is not None:
        member = _member_named(health, member_name)
        if member is None:
            why = f"{trigger.description}: it maps to member {member_name}, which is not in the membership of {cluster}"
            return _skipped(cluster, trigger, why, health)
        if trigger.instance_failed:
            ec2_failures = frozenset({member.id})

    newest, backup_unknown = _newest_backup(ctx, health)
    decision, released, trusted_cas = _decide(ctx, trigger, observed, ec2_failures, newest, backup_unknown, now)
    metrics, notices = _publish(ctx, observed, ec2_failures, newest, trusted_cas, now)
    starvation = [f"notified starvation: {notice}" for notice in notices]
    actions = [*released, *fleet_notes, *starvation, *act(ctx, decision, ec2_failures, now, health)]
    actions += renew_certificates_if_due(ctx, metrics.certificate_expiry_days, now)
    return HealthRoundResult(cluster, trigger, None, health, decision, metrics, tuple(actions), ec2_failures)


def _skipped(cluster: str, trigger: Trigger, why: str, health: ClusterHealth | None = None) -> HealthRoundResult:
    log.info("skipped: %s", why)
    return HealthRoundResult(cluster, trigger, skipped=why, health=health)


def _trigger_member(ctx: HealthContext, trigger: Trigger) -> str | None:
    """The member an EC2 event's instance is ("" when it is none of this cluster's; None: no instance)."""
    if trigger.instance_id is None:
        return None
    return ctx.instances.member_of(trigger.instance_id) or ""


def _not_a_member(trigger: Trigger, cluster: str) -> str:
    return (
        f"{trigger.description}: the instance is not a member of cluster {cluster} "
        f"(not in health.member_instances, no {CLUSTER_TAG}={cluster} and {MEMBER_TAG} tags)"
    )


def _newest_backup(ctx: HealthContext, health: ClusterHealth) -> tuple[Manifest | None, str | None]:
    """The newest verified backup of the incarnation that answered (invariant 11; none when nobody did),
    or why it is unknown: the catalogue must not stop failure detection; the policy says it is
    unreadable (once, by SNS), and the age metric is left out rather than reported as "no backup"."""
    if ctx.backups is None:
        return None, None
    try:
        return newest_verified(ctx.backups, cluster_id_text(health.cluster_id)), None
    except EtcdopsError as exc:
        backup_unknown = f"{type(exc).__name__}: {exc}"
        log.error("newest verified backup unknown: %s", backup_unknown)
        return None, backup_unknown


def _decide(
    ctx: HealthContext,
    trigger: Trigger,
    observed: Observation,
    ec2: frozenset[int],
    newest: Manifest | None,
    backup_unknown: str | None,
    now: datetime,
) -> tuple[Decision, list[str], dict[str, datetime]]:
    """The round folded into the streaks, an abandoned lock released, the policy's decision (saved and
    logged): the decision, what was released, and the CAs the clients trust (with their ends)."""
    cluster, health = ctx.config.name, observed.health
    history = _fold(ctx.state, cluster, health, now, ec2)
    lock, released = release_abandoned_lock(ctx, now)
    history = replace(
        history,
        latest_backup=BackupRef(newest.id, newest.created_at) if newest else None,
        backup_unknown=backup_unknown,
        lock=lock,
        delta_chain=covering_chain(ctx.chains, cluster, health.cluster_id) if quorum_lost(health, ec2) else None,
    )
    certificates, trusted_cas = own_certificates(ctx.config, observed.served)
    decision = decide(
        health,
        history,
        PolicyConfig.from_cluster_config(ctx.config),
        cluster=cluster,
        now=now,
        ec2_failures=ec2,
        cert_not_after=certificates,
        ca_not_after=trusted_cas,
    )
    ctx.state.save_last_decision(cluster, decision, now)
    log_decision(decision, trigger)
    return decision, released, trusted_cas


def _publish(
    ctx: HealthContext,
    observed: Observation,
    ec2: frozenset[int],
    newest: Manifest | None,
    trusted_cas: Mapping[str, datetime],
    now: datetime,
) -> tuple[HealthMetrics, tuple[str, ...]]:
    """The round's metrics, published; and the starvation notices the members' metrics gave."""
    health = observed.health
    terms = [m.raft_term for m in health.members if m.raft_term is not None]
    leader_changes = ctx.state.advance_raft_term(ctx.config.name, max(terms), now) if terms else 0
    metrics = compute_health_metrics(
        health,
        now=now,
        quota_bytes=ctx.config.health.quota_backend_bytes,
        leader_changes=leader_changes,
        ec2_failures=ec2,
        served_certificates=observed.served,
        newest_verified_backup_at=newest.created_at if newest else None,
        trusted_cas=trusted_cas,
    )
    members = fold_member_metrics(ctx, health, observed.texts, ctx.starvation, now)
    metrics = replace(metrics, members=members.stats, last_restore_drill_age=_restore_drill_age(ctx, now))
    publish_health_metrics(metrics, ctx.metrics)
    return metrics, tuple(members.notices)


def saw_failure(health: ClusterHealth) -> bool:
    """What a round reports to the fleet: a member not healthy, or no quorum."""
    return not health.has_quorum or any(not m.healthy for m in health.members)


def _restore_drill_age(ctx: HealthContext, now: datetime) -> float | None:
    """``LastRestoreDrillAge`` every round, so its alarm can judge between the weekly drills (a drill
    that never runs publishes nothing of its own); None when unknown (logged, the alarm keeps its state)."""
    if ctx.backups is None:
        return None
    try:
        return restore_drill_age(ctx.backups, now)
    except EtcdopsError as exc:
        log.error("restore drill age unknown: %s: %s", type(exc).__name__, exc)
        return None


def log_decision(decision: Decision, trigger: Trigger) -> None:
    """The round's decision and its reason as one log line, its fields structured (CloudWatch in Lambda:
    etcdops.entrypoints.observability)."""
    fields = {"cluster": decision.cluster, "decision": str(decision.action), "reason": decision.reason,
              "incident": decision.incident_id, "trigger": trigger.description}  # fmt: skip
    log.info("decision %s: %s", decision.action, decision.reason, extra=fields)


def release_abandoned_lock(ctx: HealthContext, now: datetime) -> tuple[Lock | None, list[str]]:
    """The cluster's lock, released first when its holder is a ReplaceMember execution that ended
    without releasing it (aborted, timed out, crashed: its failure step never ran). The lock is
    released only on the word of Step Functions that nothing runs under it (invariant 2 holds)."""
    lock = ctx.state.get_lock(ctx.config.name)
    if lock is None or not lock.is_active(now) or ctx.replace is None:
        return lock, []
    execution = ctx.replace.describe(lock.owner)
    if execution is None or not execution.status.ended:
        return lock, []  # running, or not a ReplaceMember execution (RestoreCluster, ...): its lease rules
    if not ctx.state.release_lock(ctx.config.name, lock.owner):
        return ctx.state.get_lock(ctx.config.name), []
    note = f"released the lock of {lock.owner}: the execution ended {execution.status} without releasing it"
    log.warning(note)
    return None, [note]


__all__ = [
    "HealthContext",
    "HealthRoundResult",
    "Trigger",
    "TriggerKind",
    "discount_alarm_reports",
    "log_decision",
    "release_abandoned_lock",
    "round_seeds",
    "run_health_round",
    "trigger_skip",
]
