"""The HealthCheck function's wiring: its AWS clients, the configuration from SSM, TLS from Secrets
Manager, and one round (etcdops.app.healthcheck) with the adapters it needs; before the configuration
exists, a quiet "not configured yet"."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from etcdops.adapters.aws import ClusterNotConfiguredError, Notifier, load_cluster_config, materialize_tls
from etcdops.adapters.backup.store import open_store
from etcdops.adapters.etcd.connect import client_for
from etcdops.adapters.health_aws import InstanceDirectory, StepFunctionsReplaceStarter
from etcdops.adapters.healthmetrics import HealthMetricsSink
from etcdops.adapters.state import StateStore
from etcdops.app.healthcheck import (
    HealthContext,
    HealthRoundResult,
    Trigger,
    round_seeds,
    run_health_round,
    trigger_skip,
)
from etcdops.entrypoints.settings import HealthSettings

__all__ = ["NOT_CONFIGURED_INCIDENT", "HealthAwsClients", "health_job"]

log = logging.getLogger("etcdops.entrypoints.health_check")


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
                starvation=settings.starvation(),
            )
            result = run_health_round(ctx, trigger, now or datetime.now(UTC))
    return result.to_dict()
