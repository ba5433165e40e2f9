"""HealthCheck acting on repairs (invariant 12): attempts name executions, a failed attempt is tried
again after a backoff, the last one is escalated once, a crashed one is seen through Step Functions."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

from test_healthcheck import (  # noqa: F401 - aws: the account fixture
    CONFIG,
    NOW,
    REPLACE,
    aws,
    cluster,
    context,
    member,
    pass_machine_starter,
)

from etcdops.adapters.aws import MemoryNotifier
from etcdops.adapters.health_aws import ExecutionState, RecordingReplaceStarter
from etcdops.adapters.state import StateStore
from etcdops.app.health_actions import act
from etcdops.app.healthcheck import release_abandoned_lock
from etcdops.domain.errors import APPROVAL_REJECTED
from etcdops.domain.policy import Action, Decision
from etcdops.domain.repair import AttemptStatus

INCIDENT = REPLACE.incident_id or ""
BACKOFF = timedelta(seconds=CONFIG.health.repair_backoff_seconds)


def execution(number: int) -> str:
    return f"{INCIDENT}-a{number}"


def fail(starter: RecordingReplaceStarter, number: int, at: timedelta, error: str = "ConfigError") -> None:
    """Step Functions now reports attempt ``number`` FAILED at NOW + ``at``."""
    starter.outcomes[execution(number)] = ExecutionState(AttemptStatus.FAILED, NOW + at, error, f"cause {number}")


def test_a_failed_attempt_is_tried_again_after_the_backoff_as_the_next_attempt(store: StateStore) -> None:
    starter, notifier = RecordingReplaceStarter(), MemoryNotifier()
    ctx = context(store, starter, notifier)
    act(ctx, REPLACE, frozenset(), NOW)
    fail(starter, 1, timedelta(seconds=30))

    # within the backoff the next round waits and says until when
    waiting = act(ctx, REPLACE, frozenset(), NOW + timedelta(seconds=60))
    assert len(waiting) == 1 and "attempt 2 of 3 starts after the backoff" in waiting[0]
    assert list(starter.started) == [execution(1)]

    # after it, attempt 2 starts under its own name, and says it is attempt 2
    started = act(ctx, REPLACE, frozenset(), NOW + timedelta(seconds=30) + BACKOFF)
    assert started[0] == f"started ReplaceMember {execution(2)}"
    assert starter.started[execution(2)]["attempt"] == 2
    assert [s for s, _, _ in notifier.messages] == [
        "etcdops: replacing member m3 of prod",
        "etcdops: replacing member m3 of prod (attempt 2 of 3)",
    ]
    # and the outcome Step Functions reported is on record (the next rounds do not ask again)
    (first, second) = store.load_repair("prod", INCIDENT).attempts
    assert (first.outcome, first.error, second.outcome) == ("FAILED", "ConfigError", None)


def test_a_repair_that_keeps_failing_escalates_exactly_once_after_max_attempts(store: StateStore) -> None:
    starter, notifier = RecordingReplaceStarter(), MemoryNotifier()
    ctx = context(store, starter, notifier)
    health = cluster(member(1, "m1"), member(2, "m2"), member(0xAB, "m3", healthy=False))
    moment = timedelta(0)
    for _ in range(40):  # rounds every 30 s for 20 minutes; every attempt fails 10 s after it started
        act(ctx, REPLACE, frozenset(), NOW + moment, health)
        for number in range(1, 4):
            if execution(number) in starter.started and execution(number) not in starter.outcomes:
                fail(starter, number, moment + timedelta(seconds=10), error="ComputeApiError")
        moment += timedelta(seconds=30)

    assert list(starter.started) == [execution(n) for n in (1, 2, 3)]
    escalations = [(s, m, a) for s, m, a in notifier.messages if a["kind"] == "repair-escalated"]
    assert len(escalations) == 1
    subject, body, attributes = escalations[0]
    assert subject == "etcdops: REPAIR OF MEMBER m3 OF prod GAVE UP after 3 attempts - a human must act"
    for number in (1, 2, 3):
        assert f"attempt {number} ({execution(number)}" in body and f"cause {number}" in body
    assert "FAILED: ComputeApiError" in body and "Every attempt failed the same way" in body
    assert "2 of 3 voting members are healthy (quorum 2, margin 0): one more failure loses quorum." in body
    assert "etcdops runbook start replace --member m3" in body
    assert attributes == {"cluster": "prod", "kind": "repair-escalated", "incident": INCIDENT}
    assert store.load_repair("prod", INCIDENT).escalated_at is not None


def test_the_outcome_an_attempt_recorded_itself_counts_without_asking_step_functions(store: StateStore) -> None:
    starter = RecordingReplaceStarter()
    ctx = context(store, starter, MemoryNotifier())
    act(ctx, REPLACE, frozenset(), NOW)
    # the attempt's failure step recorded how it ended; Step Functions still says RUNNING (it is finishing)
    assert store.finish_repair_attempt("prod", INCIDENT, 1, execution(1), "FAILED", "UnsafeChangeError", "x", NOW)

    act(ctx, REPLACE, frozenset(), NOW + BACKOFF)

    assert list(starter.started) == [execution(1), execution(2)]


def test_an_attempt_recorded_by_a_round_that_died_before_starting_it_is_started_under_its_name(
    store: StateStore,
) -> None:
    starter = RecordingReplaceStarter()
    ctx = context(store, starter, MemoryNotifier())
    dying = context(store, RecordingReplaceStarter(), MemoryNotifier())
    act(dying, REPLACE, frozenset(), NOW)  # recorded attempt 1 and "started" it somewhere that is gone
    recorded = json.loads(store.load_repair("prod", INCIDENT).attempts[0].document)

    resumed = f"resumed ReplaceMember {execution(1)}: recorded by another round, not running when this round looked"
    assert act(ctx, REPLACE, frozenset(), NOW + timedelta(seconds=5)) == [resumed]
    assert starter.started == {execution(1): recorded}
    # had the recording round been alive and started it meanwhile, its start is answered as this one was
    assert starter.start(execution(1), recorded).started


def test_overlapping_rounds_start_exactly_one_execution_per_attempt(store: StateStore) -> None:
    starter = RecordingReplaceStarter()
    rounds = [context(store, starter, MemoryNotifier()) for _ in range(8)]
    reports: list[str] = []
    threads = [
        threading.Thread(target=lambda ctx=ctx: reports.extend(act(ctx, REPLACE, frozenset(), NOW))) for ctx in rounds
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert list(starter.started) == [execution(1)]
    assert len(store.load_repair("prod", INCIDENT).attempts) == 1
    # the round that recorded the attempt says it started it; no other round claims that
    assert [r for r in reports if r.startswith("started ReplaceMember")] == [f"started ReplaceMember {execution(1)}"]


def test_a_rejected_attempt_is_not_retried_and_not_escalated(store: StateStore) -> None:
    starter, notifier = RecordingReplaceStarter(), MemoryNotifier()
    ctx = context(store, starter, notifier)
    act(ctx, REPLACE, frozenset(), NOW)
    fail(starter, 1, timedelta(seconds=5), error=APPROVAL_REJECTED)

    for hours in range(1, 5):
        assert act(ctx, REPLACE, frozenset(), NOW + timedelta(hours=hours)) == []

    assert list(starter.started) == [execution(1)]
    assert [a["kind"] for _, _, a in notifier.messages] == ["replace"]


def test_the_lock_of_an_attempt_that_crashed_is_released_and_only_then(store: StateStore) -> None:
    starter = RecordingReplaceStarter()
    ctx = context(store, starter, MemoryNotifier())
    act(ctx, REPLACE, frozenset(), NOW)
    store.acquire_lock("prod", execution(1), 1800, NOW)

    # while the execution runs, its lock stands
    lock, notes = release_abandoned_lock(ctx, NOW + timedelta(minutes=1))
    assert lock is not None and lock.owner == execution(1) and notes == []
    # a lock held by something that is no ReplaceMember execution (a restore) is left to its lease
    store.release_lock("prod", execution(1))
    store.acquire_lock("prod", "restore-prod-1", 1800, NOW)
    assert release_abandoned_lock(ctx, NOW + timedelta(minutes=1))[0] is not None
    store.release_lock("prod", "restore-prod-1")

    # an execution that was aborted never ran its failure step: its lock is released
    store.acquire_lock("prod", execution(1), 1800, NOW)
    starter.outcomes[execution(1)] = ExecutionState(AttemptStatus.ABORTED, NOW + timedelta(minutes=2))
    lock, notes = release_abandoned_lock(ctx, NOW + timedelta(minutes=3))
    assert lock is None and store.get_lock("prod") is None
    assert notes == [f"released the lock of {execution(1)}: the execution ended ABORTED without releasing it"]


def test_a_repair_that_failed_after_removing_the_member_is_carried_on(store: StateStore) -> None:
    # Given attempt 1 removed m3 (ab) from a 3-voter cluster and then failed
    starter, notifier = RecordingReplaceStarter(), MemoryNotifier()
    ctx = context(store, starter, notifier)
    three = cluster(member(1, "m1"), member(2, "m2"), member(0xAB, "m3", healthy=False))
    act(ctx, REPLACE, frozenset(), NOW, three)
    fail(starter, 1, timedelta(seconds=40), error="LearnerNotCaughtUpError")
    two = cluster(member(1, "m1"), member(2, "m2"))
    healthy = Decision(Action.NONE, "Cluster prod is healthy: 2 of 2 voting members healthy.", "prod")

    # When later rounds find a healthy cluster of two
    assert act(ctx, healthy, frozenset(), NOW + timedelta(seconds=45), two)[0].startswith("Attempt 1 of")
    done = act(ctx, healthy, frozenset(), NOW + timedelta(seconds=40) + BACKOFF, two)

    # Then the repair goes on: attempt 2, with the same member and the original size to restore
    assert done[0] == f"started ReplaceMember {execution(2)}"
    document = starter.started[execution(2)]
    assert (document["member_id"], document["original_voters"], document["attempt"]) == ("ab", 3, 2)
    assert "removed it but did not finish: 2 of 3 voting members" in document["reason"]

    # and once the cluster is whole again, nothing more happens for it
    whole = cluster(member(1, "m1"), member(2, "m2"), member(0xCD, "m3-rabcdef"))
    fail(starter, 2, timedelta(seconds=200))
    assert act(ctx, healthy, frozenset(), NOW + timedelta(hours=1), whole) == []


def test_step_functions_says_how_an_execution_ended(aws: None) -> None:  # noqa: F811 - the fixture imported above
    starter = pass_machine_starter()
    assert starter.describe("never-started") is None

    started = starter.start("incident-1-a1", {})
    starter.sfn.stop_execution(executionArn=started.execution_arn, error="Crash", cause="the test")

    described = starter.describe("incident-1-a1")
    assert described is not None and described.status is AttemptStatus.ABORTED and described.ended_at is not None
