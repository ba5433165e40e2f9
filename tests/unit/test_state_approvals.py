"""Approval records in the state store: one suite, both backends (in memory, DynamoDB via moto)."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from etcdops.adapters.state import Approval, StateStore
from etcdops.domain.errors import UsageError

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
TABLE = "etcdops-state"


def approval(execution: str = "replace-1", request_id: str = "a" * 32, **changes: object) -> Approval:
    base = Approval(
        execution=execution,
        cluster="prod-etcd",
        runbook="ReplaceMember",
        request_id=request_id,
        task_token="token-" + request_id,
        summary="Replace failed member etcd-2",
        reason="3 failed probes over 95 s",
        requested_at=T0,
        expires_at=T0 + timedelta(hours=1),
        execution_arn=f"arn:aws:states:us-east-1:123456789012:execution:etcdops-ReplaceMember:{execution}",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_unknown_execution_has_no_approval(store: StateStore) -> None:
    assert store.load_approval("nope") is None


def test_approval_round_trips_and_hides_its_token_from_repr(store: StateStore) -> None:
    store.save_approval(approval())
    loaded = store.load_approval("replace-1")
    assert loaded == approval()
    assert "token-" not in repr(loaded)


def test_first_consume_wins_and_later_ones_do_not(store: StateStore) -> None:
    # Given a pending request
    store.save_approval(approval())
    # When it is consumed twice (approve, then reject)
    first = store.consume_approval("replace-1", "a" * 32, "approve", "alice", None, T0 + timedelta(minutes=1))
    second = store.consume_approval("replace-1", "a" * 32, "reject", "bob", "no", T0 + timedelta(minutes=2))
    # Then only the first counts and is recorded
    assert (first, second) == (True, False)
    loaded = store.load_approval("replace-1")
    assert loaded is not None
    assert (loaded.decision, loaded.decided_by, loaded.decided_at) == ("approve", "alice", T0 + timedelta(minutes=1))


def test_consume_of_another_request_or_unknown_execution_fails(store: StateStore) -> None:
    store.save_approval(approval())
    assert not store.consume_approval("replace-1", "b" * 32, "approve", "alice", None, T0)
    assert not store.consume_approval("other", "a" * 32, "approve", "alice", None, T0)
    loaded = store.load_approval("replace-1")
    assert loaded is not None and loaded.decision is None


def test_a_new_request_replaces_the_old_one(store: StateStore) -> None:
    store.save_approval(approval())
    store.consume_approval("replace-1", "a" * 32, "approve", "alice", None, T0)
    store.save_approval(approval(request_id="b" * 32))
    loaded = store.load_approval("replace-1")
    assert loaded is not None and loaded.request_id == "b" * 32 and loaded.decision is None


def test_release_undoes_only_that_decision(store: StateStore) -> None:
    store.save_approval(approval())
    at = T0 + timedelta(minutes=1)
    store.consume_approval("replace-1", "a" * 32, "reject", "alice", "why", at)
    assert not store.release_approval("replace-1", "a" * 32, at + timedelta(seconds=1))
    assert store.release_approval("replace-1", "a" * 32, at)
    loaded = store.load_approval("replace-1")
    assert loaded is not None and loaded.decision is None and loaded.decision_reason is None
    assert store.consume_approval("replace-1", "a" * 32, "approve", "bob", None, at)


def test_concurrent_consumers_one_wins(store: StateStore) -> None:
    store.save_approval(approval())
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def click(i: int) -> None:
        barrier.wait()
        results.append(store.consume_approval("replace-1", "a" * 32, "approve", f"user{i}", None, T0))

    threads = [threading.Thread(target=click, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]


def test_expiry_is_a_property_of_the_record() -> None:
    record = approval()
    assert not record.is_expired(T0 + timedelta(minutes=59))
    assert record.is_expired(T0 + timedelta(hours=1))


def test_empty_execution_is_refused(store: StateStore) -> None:
    with pytest.raises(UsageError):
        store.load_approval("")
