"""RunbookStep: one step of a runbook state machine (the step's name is in the event)."""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from etcdops.entrypoints.aws_clients import ContainerClients
from etcdops.entrypoints.events import parse_event
from etcdops.entrypoints.observability import function_logger
from etcdops.entrypoints.runbook_step import RunbookStepEvent, run_runbook_step
from etcdops.entrypoints.settings import RunbookSettings

logger = function_logger("etcdops-runbook")
aws_clients = ContainerClients()  # made on first use, kept for the container's life


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    step = parse_event(event, RunbookStepEvent)
    logger.append_keys(cluster=step.document.get("cluster"), execution=step.document.get("execution"), step=step.step)
    return run_runbook_step(step, RunbookSettings.from_env(os.environ), aws_clients)
