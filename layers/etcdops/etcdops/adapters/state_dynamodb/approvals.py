"""Approvals, found by execution alone: each in its own partition (``approval#<execution>``)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from etcdops.adapters.state import Approval, utc
from etcdops.adapters.state_dynamodb.table import (
    APPROVAL_TTL_GRACE_SECONDS,
    TTL_ATTRIBUTE,
    ConditionFailed,
    DynamoTable,
    approval_pk,
    cluster_pk,
    epoch_s_ceil,
)


def _approval_from_item(item: Mapping[str, Any]) -> Approval:
    def text(name: str) -> str | None:
        return item[name]["S"] if name in item else None

    decided_at = text("decided_at")
    return Approval(
        execution=item["execution"]["S"],
        cluster=item["cluster"]["S"],
        runbook=item["runbook"]["S"],
        request_id=item["request_id"]["S"],
        task_token=item["task_token"]["S"],
        summary=item["summary"]["S"],
        reason=item["reason"]["S"],
        requested_at=datetime.fromisoformat(item["requested_at"]["S"]),
        expires_at=datetime.fromisoformat(item["expires_at"]["S"]),
        execution_arn=text("execution_arn"),
        decision=text("decision"),
        decided_by=text("decided_by"),
        decided_at=datetime.fromisoformat(decided_at) if decided_at else None,
        decision_reason=text("decision_reason"),
    )


class ApprovalItems(DynamoTable):
    """A :class:`etcdops.adapters.state.ApprovalStore` on the state table."""

    def _approval_key(self, execution: str) -> dict[str, Any]:
        return {"pk": {"S": approval_pk(execution)}, "sk": {"S": "approval"}}

    def save_approval(self, approval: Approval) -> None:
        cluster_pk(approval.cluster)
        item: dict[str, Any] = {
            **self._approval_key(approval.execution),
            "execution": {"S": approval.execution},
            "cluster": {"S": approval.cluster},
            "runbook": {"S": approval.runbook},
            "request_id": {"S": approval.request_id},
            "task_token": {"S": approval.task_token},
            "summary": {"S": approval.summary},
            "reason": {"S": approval.reason},
            "requested_at": {"S": utc(approval.requested_at).isoformat()},
            "expires_at": {"S": utc(approval.expires_at).isoformat()},
            TTL_ATTRIBUTE: {"N": str(epoch_s_ceil(approval.expires_at) + APPROVAL_TTL_GRACE_SECONDS)},
        }
        if approval.execution_arn:
            item["execution_arn"] = {"S": approval.execution_arn}
        # a new request is never stored decided: the decision fields are written by consume only
        self._call("put_item", Item=item)

    def load_approval(self, execution: str) -> Approval | None:
        response = self._call("get_item", Key=self._approval_key(execution), ConsistentRead=True)
        item: dict[str, Any] | None = response.get("Item")
        return _approval_from_item(item) if item is not None else None

    def consume_approval(
        self, execution: str, request_id: str, decision: str, by: str, reason: str | None, now: datetime
    ) -> bool:
        values: dict[str, Any] = {
            ":rid": {"S": request_id},
            ":decision": {"S": decision},
            ":by": {"S": by},
            ":at": {"S": utc(now).isoformat()},
        }
        update = "SET #decision = :decision, decided_by = :by, decided_at = :at"
        if reason is not None:
            update += ", decision_reason = :reason"
            values[":reason"] = {"S": reason}
        try:
            self._call(
                "update_item",
                Key=self._approval_key(execution),
                UpdateExpression=update,
                ConditionExpression="attribute_exists(pk) AND request_id = :rid AND attribute_not_exists(#decision)",
                ExpressionAttributeNames={"#decision": "decision"},
                ExpressionAttributeValues=values,
            )
        except ConditionFailed:
            return False
        return True

    def release_approval(self, execution: str, request_id: str, decided_at: datetime) -> bool:
        try:
            self._call(
                "update_item",
                Key=self._approval_key(execution),
                UpdateExpression="REMOVE #decision, decided_by, decided_at, decision_reason",
                ConditionExpression="request_id = :rid AND decided_at = :at",
                ExpressionAttributeNames={"#decision": "decision"},
                ExpressionAttributeValues={":rid": {"S": request_id}, ":at": {"S": utc(decided_at).isoformat()}},
            )
        except ConditionFailed:
            return False
        return True
