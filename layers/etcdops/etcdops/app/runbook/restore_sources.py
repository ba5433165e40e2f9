"""Where a restore's data comes from besides the verified backup it decrypts: an EBS volume backup
(whose snapshot the new data volumes are made from, :func:`volume_source`, part of ValidateBackup),
and the deltas replayed after the backup for a point in time (:func:`replay`, the ReplayDeltas step).
Split out of :mod:`etcdops.app.runbook.restore`, which runs both."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from etcdops.app.backup.replay import choice_of, replay_deltas, restore_offset
from etcdops.app.runbook import InvalidRunbookInputError
from etcdops.app.runbook import timed as _timed
from etcdops.app.runbook.restore_report import target_hosts
from etcdops.domain.backup.errors import BackupNotFoundError
from etcdops.domain.backup.manifest import VolumeSnapshotRecord

if TYPE_CHECKING:
    from etcdops.app.runbook.restore import Document, RestoreContext


def volume_source(
    ctx: RestoreContext, doc: Document, record: VolumeSnapshotRecord, live: str | None, old_hosts: list[dict[str, str]]
) -> Document:
    """The volume backup ``record`` as the restore's source: one snapshot of this cluster, completed. Its
    bytes stay in EBS, so nothing about them is checked here: the approval says so, and the hosts restore
    it with ``--skip-hash-check``; the restored cluster's revision is checked against the one observed."""
    if record.cluster_name != ctx.config.name:
        raise InvalidRunbookInputError(
            f"volume backup {record.id} is of cluster {record.cluster_name!r}, not {ctx.config.name!r}"
        )
    snapshots = list(record.volume.snapshot_ids)
    if len(snapshots) != 1:
        raise InvalidRunbookInputError(
            f"volume backup {record.id} has {len(snapshots)} snapshots ({', '.join(snapshots) or 'none'}): "
            "RestoreCluster restores from one data volume; restore this one by hand (README: Volume backups)"
        )
    problem = ctx.compute.volume_snapshot_problem(snapshots[0])
    if problem:
        raise BackupNotFoundError(f"volume backup {record.id}: {problem}")
    return {
        **doc,
        "backup_id": record.id,
        "backup_created_at": record.created_at.isoformat(),
        "backup_revision": record.volume.revision_observed,
        "backup_total_keys": None,
        "backup_keys": None,
        "pitr": None,
        "backup_etcd_version": record.etcd_version,
        "backup_cluster_id": record.cluster_id,
        "backup_imported_from": None,
        "live_cluster_id": live,
        "old_hosts": old_hosts,
        "reason": doc.get("reason") or "requested by an operator",
        "volume_source": {"snapshot_id": snapshots[0], "member": record.member_name},
    }


def replay(ctx: RestoreContext, doc: Document) -> Document:
    """Point in time: the deltas after the backup, one transaction per original revision up to the
    target, the revision checked after each (invariant 19); nothing to do for a backup alone. A rerun
    continues where the restored cluster's revision says the last one stopped."""
    pitr = doc.get("pitr")
    if not pitr:
        return doc
    started = time.monotonic()
    store, keyring = ctx.backup_target()
    choice = choice_of(store, pitr)
    with ctx.client([t["client_url"] for t in target_hosts(doc)]) as client:
        current = client.range(b"\0", count_only=True).revision
        offset = restore_offset(current, pitr, int(doc.get("bump_revision") or 0))
        report = replay_deltas(client, store, keyring, choice, cluster=ctx.config.name, offset=offset)
    before = doc.get("replayed") or {}  # a rerun adds what it replayed to what the run before it did
    replayed = {
        "revision": choice.target_revision + offset,
        "offset": offset,
        "revisions": int(before.get("revisions", 0)) + report.revisions,
        "unleased": sorted({*before.get("unleased", []), *report.unleased})[:20],
        "unleased_count": int(before.get("unleased_count", 0)) + report.unleased_count,
    }
    return _timed({**doc, "replayed": replayed}, "replay", started)
