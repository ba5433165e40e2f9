"""The HealthCheck function's wiring: its AWS clients, the configuration from SSM, TLS from Secrets
Manager, and one round (etcdops.app.healthcheck) with the adapters it needs; before the configuration
exists, a quiet "not configured yet"."""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from etcdops.adapters.aws import ClusterNotConfiguredError, Notifier, cluster_session, materialize_tls
from etcdops.adapters.backup.store import open_store
from etcdops.adapters.etcd.connect import client_for
from etcdops.adapters.fleet_state import FleetStore
from etcdops.adapters.health_aws import InstanceDirectory, StepFunctionsReplaceStarter
from etcdops.adapters.healthmetrics import HealthMetricsSink
from etcdops.adapters.registry import ClusterConfigs
from etcdops.adapters.state import StateStore
from etcdops.adapters.state_delta import DynamoDeltaChainStore
from etcdops.adapters.state_dynamodb import DynamoStateStore
from etcdops.app.fleet import FleetGate
from etcdops.app.healthcheck import (
    HealthContext,
    HealthRoundResult,
    Trigger,
    TriggerKind,
    round_seeds,
    run_health_round,
    trigger_skip,
)
from etcdops.domain.config import ClusterConfig
from etcdops.domain.errors import EtcdopsError, NotFoundError
from etcdops.entrypoints.fanout import Invoke, invoke_each, self_invoker
from etcdops.entrypoints.health_triggers import route_instance_event
from etcdops.entrypoints.settings import HealthSettings

__all__ = ["NOT_CONFIGURED_INCIDENT", "HealthAwsClients", "fan_out", "health_job", "round_invoker"]

log = logging.getLogger("etcdops.entrypoints.health_check")


@dataclass(frozen=True)
class HealthAwsClients:
    ssm: Any
    secrets: Any
    s3: Any
    ec2: Any
    stepfunctions: Any
    session: Any = None  # makes a cluster's clients when its configuration names aws.role_arn

    @classmethod
    def from_session(cls, session: Any) -> HealthAwsClients:
        return cls(
            ssm=session.client("ssm"),
            secrets=session.client("secretsmanager"),
            s3=session.client("s3"),
            ec2=session.client("ec2"),
            stepfunctions=session.client("stepfunctions"),
            session=session,
        )

    def for_cluster(self, config: ClusterConfig) -> HealthAwsClients:
        """These clients with the cluster's Secrets Manager and EC2 (its aws.role_arn's, when it names one)."""
        if config.aws is None or self.session is None:
            return self
        cluster = cluster_session(self.session, config, "HealthCheck")
        return dataclasses.replace(self, secrets=cluster.client("secretsmanager"), ec2=cluster.client("ec2"))


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


def _gate(
    settings: HealthSettings,
    store: FleetStore | None,
    notifier: Notifier | None,
    starter: StepFunctionsReplaceStarter | None,
) -> FleetGate | None:
    if store is None:
        return None

    def ended(execution: str) -> bool:
        state = starter.describe(execution) if starter is not None else None
        return state is not None and state.status.ended

    return FleetGate(store, settings.fleet_limits, notifier, ended)


def fan_out(
    configs: ClusterConfigs, store: FleetStore | None, invoke: Callable[[str], None], now: datetime
) -> list[str]:
    """One asynchronous HealthCheck invocation per registered cluster (each its own round, in
    parallel, none waiting for another); the fleet's members saved for the brake (invariant 15)."""
    names = configs.registry.names()
    if not names:
        return []
    if store is not None:
        store.save_members(sorted({*names, *([configs.default_name] if configs.default_name else [])}), now)
    invoke_each([name for name in names if not configs.is_default(name)], invoke)
    return names


def round_invoker(lambda_client: Any, function_arn: str, event: Mapping[str, Any]) -> Invoke:
    """Invoke this function asynchronously with ``event`` for one named cluster (the fan-out's call)."""
    return self_invoker(lambda_client, function_arn, event, "health round")


def health_job(
    settings: HealthSettings,
    aws: HealthAwsClients,
    metrics: HealthMetricsSink,
    notifier: Notifier | None,
    state_store: StateStore,
    trigger: Trigger,
    now: datetime | None = None,
    *,
    fleet_store: FleetStore | None = None,
    invoke_round: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """One HealthCheck invocation; an unreadable configuration raises :class:`ConfigError`.

    The cluster is the one the trigger names (a schedule's input, an alarm's dimension), else the
    stack's default cluster. A schedule that names none first fans out: one asynchronous round per
    registered cluster (``invoke_round``). Before the default configuration exists it does nothing
    but say so: in the log each time, over SNS once (per incident retention), so a fresh stack is
    quiet until it is configured."""
    now = now or datetime.now(UTC)
    configs = ClusterConfigs(aws.ssm, settings.config_parameter, settings.cluster_name, settings.registry_path)
    fanned: list[str] = []
    fan_out_failed: EtcdopsError | None = None
    if trigger.kind is TriggerKind.SCHEDULE and trigger.cluster is None and invoke_round is not None:
        try:
            fanned = fan_out(configs, fleet_store, invoke_round, now)
        except EtcdopsError as exc:  # the default cluster's round still runs; the invocation fails after it
            log.error("fan-out failed: %s", exc)
            fan_out_failed = exc
    try:
        trigger = route_instance_event(trigger, configs, aws.ec2)
        if trigger.instance_id is not None and trigger.ignore is not None:  # an instance of no cluster of ours
            log.info("skipped: %s", trigger.ignore)
            trigger_seen = {"kind": str(trigger.kind), "description": trigger.description}
            skipped: dict[str, Any] = {"skipped": trigger.ignore, "decision": None, "actions": []}
            return {"cluster": None, "trigger": trigger_seen, **skipped}
        config = configs.load(trigger.cluster)
    except NotFoundError:  # an alarm of a cluster this deployment does not watch
        config = configs.load(None)
    except ClusterNotConfiguredError as exc:
        if fan_out_failed is not None:
            raise fan_out_failed from None
        if fanned:  # a fleet without a default cluster
            return {"cluster": None, "configured": False, "fanned_out": fanned, "skipped": "no default cluster"}
        return _not_configured(settings, notifier, state_store, exc, now)
    result = _round(settings, aws, metrics, notifier, state_store, trigger, config, fleet_store, now)
    if fan_out_failed is not None:
        raise fan_out_failed
    return {**result, "fanned_out": fanned} if fanned else result


def _round(
    settings: HealthSettings,
    aws: HealthAwsClients,
    metrics: HealthMetricsSink,
    notifier: Notifier | None,
    state_store: StateStore,
    trigger: Trigger,
    config: ClusterConfig,
    fleet_store: FleetStore | None,
    now: datetime,
) -> dict[str, Any]:
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
    aws = aws.for_cluster(config)
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
                starvation=settings.starvation(),
                fleet=_gate(settings, fleet_store, notifier, starter),
                rotate=StepFunctionsReplaceStarter(aws.stepfunctions, settings.rotate_state_machine_arn)
                if settings.rotate_state_machine_arn
                else None,
                chains=DynamoDeltaChainStore(state_store) if isinstance(state_store, DynamoStateStore) else None,
            )
            result = run_health_round(ctx, trigger, now)
    return result.to_dict()
