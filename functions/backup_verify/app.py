"""BackupVerify: daily, fetch, decrypt and check the newest backup (or the one named in the event).

A failure raises (Lambda retries it, then FailureNotice says it once)."""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from etcdops.entrypoints.aws_clients import ContainerClients
from etcdops.entrypoints.events import VerifyEvent, parse_event
from etcdops.entrypoints.fanout import self_invoker
from etcdops.entrypoints.jobs import AwsClients, verify_job, with_fleet
from etcdops.entrypoints.observability import function_logger, function_metrics
from etcdops.entrypoints.settings import JobSettings

logger = function_logger("etcdops-backup-verify")
aws_clients = ContainerClients()  # made on first use, kept for the container's life
metrics = function_metrics()  # its own metric set and dimensions (observability.function_metrics)


@logger.inject_lambda_context(log_event=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    parsed = parse_event(event, VerifyEvent)
    settings = JobSettings.from_env(os.environ)
    detail, clients = parsed.detail, AwsClients.from_session(aws_clients)
    invoke = self_invoker(aws_clients.client("lambda"), context.invoked_function_arn, event, "backup verification")
    result = with_fleet(
        settings, clients, detail.cluster, invoke,
        lambda: verify_job(settings, clients, metrics, detail.backup_id, detail.cluster),
    )  # fmt: skip
    logger.info("backup verified" if result.get("ok") else "backup verification skipped", extra=result)
    return result
