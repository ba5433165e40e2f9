"""A fleet from one deployment: three clusters under one stack of template.yaml. The default cluster
(ClusterConfigParameter) and two registered ones (`etcdops cluster add`); the scheduled HealthCheck
fans out one asynchronous round per registered cluster; a member killed in one of them is repaired by
ReplaceMember with that cluster's configuration, and the others see no change.

And the fleet brake (invariant 15) on real clusters: five under one stack, a member killed in three of
them at once, the brake at 40 %."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from autopilot_scenarios import (
    TEST_SCHEDULES,
    configure,
    executions,
    finished,
    follower,
    healthy,
    running_autopilot,
    wait_for,
)
from builders import Writer
from etcd_versions import E2E_VERSIONS, etcd_flavour
from stack_templates import TEMPLATE

from etcdops.adapters.backup.target import open_backup_target
from etcdops.adapters.fleet_state import DynamoFleetStore
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

def test_three_of_five_clusters_failing_at_once_brake_the_fleet_and_it_resumes_by_itself(
    start_cluster: Any, etcd_binaries: EtcdBinaries
) -> None:
    """Kill one member in each of three of five clusters at once with the brake at 40 %: no membership
    change anywhere and one escalation; the members come back: nothing happens and the brake is released
    by itself (said once); then a single failure is repaired normally, every acknowledged write kept."""
    fleet = {"c1": start_cluster(etcd_binaries, 1)}  # the default cluster, one member (a bystander)
    fleet |= {name: start_cluster(etcd_binaries) for name in ("c2", "c3", "c4")}  # three members each
    fleet["c5"] = start_cluster(etcd_binaries, 1)
    # five clusters' rounds every second in one process: a generous probe deadline, so that a loaded
    # machine does not make a running member look failed (and the brake count a healthy cluster)
    patient = {"probe_deadline_seconds": 10}
    parameters = {"ClusterName": "c1", "FleetBrakeShare": "0.4"}
    with (
        LocalAws() as aws,
        running_autopilot(aws, fleet["c1"], parameters=parameters, health=patient, name="c1") as pilot,
    ):
        registry = ClusterRegistry(aws.client("ssm"))
        for name in ("c2", "c3", "c4", "c5"):
            registry.add(configure(fleet[name], health=patient, name=name), f"{name}.yaml")
        brake = DynamoFleetStore(pilot.stack.table or "", aws.client("dynamodb"))
        wait_for("every cluster's round", lambda: all(pilot.state.load_last_decision(c) for c in fleet))
        before = {name: members(each) for name, each in fleet.items()}

        def brake_messages() -> list[str]:
            return [s for s in pilot.inbox() if "FLEET BRAKE" in s]

        def rounds_after(moment: Any, names: Any) -> bool:
            return all((d := pilot.state.load_last_decision(n)) and d.decided_at > moment for n in names)

        killed = {name: follower(fleet[name]).name for name in ("c2", "c3", "c4")}
        for name, member in killed.items():
            fleet[name].kill(member)
        wait_for("the fleet brake", lambda: brake.load_brake().engaged)
        engaged_at = brake.load_brake().changed_at
        # each failing cluster decided on a replacement at least twice more while the brake held it
        for _ in range(2):
            moment = max(pilot.state.load_last_decision(n).decided_at for n in killed)
            wait_for("more rounds under the brake", lambda m=moment: rounds_after(m, killed))
        actions = {n: pilot.state.load_last_decision(n).decision.action for n in killed}
        assert actions == dict.fromkeys(killed, "REPLACE_MEMBER")
        escalation = wait_for("the escalation", brake_messages)
        assert executions(pilot) == [] and len(escalation) == 1
        assert {"c2", "c3", "c4"} <= set(pilot.bodies[escalation[0]].split("Failing: ")[1].split("\n")[0].split(", "))
        assert {name: members(each) for name, each in fleet.items()} == before  # the killed ones still listed

        # the killed members come back: the share falls, the brake is released by itself, nothing happens
        for name, member in killed.items():
            fleet[name].spawn_member(member, initial_cluster="")
        wait_for("the brake released", lambda: not brake.load_brake().engaged)
        released_at = brake.load_brake().changed_at
        assert engaged_at and released_at and released_at > engaged_at
        wait_for("a healthy round everywhere", lambda: rounds_after(released_at, fleet))
        assert {name: members(each) for name, each in fleet.items()} == before
        assert executions(pilot) == [] and len(brake_messages()) == 1
        assert any("fleet brake released" in s for s in pilot.inbox())

        # then a single failure is repaired normally (1 of 5 is no fleet problem)
        c2 = fleet["c2"]
        writer = Writer(c2)
        writer.thread.start()
        victim = follower(c2)
        c2.kill(victim.name)
        ended = wait_for("ReplaceMember to finish", lambda: finished(pilot))
        assert [e["status"] for e in ended] == ["SUCCEEDED"]
        assert '"cluster": "c2"' in pilot.sfn.describe_execution(executionArn=ended[0]["executionArn"])["input"]
        health = wait_for(
            "3 healthy voters", lambda: (h := healthy(c2)).has_quorum and len(h.healthy_voters) == 3 and h
        )
        assert victim.id not in {m.id for m in health.voters}
        assert writer.lost() == {} and writer.acked
        assert {name: members(fleet[name]) for name in ("c1", "c3", "c4", "c5")} == {
            name: before[name] for name in ("c1", "c3", "c4", "c5")
        }
        assert not brake.load_brake().engaged and len(brake_messages()) == 1
        assert sum("fleet brake released" in s for s in pilot.inbox()) == 1
