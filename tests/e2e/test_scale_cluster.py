"""ScaleCluster through the real state machine on a real 3-member TLS cluster of etcd 3.5.30, in the stack of
template.yaml with a policy of ``approval: always`` (each run waits for the operator's approval), a writer
and a sampler of the member list throughout: 3 -> 5 -> 3. In the middle 5 healthy voters, at the end 3, the
removed members' hosts retired; never more than one learner; every acknowledged write there.

No health rounds run beside it (time budget): that HealthCheck neither replaces nor warns of the 4-voter
cluster while a runbook holds the lock is the policy's (tests/unit/test_policy.py), and the autopilot's
deference to a runbook's lock is shown with real rounds in tests/e2e/test_upgrade_cluster.py.

Not parametrized by version: the same 3 -> 5 -> 3 runs step by step (each step twice) on 3.4.23 in
tests/integration/test_scale_steps.py; here the state machine's wiring is what is under test.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from autopilot_scenarios import running_autopilot, wait_for
from builders import Sampler, Writer

from etcdops.app.approval import decide_approval
from etcdops.app.probe import probe_cluster
from etcdops_local.aws.stack import LocalAws, execution_history, execution_name, start_execution, wait_for_execution
from etcdops_local.cluster import EtcdBinaries, LocalCluster

pytestmark = pytest.mark.e2e


def scale(pilot: SimpleNamespace, size: int) -> tuple[dict[str, Any], list[tuple[str, str, str | None]]]:
    """ScaleCluster to ``size``, approved by the operator when it asks, run to its end: its description and
    its steps."""
    machine = pilot.stack.state_machines["ScaleClusterStateMachine"]
    name = execution_name(f"scale-{size}")
    arn = start_execution(pilot.sfn, machine, {"cluster": "local", "size": size, "reason": "test"}, name=name)
    asked = wait_for("the approval request", lambda: pilot.state.load_approval(name), timeout=600)
    assert f"to {size} voting members" in asked.summary, asked.summary
    decide_approval(name, "approve", None, store=pilot.state, sfn=pilot.sfn, now=datetime.now(UTC), by="test")
    ended = wait_for_execution(pilot.sfn, arn, timeout=1200)
    return ended, [(s.name, s.status, s.error) for s in execution_history(pilot.sfn, arn)]


def voters(cluster: LocalCluster) -> tuple[list[str], bool]:
    with cluster.client() as client:
        health = probe_cluster(client)
    return sorted(m.name for m in health.voters), health.has_quorum and all(m.healthy for m in health.members)


@pytest.mark.timeout(1800)  # a hang guard only
def test_3_to_5_to_3_through_the_state_machine_with_a_writer(start_cluster: Any, etcd3530: EtcdBinaries) -> None:
    # Given a 3-member TLS cluster on 3.5.30, its stack asking for approvals, a writer and a sampler
    cluster: LocalCluster = start_cluster(etcd3530)
    before, _ = voters(cluster)
    writer, sampler = Writer(cluster), Sampler(cluster)
    writer.thread.start()
    sampler.thread.start()
    with LocalAws() as aws, running_autopilot(aws, cluster, approval="always", schedules=False) as pilot:
        # When ScaleCluster runs to 5 (approved)
        ended, steps = scale(pilot, 5)

        # Then it succeeded, adding one member at a time: 5 healthy voters
        assert ended["status"] == "SUCCEEDED", steps
        grown = json.loads(ended["output"])
        assert [(c["kind"], c["voters_after"]) for c in grown["changes"]] == [("add", 4), ("add", 5)]
        assert [name for name, _, _ in steps].count("Promote it once caught up") >= 2
        middle, healthy = voters(cluster)
        assert len(middle) == 5 and healthy and set(before) < set(middle), middle

        # When it runs back to 3 (approved)
        ended, steps = scale(pilot, 3)

        # Then it succeeded, removing one follower at a time, their hosts retired: 3 healthy voters
        assert ended["status"] == "SUCCEEDED", steps
        shrunk = json.loads(ended["output"])
        assert [(c["kind"], c["voters_after"]) for c in shrunk["changes"]] == [("remove", 4), ("remove", 3)]
        after, healthy = voters(cluster)
        assert len(after) == 3 and healthy and set(after) <= set(middle), after
        assert {m.name for m in cluster.state().members} == set(after)
        subject = "etcdops: scaled local from 5 to 3 voting members"
        assert "removed" in wait_for("the report", lambda: pilot.inbox() and pilot.bodies.get(subject))
    sampler.finish()
    # and there never was more than one learner, and no acknowledged write was lost
    assert sampler.samples > 10 and sampler.most_learners <= 1 and sampler.voters <= {3, 4, 5}, vars(sampler)
    assert writer.acked and not writer.lost()
