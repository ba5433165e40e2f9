"""RestoreDrill through the real state machine, on real etcd, with the autopilot running beside it:
a good backup is proven restorable; a restore that fails on the scratch host goes through the Catch
path (teardown, record) and ends failed with the backup recorded as not restorable. Either way no
scratch host and no staged plaintext is left, and the live cluster keeps its one member.

The step-by-step scenarios (a member that refuses to start, a key count that differs, a drill that
died halfway) are tests/integration/test_restore_drill.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from autopilot_scenarios import running_autopilot
from builders import binaries_with_etcdutl
from test_restore_cluster import take_backup

from etcdops.adapters.backup.target import open_backup_store
from etcdops.adapters.compute.factory import open_compute
from etcdops.app.backup.catalogue import drill_results, read_drills
from etcdops.app.runbook.drill import STAGING_PREFIX
from etcdops_local.aws.stack import LocalAws, execution_history, execution_name, start_execution, wait_for_execution
from etcdops_local.cluster import EtcdBinaries, LocalCluster
from etcdops_local.compute import register_local_provider

pytestmark = pytest.mark.e2e


def drill(pilot: SimpleNamespace, cluster: LocalCluster) -> tuple[dict[str, Any], list[tuple[str, str, str | None]]]:
    machine = pilot.stack.state_machines["RestoreDrillStateMachine"]
    arn = start_execution(pilot.sfn, machine, {"cluster": cluster.config().name}, name=execution_name("drill"))
    ended = wait_for_execution(pilot.sfn, arn, timeout=900)
    return ended, [(s.name, s.status, s.error) for s in execution_history(pilot.sfn, arn)]


def drill_metrics(output: str) -> dict[str, float]:
    """The drill's EMF metrics in ``output`` (the autopilot's HealthCheck writes its own beside them)."""
    values: dict[str, float] = {}
    for line in output.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            document = json.loads(line)
            for definition in document["_aws"]["CloudWatchMetrics"]:
                for metric in definition["Metrics"]:
                    if metric["Name"] in ("RestoreDrillFailed", "LastRestoreDrillAge"):
                        # the dimension set of the template's alarm
                        assert definition["Dimensions"] == [["cluster"]] and document["cluster"] == "local"
                        value = document[metric["Name"]]
                        values[metric["Name"]] = value[-1] if isinstance(value, list) else value
    return values


def nothing_left(cluster: LocalCluster) -> None:
    register_local_provider()  # as the local stack does: the Lambda layer's factory knows only ec2
    assert open_compute(cluster.config(), scratch=True).hosts() == []
    assert open_backup_store(cluster.config()).list(f"{STAGING_PREFIX}/") == []
    with cluster.client() as client:
        assert [m.name for m in client.member_list()] == ["m1"]


def test_a_drill_proves_a_good_backup_restorable_and_one_that_does_not_restore_fails_and_leaves_nothing(
    etcd3530: EtcdBinaries, start_cluster: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a cluster with a verified backup, and the autopilot running
    cluster: LocalCluster = start_cluster(etcd3530, members=1)
    with cluster.client() as client:
        for i in range(30):
            client.put(f"/registry/cm/{i:02d}".encode(), b"v" * i)
    backup = take_backup(cluster)
    store = open_backup_store(cluster.config())
    with LocalAws() as aws, running_autopilot(aws, cluster) as pilot:
        # When a drill runs, it proves the backup restorable
        ended, steps = drill(pilot, cluster)
        assert ended["status"] == "SUCCEEDED", steps
        assert [name for name, _, _ in steps][-5:] == [
            "Tear the scratch host down", "Record the result", "Did the backup restore?", "Restorable or not?",
            "The backup restores",
        ]  # fmt: skip
        [record] = read_drills(store)
        assert record.backup_id == backup.id and record.restorable and record.keys == 30 and record.seconds > 0
        metrics = drill_metrics(capsys.readouterr().out)
        assert metrics["RestoreDrillFailed"] == 0 and metrics["LastRestoreDrillAge"] == 0
        nothing_left(cluster)

        # When the scratch hosts' restore tool fails, the next drill goes through the Catch path
        broken = binaries_with_etcdutl(etcd3530, tmp_path / "bin", '#!/bin/sh\necho "etcdutl: injected" >&2\nexit 1\n')
        scratch = cluster.scratch()
        state = json.loads(scratch.state_file.read_text())
        scratch.state_file.write_text(json.dumps({**state, "bin_dir": str(broken.bin_dir)}))
        ended, steps = drill(pilot, cluster)
        subjects = pilot.inbox()

    # Then it ends failed with the backup recorded as not restorable, the alarm's metric and one message
    assert ended["status"] == "FAILED" and ended.get("error") == "BackupNotRestorable", steps
    assert ("Restore the backup onto the scratch host", "caught", "HostCommandFailedError") in steps
    assert [name for name, _, _ in steps][-5:] == [
        "Tear the scratch host down", "Record the result", "Did the backup restore?", "Restorable or not?",
        "The backup did not restore",
    ]  # fmt: skip
    result = drill_results(read_drills(store))[backup.id]
    assert not result.restorable and "etcdutl: injected" in (result.error or "")
    metrics = drill_metrics(capsys.readouterr().out)
    assert metrics["RestoreDrillFailed"] == 1 and metrics["LastRestoreDrillAge"] > 0
    assert "etcdops: restore drill of cluster local failed" in subjects
    # and no scratch host, no plaintext is left; the live cluster kept its one member
    nothing_left(cluster)
