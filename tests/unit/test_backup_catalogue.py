"""The catalogue of a backup store (a directory here; no etcd): incarnations, corrupt manifests,
orphan objects, and retention that meets all of them (invariants 9 and 11)."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_backup_manifest import fields
from test_backup_store import any_store, aws, file_store, s3, s3_store  # noqa: F401 - the stores, as fixtures
from test_retention import policies

from etcdops.adapters.backup.store import BackupStore, FileStore
from etcdops.app.backup.catalogue import (
    apply_retention,
    drill_results,
    load_manifest,
    newest_verified,
    read_catalogue,
    read_drills,
    record_drill,
    restore_drill_age,
)
from etcdops.domain.backup.errors import BackupNotFoundError
from etcdops.domain.backup.manifest import DRILL_PREFIX, DrillRecord, Manifest, drill_key, manifest_key, object_key
from etcdops.domain.backup.retention import BackupRef, RetentionPolicy, plan_retention

NOW = datetime(2026, 11, 25, 20, 30, tzinfo=UTC)
LIVE, OLD = "c1", "a0"  # the live cluster's id, and that of an earlier cluster with the same name


def backup_id(at: datetime, n: int) -> str:
    return f"{at:%Y%m%dT%H%M%SZ}-{n:06x}"


def put_backup(
    store: BackupStore, at: datetime, n: int, *, cluster_id: str = LIVE, verified: bool = True, volume: bool = False
) -> Manifest:
    bid = backup_id(at, n)
    manifest = Manifest(
        **fields(
            id=bid,
            uri=store.uri_for(object_key(bid)),
            cluster_id=cluster_id,
            created_at=at,
            verified=verified,
            verified_at=at if verified else None,
            kind="volume" if volume else "full",
            volume={"provider": "local", "revision_observed": 1} if volume else None,
        )
    )
    store.put_bytes(object_key(bid), b"ciphertext")
    store.put_bytes(manifest_key(bid), manifest.to_json())
    return manifest


def put_corrupt(store: BackupStore, at: datetime, n: int) -> str:
    bid = backup_id(at, n)
    store.put_bytes(object_key(bid), b"ciphertext")
    store.put_bytes(manifest_key(bid), b'{"format_version": 1, "id": "' + bid.encode() + b'", "trunc')
    return bid


def put_orphan(store: BackupStore, at: datetime, n: int) -> str:
    bid = backup_id(at, n)
    store.put_bytes(object_key(bid), b"ciphertext")  # the run failed before its manifest
    return bid


# ---- examples ---------------------------------------------------------------------------------


def drilled(store: BackupStore, backup: Manifest, at: datetime, n: int, *, restorable: bool) -> DrillRecord:
    record = DrillRecord(
        drill_id=backup_id(at, n), execution=f"drill-{n}", backup_id=backup.id, restorable=restorable,
        started_at=at, finished_at=at + timedelta(seconds=9), seconds=9.0, error=None if restorable else "no",
    )  # fmt: skip
    record_drill(store, record)
    record_drill(store, record)  # a retried step writes it once
    return record


def test_drill_records_are_read_kept_beside_their_backups_and_go_with_them(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    old = put_backup(store, NOW - timedelta(days=60), 1)
    proven = put_backup(store, NOW - timedelta(days=50), 2)
    newest = put_backup(store, NOW - timedelta(hours=2), 3)
    drilled(store, old, NOW - timedelta(days=59), 10, restorable=True)
    drilled(store, proven, NOW - timedelta(days=49), 11, restorable=False)
    last = drilled(store, proven, NOW - timedelta(days=48), 12, restorable=True)
    store.put_bytes(f"{DRILL_PREFIX}{backup_id(NOW, 13)}.json", b"{not json")  # skipped, never fatal

    # the newest drill of each backup is its result; drill records are not backups
    assert drill_results(read_drills(store)) == {old.id: drill_results(read_drills(store))[old.id], proven.id: last}
    assert [b.id for b in read_catalogue(store).backups] == [old.id, proven.id, newest.id]

    # retention keeps the newest backup a drill restored, deletes the older one and its drill record
    outcome = apply_retention(store, RetentionPolicy(), NOW, live_cluster_id=LIVE)
    assert outcome.deleted == [old.id]
    assert not store.exists(drill_key(backup_id(NOW - timedelta(days=59), 10)))
    assert [r.backup_id for r in read_drills(store)] == [proven.id, proven.id]
    assert newest.id in [b.id for b in read_catalogue(store).backups]


def test_the_restore_drill_age_counts_from_the_newest_good_drill_else_from_the_oldest_backup(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    assert restore_drill_age(store, NOW) is None  # no backup: nothing to have drilled
    put_corrupt(store, NOW - timedelta(days=30), 0)  # unreadable: skipped
    first = put_backup(store, NOW - timedelta(days=20), 1)
    put_backup(store, NOW - timedelta(days=1), 2)
    assert restore_drill_age(store, NOW) == timedelta(days=20).total_seconds()  # never proven: since the first

    drilled(store, first, NOW - timedelta(days=10), 10, restorable=True)
    drilled(store, first, NOW - timedelta(days=3), 11, restorable=False)  # a failed drill proves nothing
    store.put_bytes(f"{DRILL_PREFIX}{backup_id(NOW, 12)}.json", b"{not json")
    assert restore_drill_age(store, NOW) == (timedelta(days=10) - timedelta(seconds=9)).total_seconds()


def test_only_a_backup_of_the_live_incarnation_counts(tmp_path: Path) -> None:
    # Given backups of this cluster, a newer one of an earlier cluster with the same name, a newer
    # unverified one, and a newest manifest that is corrupt
    store = FileStore(tmp_path)
    mine = put_backup(store, NOW - timedelta(hours=3), 1)
    old = put_backup(store, NOW - timedelta(hours=2), 2, cluster_id=OLD)
    put_backup(store, NOW - timedelta(hours=1), 3, verified=False)
    put_corrupt(store, NOW, 4)

    # Then the newest verified backup is the one of the incarnation asked about, and none when the
    # live id is unknown
    assert newest_verified(store, LIVE) == mine
    assert newest_verified(store, OLD) == old
    assert newest_verified(store, None) is None
    assert newest_verified(store, "ff") is None


def test_a_volume_backup_is_never_the_newest_verified_backup_and_is_pruned_among_its_kind(tmp_path: Path) -> None:
    # Given a full backup two days old and volume backups since, the newest a moment ago
    store = FileStore(tmp_path)
    full = put_backup(store, NOW - timedelta(days=2), 1)
    volumes = [put_backup(store, NOW - timedelta(hours=h), 10 + h, volume=True) for h in (1, 30, 40)]
    # Then invariant 5's and a restore's default backup is the full one
    assert newest_verified(store, LIVE) == full
    # and retention keeps the full backup, the newest volume backup and the volume backup of each past day
    outcome = apply_retention(store, RetentionPolicy(daily_days=2), NOW, live_cluster_id=LIVE)
    assert outcome.deleted == [volumes[2].id]
    assert [m.id for m in read_catalogue(store).backups] == [full.id, volumes[1].id, volumes[0].id]


def test_the_catalogue_reports_corrupt_manifests_and_orphans_and_leaves_restore_staging_alone(
    any_store: BackupStore,  # noqa: F811 - the fixture imported above
) -> None:
    store = any_store  # a directory, and an S3 prefix (moto)
    good = put_backup(store, NOW - timedelta(hours=5), 1)
    corrupt = put_corrupt(store, NOW - timedelta(hours=4), 2)
    other = put_backup(store, NOW - timedelta(hours=3), 3)
    swapped = backup_id(NOW - timedelta(hours=2), 4)  # a manifest that describes another backup
    store.put_bytes(manifest_key(swapped), other.to_json())
    orphan = put_orphan(store, NOW - timedelta(hours=1), 5)
    store.put_bytes("restore/abc123.snapshot", b"staged by RestoreCluster, not ours")

    catalogue = read_catalogue(store)

    assert [m.id for m in catalogue.backups] == [good.id, other.id]
    assert [c.id for c in catalogue.corrupt] == [corrupt, swapped]
    assert "ManifestInvalidError" in catalogue.corrupt[0].error
    assert "ManifestMismatchError" in catalogue.corrupt[1].error
    assert [(o.id, o.created_at) for o in catalogue.orphans] == [(orphan, NOW - timedelta(hours=1))]
    warnings = catalogue.warnings()
    assert len(warnings) == 3 and all(corrupt in w or swapped in w or orphan in w for w in warnings)
    assert not any("restore/" in w for w in warnings)


def test_an_orphan_is_not_a_backup_and_says_so(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    orphan = put_orphan(store, NOW, 1)
    with pytest.raises(BackupNotFoundError, match="orphan"):
        load_manifest(store, orphan)
    with pytest.raises(BackupNotFoundError, match="no backup"):
        load_manifest(store, backup_id(NOW, 2))


def test_retention_removes_orphans_after_the_grace_period_and_never_a_corrupt_backup(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    policy = RetentionPolicy(orphan_grace=timedelta(hours=24))
    young = put_orphan(store, NOW - timedelta(hours=23), 1)
    old = put_orphan(store, NOW - timedelta(hours=25), 2)
    corrupt = put_corrupt(store, NOW - timedelta(days=90), 3)
    ancient = put_backup(store, NOW - timedelta(days=80), 4, verified=False)
    put_backup(store, NOW - timedelta(hours=2), 5)

    outcome = apply_retention(store, policy, NOW, live_cluster_id=LIVE)

    assert outcome.orphans_removed == [old] and outcome.deleted == [ancient.id]
    assert not store.exists(object_key(old)) and store.exists(object_key(young))
    assert store.exists(object_key(corrupt)) and store.exists(manifest_key(corrupt))
    assert [w for w in outcome.warnings if corrupt in w] and [w for w in outcome.warnings if young in w]
    assert not [w for w in outcome.warnings if old in w]  # what was removed is not warned about


# ---- properties -------------------------------------------------------------------------------

KINDS = ("live", "live-unverified", "old", "old-unverified", "corrupt", "orphan")
# (age in minutes, kind): mostly the past 60 days, a few in the future (clock skew)
entries = st.lists(st.tuples(st.integers(-120, 60 * 24 * 60), st.sampled_from(KINDS)), max_size=20)
graces = st.integers(1, 72).map(lambda h: timedelta(hours=h))


@given(entries=entries, policy=policies, grace=graces)
def test_retention_never_deletes_beyond_the_policy_whatever_else_the_store_holds(
    entries: list[tuple[int, str]], policy: RetentionPolicy, grace: timedelta
) -> None:
    policy = policy.model_copy(update={"orphan_grace": grace})
    with tempfile.TemporaryDirectory() as tmp:
        store = FileStore(Path(tmp))
        valid: list[Manifest] = []
        corrupt: list[str] = []
        orphans: dict[str, datetime] = {}
        for n, (minutes, kind) in enumerate(entries):
            at = (NOW - timedelta(minutes=minutes)).replace(microsecond=0)
            if kind == "corrupt":
                corrupt.append(put_corrupt(store, at, n))
            elif kind == "orphan":
                orphans[put_orphan(store, at, n)] = at
            else:
                incarnation = LIVE if kind.startswith("live") else OLD
                valid.append(put_backup(store, at, n, cluster_id=incarnation, verified=not kind.endswith("unverified")))
        newest_live = newest_verified(store, LIVE)

        outcome = apply_retention(store, policy, NOW, live_cluster_id=LIVE)

        # the valid backups are deleted exactly as the policy says, as if nothing else were there
        refs = [BackupRef(m.id, m.created_at, m.verified, m.cluster_id) for m in valid]
        assert outcome.deleted == plan_retention(refs, NOW, policy, live_cluster_id=LIVE).delete
        kept = {m.id for m in valid} - set(outcome.deleted)
        assert {m.id for m in read_catalogue(store).backups} == kept
        # the newest verified backup of the live incarnation survives and still answers the query
        assert newest_verified(store, LIVE) == newest_live
        # a corrupt manifest and its object are left alone
        assert all(store.exists(manifest_key(c)) and store.exists(object_key(c)) for c in corrupt)
        # orphans go exactly once past the grace period
        assert outcome.orphans_removed == sorted(o for o, at in orphans.items() if NOW - at >= grace)
        assert all(store.exists(object_key(o)) != (o in outcome.orphans_removed) for o in orphans)
