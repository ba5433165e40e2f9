"""The catalogue of a backup store: which backups it holds, and what else it holds that is not one.

Read so that one bad document stops nothing: a manifest that cannot be parsed (or vanished between
the listing and the read) is reported as *corrupt* and skipped, never fatal to a listing, a backup
run or retention; its snapshot object is left in place, since nobody can tell unread what it is. A
snapshot object without any manifest is an *orphan* (a run that failed between the object and its
manifest, e.g. a disk full): it is reported, never counted as a backup, and removed by retention
once older than the grace period. Only the top level of the store is the catalogue: the
RestoreCluster runbook stages its files below it (``restore/...``) and owns them.

:func:`newest_verified` is the one query for "the newest verified backup of this cluster
incarnation" (invariant 11): EnsureBackup, HealthCheck (escalations and the backup age metric) and
RestoreCluster's default all ask it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from etcdops.adapters.backup.store import BackupStore
from etcdops.app.probe import probe_cluster
from etcdops.domain.backup.chain import FullBackupRef, deltas_to_delete
from etcdops.domain.backup.delta import (
    DELTA_MANIFEST_SUFFIX,
    DELTA_OBJECT_SUFFIX,
    DELTA_PREFIX,
    DeltaManifest,
    delta_id_from_key,
    delta_manifest_key,
    delta_object_key,
)
from etcdops.domain.backup.errors import (
    BackupIntegrityError,
    BackupNotFoundError,
    DeltaFormatError,
    ManifestMismatchError,
)
from etcdops.domain.backup.manifest import (
    DRILL_PREFIX,
    VOLUME_PREFIX,
    DrillRecord,
    Manifest,
    VolumeSnapshotRecord,
    backup_id_from_manifest_key,
    backup_id_from_object_key,
    backup_id_time,
    check_backup_id,
    cluster_id_text,
    drill_key,
    manifest_key,
    object_key,
    volume_record_key,
)
from etcdops.domain.backup.retention import BackupRef, RetentionPolicy, plan_orphans, plan_retention

if TYPE_CHECKING:
    from etcdops.adapters.etcd.client import EtcdClient

log = logging.getLogger("etcdops.adapters.backup")

#: What makes one manifest unreadable without the store being at fault: its content is not a valid
#: manifest of that id, or it was deleted between the listing and the read.
UNREADABLE = (BackupIntegrityError, BackupNotFoundError)


@dataclass(frozen=True)
class CorruptManifest:
    id: str
    key: str
    error: str


@dataclass(frozen=True)
class Orphan:
    id: str
    key: str
    created_at: datetime  # when the run that wrote it started (from the id)


@dataclass(frozen=True)
class Catalogue:
    uri: str
    backups: list[Manifest]  # every backup with a readable manifest, oldest first
    corrupt: list[CorruptManifest] = field(default_factory=list)
    orphans: list[Orphan] = field(default_factory=list)

    def warnings(self) -> list[str]:
        """One line per thing in the store that is not a usable backup."""
        return [
            *(
                f"manifest {c.key} cannot be read ({c.error}): backup {c.id} is skipped and left in place; "
                "repair or remove it by hand"
                for c in self.corrupt
            ),
            *(
                f"{o.key} is an orphan: a snapshot object without a manifest (the run of "
                f"{o.created_at.isoformat()} failed before writing it); it is not a backup, and retention "
                "removes it after the grace period"
                for o in self.orphans
            ),
        ]


@dataclass(frozen=True)
class RetentionOutcome:
    deleted: list[str]  # backups deleted by the policy
    orphans_removed: list[str]
    warnings: list[str]  # what the catalogue holds that is not a backup
    deltas_deleted: list[str] = field(default_factory=list)  # deltas no kept backup needs, delta orphans


def _top_level_ids(keys: list[str], parse: Callable[[str], str | None]) -> set[str]:
    return {i for key in keys if "/" not in key and (i := parse(key)) is not None}


def read_catalogue(store: BackupStore) -> Catalogue:
    """Every backup, corrupt manifest and orphan at the top level of ``store``. Store errors
    (permissions, a failing service) are raised: they say nothing about any one backup."""
    keys = store.list()
    manifest_ids = _top_level_ids(keys, backup_id_from_manifest_key)
    object_ids = _top_level_ids(keys, backup_id_from_object_key)
    backups: list[Manifest] = []
    corrupt: list[CorruptManifest] = []
    for backup_id in sorted(manifest_ids):
        try:
            backups.append(load_manifest(store, backup_id))
        except UNREADABLE as exc:
            corrupt.append(CorruptManifest(backup_id, manifest_key(backup_id), f"{type(exc).__name__}: {exc}"))
    orphans = [Orphan(i, object_key(i), backup_id_time(i)) for i in sorted(object_ids - manifest_ids)]
    return Catalogue(store.uri, sorted(backups, key=lambda m: (m.created_at, m.id)), corrupt, orphans)


def list_backups(store: BackupStore) -> list[Manifest]:
    """Every backup with a readable manifest, oldest first (corrupt manifests are skipped)."""
    return read_catalogue(store).backups


def load_manifest(store: BackupStore, backup_id: str) -> Manifest:
    check_backup_id(backup_id)
    key = manifest_key(backup_id)
    if not store.exists(key):
        if store.exists(object_key(backup_id)):
            raise BackupNotFoundError(
                f"{backup_id} is not a backup: its snapshot object {store.uri_for(object_key(backup_id))} has no "
                "manifest (an orphan of a run that failed before writing it); retention removes it after the "
                "grace period"
            )
        raise BackupNotFoundError(f"no backup {backup_id} in {store.uri}")
    manifest = Manifest.from_json(store.get_bytes(key), source=store.uri_for(key))
    if manifest.id != backup_id:
        raise ManifestMismatchError(f"manifest {key} describes backup {manifest.id}, not {backup_id}")
    return manifest


def live_cluster_id(client: EtcdClient, deadline: float) -> str | None:
    """The id of the cluster incarnation the members reached through ``client`` answer with, as
    manifests write it (None when no member says); what :func:`newest_verified` is asked for."""
    return cluster_id_text(probe_cluster(client, deadline=deadline).cluster_id)


def newest_verified(store: BackupStore, cluster_id: str | None) -> Manifest | None:
    """The newest verified full backup of the cluster incarnation ``cluster_id`` (hex, as manifests
    write it), or None: with the live id unknown no backup counts (invariant 11). Manifests are read
    from the newest down (ids sort by time); a corrupt one is logged and skipped. Volume backups never
    answer it: they are restored only when an operator names one."""
    if not cluster_id:
        return None
    keys = store.list()
    for backup_id in sorted(_top_level_ids(keys, backup_id_from_manifest_key), reverse=True):
        try:
            manifest = load_manifest(store, backup_id)
        except UNREADABLE as exc:
            log.warning("skipping backup %s: its manifest cannot be read: %s", backup_id, exc)
            continue
        if manifest.kind == "full" and manifest.is_verified_backup_of(cluster_id):
            return manifest
    return None


def _drill_records(store: BackupStore, *, newest_first: bool = False) -> Iterator[DrillRecord]:
    """The restore drill records in the order of their ids (their times); one that cannot be read is
    logged and skipped."""
    keys = [k for k in store.list(DRILL_PREFIX) if k.endswith(".json") and "/" not in k[len(DRILL_PREFIX) :]]
    for key in sorted(keys, reverse=newest_first):
        try:
            yield DrillRecord.from_json(store.get_bytes(key), source=store.uri_for(key))
        except UNREADABLE as exc:
            log.warning("skipping drill record %s: %s", key, exc)


def read_drills(store: BackupStore) -> list[DrillRecord]:
    """Every restore drill record, oldest first; one that cannot be read is logged and skipped."""
    return list(_drill_records(store))


def restore_drill_age(store: BackupStore, now: datetime) -> float | None:
    """Seconds since the newest drill that restored its backup. While no drill ever did: since the
    oldest backup in the catalogue was taken (for that long backups went unproven, so a fresh
    catalogue gets the time a first weekly drill needs). None when the catalogue holds no backup."""
    for record in _drill_records(store, newest_first=True):
        if record.restorable:
            return max(0.0, (now - record.finished_at).total_seconds())
    for backup_id in sorted(_top_level_ids(store.list(), backup_id_from_manifest_key)):
        try:
            manifest = load_manifest(store, backup_id)
        except UNREADABLE as exc:
            log.warning("skipping backup %s: its manifest cannot be read: %s", backup_id, exc)
            continue
        return max(0.0, (now - manifest.created_at).total_seconds())
    return None


def read_volume_records(store: BackupStore) -> list[VolumeSnapshotRecord]:
    """Every volume backup the compute provider keeps (EBS snapshots), oldest first; one that cannot be
    read is logged and skipped."""
    records: list[VolumeSnapshotRecord] = []
    for key in sorted(store.list(VOLUME_PREFIX)):
        if not key.endswith(".json") or "/" in key[len(VOLUME_PREFIX) :]:
            continue
        try:
            records.append(VolumeSnapshotRecord.from_json(store.get_bytes(key), source=store.uri_for(key)))
        except UNREADABLE as exc:
            log.warning("skipping volume record %s: %s", key, exc)
    return records


def load_volume_record(store: BackupStore, backup_id: str) -> VolumeSnapshotRecord | None:
    """The record of the provider-kept volume backup ``backup_id``, or None when there is none of that id."""
    key = volume_record_key(backup_id)
    if not store.exists(key):
        return None
    return VolumeSnapshotRecord.from_json(store.get_bytes(key), source=store.uri_for(key))


def record_volume(store: BackupStore, record: VolumeSnapshotRecord) -> None:
    """Write a provider-kept volume backup's record (never overwritten)."""
    store.put_bytes(volume_record_key(record.id), record.to_json())


def drill_results(records: list[DrillRecord]) -> dict[str, DrillRecord]:
    """The newest drill of each backup that was drilled."""
    return {r.backup_id: r for r in records if r.backup_id is not None}


def record_drill(store: BackupStore, record: DrillRecord) -> None:
    """Write a drill's record once (a retried step finds it written)."""
    key = drill_key(record.drill_id)
    if not store.exists(key):
        store.put_bytes(key, record.to_json())


def apply_retention(
    store: BackupStore,
    policy: RetentionPolicy,
    now: datetime,
    *,
    live_cluster_id: str | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> RetentionOutcome:
    """Delete the backups the policy no longer keeps and the orphans past the grace period. A corrupt
    manifest is reported in ``warnings`` and its backup left alone."""
    catalogue = read_catalogue(store)
    drills = read_drills(store)
    drilled = drill_results(drills)
    refs = [
        BackupRef(
            m.id, m.created_at, m.verified, m.cluster_id, drilled[m.id].restorable if m.id in drilled else None, m.kind
        )
        for m in catalogue.backups
    ]
    plan = plan_retention(refs, now, policy, live_cluster_id=live_cluster_id)
    for backup_id in plan.delete:
        log(f"retention: deleting {backup_id} ({plan.reasons.get(backup_id, 'not needed')})")
        # the object first: a manifest without its object would be a backup that cannot restore
        store.delete(object_key(backup_id))
        store.delete(manifest_key(backup_id))
    for record in drills:  # the drills of deleted backups say nothing any more
        if record.backup_id in plan.delete:
            store.delete(drill_key(record.drill_id))
    removed = plan_orphans([(o.id, o.created_at) for o in catalogue.orphans], now, policy.orphan_grace)
    for orphan_id in removed:
        log(f"retention: removing the orphan object {object_key(orphan_id)} (no manifest, older than the grace period)")
        store.delete(object_key(orphan_id))
    warnings = [w for w in catalogue.warnings() if not any(w.startswith(object_key(i)) for i in removed)]
    kept = [m for m in catalogue.backups if m.id not in plan.delete]
    deltas_deleted = prune_deltas(store, kept, now, policy.orphan_grace, log)
    return RetentionOutcome(plan.delete, removed, warnings, deltas_deleted)


# ---- deltas (issue 16) -----------------------------------------------------------------------------


@dataclass(frozen=True)
class DeltaCatalogue:
    deltas: list[DeltaManifest]  # readable manifests, by cluster and first revision
    corrupt: list[str] = field(default_factory=list)  # "key: why" of manifests that cannot be read
    orphans: list[str] = field(default_factory=list)  # ids of objects without a manifest (lost races, crashes)
    missing: list[str] = field(default_factory=list)  # ids of manifests without their object (a deleted delta)


def load_delta_manifest(store: BackupStore, delta_id: str) -> DeltaManifest:
    key = delta_manifest_key(delta_id)
    if not store.exists(key):
        raise BackupNotFoundError(f"no delta {delta_id} in {store.uri}")
    manifest = DeltaManifest.from_json(store.get_bytes(key), source=store.uri_for(key))
    if manifest.id != delta_id:
        raise DeltaFormatError(f"manifest {key} describes delta {manifest.id}, not {delta_id}")
    return manifest


def read_delta_catalogue(store: BackupStore) -> DeltaCatalogue:
    """Every delta under ``deltas/`` with a readable manifest, and what else is there."""
    keys = store.list(DELTA_PREFIX)
    manifests = {i for k in keys if (i := delta_id_from_key(k, DELTA_MANIFEST_SUFFIX))}
    objects = {i for k in keys if (i := delta_id_from_key(k, DELTA_OBJECT_SUFFIX))}
    deltas, corrupt = [], []
    for delta_id in sorted(manifests):
        try:
            deltas.append(load_delta_manifest(store, delta_id))
        except UNREADABLE as exc:
            corrupt.append(f"{delta_manifest_key(delta_id)}: {exc}")
    deltas.sort(key=lambda m: (m.cluster_id, m.first_revision, m.id))
    return DeltaCatalogue(deltas, corrupt, sorted(objects - manifests), sorted(manifests - objects))


def delete_delta(store: BackupStore, delta_id: str) -> None:
    """The object first: a manifest without its object would be a delta that cannot be read."""
    store.delete(delta_object_key(delta_id))
    store.delete(delta_manifest_key(delta_id))


def prune_deltas(
    store: BackupStore, kept: list[Manifest], now: datetime, grace: timedelta, log: Callable[[str], None]
) -> list[str]:
    """Delete the deltas no kept verified backup needs (``chain.deltas_to_delete``) and delta objects
    without a manifest older than ``grace``; the ids deleted."""
    catalogue = read_delta_catalogue(store)
    refs = [FullBackupRef(m.id, m.cluster_id, m.revision, m.created_at, m.verified) for m in kept if m.verified]
    unneeded = deltas_to_delete(catalogue.deltas, refs)
    for delta_id in unneeded:
        log(f"retention: deleting delta {delta_id} (no kept backup needs it)")
        delete_delta(store, delta_id)
    orphans = plan_orphans([(i, backup_id_time(i)) for i in catalogue.orphans], now, grace)
    for orphan_id in orphans:
        log(f"retention: removing the orphan delta object {delta_object_key(orphan_id)}")
        store.delete(delta_object_key(orphan_id))
    return [*unneeded, *orphans]
