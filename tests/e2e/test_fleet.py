"""A fleet from one deployment: three clusters under one stack of template.yaml. The default cluster
(ClusterConfigParameter) and two registered ones (`etcdops cluster add`); the scheduled HealthCheck
fans out one asynchronous round per registered cluster; a member killed in one of them is repaired by
ReplaceMember with that cluster's configuration, and the others see no change."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from autopilot_scenarios import TEST_SCHEDULES, configure, finished, follower, healthy, wait_for
from etcd_versions import E2E_VERSIONS, etcd_flavour
from stack_templates import TEMPLATE

from etcdops.adapters.backup.target import open_backup_target
from etcdops.adapters.registry import ClusterRegistry
from etcdops.adapters.state_delta import DynamoDeltaChainStore
from etcdops.adapters.state_dynamodb import DynamoStateStore
from etcdops_local.aws.schedule import LocalScheduler
from etcdops_local.aws.stack import LocalAws, execution_history
from etcdops_local.cluster import EtcdBinaries, LocalCluster

pytestmark = pytest.mark.e2e
EVENTS = Path(__file__).resolve().parents[2] / "events"


@pytest.fixture(scope="module")
def etcd_binaries() -> EtcdBinaries:
    """The fleet runs once, on the newest etcd of the tier (time budget); a repair itself runs on each."""
    return etcd_flavour(E2E_VERSIONS[-1])


@pytest.fixture
def small(tmp_path: Path, etcd_binaries: EtcdBinaries) -> Iterator[list[LocalCluster]]:
    """Two one-member clusters (a fleet's bystanders: they only need to stay healthy)."""
    made = []
    try:
        for name in ("c1", "c3"):
            made.append(LocalCluster(tmp_path / name))
            made[-1].up(1, binaries=etcd_binaries)
        yield made
    finally:
        for each in made:
            each.down()


def members(cluster: LocalCluster) -> set[int]:
    return {m.id for m in healthy(cluster).members}


def test_a_member_killed_in_one_cluster_of_three_is_repaired_and_the_others_see_no_change(
    cluster: LocalCluster, small: list[LocalCluster]
) -> None:
    c1, c3 = small
    with LocalAws() as aws:
        stack = aws.build_stack(TEMPLATE, {"ClusterName": "c1"})
        ssm = aws.client("ssm")
        ssm.put_parameter(
            Name=stack.parameters["ClusterConfigParameter"], Type="SecureString", Value=configure(c1, name="c1")
        )
        registry = ClusterRegistry(ssm)
        registry.add(configure(cluster, name="c2"), "c2.yaml")
        registry.add(configure(c3, name="c3"), "c3.yaml")
        state = DynamoStateStore(stack.table or "", aws.client("dynamodb"))
        sfn = aws.client("stepfunctions")
        machine = stack.state_machines["ReplaceMemberStateMachine"]
        pilot = SimpleNamespace(sfn=sfn, machine=machine)
        before = {"c1": members(c1), "c3": members(c3)}

        with LocalScheduler.for_stack(stack, TEST_SCHEDULES):
            # every cluster has its rounds: the default one by the schedule, the others by the fan-out
            wait_for("every cluster's round", lambda: all(state.load_last_decision(c) for c in ("c1", "c2", "c3")))
            victim = follower(cluster)
            cluster.kill(victim.name)
            ended = wait_for("ReplaceMember to finish", lambda: finished(pilot))
        assert [e["status"] for e in ended] == ["SUCCEEDED"], [
            (step.name, step.status, step.error, step.cause)
            for step in execution_history(sfn, str(ended[0]["executionArn"]))
        ]
        run = sfn.describe_execution(executionArn=ended[0]["executionArn"])
        assert '"cluster": "c2"' in run["input"]

        # c2 is whole again, without the victim; c2's registered configuration names the new member
        health = wait_for(
            "3 healthy voters", lambda: (h := healthy(cluster)).has_quorum and len(h.healthy_voters) == 3 and h
        )
        assert victim.id not in {m.id for m in health.voters}
        assert set(registry.load("c2").endpoints) == {m.client_urls[0] for m in health.members}

        # the others saw no change: the same members, no repair, no lock, no change decided (at most a
        # notice: these one-member clusters have no backup yet)
        assert {"c1": members(c1), "c3": members(c3)} == before
        for name in ("c1", "c3"):
            assert state.load_repairs(name) == [] and state.get_lock(name) is None
            last = state.load_last_decision(name)
            assert last is not None and last.decision.action in ("NONE", "NOTIFY"), last
            assert last.decision.target_member_id is None
        assert len(sfn.list_executions(stateMachineArn=machine)["executions"]) == 1

        # the scheduled Backup fans out too: one backup for each registered cluster, in its own store
        for each in (c1, c3):  # their keys, as the operator makes them (the Backup function makes none)
            open_backup_target(each.config(), create_local_key=True)
        assert not list(c3.backup_dir.glob("*.snapshot.enc"))
        result = aws.invoke(stack, "BackupFunction", json.loads((EVENTS / "backup_schedule.json").read_text()))
        assert result["fanned_out"] == ["c2", "c3"] and result["backup_id"]
        wait_for("c3's own backup", lambda: list(c3.backup_dir.glob("*.snapshot.enc")))

        # and so does DeltaBackup: every registered cluster's delta chain, each head in its own partition
        schedule = json.loads((EVENTS / "delta_backup_schedule.json").read_text())
        delta = aws.invoke(stack, "DeltaBackupFunction", schedule)
        assert delta["fanned_out"] == ["c2", "c3"] and delta["action"] in ("new-chain", "delta", "none")
        chains = DynamoDeltaChainStore(state)
        wait_for("c2's and c3's delta chains", lambda: all(chains.load_chain_head(c) for c in ("c2", "c3")))
        for each in (c1, cluster, c3):  # each chain starts from a full backup in that cluster's own store
            head = chains.load_chain_head(each.config().name)
            assert head is not None and list(each.backup_dir.glob(f"{head.chain_id}*")), each.config().name
