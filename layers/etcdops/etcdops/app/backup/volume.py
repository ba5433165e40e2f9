"""Volume backups: a crash-consistent copy of one healthy follower's data, catalogued beside the full ones.

One run::

    follower ──linearizable read (revision R)──► forced commit of its database file
             ──provider: copy while held still (local: SIGSTOP; EC2: CreateSnapshots of its volumes)
             ──► db + our sha256 trailer ──► bbolt summary ──► [zstd] ──► envelope encryption ──► store
                 (EC2: the snapshots stay in EBS; their ids are recorded under ``volumes/``)

The copy holds every write acknowledged before the read that answered R (``settle_member``); the
manifest says ``kind: volume`` and how it was taken (``volume``). The stored object has the format
of a full backup (the database followed by its sha256): the trailer is computed here over the
copy's bytes, so every check a full backup gets (trailer, bbolt structure, revision, hash, key
count) guards the copy from the moment it was taken to its restore, and ``etcdutl snapshot
restore`` takes it without ``--skip-hash-check``. Never the leader (its pause would cost the
cluster an election) and never a learner (it may lag).
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from etcdops.adapters.backup.crypto import DEFAULT_FRAME_LENGTH, KeyProvider, compress_stream, encrypt_stream
from etcdops.adapters.backup.store import BackupStore
from etcdops.adapters.bbolt import SnapshotSummarizer
from etcdops.adapters.etcd.client import SHA256_SIZE, EtcdClient
from etcdops.app.backup.catalogue import read_volume_records, record_volume
from etcdops.app.backup.job import BackupResult, encryption_context, retain, retention_policy
from etcdops.app.snapshot import settle_member
from etcdops.domain.backup.manifest import (
    Manifest,
    VolumeSnapshotRecord,
    VolumeSource,
    cluster_id_text,
    manifest_key,
    new_backup_id,
    object_key,
    volume_record_key,
)
from etcdops.domain.backup.retention import BackupRef, RetentionPolicy, plan_retention
from etcdops.domain.compute.base import ComputeProvider
from etcdops.domain.compute.errors import ComputeConfigError
from etcdops.domain.config import ClusterConfig
from etcdops.domain.errors import EtcdUnavailableError, SnapshotIntegrityError
from etcdops.domain.health import ClusterHealth, MemberHealth

_READ = 1 << 20


def volume_source(health: ClusterHealth) -> MemberHealth:
    """The member a volume backup copies: a healthy voting follower, the one furthest along first."""
    followers = [
        m for m in health.members
        if m.healthy and m.client_urls and not m.is_learner and m.id != health.leader and health.leader
    ]  # fmt: skip
    if not followers:
        raise EtcdUnavailableError(
            "no healthy voting follower to take a volume backup of (the leader is never paused for one)"
        )
    return max(followers, key=lambda m: (m.raft_index or 0, -m.id))


class _Copy:
    """Reads the copied database file once: its bytes, then their sha256 (the format of ``etcdctl
    snapshot save``), summarizing the database as it flows past."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.summarizer = SnapshotSummarizer()
        self.db_bytes = 0
        self.sha256 = ""

    def plaintext(self) -> Iterator[bytes]:
        digest = hashlib.sha256()
        with self.path.open("rb") as f:
            for block in iter(lambda: f.read(_READ), b""):
                digest.update(block)
                self.summarizer.update(block)
                self.db_bytes += len(block)
                yield block
        self.sha256 = digest.hexdigest()
        yield digest.digest()


@dataclass(frozen=True)
class _Taken:
    """What one volume backup is about: its id, time, member, the revision it holds at least."""

    backup_id: str
    created_at: datetime
    cluster_id: str
    member: MemberHealth
    revision: int
    source: VolumeSource


@dataclass(frozen=True)
class ProviderSnapshotResult:
    """A volume backup whose data the compute provider keeps (EBS snapshots), recorded in the catalogue."""

    record: VolumeSnapshotRecord
    seconds: float
    pruned: list[str]  # the volume backups retention deleted (their snapshots, then their records)


def run_volume_backup(
    config: ClusterConfig,
    client: EtcdClient,
    health: ClusterHealth,
    store: BackupStore,
    keyring: KeyProvider,
    compute: ComputeProvider,
    *,
    now: datetime | None = None,
    frame_length: int = DEFAULT_FRAME_LENGTH,
    log: Callable[[str], None] = lambda _: None,
) -> BackupResult | ProviderSnapshotResult:
    """Copy one follower's data while it is held still. A copy of the database the provider hands over
    (locally) is checked, encrypted and stored as a ``volume`` backup with its manifest, then retention
    runs (each kind on its own); snapshots the provider keeps (EC2) are recorded under ``volumes/``."""
    started = time.monotonic()
    created_at = now or datetime.now(UTC)
    backup_id = new_backup_id(created_at)
    member = volume_source(health)
    host = compute.find(member.name)
    if host is None:
        raise ComputeConfigError(f"member {member.name} has no host the compute provider knows: no volume copy of it")
    revision = settle_member(client, member.client_urls[0], timeout=config.health.probe_deadline_seconds)
    log(f"{member.name} holds every write up to revision {revision}; copying its data")
    tags = {
        "etcdops:cluster": config.name, "etcdops:member": member.name, "etcdops:revision": str(revision),
        "etcdops:kind": "volume", "etcdops:backup-id": backup_id,
    }  # fmt: skip
    provider = config.compute.provider if config.compute else "unknown"
    with tempfile.TemporaryDirectory(prefix="etcdops-volume-") as workdir:
        copy = compute.snapshot_volume(host, tags, workdir)
        source = VolumeSource(
            provider=provider, revision_observed=revision, paused_seconds=copy.paused_seconds,
            snapshot_ids=copy.snapshot_ids,
        )  # fmt: skip
        taken = _Taken(backup_id, created_at, cluster_id_text(health.cluster_id) or "0", member, revision, source)
        if copy.db_file is None:
            record = VolumeSnapshotRecord(
                id=backup_id, cluster_name=config.name, cluster_id=taken.cluster_id, member_id=f"{member.id:x}",
                member_name=member.name, etcd_version=member.version or "unknown", created_at=created_at, volume=source,
            )  # fmt: skip
            record_volume(store, record)
            log(f"snapshots {', '.join(copy.snapshot_ids)} of {member.name}'s volumes recorded as {backup_id}")
            pruned = prune_provider_snapshots(store, compute, retention_policy(config), created_at, log)
            return ProviderSnapshotResult(record, time.monotonic() - started, pruned)
        log(f"copied {member.name}'s database (held still {copy.paused_seconds or 0:.2f} s); storing it")
        manifest = _store_copy(config, store, keyring, Path(copy.db_file), taken, frame_length)
    pruned, warnings = retain(store, config, created_at, taken.cluster_id, log)
    return BackupResult(manifest, 1, time.monotonic() - started, pruned, warnings)


def _store_copy(
    config: ClusterConfig, store: BackupStore, keyring: KeyProvider, db_file: Path, taken: _Taken, frame_length: int
) -> Manifest:
    """The copied database with our sha256 trailer, summarized, encrypted and stored; its manifest written."""
    compression = config.backup.compression if config.backup else "none"
    key = object_key(taken.backup_id)
    reader = _Copy(db_file)
    plain: Iterator[bytes] = reader.plaintext()
    if compression == "zstd":
        plain = compress_stream(plain)
    context = encryption_context(config.name, taken.cluster_id, taken.backup_id, taken.revision)
    stored = store.put_stream(key, encrypt_stream(plain, keyring, context, frame_length))
    try:
        summary = reader.summarizer.finish()
    except SnapshotIntegrityError:
        store.delete(key)  # our own object, written moments ago: it must not look like a backup
        raise
    manifest = Manifest(
        id=taken.backup_id,
        uri=store.uri_for(key),
        cluster_id=taken.cluster_id,
        cluster_name=config.name,
        member_id=f"{taken.member.id:x}",
        member_name=taken.member.name or None,
        etcd_version=taken.member.version or "unknown",
        revision=summary.revision,
        snapshot_hash=summary.hash,
        total_keys=summary.total_keys,
        sha256=reader.sha256,
        size_plain=reader.db_bytes + SHA256_SIZE,
        size_stored=stored,
        created_at=taken.created_at,
        key_id=keyring.key_id,
        compression=compression,
        frame_length=frame_length,
        verified=True,
        verified_at=datetime.now(UTC),
        kind="volume",
        volume=taken.source,
    )
    store.put_bytes(manifest_key(taken.backup_id), manifest.to_json())
    return manifest


def prune_provider_snapshots(
    store: BackupStore, compute: ComputeProvider, policy: RetentionPolicy, now: datetime, log: Callable[[str], None]
) -> list[str]:
    """Retention over the volume backups the provider keeps, planned as their own kind: the snapshots of
    each one the policy no longer keeps are deleted first, then its record (a record always names
    snapshots that exist; snapshots whose record is gone still carry their tags). Never verified by
    etcdops, so the newest of them and each day's and week's newest are what the policy keeps."""
    records = read_volume_records(store)
    refs = [BackupRef(r.id, r.created_at, False, r.cluster_id, None, "volume") for r in records]
    plan = plan_retention(refs, now, policy)
    by_id = {r.id: r for r in records}
    for backup_id in plan.delete:
        log(f"retention: deleting volume backup {backup_id} ({plan.reasons[backup_id]})")
        compute.delete_volume_snapshots(by_id[backup_id].volume.snapshot_ids)
        store.delete(volume_record_key(backup_id))
    return plan.delete
