"""``runbook show`` and the live screen tell how an execution ended, in words, from its history.

The histories in tests/data/runbook_histories.json were recorded from real ReplaceMember executions
(template.yaml's state machine run by the emulator's interpreter with our handlers on a real
cluster): a replacement started for a member that was healthy (recovered), one a human rejected, one
that failed at a step, and one waiting for its approval. Payloads were left out of the recording.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from etcdops.adapters.state import Approval
from etcdops.adapters.state_memory import InMemoryStateStore
from etcdops_local.cli.runbook import show_data, show_text
from etcdops_local.cli.status import render_runbooks
from etcdops_local.cli.story import outcome

HISTORIES = json.loads((Path(__file__).parents[1] / "data" / "runbook_histories.json").read_text())


def _dates(value: Any) -> Any:
    """The recording's times (text) as boto3 returns them (datetimes)."""
    if isinstance(value, dict):
        return {k: datetime.fromisoformat(v) if k in ("startDate", "stopDate", "timestamp") else _dates(v)
                for k, v in value.items()}  # fmt: skip
    if isinstance(value, list):
        return [_dates(v) for v in value]
    return value


class RecordedSfn:
    """Step Functions answering from one recorded execution."""

    def __init__(self, which: str) -> None:
        self.recorded = _dates(HISTORIES[which])

    def describe_execution(self, executionArn: str) -> dict[str, Any]:
        return dict(self.recorded["describe_execution"])

    def get_execution_history(self, executionArn: str, maxResults: int, nextToken: str | None = None) -> dict[str, Any]:
        return {"events": self.recorded["events"]}


def approval(execution: str, **decided: Any) -> InMemoryStateStore:
    store = InMemoryStateStore()
    now = datetime(2026, 12, 7, 17, 54, tzinfo=UTC)
    store.save_approval(
        Approval(
            execution=execution, cluster="local", runbook="ReplaceMember", request_id="r1", task_token="t",
            summary="replace member m1 of local (unhealthy for 3 rounds)", reason="m1 does not answer",
            requested_at=now, expires_at=now + timedelta(hours=1), **decided,
        )
    )  # fmt: skip
    return store


def told(which: str, store: InMemoryStateStore | None = None, width: int = 100) -> tuple[dict[str, Any], str]:
    sfn = RecordedSfn(which)
    name = sfn.recorded["describe_execution"]["name"]
    data, steps = show_data(sfn, f"arn:aws:states:eu-west-1:1:execution:m:{name}", store,
                            lambda n: f"etcdops approve {n}")  # fmt: skip
    return data, show_text(data, steps, width)


def test_a_replacement_that_found_the_member_healthy_says_it_recovered() -> None:
    data, text = told("replace-recovered")

    assert data["status"] == "SUCCEEDED"
    assert data["outcome"] == "recovered: m1 answered again before anything was changed; nothing was replaced"
    assert text.splitlines()[1] == f"outcome: {data['outcome']}"
    assert "Remove the failed member" not in text  # nothing was replaced: the steps say so too


def test_a_rejected_replacement_says_who_rejected_it_and_why() -> None:
    name = HISTORIES["replace-rejected"]["describe_execution"]["name"]
    decided_at = datetime(2026, 12, 7, 17, 55, tzinfo=UTC)
    store = approval(
        name, decision="reject", decided_by="cli:alice", decided_at=decided_at,
        decision_reason="not during the release freeze",
    )  # fmt: skip

    data, text = told("replace-rejected", store)

    assert data["status"] == "FAILED"
    assert data["outcome"] == "rejected by cli:alice: not during the release freeze; nothing was changed"
    assert f"outcome: {data['outcome']}" in text
    # without the approval record the history alone still says it was a rejection
    assert told("replace-rejected")[0]["outcome"] == "rejected: no reason given; nothing was changed"


def test_a_failed_replacement_names_the_step_and_the_reason_wrapped_not_cut() -> None:
    data, text = told("replace-failed", width=60)

    assert data["outcome"] == (
        "failed at step 'Make sure a fresh verified backup exists' because IsADirectoryError: "
        "[Errno 21] Is a directory: 13"
    )
    lines = text.splitlines()
    assert all(len(line) <= 60 for line in lines[1:]), text  # the first line is the execution's name
    said = " ".join(line.strip() for line in lines[1 : lines.index("")])
    assert said == f"outcome: {data['outcome']}"  # every word of it, over several lines
    wrong = lines.index("what went wrong:")
    assert " ".join(line.strip() for line in lines[wrong + 1 : -2]) == (
        "Make sure a fresh verified backup exists: IsADirectoryError: [Errno 21] Is a directory: 13"
    )  # the one step that failed, not the Fail state that ends every failed run
    assert lines[-1] == "the messages the runbook sent: etcdops notifications"


def test_a_replacement_waiting_for_its_approval_says_what_and_how_to_approve() -> None:
    name = HISTORIES["replace-waiting"]["describe_execution"]["name"]

    data, _ = told("replace-waiting", approval(name))

    assert data["outcome"] == (
        "waiting for approval: replace member m1 of local (unhealthy for 3 rounds) — approve with "
        f"`etcdops approve {name}`"
    )


@pytest.mark.parametrize(
    ("running", "expected"),
    [
        ({"step": "Launch the replacement host", "waiting_for_approval": None},
         "  x-a1 (replace): at step 'Launch the replacement host'"),
        ({"step": "Wait for approval",
          "waiting_for_approval": {"what": "restore local", "approve": "etcdops approve x-a1"}},
         "  x-a1 (replace): waiting for approval: restore local — approve with `etcdops approve x-a1`"),
    ],
)  # fmt: skip
def test_the_live_screen_shows_each_running_runbook_at_its_step(running: dict[str, Any], expected: str) -> None:
    entry = {"runbook": "replace", "name": "x-a1", "started": "2026-12-07T18:00:00+00:00", **running}
    newest = {"runbook": "replace", "name": "x-a1", "status": "RUNNING", "started": entry["started"], "outcome": "-"}

    assert render_runbooks({"running": [entry], "newest": newest}).splitlines() == ["runbooks:", expected]


def test_a_replacement_that_succeeded_says_who_took_whose_place() -> None:
    done = {"member_name": "m2", "new_member": {"name": "m2-r65570c", "id": "c2458ae9f873edbf"}}

    assert outcome("SUCCEEDED", done, []) == "succeeded: m2 replaced by m2-r65570c (c2458ae9f873edbf)"
    assert outcome("SUCCEEDED", {"cluster": "local"}, []) == "succeeded: every step ran to its end"  # a restore


def test_an_upgrade_that_succeeded_says_each_members_version_before_and_after() -> None:
    done = {
        "version": "3.5.30",
        "members": {"m1": {"before": "3.5.30"}, "m2": {"before": "3.4.23"}, "m3": {"before": "3.4.23"}},
        "upgraded": [
            {"name": "m2", "before": "3.4.23", "after": "3.5.30", "was_leader": False},
            {"name": "m3", "before": "3.4.23", "after": "3.5.30", "was_leader": True},
        ],
        "cluster_version_before": "3.4.0",
        "cluster_version_after": "3.5.0",
    }

    assert outcome("SUCCEEDED", done, []) == (
        "succeeded: upgraded to etcd 3.5.30: m1 on 3.5.30 already, m2 3.4.23 -> 3.5.30, "
        "m3 3.4.23 -> 3.5.30 (led; went last); cluster version 3.4.0 -> 3.5.0"
    )
    nothing = {"version": "3.5.30", "nothing_to_do": True, "upgraded": []}
    assert outcome("SUCCEEDED", nothing, []) == "succeeded: every member runs etcd 3.5.30 already; nothing was upgraded"


def test_a_certificate_rotation_that_succeeded_says_what_each_member_serves_now() -> None:
    done = {"rotated": [{"name": "m1", "serial_after": "1a2b"}, {"name": "m2", "serial_after": "3c4d"}]}

    assert outcome("SUCCEEDED", done, []) == "succeeded: m1 now serves 1a2b, m2 now serves 3c4d"
    nothing = {"nothing_to_do": True, "rotated": []}
    assert outcome("SUCCEEDED", nothing, []) == "succeeded: no member certificate was due; nothing was renewed"
