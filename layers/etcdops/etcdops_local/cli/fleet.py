"""``etcdops cluster add|list|remove|show``: the cluster registry of a deployment (the deployed stack's
with --stack-name, else the running local stack's emulated SSM).

Adding a cluster is all it takes to watch it: the next scheduled health round fans out to it.
Removing one stops that and keeps its backups and its state.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from etcdops.adapters.registry import ClusterRegistry
from etcdops.domain.config import dump_config, loads_config
from etcdops.domain.errors import ConfigError, EtcdopsError, UsageError
from etcdops.domain.fleet import REGISTRY_PATH
from etcdops_local.cli.format import emit
from etcdops_local.cli.options import AWS_OPTIONS

if TYPE_CHECKING:
    from etcdops_local.cluster import LocalCluster


def registry_for(args: argparse.Namespace) -> tuple[ClusterRegistry, str | None]:
    """The registry (and the default cluster's name): the deployed stack's, else the local stack's."""
    from etcdops_local.cli.options import state_dir
    from etcdops_local.cli.stack import deployed_stack

    deployed = deployed_stack(args)
    if deployed is not None:
        path = deployed.parameters.get("ClusterRegistryPath") or REGISTRY_PATH
        return ClusterRegistry(deployed.session.client("ssm"), path), deployed.parameters.get("ClusterName")
    directory = state_dir(args)
    if not (directory / "aws.json").exists():
        raise ConfigError(
            f"no deployment to register clusters with: name the deployed stack with --stack-name NAME, or start "
            f"the local stack (etcdops local up; none runs in {directory})"
        )
    from etcdops_local.aws.stack import load_local_stack, local_boto3_session

    stack = load_local_stack(directory)
    path = stack.parameters.get("ClusterRegistryPath") or REGISTRY_PATH
    return ClusterRegistry(local_boto3_session(directory).client("ssm"), path), stack.parameters.get("ClusterName")


def cmd_cluster_add(args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError(f"{args.file}: cannot read it: {exc.strerror or exc}") from None
    registry, default = registry_for(args)
    if loads_config(text, args.file).name == default:  # checked before anything is written
        raise UsageError(f"cluster {default} is the stack's default cluster (ClusterConfigParameter) already")
    config = registry.add(text, args.file)
    parameter = registry.parameter(config.name)
    emit(args, {"cluster": config.name, "parameter": parameter},
         lambda: f"cluster {config.name} added ({parameter}): the next health round watches it")  # fmt: skip
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
    registry, _ = registry_for(args)
    registry.remove(args.name)
    emit(args, {"cluster": args.name, "removed": True},
         lambda: f"cluster {args.name} removed from the registry; its backups and state are kept")  # fmt: skip
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
    from etcdops_local.aws.stack import local_boto3_session
    from etcdops_local.cluster import FLEET_DIR, LocalCluster

    registry = ClusterRegistry(local_boto3_session(default.state_dir).client("ssm"))
    registered = set(registry.names())
    names = [f"c{i}" for i in range(1, count + 1)]
    for name in names:
        member = LocalCluster(default.state_dir / FLEET_DIR / name)
        member.up(1, binaries=None if member.exists() else default.binaries())
        config = member.config()
        if config.name != name:  # a new local cluster is named "local": this one is named for the fleet
            member.config_file.write_text(dump_config(config.model_copy(update={"name": name})))
        if name not in registered:
            registry.add(member.config_file.read_text(), str(member.config_file))
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
