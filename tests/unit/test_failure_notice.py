"""FailureNotice: one message, without a stack trace, for a Backup or BackupVerify invocation that
Lambda gave up on (the record its OnFailure destination receives)."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from etcdops.adapters.aws import MemoryNotifier
from etcdops.domain.job_messages import ERROR_LIMIT, function_name_of, job_failed, job_of
from etcdops.entrypoints.events import FailedInvocationRecord, InvalidEventError, parse_event
from etcdops.entrypoints.jobs import failure_notice_job
from etcdops.entrypoints.settings import JobSettings

ROOT = Path(__file__).resolve().parents[2]
# what Lambda sends FailureNotice (sam local invoke FailureNoticeFunction -e events/failure_notice_record.json)
RECORD: dict[str, Any] = json.loads((ROOT / "events" / "failure_notice_record.json").read_text())
FUNCTION_ARN = RECORD["requestContext"]["functionArn"]
SETTINGS = JobSettings(
    config_parameter="/etcdops/prod-eu/config", topic_arn="arn:aws:sns:eu-west-1:1:t", cluster_name="prod-eu"
)


def record(**changes: Any) -> dict[str, Any]:
    changed = copy.deepcopy(RECORD)
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        node = changed
        for parent in parents:
            node = node[parent]
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return changed


def notice_for(event: dict[str, Any]) -> tuple[str, str, dict[str, str]]:
    notifier = MemoryNotifier()
    failure_notice_job(parse_event(event, FailedInvocationRecord), SETTINGS, notifier)
    [message] = notifier.messages
    return message


def test_a_backup_that_failed_for_good_is_one_message_without_the_stack_trace() -> None:
    subject, body, attributes = notice_for(RECORD)

    assert subject == "etcdops: Backup FAILED for cluster prod-eu"
    assert body.startswith(
        "Backup of etcd cluster prod-eu failed at 2026-12-01T08:30:05.568000+00:00, after 2 attempts:\n"
    )
    assert "BackupError: no member of cluster prod-eu answered within 5 s" in body
    assert "prod-eu-BackupFunction-1AbC2dE3fG4h, request e4b46cbf-b738-4a8a-8880-a18cdf61200e" in body
    assert "File " not in body and "stackTrace" not in body and "/var/task" not in body
    assert attributes == {"cluster": "prod-eu", "kind": "backup-failed"}


def test_a_verification_is_named_as_such() -> None:
    arn = FUNCTION_ARN.replace("BackupFunction", "BackupVerifyFunction")
    subject, _, attributes = notice_for(record(requestContext__functionArn=arn))
    assert subject == "etcdops: Backup verification FAILED for cluster prod-eu"
    assert attributes["kind"] == "backup-verification-failed"


def test_a_timeout_has_a_message_and_no_type() -> None:
    # Lambda's record of a timeout carries the message only
    timed_out = record(
        responsePayload={"errorMessage": "2026-12-01T08:45:05Z e4b4 Task timed out after 900.00 seconds"}
    )
    _, body, _ = notice_for(timed_out)
    assert "Error: 2026-12-01T08:45:05Z e4b4 Task timed out after 900.00 seconds" in body


def test_an_event_too_old_to_run_says_so() -> None:
    too_old = record(requestContext__condition="EventAgeExceeded", responseContext=None, responsePayload=None)
    _, body, _ = notice_for(too_old)
    assert "without running it again: the event grew older than the function's maximum event age" in body
    assert "no error reported (the function did not run)" in body


def test_a_long_error_message_is_cut() -> None:
    long = record(responsePayload={"errorType": "BackupError", "errorMessage": "x" * (ERROR_LIMIT * 3)})
    _, body, _ = notice_for(long)
    assert "x" * (ERROR_LIMIT - 1) + "…" in body and "x" * ERROR_LIMIT not in body


@pytest.mark.parametrize(
    ("name", "job"),
    [
        ("prod-eu-BackupFunction-1AbC2dE3fG4h", "Backup"),
        ("prod-eu-BackupVerifyFunction-1AbC2dE3fG4h", "Backup verification"),
        # CloudFormation cut a long name short: shown as it is, never taken for the other job
        (
            "a-very-long-stack-name-of-a-cluster-BackupVerifyFu-1AbC2dE3fG4h",
            "a-very-long-stack-name-of-a-cluster-BackupVerifyFu-1AbC2dE3fG4h",
        ),
        ("someone-elses-function", "someone-elses-function"),
    ],
)
def test_the_job_is_named_by_the_logical_id_in_the_function_name(name: str, job: str) -> None:
    assert job_of(name) == job


def test_the_function_name_comes_from_its_arn_with_or_without_a_qualifier() -> None:
    assert function_name_of(FUNCTION_ARN) == "prod-eu-BackupFunction-1AbC2dE3fG4h"
    assert function_name_of(FUNCTION_ARN.rsplit(":", 1)[0]) == "prod-eu-BackupFunction-1AbC2dE3fG4h"
    assert function_name_of("not-an-arn") == "not-an-arn"


def test_one_attempt_is_said_in_the_singular() -> None:
    notice = job_failed(
        cluster="c", function_arn=FUNCTION_ARN, condition="RetriesExhausted", attempts=1,
        error_type="E", error_message="m", request_id="r", at=datetime(2026, 1, 1, tzinfo=UTC),
    )  # fmt: skip
    assert ", after 1 attempt:\n" in notice.body


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ("not a record", r"^FailedInvocationRecord: expected a JSON object, got str$"),
        (record(requestContext=None), r"^FailedInvocationRecord: requestContext: Field required"),
        (
            record(requestContext__functionArn="arn:aws:sqs:eu-west-1:1:q"),
            r"^FailedInvocationRecord: requestContext\.functionArn",
        ),
        (
            record(requestContext__approximateInvokeCount=-1),
            r"^FailedInvocationRecord: requestContext\.approximateInvokeCount",
        ),
    ],
    ids=["not-an-object", "no-context", "not-a-function", "negative-count"],
)
def test_a_malformed_record_is_refused_by_name_and_nothing_is_sent(event: Any, message: str) -> None:
    with pytest.raises(InvalidEventError, match=message):
        parse_event(event, FailedInvocationRecord)


def test_a_fleet_clusters_failed_job_names_that_cluster_not_the_stacks() -> None:
    notifier = MemoryNotifier()
    failed = record(requestPayload={**RECORD["requestPayload"], "detail": {"cluster": "c2"}})
    result = failure_notice_job(parse_event(failed, FailedInvocationRecord), SETTINGS, notifier)
    assert result["cluster"] == "c2" and "c2" in notifier.messages[0][0] and "prod-eu" not in notifier.messages[0][0]
