"""Asking for an approval: the request event, what the human reads, one SNS message with the links."""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from etcdops.adapters.aws import Notifier
from etcdops.adapters.state import Approval, ApprovalStore, utc
from etcdops.app.approval.errors import REJECTED_ERROR, ApprovalExpiredError
from etcdops.app.approval.links import LinkSigner


def execution_name(value: str) -> str:
    """An execution's name from its name or its ARN (``arn:aws:states:…:execution:MACHINE:NAME``)."""
    value = value.strip()
    if value.startswith("arn:") and ":execution:" in value:
        return value.rsplit(":", 1)[-1]
    return value


class ApprovalRequestEvent(BaseModel):
    """The Payload of a runbook's ``waitForTaskToken`` approval task. Fields beyond these are the
    runbook's details (``member_id``, ``backup_id``, …) and go into the summary."""

    model_config = ConfigDict(extra="allow")

    task_token: str = Field(min_length=1)
    execution: str = Field(min_length=1, max_length=256)
    execution_arn: str | None = None
    runbook: str = Field(min_length=1)
    cluster: str = Field(min_length=1)
    reason: str = Field(min_length=1)
    summary: str | None = None
    expires_in_seconds: int | None = Field(default=None, gt=0, le=7 * 24 * 3600)

    def details(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


@dataclass(frozen=True)
class ApprovalRequest:
    """What a human is asked to approve: the change (``summary``), the policy's ``reason``, until when."""

    cluster: str
    execution: str
    runbook: str
    summary: str
    reason: str
    expires_at: datetime
    execution_arn: str | None = None

    @classmethod
    def from_event(cls, event: ApprovalRequestEvent, now: datetime, default_ttl_seconds: int) -> ApprovalRequest:
        ttl = event.expires_in_seconds or default_ttl_seconds
        return cls(
            cluster=event.cluster,
            execution=execution_name(event.execution),
            runbook=event.runbook,
            summary=event.summary or describe_change(event.runbook, event.cluster, event.details()),
            reason=event.reason,
            # links carry whole seconds: round down so the stored expiry never outlives a link
            expires_at=utc(now + timedelta(seconds=ttl)).replace(microsecond=0),
            execution_arn=event.execution_arn,
        )


def describe_change(runbook: str, cluster: str, details: Mapping[str, Any]) -> str:
    """One sentence on what the runbook will do, from its details."""
    if runbook == "ReplaceMember":
        member = details.get("member_name") or "?"
        member_id = details.get("member_id")
        ident = f" (id {member_id:x})" if isinstance(member_id, int) else f" (id {member_id})" if member_id else ""
        return (
            f"Replace failed member {member}{ident} of etcd cluster {cluster}: remove it from the membership, "
            "start a new host that joins as a learner, promote it once caught up, and repoint clients."
        )
    if runbook == "RestoreCluster":
        backup = details.get("backup_id") or "the latest verified backup"
        return (
            f"Restore etcd cluster {cluster} from backup {backup}: stop the API servers, restore every member "
            "from the snapshot, start the cluster and the API servers again. Writes since the backup are lost."
        )
    extra = ", ".join(f"{k}={v}" for k, v in sorted(details.items()))
    return f"Run {runbook} on etcd cluster {cluster}" + (f" ({extra})" if extra else "") + "."


def _request_id(task_token: str) -> str:
    return hashlib.sha256(task_token.encode()).hexdigest()[:32]


def send_task_commands(task_token: str, by: str = "aws-cli") -> tuple[str, str]:
    """The exact AWS CLI commands that approve and reject with ``task_token``."""
    output = json.dumps({"approved": True, "by": by})
    approve = (
        f"aws stepfunctions send-task-success --task-token {shlex.quote(task_token)} "
        f"--task-output {shlex.quote(output)}"
    )
    reject = (
        f"aws stepfunctions send-task-failure --task-token {shlex.quote(task_token)} "
        f"--error {REJECTED_ERROR} --cause 'REASON'"
    )
    return approve, reject


def request_approval(
    request: ApprovalRequest,
    task_token: str,
    *,
    store: ApprovalStore,
    notifier: Notifier,
    signer: LinkSigner,
    base_url: str,
    now: datetime,
) -> dict[str, Any]:
    """Store the token for ``request.execution`` and publish one message asking for a decision.

    The same task token always gives the same request id, so a re-delivered invocation re-sends
    the same working links. The result carries no token and no link (it may be logged)."""
    if not request.expires_at > now:
        raise ApprovalExpiredError(f"approval for {request.execution} would expire before it is asked for")
    request_id = _request_id(task_token)
    store.save_approval(
        Approval(
            execution=request.execution,
            cluster=request.cluster,
            runbook=request.runbook,
            request_id=request_id,
            task_token=task_token,
            summary=request.summary,
            reason=request.reason,
            requested_at=now,
            expires_at=request.expires_at,
            execution_arn=request.execution_arn,
        )
    )
    approve_url = signer.url(base_url, request.execution, "approve", request.expires_at, request_id)
    reject_url = signer.url(base_url, request.execution, "reject", request.expires_at, request_id)
    message = _request_message(request, approve_url, reject_url, now)
    notifier.publish(
        f"etcdops: approval needed: {request.runbook} on cluster {request.cluster}",
        message,
        {"cluster": request.cluster, "execution": request.execution, "runbook": request.runbook, "kind": "approval"},
    )
    return {
        "execution": request.execution,
        "cluster": request.cluster,
        "runbook": request.runbook,
        "request_id": request_id,
        "expires_at": request.expires_at.isoformat(),
        "published": True,
    }


def _request_message(request: ApprovalRequest, approve_url: str, reject_url: str, now: datetime) -> str:
    """The approval message: what, why, until when, the two links and the commands (never the task token)."""
    minutes = max(1, round((request.expires_at - now).total_seconds() / 60))
    return "\n".join(
        [
            f"etcdops asks for your approval: {request.runbook} on etcd cluster {request.cluster}.",
            "",
            f"What will happen: {request.summary}",
            f"Why: {request.reason}",
            f"Execution: {request.execution}" + (f" ({request.execution_arn})" if request.execution_arn else ""),
            f"Expires: {request.expires_at.isoformat()} (in about {minutes} min); after that the links stop "
            "working and the runbook fails safe when its wait times out.",
            "",
            f"Approve: {approve_url}",
            f"Reject:  {reject_url}",
            "",
            "Each link opens a page with a confirm button; the first decision counts, later ones have no effect.",
            "",
            "Or with AWS credentials, from a shell:",
            f"  etcdops approve {shlex.quote(request.execution)}",
            f"  etcdops reject {shlex.quote(request.execution)} --reason 'WHY'",
            f"or with Step Functions directly: `etcdops approval show {shlex.quote(request.execution)}` prints "
            "the send-task-success and send-task-failure commands (the task token is in the execution's history, "
            'in the input of the "Wait for approval" step; this message never carries it).',
        ]
    )
