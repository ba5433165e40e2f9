"""Approval: the API behind the signed approve/reject links (HTTP API, payload format 2.0).

GET on a link shows what will happen and a confirm button; POST decides. Status codes come from
etcdops.app.approval.HTTP_STATUS: invalid, altered or expired link 403, unknown 404, already decided 409.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools.utilities.parser.models import APIGatewayProxyEventV2Model
from aws_lambda_powertools.utilities.typing import LambdaContext

from etcdops.adapters.state_dynamodb import DynamoStateStore
from etcdops.app.approval import LinkSigner, SigningSecretCache, handle_api_request
from etcdops.entrypoints.aws_clients import ContainerClients
from etcdops.entrypoints.events import parse_event
from etcdops.entrypoints.observability import function_logger
from etcdops.entrypoints.settings import ApprovalApiSettings

logger = function_logger("etcdops-approval")
aws_clients = ContainerClients()  # made on first use, kept for the container's life
signing_secret = SigningSecretCache()  # filled on the first invocation, kept for the container's life


@logger.inject_lambda_context  # never log_event: the query string is a signed capability
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse_event(event, APIGatewayProxyEventV2Model)
    settings = ApprovalApiSettings.from_env(os.environ)
    response = handle_api_request(
        request,
        signer=LinkSigner(signing_secret.get(aws_clients.client("secretsmanager"), settings.secret_arn)),
        store=DynamoStateStore(settings.table_name, aws_clients.client("dynamodb")),
        sfn=aws_clients.client("stepfunctions"),
        now=datetime.now(UTC),
    )
    logger.info("approval page served", extra={"route": request.routeKey, "status": response.status})
    return response.to_api_gateway()
