"""The ReplaceMember steps on a real cluster, driven in runbook order, including retries and crashes.

The state machine itself runs in the e2e tests; here each step is called directly so that the
convergence of every step (invariant 7) and the safety re-checks can be exercised one by one.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from retries import with_retries

from etcdops.adapters.aws import MemoryNotifier
from etcdops.adapters.backup.crypto import KeyProvider
from etcdops.adapters.backup.store import BackupStore
from etcdops.adapters.backup.target import open_backup_target
from etcdops.adapters.compute.factory import open_compute
from etcdops.adapters.etcd.client import EtcdClient
from etcdops.adapters.etcd.connect import live_client
from etcdops.adapters.state_memory import InMemoryStateStore
from etcdops.app.backup.job import ensure_fresh_backup
from etcdops.app.probe import probe_cluster
from etcdops.app.runbook import PreflightFailedError, replace
from etcdops.domain.backup.manifest import Manifest, object_key
from etcdops.domain.config import ConfigFile
from etcdops_local.cluster import LocalCluster
from etcdops_local.compute import register_local_provider

pytestmark = pytest.mark.integration


def context_for(cluster: LocalCluster, **health: Any) -> replace.ReplaceContext:
    register_local_provider()  # as the local stack does: the Lambda layer's factory knows only ec2
    config = cluster.config()
    config = config.model_copy(update={"health": config.health.model_copy(update=health)})

    def client() -> EtcdClient:
        return live_client(config)

    def backup_target() -> tuple[BackupStore, KeyProvider]:
        return open_backup_target(config, create_local_key=True)

    def ensure_backup(max_age: timedelta) -> Manifest:
        store, keyring = backup_target()
        with client() as etcd:
            return ensure_fresh_backup(config, etcd, store, keyring, max_age)

    return replace.ReplaceContext(
        config=config,
        client=client,
        compute=open_compute(config),
        state=InMemoryStateStore(),
        notifier=MemoryNotifier(),
        ensure_backup=ensure_backup,
        backup_target=backup_target,
        config_stores=[ConfigFile(cluster.config_file)],
    )


def failed_follower(cluster: LocalCluster) -> dict[str, Any]:
    with cluster.client() as client:
        health = probe_cluster(client)
    victim = next(m for m in health.members if m.id != health.leader)
    cluster.kill(victim.name)
    return {
        "cluster": "local",
        "member_id": f"{victim.id:x}",
        "member_name": victim.name,
        "incident_id": "local-replace-test-0001",
        "reason": "test",
        "requires_approval": False,
        "execution": "replace-test-1",
    }


ORDER = [
    "AcquireLock",
    "CheckMemberStillFailed",
    "EnsureBackup",
    "Preflight",
    "RemoveFailedMember",
    "LaunchReplacement",
    "AddLearner",
    "StartReplacement",
    "PromoteLearner",
    "WaitUntilHealthy",
    "RepointClients",
    "RetireOldHost",
    "ReleaseLock",
    "NotifySuccess",
]


def test_each_step_twice_still_replaces_exactly_once(cluster: LocalCluster) -> None:
    # Given a killed follower
    ctx = context_for(cluster)
    doc = failed_follower(cluster)
    before = {m.id for m in cluster.client().member_list()}

    # When every step runs twice, as after a crash right after it finished
    for step in ORDER:
        doc = with_retries(lambda step=step, doc=doc: replace.run_step(ctx, step, doc))  # type: ignore[misc]
        doc = with_retries(lambda step=step, doc=doc: replace.run_step(ctx, step, doc))  # type: ignore[misc]

    # Then the cluster has 3 healthy voters, the old member is gone and exactly one new one joined
    with cluster.client() as client:
        health = probe_cluster(client)
        members = client.member_list()
    assert health.has_quorum and len(health.healthy_voters) == 3 and not health.learners
    after = {m.id for m in members}
    assert int(doc["member_id"], 16) not in after
    assert len(after - before) == 1 and f"{next(iter(after - before)):x}" == doc["new_member"]["id"]
    assert ctx.state.get_lock("local") is None or not ctx.state.get_lock("local").is_active(ctx.now())  # type: ignore[union-attr]
    assert [s for s, _, _ in ctx.notifier.messages] == [  # type: ignore[attr-defined]
        f"etcdops: replaced member {doc['member_name']} of local"
    ]
    assert doc["backup_id"]


def test_a_second_failure_stops_the_runbook_before_the_next_change(cluster: LocalCluster) -> None:
    ctx = context_for(cluster)
    doc = failed_follower(cluster)
    for step in ORDER[:3]:
        doc = with_retries(lambda step=step, doc=doc: replace.run_step(ctx, step, doc))  # type: ignore[misc]

    # When a second member dies before the removal
    with cluster.client() as client:
        health = probe_cluster(client)
    survivor_to_kill = next(m.name for m in health.members if m.healthy and m.id != health.leader)
    cluster.kill(survivor_to_kill)

    # Then the removal refuses, and nothing changed in the membership
    members_before = {m.id for m in cluster.client().member_list()}
    with pytest.raises(replace.UnsafeChangeError):
        replace.run_step(ctx, "RemoveFailedMember", doc)
    assert {m.id for m in cluster.client().member_list()} == members_before

    # and the failure path notifies and releases the lock
    replace.run_step(ctx, "NotifyFailure", {**doc, "error": {"Error": "UnsafeChangeError", "Cause": "test"}})
    assert ctx.state.get_lock("local") is None
    assert "FAILED" in ctx.notifier.messages[-1][0]  # type: ignore[attr-defined]


def test_a_recovered_member_is_left_alone(shared_cluster: LocalCluster) -> None:
    ctx = context_for(shared_cluster)
    with shared_cluster.client() as client:
        health = probe_cluster(client)
    member = next(m for m in health.members if m.id != health.leader)
    doc = {
        "cluster": "local",
        "member_id": f"{member.id:x}",
        "member_name": member.name,
        "incident_id": "x",
        "execution": "replace-test-2",
    }

    doc = replace.run_step(ctx, "AcquireLock", doc)
    doc = replace.run_step(ctx, "CheckMemberStillFailed", doc)

    assert doc["recovered"] is True


def test_a_member_resumed_just_after_the_decision_is_given_a_fair_chance_and_left_alone(
    cluster: LocalCluster,
) -> None:
    # Given a follower frozen (SIGSTOP) long enough to be declared failed, and a replacement started
    ctx = context_for(cluster, recheck_seconds=20)
    with cluster.client() as client:
        health = probe_cluster(client)
    victim = next(m for m in health.members if m.id != health.leader)
    members_before = {m.id for m in cluster.client().member_list()}
    cluster.pause(victim.name)
    # the others move on while it is frozen (about 15 s): it must catch up. Written through the others only:
    # a put tried at the frozen member first waits out the client's deadline, which made the freeze last
    # 15 or 35 s depending on which member was the follower picked
    others = [m.client_url for m in cluster.state().members if m.name != victim.name]
    with EtcdClient(others, tls=cluster.tls, timeout=2.0) as client:
        for i in range(150):
            client.put(f"/while-frozen/{i:03d}", "x")
            time.sleep(0.1)
    doc = replace.run_step(
        ctx,
        "AcquireLock",
        {"cluster": "local", "member_id": f"{victim.id:x}", "member_name": victim.name, "execution": "resumed-1"},
    )

    # When it is resumed while the runbook re-checks it (SIGCONT ~2 s into the check)
    resume = threading.Timer(2.0, cluster.resume, args=(victim.name,))
    resume.start()
    try:
        doc = replace.run_step(ctx, "CheckMemberStillFailed", doc)
    finally:
        resume.join()

    # Then the re-check sees it answer again: nothing is removed
    assert doc["recovered"] is True
    assert doc["timings"]["check_member_still_failed"] >= 2.0  # it did wait for the member
    assert {m.id for m in cluster.client().member_list()} == members_before


def test_a_member_that_stays_frozen_is_still_failed_after_the_re_check(cluster: LocalCluster) -> None:
    ctx = context_for(cluster, recheck_seconds=3)
    with cluster.client() as client:
        health = probe_cluster(client)
    victim = next(m for m in health.members if m.id != health.leader)
    cluster.pause(victim.name)
    try:
        doc = {"cluster": "local", "member_id": f"{victim.id:x}", "member_name": victim.name, "execution": "frozen-1"}
        doc = replace.run_step(ctx, "CheckMemberStillFailed", replace.run_step(ctx, "AcquireLock", doc))
    finally:
        cluster.resume(victim.name)
    assert doc["recovered"] is False and doc["original_voters"] == 3
    assert doc["timings"]["check_member_still_failed"] >= 3.0


def test_an_input_for_another_cluster_is_refused_by_name_and_takes_no_lock(shared_cluster: LocalCluster) -> None:
    ctx = context_for(shared_cluster)
    with pytest.raises(replace.InvalidRunbookInputError, match="cluster 'prod' is not 'local'"):
        replace.run_step(ctx, "AcquireLock", {"cluster": "prod", "member_id": "ab", "execution": "e"})
    assert ctx.state.get_lock("prod") is None and ctx.state.get_lock("local") is None


def test_bad_input_is_refused_by_name(shared_cluster: LocalCluster) -> None:
    ctx = context_for(shared_cluster)
    with pytest.raises(replace.InvalidRunbookInputError, match="member_id"):
        replace.run_step(ctx, "AcquireLock", {"cluster": "local", "execution": "e"})
    with pytest.raises(replace.InvalidRunbookInputError, match="unknown runbook step"):
        replace.run_step(ctx, "DropTables", {})
    with pytest.raises(replace.InvalidRunbookInputError, match="hex id"):
        replace.run_step(ctx, "CheckMemberStillFailed", {"cluster": "local", "member_id": "zz", "execution": "e"})


def test_a_replacement_that_could_not_finish_stops_in_preflight_with_nothing_changed(cluster: LocalCluster) -> None:
    """Invariant 13 on a real cluster: the CA key is gone (a launch would fail after the removal) and the
    backup the runbook relies on no longer opens; the preflight names both and nothing changes."""
    ctx = context_for(cluster)
    doc = failed_follower(cluster)
    for step in ORDER[: ORDER.index("Preflight")]:
        doc = with_retries(lambda step=step, doc=doc: replace.run_step(ctx, step, doc))  # type: ignore[misc]
    members_before = {(m.id, m.name) for m in cluster.client().member_list()}
    processes_before = {p.name: p.pid for p in cluster.ps()}
    (cluster.pki_dir / "ca.key").unlink()
    store, _ = ctx.backup_target()
    store.delete(object_key(doc["backup_id"]))

    # When the preflight runs (and again, as a retry would)
    for _ in range(2):
        with pytest.raises(PreflightFailedError) as failed:
            replace.run_step(ctx, "Preflight", doc)

    # Then it lists every problem, each with its fix, and not one thing changed
    assert [f.check for f in failed.value.findings] == ["ca", "backup"]
    message = str(failed.value)
    assert "nothing was changed" in message and "1. [ca]" in message and "2. [backup]" in message
    assert message.count("Fix: ") == 2 and "etcdops backup list" in message
    assert {(m.id, m.name) for m in cluster.client().member_list()} == members_before
    assert {p.name: p.pid for p in cluster.ps()} == processes_before

    # and the failure path releases the lock and sends one message with the findings
    error = {"Error": "PreflightFailedError", "Cause": json.dumps({"errorMessage": message, "stackTrace": ["x"]})}
    for _ in range(2):
        replace.run_step(ctx, "NotifyFailure", {**doc, "error": error})
    assert ctx.state.get_lock("local") is None
    failures = [m for m in ctx.notifier.messages if "FAILED" in m[0]]  # type: ignore[attr-defined]
    assert len(failures) == 1
    body = failures[0][1]
    assert "1. [ca]" in body and "2. [backup]" in body and "same members as before" in body
    assert "stackTrace" not in body
