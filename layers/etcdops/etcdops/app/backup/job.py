"""The backup job: take, check, encrypt and store one backup, then apply retention (verify and
fetch live in :mod:`etcdops.app.backup.verify`).

One pass over the snapshot stream, in constant memory::

    etcd ──chunks──► sha256 + bbolt summary ──► [zstd] ──► envelope encryption ──► store

The decrypted object is exactly what ``etcdctl snapshot save`` writes (the database followed by
its sha256), so ``backup fetch`` hands operators a file that ``etcdutl snapshot restore`` takes.
A manifest is written only after the stream's sha256 and the database's structure were checked;
the snapshot object is never overwritten, and a failed check removes the object it just wrote.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from etcdops.adapters.backup.crypto import (
    DEFAULT_FRAME_LENGTH,
    KeyProvider,
    compress_stream,
    encrypt_stream,
)
from etcdops.adapters.backup.store import BackupStore
from etcdops.adapters.bbolt import SnapshotSummarizer
from etcdops.adapters.etcd.client import SHA256_SIZE, EtcdClient, SnapshotStream
from etcdops.app.backup.catalogue import apply_retention, newest_verified
from etcdops.app.probe import probe_cluster
from etcdops.app.snapshot import (
    Progress,
    SnapshotSource,
    current_revision,
    snapshot_sources,
    with_snapshot_stream,
)
from etcdops.domain.backup.errors import BackupError
from etcdops.domain.backup.manifest import Manifest, cluster_id_text, manifest_key, new_backup_id, object_key
from etcdops.domain.backup.retention import RetentionPolicy
from etcdops.domain.config import ClusterConfig
from etcdops.domain.errors import EtcdUnavailableError, SnapshotIntegrityError
from etcdops.domain.health import ClusterHealth

CONTEXT_CLUSTER = "etcdops:cluster"
CONTEXT_CLUSTER_ID = "etcdops:cluster-id"
CONTEXT_BACKUP_ID = "etcdops:backup-id"
CONTEXT_REVISION = "etcdops:revision-floor"


class MetricsSink(Protocol):
    """What the jobs need of a metrics object (Powertools ``Metrics`` is one)."""

    def add_metric(self, name: str, unit: Any, value: float) -> None: ...

    def add_dimension(self, name: str, value: str) -> None: ...


@dataclass(frozen=True)
class BackupResult:
    manifest: Manifest
    attempts: int
    seconds: float
    pruned: list[str]  # backups retention deleted, then orphan objects it removed
    warnings: list[str] = field(default_factory=list)  # what retention met and skipped or could not do


def encryption_context(cluster: str, cluster_id: str, backup_id: str, revision_floor: int) -> dict[str, str]:
    return {
        CONTEXT_CLUSTER: cluster,
        CONTEXT_CLUSTER_ID: cluster_id,
        CONTEXT_BACKUP_ID: backup_id,
        CONTEXT_REVISION: str(revision_floor),
    }


class _Tap:
    """Counts and summarizes the database bytes flowing past, then appends the checked trailer."""

    def __init__(self, progress: Progress | None, expected: int | None) -> None:
        self.summarizer = SnapshotSummarizer()
        self.db_bytes = 0
        self.progress = progress
        self.expected = expected

    def plaintext(self, chunks: Iterable[bytes], stream: SnapshotStream) -> Iterator[bytes]:
        for chunk in chunks:  # the stream itself hashes the bytes and checks etcd's sha256
            self.summarizer.update(chunk)
            self.db_bytes += len(chunk)
            if self.progress:
                self.progress(self.db_bytes, self.expected)
            yield chunk
        # the stream checked etcd's trailer when it ended; store it too, as etcdctl does
        assert stream.sha256 is not None
        yield stream.sha256


def run_backup(
    config: ClusterConfig,
    client: EtcdClient,
    health: ClusterHealth,
    store: BackupStore,
    keyring: KeyProvider,
    *,
    now: datetime | None = None,
    frame_length: int = DEFAULT_FRAME_LENGTH,
    progress: Progress | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> BackupResult:
    """Take, check, encrypt and store one backup; write its manifest; apply retention."""
    started = time.monotonic()
    created_at = now or datetime.now(UTC)
    backup_id = new_backup_id(created_at)
    compression = config.backup.compression if config.backup else "none"
    cluster_id = cluster_id_text(health.cluster_id) or "0"
    revision_floor = current_revision(client) or 0
    context = encryption_context(config.name, cluster_id, backup_id, revision_floor)
    key = object_key(backup_id)

    (tap, stored, source, sha256), attempts = _take(
        config, client, health, store, keyring, key, context, compression, frame_length, progress, log
    )
    try:
        summary = tap.summarizer.finish()
    except SnapshotIntegrityError:
        store.delete(key)  # our own object, written moments ago: it must not look like a backup
        raise
    manifest = Manifest(
        id=backup_id,
        uri=store.uri_for(key),
        cluster_id=cluster_id,
        cluster_name=config.name,
        member_id=f"{source.member_id:x}",
        member_name=source.name or None,
        etcd_version=source.version or "unknown",
        revision=summary.revision,
        snapshot_hash=summary.hash,
        total_keys=summary.total_keys,
        sha256=sha256,
        size_plain=tap.db_bytes + SHA256_SIZE,
        size_stored=stored,
        created_at=created_at,
        key_id=keyring.key_id,
        compression=compression,
        frame_length=frame_length,
        verified=True,
        verified_at=datetime.now(UTC),
    )
    store.put_bytes(manifest_key(backup_id), manifest.to_json())
    pruned, warnings = retain(store, config, created_at, cluster_id, log)
    return BackupResult(manifest, attempts, time.monotonic() - started, pruned, warnings)


def _take(
    config: ClusterConfig,
    client: EtcdClient,
    health: ClusterHealth,
    store: BackupStore,
    keyring: KeyProvider,
    key: str,
    context: dict[str, str],
    compression: str,
    frame_length: int,
    progress: Progress | None,
    log: Callable[[str], None],
) -> tuple[tuple[_Tap, int, SnapshotSource, str], int]:
    """Stream a snapshot from the first member that gives one whole into the store at ``key``
    (summarized, compressed, encrypted on the way); what it stored and the attempts it took."""

    def consume(
        chunks: Iterator[bytes], stream: SnapshotStream, source: SnapshotSource
    ) -> tuple[_Tap, int, SnapshotSource, str]:
        tap = _Tap(progress, source.db_size)
        plain: Iterable[bytes] = tap.plaintext(chunks, stream)
        if compression == "zstd":
            plain = compress_stream(plain)
        stored = store.put_stream(key, encrypt_stream(plain, keyring, context, frame_length))
        assert stream.sha256 is not None  # set once the stream ended with a matching trailer
        return tap, stored, source, stream.sha256.hex()

    return with_snapshot_stream(
        client,
        snapshot_sources(health),
        consume,
        idle_timeout=config.health.probe_deadline_seconds,  # a frozen member is left for the next one
        log=log,
    )


def retain(
    store: BackupStore, config: ClusterConfig, now: datetime, cluster_id: str, log: Callable[[str], None]
) -> tuple[list[str], list[str]]:
    """Retention after a stored, verified backup: what it removed and its warnings. It never fails the
    run that stored the backup (the next run prunes again)."""
    try:
        outcome = apply_retention(store, retention_policy(config), now, live_cluster_id=cluster_id, log=log)
    except BackupError as exc:
        warnings = [f"retention did not run to its end ({type(exc).__name__}: {exc}); the next run tries again"]
        outcome_pruned: list[str] = []
    else:
        warnings, outcome_pruned = outcome.warnings, [*outcome.deleted, *outcome.orphans_removed]
    for warning in warnings:
        log(f"warning: {warning}")
    return outcome_pruned, warnings


def retention_policy(config: ClusterConfig) -> RetentionPolicy:
    retention = config.backup.retention if config.backup else None
    if retention is None:
        return RetentionPolicy()
    return RetentionPolicy(
        keep_all_within=timedelta(hours=retention.keep_all_hours),
        daily_days=retention.daily_days,
        weekly_weeks=retention.weekly_weeks,
        min_age=timedelta(minutes=retention.min_age_minutes),
        orphan_grace=timedelta(hours=retention.orphan_grace_hours),
    )


def ensure_fresh_backup(
    config: ClusterConfig,
    client: EtcdClient,
    store: BackupStore,
    keyring: KeyProvider,
    max_age: timedelta,
    *,
    now: datetime | None = None,
) -> Manifest:
    """A verified backup of the live cluster incarnation younger than ``max_age`` (invariants 5 and
    11): the newest one, or a new one. A backup of an earlier cluster with the same name never counts."""
    moment = now or datetime.now(UTC)
    health = probe_cluster(client, deadline=config.health.probe_deadline_seconds)
    live = cluster_id_text(health.cluster_id)
    if live is None:
        raise EtcdUnavailableError(
            f"no member of {config.name} answered with its cluster id, so no backup can be confirmed as this "
            "cluster's and none can be taken"
        )
    newest = newest_verified(store, live)
    if newest is not None and moment - newest.created_at <= max_age:
        return newest
    return run_backup(config, client, health, store, keyring, now=moment).manifest
