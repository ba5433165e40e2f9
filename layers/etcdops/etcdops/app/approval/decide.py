"""Deciding an approval exactly once: a conditional write first, then Step Functions."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Final

from botocore.exceptions import BotoCoreError, ClientError

from etcdops.adapters.awserrors import AwsUnavailableError, aws_error_code
from etcdops.adapters.state import Approval, ApprovalStore, utc
from etcdops.app.approval.errors import (
    ACTIONS,
    REJECTED_ERROR,
    Action,
    AlreadyDecidedError,
    ApprovalExpiredError,
    ApprovalNotFoundError,
    InvalidLinkError,
    TaskTokenRejectedError,
    past_tense,
)
from etcdops.app.approval.request import execution_name

_TOKEN_GONE: Final = frozenset({"TaskTimedOut", "InvalidToken", "TaskDoesNotExist"})
_MAX_CAUSE: Final = 32768


def _pending(store: ApprovalStore, name: str, request_id: str | None, now: datetime) -> Approval:
    """The request of execution ``name`` still waiting for a decision (and the one the link names)."""
    approval = store.load_approval(name)
    if approval is None:
        raise ApprovalNotFoundError(f"no approval request for execution {name}")
    if request_id is not None and approval.request_id != request_id:
        raise InvalidLinkError(f"the link belongs to an earlier approval request of execution {name}")
    if approval.decision is not None:
        raise AlreadyDecidedError(approval)
    if approval.is_expired(now):
        raise ApprovalExpiredError(
            f"the approval request of execution {name} expired at {approval.expires_at.isoformat()}"
        )
    return approval


def decide_approval(
    execution: str,
    action: Action,
    reason: str | None,
    *,
    store: ApprovalStore,
    sfn: Any,
    now: datetime,
    by: str,
    request_id: str | None = None,
) -> dict[str, Any]:
    """Approve or reject ``execution``'s pending request, once.

    ``request_id`` (from a link) must be the current request's. The decision is recorded with a
    conditional write before Step Functions is called, so two clicks make one call. When the call
    fails in a way worth retrying the record is released again (:class:`AwsUnavailableError`);
    when Step Functions no longer knows the token, the decision stays recorded and
    :class:`TaskTokenRejectedError` is raised."""
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {ACTIONS}, got {action!r}")
    name = execution_name(execution)
    approval = _pending(store, name, request_id, now)
    if action == "reject":
        reason = (reason or "").strip() or f"rejected by {by}"
    if not store.consume_approval(name, approval.request_id, action, by, reason, now):
        current = store.load_approval(name)
        if current is not None and current.request_id == approval.request_id and current.decision is not None:
            raise AlreadyDecidedError(current)
        raise InvalidLinkError(f"the approval request of execution {name} was replaced while deciding")
    decided_at = utc(now)
    try:
        if action == "approve":
            output = {"approved": True, "by": by, "decided_at": decided_at.isoformat()}
            sfn.send_task_success(taskToken=approval.task_token, output=json.dumps(output))
        else:
            cause = (reason or "")[:_MAX_CAUSE]
            sfn.send_task_failure(taskToken=approval.task_token, error=REJECTED_ERROR, cause=cause)
    except (ClientError, BotoCoreError) as exc:
        code = aws_error_code(exc)
        if code in _TOKEN_GONE:
            raise TaskTokenRejectedError(
                f"Step Functions no longer waits for execution {name}'s approval ({code}); nothing changed"
            ) from None
        # the record is released again, so sending the decision once more is safe whatever the cause
        store.release_approval(name, approval.request_id, decided_at)
        raise AwsUnavailableError(f"sending the decision to Step Functions: {code or type(exc).__name__}") from None
    return {
        "execution": name,
        "cluster": approval.cluster,
        "runbook": approval.runbook,
        "decision": past_tense(action),
        "by": by,
        "decided_at": decided_at.isoformat(),
        "reason": reason,
    }
