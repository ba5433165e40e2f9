"""Delta objects in the backup store: written, chained, read back and listed.

A delta is stored as the full backups are (the same envelope encryption, optional zstd, the same
store) under ``deltas/``: ``<id>.delta.enc`` then, once the chain head moved to it, its manifest
``<id>.delta.json``. The order makes every outcome safe (invariant 19):

* the object is written first; a run that loses the conditional move of the chain head (another
  run stored that range) deletes its object and writes no manifest;
* a run that dies between the object and the head move leaves an object without a manifest (an
  orphan, never read as a delta);
* a run that dies after the head move but before the manifest leaves a head whose delta has no
  manifest: the next run finds it (:func:`head_problem`) and starts a new chain, and says so.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from etcdops.adapters.backup.crypto import (
    DEFAULT_FRAME_LENGTH,
    KeyProvider,
    compress_stream,
    decompress_stream,
    decrypt_stream,
    encrypt_stream,
)
from etcdops.adapters.backup.store import BackupStore
from etcdops.adapters.state_delta import DeltaChainStore
from etcdops.app.backup.catalogue import load_delta_manifest, load_manifest, read_delta_catalogue
from etcdops.app.backup.job import CONTEXT_BACKUP_ID, CONTEXT_CLUSTER, encryption_context
from etcdops.domain.backup.chain import Chain, ChainHead, build_chains, chain_breaks
from etcdops.domain.backup.delta import (
    DeltaEvent,
    DeltaManifest,
    decode_delta,
    delta_manifest_key,
    delta_object_key,
    encode_revision,
)
from etcdops.domain.backup.errors import BackupIntegrityError, BackupNotFoundError, DeltaFormatError
from etcdops.domain.backup.manifest import cluster_id_text, new_backup_id
from etcdops.domain.decisions import DeltaChainRef
from etcdops.domain.errors import EtcdopsError

Revisions = Sequence[tuple[int, Sequence[DeltaEvent]]]
log = logging.getLogger("etcdops.app.backup.delta")


@dataclass(frozen=True)
class DeltaTarget:
    """Where and how a cluster's deltas are written."""

    store: BackupStore
    keyring: KeyProvider
    chains: DeltaChainStore
    cluster: str
    compression: str = "none"
    frame_length: int = DEFAULT_FRAME_LENGTH


def store_delta(target: DeltaTarget, head: ChainHead, revisions: Revisions, now: datetime) -> DeltaManifest | None:
    """Store ``revisions`` (whole revisions ``head.last_revision + 1 ..``, in order) as the chain's next
    delta; None when another run moved the head first (this run's object is removed again)."""
    first, last = revisions[0][0], revisions[-1][0]
    if first != head.last_revision + 1:
        raise DeltaFormatError(f"a delta after revision {head.last_revision} must start at {head.last_revision + 1}")
    plain = b"".join(encode_revision(rev, events) for rev, events in revisions)
    delta_id = new_backup_id(now)
    key = delta_object_key(delta_id)
    context = encryption_context(target.cluster, head.cluster_id, delta_id, first)
    chunks = compress_stream([plain]) if target.compression == "zstd" else [plain]
    stored = target.store.put_stream(key, encrypt_stream(chunks, target.keyring, context, target.frame_length))
    moved = replace(head, last_revision=last, last_delta=delta_id, updated_at=now)
    if not target.chains.move_chain_head(head, moved):
        target.store.delete(key)  # another run stored this range: ours must not look like a delta
        return None
    events = [e for _, group in revisions for e in group]
    manifest = DeltaManifest(
        id=delta_id,
        chain_id=head.chain_id,
        base_revision=head.base_revision,
        previous=head.last_delta,
        cluster_id=head.cluster_id,
        cluster_name=target.cluster,
        first_revision=first,
        last_revision=last,
        events=len(events),
        sha256=hashlib.sha256(plain).hexdigest(),
        size_plain=len(plain),
        size_stored=stored,
        created_at=now,
        key_id=target.keyring.key_id,
        compression="zstd" if target.compression == "zstd" else "none",
        frame_length=target.frame_length,
        leased_keys=sum(1 for e in events if e.kind == "put" and e.lease),
    )
    target.store.put_bytes(delta_manifest_key(delta_id), manifest.to_json())
    return manifest


def read_delta(
    store: BackupStore, keyring: KeyProvider, manifest: DeltaManifest, cluster: str | None = None
) -> list[tuple[int, list[DeltaEvent]]]:
    """The delta's revisions, decrypted and checked against its manifest (sha256, size, revisions,
    events); :class:`BackupIntegrityError` (or :class:`BackupNotFoundError`) otherwise."""
    key = delta_object_key(manifest.id)
    if not store.exists(key):
        raise BackupNotFoundError(f"delta {manifest.id}: its object {store.uri_for(key)} is missing")
    expected = {CONTEXT_BACKUP_ID: manifest.id, CONTEXT_CLUSTER: cluster or manifest.cluster_name}
    plain_chunks = decrypt_stream(store.open_read(key), keyring, expected)
    if manifest.compression == "zstd":
        plain_chunks = decompress_stream(plain_chunks)
    plain = b"".join(plain_chunks)
    digest = hashlib.sha256(plain).hexdigest()
    if len(plain) != manifest.size_plain or digest != manifest.sha256:
        raise BackupIntegrityError(
            f"delta {manifest.id}: {len(plain)} bytes with sha256 {digest}, its manifest says "
            f"{manifest.size_plain} bytes with {manifest.sha256}"
        )
    revisions = decode_delta(plain, manifest.first_revision, manifest.last_revision)
    count = sum(len(events) for _, events in revisions)
    if count != manifest.events:
        raise BackupIntegrityError(f"delta {manifest.id}: {count} events, its manifest says {manifest.events}")
    return revisions


def covering_chain(
    chains: DeltaChainStore | None, cluster: str, live_cluster_id: int | None
) -> DeltaChainRef | None:
    """The end of ``cluster``'s delta chain when it covers the incarnation that answered (any, when none
    did), for the quorum-loss escalation's ``restore --latest``; None without one (or without ``chains``),
    or when the state store cannot be read (the escalation then names the full backup)."""
    if chains is None:
        return None
    try:
        head = chains.load_chain_head(cluster)
    except EtcdopsError as exc:
        log.error("delta chain of %s unknown: %s", cluster, exc)
        return None
    live = cluster_id_text(live_cluster_id)
    if head is None or (live is not None and head.cluster_id != live):
        return None
    return DeltaChainRef(head.cluster_id, head.last_revision, head.updated_at)


def head_problem(store: BackupStore, keyring: KeyProvider, head: ChainHead) -> str | None:
    """Why the chain head's delta cannot be used (missing, unreadable, not what it says), or None."""
    if head.last_delta is None:
        return None
    try:
        manifest = load_delta_manifest(store, head.last_delta)
        if (manifest.chain_id, manifest.last_revision) != (head.chain_id, head.last_revision):
            return f"is not the chain's head (chain {manifest.chain_id} up to {manifest.last_revision})"
        read_delta(store, keyring, manifest, head.cluster)
    except BackupNotFoundError as exc:
        return f"is missing ({exc})"
    except BackupIntegrityError as exc:
        return f"cannot be read ({type(exc).__name__}: {exc})"
    return None


# ---- verification: every chain of the store, every delta read back --------------------------------------


@dataclass(frozen=True)
class ChainCheck:
    """One chain as `backup verify` and BackupVerify found it: what it covers, and what breaks it."""

    chain_id: str
    cluster_id: str
    from_revision: int
    to_revision: int  # the last revision reachable without a break (by the manifests)
    deltas: int  # deltas read back and checked
    problems: tuple[str, ...]

    @property
    def broken(self) -> bool:
        return bool(self.problems)

    def to_dict(self) -> dict[str, object]:
        return {"chain": self.chain_id, "cluster_id": self.cluster_id, "from_revision": self.from_revision,
                "to_revision": self.to_revision, "deltas": self.deltas, "broken": self.broken,
                "problems": list(self.problems)}  # fmt: skip


def verify_delta_chains(store: BackupStore, keyring: KeyProvider, cluster: str | None = None) -> list[ChainCheck]:
    """Check every delta chain in ``store``: each delta's object exists, decrypts (bound to ``cluster``
    and its id) and matches its manifest's sha256, size and revisions; each delta starts at the previous
    one's last revision + 1; every delta and the chain's full backup have the same cluster id. A key
    that cannot be reached raises (nothing is known then); everything else is a problem of its chain."""
    catalogue = read_delta_catalogue(store)
    checks = []
    for chain in build_chains(catalogue.deltas):
        problems = chain_breaks(chain, catalogue.missing) + _base_problems(store, chain)
        for delta in (*chain.deltas, *chain.stray):
            if delta.id in catalogue.missing:
                continue  # said once above
            try:
                read_delta(store, keyring, delta, cluster)
            except (BackupNotFoundError, BackupIntegrityError) as exc:
                problems.append(
                    f"delta {delta.id} ({delta.first_revision}..{delta.last_revision}): {type(exc).__name__}: {exc}"
                )
        count = len(chain.deltas) + len(chain.stray)
        checks.append(
            ChainCheck(chain.chain_id, chain.cluster_id, chain.base_revision, chain.last_revision, count,
                       tuple(problems))
        )  # fmt: skip
    return checks


def _base_problems(store: BackupStore, chain: Chain) -> list[str]:
    try:
        base = load_manifest(store, chain.chain_id)
    except BackupNotFoundError:
        return []  # retention removed it; a newer full backup can still start from the chain's later deltas
    except BackupIntegrityError as exc:
        return [f"the manifest of its full backup {chain.chain_id} cannot be read: {exc}"]
    if base.cluster_id != chain.cluster_id:
        return [
            f"its full backup {chain.chain_id} is of cluster id {base.cluster_id}, its deltas of {chain.cluster_id}"
        ]
    return []


def chain_warnings(checks: Sequence[ChainCheck]) -> list[str]:
    """One line per problem of a broken chain, as the verifications print and log them."""
    return [f"delta chain {c.chain_id} (cluster id {c.cluster_id}) is broken: {p}" for c in checks for p in c.problems]
