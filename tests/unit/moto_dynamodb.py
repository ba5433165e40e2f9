"""A DynamoDB table in moto whose writes are atomic, as the real service's are."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from moto import mock_aws

from etcdops.adapters.state_dynamodb import TTL_ATTRIBUTE, table_definition


class AtomicCalls:
    """Makes every call of a client one at a time.

    DynamoDB evaluates a conditional write atomically; moto does not lock its tables, so two threads
    can both pass the same condition. Taking the calls one at a time gives moto the service's
    guarantee, which the concurrency tests rely on; what is tested stays our conditions.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)
        if not callable(method):
            return method

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return method(*args, **kwargs)

        return call


@contextmanager
def state_table(name: str) -> Iterator[Any]:
    """A fresh state table (with its TTL attribute) in moto, and a client for it."""
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        client.create_table(**table_definition(name))
        client.update_time_to_live(
            TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE}
        )
        yield AtomicCalls(client)
