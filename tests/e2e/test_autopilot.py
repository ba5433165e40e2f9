"""The whole autopilot: real etcd, template.yaml in emulated AWS, HealthCheck on a timer, ReplaceMember
run by the Step Functions interpreter with our handlers in-process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from autopilot_scenarios import Writer, executions, finished, follower, healthy, running_autopilot, wait_for

from etcdops.approval import decide_approval
from etcdops.local import LocalCluster
from etcdops.localaws import LocalAws
from etcdops.probe import probe_cluster

pytestmark = pytest.mark.e2e


@pytest.fixture
def autopilot(cluster: LocalCluster, request: pytest.FixtureRequest) -> Iterator[SimpleNamespace]:
    with LocalAws() as aws, running_autopilot(aws, cluster, **getattr(request, "param", {})) as pilot:
        yield pilot


def test_a_killed_member_is_replaced_and_no_acknowledged_write_is_lost(
    autopilot: SimpleNamespace, cluster: LocalCluster
) -> None:
    # Given a writer and a healthy cluster, When a follower is killed -9
    writer = Writer(cluster)
    writer.thread.start()
    victim = follower(cluster)
    cluster.kill(victim.name)

    # Then the autopilot detects it, and ReplaceMember runs to SUCCEEDED
    done = wait_for("ReplaceMember to finish", lambda: finished(autopilot))
    assert [e["status"] for e in done] == ["SUCCEEDED"], autopilot.sfn.describe_execution(
        executionArn=done[0]["executionArn"]
    )
    writer.stop.set()
    writer.thread.join()

    # and the cluster is back to 3 healthy voters, with a new member instead of the victim
    health = wait_for(
        "3 healthy voters", lambda: (h := healthy(cluster)).has_quorum and len(h.healthy_voters) == 3 and h
    )
    ids = {m.id for m in health.voters}
    assert victim.id not in ids and len(ids) == 3 and not health.learners

    # and every acknowledged write is readable
    with cluster.client() as client:
        stored = {kv.key: kv.value for kv in client.range(b"/writer/", prefix=True).kvs}
    assert writer.acked and all(stored.get(k) == v for k, v in writer.acked.items())

    # and SNS carried a start and a finish message
    subjects = wait_for(
        "the finish message", lambda: (s := autopilot.inbox()) and any("replaced" in x for x in s) and s
    )
    assert any(s.startswith(f"etcdops: replacing member {victim.name}") for s in subjects)
    assert any(s.startswith(f"etcdops: replaced member {victim.name}") for s in subjects)
    assert len(executions(autopilot)) == 1


@pytest.mark.parametrize("autopilot", [{"approval": "always"}], indirect=True)
@pytest.mark.parametrize("decision", ["approve", "reject"])
def test_with_approval_always_a_human_decides(autopilot: SimpleNamespace, cluster: LocalCluster, decision: str) -> None:
    # Given approval: always, When a follower is paused (SIGSTOP: a hung host)
    victim = follower(cluster)
    cluster.pause(victim.name)
    members_before = {m.id for m in cluster.client().member_list()}

    # Then the runbook waits for the approval and has changed nothing yet
    running = wait_for(
        "the approval request",
        lambda: autopilot.state.load_approval(executions(autopilot)[0]["name"]) if executions(autopilot) else None,
    )
    assert running is not None
    assert {m.id for m in cluster.client().member_list()} == members_before

    # When the operator decides
    name = executions(autopilot)[0]["name"]
    decide_approval(
        name,
        decision,
        "not now" if decision == "reject" else None,  # type: ignore[arg-type]
        store=autopilot.state,
        sfn=autopilot.sfn,
        now=datetime.now(UTC),
        by="test",
    )
    done = wait_for("the execution to end", lambda: finished(autopilot))

    if decision == "approve":
        # the hung member was removed and its host retired (its process ended)
        assert done[0]["status"] == "SUCCEEDED"
        assert victim.id not in {m.id for m in cluster.client().member_list()}
        assert victim.name not in {p.name for p in cluster.ps()}
    else:
        cluster.resume(victim.name)
        # a rejection changes nothing
        assert done[0]["status"] == "FAILED"
        assert {m.id for m in cluster.client().member_list()} == members_before
        assert autopilot.state.get_lock("local") is None


def test_quorum_loss_is_escalated_and_the_named_restore_brings_the_data_back(
    autopilot: SimpleNamespace, cluster: LocalCluster
) -> None:
    # Given keys and a verified backup
    from etcdops.backup.job import run_backup
    from etcdops.backup.target import open_backup_target

    with cluster.client() as client:
        for i in range(50):
            client.put(f"/restore/{i:03d}", f"v{i}")
        config = cluster.config()
        store, keyring = open_backup_target(config, create_local_key=True)
        backup = run_backup(config, client, probe_cluster(client), store, keyring).manifest
        expected = {kv.key: kv.value for kv in client.range(b"/restore/", prefix=True).kvs}
        client.delete(b"/restore/000")  # a change after the backup, which the restore must undo

    # When two of three members are lost
    health = healthy(cluster)
    for member in [m for m in health.members if m.id != health.leader]:
        cluster.kill(member.name)

    # Then HealthCheck escalates, naming the backup and the exact RestoreCluster input, and changes nothing
    subjects = wait_for("the escalation", lambda: [s for s in autopilot.inbox() if "QUORUM LOST" in s])
    assert subjects and not executions(autopilot)

    # When the operator starts the restore it names and approves it
    restore_machine = autopilot.stack.state_machines["RestoreClusterStateMachine"]
    name = "restore-local-e2e"
    autopilot.sfn.start_execution(
        stateMachineArn=restore_machine,
        name=name,
        input=json.dumps({"cluster": "local", "backup_id": backup.id, "mode": "in-place"}),
    )
    wait_for("the approval request", lambda: autopilot.state.load_approval(name), timeout=120)
    decide_approval(name, "approve", None, store=autopilot.state, sfn=autopilot.sfn, now=datetime.now(UTC), by="test")

    # Then the cluster is healthy again with exactly the backed-up data
    def ended() -> dict[str, Any] | None:
        described: dict[str, Any] = autopilot.sfn.describe_execution(
            executionArn=f"{restore_machine.replace(':stateMachine:', ':execution:')}:{name}"
        )
        return described if described["status"] != "RUNNING" else None

    described = wait_for("the restore to finish", ended, timeout=300)
    assert described["status"] == "SUCCEEDED", described
    health = wait_for(
        "a healthy cluster", lambda: (h := healthy(cluster)).has_quorum and len(h.healthy_voters) == 3 and h
    )
    with cluster.client() as client:
        assert {kv.key: kv.value for kv in client.range(b"/restore/", prefix=True).kvs} == expected


def test_a_rejected_restore_touches_nothing(autopilot: SimpleNamespace, cluster: LocalCluster) -> None:
    from etcdops.backup.job import run_backup
    from etcdops.backup.target import open_backup_target

    config = cluster.config()
    store, keyring = open_backup_target(config, create_local_key=True)
    with cluster.client() as client:
        backup = run_backup(config, client, probe_cluster(client), store, keyring).manifest
        client.put(b"/after-backup", b"kept")
    processes = [(p.name, p.pid, p.state) for p in cluster.ps()]

    # When a restore is started and the operator rejects it
    machine = autopilot.stack.state_machines["RestoreClusterStateMachine"]
    name = "restore-local-rejected"
    arn = autopilot.sfn.start_execution(
        stateMachineArn=machine, name=name, input=json.dumps({"cluster": "local", "backup_id": backup.id})
    )["executionArn"]
    wait_for("the approval request", lambda: autopilot.state.load_approval(name), timeout=120)
    decide_approval(name, "reject", "not now", store=autopilot.state, sfn=autopilot.sfn, now=datetime.now(UTC), by="t")

    # Then the execution fails, nothing was stopped or restored, and the lock is free again
    described = wait_for(
        "the restore to end",
        lambda: (d := autopilot.sfn.describe_execution(executionArn=arn))["status"] != "RUNNING" and d,
    )
    assert described["status"] == "FAILED"
    assert [(p.name, p.pid, p.state) for p in cluster.ps()] == processes
    with cluster.client() as client:
        assert client.get(b"/after-backup") == b"kept"
    assert autopilot.state.get_lock("local") is None
