"""The local fleet: clusters of their own etcd processes beside the local stack's own, each in its own
state directory under ``clusters/NAME`` (``local up --clusters N``, ``local cluster add NAME``), and one
line of health per cluster (``status --all``). Their registration with the one emulated stack is
:mod:`etcdops_local.aws.fleet`'s."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from etcdops.domain.config import dump_config
from etcdops.domain.errors import EtcdopsError
from etcdops_local.cluster import FLEET_DIR, LocalCluster

__all__ = [
    "fleet_cluster_up",
    "fleet_dirs",
    "fleet_status",
    "fleet_status_line",
]


def fleet_dirs(base: Path) -> list[Path]:
    """The fleet clusters' state directories under the local stack's, by name."""
    root = base / FLEET_DIR
    return sorted(p for p in root.iterdir() if (p / "cluster.yaml").exists()) if root.is_dir() else []


def fleet_cluster_up(default: LocalCluster, name: str, members: int) -> LocalCluster:
    """Start (or start again) the fleet cluster ``name`` of ``members`` members in its own state
    directory beside the stack's, on the stack's etcd, its configuration named ``name``."""
    member = LocalCluster(default.state_dir / FLEET_DIR / name)
    member.up(members, binaries=None if member.exists() else default.binaries())
    config = member.config()
    if config.name != name:  # a new local cluster is named "local": this one is named for the fleet
        member.config_file.write_text(dump_config(config.model_copy(update={"name": name})))
    return member


def fleet_status(base: Path) -> list[dict[str, Any]]:
    """One row per local cluster (the stack's own and every fleet cluster): quorum, voters, leader."""
    from etcdops.adapters.etcd.connect import client_for
    from etcdops.app.probe import probe_cluster
    from etcdops.domain.config import load_config

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
    return rows


def fleet_status_line(row: dict[str, Any]) -> str:
    """A row of :func:`fleet_status` as ``status --all`` prints it."""
    if "error" in row:
        return f"{row['cluster']}: UNREACHABLE {row['error']}"
    state = "healthy" if row["has_quorum"] and row["healthy_voters"] == row["voters"] else (
        "degraded" if row["has_quorum"] else "NO QUORUM")  # fmt: skip
    return f"{row['cluster']}: {state}, {row['healthy_voters']}/{row['voters']} voters, leader {row['leader']}"
