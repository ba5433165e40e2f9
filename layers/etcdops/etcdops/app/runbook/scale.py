"""The steps of the ScaleCluster runbook: grow or shrink a cluster to 3, 5 or 7 voting members, one member at
a time.

What may be done comes from :mod:`etcdops.domain.scale` (pure): the sizes, when the cluster may change,
which change comes next. A member joins as ReplaceMember's replacement does (:mod:`etcdops.app.runbook.members`:
launch its host, add it as a learner, start it, promote it once caught up, wait until every voter is healthy,
send clients to it); a member leaves only as a follower (leadership is handed on first), while invariant 1
holds without it, after the load balancer stopped sending clients to it, and its host is retired once the
cluster is healthy without it. Then the next change, from a fresh probe.

Every step converges when retried (invariant 7): the next change is decided from the membership as it is,
a host is launched under a name fixed by the execution and the size it brings the cluster to, a learner is
added only when its host is not a member already, a member already gone is not removed again.
"""

from __future__ import annotations

import time
from typing import Any

from etcdops.app.runbook import (
    ClusterNotReadyError,
    Document,
    InvalidRunbookInputError,
    RunbookContext,
    asks_a_human,
    caught_and_released,
    caught_error,
    dispatch,
    durations,
    ensure_backup,
    execution_tail,
    hand_leadership_on,
    locked,
    members,
    probe,
    publish_failure_once,
    publish_success_once,
    release_lock,
    require_configured_cluster,
    timed,
)
from etcdops.app.runbook import preflight as checks
from etcdops.domain.compute.base import PreflightPlan, check_host_name, is_host_name
from etcdops.domain.errors import (
    Backoff,
    EtcdLearnerNotReadyError,
    EtcdMemberNotFoundError,
    EtcdopsError,
    ScaleRefusedError,
)
from etcdops.domain.runbook_documents import ScaleDocument
from etcdops.domain.scale import next_change, refusals, removal_order, size_refusal, summary

LOCK_LEASE_SECONDS = 3600

STEP_RETRY: dict[str, dict[type[EtcdopsError], Backoff]] = {
    # etcd refuses the promotion until the learner is in sync: about 90 s, then it is removed again
    "PromoteLearner": {EtcdLearnerNotReadyError: members.CATCH_UP, ClusterNotReadyError: members.CATCH_UP},
    "WaitUntilHealthy": {ClusterNotReadyError: members.HEALTHY},
    "CheckSize": {ClusterNotReadyError: members.HEALTHY},
}
"""Steps that wait longer than the default (a learner catching up; the cluster settling after a change).
A removal right after a promotion that etcd refuses for a few seconds ("unhealthy cluster") is retried by
that error's own declaration."""


def _size(doc: Document) -> int:
    """The target size, checked: a size etcdops does not scale to is refused in one line."""
    size = doc.get("size")
    refusal = size_refusal(size)
    if refusal or not isinstance(size, int):
        raise ScaleRefusedError([refusal or f"size {size!r} is not a whole number"])
    return size


def member_name(ctx: RunbookContext, doc: Document, voters: int) -> str:
    """The name of the member that brings the cluster to ``voters`` voters: the same for every retry of this
    execution, another for the next execution."""
    return check_host_name(f"{ctx.config.name[:40]}-s{execution_tail(doc)[-6:]}{voters}")


# ---- before the first change ------------------------------------------------------------------


def acquire_lock(ctx: RunbookContext, doc: Document) -> Document:
    """Invariant 2: one operation at a time, the same lock as every runbook. A size etcdops does not scale
    to is refused before the lock is taken."""
    require_configured_cluster(ctx.config, doc)
    size = _size(doc)
    return locked(ctx, {**doc, "size": size}, LOCK_LEASE_SECONDS)


def check_scale(ctx: RunbookContext, doc: Document) -> Document:
    """Every member healthy, a leader, no alarm, no learner; records the size before and what the approval
    request says. A cluster that is not ready is refused with every reason, nothing changed."""
    started = time.monotonic()
    size = _size(doc)
    health = probe(ctx)
    reasons = refusals(health)
    if reasons:
        raise ScaleRefusedError(reasons)
    voters = len(health.voters)
    document = {
        **doc,
        "voters_before": voters,
        "members_before": sorted(m.name for m in health.voters),
        "nothing_to_do": voters == size,
        "requires_approval": asks_a_human(ctx, doc),
        "approval_summary": summary(doc["cluster"], voters, size),
        "changes": doc.get("changes") or [],
    }
    return timed(document, "check_scale", started)


def preflight(ctx: RunbookContext, doc: Document) -> Document:
    """Invariant 13: the hosts it will launch (certificates, launch, start etcd) or retire, the load balancer,
    the backup and the lock, all before the first change."""
    started = time.monotonic()
    size = _size(doc)
    health = probe(ctx)
    voters = len(health.voters)
    launch = tuple(member_name(ctx, doc, n) for n in range(voters + 1, size + 1))
    leaving = [m.name for m in removal_order(health)[: max(0, voters - size)]]
    plan = PreflightPlan(
        launch=launch,
        documents=("StartEtcd",) if launch else (),
        repoint=True,
        retire=tuple(name for name in leaving if is_host_name(name)),
    )
    why = "relies on it should the cluster lose its quorum while its size changes"
    findings = checks.plan_findings(ctx, doc, plan, lease_seconds=LOCK_LEASE_SECONDS, why=why)
    return checks.passed(ctx, doc, "ScaleCluster", findings, started)


# ---- one change at a time ---------------------------------------------------------------------


def pick_next_change(ctx: RunbookContext, doc: Document) -> Document:
    """The next change from a fresh probe, with every member healthy and no learner: add one, remove one,
    or done."""
    size = _size(doc)
    health = probe(ctx)
    reasons = refusals(health)
    if reasons:
        raise ClusterNotReadyError("not changing the size while " + "; ".join(reasons))
    change = next_change(health, size)
    current: dict[str, Any] = {"kind": change.kind, "voters_after": change.voters_after, "at": ctx.now().isoformat()}
    document: Document = {**doc, "done": change.kind == "done", "new_member": None, "old_member": None}
    if change.kind == "add":
        current["name"] = member_name(ctx, doc, change.voters_after)
        document["new_member"] = {"name": current["name"]}
    elif change.member is not None:
        current.update(name=change.member.name, id=f"{change.member.id:x}")
        document["old_member"] = {"name": change.member.name, "id": current["id"]}
    return {**document, "current": current, "kind": change.kind}


def launch_member(ctx: RunbookContext, doc: Document) -> Document:
    started = time.monotonic()
    return timed(members.launch_member(ctx, doc, doc["current"]["name"]), "launch_member", started)


def wait_until_healthy(ctx: RunbookContext, doc: Document) -> Document:
    """Every voter healthy, as many as the change leaves, and no learner."""
    return members.wait_for_voters(ctx, doc, int(doc["current"]["voters_after"]))


def _old_id(doc: Document) -> int:
    try:
        return int(str(doc["old_member"]["id"]), 16)
    except (KeyError, TypeError, ValueError):
        raise InvalidRunbookInputError(f"runbook input: old_member {doc.get('old_member')!r} has no hex id") from None


def remove_member(ctx: RunbookContext, doc: Document) -> Document:
    """Clients leave the member first (the load balancer), then the member leaves the cluster: never while
    it leads (leadership is handed on and the step retried) and only while invariant 1 holds without it."""
    started = time.monotonic()
    target, name = _old_id(doc), doc["old_member"]["name"]
    host = members.old_host(ctx, doc)
    if host is not None:
        ctx.compute.deregister_target(host)
    if not any(m.id == target for m in members.members(ctx)):
        return timed(doc, "remove_member", started)  # removed by an earlier try
    health = members.check_safe(ctx, target, f"removing member {name}")
    moved = hand_leadership_on(ctx, health, target)
    if moved or health.leader == target:
        raise ClusterNotReadyError(
            f"member {name} led; leadership moved to {moved or 'another member'}; the next try removes it"
        )
    try:
        with ctx.client() as client:
            client.member_remove(target)
    except EtcdMemberNotFoundError:
        pass  # removed meanwhile: an earlier try whose answer was lost, read back from a member behind
    return timed(doc, "remove_member", started)


def _recorded(doc: Document, **extra: Any) -> Document:
    """The change just finished, added to the document's report once."""
    current = doc["current"]
    entry = {
        "kind": current["kind"],
        "name": current.get("name"),
        "id": current.get("id") or (doc.get("new_member") or {}).get("id"),
        "voters_after": current["voters_after"],
        **extra,
    }
    changes = [c for c in doc.get("changes") or [] if (c["kind"], c["name"]) != (entry["kind"], entry["name"])]
    return {**doc, "changes": [*changes, entry]}


def repoint_clients(ctx: RunbookContext, doc: Document) -> Document:
    """The new member takes clients (the load balancer) and the stored configuration names it."""
    return _recorded(members.repoint_clients(ctx, doc))


def retire_host(ctx: RunbookContext, doc: Document) -> Document:
    """The removed member's host is terminated and the stored configuration no longer names it."""
    document = members.retire_old_host(ctx, doc)
    endpoints = members.record_membership_in_config(ctx)
    return _recorded({**document, "stored_endpoints": endpoints})


def check_size(ctx: RunbookContext, doc: Document) -> Document:
    """The cluster has the asked number of voters, every one healthy, and no learner."""
    started = time.monotonic()
    size = _size(doc)
    health = probe(ctx)
    voters = len(health.voters)
    if voters != size or len(health.healthy_voters) != size or health.learners or not health.has_quorum:
        raise ClusterNotReadyError(
            f"cluster has {voters} voters ({len(health.healthy_voters)} healthy) and "
            f"{len(health.learners)} learners, not {size} healthy voters"
        )
    names = sorted(m.name for m in health.voters)
    return timed({**doc, "voters_after": voters, "members_after": names}, "check_size", started)


# ---- the end ----------------------------------------------------------------------------------


def _changes_text(doc: Document) -> str:
    lines = [
        f"  {'added' if c['kind'] == 'add' else 'removed'} {c['name']} ({c.get('id')}): {c['voters_after']} voters"
        for c in doc.get("changes") or []
    ]
    return "\n".join(lines) or "  none"


def notify_success(ctx: RunbookContext, doc: Document) -> Document:
    if doc.get("nothing_to_do"):
        subject = f"etcdops: {doc['cluster']} has {doc['size']} voting members already; nothing changed"
        body = f"Runbook {doc['execution']} found {doc['size']} voters and changed nothing."
    else:
        subject = f"etcdops: scaled {doc['cluster']} from {doc.get('voters_before')} to {doc['size']} voting members"
        body = (
            f"Runbook {doc['execution']} changed the membership one member at a time.\n"
            f"Backup taken or confirmed first: {doc.get('backup_id')}\nChanges:\n{_changes_text(doc)}\n"
            f"Members now: {', '.join(doc.get('members_after') or [])}\n"
            f"Stored endpoints now: {', '.join(doc.get('stored_endpoints') or []) or 'unchanged'}\n"
            f"Last step durations: {durations(doc)}"
        )
    return publish_success_once(ctx, doc, "scale-succeeded", subject, body)


def _where(ctx: RunbookContext, doc: Document, error: dict[str, Any]) -> str:
    """Where the cluster was left: the changes made, and the voters now (best effort)."""
    if error.get("Error") in ("ScaleRefusedError", "InvalidRunbookInputError", "LockHeldError", "PreflightFailedError"):
        return "Nothing was changed: the cluster has the same members as before."
    try:
        health = probe(ctx)
        now = f"{len(health.voters)} voters ({', '.join(m.label for m in health.voters)})"
        if health.learners:
            now += f" and learner {', '.join(m.label for m in health.learners)}"
    except EtcdopsError as exc:  # the report below must still go out
        now = f"unknown ({type(exc).__name__}: {exc})"
    stored = "unchanged"
    if doc.get("changes") or doc.get("current"):
        try:
            stored = ", ".join(members.record_membership_in_config(ctx))
        except EtcdopsError as exc:
            stored = f"NOT updated ({type(exc).__name__}: {exc})"
    return (
        f"Changes finished before it stopped:\n{_changes_text(doc)}\nThe change under way: {doc.get('current')}.\n"
        f"The cluster has {now}.\nStored endpoints: {stored}.\n"
        "No further membership change was made. Check `etcdops status` before starting ScaleCluster again."
    )


def notify_failure(ctx: RunbookContext, doc: Document) -> Document:
    """The Catch path: what failed and where the cluster was left; releases our lock."""
    error = dict(caught_and_released(ctx, doc))
    return publish_failure_once(
        ctx,
        doc,
        "scale-failed",
        f"etcdops: ScaleCluster FAILED for {doc.get('cluster')} (to {doc.get('size')} members)",
        f"Runbook {doc.get('execution')} stopped: {caught_error(error)}\n{_where(ctx, doc, error)}",
    )


STEPS: dict[str, Any] = {
    "AcquireLock": acquire_lock,
    "CheckScale": check_scale,
    "EnsureBackup": ensure_backup,
    "Preflight": preflight,
    "NextChange": pick_next_change,
    "LaunchMember": launch_member,
    "AddLearner": members.add_learner,
    "StartMember": members.start_new_member,
    "PromoteLearner": members.promote_learner,
    "RemoveLearner": members.remove_learner,
    "WaitUntilHealthy": wait_until_healthy,
    "RepointClients": repoint_clients,
    "RemoveMember": remove_member,
    "RetireHost": retire_host,
    "CheckSize": check_size,
    "ReleaseLock": release_lock,
    "NotifySuccess": notify_success,
    "NotifyFailure": notify_failure,
}


def run_step(ctx: RunbookContext, step: str, doc: Document) -> Document:
    return dispatch(STEPS, ctx, step, doc, ScaleDocument)
