"""Scheduled jobs as the Lambda functions run them: backup and backup verification, and the notice
when one of them has failed for good.

A job loads the cluster's configuration, does its work through the domain modules, records
metrics, and on failure counts it and raises, so the invocation fails visibly. It sends no mail
itself: Lambda retries the invocation (the template says how often) and, once it has failed for
good, calls the OnFailure destination, FailureNotice, which says so once (:func:`failure_notice_job`)
- a timeout or a crash included, which the job could not have said itself.
Before the configuration exists (a stack deployed, not configured yet) a job does nothing but say so.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from etcdops.adapters.aws import ClusterNotConfiguredError, Notifier, cluster_session, materialize_tls
from etcdops.adapters.backup.target import open_backup_target
from etcdops.adapters.compute.factory import open_compute
from etcdops.adapters.etcd.connect import client_for
from etcdops.adapters.registry import ClusterConfigs, ClusterRegistry
from etcdops.adapters.state_delta import DynamoDeltaChainStore
from etcdops.adapters.state_dynamodb import DynamoStateStore
from etcdops.app.backup.catalogue import read_catalogue
from etcdops.app.backup.delta import chain_warnings, verify_delta_chains
from etcdops.app.backup.delta_job import run_delta_backup
from etcdops.app.backup.job import MetricsSink, run_backup
from etcdops.app.backup.verify import verify_backup
from etcdops.app.backup.volume import ProviderSnapshotResult, run_volume_backup
from etcdops.app.probe import probe_cluster
from etcdops.domain.config import ClusterConfig
from etcdops.domain.errors import EtcdopsError
from etcdops.domain.job_messages import job_failed
from etcdops.entrypoints.events import FailedInvocationRecord
from etcdops.entrypoints.fanout import Invoke, invoke_each
from etcdops.entrypoints.settings import DeltaJobSettings, JobSettings

if TYPE_CHECKING:
    from etcdops.adapters.backup.crypto import KeyProvider
    from etcdops.adapters.backup.store import BackupStore
    from etcdops.adapters.etcd.client import EtcdClient
    from etcdops.domain.health import ClusterHealth

COUNT, BYTES, SECONDS = "Count", "Bytes", "Seconds"
log = logging.getLogger("etcdops.entrypoints.jobs")


@dataclass(frozen=True)
class AwsClients:
    ssm: Any
    secrets: Any
    s3: Any
    kms: Any
    session: Any = None  # makes the compute provider's clients when a volume backup needs them

    def for_cluster(self, config: ClusterConfig, function: str) -> AwsClients:
        """These clients with the cluster's Secrets Manager and compute session (its aws.role_arn's, when it
        names one); SSM (the registry), S3 and KMS stay the stack's."""
        if config.aws is None or self.session is None:
            return self
        cluster = cluster_session(self.session, config, function)
        return dataclasses.replace(self, secrets=cluster.client("secretsmanager"), session=cluster)

    @classmethod
    def from_session(cls, session: Any) -> AwsClients:
        return cls(
            ssm=session.client("ssm"),
            secrets=session.client("secretsmanager"),
            s3=session.client("s3"),
            kms=session.client("kms"),
            session=session,
        )


def not_configured(job: str, exc: ClusterNotConfiguredError) -> dict[str, Any]:
    """What a scheduled job does before the cluster configuration exists: nothing, and says so."""
    log.warning("%s: not configured yet: %s", job, exc)
    return {"configured": False, "skipped": f"not configured yet: {exc}"}


def load_job_config(settings: JobSettings, aws: AwsClients, cluster: str | None) -> ClusterConfig:
    """The configuration of ``cluster`` (the event's; none: the stack's default cluster), validated."""
    return ClusterConfigs(aws.ssm, settings.config_parameter, settings.cluster_name, settings.registry_path).load(
        cluster
    )


class LiveCluster(NamedTuple):
    """A cluster opened for a backup job: its configuration with the TLS files written out, a client, a
    first probe and its backup target (in the order the ``run_*backup`` functions take them)."""

    config: ClusterConfig
    client: EtcdClient
    health: ClusterHealth
    store: BackupStore
    keyring: KeyProvider


@contextmanager
def live_cluster(config: ClusterConfig, aws: AwsClients) -> Iterator[LiveCluster]:
    """The cluster of ``config`` opened (:class:`LiveCluster`); its TLS files are removed on leaving.
    ``aws`` are the clients for the cluster (:meth:`AwsClients.for_cluster`)."""
    with tempfile.TemporaryDirectory(prefix="etcdops-tls-") as tls_dir:
        config = materialize_tls(config, aws.secrets, Path(tls_dir))
        store, keyring = open_backup_target(config, s3_client=aws.s3, kms_client=aws.kms)
        with client_for(config) as client:
            health = probe_cluster(client, deadline=config.health.probe_deadline_seconds)
            yield LiveCluster(config, client, health, store, keyring)


def backup_job(
    settings: JobSettings, aws: AwsClients, metrics: MetricsSink, cluster: str | None = None, *, kind: str = "full"
) -> dict[str, Any]:
    """One backup of ``kind``: ``full`` (a snapshot stream) or ``volume`` (a follower's data copied by the
    compute provider while it is held still; its metrics are ``VolumeBackup*``)."""
    try:
        config = load_job_config(settings, aws, cluster)
    except ClusterNotConfiguredError as exc:
        return not_configured("backup", exc)
    metrics.add_dimension("cluster", config.name)
    prefix = "VolumeBackup" if kind == "volume" else "Backup"
    try:
        aws = aws.for_cluster(config, "Backup")
        with live_cluster(config, aws) as live:
            if kind == "volume":
                compute = open_compute(live.config, session=aws.session, stack_name=settings.stack_name)
                taken = run_volume_backup(*live, compute)
            else:
                taken = run_backup(*live)
    except Exception:  # every failure counts; FailureNotice says it once the invocation has failed for good
        metrics.add_metric(f"{prefix}Failed", COUNT, 1)
        raise
    metrics.add_metric(f"{prefix}Succeeded", COUNT, 1)
    metrics.add_metric(f"{prefix}Failed", COUNT, 0)
    if isinstance(taken, ProviderSnapshotResult):  # the provider keeps the data (EBS snapshots)
        record = taken.record
        return {"backup_id": record.id, "kind": "volume", "snapshot_ids": list(record.volume.snapshot_ids),
                "revision_observed": record.volume.revision_observed, "pruned": taken.pruned}  # fmt: skip
    manifest = taken.manifest
    for warning in taken.warnings:  # the backup is stored and verified; retention met something it skipped
        log.warning("backup %s: %s", manifest.id, warning)
    metrics.add_metric(f"{prefix}Bytes", BYTES, manifest.size_stored)
    metrics.add_metric(f"{prefix}Duration", SECONDS, taken.seconds)
    if kind == "full":
        metrics.add_metric("NewestVerifiedBackupAge", SECONDS, 0)
    return {
        "backup_id": manifest.id,
        "kind": manifest.kind,
        "uri": manifest.uri,
        "revision": manifest.revision,
        "total_keys": manifest.total_keys,
        "size_stored": manifest.size_stored,
        "pruned": taken.pruned,
        "warnings": taken.warnings,
    }


def delta_backup_job(
    settings: DeltaJobSettings, aws: AwsClients, dynamodb: Any, metrics: MetricsSink, cluster: str | None = None
) -> dict[str, Any]:
    """DeltaBackup of ``cluster`` (none: the stack's default cluster): the chain's next delta, or a new
    chain from a fresh full backup when it cannot go on (a gap: logged as a warning, ``DeltaChainBroken``
    1). ``NewestDeltaAge`` is 0 once the chain covers the current revision; a failed run publishes the
    seconds since the chain head last moved."""
    try:
        config = load_job_config(settings, aws, cluster)
    except ClusterNotConfiguredError as exc:
        return not_configured("delta backup", exc)
    metrics.add_dimension("cluster", config.name)
    chains = DynamoDeltaChainStore(DynamoStateStore(settings.table_name, dynamodb))
    try:
        aws = aws.for_cluster(config, "DeltaBackup")
        with live_cluster(config, aws) as live:
            result = run_delta_backup(*live, chains, log=log.info)
    except Exception:  # counted; FailureNotice says it once the invocation has failed for good
        metrics.add_metric("DeltaBackupFailed", COUNT, 1)
        _stale_delta_age(chains, config.name, metrics)
        raise
    if result.broken:
        log.warning("delta chain of %s broken: %s", config.name, result.broken)
    metrics.add_metric("DeltaBackupFailed", COUNT, 0)
    metrics.add_metric("DeltaChainBroken", COUNT, 1 if result.broken else 0)
    metrics.add_metric("DeltaBytes", BYTES, result.delta.size_stored if result.delta else 0)
    metrics.add_metric("NewestDeltaAge", SECONDS, 0)
    return result.summary()


def _stale_delta_age(chains: DynamoDeltaChainStore, cluster: str, metrics: MetricsSink) -> None:
    try:
        head = chains.load_chain_head(cluster)
    except EtcdopsError:
        return
    if head is not None:
        metrics.add_metric("NewestDeltaAge", SECONDS, (datetime.now(UTC) - head.updated_at).total_seconds())


def verify_job(
    settings: JobSettings, aws: AwsClients, metrics: MetricsSink, backup_id: str | None, cluster: str | None = None
) -> dict[str, Any]:
    """Verify ``backup_id``, or the newest backup when none is given, and every delta chain of the store
    (:func:`verify_delta_chains`: a broken chain is a warning and counts in ``DeltaChainBroken``, the
    backup's verification stands); report what in the store is not a usable backup (corrupt manifests,
    orphan objects). The age of the newest verified backup is HealthCheck's metric: only it knows the
    live cluster incarnation (invariant 11)."""
    try:
        config = load_job_config(settings, aws, cluster)
    except ClusterNotConfiguredError as exc:
        return not_configured("backup verification", exc)
    metrics.add_dimension("cluster", config.name)
    try:
        store, keyring = open_backup_target(config, s3_client=aws.s3, kms_client=aws.kms)
        catalogue = read_catalogue(store)
        if backup_id is None:
            if not catalogue.backups:
                raise EtcdopsError(f"no backups in {store.uri} to verify")
            backup_id = catalogue.backups[-1].id
        result = verify_backup(store, keyring, backup_id, cluster=config.name)
        chains = verify_delta_chains(store, keyring, config.name)
    except Exception:  # every failure counts; FailureNotice says it once the invocation has failed for good
        metrics.add_metric("BackupVerifyFailed", COUNT, 1)
        raise
    metrics.add_metric("BackupVerifyFailed", COUNT, 0)
    broken = [c for c in chains if c.broken]
    metrics.add_metric("DeltaChainBroken", COUNT, len(broken))
    warnings = catalogue.warnings() + chain_warnings(broken)
    for warning in warnings:
        log.warning("%s", warning)
    return {
        "backup_id": backup_id,
        "ok": True,
        "revision": result.summary.revision,
        "total_keys": result.summary.total_keys,
        "seconds": round(result.seconds, 3),
        "delta_chains": [c.to_dict() for c in chains],
        "warnings": warnings,
    }


def with_fleet(
    settings: JobSettings,
    aws: AwsClients,
    cluster: str | None,
    invoke: Invoke | None,
    job: Callable[[], dict[str, Any]],
) -> dict[str, Any]:
    """A scheduled job that names no cluster: first the same job is invoked once per registered cluster
    (each its own invocation, retried and reported on its own), then it runs for the default cluster. A
    fan-out that failed fails the invocation after the default cluster's job ran."""
    if cluster is not None or invoke is None:
        return job()
    failed: EtcdopsError | None = None
    names: list[str] = []
    try:
        names = [n for n in ClusterRegistry(aws.ssm, settings.registry_path).names() if n != settings.cluster_name]
        invoke_each(names, invoke)
    except EtcdopsError as exc:
        log.error("fan-out failed: %s", exc)
        failed = exc
    result = job()
    if failed is not None:
        raise failed
    return {**result, "fanned_out": names} if names else result


def failure_notice_job(record: FailedInvocationRecord, settings: JobSettings, notifier: Notifier) -> dict[str, Any]:
    """FailureNotice: one message for an invocation of Backup or BackupVerify that failed for good
    (``record`` is Lambda's, as its OnFailure destination receives it); never a stack trace. The cluster
    is the one the failed event named (a fleet's), else the stack's default cluster."""
    context, error = record.requestContext, record.error
    payload: dict[str, Any] = record.requestPayload if isinstance(record.requestPayload, dict) else {}
    detail = payload.get("detail")
    named = detail.get("cluster") if isinstance(detail, dict) and isinstance(detail.get("cluster"), str) else None
    cluster = named or settings.cluster_name or "unnamed"
    notice = job_failed(
        cluster=cluster,
        function_arn=context.functionArn,
        condition=context.condition,
        attempts=context.approximateInvokeCount,
        error_type=error.errorType,
        error_message=error.errorMessage,
        request_id=context.requestId,
        at=record.timestamp,
    )
    notifier.publish(notice.subject, notice.body, notice.attributes)
    return {"cluster": cluster, "function": context.functionArn, "condition": context.condition,
            "subject": notice.subject}  # fmt: skip
