"""UpgradeCluster through the real state machine on a real 3-member TLS cluster of etcd 3.4.23, with the
autopilot running beside it, a policy of ``approval: always`` (each upgrade waits for the operator's
approval), and a writer throughout. One cluster, in the order an operator could meet it:

* refused paths (3.4 -> 3.6 skips a minor; a version etcdops does not know) fail at the path check and
  change nothing: no member was restarted, no approval asked;
* an upgrade to 3.5.30 whose binary does not start on the second member it meets: the first member runs
  3.5.30, the second was rolled back to 3.4.23, the cluster is healthy and mixed, and the failure
  message's report says so;
* the same upgrade with a good binary finishes it: every member on 3.5.30, the leader last (the member
  that led when its turn came went after the others, its leadership moved first), the cluster version
  3.5, and no acknowledged write lost.

Not parametrized by version: 3.4.23 -> 3.5.30 is the scenario (3.5.1 -> 3.5.30 runs step by step in
tests/integration/test_upgrade_steps.py).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from autopilot_scenarios import executions, running_autopilot, wait_for
from builders import Writer, binaries_failing_after, led_last
from etcd_versions import etcd_flavour

from etcdops.app.approval import decide_approval
from etcdops.app.probe import probe_cluster
from etcdops_local.aws.stack import LocalAws, execution_history, execution_name, start_execution, wait_for_execution
from etcdops_local.cli.story import outcome
from etcdops_local.cluster import EtcdBinaries, LocalCluster

pytestmark = pytest.mark.e2e


def upgrade(pilot: SimpleNamespace, version: str) -> tuple[dict[str, Any], list[tuple[str, str, str | None]]]:
    """UpgradeCluster to ``version``, approved by the operator if it asks (the policy says ``always``), run
    to its end: its description and its steps."""
    machine = pilot.stack.state_machines["UpgradeClusterStateMachine"]
    document = {"cluster": "local", "version": version, "reason": "test"}
    name = execution_name("upgrade")
    arn = start_execution(pilot.sfn, machine, document, name=name)

    def asked_or_ended() -> str | None:
        if pilot.state.load_approval(name):
            return "asked"
        return "ended" if pilot.sfn.describe_execution(executionArn=arn)["status"] != "RUNNING" else None

    if wait_for("the approval request or the end", asked_or_ended, timeout=1200) == "asked":
        decide_approval(name, "approve", None, store=pilot.state, sfn=pilot.sfn, now=datetime.now(UTC), by="test")
    ended = wait_for_execution(pilot.sfn, arn, timeout=1200)
    return ended, [(s.name, s.status, s.error) for s in execution_history(pilot.sfn, arn)]


def observed(cluster: LocalCluster) -> tuple[dict[str, str | None], str | None, str | None, bool]:
    """Each member's version, the leader's name, the cluster version, and whether every member is healthy."""
    with cluster.client() as client:
        health = probe_cluster(client)
    leader = health.member(health.leader or 0)
    healthy = all(m.healthy for m in health.members) and leader is not None
    return {m.name: m.version for m in health.members}, leader and leader.name, health.cluster_version, healthy


def pids(cluster: LocalCluster) -> dict[str, int | None]:
    return {m.name: m.pid for m in cluster.state().members}


@pytest.mark.timeout(1800)  # a hang guard only
def test_refused_failed_and_finished_upgrades_from_34_to_35(
    start_cluster: Any, etcd3530: EtcdBinaries, tmp_path: Path
) -> None:
    # Given a 3-member TLS cluster on 3.4.23 whose hosts have a 3.5.30 that starts once only (broken on the
    # second member it meets, whichever that is), the autopilot, and a writer
    cluster: LocalCluster = start_cluster(etcd_flavour("etcd34"))
    versions, leader, _, _ = observed(cluster)
    assert set(versions.values()) == {"3.4.23"} and leader
    cluster.add_binaries(binaries_failing_after(etcd3530, tmp_path / "broken", starts=1))
    writer = Writer(cluster)
    writer.thread.start()
    with LocalAws() as aws, running_autopilot(aws, cluster, approval="always") as pilot:
        # When an upgrade skips a minor, or names a version etcdops does not know
        before = pids(cluster)
        for version, reason in (("3.6.0", "skips a minor version"), ("3.9.1", "unknown version 3.9.1")):
            ended, steps = upgrade(pilot, version)
            # Then it failed at the path check, having restarted no member
            assert ended["status"] == "FAILED", steps
            assert ("Check the upgrade path", "caught", "UpgradeRefusedError") in steps, steps
            assert not any(name.startswith(("Wait for approval", "Stop", "Swap")) for name, _, _ in steps)
            subject = f"etcdops: UpgradeCluster FAILED for local (to etcd {version})"
            body = wait_for("the refusal", lambda s=subject: pilot.inbox() and pilot.bodies.get(s))
            assert reason in body and "Nothing was changed" in body, body
        assert pids(cluster) == before and observed(cluster)[0] == versions

        # When the upgrade to 3.5.30 meets the binary that does not start on its second member
        ended, steps = upgrade(pilot, "3.5.30")

        # Then (after the approval the policy asks for) that member was rolled back: the cluster is healthy
        # and mixed, one member on 3.5.30, and the runbook failed saying so
        assert ("Wait for approval", "succeeded", None) in steps, steps
        assert ended["status"] == "FAILED", steps
        assert ("Roll the member back to its old binary", "succeeded", None) in steps, steps
        mixed, _, cluster_version, healthy = observed(cluster)
        (first,) = [name for name, version in mixed.items() if version == "3.5.30"]
        assert sorted(mixed.values()) == ["3.4.23", "3.4.23", "3.5.30"] and healthy and cluster_version == "3.4.0"
        subject = "etcdops: UpgradeCluster FAILED for local (to etcd 3.5.30)"
        body = wait_for("the failure report", lambda: pilot.inbox() and pilot.bodies.get(subject))
        failed = re.search(r"Member (\S+) was rolled back to 3\.4\.23 and is healthy", body)
        assert failed and failed.group(1) != first, body
        (untouched,) = set(mixed) - {first, failed.group(1)}
        assert "runs mixed versions" in body and f"  {first}: 3.4.23 -> 3.5.30 in " in body, body
        assert f"  {failed.group(1)}: 3.4.23 -> failed on 3.5.30, rolled back to 3.4.23" in body, body
        assert f"  {untouched}: 3.4.23, not upgraded" in body, body

        # When it runs again with a good binary
        cluster.add_binaries(etcd3530)
        ended, steps = upgrade(pilot, "3.5.30")

        # Then the two members left run 3.5.30, the leader went last, and the cluster version is 3.5
        assert ended["status"] == "SUCCEEDED", steps
        report = json.loads(ended["output"])
        assert {u["name"] for u in report["upgraded"]} == {failed.group(1), untouched}
        assert led_last(report["upgraded"]), report["upgraded"]
        done, _, cluster_version, healthy = observed(cluster)
        assert set(done.values()) == {"3.5.30"} and healthy and cluster_version == "3.5.0"
        assert report["cluster_version_after"] == "3.5.0"
        # and `runbook show` says each member's version before and after in its outcome line
        shown = outcome("SUCCEEDED", report, [])
        assert f"{first} on 3.5.30 already" in shown and "cluster version 3.4.0 -> 3.5.0" in shown, shown
        assert all(f"{name} 3.4.23 -> 3.5.30" in shown for name in (failed.group(1), untouched)), shown
        # and the autopilot, which saw each member stopped, replaced none: the upgrade held the lock
        assert executions(pilot) == []
    # and no acknowledged write was lost
    assert writer.acked and not writer.lost()
