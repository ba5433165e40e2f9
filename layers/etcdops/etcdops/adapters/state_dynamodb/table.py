"""The state table itself: its key schema, the one call that translates DynamoDB's errors, and the
base every concern's items are written through (the package's docstring has the item layout)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from etcdops.adapters.awserrors import AWS_SDK_ERRORS, aws_error, aws_error_code
from etcdops.adapters.state import (
    DEFAULT_INCIDENT_TTL_SECONDS,
    DEFAULT_STREAK_TTL_SECONDS,
    check_cluster,
    check_execution,
    utc,
)
from etcdops.domain.errors import UsageError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
else:
    DynamoDBClient = Any

TABLE_KEY_SCHEMA: Final[tuple[dict[str, str], ...]] = (
    {"AttributeName": "pk", "KeyType": "HASH"},
    {"AttributeName": "sk", "KeyType": "RANGE"},
)
TABLE_ATTRIBUTE_DEFINITIONS: Final[tuple[dict[str, str], ...]] = (
    {"AttributeName": "pk", "AttributeType": "S"},
    {"AttributeName": "sk", "AttributeType": "S"},
)
TTL_ATTRIBUTE: Final = "ttl"
"""DynamoDB TimeToLiveSpecification.AttributeName (epoch seconds)."""

LOCK_TTL_GRACE_SECONDS: Final = 24 * 3600
"""An expired lock item stays this long after its lease (for post-mortems) before TTL removes it."""
APPROVAL_TTL_GRACE_SECONDS: Final = 7 * 24 * 3600
"""An approval record stays this long after it expires (who decided what, for post-mortems)."""

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def table_definition(table_name: str) -> dict[str, Any]:
    """``create_table`` keyword arguments for the state table (template.yaml mirrors these)."""
    return {
        "TableName": table_name,
        "KeySchema": [dict(k) for k in TABLE_KEY_SCHEMA],
        "AttributeDefinitions": [dict(a) for a in TABLE_ATTRIBUTE_DEFINITIONS],
        "BillingMode": "PAY_PER_REQUEST",
    }


class ConditionFailed(Exception):
    """A conditional write found the item not as required (DynamoDB's ConditionalCheckFailedException)."""


def cluster_pk(cluster: str) -> str:
    return f"cluster#{check_cluster(cluster)}"


def approval_pk(execution: str) -> str:
    return f"approval#{check_execution(execution)}"


def epoch_us(when: datetime) -> int:
    return (utc(when) - EPOCH) // timedelta(microseconds=1)


def epoch_s_ceil(when: datetime) -> int:
    return math.ceil(epoch_us(when) / 1_000_000)


class DynamoTable:
    """The state table (key schema :data:`TABLE_KEY_SCHEMA`) and the calls on it every concern uses.

    ``dynamodb_client`` is a boto3 DynamoDB client made by the caller.
    """

    def __init__(
        self,
        table_name: str,
        dynamodb_client: DynamoDBClient,
        *,
        streak_ttl_seconds: int = DEFAULT_STREAK_TTL_SECONDS,
        incident_ttl_seconds: int = DEFAULT_INCIDENT_TTL_SECONDS,
    ) -> None:
        self.streak_ttl_seconds = streak_ttl_seconds
        self.incident_ttl_seconds = incident_ttl_seconds
        if not table_name:
            raise UsageError("table_name must not be empty")
        self.table_name = table_name
        self._client = dynamodb_client

    def _call(self, operation: str, **request: Any) -> dict[str, Any]:
        """One DynamoDB call on the table: a failed condition raises :class:`ConditionFailed`, any
        other failure its named error (etcdops.adapters.awserrors)."""
        try:
            response: dict[str, Any] = getattr(self._client, operation)(TableName=self.table_name, **request)
        except AWS_SDK_ERRORS as exc:
            if aws_error_code(exc) == "ConditionalCheckFailedException":
                raise ConditionFailed from exc
            raise aws_error(f"DynamoDB {operation} on table {self.table_name}", exc) from exc
        return response

    def _key(self, cluster: str, sk: str) -> dict[str, Any]:
        return {"pk": {"S": cluster_pk(cluster)}, "sk": {"S": sk}}

    def _get(self, cluster: str, sk: str) -> dict[str, Any] | None:
        response = self._call("get_item", Key=self._key(cluster, sk), ConsistentRead=True)
        item: dict[str, Any] | None = response.get("Item")
        return item

    # the delta chain's head (adapters.state_delta) is an item of this table, written through these
    call = _call
    item_key = _key
    get_item = _get
