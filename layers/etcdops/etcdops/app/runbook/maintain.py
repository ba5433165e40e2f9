"""The steps of the MaintainCluster runbook: compaction, defragmentation by rule, NOSPACE recovery.

The rules come from :mod:`etcdops.domain.maintenance` (pure); this module observes the cluster and acts.
Routine maintenance runs only on a fully healthy cluster (every member answered, a leader, no alarm):
otherwise it is skipped with its reasons and nothing changes. With the NOSPACE alarm raised (and nothing
else wrong) it recovers: compact, defragment every member, disarm only when every member is below
``nospace_disarm_ratio`` of the quota, else it fails with each member's numbers (an escalation).

Defragmentation goes one member at a time (invariant 17: a member is defragmented only while every other member is
healthy), learners and followers first, the leader last after its leadership moved to a member already
done. Every step converges when retried (invariant 7): the next member comes from a fresh probe and the
list of members done; a defragmented member is not defragmented again; compacting to a revision that is
compacted already counts as done; disarming a cleared alarm changes nothing.
"""

from __future__ import annotations

import time
from typing import Any

from etcdops.app.runbook import (
    ClusterNotReadyError,
    Document,
    RunbookContext,
    RunbookError,
    asks_a_human,
    caught_and_released,
    caught_error,
    dispatch,
    locked,
    publish_failure_once,
    publish_success_once,
    release_lock,
    require_configured_cluster,
    timed,
)
from etcdops.app.runbook import probe as probe_round
from etcdops.domain.errors import Backoff, EtcdopsError, EtcdRequestError
from etcdops.domain.health import ClusterHealth, discount_alarm_reports
from etcdops.domain.maintenance import (
    EXTERNAL_COMPACTOR_KEY,
    DefragRule,
    compaction_plan,
    defrag_order,
    defrag_verdict,
    disarm_verdict,
)
from etcdops.domain.runbook_documents import MaintainDocument
from etcdops.domain.wording import count

LOCK_LEASE_SECONDS = 3600
CATCH_UP_ENTRIES = 1000
DEFRAG_TIMEOUT_SECONDS = 300.0


class NospaceNotClearedError(RunbookError):
    """After compaction and defragmentation a member is still too close to its quota: the alarm stays
    armed and a human must free space (delete data) or raise the quota. The message has the numbers."""


_WAIT = Backoff(interval_seconds=1, max_attempts=60, rate=1.0)
STEP_RETRY: dict[str, dict[type[EtcdopsError], Backoff]] = {
    "NextMember": {ClusterNotReadyError: _WAIT},
    "WaitMemberReady": {ClusterNotReadyError: _WAIT},
}
"""Steps that wait longer than the default (a member catching up after its defragmentation)."""


def probe(ctx: RunbookContext) -> ClusterHealth:
    """A fresh probe round; members whose only trouble is that their status lists the cluster's alarms count
    as serving (the alarms themselves are in ``health.alarms``: NOSPACE is recovered, any other skips)."""
    return discount_alarm_reports(probe_round(ctx))


def _nospace(health: ClusterHealth) -> bool:
    return any(a.alarm.upper() == "NOSPACE" for a in health.alarms)


def _not_ready(health: ClusterHealth) -> list[str]:
    """Why the cluster is not fully healthy (a NOSPACE alarm is what recovery is for: not a reason)."""
    reasons = [f"member {m.label} is unhealthy: {m.error or 'no answer'}" for m in health.members if not m.healthy]
    if not health.leader:
        reasons.append("no leader")
    reasons += [
        f"alarm {a.alarm} is raised on member {a.member_id:x}" for a in health.alarms if a.alarm.upper() != "NOSPACE"
    ]
    reasons += list(health.errors)
    return reasons


def _rule(ctx: RunbookContext) -> DefragRule:
    m = ctx.config.maintenance
    return DefragRule(min_fragmented_ratio=m.defrag_min_fragmented_ratio, min_db_bytes=m.defrag_min_db_bytes)


# ---- before the first change ------------------------------------------------------------------


def acquire_lock(ctx: RunbookContext, doc: Document) -> Document:
    """Invariant 2: one operation at a time, the same lock as the other runbooks."""
    require_configured_cluster(ctx.config, doc)
    return locked(ctx, doc, LOCK_LEASE_SECONDS)


def assess(ctx: RunbookContext, doc: Document) -> Document:
    """Routine or NOSPACE recovery, or skipped (with every reason) when the cluster is not fully healthy."""
    started = time.monotonic()
    health = probe(ctx)
    reasons = _not_ready(health)
    if reasons:
        return timed({**doc, "skipped": reasons, "mode": "skipped"}, "assess", started)
    nospace = _nospace(health)
    verdicts = [defrag_verdict(m, _rule(ctx), nospace=nospace) for m in health.members]
    mode = "nospace" if nospace else "routine"
    quota = ctx.config.health.quota_backend_bytes
    summary = (
        f"{'Recover' if nospace else 'Maintain'} etcd cluster {doc['cluster']}"
        f"{' from NOSPACE' if nospace else ''}: compact (keeping {ctx.config.maintenance.retention_revisions} "
        f"revisions), defragment {'every member' if nospace else 'the members the rule picks'} one at a time, "
        f"the leader last (each member blocks while it is defragmented); quota {quota} bytes.\n"
        + "\n".join(r for v in verdicts for r in v.reasons)
    )
    return timed(
        {
            **doc,
            "mode": mode,
            "skipped": [],
            "requires_approval": asks_a_human(ctx, doc),
            "approval_summary": summary,
            "predicted": {v.member: v.reclaimable_bytes for v in verdicts if v.defragment},
            "defragmented": doc.get("defragmented") or [],
            "pause_seconds": round(ctx.config.maintenance.pause_between_members_seconds),  # a Wait takes whole seconds
        },
        "assess",
        started,
    )


def compact(ctx: RunbookContext, doc: Document) -> Document:
    """Compact to the retention revision, unless another client (Kubernetes) compacts and there is space."""
    started = time.monotonic()
    nospace = doc.get("mode") == "nospace"
    with ctx.client() as client:
        revision = client.status().revision
        external = client.get(EXTERNAL_COMPACTOR_KEY) is not None
        plan = compaction_plan(
            revision, ctx.config.maintenance.retention_revisions, external_compactor=external, nospace=nospace
        )
        outcome = plan.reason
        if plan.revision is not None:
            try:
                client.compact(plan.revision, physical=True, timeout=DEFRAG_TIMEOUT_SECONDS)
            except EtcdRequestError as exc:
                if "compacted" not in str(exc):
                    raise
                outcome = f"{plan.reason}: compacted to or past it already"
    compaction = {"revision": plan.revision, "at_revision": revision, "external": external, "outcome": outcome}
    return timed({**doc, "compaction": doc.get("compaction") or compaction}, "compact", started)


# ---- member by member -------------------------------------------------------------------------


def next_member(ctx: RunbookContext, doc: Document) -> Document:
    """The next member to defragment from a fresh probe, or done. Only while every member is healthy."""
    health = probe(ctx)
    reasons = _not_ready(health)
    if reasons:
        raise ClusterNotReadyError("not defragmenting the next member while " + "; ".join(reasons))
    done = {d["name"] for d in doc.get("defragmented") or []}
    nospace = doc.get("mode") == "nospace"
    due = {
        v.member: v
        for v in (defrag_verdict(m, _rule(ctx), nospace=nospace) for m in health.members)
        if v.defragment and v.member not in done
    }
    order = defrag_order(health, list(due))
    if not order:
        return {**doc, "done": True, "current": None}
    member = next(m for m in health.members if m.name == order[0])
    current = {
        "name": member.name,
        "id": f"{member.id:x}",
        "endpoint": member.client_urls[0],
        "was_leader": member.id == health.leader,
        "before": member.db_size,
        "in_use_before": member.db_size_in_use,
        "predicted": due[member.name].reclaimable_bytes,  # what the rule expects back: size - in use
    }
    return {**doc, "done": False, "current": current, "first": not done}


def move_leadership(ctx: RunbookContext, doc: Document) -> Document:
    """The member about to be defragmented hands its leadership on (to a member done already, if any)."""
    current = dict(doc["current"])
    member_id = int(current["id"], 16)
    health = probe(ctx)
    if health.leader != member_id:
        return {**doc, "current": current}
    others = [m for m in health.healthy_voters if m.id != member_id]
    if not others:
        return {**doc, "current": current}  # one member: it leads throughout
    done = {d["name"] for d in doc.get("defragmented") or []}
    target = sorted(others, key=lambda m: (m.name not in done, m.name))[0]
    with ctx.client() as client:
        client.move_leader(target.id)
    if probe(ctx).leader == member_id:
        raise ClusterNotReadyError(f"member {current['name']} still leads after the leadership transfer")
    current["leadership_moved_to"] = target.name
    return {**doc, "current": current}


def defragment(ctx: RunbookContext, doc: Document) -> Document:
    """Defragment the current member (it blocks while this runs); a retry after it finished does nothing."""
    current = dict(doc["current"])
    if current.get("defragmented_at"):
        return doc
    started = time.monotonic()
    with ctx.client() as client:
        client.defragment(current["endpoint"], timeout=DEFRAG_TIMEOUT_SECONDS)
    current["seconds"] = round(time.monotonic() - started, 3)
    current["defragmented_at"] = ctx.now().isoformat()
    return {**doc, "current": current}


def wait_member_ready(ctx: RunbookContext, doc: Document) -> Document:
    """The member defragmented is healthy and caught up again; its numbers go into the report."""
    if not doc.get("current"):
        return doc  # a retry after this step finished
    current = dict(doc["current"])
    health = probe(ctx)
    member = health.member(int(current["id"], 16))
    leader = health.member(health.leader or 0)
    if member is None or not member.healthy or leader is None or member.db_size is None:
        raise ClusterNotReadyError(f"member {current['name']} is not healthy yet after its defragmentation")
    lag = (leader.raft_index or 0) - (member.raft_index or 0)
    if lag > CATCH_UP_ENTRIES:
        raise ClusterNotReadyError(f"member {current['name']} is {lag} raft entries behind the leader")
    entry = {**current, "after": member.db_size, "returned": int(current["before"] or 0) - member.db_size}
    done = [d for d in doc.get("defragmented") or [] if d["name"] != current["name"]] + [entry]
    return {**doc, "defragmented": done, "current": None}


# ---- after the members ------------------------------------------------------------------------


def disarm(ctx: RunbookContext, doc: Document) -> Document:
    """NOSPACE recovery: disarm only when every member is below the ratio of the quota, else escalate."""
    started = time.monotonic()
    health = probe(ctx)
    if not _nospace(health):
        return timed({**doc, "disarmed": doc.get("disarmed") or []}, "disarm", started)
    quota = ctx.config.health.quota_backend_bytes
    verdict = disarm_verdict(health, quota, ctx.config.maintenance.nospace_disarm_ratio)
    if not verdict.disarm:
        raise NospaceNotClearedError(
            f"NOSPACE left armed: {', '.join(verdict.over)} at or above {verdict.limit_bytes} bytes "
            f"({ctx.config.maintenance.nospace_disarm_ratio:.0%} of the {quota}-byte quota) after compaction and "
            "defragmentation; delete data or raise --quota-backend-bytes. " + "; ".join(verdict.numbers)
        )
    disarmed: list[str] = []
    with ctx.client() as client:
        for alarm in health.alarms:
            if alarm.alarm.upper() == "NOSPACE":
                client.disarm(alarm)
                disarmed.append(f"{alarm.member_id:x}")
    return timed({**doc, "disarmed": disarmed, "sizes_after": list(verdict.numbers)}, "disarm", started)


def report(doc: Document) -> str:
    """What the runbook did, member by member, for the messages."""
    compaction = doc.get("compaction") or {}
    lines = [f"Compaction: {compaction.get('outcome', 'not reached')}"]
    for d in doc.get("defragmented") or []:
        lines.append(
            f"  {d['name']}{' (was leader)' if d.get('was_leader') else ''}: {d['before']} -> {d['after']} bytes "
            f"(predicted to give back {d.get('predicted')}), blocked {d.get('seconds')} s"
        )
    if doc.get("current"):
        lines.append(f"  {doc['current']['name']}: in progress when it stopped")
    return "\n".join(lines)


def notify_success(ctx: RunbookContext, doc: Document) -> Document:
    if doc.get("mode") == "skipped":
        return doc
    recovered = doc.get("mode") == "nospace"
    defragmented = count(len(doc.get("defragmented") or []), "member")
    subject = (
        f"etcdops: {doc['cluster']} recovered from NOSPACE; writes accepted again"
        if recovered
        else f"etcdops: maintained {doc['cluster']} ({defragmented} defragmented)"
    )
    body = f"Runbook {doc['execution']} finished.\n{report(doc)}"
    if recovered:
        body += "\nAlarm disarmed; sizes: " + "; ".join(doc.get("sizes_after") or [])
    return publish_success_once(ctx, doc, "maintain-succeeded", subject, body)


def notify_failure(ctx: RunbookContext, doc: Document) -> Document:
    """The Catch path: what failed and the report; releases our lock."""
    error = caught_and_released(ctx, doc)
    return publish_failure_once(
        ctx,
        doc,
        "maintain-failed",
        f"etcdops: MaintainCluster FAILED for {doc.get('cluster')}",
        f"Runbook {doc.get('execution')} stopped: {caught_error(error)}\n{report(doc)}",
    )


STEPS: dict[str, Any] = {
    "AcquireLock": acquire_lock,
    "Assess": assess,
    "Compact": compact,
    "NextMember": next_member,
    "MoveLeadership": move_leadership,
    "Defragment": defragment,
    "WaitMemberReady": wait_member_ready,
    "Disarm": disarm,
    "ReleaseLock": release_lock,
    "NotifySuccess": notify_success,
    "NotifyFailure": notify_failure,
}


def run_step(ctx: RunbookContext, step: str, doc: Document) -> Document:
    return dispatch(STEPS, ctx, step, doc, MaintainDocument)
