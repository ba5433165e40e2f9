"""Fixtures of the unit tier."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from moto_dynamodb import state_table

from etcdops.adapters.state import StateStore
from etcdops.adapters.state_dynamodb import DynamoStateStore
from etcdops.adapters.state_memory import InMemoryStateStore

STATE_TABLE = "etcdops-state"


@pytest.fixture(params=["memory", "dynamodb"])
def store(request: pytest.FixtureRequest) -> Iterator[StateStore]:
    """Each state store backend in turn: one suite, and both must behave alike."""
    if request.param == "memory":
        yield InMemoryStateStore()
        return
    with state_table(STATE_TABLE) as client:
        yield DynamoStateStore(STATE_TABLE, client)
