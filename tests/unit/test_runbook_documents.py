"""The runbooks' typed documents: a malformed document is refused by field name in one line, before the
step runs; a well-formed one reaches the step exactly as it came (the state machines' JSON keeps its shape)."""

from __future__ import annotations

from typing import Any

import pytest

from etcdops.app.runbook import InvalidRunbookInputError, dispatch
from etcdops.domain.runbook_documents import ReplaceDocument, document_problem

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


@pytest.mark.parametrize(("model", "document"), [(ReplaceDocument, REPLACE)])
def test_what_the_steps_record_is_well_formed(model: Any, document: dict[str, Any]) -> None:
    assert document_problem(model, document) is None


def test_which_fields_a_step_requires_is_the_steps_own_check() -> None:
    assert document_problem(ReplaceDocument, {}) is None


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
