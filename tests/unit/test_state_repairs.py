"""Repair attempts and the endpoints seen last, in the state store: one suite, both backends."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from etcdops.adapters.state import Repair, RepairRecord, StateStore

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
CLUSTER = "prod-etcd"
INCIDENT = "prod-etcd-replace-7-20240501T115800Z-0123456789"


def record(number: int, incident: str = INCIDENT, **changes: object) -> RepairRecord:
    base = RepairRecord(
        incident=incident,
        number=number,
        execution=f"{incident}-a{number}",
        recorded_at=T0 + timedelta(minutes=number),
        document='{"member_id": "7"}',
    )
    return RepairRecord(**{**base.__dict__, **changes})  # type: ignore[arg-type]


def test_no_repair_yet_is_an_empty_one(store: StateStore) -> None:
    assert store.load_repair(CLUSTER, INCIDENT) == Repair(INCIDENT)
    assert store.load_repairs(CLUSTER) == []


def test_each_attempt_is_recorded_once_and_loads_in_order(store: StateStore) -> None:
    # Given attempt 1, When it is recorded twice (two rounds racing) and attempt 2 after it
    assert store.record_repair_attempt(CLUSTER, record(1)) is True
    assert store.record_repair_attempt(CLUSTER, record(1, execution="someone-else")) is False
    assert store.record_repair_attempt(CLUSTER, record(2)) is True
    # Then the first recording of each stands, in order
    repair = store.load_repair(CLUSTER, INCIDENT)
    assert repair.attempts == (record(1), record(2)) and repair.escalated_at is None


def test_of_concurrent_rounds_exactly_one_records_an_attempt(store: StateStore) -> None:
    wins: list[bool] = []
    threads = [
        threading.Thread(target=lambda i=i: wins.append(store.record_repair_attempt(CLUSTER, record(1, cause=str(i)))))
        for i in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(wins) == [False] * 7 + [True]


def test_an_attempt_finishes_once_and_only_as_the_recorded_execution(store: StateStore) -> None:
    store.record_repair_attempt(CLUSTER, record(1))
    ended = T0 + timedelta(minutes=5)
    # a finish naming another execution (a manual run that reuses the incident) changes nothing
    assert not store.finish_repair_attempt(CLUSTER, INCIDENT, 1, "other", "FAILED", "E", "c", ended)
    assert store.finish_repair_attempt(CLUSTER, INCIDENT, 1, record(1).execution, "FAILED", "ConfigError", "k", ended)
    # the first outcome stands (a round that saw the execution end later does not overwrite it)
    assert not store.finish_repair_attempt(CLUSTER, INCIDENT, 1, record(1).execution, "ABORTED", None, None, ended)
    assert not store.finish_repair_attempt(CLUSTER, INCIDENT, 2, "x-a2", "FAILED", None, None, ended)
    (attempt,) = store.load_repair(CLUSTER, INCIDENT).attempts
    assert (attempt.outcome, attempt.error, attempt.cause, attempt.ended_at) == ("FAILED", "ConfigError", "k", ended)


def test_an_outcome_without_error_or_cause_is_kept_as_none(store: StateStore) -> None:
    store.record_repair_attempt(CLUSTER, record(1))
    assert store.finish_repair_attempt(CLUSTER, INCIDENT, 1, record(1).execution, "ABORTED", None, None, T0)
    (attempt,) = store.load_repair(CLUSTER, INCIDENT).attempts
    assert (attempt.outcome, attempt.error, attempt.cause) == ("ABORTED", None, None)


def test_a_repair_is_escalated_once(store: StateStore) -> None:
    store.record_repair_attempt(CLUSTER, record(1))
    assert store.escalate_repair(CLUSTER, INCIDENT, T0) is True
    assert store.escalate_repair(CLUSTER, INCIDENT, T0 + timedelta(minutes=1)) is False
    repair = store.load_repair(CLUSTER, INCIDENT)
    assert repair.escalated_at == T0 and len(repair.attempts) == 1


def test_repairs_of_a_cluster_are_listed_by_incident_and_kept_apart(store: StateStore) -> None:
    other = "prod-etcd-replace-9-20240501T120000Z-abcdef0123"
    prefix = INCIDENT[:-1]  # an id that is a prefix of another must not mix with it
    store.record_repair_attempt(CLUSTER, record(1))
    store.record_repair_attempt(CLUSTER, record(1, incident=other))
    store.record_repair_attempt(CLUSTER, record(1, incident=prefix))
    store.record_repair_attempt("another-cluster", record(1))
    store.escalate_repair(CLUSTER, other, T0)
    repairs = {r.incident: r for r in store.load_repairs(CLUSTER)}
    assert set(repairs) == {INCIDENT, other, prefix}
    assert repairs[other].escalated_at == T0 and repairs[INCIDENT].escalated_at is None
    assert [a.incident for a in repairs[prefix].attempts] == [prefix]
    assert store.load_repair(CLUSTER, prefix).attempts == (record(1, incident=prefix),)


def test_the_endpoints_seen_last_are_kept_per_cluster(store: StateStore) -> None:
    assert store.load_endpoints(CLUSTER) == []
    store.save_endpoints(CLUSTER, ["https://10.0.0.2:2379", "https://10.0.0.1:2379"], T0)
    store.save_endpoints("another-cluster", ["https://10.9.9.9:2379"], T0)
    assert store.load_endpoints(CLUSTER) == ["https://10.0.0.2:2379", "https://10.0.0.1:2379"]
    store.save_endpoints(CLUSTER, ["https://10.0.0.3:2379"], T0)
    assert store.load_endpoints(CLUSTER) == ["https://10.0.0.3:2379"]
