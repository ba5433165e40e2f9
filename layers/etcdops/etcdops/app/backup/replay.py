"""Point-in-time restore: which full backup and deltas reach a target, and the replay of the deltas on
a cluster restored from that backup.

**One transaction per original revision, in order.** Every revision after the backup's is written
as one transaction holding exactly its events (a put with its value, a delete of its key), and the
revision the restored cluster answers is checked after each: it must be the original revision plus
the restore's offset (0 for a plain ``snapshot restore``; the ``--bump-revision`` amount when the
restore bumped it), so the restored cluster's revision R + offset holds what the original held at R.
A replay that dies halfway continues where the cluster's revision says it stopped (invariant 7).

**Leases.** A delta records a key's lease id, but not the lease's grant or its TTL, and leases granted
after the backup do not exist in the restored cluster. A replayed put is therefore written without a
lease, and the report names every such key (``unleased``): a key is never dropped because its lease
is unknown or expired during the replay. Keys in the backup keep the leases the snapshot holds (etcd
restores them with a fresh TTL). Verification compares the keyspace key by key with what the backup
and the chain say it holds at the target, so a key a lease removed meanwhile shows as a difference.

**Limits.** A revision is one transaction, and etcd refuses a transaction with more operations than
``--max-txn-ops`` (default 128; a lease revoked with many keys is one revision of that many deletes).
The plan records the largest revision (``largest``); when it holds more than etcd's default, the
restore starts the restored members with ``--max-txn-ops`` raised to its count for this start
(:func:`replay_start_flags`), and the raised limit stays until each member's next start (the
approval and success messages say so). A revision above ``--max-request-bytes`` (1.5 MiB) still
stops the replay there with etcd's error.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from etcdops.adapters.backup.crypto import KeyProvider
from etcdops.adapters.backup.store import BackupStore
from etcdops.adapters.bbolt_keys import value_digest
from etcdops.adapters.etcd.client import EtcdClient
from etcdops.app.backup.catalogue import load_delta_manifest, load_manifest, read_catalogue, read_delta_catalogue
from etcdops.app.backup.delta import read_delta
from etcdops.domain.backup.chain import (
    FullBackupRef,
    PointInTime,
    build_chains,
    choose_point_in_time,
    revision_at_time,
)
from etcdops.domain.backup.delta import DeltaEvent
from etcdops.domain.backup.errors import ReplayError

UNLEASED_SHOWN = 20
ETCD_DEFAULT_MAX_TXN_OPS = 128  # etcd's --max-txn-ops unless a member is started with another value


@dataclass(frozen=True)
class ReplayReport:
    target_revision: int
    offset: int  # the restored cluster's revision numbering minus the original's
    revisions: int = 0  # revisions written by this call
    events: int = 0
    unleased: list[str] = field(default_factory=list)  # the first keys written without their lease
    unleased_count: int = 0


def point_in_time(store: BackupStore, *, revision: int | None = None, at: datetime | None = None) -> PointInTime:
    """The full backup and deltas of a restore to ``revision``, to the newest revision written by
    ``at``, or (neither) to the newest revision any chain covers."""
    refs = [
        FullBackupRef(m.id, m.cluster_id, m.revision, m.created_at, m.verified) for m in read_catalogue(store).backups
    ]
    chains = build_chains(read_delta_catalogue(store).deltas)
    if at is not None:
        revision = revision_at_time(chains, refs, at)
    return choose_point_in_time(refs, chains, revision)


def base_revision(choice: PointInTime) -> int:
    """The revision a cluster restored from the backup answers with before any replay (no bump)."""
    return max(choice.backup.revision, 1)


def replay_deltas(
    client: EtcdClient,
    store: BackupStore,
    keyring: KeyProvider,
    choice: PointInTime,
    *,
    cluster: str | None = None,
    offset: int | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> ReplayReport:
    """Write the revisions after the backup up to ``choice.target_revision``, one transaction each,
    checking the revision after each. ``offset`` is the restore's revision bump (None: what the
    cluster's revision says now, which is right before the first replayed revision)."""
    current = client.range(b"\0", count_only=True).revision
    if offset is None:
        offset = current - base_revision(choice)
    report = ReplayReport(choice.target_revision, offset)
    done = current - offset  # the original revision the cluster holds now
    if done < base_revision(choice) or done > choice.target_revision:
        raise ReplayError(
            f"the restored cluster is at revision {current}: with offset {offset} that is original revision {done}, "
            f"outside {base_revision(choice)}..{choice.target_revision}"
        )
    unleased: list[str] = []
    for delta in choice.deltas:
        if delta.last_revision <= done:
            continue
        for revision, events in read_delta(store, keyring, delta, cluster):
            if revision <= done or revision > choice.target_revision:
                continue
            written = client.txn([_without_lease(e, unleased) for e in events])
            if written != revision + offset:
                raise ReplayError(
                    f"revision {revision} of delta {delta.id} was written as {written}, expected {revision + offset}"
                )
            report = replace(report, revisions=report.revisions + 1, events=report.events + len(events))
        log(f"replayed delta {delta.id} up to revision {min(delta.last_revision, choice.target_revision)}")
    shown = sorted(set(unleased))
    return replace(report, unleased=shown[:UNLEASED_SHOWN], unleased_count=len(shown))


def _without_lease(event: DeltaEvent, unleased: list[str]) -> DeltaEvent:
    if event.kind == "put" and event.lease:
        unleased.append(event.key.decode(errors="backslashreplace"))
        return replace(event, lease=0)
    return event


# ---- what the chain says the keyspace holds at the target ----------------------------------------


def expected_keyspace(
    backup_keys: Mapping[bytes, bytes], revisions: Iterable[tuple[int, Iterable[DeltaEvent]]], after: int, upto: int
) -> dict[bytes, bytes]:
    """The keys (and value digests) the backup's keys become once the revisions ``after+1..upto`` are applied."""
    keys = dict(backup_keys)
    for revision, events in revisions:
        if after < revision <= upto:
            for event in events:
                if event.kind == "put":
                    keys[event.key] = value_digest(event.value)
                else:
                    keys.pop(event.key, None)
    return keys


def keyspace_differences(expected: Mapping[bytes, bytes], actual: Mapping[bytes, bytes]) -> list[str]:
    """One line per key that is missing, extra or holds another value (first 20), or none."""
    lines = [f"missing {k!r}" for k in sorted(expected.keys() - actual.keys())]
    lines += [f"extra {k!r}" for k in sorted(actual.keys() - expected.keys())]
    lines += [f"value of {k!r} differs" for k in sorted(expected.keys() & actual.keys()) if expected[k] != actual[k]]
    return lines[:20] + ([f"... and {len(lines) - 20} more"] if len(lines) > 20 else [])


def live_digests(client: EtcdClient) -> dict[bytes, bytes]:
    """Every key of the cluster now, with its value digest."""
    return {kv.key: value_digest(kv.value) for kv in client.range(b"\0", b"\0", timeout=60.0).kvs}


# ---- what RestoreCluster records and checks --------------------------------------------------------


def keyspace_digest(keys: Mapping[bytes, bytes]) -> str:
    """One sha256 over every key and its value digest, in key order: what verification compares."""
    digest = hashlib.sha256()
    for key in sorted(keys):
        digest.update(len(key).to_bytes(4, "big") + key + keys[key])
    return digest.hexdigest()


def target_choice(store: BackupStore, target: Mapping[str, Any]) -> PointInTime:
    """The point in time of a restore ``target``: ``{"revision": R}``, ``{"time": iso}`` or ``{"latest": True}``."""
    at = datetime.fromisoformat(target["time"]) if target.get("time") else None
    return point_in_time(store, revision=target.get("revision"), at=at)


def pitr_record(
    store: BackupStore,
    keyring: KeyProvider,
    choice: PointInTime,
    cluster: str,
    backup_keys: Mapping[bytes, bytes],
) -> dict[str, Any]:
    """The restore document's ``pitr`` record: every delta read and checked now (before anything is
    stopped), and what the keyspace must be at the target (count and digest): the backup's live keys
    (``backup_keys``, key -> value digest) with the deltas applied."""
    revisions = [r for d in choice.deltas for r in read_delta(store, keyring, d, cluster)]
    base = choice.backup.revision
    applied = [(rev, events) for rev, events in revisions if base < rev <= choice.target_revision]
    expected = expected_keyspace(backup_keys, applied, base, choice.target_revision)
    return {
        "backup_id": choice.backup.id,
        "target_revision": choice.target_revision,
        "backup_revision": base,
        "deltas": [d.id for d in choice.deltas],
        "revisions": len(applied),
        "events": sum(len(events) for _, events in applied),
        # the largest transaction the replay writes, [revision, events] (etcd refuses more than --max-txn-ops)
        "largest": list(max(((len(events), rev) for rev, events in applied), default=(0, 0)))[::-1],
        "leased_puts": sum(1 for _, events in applied for e in events if e.kind == "put" and e.lease),
        "last_delta_at": choice.deltas[-1].created_at.isoformat() if choice.deltas else None,
        "expected_keys": len(expected),
        "expected_digest": keyspace_digest(expected),
    }


def replay_start_flags(pitr: Mapping[str, Any] | None) -> dict[str, int]:
    """The etcd flags the restored members start with so that the replay can write its largest revision
    as one transaction: ``{"max-txn-ops": N}`` when that revision holds N > 128 changes, else none."""
    events = int(((pitr or {}).get("largest") or [0, 0])[1])
    return {"max-txn-ops": events} if events > ETCD_DEFAULT_MAX_TXN_OPS else {}


def choice_of(store: BackupStore, pitr: Mapping[str, Any]) -> PointInTime:
    """The :class:`PointInTime` a ``pitr`` record names (the same backup and deltas, read again)."""
    manifest = load_manifest(store, str(pitr["backup_id"]))
    backup = FullBackupRef(manifest.id, manifest.cluster_id, manifest.revision, manifest.created_at, manifest.verified)
    deltas = tuple(load_delta_manifest(store, str(i)) for i in pitr["deltas"])
    return PointInTime(backup, int(pitr["target_revision"]), deltas)


def restore_offset(current: int, pitr: Mapping[str, Any], bump: int) -> int:
    """The restore's revision offset: 0 or the bump, whichever puts ``current`` inside the replay's range
    (the bump, 10^9 by default, is far larger than any replay)."""
    base, target = max(int(pitr["backup_revision"]), 1), int(pitr["target_revision"])
    for offset in (bump, 0) if bump else (0,):
        if base <= current - offset <= target:
            return offset
    raise ReplayError(f"the restored cluster is at revision {current}, outside {base}..{target} (bump {bump} or 0)")
