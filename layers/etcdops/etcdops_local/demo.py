"""``etcdops demo``: a scripted tour of the autopilot on the local stack, with a timeline.

Chapter 1, in a fleet: healthy cluster → data written → backup → two more clusters join the stack
(``status --all``) → a member is killed → detected → replaced → healthy again, with the data checked,
and the other clusters untouched; they leave the stack again. Chapter 2: the data is deleted by
mistake and two members are lost → escalation naming a backup → RestoreCluster, approved → exactly
the backed-up data. Every step uses the real pieces: etcd processes, our client, the backup job, and
the autopilot (HealthCheck and the runbooks in the emulated AWS).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from etcdops.adapters.backup.target import open_backup_target
from etcdops.adapters.etcd.client import EtcdClient
from etcdops.adapters.state_dynamodb import DynamoStateStore
from etcdops.app.backup.job import run_backup
from etcdops.app.probe import probe_cluster
from etcdops.domain.errors import EtcdopsError
from etcdops.domain.health import ClusterHealth
from etcdops_local.aws.fleet import local_registry, register_local, remove_local
from etcdops_local.aws.stack import load_local_stack, local_boto3_session, server_pid, spawn_server
from etcdops_local.cluster import EtcdBinaries, LocalCluster
from etcdops_local.cluster.fleet import fleet_cluster_up, fleet_dirs, fleet_status, fleet_status_line


class DemoError(EtcdopsError):
    """The tour did not reach its next milestone in time."""


@dataclass
class Timeline:
    started: float = field(default_factory=time.monotonic)
    events: list[tuple[float, str]] = field(default_factory=list)
    out: Callable[[str], None] = print

    def __call__(self, text: str) -> None:
        at = time.monotonic() - self.started
        self.events.append((at, text))
        self.out(f"+{at:6.1f}s  {text}")


def _probe(cluster: LocalCluster) -> ClusterHealth:
    running = [p.client_urls[0] for p in cluster.ps() if p.state == "running"]
    with EtcdClient(running or [cluster.ps()[0].client_urls[0]], tls=cluster.tls, timeout=2.0) as client:
        return probe_cluster(client)


def _summary(health: ClusterHealth) -> str:
    leader = next((m.name for m in health.members if m.id == health.leader), "none")
    return f"{len(health.healthy_voters)}/{len(health.voters)} voters healthy, leader {leader}"


def _wait(what: str, check: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise DemoError(f"demo: {what} did not happen within {timeout:.0f} s")


def run_demo(
    state_dir: Path,
    template: Path,
    *,
    binaries: EtcdBinaries | None = None,
    out: Callable[[str], None] = print,
    timeout: float = 240.0,
) -> Timeline:
    timeline = Timeline(out=out)
    cluster = LocalCluster(state_dir)
    cluster.up(3, binaries=None if cluster.exists() else binaries or EtcdBinaries.locate())
    if not server_pid(cluster.state_dir):
        spawn_server(cluster.state_dir, template, cluster.config_file)
    health = _wait(
        "a healthy cluster", lambda: (h := _probe(cluster)).has_quorum and len(h.healthy_voters) == 3 and h, 60
    )
    timeline(f"healthy cluster: {_summary(health)}")

    written = {f"/demo/key-{i:03d}".encode(): f"value-{i}".encode() for i in range(100)}
    with cluster.client() as client:
        for key, value in written.items():
            client.put(key, value)
    timeline(f"wrote {len(written)} keys under /demo/")

    config = cluster.config()
    store, keyring = open_backup_target(config, create_local_key=True)
    with cluster.client() as client:
        backup = run_backup(config, client, probe_cluster(client), store, keyring).manifest
    timeline(f"backup {backup.id}: revision {backup.revision}, encrypted in {store.uri}")

    fleet = _fleet_joins(cluster, timeline)
    run_name = _kill_and_replace(cluster, timeline, health, timeout)

    with cluster.client() as client:
        stored = {kv.key: kv.value for kv in client.range(b"/demo/", prefix=True).kvs}
    lost = [k for k, v in written.items() if stored.get(k) != v]
    if lost:
        raise DemoError(f"demo: {len(lost)} keys lost, e.g. {lost[0]!r}")
    timeline(f"all {len(written)} keys read back; the story: etcdops runbook show {run_name}")
    _fleet_untouched(cluster, timeline, fleet)
    _restore_chapter(cluster, timeline, backup.id, written, timeout)
    return timeline


def _kill_and_replace(cluster: LocalCluster, timeline: Timeline, health: ClusterHealth, timeout: float) -> str:
    """A follower killed like a lost host, the autopilot's ReplaceMember seen through to 3 healthy voters
    again; the execution's name."""
    before = {m.id for m in health.voters}
    victim = next(m for m in health.members if m.id != health.leader)
    cluster.kill(victim.name)
    timeline(f"killed member {victim.name} ({victim.id:x}) with SIGKILL, like a lost host")

    stack = load_local_stack(cluster.state_dir)
    sfn = local_boto3_session(cluster.state_dir).client("stepfunctions")
    machine = stack.state_machines["ReplaceMemberStateMachine"]

    def newest() -> dict[str, Any] | None:
        runs = sfn.list_executions(stateMachineArn=machine)["executions"]
        mine = [r for r in runs if f"{victim.id:x}" in r["name"]]
        return mine[0] if mine else None

    _wait(
        "the failure to be seen", lambda: not next(m for m in _probe(cluster).members if m.id == victim.id).healthy, 30
    )
    timeline(f"probes see {victim.name} unhealthy; the autopilot waits for K failed probes over T seconds")
    run = _wait("the autopilot to start ReplaceMember", newest, timeout)
    timeline(f"autopilot started ReplaceMember {run['name']}")
    run = _wait("ReplaceMember to finish", lambda: (r := newest()) and r["status"] != "RUNNING" and r, timeout)
    timeline(f"ReplaceMember {run['status']}")
    if run["status"] != "SUCCEEDED":
        raise DemoError(f"demo: ReplaceMember ended {run['status']}; see: etcdops runbook show {run['name']}")

    health = _wait(
        "3 healthy voters",
        lambda: (h := _probe(cluster)).has_quorum and len(h.healthy_voters) == 3 and not h.learners and h,
        60,
    )
    new = next(m for m in health.voters if m.id not in before)
    timeline(f"healthy again: {_summary(health)}; {victim.name} replaced by {new.name} ({new.id:x})")
    return str(run["name"])


FLEET = ("c2", "c3")
"""The clusters that join the demo's stack (one member each: the 2-core machine's share)."""


def _state_table(cluster: LocalCluster) -> DynamoStateStore:
    session = local_boto3_session(cluster.state_dir)
    return DynamoStateStore(load_local_stack(cluster.state_dir).table or "", session.client("dynamodb"))


def _fleet_joins(cluster: LocalCluster, timeline: Timeline) -> dict[str, set[int]]:
    """Two more clusters join the stack, as ``etcdops local cluster add`` adds them; every cluster on one
    line, as ``etcdops status --all`` prints them; their members."""
    registry, _ = local_registry(cluster)
    joined = {name: fleet_cluster_up(cluster, name, 1) for name in FLEET}
    for name in sorted(set(FLEET) - set(registry.names())):
        register_local(cluster, joined[name])  # with its alarms and dashboard, as `etcdops cluster add`
    timeline(f"a fleet: clusters {' and '.join(FLEET)} (one member each) join the stack (etcdops local cluster add)")
    _status_all(cluster, timeline)
    return {name: {m.id for m in _probe(each).members} for name, each in joined.items()}


def _status_all(cluster: LocalCluster, timeline: Timeline) -> None:
    for row in fleet_status(cluster.state_dir):
        timeline(f"status --all: {fleet_status_line(row)}")


def _fleet_untouched(cluster: LocalCluster, timeline: Timeline, before: dict[str, set[int]]) -> None:
    """The other clusters were watched all along (health rounds of their own), kept their members and had
    no repair; then they leave the stack (as ``etcdops local cluster remove`` removes them), so that
    chapter 2 runs on the stack's own cluster alone."""
    after = {d.name: {m.id for m in _probe(LocalCluster(d)).members} for d in fleet_dirs(cluster.state_dir)}
    if {name: after.get(name) for name in before} != before:
        raise DemoError(f"demo: the other clusters' members changed: {before} became {after}")
    state = _state_table(cluster)
    _wait("the fleet's health rounds", lambda: all(state.load_last_decision(name) for name in before), 60)
    repaired = [name for name in before if state.load_repairs(name)]
    if repaired:
        raise DemoError(f"demo: the autopilot repaired {', '.join(repaired)}, which lost nothing")
    _status_all(cluster, timeline)
    timeline(f"{' and '.join(FLEET)} untouched: the same members, no runbook of their own")
    for name in FLEET:
        remove_local(cluster, name)
    timeline(f"{' and '.join(FLEET)} leave the stack (etcdops local cluster remove): stopped, backups kept")


def _restore_chapter(
    cluster: LocalCluster, timeline: Timeline, backup_id: str, written: dict[bytes, bytes], timeout: float
) -> None:
    """Disaster: the data is damaged and two of three members are lost; the restore the escalation
    names, approved by the operator, brings back exactly the backed-up data."""
    from etcdops.app.approval import decide_approval

    with cluster.client() as client:
        client.delete(b"/demo/", prefix=True)
    timeline("chapter 2: every key under /demo/ deleted by mistake")
    health = _probe(cluster)
    for member in [m for m in health.members if m.id != health.leader]:
        cluster.kill(member.name)
    timeline("two of three members killed: quorum lost; the autopilot escalates and changes nothing")

    stack = load_local_stack(cluster.state_dir)
    session = local_boto3_session(cluster.state_dir)
    sfn = session.client("stepfunctions")
    state = DynamoStateStore(stack.table or "", session.client("dynamodb"))
    decided = _wait(
        "the escalation", lambda: (d := state.load_last_decision("local")) and d.decision.restore_input and d, 120
    )
    restore_input = dict(decided.decision.restore_input or {})
    restore_input.pop("latest", None)  # offered when a delta chain covers the cluster: the tour wants the old keys
    restore_input["backup_id"] = backup_id  # the backup taken at the start of the tour
    timeline(f"escalation names backup {decided.decision.backup_id}; starting RestoreCluster with backup {backup_id}")
    name = f"restore-demo-{backup_id[-6:]}"
    arn = sfn.start_execution(
        stateMachineArn=stack.state_machines["RestoreClusterStateMachine"], name=name, input=json.dumps(restore_input)
    )["executionArn"]
    _wait("the approval request", lambda: state.load_approval(name), 120)
    timeline(f"RestoreCluster {name} waits for approval; approving as the operator (etcdops approve {name})")
    decide_approval(name, "approve", None, store=state, sfn=sfn, now=datetime.now(UTC), by="demo")
    result = _wait(
        "RestoreCluster to finish",
        lambda: (d := sfn.describe_execution(executionArn=arn))["status"] != "RUNNING" and d,
        timeout,
    )
    timeline(f"RestoreCluster {result['status']}")
    if result["status"] != "SUCCEEDED":
        raise DemoError(f"demo: RestoreCluster ended {result['status']}; see: etcdops runbook show {name}")
    health = _wait(
        "3 healthy voters", lambda: (h := _probe(cluster)).has_quorum and len(h.healthy_voters) == 3 and h, 60
    )
    with cluster.client() as client:
        stored = {kv.key: kv.value for kv in client.range(b"/demo/", prefix=True).kvs}
    if stored != written:
        raise DemoError(f"demo: the restored keys differ from the backup ({len(stored)} != {len(written)})")
    timeline(f"restored: {_summary(health)}; all {len(written)} keys back exactly as backed up")
