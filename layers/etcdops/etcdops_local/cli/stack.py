"""``--stack-name NAME`` (or ``$ETCDOPS_STACK``): the CLI on a deployed etcdops stack, with only AWS credentials.

The stack's outputs say where everything is (state table, runbooks, bucket, key, topic) and its
parameters where the cluster configuration is (``ClusterConfigParameter``, checked against
``ClusterName``). TLS entries that are Secrets Manager ARNs are fetched into a private temporary
directory (0700, files 0600) that is removed when the command ends.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from etcdops.domain.config import ClusterConfig
from etcdops.domain.errors import ConfigError, NotFoundError

OUTPUTS = {
    "table": "StateTableName",
    "replace": "ReplaceMemberStateMachineArn",
    "restore": "RestoreClusterStateMachineArn",
    "upgrade": "UpgradeClusterStateMachineArn",
    "maintain": "MaintainClusterStateMachineArn",
    "drill": "RestoreDrillStateMachineArn",
    "scale": "ScaleClusterStateMachineArn",
    "rotate": "RotateCertificatesStateMachineArn",
    "bucket": "BackupBucketName",
    "key": "BackupKeyArn",
    "topic": "NotificationTopicArn",
}
"""What the CLI reads from the stack's outputs (template.yaml's ``Outputs``)."""


@dataclass
class DeployedStack:
    name: str
    session: Any
    outputs: dict[str, str]
    parameters: dict[str, str]
    config: ClusterConfig | None = field(default=None, repr=False)

    def output(self, what: str) -> str:
        key = OUTPUTS[what]
        if not self.outputs.get(key):
            raise ConfigError(f"stack {self.name} has no output {key}: is it an etcdops stack?")
        return self.outputs[key]

    @property
    def runbooks(self) -> dict[str, str]:
        return {
            name: self.outputs[OUTPUTS[name]]
            for name in ("replace", "restore", "upgrade", "maintain", "scale", "rotate")
            if self.outputs.get(OUTPUTS[name])
        }


def stack_name(args: argparse.Namespace) -> str | None:
    return getattr(args, "stack_name", None) or os.environ.get("ETCDOPS_STACK", "").strip() or None


def deployed_stack(args: argparse.Namespace, session: Any | None = None) -> DeployedStack | None:
    """The stack named by ``--stack-name``/``$ETCDOPS_STACK`` (described once per command), or None."""
    name = stack_name(args)
    if name is None:
        return None
    cached: DeployedStack | None = getattr(args, "_deployed_stack", None)
    if cached is not None:
        return cached
    import boto3

    session = session or boto3.session.Session()
    try:
        found = session.client("cloudformation").describe_stacks(StackName=name)["Stacks"]
    except ClientError as exc:
        if "does not exist" in str(exc):
            raise NotFoundError(f"--stack-name: no stack {name} in {session.region_name}") from None
        raise
    described = found[0]
    stack = DeployedStack(
        name=name,
        session=session,
        outputs={o["OutputKey"]: o.get("OutputValue", "") for o in described.get("Outputs", [])},
        parameters={p["ParameterKey"]: p.get("ParameterValue", "") for p in described.get("Parameters", [])},
    )
    args._deployed_stack = stack
    return stack


def stack_config(stack: DeployedStack, cluster: str | None = None) -> ClusterConfig:
    """The configuration of the stack's default cluster, or of ``cluster`` (``--cluster NAME``: one of
    its registry), with its TLS secrets in files for this command."""
    if cluster and cluster != stack.parameters.get("ClusterName"):
        from etcdops.adapters.registry import ClusterRegistry
        from etcdops.domain.fleet import REGISTRY_PATH

        path = stack.parameters.get("ClusterRegistryPath") or REGISTRY_PATH
        return fetch_tls_secrets(ClusterRegistry(stack.session.client("ssm"), path).load(cluster), stack.session)
    if stack.config is not None:
        return stack.config
    from etcdops.adapters.aws import load_cluster_config

    parameter = stack.parameters.get("ClusterConfigParameter")
    if not parameter:
        raise ConfigError(f"stack {stack.name} has no ClusterConfigParameter parameter: is it an etcdops stack?")
    config = load_cluster_config(
        stack.session.client("ssm"), parameter, stack.parameters.get("ClusterName") or None
    )
    stack.config = fetch_tls_secrets(config, stack.session)
    return stack.config


def fetch_tls_secrets(config: ClusterConfig, session: Any | None = None) -> ClusterConfig:
    """``config`` with its TLS entries that are Secrets Manager ARNs fetched into private files."""
    if config.tls is None or not any(
        (value or "").startswith("arn:") for value in (config.tls.ca, config.tls.cert, config.tls.key)
    ):
        return config
    import boto3

    from etcdops.adapters.aws import materialize_tls

    session = session or boto3.session.Session()
    return materialize_tls(config, session.client("secretsmanager"), private_directory())


def private_directory() -> Path:
    """A directory only we can read, removed when the process exits (TLS keys live there)."""
    directory = Path(tempfile.mkdtemp(prefix="etcdops-tls-"))
    os.chmod(directory, 0o700)
    _PRIVATE.append(directory)
    return directory


atexit.register(lambda: remove_private_directories())


_PRIVATE: list[Path] = []


def remove_private_directories() -> None:
    """Remove the TLS material fetched for this command (``main`` calls it when the command ends)."""
    while _PRIVATE:
        shutil.rmtree(_PRIVATE.pop(), ignore_errors=True)
