"""RequestApproval: the ``lambda:invoke.waitForTaskToken`` task of a runbook's approval step.

Stores the task token under the execution and publishes one SNS message with what will happen,
why, the expiry, signed approve/reject links and the CLI fallback (never the token itself).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from etcdops.adapters.aws import SnsNotifier
from etcdops.adapters.state_dynamodb import DynamoStateStore
from etcdops.app.approval import (
    ApprovalRequest,
    ApprovalRequestEvent,
    LinkSigner,
    SigningSecretCache,
    request_approval,
)
from etcdops.entrypoints.aws_clients import ContainerClients
from etcdops.entrypoints.events import parse_event
from etcdops.entrypoints.observability import function_logger
from etcdops.entrypoints.settings import RequestApprovalSettings

logger = function_logger("etcdops-request-approval")
aws_clients = ContainerClients()  # made on first use, kept for the container's life
signing_secret = SigningSecretCache()  # filled on the first invocation, kept for the container's life


@logger.inject_lambda_context(clear_state=True)  # never log_event: the event holds the task token
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    parsed = parse_event(event, ApprovalRequestEvent)
    settings = RequestApprovalSettings.from_env(os.environ)
    logger.append_keys(cluster=parsed.cluster, execution=parsed.execution, runbook=parsed.runbook)
    now = datetime.now(UTC)
    result = request_approval(
        ApprovalRequest.from_event(parsed, now, settings.ttl_seconds),
        parsed.task_token,
        store=DynamoStateStore(settings.table_name, aws_clients.client("dynamodb")),
        notifier=SnsNotifier(aws_clients.client("sns"), settings.topic_arn),
        signer=LinkSigner(signing_secret.get(aws_clients.client("secretsmanager"), settings.secret_arn)),
        base_url=settings.base_url,
        now=now,
    )
    logger.info("approval requested", extra=result)
    return result
