"""The steps of the ReplaceMember runbook, one function each, run by the state machine.

Every step takes the execution's document (a dict: the input plus what earlier steps recorded)
and returns it extended. Every step converges when retried (invariant 7): it reads the current
membership and hosts before it changes anything, so a retry after a timeout or a crash never adds
twice or removes the wrong member. Steps that change membership first re-check invariant 1 on a
fresh probe, so a second failure during the runbook stops it before any further change.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from etcdops.app.runbook import (
    ClusterNotReadyError,
    Document,
    InvalidRunbookInputError,
    RunbookContext,
    caught_and_released,
    caught_error,
    caught_message,
    dispatch,
    durations,
    ensure_backup,
    first_time,
    locked,
    members,
    probe,
    publish_success_once,
    release_lock,
    require_configured_cluster,
    timed,
)
from etcdops.app.runbook import preflight as checks
from etcdops.app.runbook.members import UnsafeChangeError, check_safe, record_membership_in_config
from etcdops.domain.compute.base import PreflightPlan, is_host_name
from etcdops.domain.errors import Backoff, EtcdLearnerNotReadyError, EtcdopsError
from etcdops.domain.policy import change_safety
from etcdops.domain.runbook_documents import ReplaceDocument

LOCK_LEASE_SECONDS = 1800

STEP_RETRY: dict[str, dict[type[EtcdopsError], Backoff]] = {
    # etcd refuses the promotion until the learner is in sync: about 90 s, then it is removed again
    "PromoteLearner": {EtcdLearnerNotReadyError: members.CATCH_UP, ClusterNotReadyError: members.CATCH_UP},
    "WaitUntilHealthy": {ClusterNotReadyError: members.HEALTHY},
}
"""Steps that wait longer than the default for an error (the state machine's Retry lists come from
this and the errors' own declarations: :mod:`etcdops_local.retry_contract`)."""


ReplaceContext = RunbookContext


def member_text(doc: Document) -> str:
    """How messages name the member being replaced (never "unnamed")."""
    name = doc.get("member_name") or doc.get("member_label") or "member"
    return f"{name} ({doc.get('member_id')})" if doc.get("member_id") and doc.get("member_name") else str(name)


def _target_id(doc: Document) -> int:
    try:
        return int(str(doc["member_id"]), 16)
    except (KeyError, ValueError):
        raise InvalidRunbookInputError(f"runbook input: member_id {doc.get('member_id')!r} is not a hex id") from None


# ---- the steps, in runbook order --------------------------------------------------------------


def acquire_lock(ctx: ReplaceContext, doc: Document) -> Document:
    require_configured_cluster(ctx.config, doc)
    _target_id(doc)
    return locked(ctx, doc, LOCK_LEASE_SECONDS)


def check_member_still_failed(ctx: ReplaceContext, doc: Document) -> Document:
    """Re-check on fresh probes: still failed (or already removed by an earlier try), and safe.

    A member that was just resumed (a paused VM, a long stop-the-world pause) needs a moment to
    answer again, and its return may cost the cluster an election: the member is probed again for up
    to ``health.recheck_seconds`` and counts as recovered if any probe finds it healthy.
    """
    started = time.monotonic()
    target = _target_id(doc)
    while True:
        health = probe(ctx)
        member = health.member(target)
        if member is not None and member.healthy and not doc.get("ec2_failed"):
            return timed({**doc, "recovered": True}, "check_member_still_failed", started)
        if member is None or doc.get("ec2_failed") or time.monotonic() - started >= ctx.config.health.recheck_seconds:
            break
        ctx.sleep(min(1.0, max(0.0, ctx.config.health.recheck_seconds - (time.monotonic() - started))))
    if member is not None:
        safety = change_safety(health, target)
        if not safety.safe:
            raise UnsafeChangeError(
                f"replacing member {doc.get('member_name') or doc['member_id']} is not safe: "
                f"{safety.others_healthy} healthy voters besides it, {safety.needed} needed"
            )
    return timed(
        {**doc, "recovered": False, "original_voters": doc.get("original_voters") or len(health.voters)},
        "check_member_still_failed",
        started,
    )


def preflight(ctx: ReplaceContext, doc: Document) -> Document:
    """Invariant 13: everything the rest of the runbook needs is there and allowed, or nothing changes.

    It runs right before the first destructive step (the removal): after the lock, the re-check, the
    approval and the backup, so that what it proves is as fresh as it can be (an approval can wait an
    hour) and the backup it checks is the one this runbook relies on.
    """
    started = time.monotonic()
    old = str(doc.get("member_name") or "")
    plan = PreflightPlan(
        launch=(new_member_name(doc),),
        documents=("StartEtcd",),
        repoint=True,
        retire=(old,) if old and is_host_name(old) else (),
    )
    why = "relies on it to undo a failed replacement"
    findings = checks.plan_findings(ctx, doc, plan, lease_seconds=LOCK_LEASE_SECONDS, why=why)
    return checks.passed(ctx, doc, "ReplaceMember", findings, started)


def remove_failed_member(ctx: ReplaceContext, doc: Document) -> Document:
    started = time.monotonic()
    target = _target_id(doc)
    # the safety check comes first: with quorum lost even reading the membership fails
    check_safe(ctx, target, f"removing member {doc['member_id']}")
    current = next((m for m in members.members(ctx) if m.id == target), None)
    if current is not None:
        with ctx.client() as client:
            client.member_remove(target)
    old = {
        "name": (current.name if current else None) or doc.get("member_name") or "",
        "peer_urls": list(current.peer_urls) if current else list(doc.get("old_member", {}).get("peer_urls", [])),
    }
    return timed({**doc, "removed": True, "old_member": old}, "remove_failed_member", started)


def new_member_name(doc: Document) -> str:
    """A deterministic name for the replacement: the old name's stem and the incident's tail."""
    stem = str(doc.get("member_name") or "member").split("-r")[0]
    tail = "".join(c for c in str(doc.get("incident_id") or doc["execution"]) if c.isalnum())[-6:].lower()
    return f"{stem}-r{tail}"


def launch_replacement(ctx: ReplaceContext, doc: Document) -> Document:
    started = time.monotonic()
    return timed(members.launch_member(ctx, doc, new_member_name(doc)), "launch_replacement", started)


def wait_until_healthy(ctx: ReplaceContext, doc: Document) -> Document:
    """As many healthy voters as before the failure, and no learner left."""
    return members.wait_for_voters(ctx, doc, int(doc.get("original_voters") or 0))


def _finish_attempt(ctx: ReplaceContext, doc: Document, outcome: str, error: Any = None, cause: Any = None) -> None:
    """An autopilot attempt (input with ``incident_id`` and ``attempt``) records how it ended, so
    the next health round knows without asking Step Functions (a crashed one is asked)."""
    attempt = doc.get("attempt")
    if not doc.get("incident_id") or not isinstance(attempt, int) or not doc.get("cluster"):
        return
    ctx.state.finish_repair_attempt(
        str(doc["cluster"]),
        str(doc["incident_id"]),
        attempt,
        str(doc.get("execution")),
        outcome,
        str(error) if error else None,
        str(cause)[:2000] if cause else None,
        ctx.now(),
    )


def notify_success(ctx: ReplaceContext, doc: Document) -> Document:
    _finish_attempt(ctx, doc, "SUCCEEDED")
    new = doc.get("new_member") or {}
    name = doc.get("member_name") or member_text(doc)
    if doc.get("recovered"):
        subject = f"etcdops: member {name} of {doc['cluster']} recovered; nothing replaced"
        body = f"Runbook {doc['execution']} found the member healthy again and made no change."
    else:
        subject = f"etcdops: replaced member {name} of {doc['cluster']}"
        body = (
            f"Runbook {doc['execution']} replaced member {member_text(doc)} "
            f"with {new.get('name')} ({new.get('id')}).\nWhy: {doc.get('reason', '')}\n"
            f"Backup taken or confirmed first: {doc.get('backup_id')}\n"
            f"Stored endpoints now: {', '.join(doc.get('stored_endpoints') or []) or 'unchanged'}\n"
            f"Step durations: {durations(doc)}"
        )
    return publish_success_once(ctx, doc, "replace-succeeded", subject, body)


def notify_failure(ctx: ReplaceContext, doc: Document) -> Document:
    """The Catch path: say what failed and where the cluster was left; release our lock; when the
    membership changed before the failure, the stored configuration follows it (best effort)."""
    error = caught_and_released(ctx, doc)
    stored = "unchanged (the membership did not change)"
    if doc.get("removed") and error.get("Error") != "InvalidRunbookInputError":
        try:
            stored = ", ".join(record_membership_in_config(ctx))
        except EtcdopsError as exc:  # the report below must still go out
            stored = f"NOT updated ({type(exc).__name__}: {exc})"
    _finish_attempt(ctx, doc, "FAILED", error.get("Error"), caught_message(error))
    if not first_time(ctx, doc, "replace-failed"):
        return doc
    attempt = f" (attempt {doc['attempt']} of {doc.get('max_attempts')})" if doc.get("attempt") else ""
    if error.get("Error") == "PreflightFailedError":
        where = (
            f"Member to replace: {member_text(doc)}; nothing was changed: the cluster has the same members "
            "as before. Fix what the preflight found, then start ReplaceMember again."
        )
    else:
        where = (
            f"Member being replaced: {member_text(doc)}; "
            f"removed from the cluster: {bool(doc.get('removed'))}; new member: {doc.get('new_member')}.\n"
            f"Stored endpoints: {stored}.\n"
            "No further membership change was made. Check `etcdops status` before acting."
        )
    if doc.get("attempt"):
        where += " The autopilot tries again after a backoff, up to health.max_repair_attempts, then escalates once."
    ctx.notifier.publish(
        f"etcdops: ReplaceMember FAILED for {doc.get('cluster')}{attempt}",
        f"Runbook {doc.get('execution')} stopped: {caught_error(error)}\n{where}",
        {"cluster": str(doc.get("cluster")), "kind": "replace-failed"},
    )
    return doc


STEPS: dict[str, Callable[[ReplaceContext, Document], Document]] = {
    "AcquireLock": acquire_lock,
    "CheckMemberStillFailed": check_member_still_failed,
    "EnsureBackup": ensure_backup,
    "Preflight": preflight,
    "RemoveFailedMember": remove_failed_member,
    "LaunchReplacement": launch_replacement,
    "AddLearner": members.add_learner,
    "StartReplacement": members.start_new_member,
    "PromoteLearner": members.promote_learner,
    "RemoveLearner": members.remove_learner,
    "WaitUntilHealthy": wait_until_healthy,
    "RepointClients": members.repoint_clients,
    "RetireOldHost": members.retire_old_host,
    "ReleaseLock": release_lock,
    "NotifySuccess": notify_success,
    "NotifyFailure": notify_failure,
}


def run_step(ctx: ReplaceContext, step: str, doc: Document) -> Document:
    return dispatch(STEPS, ctx, step, doc, ReplaceDocument)
