"""Two stacks side by side: template.yaml created twice in one emulated account and region, each
healing its own cluster.

Every named resource of the template derives its name from the stack, so a second deployment (one
per cluster) creates beside the first, and each stack's functions act only on their own cluster: its
configuration parameter, its table, its state machines, its topic.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from types import SimpleNamespace

import pytest
from autopilot_scenarios import executions, finished, follower, healthy, running_autopilot, wait_for

from etcdops_local.aws.stack import LocalAws
from etcdops_local.cluster import EtcdBinaries, LocalCluster

pytestmark = pytest.mark.e2e
CLUSTERS = ("alpha", "beta")


@pytest.fixture
def two_autopilots(tmp_path: Path, etcd3530: EtcdBinaries) -> Iterator[dict[str, SimpleNamespace]]:
    with ExitStack() as stack, LocalAws() as aws:
        pilots = {}
        for name in CLUSTERS:
            cluster = LocalCluster(tmp_path / name)
            cluster.up(3, binaries=etcd3530)
            stack.callback(cluster.down)
            pilots[name] = stack.enter_context(
                running_autopilot(
                    aws,
                    cluster,
                    name=name,
                    stack_name=f"etcdops-{name}",
                    parameters={"ClusterName": name, "ClusterConfigParameter": f"/etcdops/{name}/config"},
                )
            )
        yield pilots


def replaced(pilot: SimpleNamespace, victim_id: int) -> None:
    done = wait_for(f"{pilot.stack.stack_name}'s ReplaceMember to finish", lambda: finished(pilot))
    assert [e["status"] for e in done] == ["SUCCEEDED"], pilot.sfn.describe_execution(
        executionArn=done[0]["executionArn"]
    )
    health = wait_for(
        "3 healthy voters", lambda: (h := healthy(pilot.cluster)).has_quorum and len(h.healthy_voters) == 3 and h
    )
    assert victim_id not in {m.id for m in health.voters}


def test_two_stacks_in_one_account_each_heal_their_own_cluster(two_autopilots: dict[str, SimpleNamespace]) -> None:
    alpha, beta = two_autopilots["alpha"], two_autopilots["beta"]
    assert alpha.stack.functions.keys() == beta.stack.functions.keys()
    assert not set(alpha.stack.resources.values()) & set(beta.stack.resources.values())  # nothing shared
    beta_members = {m.id for m in beta.cluster.client().member_list()}

    # When a member of alpha is killed, alpha's stack replaces it, and beta's stack does nothing
    victim = follower(alpha.cluster)
    alpha.cluster.kill(victim.name)
    replaced(alpha, victim.id)
    assert executions(beta) == []
    assert {m.id for m in beta.cluster.client().member_list()} == beta_members
    wait_for("alpha's finish message", lambda: any(f"replaced member {victim.name}" in s for s in alpha.inbox()))
    assert not any("replac" in s for s in beta.inbox())

    # When a member of beta is killed, beta's stack replaces it, and alpha's ran nothing more
    victim = follower(beta.cluster)
    beta.cluster.kill(victim.name)
    replaced(beta, victim.id)
    assert len(executions(alpha)) == 1
    assert alpha.state.get_lock("alpha") is None and beta.state.get_lock("beta") is None
