"""A confirmed quorum loss: never a membership change, an escalation that says how to restore."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from etcdops.domain.decisions import Action, Decision, DeltaChainRef, History, Notification
from etcdops.domain.health import ClusterHealth
from etcdops.domain.policy.history import has_leader, healthy_voters
from etcdops.domain.policy.ids import incident_id, utc
from etcdops.domain.policy.notices import Failure


def escalation(
    cluster: str,
    observation: ClusterHealth,
    history: History,
    ec2_failures: frozenset[int],
    failed_voters: list[Failure],
    now: datetime,
    notifications: tuple[Notification, ...],
) -> Decision:
    voters = observation.voters
    healthy = healthy_voters(observation, ec2_failures)
    if history.quorum_loss is not None:
        start = utc(history.quorum_loss.first_failed_at)
    elif failed_voters:
        start = failed_voters[0].first_failed_at
    else:
        start = now
    hosts_gone = any(m.id in ec2_failures for m in voters)
    mode = "new-hosts" if hosts_gone else "in-place"
    backup = history.latest_backup
    backup_id = backup.id if backup is not None else None
    chain = history.delta_chain
    restore_input: dict[str, str | bool | None] = (
        {"cluster": cluster, "latest": True, "mode": mode}
        if chain is not None
        else {"cluster": cluster, "backup_id": backup_id, "mode": mode}
    )
    why = "no leader" if not has_leader(observation) else "a leader is reported"
    down = [m.label for m in voters if m not in healthy]
    if voters and all(m.id == 0 for m in voters):
        why = (
            "no leader, and no known endpoint answered the member list (every member is down, or every "
            "stored endpoint is stale)"
        )
    option = " --mode new-hosts" if hosts_gone else ""
    backup_text = _delta_text(chain, now, option) if chain is not None else _backup_text(observation, history, option)
    reason = (
        f"Quorum lost on cluster {cluster}: {why}, {len(healthy)} of {len(voters)} voting members healthy "
        f"(quorum {observation.quorum})"
        + (f"; down: {', '.join(down)}" if down else "")
        + ". No automatic membership change is made. "
        + f"{backup_text} by starting RestoreCluster with input {_json_like(restore_input)} "
        + f"(mode {mode}: "
        + ("EC2 reports member hosts gone" if hosts_gone else "the member hosts are still there")
        + "); it waits for a human approval."
    )
    return Decision(
        action=Action.ESCALATE_QUORUM_LOSS,
        reason=reason,
        cluster=cluster,
        incident_id=incident_id(cluster, "quorum-loss", start),
        notifications=notifications,
        backup_id=backup_id,
        restore_input=restore_input,
    )


def _delta_text(chain: DeltaChainRef, now: datetime, option: str) -> str:
    """The escalation's sentence when a delta chain covers the cluster: the point-in-time restore ``--latest``."""
    age = max(0, round((utc(now) - utc(chain.updated_at)).total_seconds()))
    return (
        f"A delta chain covers this cluster (cluster id {chain.cluster_id}) up to revision {chain.last_revision}, "
        f"stored {utc(chain.updated_at).isoformat()} ({age} s before this round): restore to it with "
        f"`etcdops runbook start restore --latest{option}` (the newest full backup plus its deltas; on the one-minute "
        "delta schedule at most about 60 s of writes before the loss are lost), or"
    )


def _backup_text(observation: ClusterHealth, history: History, option: str) -> str:
    """The escalation's sentence on what to restore from (invariant 11: only this incarnation's backups count)."""
    backup = history.latest_backup
    if backup is not None:
        return (
            f"No delta chain covers this cluster: restore the full snapshot of the latest verified backup "
            f"{backup.id} (created {utc(backup.created_at).isoformat()}; the writes after it are lost) with "
            f"`etcdops runbook start restore --backup {backup.id}{option}`, or"
        )
    if history.backup_unknown is not None:
        return (
            f"The latest verified backup is UNKNOWN (the backup catalogue cannot be read: {history.backup_unknown}); "
            "find it with `etcdops backup list`. Restore"
        )
    if observation.cluster_id is None:
        return (
            "No backup can be named: no member answered, so the live cluster id is unknown and a backup counts "
            "only for the cluster incarnation it was taken of (invariant 11); choose one with `etcdops backup "
            "list`, which shows each backup's cluster id, and put its id in the input. Restore"
        )
    return (
        f"There is NO verified backup of this cluster incarnation (cluster id {observation.cluster_id:x}) to "
        "restore from; backups of an earlier cluster with the same name do not count. Restore"
    )


def _json_like(data: Mapping[str, str | bool | None]) -> str:
    inner = ", ".join(f'"{k}": ' + _json_value(v) for k, v in data.items())
    return "{" + inner + "}"


def _json_value(value: str | bool | None) -> str:
    if value is None:
        return "null"
    return ("true" if value else "false") if isinstance(value, bool) else f'"{value}"'
