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

:func:`health_job` is the Lambda side: configuration from SSM, TLS from Secrets Manager, clients
passed in. Nothing here reads the environment (:class:`etcdops.domain.settings.HealthSettings` does).
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from etcdops.adapters.aws import ClusterNotConfiguredError, Notifier, load_cluster_config, materialize_tls
from etcdops.adapters.awserrors import aws_error, aws_error_code
from etcdops.adapters.backup.store import BackupStore, open_store
from etcdops.adapters.etcd.client import EtcdClient
from etcdops.adapters.etcd.connect import client_for, tls_files
from etcdops.adapters.etcd.membership import merge_endpoints, read_membership
from etcdops.adapters.healthmetrics import (
    HealthMetrics,
    HealthMetricsSink,
    compute_health_metrics,
    publish_health_metrics,
)
from etcdops.adapters.state import ConflictError, Lock, Repair, RepairRecord, StateStore
from etcdops.app.backup.catalogue import newest_verified
from etcdops.app.probe import probe_cluster
from etcdops.domain import repair_messages
from etcdops.domain.backup.manifest import Manifest, cluster_id_text
from etcdops.domain.config import ClusterConfig
from etcdops.domain.errors import EtcdopsError
from etcdops.domain.health import ClusterHealth, MemberHealth
from etcdops.domain.policy import Action, BackupRef, Decision, History, PolicyConfig, decide, update_history
from etcdops.domain.repair import Attempt, AttemptStatus, RepairAction, attempt_execution, decide_repair
from etcdops.domain.settings import HealthSettings

log = logging.getLogger("etcdops.app.healthcheck")

CLUSTER_TAG = "etcdops:cluster"
MEMBER_TAG = "etcdops:member"
_SAVE_ATTEMPTS = 8
# etcd reports each active alarm in Status.errors as "memberID:<decimal id> alarm:<NAME> "
_ALARM_REPORT = re.compile(r"^memberID:\d+ alarm:[A-Z_]+\s*$")


# ---- settings and clients -----------------------------------------------------------------------------


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


@dataclass(frozen=True)
class ExecutionState:
    """A ReplaceMember execution as Step Functions reports it."""

    status: AttemptStatus
    ended_at: datetime | None = None
    error: str | None = None
    cause: str | None = None


class ReplaceStarter(Protocol):
    def start(self, name: str, document: Mapping[str, Any]) -> StartOutcome: ...

    def describe(self, name: str) -> ExecutionState | None:
        """The execution named ``name`` (None: there is none)."""
        ...


_SFN_STATUS = {
    "RUNNING": AttemptStatus.RUNNING,
    "PENDING_REDRIVE": AttemptStatus.RUNNING,
    "SUCCEEDED": AttemptStatus.SUCCEEDED,
    "FAILED": AttemptStatus.FAILED,
    "TIMED_OUT": AttemptStatus.TIMED_OUT,
    "ABORTED": AttemptStatus.ABORTED,
}


class StepFunctionsReplaceStarter:
    """Starts the ReplaceMember state machine; the execution name makes duplicates harmless."""

    def __init__(self, stepfunctions: Any, state_machine_arn: str) -> None:
        self.sfn = stepfunctions
        self.state_machine_arn = state_machine_arn

    def _execution_arn(self, name: str) -> str:
        return f"{self.state_machine_arn.replace(':stateMachine:', ':execution:', 1)}:{name}"

    def describe(self, name: str) -> ExecutionState | None:
        """DescribeExecution: the real status of an attempt (one that crashed never ran its failure step)."""
        try:
            found = self.sfn.describe_execution(executionArn=self._execution_arn(name))
        except ClientError as exc:
            if aws_error_code(exc) == "ExecutionDoesNotExist":
                return None
            raise aws_error(f"describing execution {name}", exc) from exc
        except BotoCoreError as exc:
            raise aws_error(f"describing execution {name}", exc) from exc
        status = _SFN_STATUS.get(str(found.get("status")), AttemptStatus.FAILED)
        stopped = found.get("stopDate")
        ended = stopped if isinstance(stopped, datetime) else None
        return ExecutionState(status, ended, found.get("error"), found.get("cause"))

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
    """Remembers what it was asked to start, once per name (the local health loop, tests); what
    happened to an execution is what ``outcomes`` says (RUNNING once started, by default)."""

    def __init__(self) -> None:
        self.started: dict[str, dict[str, Any]] = {}
        self.outcomes: dict[str, ExecutionState] = {}
        self._lock = threading.Lock()

    def start(self, name: str, document: Mapping[str, Any]) -> StartOutcome:
        with self._lock:
            if name in self.started:
                # as Step Functions: the same input while it runs is answered as its own start was
                state = self.outcomes.get(name, ExecutionState(AttemptStatus.RUNNING))
                same = self.started[name] == dict(document)
                return StartOutcome(name, same and state.status is AttemptStatus.RUNNING)
            self.started[name] = dict(document)
            return StartOutcome(name, True)

    def describe(self, name: str) -> ExecutionState | None:
        if name not in self.started:
            return None
        return self.outcomes.get(name, ExecutionState(AttemptStatus.RUNNING))


def replace_input(
    decision: Decision,
    ec2_failures: frozenset[int],
    *,
    attempt: int = 1,
    max_attempts: int = 1,
    original_voters: int | None = None,
) -> dict[str, Any]:
    """The ReplaceMember execution input for attempt ``attempt`` of a REPLACE_MEMBER decision."""
    if decision.action is not Action.REPLACE_MEMBER or decision.target_member_id is None:
        raise ValueError(f"not a replacement decision: {decision.action}")
    document: dict[str, Any] = {
        "cluster": decision.cluster,
        "member_id": f"{decision.target_member_id:x}",
        "member_name": decision.target_member_name or "",
        "member_label": decision.target_member_label or f"{decision.target_member_id:x}",
        "incident_id": decision.incident_id,
        "attempt": attempt,
        "max_attempts": max_attempts,
        "reason": decision.reason,
        "requires_approval": decision.requires_approval,
        "ec2_failed": decision.target_member_id in ec2_failures,
    }
    if original_voters:
        document["original_voters"] = original_voters  # a retry restores the full size, not the size it finds
    return document


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
    from etcdops.adapters.pki import served_certificate_expiry

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
    started = time.monotonic()
    # invariant 10: the members come from the member list (the seeds only have to reach one of them)
    membership = read_membership(ctx.client, deadline / 2)
    urls = membership.client_urls or list(ctx.client.endpoints)
    pool = ThreadPoolExecutor(max_workers=max(1, len(urls)), thread_name_prefix="cert")
    try:
        collect = _served_certificates(urls, config, ctx.certificate_timeout or deadline, pool)
        remaining = max(0.05, deadline - (time.monotonic() - started))
        health = discount_alarm_reports(probe_cluster(ctx.client, deadline=remaining, membership=membership))
        served = _certificate_names(collect(), health)
    finally:
        # a frozen member's handshake ends by its own timeout; do not wait for it here
        pool.shutdown(wait=False, cancel_futures=True)
    if membership.members is not None and membership.client_urls != ctx.state.load_endpoints(cluster):
        ctx.state.save_endpoints(cluster, membership.client_urls, now)  # the next round's seeds

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
            # invariant 11: only a backup of the incarnation that answered counts (none when nobody did)
            newest = newest_verified(ctx.backups, cluster_id_text(health.cluster_id))
        except EtcdopsError as exc:
            # the catalogue must not stop failure detection; the policy says it is unreadable (once, by SNS),
            # and the age metric is left out rather than reported as "no backup"
            backup_unknown = f"{type(exc).__name__}: {exc}"
            log.error("newest verified backup unknown: %s", backup_unknown)

    history = _fold(ctx.state, cluster, health, now, ec2_failures)
    lock, released = release_abandoned_lock(ctx, now)
    history = replace(
        history,
        latest_backup=BackupRef(newest.id, newest.created_at) if newest else None,
        backup_unknown=backup_unknown,
        lock=lock,
    )
    certificates = dict(served)
    if config.tls is not None and config.tls.cert and not config.plaintext:
        try:
            from etcdops.adapters.pki import certificate_expiry

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
    log_decision(decision, trigger)

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

    actions = [*released, *act(ctx, decision, ec2_failures, now, health)]
    return HealthRoundResult(cluster, trigger, None, health, decision, metrics, tuple(actions), ec2_failures)


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


def act(
    ctx: HealthContext,
    decision: Decision,
    ec2_failures: frozenset[int],
    now: datetime,
    health: ClusterHealth | None = None,
) -> list[str]:
    """Carry out ``decision``; the list says what was done this time."""
    cluster = decision.cluster
    done: list[str] = []
    health_settings = ctx.config.health
    if decision.action is Action.REPLACE_MEMBER and decision.incident_id:
        member = decision.target_member_name or decision.target_member_label or f"{decision.target_member_id:x}"
        if ctx.replace is None:
            document = replace_input(decision, ec2_failures)
            name = attempt_execution(decision.incident_id, 1)
            note = _announce(
                ctx,
                decision.incident_id,
                "replace-needed",
                f"etcdops: member {member} of {cluster} must be replaced (no runbook configured)",
                f"{decision.reason}\n\nREPLACE_STATE_MACHINE_ARN is not set, so nothing was started. "
                f"Start ReplaceMember by hand with the execution name {name} and this input:\n"
                f"{json.dumps(document, indent=2, sort_keys=True)}\n",
                now,
            )
            done += [note] if note else []
        else:
            voters = len(health.voters) if health is not None else None

            def document_for(number: int) -> dict[str, Any]:
                return replace_input(
                    decision,
                    ec2_failures,
                    attempt=number,
                    max_attempts=health_settings.max_repair_attempts,
                    original_voters=voters,
                )

            done += _repair(ctx, decision.incident_id, member, decision, document_for, health, now)
    elif decision.action in (Action.NONE, Action.NOTIFY) and ctx.replace is not None and health is not None:
        done += _continue_repairs(ctx, health, now)
    elif decision.action is Action.ESCALATE_QUORUM_LOSS and decision.incident_id:
        restore = json.dumps(dict(decision.restore_input or {}), sort_keys=True)
        backup = decision.backup_id or "NONE (no verified backup of this cluster incarnation; see above)"
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


# ---- repair attempts (invariant 12) ----------------------------------------------------------------


def _attempts(ctx: HealthContext, repair: Repair) -> list[Attempt]:
    """The recorded attempts with their real status: as the attempt itself recorded it when it
    ended, else as Step Functions reports it (and then recorded, so it is asked once)."""
    cluster = ctx.config.name
    attempts: list[Attempt] = []
    for record in repair.attempts:
        if record.outcome is not None:
            status = AttemptStatus(record.outcome)
            attempts.append(_attempt(record, status, record.ended_at, record.error, record.cause))
            continue
        execution = ctx.replace.describe(record.execution) if ctx.replace is not None else None
        if execution is None:
            attempts.append(_attempt(record, AttemptStatus.NOT_STARTED))
        elif execution.status.ended:
            ended = execution.ended_at or record.recorded_at
            error, cause = execution.error, execution.cause
            ctx.state.finish_repair_attempt(
                cluster, repair.incident, record.number, record.execution, str(execution.status), error, cause, ended
            )
            attempts.append(_attempt(record, execution.status, ended, error, cause))
        else:
            attempts.append(_attempt(record, execution.status))
    return attempts


def _attempt(
    record: RepairRecord,
    status: AttemptStatus,
    ended_at: datetime | None = None,
    error: str | None = None,
    cause: str | None = None,
) -> Attempt:
    return Attempt(record.number, record.execution, record.recorded_at, status, ended_at, error, cause)


def _repair(
    ctx: HealthContext,
    incident: str,
    member: str,
    decision: Decision,
    document_for: Callable[[int], dict[str, Any]],
    health: ClusterHealth | None,
    now: datetime,
) -> list[str]:
    """Start, resume, wait for or escalate the repair of ``incident``, as :func:`decide_repair` says.

    Exactly one execution per attempt: the attempt is recorded with a conditional write first, and
    only the round that recorded it starts it (a round that dies in between leaves it to the next
    round, which starts it under the same name)."""
    assert ctx.replace is not None
    cluster = ctx.config.name
    settings = ctx.config.health
    repair = ctx.state.load_repair(cluster, incident)
    attempts = _attempts(ctx, repair)
    plan = decide_repair(
        incident,
        attempts,
        now=now,
        max_attempts=settings.max_repair_attempts,
        backoff_seconds=settings.repair_backoff_seconds,
        escalated=repair.escalated_at is not None,
    )
    log.info("repair %s: %s", plan.action, plan.reason)
    done: list[str] = []
    if plan.action is RepairAction.START and plan.attempt is not None and plan.execution is not None:
        document = document_for(plan.attempt)
        record = RepairRecord(incident, plan.attempt, plan.execution, now, json.dumps(document, sort_keys=True))
        if not ctx.state.record_repair_attempt(cluster, record):
            return [f"attempt {plan.attempt} of {incident} was recorded by a concurrent round"]
        outcome = ctx.replace.start(plan.execution, document)
        done.append(f"started ReplaceMember {outcome.name}")  # its record says so, whoever's call made it (_resumed)
        subject, body = repair_messages.attempt_started(
            cluster,
            member,
            plan.attempt,
            settings.max_repair_attempts,
            approval=decision.requires_approval,
            why=plan.reason if plan.attempt > 1 else decision.reason,
            execution=outcome.execution_arn or outcome.name,
            document=document,
        )
        note = _announce(ctx, plan.execution, "replace", subject, body, now)
        done += [note] if note else []
    elif plan.action is RepairAction.RESUME and plan.execution is not None:
        document = json.loads(repair.attempts[-1].document)
        done.append(_resumed(ctx.replace.start(plan.execution, document)))
    elif plan.action is RepairAction.ESCALATE:
        if ctx.state.escalate_repair(cluster, incident, now):
            ref = decision.target_member_name or (f"{decision.target_member_id:x}" if decision.target_member_id else "")
            subject, body = repair_messages.escalation(
                cluster, member, ref or member, incident, attempts, health, decision.reason
            )
            if ctx.notifier is None:
                log.warning("no notification topic configured; not sending: %s", subject)
            else:
                attributes = {"cluster": cluster, "kind": "repair-escalated", "incident": incident}
                ctx.notifier.publish(subject, body, attributes)
            done.append(f"escalated the repair of {incident} after {len(attempts)} attempts")
    elif plan.action is RepairAction.WAIT:
        done.append(plan.reason)
    return done


def _resumed(outcome: StartOutcome) -> str:
    """What a round that started another round's recorded attempt can say. Step Functions answers a
    start with the name and input of a RUNNING execution as it answered the call that made it, so
    when the recording round is alive and started it meanwhile, both calls succeed: the attempt's
    record, not the answer, says who started it (the recording round)."""
    if outcome.started:
        return f"resumed ReplaceMember {outcome.name}: recorded by another round, not running when this round looked"
    return f"ReplaceMember {outcome.name} already started"


def _continue_repairs(ctx: HealthContext, health: ClusterHealth, now: datetime) -> list[str]:
    """A repair that failed after it removed the member leaves a healthy but smaller cluster, which
    no failure streak points at any more: it is carried on here (retried with backoff, then
    escalated) until the cluster has its original number of voters again."""
    if not health.has_quorum:
        return []
    done: list[str] = []
    for repair in ctx.state.load_repairs(ctx.config.name):
        if repair.escalated_at is not None or not repair.attempts:
            continue
        last = repair.attempts[-1]
        document = json.loads(last.document)
        try:
            target = int(str(document.get("member_id")), 16)
        except ValueError:
            continue
        wanted = int(document.get("original_voters") or 0)
        if last.outcome == str(AttemptStatus.SUCCEEDED) or health.member(target) is not None:
            continue  # done, or the member is back in the membership (its own streak rules it)
        if len(health.voters) >= wanted:
            continue  # the cluster is whole again (someone else added a member)
        member = str(document.get("member_label") or document.get("member_name") or document.get("member_id"))
        why = (
            f"The repair of member {member} of cluster {ctx.config.name} removed it but did not finish: "
            f"{len(health.voters)} of {wanted} voting members. {document.get('reason', '')}"
        )
        decision = Decision(
            action=Action.REPLACE_MEMBER,
            reason=why,
            cluster=ctx.config.name,
            target_member_id=target,
            target_member_name=str(document.get("member_name") or ""),
            target_member_label=member,
            incident_id=repair.incident,
            requires_approval=bool(document.get("requires_approval")),
        )

        def document_for(number: int, document: dict[str, Any] = document, why: str = why) -> dict[str, Any]:
            return {**document, "attempt": number, "reason": why}

        done += _repair(ctx, repair.incident, member, decision, document_for, health, now)
    return done


# ---- the Lambda side ----------------------------------------------------------------------------------

NOT_CONFIGURED_INCIDENT = "not-configured-yet"


def _not_configured(
    settings: HealthSettings,
    notifier: Notifier | None,
    state_store: StateStore,
    exc: ClusterNotConfiguredError,
    now: datetime,
) -> dict[str, Any]:
    cluster = settings.cluster_name or "unconfigured"
    log.warning("not configured yet: %s", exc)
    announced = False
    if notifier is not None and state_store.record_incident(cluster, NOT_CONFIGURED_INCIDENT, "not-configured", now):
        notifier.publish(
            f"etcdops: cluster {cluster} is not configured yet",
            f"The etcdops stack for cluster {cluster} runs, but its configuration does not exist yet:\n{exc}\n\n"
            "Until it does, health checks and backups do nothing but log this, and no alarm fires. "
            "See README, Deploying to AWS, for the configuration document and the TLS secrets.",
            {"cluster": cluster, "kind": "not-configured"},
        )
        announced = True
    return {"cluster": cluster, "configured": False, "skipped": f"not configured yet: {exc}", "announced": announced}


def health_job(
    settings: HealthSettings,
    aws: HealthAwsClients,
    metrics: HealthMetricsSink,
    notifier: Notifier | None,
    state_store: StateStore,
    trigger: Trigger,
    now: datetime | None = None,
) -> dict[str, Any]:
    """One HealthCheck invocation; an unreadable configuration raises :class:`ConfigError`.

    Before the configuration exists it does nothing but say so: in the log each time, over SNS once
    (per incident retention), so a fresh stack is quiet until it is configured."""
    try:
        config = load_cluster_config(aws.ssm, settings.config_parameter, settings.cluster_name)
    except ClusterNotConfiguredError as exc:
        return _not_configured(settings, notifier, state_store, exc, now or datetime.now(UTC))
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
        with client_for(config, endpoints=round_seeds(config, state_store), timeout=deadline) as client:
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
    "ExecutionState",
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
    "release_abandoned_lock",
    "replace_input",
    "round_seeds",
    "run_health_round",
    "trigger_skip",
]
