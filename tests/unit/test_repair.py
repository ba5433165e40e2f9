"""Whether and when a failed repair is tried again (invariant 12): examples, and properties over
whole sequences of rounds in which every attempt fails."""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etcdops.domain.errors import APPROVAL_REJECTED
from etcdops.domain.policy import incident_id
from etcdops.domain.repair import (
    Attempt,
    AttemptStatus,
    RepairAction,
    attempt_execution,
    backoff_after,
    decide_repair,
)

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
INCIDENT = incident_id("prod-etcd", "replace", T0, 0x8E9E05C52164694D)
EXECUTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,80}$")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def attempt(number: int, status: AttemptStatus, started: float, ended: float | None = None, **kw: str) -> Attempt:
    return Attempt(number, attempt_execution(INCIDENT, number), at(started), status, at(ended) if ended else None, **kw)


def decide(attempts: list[Attempt], now: float, *, escalated: bool = False, max_attempts: int = 3) -> object:
    return decide_repair(
        INCIDENT, attempts, now=at(now), max_attempts=max_attempts, backoff_seconds=60, escalated=escalated
    )


# ---- examples -----------------------------------------------------------------------------


def test_the_first_attempt_starts_at_once() -> None:
    plan = decide([], 0)
    assert (plan.action, plan.attempt, plan.execution) == (RepairAction.START, 1, f"{INCIDENT}-a1")


def test_a_running_attempt_is_waited_for() -> None:
    plan = decide([attempt(1, AttemptStatus.RUNNING, 0)], 600)
    assert plan.action is RepairAction.WAIT and "running" in plan.reason


def test_a_failed_attempt_is_retried_after_a_doubling_backoff() -> None:
    failed = [attempt(1, AttemptStatus.FAILED, 0, 30, error="ConfigError", cause="key file")]
    waiting = decide(failed, 89)
    assert waiting.action is RepairAction.WAIT and waiting.not_before == at(90) and waiting.attempt == 2
    started = decide(failed, 90)
    assert (started.action, started.attempt, started.execution) == (RepairAction.START, 2, f"{INCIDENT}-a2")
    assert "ConfigError" in started.reason
    two = [*failed, attempt(2, AttemptStatus.ABORTED, 100, 110)]
    assert decide(two, 229).action is RepairAction.WAIT  # 110 + 120 s
    assert decide(two, 230).execution == f"{INCIDENT}-a3"


@pytest.mark.parametrize("status", [AttemptStatus.FAILED, AttemptStatus.TIMED_OUT, AttemptStatus.ABORTED,
                                    AttemptStatus.SUCCEEDED])  # fmt: skip
def test_every_way_an_attempt_ends_without_a_repair_counts(status: AttemptStatus) -> None:
    # (SUCCEEDED here: it found the member recovered, and it failed again within the same streak)
    plan = decide([attempt(1, status, 0, 10)], 1000)
    assert plan.action is RepairAction.START and plan.attempt == 2


def test_after_the_last_allowed_attempt_it_escalates_then_is_done() -> None:
    attempts = [attempt(n, AttemptStatus.FAILED, 100 * n, 100 * n + 10) for n in (1, 2, 3)]
    plan = decide(attempts, 10_000)
    assert plan.action is RepairAction.ESCALATE and "max_repair_attempts is 3" in plan.reason
    assert decide(attempts, 10_000, escalated=True).action is RepairAction.DONE


def test_an_attempt_recorded_but_never_started_is_resumed_under_its_name() -> None:
    plan = decide([attempt(1, AttemptStatus.FAILED, 0, 5), attempt(2, AttemptStatus.NOT_STARTED, 100)], 101)
    assert (plan.action, plan.attempt, plan.execution) == (RepairAction.RESUME, 2, f"{INCIDENT}-a2")


def test_a_rejection_by_a_human_is_final() -> None:
    plan = decide([attempt(1, AttemptStatus.FAILED, 0, 5, error=APPROVAL_REJECTED, cause="not now")], 10_000)
    assert plan.action is RepairAction.DONE and "rejected" in plan.reason


def test_attempt_names_fit_step_functions_and_bad_input_is_refused() -> None:
    long_incident = incident_id("a" * 40, "replace", T0, 2**64 - 1)
    assert EXECUTION_NAME.match(attempt_execution(long_incident, 99))
    with pytest.raises(ValueError, match="out of range"):
        attempt_execution(INCIDENT, 100)
    with pytest.raises(ValueError, match="numbered"):
        decide([attempt(2, AttemptStatus.FAILED, 0, 1)], 10)
    with pytest.raises(ValueError, match="at least 1"):
        decide([], 0, max_attempts=0)


# ---- properties ---------------------------------------------------------------------------

statuses = st.sampled_from(list(AttemptStatus))


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[Attempt], int, bool, float]:
    max_attempts = draw(st.integers(1, 6))
    count = draw(st.integers(0, max_attempts))
    attempts = []
    clock = 0.0
    for n in range(1, count + 1):
        last = n == count
        status = draw(statuses) if last else draw(st.sampled_from([s for s in AttemptStatus if s.ended]))
        duration = draw(st.floats(0, 3600))
        ended = clock + duration if status.ended else None
        error = draw(st.sampled_from([None, "ConfigError", APPROVAL_REJECTED])) if status.ended and last else None
        attempts.append(attempt(n, status, clock, ended, **({"error": error} if error else {})))
        clock = (ended or clock) + draw(st.floats(0, 7200))
    now = clock + draw(st.floats(0, 7200))
    return attempts, max_attempts, draw(st.booleans()), now


@given(histories())
def test_every_plan_has_a_reason_and_keeps_the_bounds(history: tuple[list[Attempt], int, bool, float]) -> None:
    attempts, max_attempts, escalated, now = history
    plan = decide(attempts, now, escalated=escalated, max_attempts=max_attempts)
    assert plan.reason and INCIDENT in plan.reason
    last = attempts[-1] if attempts else None
    if escalated:
        assert plan.action is RepairAction.DONE
    if plan.action is RepairAction.START:
        # a new attempt only when none runs or waits to start, within the bound, after the backoff
        assert plan.attempt == len(attempts) + 1 <= max_attempts
        assert last is None or (last.status.ended and last.error != APPROVAL_REJECTED)
        if last is not None:
            assert at(now) >= (last.ended_at or last.started_at) + backoff_after(last.number, 60)
        assert plan.execution == f"{INCIDENT}-a{plan.attempt}" and EXECUTION_NAME.match(plan.execution)
    if plan.action is RepairAction.RESUME:
        assert last is not None and last.status is AttemptStatus.NOT_STARTED and plan.execution == last.execution
    if plan.action is RepairAction.ESCALATE:
        assert not escalated and last is not None and last.status.ended and len(attempts) >= max_attempts
    if last is not None and last.status is AttemptStatus.RUNNING and not escalated:
        assert plan.action is RepairAction.WAIT


@given(
    max_attempts=st.integers(1, 5),
    backoff=st.floats(0, 600),
    durations=st.lists(st.floats(1, 900), min_size=5, max_size=5),
    round_every=st.floats(1, 120),
    crash_after_record=st.lists(st.booleans(), min_size=5, max_size=5),
)
def test_rounds_against_a_repair_that_keeps_failing_try_max_attempts_then_escalate_once(
    max_attempts: int, backoff: float, durations: list[float], round_every: float, crash_after_record: list[bool]
) -> None:
    # Given an incident whose every attempt fails after a while, and rounds that keep coming
    # (a round may record an attempt and die before starting it)
    attempts: list[Attempt] = []
    escalations = 0
    escalated = False
    now = 0.0
    for _ in range(200):
        # what Step Functions reports at this moment
        def reported(a: Attempt, moment: datetime) -> Attempt:
            ends = a.started_at + timedelta(seconds=durations[a.number - 1])
            running = a.status is AttemptStatus.RUNNING
            return replace(a, status=AttemptStatus.FAILED, ended_at=ends) if running and moment >= ends else a

        attempts = [reported(a, at(now)) for a in attempts]
        plan = decide_repair(
            INCIDENT, attempts, now=at(now), max_attempts=max_attempts, backoff_seconds=backoff, escalated=escalated
        )
        if plan.action is RepairAction.START:
            assert plan.attempt is not None and plan.execution is not None
            crashed = crash_after_record[plan.attempt - 1]
            status = AttemptStatus.NOT_STARTED if crashed else AttemptStatus.RUNNING
            crash_after_record[plan.attempt - 1] = False  # the next round resumes it
            attempts.append(Attempt(plan.attempt, plan.execution, at(now), status))
        elif plan.action is RepairAction.RESUME:
            attempts[-1] = replace(attempts[-1], status=AttemptStatus.RUNNING, started_at=at(now))
        elif plan.action is RepairAction.ESCALATE:
            escalations += 1
            escalated = True
        # the next round that can see a change (rounds come every round_every seconds)
        events = [a.started_at + timedelta(seconds=durations[a.number - 1]) for a in attempts
                  if a.status is AttemptStatus.RUNNING]  # fmt: skip
        events += [plan.not_before] if plan.not_before else []
        future = [s for s in ((e - T0).total_seconds() for e in events) if s > now]
        later = max(now + round_every, min(future)) if future else now + round_every
        now += round_every * max(1, math.ceil((later - now) / round_every))
    # Then exactly max_attempts executions ran, one after the other with the backoff between, and
    # exactly one escalation went out
    assert len(attempts) == max_attempts and escalations == 1
    assert [a.execution for a in attempts] == [f"{INCIDENT}-a{n}" for n in range(1, max_attempts + 1)]
    for earlier, later in itertools.pairwise(attempts):
        assert earlier.ended_at is not None
        assert later.started_at >= earlier.ended_at + backoff_after(earlier.number, backoff)
