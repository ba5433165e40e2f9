"""The UpgradeCluster steps on a real 3-member TLS cluster, driven in runbook order, each step twice.

The state machine itself runs in tests/e2e/test_upgrade_cluster.py (3.4.23 -> 3.5.30, a failed member
rolled back, refused paths); here each step is called directly, twice in a row as after a crash right
after it finished (invariant 7), on a 3.5.1 cluster upgraded to 3.5.30 while a writer runs; then, with
one member killed, no step stops another one (invariant 16: never two members down); and 3.4 -> 3.5 with
authentication on is refused on a real 3.4.23 cluster. Not parametrized by etcd version: the versions are
the upgrade's own.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

import pytest
from builders import Writer, led_last
from etcd_versions import etcd_flavour
from retries import with_retries
from test_replace_steps import context_for

from etcdops.app.probe import probe_cluster
from etcdops.app.runbook import ClusterNotReadyError, RunbookContext, upgrade
from etcdops.domain.errors import UpgradeRefusedError
from etcdops_local.cluster import EtcdBinaries, LocalCluster

pytestmark = pytest.mark.integration

BEFORE_LOOP = ["AcquireLock", "CheckPath", "EnsureBackup", "Preflight"]
PER_MEMBER = ["MoveLeadership", "StopMember", "SwapBinary", "StartMember", "WaitMemberUpgraded"]
AFTER_LOOP = ["CheckClusterVersion", "ReleaseLock", "NotifySuccess"]


def twice(ctx: RunbookContext, step: str, doc: dict[str, Any]) -> dict[str, Any]:
    for _ in range(2):
        doc = with_retries(lambda doc=doc: upgrade.run_step(ctx, step, doc))  # type: ignore[misc]
    return doc


def run_upgrade(ctx: RunbookContext, doc: dict[str, Any]) -> dict[str, Any]:
    """The state machine's order, every step twice: the loop until NextMember says done."""
    for step in BEFORE_LOOP:
        doc = twice(ctx, step, doc)
    while not (doc := twice(ctx, "NextMember", doc))["done"]:
        for step in PER_MEMBER:
            doc = twice(ctx, step, doc)
    for step in AFTER_LOOP:
        doc = twice(ctx, step, doc)
    return doc


def versions(cluster: LocalCluster) -> dict[str, str | None]:
    with cluster.client() as client:
        return {m.name: m.version for m in probe_cluster(client).members}


def test_351_to_3530_each_step_twice_with_a_writer(
    start_cluster: Any, etcd351: EtcdBinaries, etcd3530: EtcdBinaries
) -> None:
    # Given a 3-member TLS cluster on 3.5.1 whose hosts also have 3.5.30, and a writer
    cluster: LocalCluster = start_cluster(etcd351)
    cluster.add_binaries(etcd3530)
    ctx = context_for(cluster)
    writer = Writer(cluster)
    writer.thread.start()

    # When UpgradeCluster runs to 3.5.30, every step twice
    doc = run_upgrade(ctx, {"cluster": "local", "execution": "upgrade-test-1", "version": "3.5.30"})

    # Then every member runs 3.5.30, the member that led when its turn came went last, and no acknowledged
    # write is lost
    assert set(versions(cluster).values()) == {"3.5.30"}
    order = [u["name"] for u in doc["upgraded"]]
    assert sorted(order) == ["m1", "m2", "m3"] and led_last(doc["upgraded"]), doc["upgraded"]
    assert writer.acked and not writer.lost()
    # and the cluster version stayed 3.5 throughout; the report says each member's before and after
    assert doc["cluster_version_before"] == doc["cluster_version_after"] == "3.5.0"
    ((subject, body, _),) = ctx.notifier.messages  # type: ignore[attr-defined]
    assert subject == "etcdops: upgraded local from etcd 3.5.1 to 3.5.30"
    assert all(f"  {name}: 3.5.1 -> 3.5.30 in " in body for name in order), body
    assert ctx.state.get_lock("local") is None or not ctx.state.get_lock("local").is_active(ctx.now())  # type: ignore[union-attr]

    # and a second run finds nothing to do, and a downgrade or a skipped minor is refused, changing nothing
    again = twice(ctx, "CheckPath", {"cluster": "local", "execution": "upgrade-test-2", "version": "3.5.30"})
    assert again["nothing_to_do"] is True
    refused = (("3.5.1", "downgrade"), ("3.6.0", "cannot check that on the hosts"), ("4.0.0", "unknown version"))
    for version, reason in refused:
        with pytest.raises(UpgradeRefusedError, match=reason):
            upgrade.run_step(ctx, "CheckPath", {"cluster": "local", "execution": "upgrade-test-3", "version": version})
    assert set(versions(cluster).values()) == {"3.5.30"}

    # When a member dies, Then no member is picked or stopped for an upgrade (invariant 16)
    cluster.kill(order[0])
    second = doc["upgraded"][1]
    current = {"name": second["name"], "id": second["id"], "before": "3.5.1", "was_leader": False}
    for step in ("NextMember", "StopMember"):
        with pytest.raises(ClusterNotReadyError, match=f"{order[0]}"):
            upgrade.run_step(ctx, step, {**doc, "version": "3.5.30", "current": current})
    assert {p.name: p.state for p in cluster.ps()}[second["name"]] == "running"


def test_34_to_35_is_refused_with_auth_enabled_and_changes_nothing(start_cluster: Any, etcd3530: EtcdBinaries) -> None:
    # Given a one-member 3.4.23 cluster with authentication on (our client certificate's user is root)
    cluster: LocalCluster = start_cluster(etcd_flavour("etcd34"), members=1)
    cluster.add_binaries(etcd3530)
    env = {**os.environ, **cluster.env()}
    etcdctl = str(cluster.binaries().etcdctl)
    commands = (
        ["user", "add", "root", "--new-user-password=not-used"],
        ["user", "add", "etcdops", "--no-password"],
        ["user", "grant-role", "etcdops", "root"],
        ["auth", "enable"],
    )
    for command in commands:
        subprocess.run([etcdctl, *command], env=env, check=True, capture_output=True)
    with cluster.client() as client:
        assert client.auth_enabled()
    pid = cluster.state().members[0].pid

    # When UpgradeCluster checks the path to 3.5.30, Then it is refused for the auth gate, and nothing changed
    ctx = context_for(cluster)
    with pytest.raises(UpgradeRefusedError, match="not a supported rolling upgrade with auth enabled"):
        upgrade.run_step(ctx, "CheckPath", {"cluster": "local", "execution": "upgrade-auth-1", "version": "3.5.30"})
    assert versions(cluster) == {"m1": "3.4.23"} and cluster.state().members[0].pid == pid


def retried(ctx: RunbookContext, step: str, doc: dict[str, Any]) -> dict[str, Any]:
    """``step`` once, retried as the state machine does on the errors it retries."""
    return with_retries(lambda: upgrade.run_step(ctx, step, doc))


class Crash(Exception):
    """The process running a step dies here (what kill -9 of its Lambda would leave behind)."""


def crash_once_after(compute: Any, method: str) -> None:
    """``compute.method`` does its work, then the step's process "dies"; the next call behaves normally."""
    real = getattr(compute, method)

    def once(*args: Any, **kwargs: Any) -> Any:
        setattr(compute, method, real)
        real(*args, **kwargs)
        raise Crash(f"killed right after {method}")

    setattr(compute, method, once)


def down(cluster: LocalCluster) -> list[str]:
    return [p.name for p in cluster.ps() if p.state != "running"]


def test_steps_crashing_halfway_run_again_and_the_member_comes_back(
    start_cluster: Any, etcd351: EtcdBinaries, etcd3530: EtcdBinaries
) -> None:
    # Given a 3-member TLS cluster on 3.5.1 whose hosts also have 3.5.30, a writer, and an upgrade at its first member
    cluster: LocalCluster = start_cluster(etcd351)
    cluster.add_binaries(etcd3530)
    ctx = context_for(cluster)
    writer = Writer(cluster)
    writer.thread.start()
    doc: dict[str, Any] = {"cluster": "local", "execution": "upgrade-crash-1", "version": "3.5.30"}
    doc = upgrade.run_step(ctx, "CheckPath", doc)
    doc = retried(ctx, "NextMember", doc)
    doc = retried(ctx, "MoveLeadership", doc)
    first = doc["current"]["name"]

    # When each of StopMember, SwapBinary and StartMember dies right after its host action, and runs again
    for step, action in (("StopMember", "stop_etcd"), ("SwapBinary", "run_action"), ("StartMember", "start_etcd")):
        crash_once_after(ctx.compute, action)
        with pytest.raises(Crash):
            upgrade.run_step(ctx, step, doc)
        assert down(cluster) == ([] if step == "StartMember" else [first])  # never two members down
        doc = retried(ctx, step, doc)
        assert down(cluster) == ([] if step == "StartMember" else [first])
    doc = retried(ctx, "WaitMemberUpgraded", doc)

    # Then the member is back, healthy, on 3.5.30, the others untouched
    assert versions(cluster)[first] == "3.5.30" and [u["name"] for u in doc["upgraded"]] == [first]
    assert sorted(v for n, v in versions(cluster).items() if n != first) == ["3.5.1", "3.5.1"]

    # When the next member's SwapBinary dies after the swap (the state machine catches it: roll back), and the
    # rollback itself dies after swapping back, before the start, and runs again
    doc = retried(ctx, "NextMember", doc)
    second = doc["current"]["name"]
    for step in ("MoveLeadership", "StopMember"):
        doc = retried(ctx, step, doc)
    crash_once_after(ctx.compute, "run_action")
    with pytest.raises(Crash):
        upgrade.run_step(ctx, "SwapBinary", doc)
    crash_once_after(ctx.compute, "run_action")
    with pytest.raises(Crash):
        upgrade.run_step(ctx, "RollBackMember", doc)
    assert down(cluster) == [second]
    doc = retried(ctx, "RollBackMember", doc)

    # Then that member runs its old 3.5.1 again, nobody else went down, and no acknowledged write is lost
    assert doc["current"]["rolled_back_to"] == "3.5.1" and down(cluster) == []
    assert versions(cluster)[second] == "3.5.1" and versions(cluster)[first] == "3.5.30"
    assert writer.acked and not writer.lost()


def test_no_rollback_once_the_cluster_version_moved(start_cluster: Any, etcd3530: EtcdBinaries) -> None:
    # Given a one-member 3.4.23 cluster upgraded to 3.5.30 by the runbook's steps: every member on 3.5.30, and
    # the cluster version 3.5
    cluster: LocalCluster = start_cluster(etcd_flavour("etcd34"), members=1)
    cluster.add_binaries(etcd3530)
    ctx = context_for(cluster)
    doc: dict[str, Any] = {"cluster": "local", "execution": "upgrade-moved-1", "version": "3.5.30"}
    doc = upgrade.run_step(ctx, "CheckPath", doc)
    doc = upgrade.run_step(ctx, "NextMember", doc)
    current = doc["current"]
    for step in PER_MEMBER:
        doc = retried(ctx, step, doc)
    doc = retried(ctx, "CheckClusterVersion", doc)
    assert doc["cluster_version_after"] == "3.5.0" and versions(cluster) == {"m1": "3.5.30"}
    pid = cluster.state().members[0].pid

    # When the member is asked to roll back to 3.4.23, Then that is refused in one line naming invariant 16,
    # and nothing changed
    with pytest.raises(upgrade.RollbackFailedError) as refused:
        upgrade.run_step(ctx, "RollBackMember", {**doc, "current": current})
    reason = str(refused.value)
    assert "\n" not in reason and "invariant 16" in reason and "cluster version is 3.5.0 already" in reason
    assert versions(cluster) == {"m1": "3.5.30"} and cluster.state().members[0].pid == pid
    assert down(cluster) == []
