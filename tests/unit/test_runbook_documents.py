"""The runbooks' typed documents: a malformed document is refused by field name in one line, before the
step runs; a well-formed one reaches the step exactly as it came (the state machines' JSON keeps its shape)."""

from __future__ import annotations

from typing import Any

import pytest

from etcdops.app.runbook import InvalidRunbookInputError, dispatch
from etcdops.domain.runbook_documents import (
    DrillDocument,
    MaintainDocument,
    ReplaceDocument,
    RestoreDocument,
    RotateDocument,
    ScaleDocument,
    UpgradeDocument,
    document_problem,
)

REPLACE = {
    "cluster": "prod",
    "execution": "replace-prod-m3-1",
    "member_id": "8e9e05c52164694d",
    "member_name": "m3",
    "member_label": "8e9e05c52164694d",
    "incident_id": "inc-1",
    "attempt": 1,
    "max_attempts": 3,
    "reason": "m3 unreachable",
    "requires_approval": False,
    "ec2_failed": False,
    "approval_timeout_seconds": 3600,
    "lock_owner": "replace-prod-m3-1",
    "timings": {"acquire_lock": 0.012, "check_member_still_failed": 3},
    "recovered": False,
    "original_voters": 3,
    "backup_id": "20261207T200000Z-abcdef",
    "backup_revision": 42,
    "preflight": {"passed_at": "2026-12-07T20:01:00+00:00"},
    "removed": True,
    "old_member": {"name": "m3", "peer_urls": ["https://10.0.0.3:2380"]},
    "new_member": {
        "name": "m3-rinc1",
        "host_id": "i-0abc",
        "peer_url": "https://10.0.0.9:2380",
        "client_url": "https://10.0.0.9:2379",
        "id": "1f2e",
        "initial_cluster": "m1=https://10.0.0.1:2380,m3-rinc1=https://10.0.0.9:2380",
    },
    "approval": {"approved": True, "by": "ops"},  # what the state machine adds is kept, unchecked
}


HOST = {"name": "m1", "host_id": "i-01", "peer_url": "https://10.0.0.1:2380", "client_url": "https://10.0.0.1:2379"}
RESTORE = {
    "cluster": "prod",
    "execution": "restore-prod-1",
    "backup_id": None,
    "mode": "in-place",
    "bump_revision": 1_000_000_000,
    "approval_timeout_seconds": 3600,
    "lock_owner": "restore-prod-1",
    "lock_lease_seconds": 10800,
    "started_at": "2026-12-07T20:00:00+00:00",
    "cluster_token": "restore-prod1abcdef",
    "old_data_suffix": "before-restore-prod1abcdef",
    "backup_created_at": "2026-12-07T19:00:00+00:00",
    "backup_revision": 41,
    "backup_total_keys": 60,
    "backup_keys": 12,
    "backup_etcd_version": "3.5.30",
    "backup_cluster_id": "cdf818194e3a8c32",
    "backup_imported_from": None,
    "live_cluster_id": None,
    "old_hosts": [HOST],
    "reason": "requested by an operator",
    "approval_summary": "Restore prod from ...",
    "preflight": {"passed_at": "2026-12-07T20:02:00+00:00"},
    "apiservers_stopped": True,
    "etcd_stopped": ["m1"],
    "targets": [HOST],
    "staged": {"key": "restore/x.snapshot", "uri": "s3://staging/prod/restore/x.snapshot", "sha256": "ab" * 32},
    "restored": {"m1": "2026-12-07T20:03:00+00:00"},
    "members_started": ["m1"],
    "verified": {"revision": 1_000_000_041, "keys": 12, "revision_bumped": True},
    "repointed": True,
    "stored_endpoints": ["https://10.0.0.1:2379"],
    "apiservers_started": True,
    "control_plane_restarted": True,
    "timings": {"acquire_lock": 0.01},
    "staging_removed": [],
    "cleanup_error": {"Error": "States.TaskFailed", "Cause": "access denied"},
}


UPGRADE = {
    "cluster": "prod",
    "execution": "upgrade-prod-3-5-30-1",
    "version": "3.5.30",
    "reason": "requested by an operator",
    "requires_approval": False,
    "lock_owner": "upgrade-prod-3-5-30-1",
    "started_at": "2026-12-07T20:00:00+00:00",
    "from_version": "3.5.1",
    "path": "patch",
    "nothing_to_do": False,
    "members": {"m1": {"id": "8e9e05c52164694d", "before": "3.5.1"}, "m2": {"id": "91bc3c398fb3c146", "before": None}},
    "cluster_version_before": "3.5.0",
    "approval_summary": "Upgrade etcd cluster prod from 3.5.1 to 3.5.30 ...",
    "backup_id": "20261207T200000Z-abcdef",
    "backup_revision": 42,
    "preflight": {"passed_at": "2026-12-07T20:01:00+00:00"},
    "done": False,
    "current": {
        "name": "m2",
        "id": "91bc3c398fb3c146",
        "before": "3.5.1",
        "was_leader": True,
        "started_at": "2026-12-07T20:02:00+00:00",
        "leadership_moved_to": "m1",
        "stopped_at": "2026-12-07T20:02:01+00:00",
    },
    "upgraded": [
        {
            "name": "m1",
            "id": "8e9e05c52164694d",
            "before": "3.5.1",
            "after": "3.5.30",
            "was_leader": False,
            "leadership_moved_to": None,
            "seconds": 4.2,
            "down_seconds": 1.0,
            "cluster_version": "3.5.0",
        }
    ],
    "cluster_version_after": None,
    "timings": {"acquire_lock": 0.01},
}


DEFRAGMENTED = {"name": "m1", "id": "8e9e05c52164694d", "endpoint": "https://10.0.0.1:2379", "was_leader": False,
                "before": 900_000, "in_use_before": 300_000, "predicted": 600_000, "seconds": 0.8,
                "defragmented_at": "2026-12-07T20:03:00+00:00", "after": 310_000, "returned": 590_000}  # fmt: skip
DRILL = {
    "cluster": "prod",
    "execution": "drill-prod-1",
    "lock_owner": "drill-prod-1",
    "started_at": "2026-12-07T20:00:00+00:00",
    "drill_id": "20261207T200000Z-abcdef",
    "scratch_name": "etcdops-drill-prod1abcdef",
    "cleaned_up": {"hosts": [], "staged": []},
    "backup_id": "20261207T190000Z-123456",
    "backup_created_at": "2026-12-07T19:00:00+00:00",
    "expected": {"revision": 42, "keys": 3, "sample": [["a2V5", "ab" * 32]]},
    "scratch": {"name": "etcdops-drill-prod1abcdef", "host_id": "i-0d", "client_url": "https://10.0.0.9:2379"},
    "scratch_restored": "2026-12-07T20:01:00+00:00",
    "scratch_started": "2026-12-07T20:01:05+00:00",
    "observed": {"revision": 42, "keys": 3, "sampled": 1},
    "torn_down": {"host": "etcdops-drill-prod1abcdef", "staged": []},
    "result": {"drill_id": "20261207T200000Z-abcdef", "restorable": True},
    "timings": {"PickBackup": 0.4},
}
MAINTAIN = {
    "cluster": "prod",
    "execution": "maintain-prod-1",
    "reason": "scheduled maintenance",
    "requires_approval": False,
    "mode": "nospace",
    "skipped": [],
    "approval_summary": "Recover etcd cluster prod from NOSPACE ...",
    "predicted": {"m1": 600_000},
    "pause_seconds": 5,
    "compaction": {"revision": 1000, "at_revision": 2000, "external": False, "outcome": "compacted"},
    "done": False,
    "first": True,
    "current": {**DEFRAGMENTED, "leadership_moved_to": "m2"},
    "defragmented": [DEFRAGMENTED],
    "disarmed": ["8e9e05c52164694d"],
    "sizes_after": ["m1 310000 bytes"],
}


@pytest.mark.parametrize(
    ("model", "document"),
    [
        (ReplaceDocument, REPLACE),
        (RestoreDocument, RESTORE),
        (UpgradeDocument, UPGRADE),
        (MaintainDocument, MAINTAIN),
        (DrillDocument, DRILL),
    ],
)
def test_what_the_steps_record_is_well_formed(model: Any, document: dict[str, Any]) -> None:
    assert document_problem(model, document) is None


def test_the_runbook_model_requires_nothing_a_step_requires_what_it_needs() -> None:
    assert document_problem(ReplaceDocument, {}) is None and document_problem(RestoreDocument, {}) is None
    # a step that needs nothing of its own still needs the cluster and the execution
    assert document_problem(ReplaceDocument.for_step("NotifyStart"), {}) == "missing cluster, execution"


@pytest.mark.parametrize(
    ("model", "step", "document", "problem"),
    [
        (ReplaceDocument, "AcquireLock", {**REPLACE, "member_id": None}, "missing member_id"),
        (ReplaceDocument, "AcquireLock", {k: v for k, v in REPLACE.items() if k != "member_id"}, "missing member_id"),
        (ReplaceDocument, "RemoveFailedMember", {**REPLACE, "member_id": None}, "missing member_id"),
        (ReplaceDocument, "Preflight", {**REPLACE, "backup_id": None, "cluster": ""}, "missing cluster, backup_id"),
        (RestoreDocument, "Preflight", {**RESTORE, "backup_id": None}, "missing backup_id"),
        (RestoreDocument, "AcquireLock", {**RESTORE, "execution": None}, "missing execution"),
        (UpgradeDocument, "AcquireLock", {**UPGRADE, "version": ""}, "missing version"),
        (UpgradeDocument, "Preflight", {**UPGRADE, "members": None}, "missing members"),
        (ScaleDocument, "AcquireLock", {"cluster": "prod", "execution": "scale-1"}, "missing size"),
        (RotateDocument, "AcquireLock", {"cluster": "prod"}, "missing execution"),
    ],
)
def test_a_field_a_step_needs_is_refused_by_name_when_missing(
    model: Any, step: str, document: dict[str, Any], problem: str
) -> None:
    assert document_problem(model.for_step(step), document) == problem


def test_a_missing_field_stops_the_step_before_it_runs_in_one_line() -> None:
    ran: list[str] = []
    steps = {"AcquireLock": lambda ctx, doc: ran.append("AcquireLock") or doc}

    with pytest.raises(InvalidRunbookInputError) as raised:
        dispatch(steps, None, "AcquireLock", {**REPLACE, "member_id": None}, ReplaceDocument)

    assert str(raised.value) == "runbook input: missing member_id" and ran == []
    assert dispatch(steps, None, "AcquireLock", REPLACE, ReplaceDocument) is REPLACE and ran == ["AcquireLock"]


@pytest.mark.parametrize(
    ("model", "document"),
    [(ReplaceDocument, REPLACE), (RestoreDocument, RESTORE), (UpgradeDocument, UPGRADE), (DrillDocument, DRILL)],
)
def test_a_well_formed_document_satisfies_every_step_of_its_runbook(model: Any, document: dict[str, Any]) -> None:
    filled = {k: ("b-1" if v is None else v) for k, v in document.items()}  # what later steps have recorded
    for step in model.STEP_NEEDS:
        assert document_problem(model.for_step(step), filled) is None, step


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"member_id": "zz"}, "member_id: 'zz' is not a hex id"),
        ({"member_id": 171}, "member_id: Input should be a valid string"),
        ({"attempt": "2"}, "attempt: Input should be a valid integer"),
        ({"requires_approval": "yes"}, "requires_approval: Input should be a valid boolean"),
        ({"approval_timeout_seconds": -1}, "approval_timeout_seconds: -1 is not a whole number of seconds"),
        ({"timings": {"acquire_lock": "fast"}}, "timings.acquire_lock: Input should be a valid number"),
        ({"old_member": {"peer_urls": []}}, "old_member.name: Field required"),
        ({"new_member": {"name": "m4", "id": 31}}, "new_member.id: Input should be a valid string"),
        ({"preflight": "passed"}, "preflight: Input should be a valid dictionary or instance of Preflight"),
    ],
)
def test_a_malformed_field_is_named_in_one_line(change: dict[str, Any], problem: str) -> None:
    found = document_problem(ReplaceDocument, {**REPLACE, **change})

    assert found is not None and found.startswith(problem) and "\n" not in found


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"mode": "sideways"}, "mode: 'sideways' is not one of in-place, new-hosts"),
        ({"bump_revision": 10**12}, "bump_revision: 1000000000000 is not a whole number below 10^12"),
        ({"bump_revision": None}, "bump_revision: None is not a whole number below 10^12"),
        ({"bump_revision": True}, "bump_revision: Input should be a valid integer"),
        ({"bump_revision": 1.5}, "bump_revision: Input should be a valid integer"),
        ({"approval_timeout_seconds": "1h"}, "approval_timeout_seconds: Input should be a valid integer"),
        ({"old_hosts": [{"host_id": "i-01"}]}, "old_hosts.0.name: Field required"),
        ({"restored": ["m1"]}, "restored: Input should be a valid dictionary"),
        ({"verified": {"revision": 1, "keys": 2}}, "verified.revision_bumped: Field required"),
    ],
)
def test_a_malformed_restore_field_is_named_in_one_line(change: dict[str, Any], problem: str) -> None:
    found = document_problem(RestoreDocument, {**RESTORE, **change})

    assert found is not None and found.startswith(problem) and "\n" not in found


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"version": 3.5}, "version: Input should be a valid string"),
        ({"members": {"m1": {"before": "3.5.1"}}}, "members.m1.id: Field required"),
        ({"current": {"name": "m2", "id": "2", "was_leader": "no"}}, "current.was_leader: Input should be a valid"),
        ({"upgraded": {"m1": "3.5.30"}}, "upgraded: Input should be a valid list"),
    ],
)
def test_a_malformed_upgrade_field_is_named_in_one_line(change: dict[str, Any], problem: str) -> None:
    found = document_problem(UpgradeDocument, {**UPGRADE, **change})

    assert found is not None and found.startswith(problem) and "\n" not in found


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"predicted": {"m1": "600 kB"}}, "predicted.m1: Input should be a valid integer"),
        ({"compaction": {"revision": "1000"}}, "compaction.revision: Input should be a valid integer"),
        ({"defragmented": [{"name": "m1"}]}, "defragmented.0.id: Field required"),
        ({"skipped": "not healthy"}, "skipped: Input should be a valid list"),
    ],
)
def test_a_malformed_maintain_field_is_named_in_one_line(change: dict[str, Any], problem: str) -> None:
    found = document_problem(MaintainDocument, {**MAINTAIN, **change})

    assert found is not None and found.startswith(problem) and "\n" not in found


def test_a_malformed_drill_expectation_is_named_in_one_line() -> None:
    found = document_problem(DrillDocument, {**DRILL, "expected": {"revision": 42, "keys": "3", "sample": []}})

    assert found == "expected.keys: Input should be a valid integer"


def test_a_restore_in_the_default_mode_needs_no_mode() -> None:
    assert document_problem(RestoreDocument, {"cluster": "prod", "mode": None}) is None
    assert document_problem(RestoreDocument, {"cluster": "prod", "mode": ""}) is None


def test_a_document_that_is_no_object_is_said_so() -> None:
    assert document_problem(ReplaceDocument, ["cluster"]) == "the document is a list, not a JSON object"


def test_a_step_never_runs_on_a_malformed_document_but_the_failure_path_does() -> None:
    ran: list[tuple[str, dict[str, Any]]] = []

    def step(name: str) -> Any:
        return lambda ctx, doc: ran.append((name, doc)) or doc

    steps = {"AcquireLock": step("AcquireLock"), "NotifyFailure": step("NotifyFailure")}
    bad = {**REPLACE, "attempt": "2"}

    with pytest.raises(InvalidRunbookInputError, match=r"^runbook input: attempt: Input should be a valid integer"):
        dispatch(steps, None, "AcquireLock", bad, ReplaceDocument)
    assert ran == []

    assert dispatch(steps, None, "NotifyFailure", bad, ReplaceDocument) is bad  # the failure is still reported
    assert dispatch(steps, None, "AcquireLock", REPLACE, ReplaceDocument) is REPLACE  # as it came: same shape
    assert [name for name, _ in ran] == ["NotifyFailure", "AcquireLock"]
