"""The steps of the UpgradeCluster runbook: a rolling etcd upgrade, one member at a time.

The path and its gates come from :mod:`etcdops.domain.upgrade` (pure); this module observes the cluster and
drives the hosts. Every member goes the same way, followers first and the leader last (its leadership
moved away first): stop etcd, swap the binary (the host action ``swap-etcd-binary``), start etcd, wait
until it is healthy, caught up and reports the new version. A member is stopped only while every
other member is healthy (invariant 16: never two members down), and a member that does not come back
is rolled back to its old binary while the cluster still runs the old version (the rollback window).
(Over 400 lines: fifteen steps of one runbook, kept together as the state machine lists them.)

Every step converges when retried (invariant 7): the member order is recomputed from a fresh probe
(a member already on the target is done), stopping a stopped member, swapping to the binary it already
has and starting a running member change nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
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
    durations,
    ensure_backup,
    hand_leadership_on,
    locked,
    probe,
    publish_failure_once,
    publish_success_once,
    release_lock,
    require_configured_cluster,
    start_again,
    stop_for_restart,
    timed,
)
from etcdops.app.runbook import preflight as checks
from etcdops.domain.compute.base import Host, PreflightPlan
from etcdops.domain.errors import Backoff, EtcdopsError, UpgradeRefusedError
from etcdops.domain.health import ClusterHealth, MemberHealth
from etcdops.domain.runbook_documents import UpgradeDocument
from etcdops.domain.upgrade import (
    EtcdVersion,
    failure_report,
    plan_path,
    refusals,
    report,
    rollback_refusal,
    upgrade_order,
)

LOCK_LEASE_SECONDS = 3600
CATCH_UP_ENTRIES = 1000
"""A restarted member counts as caught up when its raft index is this close to the leader's."""
ROLLBACK_WAIT_SECONDS = 90.0


class MemberDidNotStartError(RunbookError):
    """The member's etcd stopped again right after its start on the new binary: it is rolled back."""


class MemberVersionError(RunbookError):
    """The member came back, but not on the version the upgrade installed: it is rolled back."""


class RollbackFailedError(RunbookError):
    """A member could not be brought back on its old binary; it is down and a human must look."""


_WAIT = Backoff(interval_seconds=2, max_attempts=30, rate=1.0)
STEP_RETRY: dict[str, dict[type[EtcdopsError], Backoff]] = {
    "WaitMemberUpgraded": {ClusterNotReadyError: _WAIT},
    "CheckClusterVersion": {ClusterNotReadyError: _WAIT},
}
"""Steps that wait longer than the default (a member catching up; the leader moving the cluster version)."""


def _target(doc: Document) -> EtcdVersion:
    version = EtcdVersion.parse(str(doc.get("version") or ""))
    if version is None:
        raise UpgradeRefusedError([f"unknown version {doc.get('version')!r}: expected MAJOR.MINOR.PATCH, e.g. 3.5.30"])
    return version


def _line(version: str | None) -> tuple[int, int] | None:
    parsed = EtcdVersion.parse(version or "")
    return parsed.line if parsed else None


def _host(ctx: RunbookContext, name: str) -> Host:
    host = ctx.compute.find(name)
    if host is None:
        raise RunbookError(f"member {name} has no host any more; nothing further was changed")
    return host


def _seconds_since(ctx: RunbookContext, stamp: str | None) -> float | None:
    return round((ctx.now() - datetime.fromisoformat(stamp)).total_seconds(), 1) if stamp else None


# ---- before the first change ------------------------------------------------------------------


def acquire_lock(ctx: RunbookContext, doc: Document) -> Document:
    """Invariant 2: one operation at a time, the same lock as ReplaceMember and RestoreCluster."""
    require_configured_cluster(ctx.config, doc)
    return locked(ctx, doc, LOCK_LEASE_SECONDS)


def check_path(ctx: RunbookContext, doc: Document) -> Document:
    """Every member healthy, no alarms, and a path :func:`etcdops.domain.upgrade.plan_path` allows; records the
    members' versions (the report's "before") and what the approval message says."""
    started = time.monotonic()
    target = _target(doc)
    health = probe(ctx)
    reasons = refusals(health)
    if reasons:
        raise UpgradeRefusedError(reasons)
    with ctx.client() as client:
        auth = client.auth_enabled()
    path = plan_path([m.version for m in health.members], str(target), auth_enabled=auth)
    if path.gates:
        raise UpgradeRefusedError(
            [
                f"{path.source} -> {target} needs {gate.check}; etcdops cannot check that on the hosts yet"
                for gate in path.gates
            ]
        )
    members = {m.name: {"id": f"{m.id:x}", "before": m.version} for m in health.members}
    leader = health.member(health.leader or 0)
    listed = ", ".join(f"{name} ({member['before']})" for name, member in sorted(members.items()))
    summary = (
        f"Upgrade etcd cluster {doc['cluster']} from {path.source} to {target} ({path.kind} upgrade), one member "
        f"at a time, the leader ({leader.name if leader else '?'}) last; each member is stopped for a few seconds "
        f"while the others serve. Members: {listed}."
    )
    return timed(
        {
            **doc,
            "from_version": str(path.source),
            "path": path.kind,
            "nothing_to_do": path.kind == "none",
            "members": members,
            "cluster_version_before": health.cluster_version,
            "requires_approval": asks_a_human(ctx, doc),
            "approval_summary": summary,
            "upgraded": doc.get("upgraded") or [],
        },
        "check_path",
        started,
    )


def preflight(ctx: RunbookContext, doc: Document) -> Document:
    """Invariant 13: the host commands, every member host, the binaries of the new and the old version
    on each, the backup and the lock, all before the first member is stopped."""
    started = time.monotonic()
    names = sorted(doc["members"])
    plan = PreflightPlan(documents=("StopEtcd", "SwapEtcdBinary", "StartEtcd"), commanded=tuple(names))
    why = "relies on it should an upgraded member lose its data"
    findings = checks.plan_findings(ctx, doc, plan, lease_seconds=LOCK_LEASE_SECONDS, why=why)
    old = sorted({str(m["before"]) for m in doc["members"].values()} - {str(_target(doc))})
    findings += checks.binary_findings(ctx.compute, names, [str(_target(doc)), *old])
    return checks.passed(ctx, doc, "UpgradeCluster", findings, started)


# ---- member by member -------------------------------------------------------------------------


def next_member(ctx: RunbookContext, doc: Document) -> Document:
    """The next member to upgrade from a fresh probe (learners, followers, the leader last), or done."""
    target = _target(doc)
    health = probe(ctx)
    reasons = refusals(health)
    if reasons:
        raise ClusterNotReadyError("not upgrading the next member while " + "; ".join(reasons))
    order = upgrade_order(health, target)
    if not order:
        return {**doc, "done": True, "current": None}
    member = order[0]
    current = {
        "name": member.name,
        "id": f"{member.id:x}",
        "before": member.version,
        "was_leader": member.id == health.leader,
        "started_at": ctx.now().isoformat(),
    }
    return {**doc, "done": False, "current": current}


def _upgraded_first(target: EtcdVersion) -> Callable[[MemberHealth], object]:
    """Leadership goes to a member already on the target version first."""
    return lambda m: (EtcdVersion.parse(m.version or "") != target, m.name)


def move_leadership(ctx: RunbookContext, doc: Document) -> Document:
    """The member to upgrade hands its leadership on first, so the cluster elects once, on purpose."""
    current = dict(doc["current"])
    member_id = int(current["id"], 16)
    moved = hand_leadership_on(ctx, probe(ctx), member_id, _upgraded_first(_target(doc)))
    if moved:
        current["leadership_moved_to"] = moved
    health = probe(ctx)
    if health.leader == member_id and len(health.voters) > 1:
        raise ClusterNotReadyError(f"member {current['name']} still leads after the leadership transfer")
    return {**doc, "current": current}


def stop_member(ctx: RunbookContext, doc: Document) -> Document:
    current = dict(doc["current"])
    stop_for_restart(ctx, _host(ctx, current["name"]), int(current["id"], 16), _upgraded_first(_target(doc)))
    current.setdefault("stopped_at", ctx.now().isoformat())
    return {**doc, "current": current}


def swap_binary(ctx: RunbookContext, doc: Document) -> Document:
    current = doc["current"]
    ctx.compute.run_action("swap-etcd-binary", [_host(ctx, current["name"])], {"version": str(_target(doc))})
    return doc


def _start(ctx: RunbookContext, host: Host, doc: Document) -> None:
    start_again(ctx, host, alone=len(doc.get("members") or {}) == 1)


def start_member(ctx: RunbookContext, doc: Document) -> Document:
    _start(ctx, _host(ctx, doc["current"]["name"]), doc)
    return doc


def _member_state(ctx: RunbookContext, name: str, member_id: int) -> tuple[ClusterHealth, MemberHealth]:
    """The member healthy and caught up on a fresh probe, else ClusterNotReadyError (or MemberDidNotStartError
    when its etcd is not even running)."""
    host = _host(ctx, name)
    if host.state == "stopped":
        raise MemberDidNotStartError(f"etcd of member {name} stopped again right after its start")
    health = probe(ctx)
    member = health.member(member_id)
    leader = health.member(health.leader or 0)
    if member is None or not member.healthy or leader is None:
        raise ClusterNotReadyError(f"member {name} is not healthy yet ({member.error if member else 'not listed'})")
    lag = (leader.raft_index or 0) - (member.raft_index or 0)
    if lag > CATCH_UP_ENTRIES:
        raise ClusterNotReadyError(f"member {name} is {lag} raft entries behind the leader")
    return health, member


def wait_member_upgraded(ctx: RunbookContext, doc: Document) -> Document:
    """Healthy, caught up and on the new version; the cluster version stays the old one while mixed."""
    if not doc.get("current"):
        return doc  # a retry after this step finished: the member is in the report already
    current = dict(doc["current"])
    target = _target(doc)
    health, member = _member_state(ctx, current["name"], int(current["id"], 16))
    if EtcdVersion.parse(member.version or "") != target:
        raise MemberVersionError(f"member {current['name']} came back on etcd {member.version}, not {target}")
    entry = {
        "name": current["name"],
        "id": current["id"],
        "before": current["before"],
        "after": member.version,
        "was_leader": current["was_leader"],
        "leadership_moved_to": current.get("leadership_moved_to"),
        "seconds": _seconds_since(ctx, current.get("started_at")),
        "down_seconds": _seconds_since(ctx, current.get("stopped_at")),
        "cluster_version": health.cluster_version,
    }
    upgraded = [u for u in doc.get("upgraded") or [] if u["name"] != current["name"]] + [entry]
    return {**doc, "upgraded": upgraded, "current": None}


def roll_back_member(ctx: RunbookContext, doc: Document) -> Document:
    """The member that failed goes back to its old binary and is started again; the cluster stays mixed
    and the runbook ends failed. Converges: a member already back, healthy, on its old version is left."""
    current = dict(doc.get("current") or {})
    if not current.get("name"):
        return doc  # failed before a member was picked: nothing to roll back
    name, member_id, before = current["name"], int(current["id"], 16), str(current["before"])
    health = probe(ctx)
    member = health.member(member_id)
    if not (member and member.healthy and member.version == before):
        refusal = rollback_refusal(name, before, str(_target(doc)), health.cluster_version)
        if refusal:
            raise RollbackFailedError(refusal)
        host = _host(ctx, name)
        ctx.compute.stop_etcd(host)
        ctx.compute.run_action("swap-etcd-binary", [host], {"version": before})
        _start(ctx, host, doc)
        _wait_back(ctx, name, member_id, before)
    current["rolled_back_to"] = before
    current["seconds"] = _seconds_since(ctx, current.get("started_at"))
    return {**doc, "current": current}


def _wait_back(ctx: RunbookContext, name: str, member_id: int, before: str) -> None:
    deadline = time.monotonic() + ROLLBACK_WAIT_SECONDS
    while True:
        try:
            _, member = _member_state(ctx, name, member_id)
            if member.version == before:
                return
            problem = f"it reports {member.version}"
        except (ClusterNotReadyError, MemberDidNotStartError, EtcdopsError) as exc:
            if isinstance(exc, MemberDidNotStartError):
                raise RollbackFailedError(f"member {name} did not start on its old binary {before} either") from None
            problem = str(exc)
        if time.monotonic() >= deadline:
            raise RollbackFailedError(f"member {name} is not healthy on {before} after the rollback: {problem}")
        ctx.sleep(1.0)


def check_cluster_version(ctx: RunbookContext, doc: Document) -> Document:
    """Every member on the target and the cluster version moved to its minor (the leader decides it)."""
    started = time.monotonic()
    target = _target(doc)
    health = probe(ctx)
    behind = [m.label for m in health.members if EtcdVersion.parse(m.version or "") != target]
    if behind or _line(health.cluster_version) != target.line:
        raise ClusterNotReadyError(
            f"cluster version {health.cluster_version}, members not on {target}: {', '.join(behind) or 'none'}"
        )
    return timed({**doc, "cluster_version_after": health.cluster_version}, "check_cluster_version", started)


def notify_success(ctx: RunbookContext, doc: Document) -> Document:
    if doc.get("nothing_to_do"):
        subject = f"etcdops: {doc['cluster']} runs etcd {doc['version']} already; nothing upgraded"
        body = f"Runbook {doc['execution']} found every member on {doc['version']} and changed nothing."
    else:
        subject = f"etcdops: upgraded {doc['cluster']} from etcd {doc.get('from_version')} to {doc['version']}"
        body = (
            f"Runbook {doc['execution']} upgraded every member, the leader last.\n"
            f"Backup taken or confirmed first: {doc.get('backup_id')}\n{report(doc)}\nStep durations: {durations(doc)}"
        )
    return publish_success_once(ctx, doc, "upgrade-succeeded", subject, body)


def notify_failure(ctx: RunbookContext, doc: Document) -> Document:
    """The Catch path: what failed, the state the cluster was left in with the report; releases our lock."""
    error = caught_and_released(ctx, doc)
    return publish_failure_once(
        ctx,
        doc,
        "upgrade-failed",
        f"etcdops: UpgradeCluster FAILED for {doc.get('cluster')} (to etcd {doc.get('version')})",
        f"Runbook {doc.get('execution')} stopped: {caught_error(error)}\n{failure_report(doc)}",
    )


STEPS: dict[str, Any] = {
    "AcquireLock": acquire_lock,
    "CheckPath": check_path,
    "EnsureBackup": ensure_backup,
    "Preflight": preflight,
    "NextMember": next_member,
    "MoveLeadership": move_leadership,
    "StopMember": stop_member,
    "SwapBinary": swap_binary,
    "StartMember": start_member,
    "WaitMemberUpgraded": wait_member_upgraded,
    "RollBackMember": roll_back_member,
    "CheckClusterVersion": check_cluster_version,
    "ReleaseLock": release_lock,
    "NotifySuccess": notify_success,
    "NotifyFailure": notify_failure,
}


def run_step(ctx: RunbookContext, step: str, doc: Document) -> Document:
    return dispatch(STEPS, ctx, step, doc, UpgradeDocument)
