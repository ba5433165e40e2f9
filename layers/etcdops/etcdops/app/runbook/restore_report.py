"""What RestoreCluster tells people (the approval summary, the start, success and failure reports) and
the names of what it leaves behind (the staged snapshot's keys), from its document alone."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from etcdops.app.runbook import Document, caught_error, execution_tail

STAGING_PREFIX = "restore"


def target_hosts(doc: Document) -> list[dict[str, str]]:
    return list(doc.get("targets") or [])


def no_default_backup(uri: str, live: str | None) -> str:
    if live is None:
        return (
            "no member answered, so the live cluster id is unknown and no backup counts as this cluster's "
            "(invariant 11): name the backup to restore in the input's backup_id (`etcdops backup list` shows "
            "each backup's cluster id)"
        )
    return (
        f"no verified backup of the live cluster incarnation (cluster id {live}) in {uri}; a backup of an earlier "
        "cluster with the same name is restored only when named in the input's backup_id (`etcdops backup list` "
        "marks them)"
    )


def _incarnation_note(doc: Document) -> str:
    """What the approver must know when the backup is not of the cluster that runs now."""
    backup, live = doc.get("backup_cluster_id"), doc.get("live_cluster_id")
    imported = doc.get("backup_imported_from")
    if imported:
        source = f"cluster id {backup}" if backup and backup != "0" else "a cluster whose id the file does not record"
        return (
            f" NOTE: backup {doc.get('backup_id')} was IMPORTED from the snapshot file {imported} (taken of {source}, "
            "outside etcdops). It was named on purpose; its data replaces the live cluster's entirely."
        )
    if backup is None or backup == live:
        return ""
    if live is None:
        return (
            f" The live cluster id is unknown (no member answered); backup {doc.get('backup_id')} was taken of "
            f"cluster id {backup}: make sure it is this cluster's."
        )
    return (
        f" NOTE: backup {doc.get('backup_id')} was taken of ANOTHER incarnation of cluster {doc.get('cluster')} "
        f"(cluster id {backup}; the live cluster id is {live}). It was named on purpose; its data replaces the "
        "live cluster's entirely."
    )


def _large_transaction_note(pitr: Mapping[str, Any]) -> str:
    """When one replayed revision holds more changes than etcd's default --max-txn-ops (a lease revoked with
    many keys is one revision): the members start with the limit raised for the replay, and keep it."""
    from etcdops.app.backup.replay import ETCD_DEFAULT_MAX_TXN_OPS, replay_start_flags

    flags = replay_start_flags(pitr)
    if not flags:
        return ""
    revision = (pitr.get("largest") or [0, 0])[0]
    return (
        f"NOTE: revision {revision} has {flags['max-txn-ops']} changes, more than etcd's default --max-txn-ops "
        f"({ETCD_DEFAULT_MAX_TXN_OPS}): the restored members start with --max-txn-ops={flags['max-txn-ops']} so that "
        "it is replayed as one transaction, and keep that limit until each one's next start. "
    )


def _lost_note(doc: Document) -> str:
    """What the restore brings back beyond the backup (a point in time), and what is lost."""
    pitr = doc.get("pitr")
    if not pitr:
        return "Everything written after the backup is lost."
    leased = int(pitr.get("leased_puts") or 0)
    return (
        _large_transaction_note(pitr)
        + f"Then {pitr['revisions']} revisions ({pitr['events']} changes) of {len(pitr['deltas'])} deltas are replayed "
        f"on it, one transaction per revision, up to revision {pitr['target_revision']} (the newest delta used was "
        f"made {pitr.get('last_delta_at') or 'with the backup'}): the cluster will hold {pitr['expected_keys']} keys. "
        "Everything written after that revision is lost."
        + (
            f" {leased} replayed writes had a lease: they are written without one (the leases are not in the "
            "deltas), and listed when the restore ends."
            if leased
            else ""
        )
    )


def approval_summary(doc: Document) -> str:
    """What the approver reads: the backup, what will be stopped, and what happens to revisions."""
    names = ", ".join(h["name"] for h in doc.get("old_hosts") or []) or "none"
    bump = int(doc.get("bump_revision") or 0)
    where = (
        "on the existing hosts"
        if doc.get("mode") == "in-place"
        else "onto freshly launched hosts (the load balancer is repointed to them)"
    )
    revision_note = (
        f"Revisions: where the hosts' etcdutl supports --bump-revision and --mark-compacted (etcd 3.6, 3.5.10+) "
        f"the revision is raised by {bump:,} and old watches are cancelled as compacted. With older etcd "
        f"(3.4, 3.5 before 3.5.10) the cluster restarts at revision {doc.get('backup_revision')}, lower than "
        "clients may have seen: watchers and caches (Kubernetes informers) can miss changes until they re-list; "
        "the runbook restarts the API servers, scheduler, controller manager and kubelets for that reason, "
        "and other etcd clients must be restarted by hand."
        if bump
        else f"Revisions: not bumped (bump_revision 0): the cluster restarts at revision {doc.get('backup_revision')}; "
        "restart every etcd client that watches."
    )
    volume = doc.get("volume_source")
    keys = f"{doc.get('backup_keys')} keys" if not volume else "keys not counted"
    return (
        f"Restore cluster {doc.get('cluster')} from backup {doc.get('backup_id')} taken {doc.get('backup_created_at')} "
        f"(revision {'at least ' if volume else ''}{doc.get('backup_revision')}, {keys}, "
        f"etcd {doc.get('backup_etcd_version')}), {_volume_note(doc)}"
        f"{where}. Will stop: the Kubernetes API servers, then etcd on {names}. The restored cluster has "
        f"{len(doc.get('old_hosts') or [])} members. Every member's data directory is "
        f"replaced by the snapshot; the old ones are kept (suffix .{doc.get('old_data_suffix')}). "
        f"{_lost_note(doc)}{_incarnation_note(doc)} {revision_note}"
    )


def _volume_note(doc: Document) -> str:
    volume = doc.get("volume_source")
    if not volume:
        return ""
    return (
        f"a VOLUME BACKUP: EBS snapshot {volume['snapshot_id']} of member {volume.get('member')}'s data volume, "
        "whose bytes etcdops never read, so nothing in it was verified beforehand; each host gets a new volume of "
        "it in its own zone and restores its database with --skip-hash-check (a copy has no hash to check), "
    )


def staged_keys(doc: Document) -> tuple[str, str]:
    """The staging keys of this execution: the plain snapshot, and the preflight's write probe."""
    return f"{STAGING_PREFIX}/{execution_tail(doc)}.snapshot", f"{STAGING_PREFIX}/{execution_tail(doc)}.preflight"


def replayed_note(doc: Document) -> str:
    replayed, pitr = doc.get("replayed"), doc.get("pitr")
    if not replayed or not pitr:
        return ""
    unleased, raised = replayed.get("unleased") or [], doc.get("start_flags") or []
    more = int(replayed.get("unleased_count") or 0) - len(unleased)
    return (
        f" and its deltas at revision {pitr['target_revision']} (now {replayed['revision']}, "
        f"{pitr['revisions']} revisions replayed)"
        + (
            f"; written without their lease: {', '.join(unleased)}" + (f" and {more} more" if more > 0 else "")
            if unleased
            else ""
        )
        + (f"; the members run with {' '.join(raised)} until their next start" if raised else "")
    )


def failure_report(doc: Document) -> str:
    """The exact state the cluster was left in and the manual next step, from what the steps recorded."""
    error = doc.get("error") or {}
    lines = [f"Runbook {doc.get('execution')} stopped: {caught_error(error)}"]
    cleanup = doc.get("cleanup_error")
    if cleanup:
        lines.append(
            f"The plain snapshot this runbook staged could NOT be removed ({caught_error(cleanup)}): delete "
            f"{' and '.join(staged_keys(doc))} under the staging location by hand (the staging bucket's "
            "lifecycle expires it within a day)."
        )
    early = _stopped_early(doc, error)
    return "\n".join(lines + (early if early is not None else _left_halfway(doc)))


def _stopped_early(doc: Document, error: Mapping[str, Any]) -> list[str] | None:
    """What to say when the runbook failed before any data directory could have changed (or after it all
    worked), else None."""
    suffix = doc.get("old_data_suffix")
    lines: list[str] = []
    if doc.get("apiservers_started"):
        lines.append(
            f"The restore from {doc.get('backup_id')} was verified and the API servers run again. "
            + (
                "Only the final bookkeeping failed."
                if doc.get("control_plane_restarted")
                else "Restart kube-scheduler, kube-controller-manager and the kubelets by hand (RestartControlPlane)."
            )
            + f" The old data directories are kept (suffix .{suffix}); delete them once you are satisfied."
        )
        return lines
    if not doc.get("apiservers_stopped") and not doc.get("preflight"):
        # before the preflight passed nothing is stopped (the first stop comes after it)
        lines.append("Nothing was stopped or changed: etcd and the API servers run as before.")
        if error.get("Error") == "PreflightFailedError":
            lines.append("Fix what the preflight found, then start RestoreCluster again.")
        return lines
    if not doc.get("apiservers_stopped"):
        lines.append(
            "The runbook failed while stopping the API servers: some of them may be stopped. etcd was not stopped "
            "and no data changed. Next: start the API servers again (StartApiServer), then find the cause."
        )
        return lines
    if not doc.get("etcd_stopped") and not doc.get("restored"):
        lines.append(
            "API servers: stopped. The runbook failed while stopping etcd: some members may be stopped; no data "
            "changed. Next: start etcd again on the stopped members (StartEtcd with existing), then the API servers."
        )
        return lines
    return None


def _left_halfway(doc: Document) -> list[str]:
    """What was stopped, launched, restored and started, and how to roll back, once data may have changed."""
    suffix = doc.get("old_data_suffix")
    targets = [t["name"] for t in target_hosts(doc)]
    lines: list[str] = []
    lines.append(
        f"API servers: {'stopped' if doc.get('apiservers_stopped') else 'possibly stopped'}; "
        f"{'started again' if doc.get('apiservers_started') else 'NOT started again'}."
    )
    lines.append(f"etcd stopped on: {', '.join(doc.get('etcd_stopped') or []) or 'possibly some members'}.")
    if doc.get("launched"):
        lines.append(f"Fresh hosts launched: {', '.join(doc['launched'])}.")
    restored = list((doc.get("restored") or {}).keys())
    lines.append(
        f"Data directories restored from {doc.get('backup_id')}: {', '.join(restored) or 'none confirmed'}"
        + ("" if doc.get("restored") else f" (a restore of {', '.join(targets)} may have been under way)")
        + "."
    )
    lines.append(f"Members started: {', '.join(doc.get('members_started') or []) or 'none'}.")
    lines.append(
        f"Old data directories are kept, never deleted: each restored member's data directory was renamed with "
        f"the suffix .{suffix} (AWS: <data-dir>/member.{suffix}; local stack: members/<name>/data.{suffix})."
    )
    if doc.get("mode") == "new-hosts":
        lines.append(
            "Roll back: stop etcd on the fresh hosts; the old hosts' data directories were not touched: start etcd on "
            f"the old hosts that remain ({', '.join(doc.get('etcd_stopped') or []) or 'none'}) "
            "and start the API servers."
        )
    else:
        lines.append(
            f"Roll back on each member: stop etcd; move the restored data directory away and the one with suffix "
            f".{suffix} back to its place; start etcd (with the old cluster token); then start the API servers "
            "(StartApiServer) and restart the control plane. Or fix the cause and start RestoreCluster again."
        )
    lines.append("Check `etcdops status` before acting.")
    return lines
