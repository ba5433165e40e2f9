"""``backup import``: an ``etcdctl snapshot save`` file, checked, encrypted and catalogued like our own backups.

On the checked-in snapshot files (tests/data); the restore of an imported file written by a real
``etcdctl`` on another cluster is tests/integration/test_restore_steps.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import builders
import pytest
from test_backup_store import file_store, local_key  # noqa: F401 - fixtures

from etcdops.adapters.backup.crypto import KeyProvider
from etcdops.adapters.backup.store import FileStore
from etcdops.app.backup import importer
from etcdops.app.backup.catalogue import newest_verified, read_catalogue
from etcdops.app.backup.importer import import_snapshot
from etcdops.app.backup.verify import fetch_backup, verify_backup
from etcdops.domain.backup.errors import BackupIntegrityError
from etcdops.domain.config import parse_config
from etcdops.domain.errors import SnapshotIntegrityError, UsageError

DATA = Path(__file__).parent.parent / "data"
SNAPSHOT = DATA / "bbolt-etcd35.snap"
OTHER = DATA / "bbolt-etcd34.snap"  # the same size, another database
CONFIG = parse_config(
    {"name": "prod", "endpoints": ["http://127.0.0.1:1"], "plaintext": True,
     "backup": {"destination": "file:///unused", "encryption_key": "file:///unused.key", "compression": "zstd"}}
)  # fmt: skip


def test_an_imported_file_is_a_verified_backup_that_says_where_it_came_from(
    file_store: FileStore, local_key: KeyProvider, tmp_path: Path  # noqa: F811
) -> None:
    # Given an etcdctl snapshot file
    snap = tmp_path / "cron-2026-12-01.db"
    shutil.copy(SNAPSHOT, snap)

    # When it is imported, with the cluster id the operator knows
    result = import_snapshot(CONFIG, file_store, local_key, snap, source_cluster_id="ABC123")

    # Then its manifest is a verified backup of this cluster that says it was imported, from which
    # cluster, with the file's revision and key count (tests/data/bbolt-expected.json)
    m = result.manifest
    assert m.verified and m.cluster_name == "prod" and m.compression == "zstd"
    assert (m.revision, m.total_keys, m.snapshot_hash) == (79, 56, 2226255521)
    assert m.imported is not None and m.imported.file == "cron-2026-12-01.db"
    assert m.cluster_id == m.imported.source_cluster_id == "abc123"
    assert [b.id for b in read_catalogue(file_store).backups] == [m.id]
    # it is not the live incarnation's backup of any other cluster id (restored only when named)
    assert newest_verified(file_store, "abc123") == m and newest_verified(file_store, "def") is None
    # and it decrypts back to exactly the file
    assert verify_backup(file_store, local_key, m.id, cluster="prod").summary.total_keys == 56
    fetch_backup(file_store, local_key, m.id, tmp_path / "back.db", cluster="prod")
    assert (tmp_path / "back.db").read_bytes() == SNAPSHOT.read_bytes()


def test_without_a_source_cluster_id_the_backup_belongs_to_no_incarnation(
    file_store: FileStore, local_key: KeyProvider  # noqa: F811
) -> None:
    m = import_snapshot(CONFIG, file_store, local_key, SNAPSHOT).manifest
    assert m.cluster_id == "0" and m.imported is not None and m.imported.source_cluster_id is None
    with pytest.raises(UsageError, match="not a cluster id"):
        import_snapshot(CONFIG, file_store, local_key, SNAPSHOT, source_cluster_id="zz")


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda: SNAPSHOT.read_bytes()[:-100], "leaves no sha256 trailer"),
        # whole pages and a trailer that matches nothing
        (lambda: SNAPSHOT.read_bytes()[: 4096 * 3 + 32], "not imported: "),
        (lambda: builders.snapshot_file_damaged(SNAPSHOT, retrailer=False), "sha256 mismatch"),
        (lambda: builders.snapshot_file_damaged(SNAPSHOT, retrailer=True), "meta page 0: checksum mismatch"),
        (lambda: b"", "leaves no sha256 trailer"),
    ],
    ids=["truncated", "cut-at-a-page", "corrupt", "tampered", "empty"],
)
def test_a_bad_file_is_refused_in_one_line_and_nothing_is_stored(
    make: object, says: str, file_store: FileStore, local_key: KeyProvider, tmp_path: Path  # noqa: F811
) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(make())  # type: ignore[operator]
    with pytest.raises(SnapshotIntegrityError, match=says) as caught:
        import_snapshot(CONFIG, file_store, local_key, bad)
    assert "\n" not in str(caught.value) and str(bad) in str(caught.value)
    assert file_store.list() == []


def test_a_file_that_changes_between_the_check_and_the_upload_leaves_nothing(
    file_store: FileStore, local_key: KeyProvider, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    # Given a file checked as it was, then replaced by another snapshot of the same size
    snap = tmp_path / "moving.db"
    shutil.copy(SNAPSHOT, snap)
    checked = importer.check_snapshot_file(snap)
    shutil.copy(OTHER, snap)
    monkeypatch.setattr(importer, "check_snapshot_file", lambda _path: checked)

    # When it is imported, the upload compares what it reads with what was checked and fails
    with pytest.raises(BackupIntegrityError, match="sha256"):
        import_snapshot(CONFIG, file_store, local_key, snap)

    # Then neither an object nor a manifest is left
    assert file_store.list() == []
