"""The ScaleCluster steps on a real 3-member TLS cluster of etcd 3.4.23, 3 -> 5 -> 3 with a writer running,
driven in the state machine's order, each step twice in a row as after a crash right after it finished
(invariant 7). A sampler reads the member list all along: at most one learner at any time. The state machine
itself runs the same 3 -> 5 -> 3 on 3.5.30 in tests/e2e/test_scale_cluster.py; one version each keeps the
tiers' time (not parametrized by version).
"""

from __future__ import annotations

from typing import Any

import pytest
from builders import Sampler, Writer
from etcd_versions import etcd_flavour
from retries import retry, with_retries
from test_replace_steps import context_for

from etcdops.app.probe import probe_cluster
from etcdops.app.runbook import RunbookContext, scale
from etcdops.app.runbook.members import SecondLearnerError
from etcdops.domain.errors import EtcdUnhealthyClusterError, ScaleRefusedError
from etcdops_local.cluster import LocalCluster

pytestmark = pytest.mark.integration

BEFORE_LOOP = ["AcquireLock", "CheckScale", "EnsureBackup", "Preflight"]
PATHS = {
    "add": ["LaunchMember", "AddLearner", "StartMember", "PromoteLearner", "WaitUntilHealthy", "RepointClients"],
    "remove": ["RemoveMember", "WaitUntilHealthy", "RetireHost"],
}
AFTER_LOOP = ["CheckSize", "ReleaseLock", "NotifySuccess"]


def twice(ctx: RunbookContext, step: str, doc: dict[str, Any]) -> dict[str, Any]:
    for _ in range(2):
        doc = with_retries(lambda doc=doc: scale.run_step(ctx, step, doc))  # type: ignore[misc]
    return doc


def run_scale(ctx: RunbookContext, size: int, execution: str) -> dict[str, Any]:
    """The state machine's order, every step twice: the loop until NextChange says done."""
    doc: dict[str, Any] = {"cluster": "local", "execution": execution, "size": size, "reason": "test"}
    for step in BEFORE_LOOP:
        doc = twice(ctx, step, doc)
    while not (doc := twice(ctx, "NextChange", doc))["done"]:
        for step in PATHS[doc["kind"]]:
            doc = twice(ctx, step, doc)
    for step in AFTER_LOOP:
        doc = twice(ctx, step, doc)
    return doc


def voters(cluster: LocalCluster) -> tuple[list[str], bool]:
    """The voters' names, and whether every member is healthy with a leader."""
    with cluster.client() as client:
        health = probe_cluster(client)
    return sorted(m.name for m in health.voters), health.has_quorum and all(m.healthy for m in health.members)


def test_3_to_5_to_3_on_34_each_step_twice_with_a_writer(start_cluster: Any) -> None:
    # Given a 3-member TLS cluster on 3.4.23, a writer and a sampler of the member list
    cluster: LocalCluster = start_cluster(etcd_flavour("etcd34"))
    ctx = context_for(cluster)
    before, _ = voters(cluster)

    # When an even size is asked, Then it is refused in one line and no lock is taken
    for size, why in ((4, "size 4 is even"), (9, "beyond 7"), (0, "below 1")):
        doc = {"cluster": "local", "execution": "scale-refused", "size": size}
        with pytest.raises(ScaleRefusedError, match=why):
            scale.run_step(ctx, "AcquireLock", doc)
    assert ctx.state.get_lock("local") is None

    writer, sampler = Writer(cluster), Sampler(cluster)
    writer.thread.start()
    sampler.thread.start()

    # When the cluster scales to 5, every step twice
    grown = run_scale(ctx, 5, "scale-test-5")

    # Then it has 5 healthy voters, the 2 new ones taking clients
    names, healthy = voters(cluster)
    added = sorted(set(names) - set(before))
    assert len(names) == 5 and healthy and len(added) == 2, names
    assert [c["kind"] for c in grown["changes"]] == ["add", "add"]
    assert all(cluster.state().members and ctx.compute.find(name) for name in added)
    targets = set(cluster.state().targets)
    assert {ctx.compute.find(name).client_url for name in added} <= targets  # type: ignore[union-attr]
    assert set(cluster.config().endpoints) == {ctx.compute.find(n).client_url for n in names}  # type: ignore[union-attr]

    # When it scales back to 3
    shrunk = run_scale(ctx, 3, "scale-test-3")

    # Then 3 healthy voters are left, the removed members' hosts retired and out of the load balancer
    names, healthy = voters(cluster)
    assert len(names) == 3 and healthy, names
    removed = [c["name"] for c in shrunk["changes"]]
    assert [c["kind"] for c in shrunk["changes"]] == ["remove", "remove"] and not set(removed) & set(names)
    assert all(ctx.compute.find(name) is None for name in removed)
    assert {m.name for m in cluster.state().members} == set(names)
    assert len(cluster.state().targets) == 3 and set(cluster.config().endpoints) == set(cluster.state().targets)
    sampler.finish()
    # and there never was more than one learner, and every acknowledged write is there
    assert sampler.samples > 10 and sampler.most_learners <= 1 and sampler.voters <= {3, 4, 5}, vars(sampler)
    assert writer.acked and not writer.lost()
    messages = [subject for subject, _, _ in ctx.notifier.messages]  # type: ignore[attr-defined]
    assert messages == [
        "etcdops: scaled local from 3 to 5 voting members",
        "etcdops: scaled local from 5 to 3 voting members",
    ]
    lock = ctx.state.get_lock("local")
    assert lock is None or not lock.is_active(ctx.now())

    # When a learner someone else added is in the cluster (etcd says "unhealthy cluster" for a moment after
    # a removal)
    with cluster.client() as client:
        stray = retry(
            lambda: client.member_add(["https://127.0.0.1:9"], learner=True), retry_on=(EtcdUnhealthyClusterError,)
        )
    doc = twice(ctx, "AcquireLock", {"cluster": "local", "execution": "scale-test-learner", "size": 5})
    # Then ScaleCluster refuses before any change, naming it, and never adds a second learner beside it
    with pytest.raises(ScaleRefusedError, match=f"learner [^;]*{stray.id:x}[^;]* is in the cluster; promote"):
        scale.run_step(ctx, "CheckScale", doc)
    doc = scale.run_step(
        ctx,
        "LaunchMember",
        {**doc, "current": {"kind": "add", "voters_after": 4, "name": scale.member_name(ctx, doc, 4)}},
    )
    with pytest.raises(SecondLearnerError, match=f"learner {stray.id:x} .*never adds a second one"):
        scale.run_step(ctx, "AddLearner", doc)
    ctx.compute.terminate(ctx.compute.find(doc["new_member"]["name"]))  # type: ignore[arg-type]
    # and the failure report says where the cluster is, and the lock is released
    error = {"Error": "SecondLearnerError", "Cause": '{"errorMessage": "not adding"}'}
    scale.run_step(ctx, "NotifyFailure", {**doc, "error": error})
    subject, body, _ = ctx.notifier.messages[-1]  # type: ignore[attr-defined]
    assert subject == "etcdops: ScaleCluster FAILED for local (to 5 members)"
    assert "The cluster has 3 voters (" in body and all(f"{name} (" in body for name in names), body
    assert f" and learner not-yet-started member {stray.id:x}" in body, body
    assert ctx.state.get_lock("local") is None
    with cluster.client() as client:
        retry(lambda: client.member_remove(stray.id), retry_on=(EtcdUnhealthyClusterError,))
    assert voters(cluster) == (names, True)
