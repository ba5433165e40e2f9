"""FailureNotice: the OnFailure destination of Backup and BackupVerify.

Lambda calls it with its record of an asynchronous invocation that failed for good (retries spent,
or the event too old; a timeout or a crash included); it says so once over SNS, without a stack trace.
"""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from etcdops.adapters.aws import SnsNotifier
from etcdops.entrypoints.aws_clients import ContainerClients
from etcdops.entrypoints.events import FailedInvocationRecord, parse_event
from etcdops.entrypoints.jobs import failure_notice_job
from etcdops.entrypoints.observability import function_logger
from etcdops.entrypoints.settings import FailureNoticeSettings

logger = function_logger("etcdops-failure-notice")
aws_clients = ContainerClients()  # made on first use, kept for the container's life


@logger.inject_lambda_context(log_event=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    record = parse_event(event, FailedInvocationRecord)
    settings = FailureNoticeSettings.from_env(os.environ)
    notifier = SnsNotifier(aws_clients.client("sns"), settings.topic_arn)
    result = failure_notice_job(record, settings, notifier)
    logger.info("failure notice sent", extra=result)
    return result
