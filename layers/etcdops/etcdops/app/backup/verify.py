"""Verify and fetch a stored backup: decrypt it as a stream and check every byte of it against its
manifest (size, sha256 trailer, bbolt structure, revision, hash, key count) as it flows past.
``backup fetch`` writes the file only when all of it matched, so nothing unchecked is left behind."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from etcdops.adapters.backup.crypto import KeyProvider, check_header, decompress_stream, decrypt_stream
from etcdops.adapters.backup.store import BackupStore
from etcdops.adapters.bbolt import SnapshotSummarizer, SnapshotSummary
from etcdops.adapters.etcd.client import SHA256_SIZE
from etcdops.app.backup.catalogue import load_manifest
from etcdops.app.backup.job import CONTEXT_BACKUP_ID, CONTEXT_CLUSTER
from etcdops.app.snapshot import Progress
from etcdops.domain.backup.errors import BackupIntegrityError, BackupNotFoundError, ManifestMismatchError
from etcdops.domain.backup.manifest import Manifest, object_key
from etcdops.domain.errors import SnapshotIntegrityError


@dataclass(frozen=True)
class VerifyResult:
    manifest: Manifest
    summary: SnapshotSummary
    sha256: str
    seconds: float


def _ciphertext(store: BackupStore, manifest: Manifest, cluster: str | None) -> tuple[Iterator[bytes], dict[str, str]]:
    """The encrypted object's chunks and the encryption context it must carry."""
    key = object_key(manifest.id)
    if not store.exists(key):
        raise BackupNotFoundError(f"backup {manifest.id}: its snapshot object {store.uri_for(key)} is missing")
    expected = {CONTEXT_BACKUP_ID: manifest.id, CONTEXT_CLUSTER: cluster or manifest.cluster_name}
    return store.open_read(key), expected


def _plaintext(store: BackupStore, keyring: KeyProvider, manifest: Manifest, cluster: str | None) -> Iterator[bytes]:
    chunks, expected = _ciphertext(store, manifest, cluster)
    plain = decrypt_stream(chunks, keyring, expected)
    return decompress_stream(plain) if manifest.compression == "zstd" else plain


def check_readable(store: BackupStore, keyring: KeyProvider, backup_id: str, *, cluster: str | None = None) -> Manifest:
    """The backup's manifest, once its object was found and its header opened with ``keyring`` (no
    content decrypted): what a runbook that will need the backup checks first."""
    manifest = load_manifest(store, backup_id)
    chunks, expected = _ciphertext(store, manifest, cluster)
    try:
        check_header(chunks, keyring, expected)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()  # the rest of the object is not read
    return manifest


class CheckedSnapshot:
    """A decrypted snapshot (db + sha256 trailer) as a stream that is checked as it flows past.

    Iterating yields every chunk unchanged while hashing and summarizing it; when the stream ends, the
    size, the trailer, the sha256, the bbolt structure, revision, hash and key count are compared
    with the manifest, and the last ``next`` raises :class:`BackupIntegrityError` or
    :class:`ManifestMismatchError` instead of ending. A consumer that writes the chunks somewhere
    (a staging upload) therefore fails, and discards what it wrote, unless all of it matched. After
    the end, :attr:`summary`, :attr:`digest` and :attr:`summarizer` (the database's page tree) are set.
    Nothing is held but the summarizer's per-page summaries and one chunk.
    """

    def __init__(self, chunks: Iterable[bytes], manifest: Manifest) -> None:
        self.manifest = manifest
        self.summarizer = SnapshotSummarizer()
        self.summary: SnapshotSummary | None = None
        self.digest: str | None = None
        self._chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        manifest, summarizer = self.manifest, self.summarizer
        sha = hashlib.sha256()
        held = b""
        total = 0
        for chunk in self._chunks:
            total += len(chunk)
            data = held + chunk if held else chunk
            body, held = data[:-SHA256_SIZE], data[-SHA256_SIZE:]
            if body:
                sha.update(body)
                summarizer.update(body)
            yield chunk
        digest = sha.hexdigest()
        problems = []
        if total != manifest.size_plain:
            problems.append(f"size {total} != manifest {manifest.size_plain}")
        if held.hex() != digest:
            problems.append("the snapshot's sha256 trailer does not match its content")
        if digest != manifest.sha256:
            problems.append(f"sha256 {digest} != manifest {manifest.sha256}")
        if problems:
            raise BackupIntegrityError(f"backup {manifest.id}: " + "; ".join(problems))
        try:
            summary = summarizer.finish()
        except SnapshotIntegrityError as exc:
            raise BackupIntegrityError(f"backup {manifest.id}: {exc}") from exc
        mismatched = [
            f"{name} {actual} != manifest {expected}"
            for name, actual, expected in (
                ("revision", summary.revision, manifest.revision),
                ("hash", summary.hash, manifest.snapshot_hash),
                ("total_keys", summary.total_keys, manifest.total_keys),
            )
            if actual != expected
        ]
        if mismatched:
            raise ManifestMismatchError(f"backup {manifest.id}: " + "; ".join(mismatched))
        self.summary, self.digest = summary, digest


def checked_plaintext(
    store: BackupStore, keyring: KeyProvider, manifest: Manifest, *, cluster: str | None = None
) -> CheckedSnapshot:
    """The backup decrypted as a :class:`CheckedSnapshot` stream (nothing is read before iterating)."""
    return CheckedSnapshot(_plaintext(store, keyring, manifest, cluster), manifest)


def _checked(
    chunks: Iterable[bytes], manifest: Manifest, sink: Callable[[bytes], None] | None = None
) -> tuple[SnapshotSummary, str]:
    """Hash and summarize a decrypted snapshot (db + trailer); compare everything with the manifest."""
    checked = CheckedSnapshot(chunks, manifest)
    for chunk in checked:
        if sink:
            sink(chunk)
    assert checked.summary is not None and checked.digest is not None  # set when the stream ended checked
    return checked.summary, checked.digest


def verify_backup(
    store: BackupStore,
    keyring: KeyProvider,
    backup_id: str,
    *,
    cluster: str | None = None,
    progress: Progress | None = None,
) -> VerifyResult:
    """Fetch, decrypt, hash and inspect a backup and compare all of it with its manifest."""
    started = time.monotonic()
    manifest = load_manifest(store, backup_id)
    checked = 0

    def count(chunk: bytes) -> None:
        nonlocal checked
        checked += len(chunk)
        if progress:
            progress(checked, manifest.size_plain)

    summary, digest = _checked(_plaintext(store, keyring, manifest, cluster), manifest, count if progress else None)
    return VerifyResult(manifest, summary, digest, time.monotonic() - started)


def fetch_backup(
    store: BackupStore,
    keyring: KeyProvider,
    backup_id: str,
    path: Path,
    *,
    cluster: str | None = None,
    progress: Progress | None = None,
) -> VerifyResult:
    """Write the decrypted snapshot to ``path``, only if all of it verifies (else nothing is left)."""
    started = time.monotonic()
    manifest = load_manifest(store, backup_id)
    path = path.absolute()
    tmp = path.with_name(f".{path.name}.part")
    written = 0
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb", buffering=1 << 20) as out:

            def sink(chunk: bytes) -> None:
                nonlocal written
                out.write(chunk)
                written += len(chunk)
                if progress:
                    progress(written, manifest.size_plain)

            summary, digest = _checked(_plaintext(store, keyring, manifest, cluster), manifest, sink)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return VerifyResult(manifest, summary, digest, time.monotonic() - started)
