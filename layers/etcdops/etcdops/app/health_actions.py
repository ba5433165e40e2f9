"""What a health round does about its decision: start a ReplaceMember attempt (one per attempt name;
later rounds retry a failed one with backoff and escalate once, invariant 12), or announce a quorum
loss, a replacement nobody can run, and each notification, once per incident."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from etcdops.adapters.health_aws import StartOutcome
from etcdops.adapters.state import Repair, RepairRecord
from etcdops.domain import repair_messages
from etcdops.domain.health import ClusterHealth
from etcdops.domain.policy import Action, Decision
from etcdops.domain.repair import Attempt, AttemptStatus, RepairAction, RepairPlan, attempt_execution, decide_repair

if TYPE_CHECKING:
    from etcdops.app.healthcheck import HealthContext

__all__ = ["act", "announce", "continue_repairs", "renew_certificates_if_due", "replace_input"]

log = logging.getLogger("etcdops.app.healthcheck")


def replace_input(
    decision: Decision,
    ec2_failures: frozenset[int],
    *,
    attempt: int = 1,
    max_attempts: int = 1,
    original_voters: int | None = None,
) -> dict[str, Any]:
    """The ReplaceMember execution input for attempt ``attempt`` of a REPLACE_MEMBER decision."""
    if decision.action is not Action.REPLACE_MEMBER or decision.target_member_id is None:
        raise ValueError(f"not a replacement decision: {decision.action}")
    document: dict[str, Any] = {
        "cluster": decision.cluster,
        "member_id": f"{decision.target_member_id:x}",
        "member_name": decision.target_member_name or "",
        "member_label": decision.target_member_label or f"{decision.target_member_id:x}",
        "incident_id": decision.incident_id,
        "attempt": attempt,
        "max_attempts": max_attempts,
        "reason": decision.reason,
        "requires_approval": decision.requires_approval,
        "ec2_failed": decision.target_member_id in ec2_failures,
    }
    if original_voters:
        document["original_voters"] = original_voters  # a retry restores the full size, not the size it finds
    return document


# ---- acting -------------------------------------------------------------------------------------------


def announce(ctx: HealthContext, key: str, kind: str, subject: str, message: str, now: datetime) -> str | None:
    """Publish once per incident ``key``; what was done, or None when it was announced before."""
    if ctx.notifier is None:
        log.warning("no notification topic configured; not announcing %s: %s", key, subject)
        return None
    if not ctx.state.record_incident(ctx.config.name, key, kind, now):
        return None
    ctx.notifier.publish(subject, message, {"cluster": ctx.config.name, "kind": kind, "incident": key})
    return f"notified {kind} {key}"


def act(
    ctx: HealthContext,
    decision: Decision,
    ec2_failures: frozenset[int],
    now: datetime,
    health: ClusterHealth | None = None,
) -> list[str]:
    """Carry out ``decision``; the list says what was done this time."""
    cluster = decision.cluster
    done: list[str] = []
    if decision.action is Action.REPLACE_MEMBER and decision.incident_id:
        done += _replace(ctx, decision, decision.incident_id, ec2_failures, health, now)
    elif decision.action in (Action.NONE, Action.NOTIFY) and ctx.replace is not None and health is not None:
        done += continue_repairs(ctx, health, now)
    elif decision.action is Action.ESCALATE_QUORUM_LOSS and decision.incident_id:
        restore = json.dumps(dict(decision.restore_input or {}), sort_keys=True)
        backup = decision.backup_id or "NONE (no verified backup of this cluster incarnation; see above)"
        note = announce(
            ctx,
            decision.incident_id,
            "quorum-loss",
            f"etcdops: QUORUM LOST on cluster {cluster} - a restore needs a human",
            f"{decision.reason}\n\nLatest verified backup: {backup}\nRestoreCluster input: {restore}\n\n"
            "No membership change was made. Start RestoreCluster with exactly this input once you decide "
            "to restore; it waits for your approval before it changes anything.\n",
            now,
        )
        done += [note] if note else []
    for notification in decision.notifications:
        note = announce(
            ctx,
            notification.key,
            str(notification.kind),
            f"etcdops: {notification.kind} on cluster {cluster}",
            notification.message,
            now,
        )
        done += [note] if note else []
    return done


def _replace(
    ctx: HealthContext,
    decision: Decision,
    incident: str,
    ec2_failures: frozenset[int],
    health: ClusterHealth | None,
    now: datetime,
) -> list[str]:
    """A REPLACE_MEMBER decision: repair through ReplaceMember, or, with no runbook configured, tell
    a human how to start it by hand."""
    member = decision.target_member_name or decision.target_member_label or f"{decision.target_member_id:x}"
    if ctx.replace is None:
        document = replace_input(decision, ec2_failures)
        name = attempt_execution(incident, 1)
        note = announce(
            ctx,
            incident,
            "replace-needed",
            f"etcdops: member {member} of {decision.cluster} must be replaced (no runbook configured)",
            f"{decision.reason}\n\nREPLACE_STATE_MACHINE_ARN is not set, so nothing was started. "
            f"Start ReplaceMember by hand with the execution name {name} and this input:\n"
            f"{json.dumps(document, indent=2, sort_keys=True)}\n",
            now,
        )
        return [note] if note else []
    voters = len(health.voters) if health is not None else None
    max_attempts = ctx.config.health.max_repair_attempts

    def document_for(number: int) -> dict[str, Any]:
        return replace_input(decision, ec2_failures, attempt=number, max_attempts=max_attempts, original_voters=voters)

    return _repair(ctx, incident, member, decision, document_for, health, now)


# ---- repair attempts (invariant 12) ----------------------------------------------------------------


def _attempts(ctx: HealthContext, repair: Repair) -> list[Attempt]:
    """The recorded attempts with their real status: as the attempt itself recorded it when it
    ended, else as Step Functions reports it (and then recorded, so it is asked once)."""
    cluster = ctx.config.name
    attempts: list[Attempt] = []
    for record in repair.attempts:
        if record.outcome is not None:
            status = AttemptStatus(record.outcome)
            attempts.append(_attempt(record, status, record.ended_at, record.error, record.cause))
            continue
        execution = ctx.replace.describe(record.execution) if ctx.replace is not None else None
        if execution is None:
            attempts.append(_attempt(record, AttemptStatus.NOT_STARTED))
        elif execution.status.ended:
            ended = execution.ended_at or record.recorded_at
            error, cause = execution.error, execution.cause
            ctx.state.finish_repair_attempt(
                cluster, repair.incident, record.number, record.execution, str(execution.status), error, cause, ended
            )
            attempts.append(_attempt(record, execution.status, ended, error, cause))
        else:
            attempts.append(_attempt(record, execution.status))
    return attempts


def _attempt(
    record: RepairRecord,
    status: AttemptStatus,
    ended_at: datetime | None = None,
    error: str | None = None,
    cause: str | None = None,
) -> Attempt:
    return Attempt(record.number, record.execution, record.recorded_at, status, ended_at, error, cause)


def _repair(
    ctx: HealthContext,
    incident: str,
    member: str,
    decision: Decision,
    document_for: Callable[[int], dict[str, Any]],
    health: ClusterHealth | None,
    now: datetime,
) -> list[str]:
    """Start, resume, wait for or escalate the repair of ``incident``, as :func:`decide_repair` says.

    Exactly one execution per attempt: the attempt is recorded with a conditional write first, and
    only the round that recorded it starts it (a round that dies in between leaves it to the next
    round, which starts it under the same name)."""
    assert ctx.replace is not None
    cluster = ctx.config.name
    settings = ctx.config.health
    repair = ctx.state.load_repair(cluster, incident)
    attempts = _attempts(ctx, repair)
    plan = decide_repair(
        incident,
        attempts,
        now=now,
        max_attempts=settings.max_repair_attempts,
        backoff_seconds=settings.repair_backoff_seconds,
        escalated=repair.escalated_at is not None,
    )
    log.info("repair %s: %s", plan.action, plan.reason)
    done: list[str] = []
    if plan.action in (RepairAction.START, RepairAction.RESUME) and plan.execution is not None and ctx.fleet:
        held, notes = ctx.fleet.may_start(plan.execution, now)  # invariant 15: the fleet brake and the cap
        if held is not None:
            log.info("repair %s held: %s", plan.execution, held)
            return [*notes, f"{plan.execution} held: {held}"]
        done += notes
    if plan.action is RepairAction.START and plan.attempt is not None and plan.execution is not None:
        done += _start_attempt(ctx, incident, member, decision, document_for(plan.attempt), plan, now)
    elif plan.action is RepairAction.RESUME and plan.execution is not None:
        document = json.loads(repair.attempts[-1].document)
        done.append(_resumed(ctx.replace.start(plan.execution, document)))
    elif plan.action is RepairAction.ESCALATE:
        done += _escalate(ctx, incident, member, decision, attempts, health, now)
    elif plan.action is RepairAction.WAIT:
        done.append(plan.reason)
    return done


def _start_attempt(
    ctx: HealthContext,
    incident: str,
    member: str,
    decision: Decision,
    document: dict[str, Any],
    plan: RepairPlan,
    now: datetime,
) -> list[str]:
    """Record attempt ``plan.attempt`` (a conditional write), and only if this round recorded it,
    start it and announce it."""
    assert ctx.replace is not None and plan.attempt is not None and plan.execution is not None
    cluster = ctx.config.name
    record = RepairRecord(incident, plan.attempt, plan.execution, now, json.dumps(document, sort_keys=True))
    if not ctx.state.record_repair_attempt(cluster, record):
        return [f"attempt {plan.attempt} of {incident} was recorded by a concurrent round"]
    outcome = ctx.replace.start(plan.execution, document)
    done = [f"started ReplaceMember {outcome.name}"]  # its record says so, whoever's call made it (_resumed)
    subject, body = repair_messages.attempt_started(
        cluster,
        member,
        plan.attempt,
        ctx.config.health.max_repair_attempts,
        approval=decision.requires_approval,
        why=plan.reason if plan.attempt > 1 else decision.reason,
        execution=outcome.execution_arn or outcome.name,
        document=document,
    )
    note = announce(ctx, plan.execution, "replace", subject, body, now)
    return done + ([note] if note else [])


def _escalate(
    ctx: HealthContext,
    incident: str,
    member: str,
    decision: Decision,
    attempts: list[Attempt],
    health: ClusterHealth | None,
    now: datetime,
) -> list[str]:
    """Escalate the repair of ``incident`` to a human, once (the conditional write says who)."""
    cluster = ctx.config.name
    if not ctx.state.escalate_repair(cluster, incident, now):
        return []
    ref = decision.target_member_name or (f"{decision.target_member_id:x}" if decision.target_member_id else "")
    subject, body = repair_messages.escalation(
        cluster, member, ref or member, incident, attempts, health, decision.reason
    )
    if ctx.notifier is None:
        log.warning("no notification topic configured; not sending: %s", subject)
    else:
        attributes = {"cluster": cluster, "kind": "repair-escalated", "incident": incident}
        ctx.notifier.publish(subject, body, attributes)
    return [f"escalated the repair of {incident} after {len(attempts)} attempts"]


def _resumed(outcome: StartOutcome) -> str:
    """What a round that started another round's recorded attempt can say. Step Functions answers a
    start with the name and input of a RUNNING execution as it answered the call that made it, so
    when the recording round is alive and started it meanwhile, both calls succeed: the attempt's
    record, not the answer, says who started it (the recording round)."""
    if outcome.started:
        return f"resumed ReplaceMember {outcome.name}: recorded by another round, not running when this round looked"
    return f"ReplaceMember {outcome.name} already started"


def continue_repairs(ctx: HealthContext, health: ClusterHealth, now: datetime) -> list[str]:
    """A repair that failed after it removed the member leaves a healthy but smaller cluster, which
    no failure streak points at any more: it is carried on here (retried with backoff, then
    escalated) until the cluster has its original number of voters again."""
    if not health.has_quorum:
        return []
    done: list[str] = []
    for repair in ctx.state.load_repairs(ctx.config.name):
        if repair.escalated_at is not None or not repair.attempts:
            continue
        last = repair.attempts[-1]
        document = json.loads(last.document)
        try:
            target = int(str(document.get("member_id")), 16)
        except ValueError:
            continue
        wanted = int(document.get("original_voters") or 0)
        if last.outcome == str(AttemptStatus.SUCCEEDED) or health.member(target) is not None:
            continue  # done, or the member is back in the membership (its own streak rules it)
        if len(health.voters) >= wanted:
            continue  # the cluster is whole again (someone else added a member)
        member = str(document.get("member_label") or document.get("member_name") or document.get("member_id"))
        why = (
            f"The repair of member {member} of cluster {ctx.config.name} removed it but did not finish: "
            f"{len(health.voters)} of {wanted} voting members. {document.get('reason', '')}"
        )
        decision = Decision(
            action=Action.REPLACE_MEMBER,
            reason=why,
            cluster=ctx.config.name,
            target_member_id=target,
            target_member_name=str(document.get("member_name") or ""),
            target_member_label=member,
            incident_id=repair.incident,
            requires_approval=bool(document.get("requires_approval")),
        )

        def document_for(number: int, document: dict[str, Any] = document, why: str = why) -> dict[str, Any]:
            return {**document, "attempt": number, "reason": why}

        done += _repair(ctx, repair.incident, member, decision, document_for, health, now)
    return done


# ---- certificates near their expiry ---------------------------------------------------------------


def renew_certificates_if_due(ctx: HealthContext, expiry_days: float | None, now: datetime) -> list[str]:
    """Start RotateCertificates (the members whose certificate is due) when the earliest certificate a member
    serves expires in fewer than ``certificates.renew_days`` days (CertificateExpiryDays). One execution per
    cluster and day, by its name: the rounds of one day start it once, and one that failed is tried again the
    next day (its failure was announced by the runbook)."""
    renew_days = ctx.config.certificates.renew_days
    if ctx.rotate is None or expiry_days is None or expiry_days >= renew_days:
        return []
    name = f"rotate-{ctx.config.name}-{now:%Y%m%d}"
    document = {
        "cluster": ctx.config.name,
        "only_expiring": True,
        "reason": f"a member's certificate expires in {expiry_days:.1f} days (certificates.renew_days: {renew_days})",
    }
    outcome = ctx.rotate.start(name, document)
    return [f"started RotateCertificates {name}"] if outcome.started else []
