"""Attempts, not incidents, name executions: whether and when the autopilot tries a repair again.

One failure of a member is one *incident* (:func:`etcdops.domain.policy.incident_id`: the same for every
trigger of that failure). Each try to repair it is an *attempt*, a ReplaceMember execution named
``<incident>-a<N>``. :func:`decide_repair` is a pure function from the attempts so far (with each
one's real status, read from Step Functions: an execution that crashed never ran its failure step)
to what to do now, with a sentence of reason, like :func:`etcdops.domain.policy.decide`:

* no attempt yet: START attempt 1;
* the last attempt was recorded but its execution never started (the round that recorded it died
  in between): RESUME it under the same name (Step Functions refuses a second execution of a
  name, so duplicate rounds still make one execution per attempt);
* the last attempt runs: WAIT;
* a human rejected the last attempt's approval: DONE (a decision was made; nothing is retried);
* the last attempt ended without repairing (failed, aborted, timed out, or succeeded while the
  member is still failed): attempt ``N + 1`` once the backoff after attempt ``N`` has passed
  (``backoff_seconds * 2**(N-1)`` after it ended), up to ``max_attempts``; then ESCALATE, once;
* escalated already: DONE (a human was told; invariant 12).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from etcdops.domain.decisions import MAX_ATTEMPT_SUFFIX_LENGTH, MAX_EXECUTION_NAME_LENGTH
from etcdops.domain.errors import APPROVAL_REJECTED
from etcdops.domain.wording import count


class AttemptStatus(StrEnum):
    """An attempt's execution as Step Functions reports it (NOT_STARTED: recorded, no execution)."""

    NOT_STARTED = "NOT_STARTED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"
    ABORTED = "ABORTED"

    @property
    def ended(self) -> bool:
        return self not in (AttemptStatus.NOT_STARTED, AttemptStatus.RUNNING)


@dataclass(frozen=True)
class Attempt:
    """One try to repair an incident, and how it went."""

    number: int
    execution: str
    started_at: datetime
    status: AttemptStatus
    ended_at: datetime | None = None
    error: str | None = None
    cause: str | None = None

    @property
    def summary(self) -> str:
        """One line for people: which execution, how it ended, and why."""
        what = f"{self.status}"
        if self.error or self.cause:
            what += f": {self.error or 'error'}" + (f": {self.cause}" if self.cause else "")
        ended = f", ended {self.ended_at.isoformat()}" if self.ended_at else ""
        return f"attempt {self.number} ({self.execution}, started {self.started_at.isoformat()}{ended}): {what}"


class RepairAction(StrEnum):
    START = "START"
    RESUME = "RESUME"
    WAIT = "WAIT"
    ESCALATE = "ESCALATE"
    DONE = "DONE"


@dataclass(frozen=True)
class RepairPlan:
    """What to do about an incident's repair now, and why. ``attempt``/``execution``: the attempt to
    start or resume; ``not_before``: when a waiting retry may start."""

    action: RepairAction
    reason: str
    attempt: int | None = None
    execution: str | None = None
    not_before: datetime | None = None


def attempt_execution(incident: str, number: int) -> str:
    """The execution name of attempt ``number`` of ``incident`` (at most 80 characters)."""
    suffix = f"-a{number}"
    if len(suffix) > MAX_ATTEMPT_SUFFIX_LENGTH or number < 1:
        raise ValueError(f"attempt number {number} is out of range 1-99")
    name = f"{incident}{suffix}"
    if len(name) > MAX_EXECUTION_NAME_LENGTH:
        raise ValueError(f"execution name {name!r} is longer than {MAX_EXECUTION_NAME_LENGTH} characters")
    return name


def backoff_after(number: int, backoff_seconds: float) -> timedelta:
    """How long after attempt ``number`` ended the next one may start: doubling from the base."""
    return timedelta(seconds=backoff_seconds * 2 ** (number - 1))


def decide_repair(
    incident: str,
    attempts: Sequence[Attempt],
    *,
    now: datetime,
    max_attempts: int,
    backoff_seconds: float,
    escalated: bool = False,
) -> RepairPlan:
    """What to do about ``incident``'s repair now (see the module docstring for the rules).

    ``attempts`` are this incident's attempts so far, numbered 1, 2, ... with their current status;
    ``escalated`` says the human escalation was sent already. Call it only while the repair is still
    needed (the member is still failed, or it was removed and the cluster is still short of it).
    """
    ordered = _numbered(incident, attempts, max_attempts)
    if escalated:
        return RepairPlan(
            RepairAction.DONE,
            f"The repair of {incident} was escalated to a human after {count(len(ordered), 'attempt')}; "
            "the autopilot starts no further attempt for it.",
        )
    if not ordered:
        return RepairPlan(RepairAction.START, f"First repair attempt of {incident}.", 1, attempt_execution(incident, 1))
    last = ordered[-1]
    unfinished = _while_unfinished(incident, last)
    if unfinished is not None:
        return unfinished
    if len(ordered) >= max_attempts:
        return RepairPlan(
            RepairAction.ESCALATE,
            f"All {len(ordered)} repair attempts of {incident} ended without repairing it "
            f"(health.max_repair_attempts is {max_attempts}); a human must act.",
        )
    return _next_attempt(incident, last, now=now, max_attempts=max_attempts, backoff_seconds=backoff_seconds)


def _numbered(incident: str, attempts: Sequence[Attempt], max_attempts: int) -> list[Attempt]:
    """``attempts`` in order, checked to be numbered 1, 2, ...; ValueError otherwise."""
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
    ordered = sorted(attempts, key=lambda a: a.number)
    if [a.number for a in ordered] != list(range(1, len(ordered) + 1)):
        raise ValueError(f"attempts of {incident} are not numbered 1..{len(ordered)}: {[a.number for a in ordered]}")
    return ordered


def _while_unfinished(incident: str, last: Attempt) -> RepairPlan | None:
    """The plan while the last attempt has not ended, or ended by a human's rejection; None otherwise."""
    if last.status is AttemptStatus.NOT_STARTED:
        return RepairPlan(
            RepairAction.RESUME,
            f"Attempt {last.number} of {incident} was recorded but its execution never started; "
            f"starting it now under the same name {last.execution}.",
            last.number,
            last.execution,
        )
    if last.status is AttemptStatus.RUNNING:
        return RepairPlan(
            RepairAction.WAIT,
            f"Attempt {last.number} of {incident} ({last.execution}) is running.",
            last.number,
            last.execution,
        )
    if last.error == APPROVAL_REJECTED:
        return RepairPlan(
            RepairAction.DONE,
            f"A human rejected attempt {last.number} of {incident} ({last.execution}); "
            "the autopilot starts no further attempt for it.",
        )
    return None


def _next_attempt(
    incident: str, last: Attempt, *, now: datetime, max_attempts: int, backoff_seconds: float
) -> RepairPlan:
    """The attempt after ``last`` (which ended without repairing): after its backoff, then started."""
    not_before = (last.ended_at or last.started_at) + backoff_after(last.number, backoff_seconds)
    number = last.number + 1
    if now < not_before:
        return RepairPlan(
            RepairAction.WAIT,
            f"Attempt {last.number} of {incident} ended {last.status}; attempt {number} of {max_attempts} "
            f"starts after the backoff, at {not_before.isoformat()}.",
            number,
            attempt_execution(incident, number),
            not_before,
        )
    return RepairPlan(
        RepairAction.START,
        f"Attempt {last.number} of {incident} ended {last.status} ({last.error or 'no error reported'}); "
        f"starting attempt {number} of {max_attempts}.",
        number,
        attempt_execution(incident, number),
    )


__all__ = [
    "Attempt",
    "AttemptStatus",
    "RepairAction",
    "RepairPlan",
    "attempt_execution",
    "backoff_after",
    "decide_repair",
]
