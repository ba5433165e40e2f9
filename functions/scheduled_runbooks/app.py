"""ScheduledRunbooks: on MaintenanceSchedule and RestoreDrillSchedule, start MaintainCluster or RestoreDrill
once per cluster of the deployment (etcdops.entrypoints.scheduled_runbooks)."""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from etcdops.entrypoints.aws_clients import ContainerClients
from etcdops.entrypoints.events import ScheduledEvent, parse_event
from etcdops.entrypoints.observability import function_logger
from etcdops.entrypoints.scheduled_runbooks import start_scheduled_runbooks
from etcdops.entrypoints.settings import ScheduledRunbookSettings

logger = function_logger("etcdops-scheduled-runbooks")
aws_clients = ContainerClients()  # made on first use, kept for the container's life


@logger.inject_lambda_context(log_event=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    scheduled = parse_event(event, ScheduledEvent)  # anything but a scheduled event is refused here
    result = start_scheduled_runbooks(
        ScheduledRunbookSettings.from_env(os.environ),
        aws_clients.client("ssm"),
        aws_clients.client("stepfunctions"),
        scheduled.resources,
        scheduled.time,
    )
    logger.info("scheduled runbooks started", extra=result)
    return result
