"""HealthCheck: on the schedule, on our alarms and on EC2 events of member instances, probe every
member, record the round, publish metrics, and act on the policy's decision."""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from etcdops.adapters.aws import SnsNotifier
from etcdops.adapters.fleet_state import DynamoFleetStore
from etcdops.adapters.healthmetrics import EmfHealthMetrics
from etcdops.adapters.state_dynamodb import DynamoStateStore
from etcdops.entrypoints.aws_clients import ContainerClients
from etcdops.entrypoints.events import HealthCheckEvent, parse_event
from etcdops.entrypoints.health_check import HealthAwsClients, health_job, round_invoker
from etcdops.entrypoints.health_triggers import trigger_from_event
from etcdops.entrypoints.observability import function_logger, function_metrics
from etcdops.entrypoints.settings import HealthSettings

logger = function_logger("etcdops-health-check")
aws_clients = ContainerClients()  # made on first use, kept for the container's life
metrics = function_metrics()  # its own metric set and dimensions (observability.function_metrics)


@logger.inject_lambda_context(log_event=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    trigger = trigger_from_event(parse_event(event, HealthCheckEvent))  # malformed events are refused here
    settings = HealthSettings.from_env(os.environ)
    notifier = SnsNotifier(aws_clients.client("sns"), settings.topic_arn) if settings.topic_arn else None
    state = DynamoStateStore(settings.table_name, aws_clients.client("dynamodb"))
    result = health_job(
        settings,
        HealthAwsClients.from_session(aws_clients),
        EmfHealthMetrics(metrics),
        notifier,
        state,
        trigger,
        fleet_store=DynamoFleetStore(settings.table_name, aws_clients.client("dynamodb")),
        invoke_round=round_invoker(aws_clients.client("lambda"), context.invoked_function_arn, event),
    )
    logged = ("cluster", "trigger", "skipped", "decision", "actions", "configured", "fanned_out")
    logger.info("health round", extra={k: result[k] for k in logged if k in result})
    return result
