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
from etcdops.domain.errors import ConfigError, NotFoundError, UsageError
from etcdops.domain.fleet import REGISTRY_PATH
from etcdops_local.cli.format import emit
from etcdops_local.cli.options import AWS_OPTIONS
from etcdops_local.cluster.fleet import fleet_cluster_up, fleet_dirs, fleet_status, fleet_status_line
from etcdops_local.watch import cluster_watch, put_watch, register_cluster, stack_view, unregister_cluster

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


def cmd_cluster_watch(args: argparse.Namespace) -> int:
    """Make a registered cluster's alarms and dashboard again from the stack's template as deployed now
    (after a stack update changed them, or for a cluster registered before clusters had their own)."""
    registry, _, session, stack_name = deployment_for(args)
    if args.name not in registry.names():
        raise NotFoundError(f"cluster {args.name} is not registered (etcdops cluster list shows those that are)")
    watch = cluster_watch(stack_view(session, stack_name), args.name)
    put_watch(session.client("cloudwatch"), watch)
    emit(args, {"cluster": args.name, "alarms": watch.alarm_names, "dashboards": sorted(watch.dashboards)},
         lambda: f"cluster {args.name}: {len(watch.alarms)} alarms and its dashboard made from the stack's "
                 "template")  # fmt: skip
    return 0


def cmd_cluster_check(args: argparse.Namespace) -> int:
    """Whether the stack still reaches a registered cluster's AWS resources: each must carry
    ``etcdops:fleet=<stack>`` (a host or secret made by hand after ``cluster add`` may lack it)."""
    from etcdops.adapters.fleet_tags import read_fleet_access
    from etcdops.domain.fleet_tags import FLEET_TAG, refusal

    registry, default, session, stack_name = deployment_for(args)
    if args.name == default:
        note = f"cluster {default} is the stack's default cluster: its grants name it (ClusterName), no tag is needed"
        emit(args, {"cluster": default, "default": True, "resources": [], "note": note}, lambda: note)
        return 0
    config = registry.load(args.name)
    scope = stack_view(session, stack_name).scope
    access = read_fleet_access(session, config, scope)
    refused = refusal(config.name, access, scope)
    if refused:
        raise ConfigError(refused)
    found = [{"kind": r.kind, "id": r.ident, "what": r.why} for r in access.resources]
    note = access.skipped or (
        f"cluster {config.name}: every AWS resource the stack acts on carries {FLEET_TAG}={scope.stack} "
        f"({len(found)}): " + ", ".join(r.describe() for r in access.resources)
    )
    emit(args, {"cluster": config.name, "default": False, "resources": found, "note": note}, lambda: note)
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


def local_fleet_up(default: LocalCluster, count: int) -> list[str]:
    """Start (or start again) one-member clusters c1..c<count> beside the stack's own, each with its own
    state directory, TLS and backups, and register the ones not registered yet with the emulated stack
    (with their alarms and dashboard, as ``cluster add``)."""
    from etcdops_local.aws.fleet import local_registry, register_local

    registry, _ = local_registry(default)
    registered = set(registry.names())
    names = [f"c{i}" for i in range(1, count + 1)]
    for name in names:
        member = fleet_cluster_up(default, name, 1)
        if name not in registered:
            register_local(default, member)
    return names


def _running_local_stack(args: argparse.Namespace) -> tuple[LocalCluster, list[str], str | None]:
    """The running local stack (its own cluster), the clusters registered with it and its default
    cluster's name; else one line."""
    from etcdops_local.aws.fleet import local_registry
    from etcdops_local.aws.stack import server_pid
    from etcdops_local.cli.options import stack_state_dir
    from etcdops_local.cluster import LocalCluster

    base = stack_state_dir(args)
    default = LocalCluster(base)
    if not default.exists() or not (base / "aws.json").exists() or server_pid(base) is None:
        raise ConfigError(f"no local stack runs in {base} (start one with: etcdops local up)")
    registry, default_name = local_registry(default)
    return default, registry.names(), default_name


def cmd_local_cluster_add(args: argparse.Namespace) -> int:
    """``local cluster add NAME``: one more local cluster of its own etcd processes, registered with the
    running local stack (its alarms and dashboard made; its next health round watches it)."""
    from etcdops.domain.config import check_cluster_name
    from etcdops_local.aws.fleet import register_local

    try:
        name = check_cluster_name(args.name)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    default, registered, default_name = _running_local_stack(args)
    if name == default_name or name in registered:
        raise UsageError(f"cluster {name} is in the local stack already (etcdops cluster list shows them)")
    cluster = fleet_cluster_up(default, name, args.members)
    register_local(default, cluster)
    data = {"cluster": name, "members": len(cluster.ps()), "state_dir": str(cluster.state_dir)}
    emit(args, data, lambda: f"cluster {name} added: {data['members']} member(s) in {cluster.state_dir}, "
         f"registered; select it with --cluster {name}")  # fmt: skip
    return 0


def cmd_local_cluster_remove(args: argparse.Namespace) -> int:
    """``local cluster remove NAME``: stop watching a cluster that ``local cluster add`` or ``local up
    --clusters`` made (its alarms and dashboard deleted), stop its members and delete its state, keeping
    its backups."""
    from etcdops_local.aws.fleet import remove_local
    from etcdops_local.cluster import FLEET_DIR

    default, _, default_name = _running_local_stack(args)
    directory = default.state_dir / FLEET_DIR / args.name
    if args.name == default_name:
        raise UsageError(f"cluster {args.name} is the local stack's own cluster: stop it with etcdops local down")
    if directory not in fleet_dirs(default.state_dir):
        raise NotFoundError(f"the local stack has no cluster {args.name} (etcdops cluster list shows them)")
    remove_local(default, args.name)
    emit(args, {"cluster": args.name, "removed": True},
         lambda: f"cluster {args.name} removed: members stopped, state deleted, backups kept")  # fmt: skip
    return 0


def register_local_commands(local_cmds: Any, common: argparse.ArgumentParser) -> None:
    """``local cluster add|remove NAME``: the local fleet, one cluster at a time."""
    from etcdops_local.cli.options import LOCAL_OPTIONS, member_count

    sub = local_cmds.add_parser("cluster", help="add or remove one cluster of the local fleet", parents=[common])
    actions = sub.add_subparsers(dest="local_cluster_action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="start one more local cluster and register it", parents=[common])
    add.add_argument("name", metavar="NAME")
    add.add_argument("--members", type=member_count, default=1, help="its members (default 1; 3 can lose one)")
    add.set_defaults(handler=cmd_local_cluster_add, uses=LOCAL_OPTIONS)
    remove = actions.add_parser(
        "remove", help="deregister a local cluster, stop it, keep its backups", parents=[common]
    )
    remove.add_argument("name", metavar="NAME")
    remove.set_defaults(handler=cmd_local_cluster_remove, uses=LOCAL_OPTIONS)


def cmd_status_all(args: argparse.Namespace) -> int:
    """``status --all``: one line per local cluster (the stack's own and every fleet cluster)."""
    from etcdops_local.cli.options import state_dir

    base = state_dir(args)
    rows = fleet_status(base)
    if not rows:
        raise ConfigError(f"no local cluster in {base} (run: etcdops local up)")
    emit(args, rows, lambda: "\n".join(fleet_status_line(row) for row in rows))
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
        ("watch", cmd_cluster_watch, "make a registered cluster's alarms and dashboard again from the stack"),
        ("check", cmd_cluster_check, "whether the stack reaches a registered cluster's AWS resources (their tags)"),
    ):
        one = actions.add_parser(action, help=help_text, parents=[common])
        one.add_argument("name", metavar="NAME")
        one.set_defaults(handler=handler, uses=AWS_OPTIONS)
