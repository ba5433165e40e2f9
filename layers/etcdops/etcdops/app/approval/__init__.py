"""Human approvals for runbooks: ask over SNS with signed, expiring links; decide exactly once.

A runbook's approval step is a Lambda task invoked with ``lambda:invoke.waitForTaskToken``.
:func:`request_approval` stores the task token under the execution's name and publishes one SNS
message saying what will happen, why, until when, with an approve link, a reject link and the
``etcdops approve``/``reject`` commands as a fallback; never the task token itself (``etcdops approval
show`` prints the ``aws stepfunctions send-task-success`` commands with it, for those with credentials).

A link is ``<base>/<action>?execution=..&action=..&expires=..&request=..&sig=..`` where ``sig`` is
HMAC-SHA256 (secret from Secrets Manager) over a canonical string of the four other values, checked
with :func:`hmac.compare_digest`. ``request`` names one approval request: when a retried approval
step asks again (new task token), links of the earlier request stop working.

:func:`decide_approval` records the decision with a conditional write first (the first use wins;
every later use raises :class:`AlreadyDecidedError` and calls Step Functions no more), then calls
``SendTaskSuccess`` / ``SendTaskFailure(error="ApprovalRejected")``.

The approval API (:func:`handle_api_request`): ``GET`` on a link verifies it and shows what will happen with
a confirm button, changing nothing (mail scanners and chat unfurlers fetch links on their own);
``POST`` to the same link decides. Errors map to HTTP status codes in :data:`HTTP_STATUS`, the one
place that does so.

Clients and the clock are arguments; nothing here reads the environment, except the two settings
classes that handlers call at the start of an invocation.

The package, by concern: ``errors`` (the named errors and actions), ``links`` (signing and checking
links, the signing secret), ``request`` (asking), ``decide`` (deciding once), ``api`` (the HTTP API).
"""

from __future__ import annotations

from etcdops.app.approval.api import (
    FORM_FIELDS,
    HTTP_STATUS,
    HttpResponse,
    form_reason,
    handle_api_request,
    http_status,
    link_params,
)
from etcdops.app.approval.decide import decide_approval
from etcdops.app.approval.errors import (
    ACTIONS,
    REJECTED_ERROR,
    Action,
    AlreadyDecidedError,
    ApprovalError,
    ApprovalExpiredError,
    ApprovalNotFoundError,
    ExpiredLinkError,
    InvalidLinkError,
    TaskTokenRejectedError,
)
from etcdops.app.approval.links import (
    MIN_SECRET_BYTES,
    LinkSigner,
    SigningSecretCache,
    VerifiedLink,
    sign_link,
    verify_link,
)
from etcdops.app.approval.request import (
    ApprovalRequest,
    ApprovalRequestEvent,
    describe_change,
    execution_name,
    request_approval,
    send_task_commands,
)

__all__ = [
    "ACTIONS",
    "FORM_FIELDS",
    "HTTP_STATUS",
    "MIN_SECRET_BYTES",
    "REJECTED_ERROR",
    "Action",
    "AlreadyDecidedError",
    "ApprovalError",
    "ApprovalExpiredError",
    "ApprovalNotFoundError",
    "ApprovalRequest",
    "ApprovalRequestEvent",
    "ExpiredLinkError",
    "HttpResponse",
    "InvalidLinkError",
    "LinkSigner",
    "SigningSecretCache",
    "TaskTokenRejectedError",
    "VerifiedLink",
    "decide_approval",
    "describe_change",
    "execution_name",
    "form_reason",
    "handle_api_request",
    "http_status",
    "link_params",
    "request_approval",
    "send_task_commands",
    "sign_link",
    "verify_link",
]
