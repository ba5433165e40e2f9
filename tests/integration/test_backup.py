"""Backups end to end on a real 3-member TLS cluster: file store with a local key, S3 + KMS via moto."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from etcdops.adapters.backup.keys import local_key_provider
from etcdops.adapters.backup.store import FileStore, open_store
from etcdops.adapters.backup.target import open_backup_target
from etcdops.app.backup.catalogue import list_backups, newest_verified, read_catalogue
from etcdops.app.backup.job import run_backup
from etcdops.app.backup.verify import fetch_backup, verify_backup
from etcdops.app.probe import probe_cluster
from etcdops.app.snapshot import save_snapshot
from etcdops.domain.backup.errors import BackupIntegrityError, BackupNotFoundError, DecryptionError, StoreFullError
from etcdops.domain.backup.manifest import MANIFEST_SUFFIX, cluster_id_text, manifest_key, object_key
from etcdops.domain.config import parse_config
from etcdops_local.cluster import EtcdBinaries, LocalCluster

pytestmark = pytest.mark.integration
MARKER = "plaintext-marker-7f3a"


def write_keys(cluster: LocalCluster, count: int = 200, size: int = 64) -> dict[bytes, bytes]:
    written = {}
    with cluster.client() as client:
        for i in range(count):
            key, value = f"/registry/secrets/{i:05d}".encode(), f"{MARKER}-{i}-".encode().ljust(size, b"x")
            client.put(key, value)
            written[key] = value
    return written


def backup(cluster: LocalCluster, **kwargs: Any):  # type: ignore[no-untyped-def]
    config = cluster.config()
    store, keyring = open_backup_target(config, create_local_key=True)
    with cluster.client() as client:
        health = probe_cluster(client)
        return run_backup(config, client, health, store, keyring, **kwargs), store, keyring


def restore_and_read(binaries: EtcdBinaries, snapshot: Path, workdir: Path) -> dict[bytes, bytes]:
    """Restore with etcd's own tool, start a plain single member on it, read every key back."""
    from etcdops_local.cluster import free_ports

    data_dir = workdir / "restored"
    tool = [str(binaries.etcdutl)] if binaries.etcdutl else [str(binaries.etcdctl)]
    subprocess.run(
        [*tool, "snapshot", "restore", str(snapshot), "--data-dir", str(data_dir)],
        check=True,
        capture_output=True,
        env={"ETCDCTL_API": "3"},
        timeout=60,
    )
    client_port, peer_port = free_ports(2)
    process = subprocess.Popen(
        [
            str(binaries.etcd),
            "--name=default",
            f"--data-dir={data_dir}",
            f"--listen-client-urls=http://127.0.0.1:{client_port}",
            f"--advertise-client-urls=http://127.0.0.1:{client_port}",
            f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-cluster=default=http://127.0.0.1:{peer_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        from etcdops.adapters.etcd.client import EtcdClient

        with EtcdClient([f"http://127.0.0.1:{client_port}"], plaintext=True, timeout=2.0) as client:
            import time

            deadline = time.monotonic() + 30
            while True:
                try:
                    result = client.range(b"/registry/", prefix=True)
                    return {kv.key: kv.value for kv in result.kvs}
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
    finally:
        process.kill()
        process.wait()


def test_backup_list_verify_fetch_restore(cluster: LocalCluster, etcd_binaries: EtcdBinaries, tmp_path: Path) -> None:
    # Given keys in the cluster
    written = write_keys(cluster)

    # When a backup runs
    result, store, keyring = backup(cluster)

    # Then it is listed, verified, and its manifest agrees with etcd's own snapshot tool
    manifest = result.manifest
    assert [m.id for m in list_backups(store)] == [manifest.id] and manifest.verified
    assert manifest.cluster_name == "local" and manifest.total_keys >= 200
    verified = verify_backup(store, keyring, manifest.id, cluster="local")
    assert verified.summary.revision == manifest.revision

    snapshot = tmp_path / "f.db"
    fetch_backup(store, keyring, manifest.id, snapshot, cluster="local")
    status = snapshot_status(etcd_binaries, snapshot)
    assert (status["hash"], status["revision"], status["totalKey"]) == (
        manifest.snapshot_hash,
        manifest.revision,
        manifest.total_keys,
    )

    # and the stored object holds no plaintext key or value
    stored = b"".join(store.open_read(object_key(manifest.id)))
    assert MARKER.encode() not in stored and b"/registry/secrets" not in stored

    # and the fetched file restores with etcd's tool to exactly the keys written
    assert restore_and_read(etcd_binaries, snapshot, tmp_path) == written


def snapshot_status(binaries: EtcdBinaries, path: Path) -> dict[str, int]:
    tool = [str(binaries.etcdutl)] if binaries.etcdutl else [str(binaries.etcdctl)]
    out = subprocess.run(
        [*tool, "snapshot", "status", str(path), "-w", "json"],
        check=True,
        capture_output=True,
        text=True,
        env={"ETCDCTL_API": "3"},
        timeout=60,
    ).stdout
    parsed: dict[str, int] = json.loads(out)
    return parsed


def test_member_killed_mid_stream_is_retried_on_another(cluster: LocalCluster) -> None:
    # Given a database big enough that the stream takes many chunks
    with cluster.client() as client:
        for i in range(40):
            client.put(f"/big/{i}", b"x" * 500_000)
    names = {m.client_urls[0]: m.name for m in cluster.ps()}
    serving: list[str] = []
    killed: list[str] = []

    def kill_serving_member(done: int, total: int | None) -> None:
        if not killed and done > 1_000_000:
            victim = names[serving[-1]]
            cluster.kill(victim)
            killed.append(victim)

    # When the serving member dies mid-stream
    result, store, keyring = backup(
        cluster, progress=kill_serving_member, log=lambda line: serving.append(line.rsplit(" at ", 1)[-1])
    )

    # Then the backup completes from another member, and only the complete object exists
    assert killed and result.attempts == 2
    assert result.manifest.member_id != ""
    verify_backup(store, keyring, result.manifest.id)
    assert store.list() == sorted([object_key(result.manifest.id), f"{result.manifest.id}.manifest.json"])


class Freezer:
    """Pauses (SIGSTOP) the member serving a snapshot once ``after`` bytes arrived, and always
    resumes it: at the end of the test, or after ``thaw_after`` seconds when nothing abandoned it
    (then the stream goes on from the same member and the test fails on its assertions instead
    of hanging)."""

    def __init__(self, cluster: LocalCluster, after: int = 1_000_000, thaw_after: float = 90.0) -> None:
        self.cluster = cluster
        self.after = after
        self.names = {m.client_urls[0]: m.name for m in cluster.ps()}
        self.log: list[str] = []
        self.paused: str | None = None
        self.watchdog = threading.Timer(thaw_after, self.resume)

    def serving(self) -> str:
        line = next(line for line in reversed(self.log) if line.startswith("streaming snapshot from"))
        return self.names[line.rsplit(" at ", 1)[-1]]

    def progress(self, done: int, total: int | None) -> None:
        if self.paused is None and done > self.after:
            self.paused = self.serving()
            self.cluster.pause(self.paused)
            self.watchdog.start()

    def resume(self) -> None:
        if self.paused and self.cluster.member(self.paused).pid and self.cluster.ps():
            state = next(p.state for p in self.cluster.ps() if p.name == self.paused)
            if state == "paused":
                self.cluster.resume(self.paused)

    def __enter__(self) -> Freezer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.watchdog.cancel()
        self.resume()


def write_big(cluster: LocalCluster, count: int = 80, size: int = 500_000) -> None:
    """A database of ~40 MB: far more than the stream's prefetch and gRPC's window hold."""
    with cluster.client() as client:
        for i in range(count):
            client.put(f"/big/{i}", os.urandom(size))


def test_a_member_frozen_mid_backup_is_abandoned_for_the_next(cluster: LocalCluster) -> None:
    # Given a big database
    write_big(cluster)

    # When the member serving the backup's snapshot is frozen (SIGSTOP) mid-stream
    with Freezer(cluster) as freezer:
        result, store, keyring = backup(cluster, progress=freezer.progress, log=freezer.log.append)
        paused = freezer.paused

    # Then the stream from it was abandoned at the idle deadline (the probe deadline) and the next
    # member served the whole backup, which verifies
    deadline = cluster.config().health.probe_deadline_seconds
    assert paused is not None and result.attempts == 2
    assert any("stalled: no data for" in line and f"idle deadline {deadline:g}s" in line for line in freezer.log)
    assert freezer.serving() != paused
    assert result.manifest.member_id == f"{member_ids(cluster)[freezer.serving()]:x}"
    verify_backup(store, keyring, result.manifest.id)
    # and only the complete backup is in the store
    assert store.list() == sorted([object_key(result.manifest.id), f"{result.manifest.id}.manifest.json"])


def test_a_member_frozen_mid_snapshot_save_is_abandoned_for_the_next(
    cluster: LocalCluster, etcd_binaries: EtcdBinaries, tmp_path: Path
) -> None:
    write_big(cluster)
    (tmp_path / "out").mkdir()
    target = tmp_path / "out" / "snap.db"

    with Freezer(cluster) as freezer, cluster.client() as client:
        saved = save_snapshot(
            client,
            probe_cluster(client),
            target,
            progress=freezer.progress,
            idle_timeout=cluster.config().health.probe_deadline_seconds,
            log=freezer.log.append,
        )
        paused = freezer.paused

    assert paused is not None and saved.attempts == 2 and saved.source.name != paused
    assert any("stalled: no data for" in line for line in freezer.log)
    # the file is whole and etcd's own tool accepts it; no partial file is left beside it
    status = snapshot_status(etcd_binaries, target)
    assert status["revision"] > 0 and status["totalKey"] >= 80
    assert sorted(p.name for p in target.parent.iterdir()) == ["snap.db"]


def member_ids(cluster: LocalCluster) -> dict[str, int]:
    with cluster.client() as client:
        return {m.name: m.id for m in client.member_list()}


def test_tampered_object_wrong_key_and_swapped_objects_are_refused(
    shared_cluster: LocalCluster, tmp_path: Path
) -> None:
    write_keys(shared_cluster, count=20)
    first, store, keyring = backup(shared_cluster)
    second, _, _ = backup(shared_cluster)
    root = Path(store.uri.removeprefix("file://"))

    # wrong key
    other_key = local_key_provider(tmp_path / "other.key", create=True)
    with pytest.raises(DecryptionError):
        verify_backup(store, other_key, first.manifest.id)

    # one byte flipped in the stored object: verify fails, fetch leaves no file
    path = root / object_key(first.manifest.id)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.chmod(0o600)
    path.write_bytes(bytes(data))
    with pytest.raises(DecryptionError):
        verify_backup(store, keyring, first.manifest.id)
    target = tmp_path / "out.db"
    with pytest.raises(DecryptionError):
        fetch_backup(store, keyring, first.manifest.id, target)
    assert not target.exists() and not list(tmp_path.glob(".out.db*"))

    # a manifest pointing at another backup's object: the encryption context does not match
    swapped = root / object_key(second.manifest.id)
    path.write_bytes(swapped.read_bytes())
    with pytest.raises((DecryptionError, BackupIntegrityError)):
        verify_backup(store, keyring, first.manifest.id)

    # a backup of another cluster is refused for this one
    with pytest.raises(DecryptionError):
        verify_backup(store, keyring, second.manifest.id, cluster="prod")

    with pytest.raises(BackupNotFoundError):
        verify_backup(store, keyring, "20260101T000000Z-000000")


def test_backup_to_s3_with_kms_via_moto(shared_cluster: LocalCluster) -> None:
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        kms = boto3.client("kms", region_name="us-east-1")
        s3.create_bucket(Bucket="etcd-backups")
        key_arn = kms.create_key(Description="etcdops test")["KeyMetadata"]["Arn"]
        local = shared_cluster.config()
        config = parse_config(
            {
                **local.model_dump(mode="json", exclude_none=True),
                "backup": {"destination": "s3://etcd-backups/clusters/local", "encryption_key": key_arn},
            }
        )
        store, keyring = open_backup_target(config, s3_client=s3, kms_client=kms)
        with shared_cluster.client() as client:
            result = run_backup(config, client, probe_cluster(client), store, keyring)

        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="etcd-backups")["Contents"]]
        assert sorted(keys) == sorted(
            [f"clusters/local/{result.manifest.id}.snapshot.enc", f"clusters/local/{result.manifest.id}.manifest.json"]
        )
        assert result.manifest.key_id == key_arn
        assert verify_backup(store, keyring, result.manifest.id).summary.total_keys == result.manifest.total_keys
        assert open_store("s3://etcd-backups/clusters/local", s3_client=s3).list() == sorted(
            k.removeprefix("clusters/local/") for k in keys
        )


class DiskFullAtTheManifest(FileStore):
    """A directory on a file system that fills up just as the manifest is written (the object fitted)."""

    def _write_all(self, fd: int, chunk: bytes, key: str, written: int) -> int:
        if key.endswith(MANIFEST_SUFFIX):
            raise self._os_error(OSError(errno.ENOSPC, "No space left on device"), key, "writing", written)
        return super()._write_all(fd, chunk, key, written)


def test_a_disk_full_at_the_manifest_leaves_an_orphan_that_is_reported_then_removed(
    shared_cluster: LocalCluster, tmp_path: Path
) -> None:
    config = shared_cluster.config()
    _, keyring = open_backup_target(config, create_local_key=True)
    full = DiskFullAtTheManifest(tmp_path / "store")
    with shared_cluster.client() as client:
        health = probe_cluster(client)
        # When the disk fills up at the manifest
        with pytest.raises(StoreFullError):
            run_backup(config, client, health, full, keyring)
        # Then the object it wrote is an orphan: no backup, said so by the catalogue and by verify
        store = FileStore(full.root)
        catalogue = read_catalogue(store)
        [orphan] = catalogue.orphans
        assert catalogue.backups == [] and "orphan" in catalogue.warnings()[0]
        with pytest.raises(BackupNotFoundError, match="orphan"):
            verify_backup(store, keyring, orphan.id)

        # When the next runs succeed: within the grace period the orphan stays (and is warned about),
        # after it retention removes it
        soon = run_backup(config, client, health, store, keyring, now=orphan.created_at + timedelta(hours=1))
        assert soon.pruned == [] and [w for w in soon.warnings if orphan.key in w]
        later = run_backup(config, client, health, store, keyring, now=orphan.created_at + timedelta(hours=25))
    assert orphan.id in later.pruned and not store.exists(orphan.key)
    after = read_catalogue(store)
    assert after.orphans == [] and [m.id for m in after.backups][-1] == later.manifest.id
    assert all(m.verified for m in after.backups)


def test_a_corrupt_manifest_is_reported_and_skipped_never_fatal(shared_cluster: LocalCluster, tmp_path: Path) -> None:
    config = shared_cluster.config()
    _, keyring = open_backup_target(config, create_local_key=True)
    store = FileStore(tmp_path / "store")
    with shared_cluster.client() as client:
        health = probe_cluster(client)
        first = run_backup(config, client, health, store, keyring, now=datetime.now(UTC) - timedelta(days=60))
        # Given the manifest of an old backup is damaged (cut short)
        path = store.root / manifest_key(first.manifest.id)
        path.chmod(0o600)
        path.write_bytes(path.read_bytes()[:100])
        # When the next backup runs (its retention would delete the old backup were it readable)
        second = run_backup(config, client, health, store, keyring)
    # Then the backup is stored and verified, retention warns and leaves the damaged one in place
    assert second.manifest.verified
    assert verify_backup(store, keyring, second.manifest.id).sha256 == second.manifest.sha256
    [warning] = second.warnings
    assert first.manifest.id in warning and "cannot be read" in warning and first.manifest.id not in second.pruned
    assert store.exists(object_key(first.manifest.id))
    # listing and the newest verified backup of this cluster skip it
    live = cluster_id_text(health.cluster_id)
    assert [m.id for m in list_backups(store)] == [second.manifest.id]
    assert newest_verified(store, live) == second.manifest
    assert [c.id for c in read_catalogue(store).corrupt] == [first.manifest.id]
