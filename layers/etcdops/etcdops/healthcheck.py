"""HealthCheck: probe every member, remember, publish metrics, and act on the policy's decision.

One round (:func:`run_health_round`) is the same in AWS and in the local stack:

1. Decide whether the trigger concerns this cluster at all. An alarm of another cluster, an EC2
   event of an instance that is not a member, an alarm that is back to OK: a logged, explained
   skip, before anything is probed or recorded.
2. Probe every member in parallel under the config's deadline, and meanwhile read the certificate
   each member serves (bounded by the same deadline, so a frozen member stalls neither).
3. Fold the round into the failure streaks (one conditional write; a concurrent round makes us
   reload and fold again), read the operation lock and the newest verified backup, and let
   :func:`etcdops.policy.decide` decide. The decision and its reason are saved as the last decision.
4. Publish the metrics (:mod:`etcdops.healthmetrics`).
5. Act. REPLACE_MEMBER starts the ReplaceMember state machine with the decision's incident id as
   the execution name: every trigger of the same failure computes the same name, so duplicate
   alarms and overlapping schedules start one execution (``ExecutionAlreadyExists`` means it is
   already running). Escalations and notifications are published once per incident
   (``StateStore.record_incident``), not once per round.

:func:`health_job` is the Lambda side: configuration from SSM, TLS from Secrets Manager, clients
passed in. Nothing here reads the environment except :meth:`HealthSettings.from_env`.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from etcdops.aws import Notifier, aws_error, aws_error_code, load_cluster_config, materialize_tls
from etcdops.backup.manifest import Manifest, backup_id_from_manifest_key, manifest_key
from etcdops.backup.store import BackupStore, open_store
from etcdops.config import ClusterConfig
from etcdops.connect import client_for, tls_files
from etcdops.errors import ConfigError, EtcdopsError
from etcdops.etcd import EtcdClient
from etcdops.events import AlarmStateChangeEvent, Ec2StateChangeEvent, HealthCheckEvent, ScheduledEvent
from etcdops.health import ClusterHealth, MemberHealth
from etcdops.healthmetrics import HealthMetrics, HealthMetricsSink, compute_health_metrics, publish_health_metrics
from etcdops.policy import Action, BackupRef, Decision, History, PolicyConfig, decide, update_history
from etcdops.probe import probe_cluster
from etcdops.state import ConflictError, StateStore

log = logging.getLogger("etcdops.healthcheck")

CLUSTER_TAG = "etcdops:cluster"
MEMBER_TAG = "etcdops:member"
EC2_FAILED_STATES = frozenset({"stopping", "stopped", "shutting-down", "terminated"})
STATUS_CHECK_METRICS = frozenset(
    {"StatusCheckFailed", "StatusCheckFailed_Instance", "StatusCheckFailed_System", "StatusCheckFailed_AttachedEBS"}
)
_SAVE_ATTEMPTS = 8
# etcd reports each active alarm in Status.errors as "memberID:<decimal id> alarm:<NAME> "
_ALARM_REPORT = re.compile(r"^memberID:\d+ alarm:[A-Z_]+\s*$")


# ---- settings and clients -----------------------------------------------------------------------------


@dataclass(frozen=True)
class HealthSettings:
    """The HealthCheck function's environment, validated at the start of an invocation."""

    config_parameter: str
    table_name: str
    topic_arn: str | None = None
    replace_state_machine_arn: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> HealthSettings:
        parameter = env.get("CLUSTER_CONFIG_PARAMETER", "").strip()
        if not parameter:
            raise ConfigError("CLUSTER_CONFIG_PARAMETER: not set (the SSM parameter holding the cluster config)")
        table = env.get("TABLE_NAME", "").strip()
        if not table:
            raise ConfigError("TABLE_NAME: not set (the DynamoDB state table)")
        machine = env.get("REPLACE_STATE_MACHINE_ARN", "").strip() or None
        if machine is not None and not machine.startswith("arn:"):
            raise ConfigError(f"REPLACE_STATE_MACHINE_ARN: {machine!r} is not a state machine ARN")
        return cls(parameter, table, env.get("TOPIC_ARN", "").strip() or None, machine)


@dataclass(frozen=True)
class HealthAwsClients:
    ssm: Any
    secrets: Any
    s3: Any
    ec2: Any
    stepfunctions: Any

    @classmethod
    def from_session(cls, session: Any) -> HealthAwsClients:
        return cls(
            ssm=session.client("ssm"),
            secrets=session.client("secretsmanager"),
            s3=session.client("s3"),
            ec2=session.client("ec2"),
            stepfunctions=session.client("stepfunctions"),
        )


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

    @classmethod
    def from_event(cls, event: HealthCheckEvent) -> Trigger:
        parsed = event.root
        if isinstance(parsed, ScheduledEvent):
            rule = parsed.resources[0].rsplit("/", 1)[-1] if parsed.resources else "schedule"
            return cls(TriggerKind.SCHEDULE, f"scheduled by {rule} at {parsed.time.isoformat()}")
        if isinstance(parsed, Ec2StateChangeEvent):
            instance, state = parsed.detail.instance_id, parsed.detail.state
            description = f"EC2 reports instance {instance} {state}"
            if state not in EC2_FAILED_STATES:
                return cls(
                    TriggerKind.EC2_STATE, description, instance_id=instance, ignore=f"{description}: not a failure"
                )
            return cls(TriggerKind.EC2_STATE, description, instance_id=instance, instance_failed=True)
        return cls._from_alarm(parsed)

    @classmethod
    def _from_alarm(cls, event: AlarmStateChangeEvent) -> Trigger:
        detail = event.detail
        state = detail.state.value
        description = f"alarm {detail.alarmName} is {state}"
        checks = [
            m
            for m in detail.metrics
            if m.namespace == "AWS/EC2" and m.name in STATUS_CHECK_METRICS and m.dimensions.get("InstanceId")
        ]
        if checks:
            instance = checks[0].dimensions["InstanceId"]
            description = f"EC2 status check alarm {detail.alarmName} of instance {instance} is {state}"
            if state != "ALARM":
                return cls(
                    TriggerKind.EC2_STATUS, description, instance_id=instance, ignore=f"{description}: not impaired"
                )
            return cls(TriggerKind.EC2_STATUS, description, instance_id=instance, instance_failed=True)
        clusters = sorted({m.dimensions["cluster"] for m in detail.metrics if m.dimensions.get("cluster")})
        if not clusters:
            return cls(
                TriggerKind.ALARM,
                description,
                ignore=f"{description}: its metrics have no 'cluster' dimension and it is not an EC2 status check",
            )
        if len(clusters) > 1:
            return cls(TriggerKind.ALARM, description, ignore=f"{description}: it names several clusters {clusters}")
        return cls(TriggerKind.ALARM, description, cluster=clusters[0])


# ---- EC2 instances of members -------------------------------------------------------------------------


class InstanceDirectory:
    """Which member an EC2 instance is: ``health.member_instances`` first, then the instance's
    tags (``etcdops:cluster`` = the cluster's name, or the discovery tag; ``etcdops:member`` = the
    member's name) read with ``ec2.describe_instances`` when an EC2 client is given."""

    def __init__(self, config: ClusterConfig, ec2: Any = None) -> None:
        self.config = config
        self.ec2 = ec2
        self._static = {instance: name for name, instance in config.health.member_instances.items()}

    def member_of(self, instance_id: str) -> str | None:
        if instance_id in self._static:
            return self._static[instance_id]
        if self.ec2 is None:
            return None
        try:
            response = self.ec2.describe_instances(InstanceIds=[instance_id])
        except ClientError as exc:
            if aws_error_code(exc).startswith("InvalidInstanceID"):
                return None
            raise aws_error(f"describing instance {instance_id}", exc) from exc
        except BotoCoreError as exc:
            raise aws_error(f"describing instance {instance_id}", exc) from exc
        tags = {
            tag["Key"]: tag["Value"]
            for reservation in response.get("Reservations", [])
            for instance in reservation.get("Instances", [])
            for tag in instance.get("Tags", [])
        }
        ours = tags.get(CLUSTER_TAG) == self.config.name
        discovery = self.config.discovery
        if discovery is not None and tags.get(discovery.tag_key) == discovery.tag_value:
            ours = True
        return (tags.get(MEMBER_TAG) or None) if ours else None


# ---- starting ReplaceMember ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StartOutcome:
    name: str
    started: bool  # False: an execution of this name exists already
    execution_arn: str | None = None


class ReplaceStarter(Protocol):
    def start(self, name: str, document: Mapping[str, Any]) -> StartOutcome: ...


class StepFunctionsReplaceStarter:
    """Starts the ReplaceMember state machine; the execution name makes duplicates harmless."""

    def __init__(self, stepfunctions: Any, state_machine_arn: str) -> None:
        self.sfn = stepfunctions
        self.state_machine_arn = state_machine_arn

    def _execution_arn(self, name: str) -> str:
        return f"{self.state_machine_arn.replace(':stateMachine:', ':execution:', 1)}:{name}"

    def start(self, name: str, document: Mapping[str, Any]) -> StartOutcome:
        try:
            response = self.sfn.start_execution(
                stateMachineArn=self.state_machine_arn, name=name, input=json.dumps(dict(document), sort_keys=True)
            )
        except ClientError as exc:
            if aws_error_code(exc) == "ExecutionAlreadyExists":
                return StartOutcome(name, False, self._execution_arn(name))
            raise aws_error(f"starting {name} of {self.state_machine_arn}", exc) from exc
        except BotoCoreError as exc:
            raise aws_error(f"starting {name} of {self.state_machine_arn}", exc) from exc
        return StartOutcome(name, True, response["executionArn"])


class RecordingReplaceStarter:
    """Remembers what it was asked to start, once per name (the local health loop, tests)."""

    def __init__(self) -> None:
        self.started: dict[str, dict[str, Any]] = {}

    def start(self, name: str, document: Mapping[str, Any]) -> StartOutcome:
        if name in self.started:
            return StartOutcome(name, False)
        self.started[name] = dict(document)
        return StartOutcome(name, True)


def replace_input(decision: Decision, ec2_failures: frozenset[int]) -> dict[str, Any]:
    """The ReplaceMember execution input for a REPLACE_MEMBER decision."""
    if decision.action is not Action.REPLACE_MEMBER or decision.target_member_id is None:
        raise ValueError(f"not a replacement decision: {decision.action}")
    return {
        "cluster": decision.cluster,
        "member_id": f"{decision.target_member_id:x}",
        "member_name": decision.target_member_name or "",
        "incident_id": decision.incident_id,
        "reason": decision.reason,
        "requires_approval": decision.requires_approval,
        "ec2_failed": decision.target_member_id in ec2_failures,
    }


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
        from etcdops.probe import health_to_dict

        return {
            "cluster": self.cluster,
            "trigger": {"kind": str(self.trigger.kind), "description": self.trigger.description},
            "skipped": self.skipped,
            "decision": self.decision.to_dict() if self.decision else None,
            "metrics": self.metrics.to_dict() if self.metrics else None,
            "actions": list(self.actions),
            "health": health_to_dict(self.health) if self.health else None,
        }


def trigger_skip(trigger: Trigger, config: ClusterConfig) -> str | None:
    """Why ``trigger`` needs no round for the cluster of ``config`` (None: run the round)."""
    if trigger.ignore is not None:
        return trigger.ignore
    if trigger.cluster is not None and trigger.cluster != config.name:
        return f"{trigger.description}: it is about cluster {trigger.cluster!r}, this function watches {config.name!r}"
    return None


# ---- observation --------------------------------------------------------------------------------------


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


def _served_certificates(
    endpoints: Sequence[str], config: ClusterConfig, timeout: float, pool: ThreadPoolExecutor
) -> Callable[[], dict[str, datetime]]:
    """Start reading each endpoint's served certificate; the returned function collects what
    arrived within ``timeout`` of the start (a frozen member is left out, never waited for)."""
    tls = tls_files(config)
    if tls is None:
        return dict
    from etcdops.pki import served_certificate_expiry

    futures = {
        pool.submit(served_certificate_expiry, endpoint, timeout=timeout, cert=tls.cert, key=tls.key): endpoint
        for endpoint in endpoints
    }

    def collect() -> dict[str, datetime]:
        done, _ = wait(futures, timeout=timeout + 0.25)
        found: dict[str, datetime] = {}
        for future in done:
            try:
                found[futures[future]] = future.result()
            except (EtcdopsError, OSError) as exc:
                log.info("certificate of %s not read: %s", futures[future], exc)
        return found

    return collect


def _certificate_names(served: Mapping[str, datetime], health: ClusterHealth) -> dict[str, datetime]:
    by_url = {url: m for m in health.members for url in m.client_urls}
    named: dict[str, datetime] = {}
    for endpoint, not_after in served.items():
        member = by_url.get(endpoint)
        named[f"{member.name} ({endpoint})" if member and member.name else endpoint] = not_after
    return named


def newest_verified_backup(store: BackupStore) -> Manifest | None:
    """The newest verified backup, reading manifests from the newest down (ids sort by time)."""
    ids = sorted((i for key in store.list() if (i := backup_id_from_manifest_key(key)) is not None), reverse=True)
    for backup_id in ids:
        manifest = Manifest.from_json(
            store.get_bytes(manifest_key(backup_id)), source=store.uri_for(manifest_key(backup_id))
        )
        if manifest.verified:
            return manifest
    return None


def _fold(state: StateStore, cluster: str, health: ClusterHealth, now: datetime, ec2: frozenset[int]) -> History:
    """Fold this round into the stored streaks with one conditional write (reload on conflict)."""
    for _ in range(_SAVE_ATTEMPTS):
        stored = state.load_streaks(cluster)
        history = update_history(History(stored.streaks, stored.quorum_loss), health, now, ec2_failures=ec2)
        try:
            state.save_streaks(cluster, history.streaks, history.quorum_loss, expected_version=stored.version, now=now)
        except ConflictError:
            continue
        return history
    raise ConflictError(cluster, stored.version)


def _member_named(health: ClusterHealth, name: str) -> MemberHealth | None:
    return next((m for m in health.members if m.name == name), None)


# ---- the round ----------------------------------------------------------------------------------------


def run_health_round(ctx: HealthContext, trigger: Trigger, now: datetime) -> HealthRoundResult:
    config = ctx.config
    cluster = config.name
    skip = trigger_skip(trigger, config)
    if skip is not None:
        log.info("skipped: %s", skip)
        return HealthRoundResult(cluster, trigger, skipped=skip)

    member_name: str | None = None
    if trigger.instance_id is not None:
        member_name = ctx.instances.member_of(trigger.instance_id)
        if member_name is None:
            skip = (
                f"{trigger.description}: the instance is not a member of cluster {cluster} "
                f"(not in health.member_instances, no {CLUSTER_TAG}={cluster} and {MEMBER_TAG} tags)"
            )
            log.info("skipped: %s", skip)
            return HealthRoundResult(cluster, trigger, skipped=skip)

    deadline = config.health.probe_deadline_seconds
    pool = ThreadPoolExecutor(max_workers=max(1, len(ctx.client.endpoints)), thread_name_prefix="cert")
    try:
        collect = _served_certificates(ctx.client.endpoints, config, ctx.certificate_timeout or deadline, pool)
        health = discount_alarm_reports(probe_cluster(ctx.client, deadline=deadline))
        served = _certificate_names(collect(), health)
    finally:
        # a frozen member's handshake ends by its own timeout; do not wait for it here
        pool.shutdown(wait=False, cancel_futures=True)

    ec2_failures: frozenset[int] = frozenset()
    if member_name is not None:
        member = _member_named(health, member_name)
        if member is None:
            skip = (
                f"{trigger.description}: it maps to member {member_name}, which is not in the membership of {cluster}"
            )
            log.info("skipped: %s", skip)
            return HealthRoundResult(cluster, trigger, skipped=skip, health=health)
        if trigger.instance_failed:
            ec2_failures = frozenset({member.id})

    newest: Manifest | None = None
    backup_unknown: str | None = None
    if ctx.backups is not None:
        try:
            newest = newest_verified_backup(ctx.backups)
        except EtcdopsError as exc:
            # the catalogue must not stop failure detection; the policy says it is unreadable (once, by SNS),
            # and the age metric is left out rather than reported as "no backup"
            backup_unknown = f"{type(exc).__name__}: {exc}"
            log.error("newest verified backup unknown: %s", backup_unknown)

    history = _fold(ctx.state, cluster, health, now, ec2_failures)
    history = replace(
        history,
        latest_backup=BackupRef(newest.id, newest.created_at) if newest else None,
        backup_unknown=backup_unknown,
        lock=ctx.state.get_lock(cluster),
    )
    certificates = dict(served)
    if config.tls is not None and config.tls.cert and not config.plaintext:
        try:
            from etcdops.pki import certificate_expiry

            certificates["client certificate (tls.cert)"] = certificate_expiry(Path(config.tls.cert))
        except EtcdopsError as exc:
            log.warning("client certificate expiry unknown: %s", exc)
    decision = decide(
        health,
        history,
        PolicyConfig.from_cluster_config(config),
        cluster=cluster,
        now=now,
        ec2_failures=ec2_failures,
        cert_not_after=certificates,
    )
    ctx.state.save_last_decision(cluster, decision, now)
    log.info("decision %s: %s", decision.action, decision.reason)

    terms = [m.raft_term for m in health.members if m.raft_term is not None]
    leader_changes = ctx.state.advance_raft_term(cluster, max(terms), now) if terms else 0
    metrics = compute_health_metrics(
        health,
        now=now,
        quota_bytes=config.health.quota_backend_bytes,
        leader_changes=leader_changes,
        ec2_failures=ec2_failures,
        served_certificates=served,
        newest_verified_backup_at=newest.created_at if newest else None,
    )
    publish_health_metrics(metrics, ctx.metrics)

    actions = act(ctx, decision, ec2_failures, now)
    return HealthRoundResult(cluster, trigger, None, health, decision, metrics, tuple(actions), ec2_failures)


# ---- acting -------------------------------------------------------------------------------------------


def _announce(ctx: HealthContext, key: str, kind: str, subject: str, message: str, now: datetime) -> str | None:
    """Publish once per incident ``key``; what was done, or None when it was announced before."""
    if ctx.notifier is None:
        log.warning("no notification topic configured; not announcing %s: %s", key, subject)
        return None
    if not ctx.state.record_incident(ctx.config.name, key, kind, now):
        return None
    ctx.notifier.publish(subject, message, {"cluster": ctx.config.name, "kind": kind, "incident": key})
    return f"notified {kind} {key}"


def act(ctx: HealthContext, decision: Decision, ec2_failures: frozenset[int], now: datetime) -> list[str]:
    """Carry out ``decision``; the list says what was done this time."""
    cluster = decision.cluster
    done: list[str] = []
    if decision.action is Action.REPLACE_MEMBER and decision.incident_id:
        document = replace_input(decision, ec2_failures)
        member = decision.target_member_name or document["member_id"]
        if ctx.replace is None:
            note = _announce(
                ctx,
                decision.incident_id,
                "replace-needed",
                f"etcdops: member {member} of {cluster} must be replaced (no runbook configured)",
                f"{decision.reason}\n\nREPLACE_STATE_MACHINE_ARN is not set, so nothing was started. "
                f"Start ReplaceMember by hand with the execution name {decision.incident_id} and this input:\n"
                f"{json.dumps(document, indent=2, sort_keys=True)}\n",
                now,
            )
            done += [note] if note else []
        else:
            outcome = ctx.replace.start(decision.incident_id, document)
            done.append(
                f"started ReplaceMember {outcome.name}"
                if outcome.started
                else f"ReplaceMember {outcome.name} already started"
            )
            approval = " (waiting for approval)" if decision.requires_approval else ""
            note = _announce(
                ctx,
                decision.incident_id,
                "replace",
                f"etcdops: replacing member {member} of {cluster}{approval}",
                f"{decision.reason}\n\nReplaceMember execution: {outcome.execution_arn or outcome.name}\n"
                f"Input:\n{json.dumps(document, indent=2, sort_keys=True)}\n",
                now,
            )
            done += [note] if note else []
    elif decision.action is Action.ESCALATE_QUORUM_LOSS and decision.incident_id:
        restore = json.dumps(dict(decision.restore_input or {}), sort_keys=True)
        backup = decision.backup_id or "NONE (there is no verified backup)"
        note = _announce(
            ctx,
            decision.incident_id,
            "quorum-loss",
            f"etcdops: QUORUM LOST on cluster {cluster} - a restore needs a human",
            f"{decision.reason}\n\nLatest verified backup: {backup}\nRestoreCluster input: {restore}\n\n"
            "No membership change was made. Start RestoreCluster with exactly this input once you decide "
            "to restore; it waits for your approval before it changes anything.\n",
            now,
        )
        done += [note] if note else []
    for notification in decision.notifications:
        note = _announce(
            ctx,
            notification.key,
            str(notification.kind),
            f"etcdops: {notification.kind} on cluster {cluster}",
            notification.message,
            now,
        )
        done += [note] if note else []
    return done


# ---- the Lambda side ----------------------------------------------------------------------------------


def health_job(
    settings: HealthSettings,
    aws: HealthAwsClients,
    metrics: HealthMetricsSink,
    notifier: Notifier | None,
    state_store: StateStore,
    trigger: Trigger,
    now: datetime | None = None,
) -> dict[str, Any]:
    """One HealthCheck invocation; an unreadable configuration raises :class:`ConfigError`."""
    config = load_cluster_config(aws.ssm, settings.config_parameter)
    add_dimension = getattr(metrics, "add_dimension", None)
    if add_dimension is not None:
        add_dimension("cluster", config.name)
    skip = trigger_skip(trigger, config)
    if skip is not None:
        log.info("skipped: %s", skip)
        return HealthRoundResult(config.name, trigger, skipped=skip).to_dict()
    starter = (
        StepFunctionsReplaceStarter(aws.stepfunctions, settings.replace_state_machine_arn)
        if settings.replace_state_machine_arn
        else None
    )
    backups = open_store(config.backup.destination, s3_client=aws.s3) if config.backup else None
    with tempfile.TemporaryDirectory(prefix="etcdops-tls-") as tls_dir:
        config = materialize_tls(config, aws.secrets, Path(tls_dir))
        deadline = config.health.probe_deadline_seconds
        with client_for(config, timeout=deadline) as client:
            ctx = HealthContext(
                config=config,
                client=client,
                state=state_store,
                metrics=metrics,
                notifier=notifier,
                replace=starter,
                instances=InstanceDirectory(config, aws.ec2),
                backups=backups,
            )
            result = run_health_round(ctx, trigger, now or datetime.now(UTC))
    return result.to_dict()


__all__ = [
    "HealthAwsClients",
    "HealthContext",
    "HealthRoundResult",
    "HealthSettings",
    "InstanceDirectory",
    "RecordingReplaceStarter",
    "ReplaceStarter",
    "StartOutcome",
    "StepFunctionsReplaceStarter",
    "Trigger",
    "TriggerKind",
    "act",
    "discount_alarm_reports",
    "health_job",
    "newest_verified_backup",
    "replace_input",
    "run_health_round",
    "trigger_skip",
]
