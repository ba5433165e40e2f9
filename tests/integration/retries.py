"""Retrying what etcd (or a runbook step) refuses for a moment, with a deadline, as the runbooks do."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from etcdops.domain.errors import EtcdopsError

T = TypeVar("T")

# The deadlines below only guard against a hang: a loaded 2-core machine can take several times as long
# as a quiet one for etcd to settle, and a test must not fail for that. The state machines' own retry
# budgets are checked by the unit tests of their Retry lists, not here.
PATIENCE = 4


def retry(what: Callable[[], T], *, retry_on: tuple[type[Exception], ...], timeout: float = 30.0) -> T:
    """etcd needs a moment after membership changes and restarts; retry those, with a deadline."""
    deadline = time.monotonic() + timeout * PATIENCE
    while True:
        try:
            return what()
        except retry_on:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def with_retries(step: Callable[[], dict[str, Any]], timeout: float = 90.0) -> dict[str, Any]:
    """What a state machine's Retry does: try again while the named error is ``retryable``."""
    deadline = time.monotonic() + timeout * PATIENCE
    while True:
        try:
            return step()
        except EtcdopsError as exc:
            if not exc.retryable or time.monotonic() > deadline:
                raise
            time.sleep(1.0)
