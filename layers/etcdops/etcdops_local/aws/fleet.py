"""The local fleet's clusters in the emulated stack: registered as ``etcdops cluster add`` registers one
(validated, its alarms and dashboard made, then its registry entry), and deregistered as ``etcdops
cluster remove`` does (alarms and dashboard deleted, the entry removed; backups and state are kept)."""

from __future__ import annotations

from etcdops.adapters.registry import ClusterRegistry
from etcdops.domain.fleet import REGISTRY_PATH
from etcdops_local.aws.stack import load_local_stack, local_boto3_session
from etcdops_local.cluster import FLEET_DIR, LocalCluster
from etcdops_local.watch import register_cluster, stack_view, unregister_cluster

__all__ = ["deregister_local", "local_registry", "register_local", "remove_local"]


def local_registry(default: LocalCluster) -> tuple[ClusterRegistry, str | None]:
    """The running local stack's cluster registry (the stack of ``default``'s state directory) and the
    name of its default cluster."""
    stack = load_local_stack(default.state_dir)
    session = local_boto3_session(default.state_dir)
    path = stack.parameters.get("ClusterRegistryPath") or REGISTRY_PATH
    return ClusterRegistry(session.client("ssm"), path), stack.parameters.get("ClusterName")


def register_local(default: LocalCluster, cluster: LocalCluster) -> None:
    """Register ``cluster`` (its configuration as its state directory has it) with the local stack of
    ``default``, with its alarms and dashboard."""
    stack = load_local_stack(default.state_dir)
    session = local_boto3_session(default.state_dir)
    registry, name = local_registry(default)
    text, source = cluster.config_file.read_text(), str(cluster.config_file)
    register_cluster(registry, session, stack_view(session, stack.stack_name), text, source, name)


def deregister_local(default: LocalCluster, name: str) -> None:
    """Stop watching the cluster ``name`` in the local stack of ``default`` (a no-op if it is not registered)."""
    registry, _ = local_registry(default)
    if name not in registry.names():
        return
    stack = load_local_stack(default.state_dir)
    session = local_boto3_session(default.state_dir)
    unregister_cluster(registry, session, stack_view(session, stack.stack_name), name)


def remove_local(default: LocalCluster, name: str) -> None:
    """The fleet cluster ``name`` leaves the local stack of ``default``: deregistered, its members stopped,
    its state deleted but its backups."""
    deregister_local(default, name)
    LocalCluster(default.state_dir / FLEET_DIR / name).down(purge=True)
