"""The approvals' named errors, actions and the error a rejection is sent with."""

from __future__ import annotations

from typing import Final, Literal

from etcdops.adapters.state import Approval
from etcdops.domain.errors import APPROVAL_REJECTED, EtcdopsError, NotFoundError

Action = Literal["approve", "reject"]
ACTIONS: Final[tuple[Action, ...]] = ("approve", "reject")
REJECTED_ERROR: Final = APPROVAL_REJECTED
"""The ``error`` of SendTaskFailure on a rejection: the runbooks ``Catch`` it by this name."""


class ApprovalError(EtcdopsError):
    """An approval could not be requested or decided; the subclass says why."""


class InvalidLinkError(ApprovalError):
    """The link is malformed, altered, signed with another secret, or replaced by a newer request."""


class ExpiredLinkError(ApprovalError):
    """The link is genuine but its expiry has passed."""


class ApprovalExpiredError(ApprovalError):
    """The approval request has expired; the runbook will time out (nothing was sent)."""


class ApprovalNotFoundError(ApprovalError, NotFoundError):
    """No approval request is stored for this execution."""


class AlreadyDecidedError(ApprovalError):
    """The request was decided before; this use had no effect."""

    def __init__(self, approval: Approval) -> None:
        when = approval.decided_at.isoformat() if approval.decided_at else "earlier"
        super().__init__(
            f"execution {approval.execution} was already {past_tense(approval.decision)} "
            f"by {approval.decided_by} at {when}"
        )
        self.approval = approval


class TaskTokenRejectedError(ApprovalError):
    """Step Functions no longer accepts the task token (timed out, finished, or unknown)."""


def past_tense(decision: str | None) -> str:
    return {"approve": "approved", "reject": "rejected"}.get(decision or "", "decided")
