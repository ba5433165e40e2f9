"""Running one runbook step as the RunbookStep function does: build the context, run, return."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

from etcdops.adapters.aws import SnsNotifier, SsmConfigParameter, cluster_session, materialize_tls
from etcdops.adapters.compute.factory import open_compute
from etcdops.adapters.etcd.client import EtcdClient
from etcdops.adapters.etcd.connect import client_for, live_client
from etcdops.adapters.etcd.membership import ConfigStore
from etcdops.adapters.registry import ClusterConfigs
from etcdops.adapters.state_dynamodb import DynamoStateStore
from etcdops.app.runbook import CLEAN_UP_STEPS, RunbookContext, replace
from etcdops.domain.backup.manifest import Manifest
from etcdops.domain.config import LOCAL_CONFIG_FILE, ClusterConfig, ConfigFile, LocalCompute
from etcdops.entrypoints.settings import RunbookSettings

if TYPE_CHECKING:
    from etcdops.adapters.backup.crypto import KeyProvider
    from etcdops.adapters.backup.store import BackupStore
    from etcdops.app.runbook.drill import DrillContext
    from etcdops.app.runbook.restore import RestoreContext
    from etcdops.domain.compute.base import ComputeProvider

# The backup modules (the AWS Encryption SDK among them) are imported when a step needs them:
# most steps do not, and a cold start pays for every import (the budget is 500 ms per handler).


class RunbookStepEvent(BaseModel):
    """The Payload every runbook Task sends: which runbook, which step, the execution's document."""

    model_config = ConfigDict(extra="forbid")

    runbook: Literal["replace", "restore", "upgrade", "maintain", "drill", "scale", "rotate"]
    step: str
    execution: str
    document: dict[str, Any]


def run_runbook_step(event: RunbookStepEvent, settings: RunbookSettings, session: Any) -> dict[str, Any]:
    """One step, with clients from ``session`` (a boto3 session) and TLS files for this call only."""
    # the cluster the execution is for (its input's "cluster"; none: the stack's default cluster)
    configs = ClusterConfigs(
        session.client("ssm"), settings.config_parameter, settings.cluster_name, settings.registry_path
    )
    cluster = event.document.get("cluster")
    config = configs.load(cluster if isinstance(cluster, str) and cluster else None)
    # the cluster's EC2, SSM and Secrets Manager (its aws.role_arn's, when it names one); the stack's own
    # resources (state, topic, configuration, backups) with the function's role
    cluster_aws = cluster_session(session, config, "RunbookStep")
    with tempfile.TemporaryDirectory(prefix="etcdops-tls-") as tls_dir:
        config = materialize_tls(config, cluster_aws.client("secretsmanager"), Path(tls_dir))
        document = {**event.document, "execution": event.execution}
        if event.step not in CLEAN_UP_STEPS:  # failure paths run
            replace.require_configured_cluster(config, document)
        wiring = _Wiring.build(config, settings, session, cluster_aws, configs)
        if event.runbook == "drill":
            from etcdops.app.runbook import drill

            return drill.run_step(wiring.drill_context(), event.step, document)
        if event.runbook == "restore":
            from etcdops.app.runbook import restore

            return restore.run_step(wiring.restore_context(), event.step, document)
        # the other runbooks share one context; each module is imported when its runbook runs
        runbook = replace if event.runbook == "replace" else import_module(f"etcdops.app.runbook.{event.runbook}")
        result: dict[str, Any] = runbook.run_step(wiring.context(), event.step, document)
        return result


@dataclass(frozen=True)
class _Wiring:
    """What every runbook's context holds, built once per step: the state, the compute provider, the
    notifier, where the configuration lives, and the etcd clients and backup target made on demand."""

    config: ClusterConfig
    settings: RunbookSettings
    session: Any
    cluster_aws: Any  # the cluster's own AWS (its aws.role_arn's when it names one)
    state: DynamoStateStore
    seeds: list[str]  # the members the last health round saw
    compute: ComputeProvider
    notifier: SnsNotifier
    stores: list[ConfigStore]

    @classmethod
    def build(
        cls, config: ClusterConfig, settings: RunbookSettings, session: Any, cluster_aws: Any, configs: ClusterConfigs
    ) -> _Wiring:
        state = DynamoStateStore(settings.table_name, session.client("dynamodb"))
        seeds = state.load_endpoints(config.name)
        compute = open_compute(config, session=cluster_aws, stack_name=settings.stack_name)
        notifier = SnsNotifier(session.client("sns"), settings.topic_arn)
        stores = config_stores(config, session.client("ssm"), configs.parameter_for(config.name))
        return cls(config, settings, session, cluster_aws, state, seeds, compute, notifier, stores)

    def client(self) -> EtcdClient:
        return live_client(self.config, seeds=self.seeds)

    def client_at(self, endpoints: Sequence[str]) -> EtcdClient:
        return client_for(self.config, endpoints=list(endpoints))

    def backup_target(self) -> tuple[BackupStore, KeyProvider]:
        from etcdops.adapters.backup.target import open_backup_target

        # a local key file is made on first use (the local stack); a KMS key must already exist
        return open_backup_target(
            self.config,
            s3_client=self.session.client("s3"),
            kms_client=self.session.client("kms"),
            create_local_key=True,
        )

    def ensure_backup(self, max_age: timedelta) -> Manifest:
        from etcdops.app.backup.job import ensure_fresh_backup

        store, keyring = self.backup_target()
        with self.client() as etcd:
            return ensure_fresh_backup(self.config, etcd, store, keyring, max_age)

    def context(self) -> RunbookContext:
        return RunbookContext(
            config=self.config,
            client=self.client,
            compute=self.compute,
            state=self.state,
            notifier=self.notifier,
            ensure_backup=self.ensure_backup,
            backup_target=self.backup_target,
            config_stores=self.stores,
        )

    def restore_context(self) -> RestoreContext:
        from etcdops.app.runbook.restore import RestoreContext

        return RestoreContext(
            config=self.config,
            client=self.client_at,
            compute=self.compute,
            state=self.state,
            notifier=self.notifier,
            backup_target=self.backup_target,
            config_stores=self.stores,
            staging=staging_store(self.config, self.settings, self.session),
        )

    def drill_context(self) -> DrillContext:
        from etcdops.app.runbook.drill import DrillContext

        config, settings, session, cluster_aws = self.config, self.settings, self.session, self.cluster_aws
        return DrillContext(
            config=config,
            client=self.client_at,
            scratch=lambda: open_compute(config, session=cluster_aws, stack_name=settings.stack_name, scratch=True),
            state=self.state,
            notifier=self.notifier,
            backup_target=self.backup_target,
            staging=staging_store(config, settings, session),
            metrics=emf_metric(config.name),
        )


def emf_metric(cluster: str) -> Callable[[str, str, float], None]:
    """One metric written at once as its own EMF document (namespace ``etcdops``, dimension ``cluster``)."""

    def publish(name: str, unit: str, value: float) -> None:
        from aws_lambda_powertools.metrics import MetricUnit, single_metric

        with single_metric(
            name=name, unit=MetricUnit(unit), value=value, namespace="etcdops", default_dimensions={"cluster": cluster}
        ):
            pass

    return publish


def staging_store(config: ClusterConfig, settings: RunbookSettings, session: Any) -> Callable[[], BackupStore] | None:
    """Where RestoreCluster stages the plain snapshot: the stack's staging bucket (not versioned, objects
    expire by lifecycle), under the cluster's name. Local hosts read files only, so with local compute
    (and without the bucket) the snapshot is staged under restore/ in the backup store."""
    bucket = settings.staging_bucket
    if bucket is None or isinstance(config.compute, LocalCompute):
        return None

    def staging() -> BackupStore:
        from etcdops.adapters.backup.store import S3Store

        return S3Store(session.client("s3"), bucket, config.name)

    return staging


def config_stores(config: ClusterConfig, ssm: Any, parameter: str) -> list[ConfigStore]:
    """Where the cluster's configuration lives, to be updated after a membership change: its SSM
    parameter (what the functions read), and for the local stack also its ``cluster.yaml`` (what
    the command line reads)."""
    stores: list[ConfigStore] = [SsmConfigParameter(ssm, parameter)]
    if isinstance(config.compute, LocalCompute):
        stores.append(ConfigFile(Path(config.compute.state_dir) / LOCAL_CONFIG_FILE))
    return stores
