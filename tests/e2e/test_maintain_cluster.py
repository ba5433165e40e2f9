"""MaintainCluster through the real state machine on a real 3-member TLS cluster of etcd 3.5.30 made with a
512 KiB backend quota (``local up --quota-backend-bytes``), the autopilot running beside it with a policy
of ``approval: always``: the cluster filled to NOSPACE is brought back to accepting writes by
MaintainCluster's state machine once the operator approved, with no acknowledged write lost and the
alarm disarmed. Before that, a run that finds the cluster lock held by another operation ends at once as
skipped, having looked at nothing.

Not parametrized by version: the steps run on 3.4.23, 3.5.1 and 3.5.30 in
tests/integration/test_maintain_steps.py; here the state machine's wiring is what is under test.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from autopilot_scenarios import running_autopilot, wait_for
from builders import QUOTA, discard, fill_to_nospace, none_lost

from etcdops.app.approval import decide_approval
from etcdops.domain.config import MaintenanceConfig
from etcdops_local.aws.stack import LocalAws, execution_history, execution_name, start_execution, wait_for_execution
from etcdops_local.cluster import EtcdBinaries, LocalCluster

pytestmark = pytest.mark.e2e


@pytest.fixture
def small_cluster(tmp_path: Path, etcd3530: EtcdBinaries) -> Iterator[LocalCluster]:
    cluster = LocalCluster(tmp_path / "stack")
    cluster.up(3, binaries=etcd3530, quota_backend_bytes=QUOTA)
    try:
        yield cluster
    finally:
        discard(cluster)


@pytest.mark.timeout(900)  # a hang guard only
def test_a_cluster_out_of_space_is_recovered_by_the_state_machine(small_cluster: LocalCluster) -> None:
    cluster = small_cluster
    # Given a cluster filled to NOSPACE by overwrites
    acked, refused = fill_to_nospace(cluster)
    maintenance = MaintenanceConfig(retention_revisions=8, pause_between_members_seconds=1)
    with (
        LocalAws() as aws,
        running_autopilot(aws, cluster, maintenance=maintenance, approval="always") as pilot,
    ):
        machine = pilot.stack.state_machines["MaintainClusterStateMachine"]
        # When it starts while another operation holds the cluster lock, Then it ends at once, skipped
        pilot.state.acquire_lock("local", "another-runbook", 600, datetime.now(UTC))
        held = start_execution(pilot.sfn, machine, {"cluster": "local"}, name=execution_name("maintain"))
        assert wait_for_execution(pilot.sfn, held, timeout=600)["status"] == "SUCCEEDED"
        skipped = [s.name for s in execution_history(pilot.sfn, held)]
        assert "Skipped: another operation holds the lock" in skipped and "Look at the cluster" not in skipped
        pilot.state.release_lock("local", "another-runbook")

        # When MaintainCluster runs (as its schedule starts it), and the operator approves what it asks
        name = execution_name("maintain")
        arn = start_execution(pilot.sfn, machine, {"cluster": "local"}, name=name)
        asked = wait_for("the approval request", lambda: pilot.state.load_approval(name), timeout=600)
        assert "Recover etcd cluster local from NOSPACE" in asked.summary, asked.summary
        decide_approval(name, "approve", None, store=pilot.state, sfn=pilot.sfn, now=datetime.now(UTC), by="test")
        ended = wait_for_execution(pilot.sfn, arn, timeout=600)
        steps = [(s.name, s.status, s.error) for s in execution_history(pilot.sfn, arn)]

        # Then it succeeded: every member defragmented one after another, the alarm disarmed
        assert ended["status"] == "SUCCEEDED", steps
        report = json.loads(ended["output"])
        assert report["mode"] == "nospace" and sorted(d["name"] for d in report["defragmented"]) == ["m1", "m2", "m3"]
        assert [d["was_leader"] for d in report["defragmented"]] == [False, False, True]
        assert [name for name, _, _ in steps].count("Pause between members") == 2
        subject = "etcdops: local recovered from NOSPACE; writes accepted again"
        assert "Alarm disarmed" in wait_for("the recovery message", lambda: pilot.inbox() and pilot.bodies.get(subject))
    with cluster.client() as client:
        assert client.alarms() == []
        # and writes are accepted again, with no acknowledged write lost
        client.put("/after", "ok")
        stored = {kv.key: kv.value for kv in client.range(b"/fill/", prefix=True).kvs}
    assert none_lost(stored, acked, refused)
