"""The one place that chooses the compute backend for a cluster configuration."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from etcdops.adapters.compute.ec2 import Ec2ComputeProvider
from etcdops.domain.compute.base import ComputeProvider
from etcdops.domain.compute.errors import ComputeConfigError
from etcdops.domain.config import ClusterConfig, Ec2Compute, LocalCompute
from etcdops_local.cluster import LocalCluster
from etcdops_local.compute import LocalComputeProvider


def open_compute(
    config: ClusterConfig,
    *,
    ec2: Any = None,
    elbv2: Any = None,
    ssm: Any = None,
    secretsmanager: Any = None,
    cloudwatch: Any = None,
    session: Any = None,
    stack_name: str | None = None,
    local_hooks: Mapping[str, Sequence[str]] | None = None,
) -> ComputeProvider:
    """The provider named by ``config.compute``.

    For ``ec2`` the AWS clients are passed in, one by one or as a boto3 ``session`` that makes the
    ones not given, and ``stack_name`` names the etcdops stack whose SSM documents it sends. For
    ``local`` no client is needed; ``local_hooks`` maps control-plane actions to commands to run
    instead of the Kubernetes hooks.
    """
    compute = config.compute
    if isinstance(compute, LocalCompute):
        return LocalComputeProvider(
            LocalCluster(Path(compute.state_dir)), hooks=local_hooks, boot_seconds=compute.boot_seconds
        )
    if isinstance(compute, Ec2Compute):
        given = {"ec2": ec2, "elbv2": elbv2, "ssm": ssm, "secretsmanager": secretsmanager, "cloudwatch": cloudwatch}
        clients: dict[str, Any] = {
            name: client if client is not None else session.client(name) if session is not None else None
            for name, client in given.items()
        }
        missing = [name for name, client in clients.items() if client is None]
        if missing:
            raise ComputeConfigError(f"compute: the ec2 provider needs AWS clients: {', '.join(missing)} not given")
        if not stack_name:
            raise ComputeConfigError("compute: the ec2 provider needs the etcdops stack's name (STACK_NAME)")
        return Ec2ComputeProvider(
            config.name,
            compute,
            stack_name=stack_name,
            ec2=clients["ec2"],
            elbv2=clients["elbv2"],
            ssm=clients["ssm"],
            secretsmanager=clients["secretsmanager"],
            cloudwatch=clients["cloudwatch"],
        )
    raise ComputeConfigError("compute: not configured (provider: ec2 or local)")
