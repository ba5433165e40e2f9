"""DeltaBackup: on an EventBridge schedule (every minute), store the changes since the last delta as the
chain's next delta, or start a new chain from a fresh full backup when the chain cannot go on. A schedule
event that names no cluster runs for the stack's default cluster and invokes the function once more per
registered cluster (``detail.cluster``), as Backup does.

A failure raises (Lambda retries it, then FailureNotice says it once)."""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from etcdops.entrypoints.aws_clients import ContainerClients
from etcdops.entrypoints.events import ScheduledEvent, parse_event
from etcdops.entrypoints.fanout import self_invoker
from etcdops.entrypoints.jobs import AwsClients, delta_backup_job, with_fleet
from etcdops.entrypoints.observability import function_logger, function_metrics
from etcdops.entrypoints.settings import DeltaJobSettings

logger = function_logger("etcdops-delta-backup")
aws_clients = ContainerClients()  # made on first use, kept for the container's life
metrics = function_metrics()  # its own metric set and dimensions (observability.function_metrics)


@logger.inject_lambda_context(log_event=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    detail = parse_event(event, ScheduledEvent).detail  # anything but a scheduled event is refused here
    settings = DeltaJobSettings.from_env(os.environ)
    clients, dynamodb = AwsClients.from_session(aws_clients), aws_clients.client("dynamodb")
    invoke = self_invoker(aws_clients.client("lambda"), context.invoked_function_arn, event, "delta backup")
    result = with_fleet(
        settings, clients, detail.cluster, invoke,
        lambda: delta_backup_job(settings, clients, dynamodb, metrics, detail.cluster),
    )  # fmt: skip
    logger.info("delta backup: " + str(result.get("action", "skipped")), extra=result)
    return result
