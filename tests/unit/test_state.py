"""One suite, two backends: the in-memory store and the DynamoDB store (moto) must behave alike."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from moto import mock_aws

from etcdops.adapters.state import ConflictError, LockHeldError, LockLostError, StateStore
from etcdops.adapters.state_dynamodb import (
    TABLE_ATTRIBUTE_DEFINITIONS,
    TABLE_KEY_SCHEMA,
    TTL_ATTRIBUTE,
    DynamoStateStore,
    table_definition,
)
from etcdops.domain.policy import Action, Decision, Notification, NotificationKind, Streak

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
TABLE = "etcdops-state"
CLUSTER = "prod-etcd"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# ---- streaks ------------------------------------------------------------------------------


def test_streaks_start_empty_at_version_zero(store: StateStore) -> None:
    # Given a cluster never seen
    # When its streaks are loaded
    state = store.load_streaks(CLUSTER)
    # Then there are none, at version 0
    assert dict(state.streaks) == {}
    assert state.quorum_loss is None
    assert state.version == 0


def test_streaks_round_trip_and_version_increments(store: StateStore) -> None:
    # Given two failing members and a quorum-loss streak
    streaks = {0x8E9E05C52164694D: Streak(at(0), at(30), 2), 7: Streak(at(10), at(10), 1)}
    quorum = Streak(at(0), at(30), 2)
    # When they are saved twice in a row from the loaded versions
    first = store.save_streaks(CLUSTER, streaks, quorum, expected_version=0, now=at(30))
    second = store.save_streaks(CLUSTER, {7: Streak(at(10), at(60), 2)}, None, expected_version=1, now=at(60))
    # Then each save bumps the version and a load returns exactly the last save
    assert (first.version, second.version) == (1, 2)
    loaded = store.load_streaks(CLUSTER)
    assert loaded.version == 2
    assert dict(loaded.streaks) == {7: Streak(at(10), at(60), 2)}
    assert loaded.quorum_loss is None


def test_streaks_keep_big_member_ids_and_quorum_loss(store: StateStore) -> None:
    # Given a member id near 2**64 and a quorum-loss streak
    big = 2**64 - 1
    store.save_streaks(CLUSTER, {big: Streak(at(0), at(5), 2)}, Streak(at(1), at(5), 2), expected_version=0, now=at(5))
    # When loaded
    loaded = store.load_streaks(CLUSTER)
    # Then nothing was lost
    assert dict(loaded.streaks) == {big: Streak(at(0), at(5), 2)}
    assert loaded.quorum_loss == Streak(at(1), at(5), 2)


def test_the_mixed_versions_streak_is_kept_with_the_others(store: StateStore) -> None:
    mixed = Streak(at(0), at(120), 3)
    store.save_streaks(CLUSTER, {}, None, expected_version=0, now=at(120), mixed_versions=mixed)
    assert store.load_streaks(CLUSTER).mixed_versions == mixed
    # saved without one (the members agree again): gone
    store.save_streaks(CLUSTER, {}, None, expected_version=1, now=at(180))
    assert store.load_streaks(CLUSTER).mixed_versions is None


def test_concurrent_streak_writers_conflict(store: StateStore) -> None:
    # Given two HealthCheck invocations that loaded the same version
    store.save_streaks(CLUSTER, {1: Streak(at(0), at(0), 1)}, None, expected_version=0, now=at(0))
    a = store.load_streaks(CLUSTER)
    b = store.load_streaks(CLUSTER)
    # When the first saves
    store.save_streaks(CLUSTER, {1: Streak(at(0), at(20), 2)}, None, expected_version=a.version, now=at(20))
    # Then the second is refused with ConflictError and the first write stands
    with pytest.raises(ConflictError) as refused:
        store.save_streaks(CLUSTER, {}, None, expected_version=b.version, now=at(21))
    assert refused.value.retryable
    assert dict(store.load_streaks(CLUSTER).streaks) == {1: Streak(at(0), at(20), 2)}


def test_first_write_conflicts_when_someone_created_it(store: StateStore) -> None:
    # Given a record created by another writer
    store.save_streaks(CLUSTER, {}, None, expected_version=0, now=at(0))
    # When a writer that loaded "nothing" (version 0) saves
    # Then it conflicts
    with pytest.raises(ConflictError):
        store.save_streaks(CLUSTER, {2: Streak(at(0), at(0), 1)}, None, expected_version=0, now=at(1))


def test_streaks_are_per_cluster(store: StateStore) -> None:
    store.save_streaks("a", {1: Streak(at(0), at(0), 1)}, None, expected_version=0, now=at(0))
    assert store.load_streaks("b").version == 0


# ---- lock ---------------------------------------------------------------------------------


def test_acquire_free_lock(store: StateStore) -> None:
    # Given no lock
    # When runbook A acquires it with a 300 s lease
    lock = store.acquire_lock(CLUSTER, "exec-A", 300, at(0))
    # Then A holds it until now + 300 s
    assert (lock.owner, lock.acquired_at, lock.expires_at) == ("exec-A", at(0), at(300))
    assert store.get_lock(CLUSTER) == lock
    assert lock.is_active(at(299)) and not lock.is_active(at(300))


def test_other_owner_refused_while_lease_valid(store: StateStore) -> None:
    # Given A holds the lock
    store.acquire_lock(CLUSTER, "exec-A", 300, at(0))
    # When B tries before the lease ends
    with pytest.raises(LockHeldError) as refused:
        store.acquire_lock(CLUSTER, "exec-B", 300, at(299))
    # Then B is refused with the holder and the expiry named
    assert refused.value.holder == "exec-A"
    assert refused.value.expires_at == at(300)
    assert "exec-A" in str(refused.value)
    assert store.get_lock(CLUSTER) is not None
    assert store.get_lock(CLUSTER).owner == "exec-A"  # type: ignore[union-attr]


def test_expired_lock_lets_a_new_owner_in(store: StateStore) -> None:
    # Given A acquired the lock and crashed without releasing it
    store.acquire_lock(CLUSTER, "exec-A", 300, at(0))
    # When B tries after the lease has run out
    lock = store.acquire_lock(CLUSTER, "exec-B", 60, at(300))
    # Then B holds it, and A can neither renew nor release it
    assert (lock.owner, lock.expires_at) == ("exec-B", at(360))
    with pytest.raises(LockLostError) as lost:
        store.renew_lock(CLUSTER, "exec-A", 300, at(301))
    assert lost.value.holder == "exec-B"
    assert store.release_lock(CLUSTER, "exec-A") is False
    assert store.get_lock(CLUSTER).owner == "exec-B"  # type: ignore[union-attr]


def test_same_owner_reacquire_is_idempotent(store: StateStore) -> None:
    # Given A holds the lock (a retried step acquires again)
    store.acquire_lock(CLUSTER, "exec-A", 300, at(0))
    # When A acquires again
    again = store.acquire_lock(CLUSTER, "exec-A", 300, at(100))
    # Then it succeeds and the lease runs from the new time
    assert (again.owner, again.expires_at) == ("exec-A", at(400))
    assert store.get_lock(CLUSTER) == again


def test_renew_extends_lease_keeps_acquired_at(store: StateStore) -> None:
    store.acquire_lock(CLUSTER, "exec-A", 300, at(0))
    renewed = store.renew_lock(CLUSTER, "exec-A", 300, at(250))
    assert (renewed.acquired_at, renewed.expires_at) == (at(0), at(550))
    with pytest.raises(LockHeldError):
        store.acquire_lock(CLUSTER, "exec-B", 300, at(400))


def test_renew_without_lock_is_lost(store: StateStore) -> None:
    with pytest.raises(LockLostError) as lost:
        store.renew_lock(CLUSTER, "exec-A", 300, at(0))
    assert lost.value.holder is None


def test_release_only_by_owner(store: StateStore) -> None:
    # Given A holds the lock
    store.acquire_lock(CLUSTER, "exec-A", 300, at(0))
    # When B releases it: a no-op returning False
    assert store.release_lock(CLUSTER, "exec-B") is False
    assert store.get_lock(CLUSTER) is not None
    # When A releases it: gone, and B can take it at once
    assert store.release_lock(CLUSTER, "exec-A") is True
    assert store.get_lock(CLUSTER) is None
    assert store.release_lock(CLUSTER, "exec-A") is False
    assert store.acquire_lock(CLUSTER, "exec-B", 10, at(1)).owner == "exec-B"


def test_locks_are_per_cluster(store: StateStore) -> None:
    store.acquire_lock("a", "exec-A", 300, at(0))
    assert store.acquire_lock("b", "exec-B", 300, at(0)).owner == "exec-B"


def test_concurrent_acquire_has_exactly_one_winner(store: StateStore) -> None:
    # Given eight runbooks started at once
    contenders = 8
    barrier = threading.Barrier(contenders)
    winners: list[str] = []
    refused: list[str] = []
    errors: list[BaseException] = []
    guard = threading.Lock()

    def contend(owner: str) -> None:
        barrier.wait()
        try:
            store.acquire_lock(CLUSTER, owner, 300, at(0))
            with guard:
                winners.append(owner)
        except LockHeldError:
            with guard:
                refused.append(owner)
        except BaseException as exc:  # surfaced by the assertion below
            with guard:
                errors.append(exc)

    # When all of them try to acquire the lock
    threads = [threading.Thread(target=contend, args=(f"exec-{i}",)) for i in range(contenders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Then exactly one wins, the others are refused, and the lock names the winner
    assert errors == []
    assert len(winners) == 1
    assert len(refused) == contenders - 1
    assert store.get_lock(CLUSTER).owner == winners[0]  # type: ignore[union-attr]


# ---- incidents ----------------------------------------------------------------------------


def test_incident_recorded_once(store: StateStore) -> None:
    # Given a failure that triggers the HealthCheck every minute
    # When it records the same incident three times
    results = [store.record_incident(CLUSTER, "prod-replace-7-abc", "REPLACE_MEMBER", at(60 * i)) for i in range(3)]
    # Then only the first is announced
    assert results == [True, False, False]
    # And another incident is separate
    assert store.record_incident(CLUSTER, "prod-quorum-loss-def", "ESCALATE_QUORUM_LOSS", at(200)) is True
    assert store.record_incident("other-cluster", "prod-replace-7-abc", "REPLACE_MEMBER", at(200)) is True


def test_incident_can_be_announced_again_after_its_ttl(store: StateStore) -> None:
    # Given a notification recorded with a one-day TTL
    assert store.record_incident(CLUSTER, "db-size-high-7", "db-size-high", at(0), ttl_seconds=86400)
    # When it is recorded again before and after the TTL
    # Then it is announced again only after
    assert store.record_incident(CLUSTER, "db-size-high-7", "db-size-high", at(86399)) is False
    assert store.record_incident(CLUSTER, "db-size-high-7", "db-size-high", at(86400)) is True


def test_concurrent_incident_recording_has_one_winner(store: StateStore) -> None:
    contenders = 8
    barrier = threading.Barrier(contenders)
    results: list[bool] = []
    guard = threading.Lock()

    def record() -> None:
        barrier.wait()
        first = store.record_incident(CLUSTER, "inc-1", "REPLACE_MEMBER", at(0))
        with guard:
            results.append(first)

    threads = [threading.Thread(target=record) for _ in range(contenders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * (contenders - 1) + [True]


# ---- last decision ------------------------------------------------------------------------


def test_last_decision_round_trip(store: StateStore) -> None:
    # Given no decision yet
    assert store.load_last_decision(CLUSTER) is None
    decision = Decision(
        action=Action.ESCALATE_QUORUM_LOSS,
        reason="Quorum lost",
        cluster=CLUSTER,
        incident_id="prod-quorum-loss-x",
        notifications=(Notification(NotificationKind.ALARM_NOSPACE, "NOSPACE", "k-1", 2**64 - 1),),
        backup_id="b-1",
        restore_input={"cluster": CLUSTER, "backup_id": "b-1", "mode": "in-place"},
    )
    # When one is saved and loaded
    store.save_last_decision(CLUSTER, decision, at(5))
    loaded = store.load_last_decision(CLUSTER)
    # Then it is the same decision, with its time
    assert loaded is not None
    assert loaded.decision == decision
    assert loaded.decided_at == at(5)


def test_member_metrics_are_replaced_whole_per_cluster(store: StateStore) -> None:
    assert store.load_member_metrics(CLUSTER) == {}
    store.save_member_metrics(CLUSTER, {"m1": '{"a": 1}', "m2": '{"b": 2}'}, at(1))
    store.save_member_metrics(CLUSTER, {"m2": '{"b": 3}'}, at(2))  # m1 left the membership
    store.save_member_metrics("other", {"m1": "{}"}, at(2))

    assert store.load_member_metrics(CLUSTER) == {"m2": '{"b": 3}'}


# ---- DynamoDB specifics -------------------------------------------------------------------


def test_key_schema_constants_match_table_definition() -> None:
    definition = table_definition(TABLE)
    assert definition["KeySchema"] == list(TABLE_KEY_SCHEMA)
    assert definition["AttributeDefinitions"] == list(TABLE_ATTRIBUTE_DEFINITIONS)
    assert {a["AttributeName"] for a in TABLE_ATTRIBUTE_DEFINITIONS} == {k["AttributeName"] for k in TABLE_KEY_SCHEMA}


@mock_aws
def test_dynamo_items_carry_ttl_epoch_seconds_from_now() -> None:
    # Given a DynamoDB store
    client = boto3.client("dynamodb", region_name="us-east-1")
    client.create_table(**table_definition(TABLE))
    store = DynamoStateStore(TABLE, client, streak_ttl_seconds=3600, incident_ttl_seconds=600)
    # When streaks, an incident and a lock are written
    store.save_streaks(CLUSTER, {1: Streak(at(0), at(0), 1)}, None, expected_version=0, now=at(0))
    store.record_incident(CLUSTER, "inc-1", "REPLACE_MEMBER", at(0))
    store.acquire_lock(CLUSTER, "exec-A", 300, at(0))
    # Then their TTL attributes are epoch seconds derived from `now`
    items = client.query(
        TableName=TABLE,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"cluster#{CLUSTER}"}},
    )["Items"]
    by_sk = {i["sk"]["S"]: i for i in items}
    epoch = int(T0.timestamp())
    assert int(by_sk["streaks"][TTL_ATTRIBUTE]["N"]) == epoch + 3600
    assert int(by_sk["incident#inc-1"][TTL_ATTRIBUTE]["N"]) == epoch + 600
    assert int(by_sk["lock"][TTL_ATTRIBUTE]["N"]) > epoch + 300
