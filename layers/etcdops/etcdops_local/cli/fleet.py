"""``etcdops cluster add|list|remove|show``: the cluster registry of a deployment (the deployed stack's
with --stack-name, else the running local stack's emulated SSM).

Adding a cluster is all it takes to watch it: its alarms and dashboard are made at once (the default
cluster's, from the stack's own template: :mod:`etcdops_local.watch`) and the next scheduled health round
fans out to it. Removing one deletes its alarms and dashboard, stops the rounds and keeps its backups and
its state.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from etcdops.adapters.registry import ClusterRegistry
from etcdops.domain.config import dump_config, loads_config
from etcdops.domain.errors import ConfigError, EtcdopsError, UsageError
from etcdops.domain.fleet import REGISTRY_PATH
from etcdops_local.cli.format import emit
from etcdops_local.cli.options import AWS_OPTIONS
from etcdops_local.watch import register_cluster, stack_view, unregister_cluster

if TYPE_CHECKING:
    from etcdops_local.cluster import LocalCluster


class Deployment(NamedTuple):
    """The deployment a ``cluster`` command changes: its registry, default cluster, session and stack."""

    registry: ClusterRegistry
    default: str | None
    session: Any
    stack_name: str


def deployment_for(args: argparse.Namespace) -> Deployment:
    """The deployed stack's (with --stack-name), else the running local stack's."""
    from etcdops_local.cli.options import stack_state_dir
    from etcdops_local.cli.stack import deployed_stack

    deployed = deployed_stack(args)
    if deployed is not None:
        path = deployed.parameters.get("ClusterRegistryPath") or REGISTRY_PATH
        registry = ClusterRegistry(deployed.session.client("ssm"), path)
        return Deployment(registry, deployed.parameters.get("ClusterName"), deployed.session, deployed.name)
    directory = stack_state_dir(args)
    if not (directory / "aws.json").exists():
        raise ConfigError(
            f"no deployment to register clusters with: name the deployed stack with --stack-name NAME, or start "
            f"the local stack (etcdops local up; none runs in {directory})"
        )
    from etcdops_local.aws.stack import load_local_stack, local_boto3_session

    stack, session = load_local_stack(directory), local_boto3_session(directory)
    path = stack.parameters.get("ClusterRegistryPath") or REGISTRY_PATH
    registry = ClusterRegistry(session.client("ssm"), path)
    return Deployment(registry, stack.parameters.get("ClusterName"), session, stack.stack_name)


def registry_for(args: argparse.Namespace) -> tuple[ClusterRegistry, str | None]:
    """The registry (and the default cluster's name): the deployed stack's, else the local stack's."""
    deployment = deployment_for(args)
    return deployment.registry, deployment.default


def cmd_cluster_add(args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError(f"{args.file}: cannot read it: {exc.strerror or exc}") from None
    registry, default, session, stack_name = deployment_for(args)
    loads_config(text, args.file)  # a bad document is refused before the stack is read
    config, watch = register_cluster(registry, session, stack_view(session, stack_name), text, args.file, default)
    parameter = registry.parameter(config.name)
    emit(args, {"cluster": config.name, "parameter": parameter, "alarms": watch.alarm_names,
                "dashboards": sorted(watch.dashboards)},
         lambda: f"cluster {config.name} added ({parameter}) with {len(watch.alarms)} alarms and "
                 f"{'dashboard ' + ', '.join(sorted(watch.dashboards)) if watch.dashboards else 'no dashboard'}: "
                 "the next health round watches it")  # fmt: skip
    return 0


def cmd_cluster_list(args: argparse.Namespace) -> int:
    registry, default = registry_for(args)
    names = registry.names()
    rows = ([{"cluster": default, "default": True}] if default else []) + [
        {"cluster": name, "default": False} for name in names
    ]

    def text() -> str:
        return "\n".join(f"{row['cluster']}{' (default)' if row['default'] else ''}" for row in rows) or "no clusters"

    emit(args, rows, text)
    return 0


def cmd_cluster_show(args: argparse.Namespace) -> int:
    registry, _ = registry_for(args)
    config = registry.load(args.name)
    emit(args, json.loads(config.model_dump_json(exclude_none=True)), lambda: dump_config(config).rstrip())
    return 0


def cmd_cluster_remove(args: argparse.Namespace) -> int:
    registry, _, session, stack_name = deployment_for(args)
    watch = unregister_cluster(registry, session, stack_view(session, stack_name), args.name)
    emit(args, {"cluster": args.name, "removed": True, "alarms_deleted": watch.alarm_names},
         lambda: f"cluster {args.name} removed from the registry with its alarms and dashboard; its backups "
                 "and state are kept")  # fmt: skip
    return 0


# ---- the local fleet: `local up --clusters N`, `status --all` ------------------------------------------

FLEET_MAX = 20


def fleet_size(text: str) -> int:
    """An argparse type: how many fleet clusters ``local up --clusters`` makes, 1 to 20."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number of clusters, 1 to {FLEET_MAX}") from None
    if not 1 <= value <= FLEET_MAX:
        raise argparse.ArgumentTypeError(f"{value}: the local fleet has 1 to {FLEET_MAX} clusters")
    return value


def fleet_dirs(base: Path) -> list[Path]:
    """The fleet clusters' state directories under the local stack's, by name."""
    from etcdops_local.cluster import FLEET_DIR

    root = base / FLEET_DIR
    return sorted(p for p in root.iterdir() if (p / "cluster.yaml").exists()) if root.is_dir() else []


def local_fleet_up(default: LocalCluster, count: int) -> list[str]:
    """Start (or start again) one-member clusters c1..c<count> beside the stack's own, each with its own
    state directory, TLS and backups, and register the ones not registered yet with the emulated stack."""
    from etcdops_local.aws.stack import load_local_stack, local_boto3_session
    from etcdops_local.cluster import FLEET_DIR, LocalCluster

    session = local_boto3_session(default.state_dir)
    local = load_local_stack(default.state_dir)
    registry = ClusterRegistry(session.client("ssm"), local.parameters.get("ClusterRegistryPath") or REGISTRY_PATH)
    registered = set(registry.names())
    stack = stack_view(session, local.stack_name) if set(f"c{i}" for i in range(1, count + 1)) - registered else None
    names = [f"c{i}" for i in range(1, count + 1)]
    for name in names:
        member = LocalCluster(default.state_dir / FLEET_DIR / name)
        member.up(1, binaries=None if member.exists() else default.binaries())
        config = member.config()
        if config.name != name:  # a new local cluster is named "local": this one is named for the fleet
            member.config_file.write_text(dump_config(config.model_copy(update={"name": name})))
        if name not in registered and stack is not None:  # with its alarms and dashboard, as `cluster add`
            register_cluster(registry, session, stack, member.config_file.read_text(), str(member.config_file), None)
    return names


def cmd_status_all(args: argparse.Namespace) -> int:
    """``status --all``: one line per local cluster (the stack's own and every fleet cluster)."""
    from etcdops.adapters.etcd.connect import client_for
    from etcdops.app.probe import probe_cluster
    from etcdops.domain.config import load_config
    from etcdops_local.cli.options import state_dir

    base = state_dir(args)
    rows: list[dict[str, Any]] = []
    for directory in [base, *fleet_dirs(base)]:
        if not (directory / "cluster.yaml").exists():
            continue
        config = load_config(directory / "cluster.yaml")
        try:
            with client_for(config, timeout=config.health.probe_deadline_seconds) as client:
                health = probe_cluster(client, deadline=config.health.probe_deadline_seconds)
        except EtcdopsError as exc:
            rows.append({"cluster": config.name, "has_quorum": False, "error": str(exc)})
            continue
        leader = next((m.name for m in health.members if m.id == health.leader), None)
        rows.append({"cluster": config.name, "has_quorum": health.has_quorum, "leader": leader,
                     "healthy_voters": len(health.healthy_voters), "voters": len(health.voters)})  # fmt: skip
    if not rows:
        raise ConfigError(f"no local cluster in {base} (run: etcdops local up)")

    def line(row: dict[str, Any]) -> str:
        if "error" in row:
            return f"{row['cluster']}: UNREACHABLE {row['error']}"
        state = "healthy" if row["has_quorum"] and row["healthy_voters"] == row["voters"] else (
            "degraded" if row["has_quorum"] else "NO QUORUM")  # fmt: skip
        return f"{row['cluster']}: {state}, {row['healthy_voters']}/{row['voters']} voters, leader {row['leader']}"

    emit(args, rows, lambda: "\n".join(line(row) for row in rows))
    return 0 if all(row["has_quorum"] for row in rows) else 1


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    sub = commands.add_parser("cluster", help="the clusters one deployment watches (the registry)", parents=[common])
    actions = sub.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="register a cluster from its configuration document", parents=[common])
    add.add_argument("file", metavar="FILE", help="the cluster configuration (YAML or JSON)")
    add.set_defaults(handler=cmd_cluster_add, uses=AWS_OPTIONS)
    listing = actions.add_parser("list", help="the default cluster and every registered one", parents=[common])
    listing.set_defaults(handler=cmd_cluster_list, uses=AWS_OPTIONS)
    for action, handler, help_text in (
        ("show", cmd_cluster_show, "a registered cluster's configuration"),
        ("remove", cmd_cluster_remove, "stop watching a cluster (its backups are kept)"),
    ):
        one = actions.add_parser(action, help=help_text, parents=[common])
        one.add_argument("name", metavar="NAME")
        one.set_defaults(handler=handler, uses=AWS_OPTIONS)
