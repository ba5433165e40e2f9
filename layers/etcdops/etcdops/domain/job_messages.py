"""What the scheduled jobs tell people: one message when a backup or its verification has failed for good.

Lambda calls the FailureNotice function (the OnFailure destination of Backup and BackupVerify) once
an asynchronous invocation has failed for good: its retries spent, or the event too old to run. The
message is made here from that invocation record: what failed, the error's type and message, never
a stack trace (that stays in the function's log).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

# the jobs by the logical id in their function's name (CloudFormation names a function
# <stack>-<LogicalId>-<suffix>); a name cut short by CloudFormation is shown as it is
JOBS = {"BackupFunction": "Backup", "BackupVerifyFunction": "Backup verification"}
_LOGICAL_ID = re.compile(r"-(?P<id>[A-Za-z0-9]+)-[A-Za-z0-9]+$")
ERROR_LIMIT = 2000  # characters of the error message kept in a mail


@dataclass(frozen=True)
class Notice:
    subject: str
    body: str
    attributes: dict[str, str] = field(default_factory=dict)


def job_of(function_name: str) -> str:
    """``Backup`` for ``prod-eu-BackupFunction-1AbC2dE3``; the function name itself when it is not one of ours."""
    found = _LOGICAL_ID.search(function_name)
    return JOBS.get(found.group("id"), function_name) if found else function_name


def function_name_of(function_arn: str) -> str:
    """``my-fn`` of ``arn:aws:lambda:<region>:<account>:function:my-fn[:qualifier]``."""
    parts = function_arn.split(":")
    return parts[6] if len(parts) >= 7 and parts[5] == "function" else function_arn


def _what_happened(condition: str, attempts: int) -> str:
    if condition == "RetriesExhausted":
        return f"after {attempts} attempt{'s' if attempts != 1 else ''}"
    if condition == "EventAgeExceeded":
        return "without running it again: the event grew older than the function's maximum event age"
    return f"({condition}, {attempts} attempt{'s' if attempts != 1 else ''})"


def _error_text(error_type: str | None, error_message: str | None) -> str:
    if not error_type and not error_message:
        return "no error reported (the function did not run)"
    message = (error_message or "").strip()
    if len(message) > ERROR_LIMIT:
        message = message[: ERROR_LIMIT - 1] + "…"
    return f"{error_type or 'Error'}: {message}" if message else str(error_type)


def job_failed(
    *,
    cluster: str,
    function_arn: str,
    condition: str,
    attempts: int,
    error_type: str | None,
    error_message: str | None,
    request_id: str,
    at: datetime,
) -> Notice:
    """The one message for an invocation of a scheduled job that failed for good."""
    function = function_name_of(function_arn)
    job = job_of(function)
    return Notice(
        subject=f"etcdops: {job} FAILED for cluster {cluster}",
        body=(
            f"{job} of etcd cluster {cluster} failed at {at.isoformat()}, "
            f"{_what_happened(condition, attempts)}:\n{_error_text(error_type, error_message)}\n\n"
            "The previous verified backups are untouched; the next scheduled run tries again.\n"
            f"The function's log has the details: {function}, request {request_id}."
        ),
        attributes={"cluster": cluster, "kind": f"{job.lower().replace(' ', '-')}-failed"},
    )
