"""RestoreCluster through the real state machine on real etcd, with every function's /tmp the size its
template gives it (a tmpfs per sandbox, as Lambda's EphemeralStorage; RunbookStep has the default):

* a 1 GiB backup is restored: no step holds a whole snapshot on local disk (a copy in /tmp, as the
  restore used to make, fails with ENOSPC there: tests/e2e/test_local_limits.py);
* a restore that fails after it staged the plain snapshot leaves none behind: the Catch path's
  "Remove the staged snapshot" deletes it (invariant 14).

* a point-in-time restore (--latest): a full backup and the DeltaBackup function's deltas of the puts,
  a delete and a transaction after it, every member killed; RestoreCluster restores the backup and
  replays the deltas, and the cluster holds key by key what it held before the kill.

All on one etcd 3.5 member (what is tested is the runbook's handling of the snapshot, not etcd's
replication), with the autopilot running beside them as in AWS.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from autopilot_scenarios import running_autopilot, wait_for
from builders import binaries_with_etcdutl
from stack_templates import ROOT, TEMPLATE

from etcdops.adapters.backup.target import open_backup_target
from etcdops.app.approval import decide_approval
from etcdops.app.backup.job import run_backup
from etcdops.app.probe import probe_cluster
from etcdops.domain.backup.delta import DeltaEvent
from etcdops.domain.backup.manifest import Manifest
from etcdops_local.aws.stack import (
    DEFAULT_EPHEMERAL_MB,
    LocalAws,
    execution_history,
    execution_name,
    read_template,
    start_execution,
    wait_for_execution,
)
from etcdops_local.cluster import EtcdBinaries, LocalCluster

pytestmark = pytest.mark.e2e
MiB = 1024 * 1024
GiB = 1024 * MiB


def take_backup(cluster: LocalCluster) -> Manifest:
    config = cluster.config()
    store, keyring = open_backup_target(config, create_local_key=True)
    with cluster.client() as client:
        return run_backup(config, client, probe_cluster(client), store, keyring).manifest


def staged(cluster: LocalCluster) -> list[str]:
    store, _ = open_backup_target(cluster.config())
    return store.list("restore/")


def approved_restore(
    pilot: SimpleNamespace, cluster: LocalCluster, target: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    """RestoreCluster in place to ``target`` ({"backup_id": ...} or a point in time), approved by the operator
    as soon as it asks, run to its end."""
    machine = pilot.stack.state_machines["RestoreClusterStateMachine"]
    name = execution_name("restore")
    document = {"cluster": cluster.config().name, **target, "mode": "in-place"}
    arn = start_execution(pilot.sfn, machine, document, name=name)
    wait_for("the approval request", lambda: pilot.state.load_approval(name), timeout=600)
    decide_approval(name, "approve", None, store=pilot.state, sfn=pilot.sfn, now=datetime.now(UTC), by="test")
    return arn, wait_for_execution(pilot.sfn, arn, timeout=3600)


def steps_of(pilot: SimpleNamespace, arn: str) -> list[tuple[str, str, str | None]]:
    return [(step.name, step.status, step.error) for step in execution_history(pilot.sfn, arn)]


def failures_of(pilot: SimpleNamespace, arn: str) -> str:
    """The steps that failed, each with its error and cause, short enough to survive a truncated report."""
    return "; ".join(
        f"{step.name}: {step.error}: {(step.cause or '')[:600]}"
        for step in execution_history(pilot.sfn, arn)
        if step.status in ("failed", "caught")
    )


def runbook_step_tmp_sizes(aws: LocalAws, pilot: SimpleNamespace) -> list[int]:
    """The size of each RunbookStep sandbox's /tmp file system (their directories under the sandbox root)."""
    assert aws.sandbox_root is not None
    name = pilot.stack.functions["RunbookStepFunction"]
    sizes = []
    for directory in sorted(aws.sandbox_root.glob(f"{name}.s*")):
        fs = os.statvfs(directory)
        sizes.append(fs.f_blocks * fs.f_frsize)
    return sizes


@pytest.mark.usefixtures("ephemeral_limit")
@pytest.mark.timeout(1800)  # a hang guard only: ~2.5 min on an idle machine, several times that under load
def test_a_1_gib_backup_is_restored_with_runbook_steps_tmp_at_its_template_size(
    etcd3530: EtcdBinaries, start_cluster: Any
) -> None:
    # Given a 1 GiB database (1,024 values of 1 MiB) and a verified backup of it, then changes after it
    cluster: LocalCluster = start_cluster(
        etcd3530,
        members=1,
        extra=("--quota-backend-bytes=4294967296", "--unsafe-no-fsync"),  # test speed
    )
    noise = os.urandom(MiB - 16)
    with cluster.client() as client:
        for i in range(1024):
            client.put(f"/big/{i:04d}".encode(), i.to_bytes(16, "big") + noise)
    backup = take_backup(cluster)
    assert backup.size_plain > GiB
    with cluster.client() as client:
        client.delete(b"/big/0000")
        client.put(b"/big/after-the-backup", b"lost by the restore")
    template = read_template(TEMPLATE)
    function = template["Resources"]["RunbookStepFunction"]["Properties"]
    limit = (function.get("EphemeralStorage") or {}).get("Size", DEFAULT_EPHEMERAL_MB) * MiB

    # When RestoreCluster restores it, approved
    with LocalAws() as aws, running_autopilot(aws, cluster) as pilot:
        arn, ended = approved_restore(pilot, cluster, {"backup_id": backup.id})
        failures = failures_of(pilot, arn)
        tmp_sizes = runbook_step_tmp_sizes(aws, pilot)

    # Then it succeeded with RunbookStep's /tmp no larger than the template says (half the snapshot)
    assert ended["status"] == "SUCCEEDED", failures
    assert tmp_sizes and all(size == limit for size in tmp_sizes) and limit < backup.size_plain
    # and the database is the backup's, every value whole
    with cluster.client() as client:
        assert client.range(b"/big/", prefix=True, count_only=True).count == 1024
        assert client.get(b"/big/0000") == (0).to_bytes(16, "big") + noise
        assert client.get(b"/big/1023") == (1023).to_bytes(16, "big") + noise
        assert client.get(b"/big/after-the-backup") is None
    # and the plain snapshot it staged for the host is gone
    assert staged(cluster) == []


def test_a_restore_that_fails_after_staging_the_snapshot_leaves_no_plaintext(
    etcd3530: EtcdBinaries, start_cluster: Any, tmp_path: Path
) -> None:
    # Given a member whose restore tool will fail (recording the snapshot it was handed), and a backup
    seen = tmp_path / "handed-to-etcdutl"
    script = (
        f'#!/bin/sh\nif [ -f "$3" ]; then stat -c "%s %n" "$3" >> {seen}; fi\n'
        'echo "etcdutl: injected failure" >&2\nexit 1\n'
    )
    cluster: LocalCluster = start_cluster(binaries_with_etcdutl(etcd3530, tmp_path / "bin", script), members=1)
    with cluster.client() as client:
        for i in range(20):
            client.put(f"/kept/{i:02d}".encode(), b"v")
    backup = take_backup(cluster)

    # When RestoreCluster is approved and the host's restore fails after the snapshot was staged
    with LocalAws() as aws, running_autopilot(aws, cluster) as pilot:
        arn, ended = approved_restore(pilot, cluster, {"backup_id": backup.id})
        steps = steps_of(pilot, arn)

    # Then the execution failed in "Restore every member's data directory", where the host was handed
    # the verified plain snapshot, staged whole
    assert ended["status"] == "FAILED", steps
    names = [name for name, _status, _error in steps]
    assert names[-3:] == ["Remove the staged snapshot", "Notify failure", "Restore failed"], steps
    assert ("Restore every member's data directory", "caught", "HostCommandFailedError") in steps
    size, path = seen.read_text().split()
    assert int(size) == backup.size_plain and Path(path).parent.name == "restore"
    # and the failure path removed it: nothing staged is left
    assert not Path(path).exists()
    assert staged(cluster) == []


def run_delta_backup_function(pilot: SimpleNamespace) -> dict[str, Any]:
    """One scheduled run of the stack's DeltaBackup function (as the local timer would start it)."""
    event = (ROOT / "events" / "delta_backup_schedule.json").read_text()
    response = pilot.aws.client("lambda").invoke(
        FunctionName=pilot.stack.functions["DeltaBackupFunction"], Payload=event
    )
    result: dict[str, Any] = json.loads(response["Payload"].read())
    assert response.get("FunctionError") is None, result
    return result


def test_a_point_in_time_restore_to_the_latest_delta_brings_back_the_keyspace_before_the_kill(
    etcd3530: EtcdBinaries, start_cluster: Any
) -> None:
    cluster: LocalCluster = start_cluster(etcd3530, members=1)
    open_backup_target(cluster.config(), create_local_key=True)  # the local stack's backup key, made once
    with LocalAws() as aws, running_autopilot(aws, cluster, schedules=False) as pilot:
        # Given a full backup (DeltaBackup's first run starts the chain from one), then puts, a delete and a
        # transaction stored as deltas by two more runs of the function
        with cluster.client() as client:
            for i in range(10):
                client.put(f"/pitr/{i}", f"before-{i}")
            assert run_delta_backup_function(pilot)["action"] == "new-chain"
            client.put("/pitr/3", "changed")
            client.put("/pitr/new", "after the backup")
            client.delete("/pitr/0")
            assert run_delta_backup_function(pilot)["action"] == "delta"
            client.txn([DeltaEvent("put", f"/pitr/txn/{j}".encode(), 0, b"one revision") for j in range(3)])
            client.delete("/pitr/new")
            assert run_delta_backup_function(pilot)["action"] == "delta"
            before = {kv.key: kv.value for kv in client.range(b"\0", b"\0").kvs}
        # and every member killed
        for process in cluster.ps():
            cluster.kill(process.name)

        # When RestoreCluster restores the latest point in time, approved
        arn, ended = approved_restore(pilot, cluster, {"latest": True})
        steps, failures = steps_of(pilot, arn), failures_of(pilot, arn)

    # Then it succeeded, replaying the deltas after the backup
    assert ended["status"] == "SUCCEEDED", failures
    assert ("Replay the deltas up to the point in time", "succeeded", None) in steps
    output = json.loads(ended["output"])
    assert output["pitr"]["target_revision"] > output["backup_revision"] and output["replayed"]["revisions"] > 0
    assert output["pitr"]["largest"][1] == 3  # the transaction, replayed as one
    # and the cluster holds, key by key, what it held before the kill; nothing deleted came back
    with cluster.client() as client:
        after = {kv.key: kv.value for kv in client.range(b"\0", b"\0").kvs}
    assert len(after) == len(before) == 12 and after == before
    assert after[b"/pitr/3"] == b"changed" and b"/pitr/0" not in after and b"/pitr/new" not in after
