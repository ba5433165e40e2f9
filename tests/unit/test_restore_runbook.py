"""RestoreCluster without a cluster: its state machine calls exactly its steps, and a failure says
where the cluster was left."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from etcdops.app.backup.replay import replay_start_flags
from etcdops.app.runbook import restore, restore_report
from etcdops.entrypoints.runbook_step import RunbookStepEvent

ROOT = Path(__file__).resolve().parents[2]
START = {"cluster": "local", "mode": "in-place", "backup_id": None, "execution": "restore-test-in-place"}


def test_the_state_machine_runs_exactly_these_steps() -> None:
    """Every Task of restore_cluster.asl.json calls a restore step (or the approval), and all steps are used."""
    machine = json.loads((ROOT / "statemachines" / "restore_cluster.asl.json").read_text())
    used = set()
    for name, state in machine["States"].items():
        if state["Type"] != "Task":
            continue
        payload = state["Parameters"]["Payload"]
        assert any(c["ErrorEquals"] == ["States.ALL"] for c in state.get("Catch", [])) or name == "Notify failure"
        if state["Resource"].endswith("waitForTaskToken"):
            assert payload["runbook"] == "RestoreCluster" and "summary.$" in payload
            continue
        assert payload["runbook"] == "restore"
        RunbookStepEvent(runbook="restore", step=payload["step"], execution="x", document={})
        used.add(payload["step"])
    assert used == set(restore.STEPS)


@pytest.mark.parametrize(
    ("recorded", "says"),
    [
        ({}, "Nothing was stopped or changed"),
        ({"approval": {"approved": True}}, "Nothing was stopped or changed"),  # the preflight had not passed
        (
            {"approval": {"approved": True}, "preflight": {"passed_at": "t"}},
            "some of them may be stopped. etcd was not stopped",
        ),
        ({"approval": {}, "apiservers_stopped": True}, "failed while stopping etcd"),
        (
            {"approval": {}, "apiservers_stopped": True, "etcd_stopped": ["m1", "m2", "m3"]},
            "may have been under way",
        ),
        ({"apiservers_stopped": True, "verified": {}, "apiservers_started": True}, "RestartControlPlane"),
        (  # the Catch path could not remove the staged plain snapshot: the operator is told which objects
            {"cleanup_error": {"Error": "StorePermissionError", "Cause": "S3 refused deleting"}},
            "could NOT be removed (StorePermissionError: S3 refused deleting): delete "
            f"restore/{restore.execution_tail(START)}.snapshot and restore/{restore.execution_tail(START)}.preflight",
        ),
    ],
)
def test_the_failure_message_says_where_the_cluster_was_left(recorded: dict[str, Any], says: str) -> None:
    doc = {
        **START,
        "old_data_suffix": "before-restore-x",
        "targets": [{"name": "m1"}, {"name": "m2"}, {"name": "m3"}],
        "error": {"Error": "HostCommandFailedError", "Cause": "boom"},
        **recorded,
    }
    report = restore.failure_report(doc)
    assert "HostCommandFailedError: boom" in report and says in report


@pytest.mark.parametrize(
    ("live", "says"),
    [
        ("c1", None),
        ("d2", "was taken of ANOTHER incarnation of cluster local (cluster id c1; the live cluster id is d2)"),
        (None, "The live cluster id is unknown (no member answered); backup b was taken of cluster id c1"),
    ],
)
def test_the_approval_says_when_the_backup_is_not_of_the_live_incarnation(live: str | None, says: str | None) -> None:
    doc = {**START, "backup_id": "b", "backup_cluster_id": "c1", "live_cluster_id": live, "bump_revision": 0}
    summary = restore_report.approval_summary(doc)
    if says is None:
        assert "incarnation" not in summary and "cluster id" not in summary
    else:
        assert says in summary


@pytest.mark.parametrize(("events", "raised"), [(128, False), (129, True)])
def test_a_replayed_revision_larger_than_etcds_default_max_txn_ops_raises_it_for_the_start(
    events: int, raised: bool
) -> None:
    pitr = {"revisions": 3, "events": events + 2, "deltas": ["d1"], "target_revision": 42, "expected_keys": 7}
    doc = {**START, "backup_id": "b", "bump_revision": 0, "pitr": {**pitr, "largest": [40, events]}}
    summary = restore_report.approval_summary(doc)
    note = f"revision 40 has {events} changes, more than etcd's default --max-txn-ops (128): the restored members "
    assert (note in summary) == raised and (f"--max-txn-ops={events} so that" in summary) == raised
    assert "up to revision 42" in summary
    assert replay_start_flags(doc["pitr"]) == ({"max-txn-ops": events} if raised else {})
