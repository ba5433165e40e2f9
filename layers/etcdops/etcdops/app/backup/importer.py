"""Importing a snapshot file someone else took (``etcdctl snapshot save``) into the catalogue.

Many clusters are backed up by a cron job running ``etcdctl snapshot save`` before they adopt
etcdops. Such a file is the same format our decrypted backups have (the bbolt database followed by
the sha256 of it), so once checked it is encrypted and catalogued exactly like a backup we took,
and the RestoreCluster runbook restores it like any other backup.

The file is read twice, never changed: a first pass checks it (the sha256 trailer must be there and
match, and the database must pass our bbolt reader's structural check) before anything is written;
a second pass encrypts it into the store while :class:`~etcdops.app.backup.verify.CheckedSnapshot`
compares it once more with what the first pass found, so a file that changed in between fails the
upload and leaves nothing behind. The manifest is written last; a file that fails any check leaves
nothing in the store.

What the manifest says about an import (``imported``): the file's name and modification time, when
it was imported, and the cluster id of the cluster it was taken of. A snapshot file does not record
the cluster id (etcd keeps it in the WAL, not in the database), so it is the one the operator
states with ``--source-cluster-id``, or unknown. The backup's ``cluster_id`` is then that id, or
``0`` for unknown: either way not the live incarnation's, so it is restored only when named
(invariant 11), and the approval message says it was imported.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from etcdops.adapters.backup.crypto import DEFAULT_FRAME_LENGTH, KeyProvider, compress_stream, encrypt_stream
from etcdops.adapters.backup.store import BackupStore
from etcdops.adapters.bbolt import SHA256_TRAILER, SnapshotSummary, inspect_file
from etcdops.app.backup.job import encryption_context
from etcdops.app.backup.verify import CheckedSnapshot
from etcdops.domain.backup.manifest import ImportedFrom, Manifest, manifest_key, new_backup_id, object_key
from etcdops.domain.config import ClusterConfig
from etcdops.domain.errors import SnapshotIntegrityError, UsageError

UNKNOWN_CLUSTER_ID = "0"
_READ_CHUNK = 1 << 20


@dataclass(frozen=True)
class CheckedFile:
    """A snapshot file that passed the first pass: its summary, its sha256 (the trailer) and size."""

    path: Path
    summary: SnapshotSummary
    sha256: str
    size: int
    modified_at: datetime


@dataclass(frozen=True)
class ImportResult:
    manifest: Manifest
    seconds: float


def check_snapshot_file(path: Path) -> CheckedFile:
    """The first pass: the file is a whole ``etcdctl snapshot save`` file whose database is sound.

    Raises :class:`SnapshotIntegrityError` (one line, naming the file) for a file without a sha256
    trailer (truncated, or not a snapshot), a trailer that does not match, or a database our reader
    refuses."""
    try:
        stat = path.stat()
    except OSError as exc:
        raise UsageError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if not path.is_file():
        raise UsageError(f"{path}: not a regular file")
    if stat.st_size < SHA256_TRAILER or stat.st_size % 512 != SHA256_TRAILER:
        raise SnapshotIntegrityError(
            f"{path}: not a whole `etcdctl snapshot save` file: its size {stat.st_size} leaves no sha256 trailer "
            "after the database (a truncated copy, or not an etcd snapshot)"
        )
    try:
        info = inspect_file(path)
        with path.open("rb") as f:
            f.seek(stat.st_size - SHA256_TRAILER)
            trailer = f.read(SHA256_TRAILER)
    except SnapshotIntegrityError as exc:
        raise SnapshotIntegrityError(f"{path}: not imported: {exc}") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    return CheckedFile(path, info.summary, trailer.hex(), stat.st_size, datetime.fromtimestamp(stat.st_mtime, UTC))


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        yield from iter(lambda: f.read(_READ_CHUNK), b"")


def import_snapshot(
    config: ClusterConfig,
    store: BackupStore,
    keyring: KeyProvider,
    path: Path,
    *,
    source_cluster_id: str | None = None,
    now: datetime | None = None,
    frame_length: int = DEFAULT_FRAME_LENGTH,
) -> ImportResult:
    """Check the snapshot file at ``path``, encrypt it into ``store`` and write its manifest."""
    started = time.monotonic()
    if source_cluster_id is not None and not re.fullmatch(r"[0-9a-fA-F]{1,16}", source_cluster_id):
        raise UsageError(f"source cluster id {source_cluster_id!r} is not a cluster id (1-16 hex digits)")
    checked = check_snapshot_file(path)
    created_at = now or datetime.now(UTC)
    backup_id = new_backup_id(created_at)
    cluster_id = (source_cluster_id or UNKNOWN_CLUSTER_ID).lower()
    compression = config.backup.compression if config.backup else "none"
    summary = checked.summary
    manifest = Manifest(
        id=backup_id,
        uri=store.uri_for(object_key(backup_id)),
        cluster_id=cluster_id,
        cluster_name=config.name,
        member_id="0",
        etcd_version="unknown",
        revision=summary.revision,
        snapshot_hash=summary.hash,
        total_keys=summary.total_keys,
        sha256=checked.sha256,
        size_plain=checked.size,
        size_stored=0,  # set once stored
        created_at=created_at,
        key_id=keyring.key_id,
        compression=compression,
        frame_length=frame_length,
        imported=ImportedFrom(
            file=path.name,
            file_modified_at=checked.modified_at,
            source_cluster_id=source_cluster_id.lower() if source_cluster_id else None,
        ),
    )
    context = encryption_context(config.name, cluster_id, backup_id, summary.revision)
    plain: Iterator[bytes] = iter(CheckedSnapshot(_file_chunks(path), manifest))  # raises at its end on any change
    if compression == "zstd":
        plain = compress_stream(plain)
    stored = store.put_stream(object_key(backup_id), encrypt_stream(plain, keyring, context, frame_length))
    final = Manifest.model_validate(
        {**manifest.model_dump(), "size_stored": stored, "verified": True, "verified_at": datetime.now(UTC)}
    )
    store.put_bytes(manifest_key(backup_id), final.to_json())
    return ImportResult(final, time.monotonic() - started)
