"""Backup: on an EventBridge schedule, take, check, encrypt, store and catalogue one backup (the event's
``detail.kind``: ``full``, the default, or ``volume``).

A failure raises (Lambda retries it, then FailureNotice says it once)."""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from etcdops.entrypoints.aws_clients import ContainerClients
from etcdops.entrypoints.events import backup_detail
from etcdops.entrypoints.fanout import self_invoker
from etcdops.entrypoints.jobs import AwsClients, backup_job, with_fleet
from etcdops.entrypoints.observability import function_logger, function_metrics
from etcdops.entrypoints.settings import JobSettings

logger = function_logger("etcdops-backup")
aws_clients = ContainerClients()  # made on first use, kept for the container's life
metrics = function_metrics()  # its own metric set and dimensions (observability.function_metrics)


@logger.inject_lambda_context(log_event=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    detail = backup_detail(event)  # anything but an EventBridge event or a schedule's input is refused here
    settings = JobSettings.from_env(os.environ)
    clients = AwsClients.from_session(aws_clients)
    invoke = self_invoker(aws_clients.client("lambda"), context.invoked_function_arn, event, "backup")
    result = with_fleet(
        settings, clients, detail.cluster, invoke,
        lambda: backup_job(settings, clients, metrics, detail.cluster, kind=detail.kind),
    )  # fmt: skip
    logger.info("backup stored" if "backup_id" in result else "backup skipped", extra=result)
    return result
