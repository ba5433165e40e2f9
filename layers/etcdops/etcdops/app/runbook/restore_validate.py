"""ValidateBackup, the RestoreCluster step that checks everything about the backup before anything
is stopped (see :mod:`etcdops.app.runbook.restore` for the order and why): which backup (a named one,
the newest verified one of the live incarnation, or the base of a point in time), that it is verified,
decrypts in this cluster's encryption context and matches its manifest, and how many live keys it
holds. Also the helpers the later steps share with it: the decrypted, checked stream of a backup and
the host record the document keeps."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from etcdops.adapters import bbolt_keys
from etcdops.adapters.backup.crypto import KeyProvider
from etcdops.adapters.backup.store import BackupStore
from etcdops.adapters.etcd.membership import merge_endpoints
from etcdops.app.backup.catalogue import live_cluster_id, load_manifest, load_volume_record, newest_verified
from etcdops.app.backup.replay import pitr_record, target_choice
from etcdops.app.backup.verify import CheckedSnapshot, checked_plaintext
from etcdops.app.runbook import ClusterNotReadyError, InvalidRunbookInputError, RunbookError
from etcdops.app.runbook import timed as _timed
from etcdops.app.runbook.restore_report import approval_summary, no_default_backup
from etcdops.app.runbook.restore_sources import volume_source
from etcdops.domain.backup.errors import BackupNotFoundError, DecryptionError
from etcdops.domain.backup.manifest import Manifest
from etcdops.domain.compute.base import Host
from etcdops.domain.errors import SnapshotIncompleteError

if TYPE_CHECKING:
    from etcdops.app.runbook.restore import Document, RestoreContext


class BackupNotVerifiedError(RunbookError):
    """The backup's manifest does not say it was verified; a restore needs a verified backup."""


class RestoreVerificationError(RunbookError):
    """The restored cluster runs but does not hold the backup's data (key count or revision differ)."""


def _host_doc(host: Host) -> dict[str, str]:
    return {"name": host.name, "host_id": host.host_id, "peer_url": host.peer_url, "client_url": host.client_url}


def _live_host(ctx: RestoreContext, name: str) -> Host:
    host = ctx.compute.find(name)
    if host is None:
        raise ClusterNotReadyError(f"host {name} is not there (yet)")
    return host


def _plaintext(ctx: RestoreContext, store: BackupStore, keyring: KeyProvider, manifest: Manifest) -> CheckedSnapshot:
    """The backup decrypted as a checked stream (see :class:`CheckedSnapshot`): nothing touches local disk."""
    return checked_plaintext(store, keyring, manifest, cluster=ctx.config.name)


@contextlib.contextmanager
def _decrypting(ctx: RestoreContext, manifest: Manifest) -> Iterator[None]:
    """A backup of another cluster fails to decrypt (by design): say so when that is why."""
    try:
        yield
    except DecryptionError as exc:
        if manifest.cluster_name != ctx.config.name:
            raise DecryptionError(
                f"backup {manifest.id} was taken of cluster {manifest.cluster_name!r}, not {ctx.config.name!r}: "
                f"it does not decrypt in this cluster's encryption context ({exc})"
            ) from exc
        raise


# ---- the live keys of a snapshot ----------------------------------------------------------------


def count_live_keys(snapshot: CheckedSnapshot, again: Callable[[], Iterable[bytes]]) -> int:
    """The number of keys a client sees at the snapshot's revision (see :func:`bbolt_keys.count_live_keys`).

    ``snapshot`` was streamed to its end, so its structure was checked and its page tree is known;
    ``again`` streams the same backup once more, checked again.
    """
    return len(live_key_digests(snapshot, again))


def live_key_digests(snapshot: CheckedSnapshot, again: Callable[[], Iterable[bytes]]) -> dict[bytes, bytes]:
    """The keys a client sees at the snapshot's revision, each with its value digest (as :func:`count_live_keys`)."""
    page_size = snapshot.summary.page_size if snapshot.summary else 0
    try:
        live = bbolt_keys.live_keys(snapshot.summarizer, page_size, again)
    except SnapshotIncompleteError as exc:
        raise RestoreVerificationError(str(exc)) from exc
    return {key: digest for key, (_revision, deleted, digest) in live.last.items() if not deleted}


def restore_target(doc: Document) -> dict[str, Any] | None:
    """The point in time asked for (``to_revision``, ``to_time`` or ``latest``), or None: the backup alone."""
    given = {k: doc.get(k) for k in ("to_revision", "to_time", "latest") if doc.get(k) not in (None, False, "")}
    if not given:
        return None
    if doc.get("pitr"):  # planned by an earlier run of ValidateBackup (which set backup_id): the same target
        return {"revision": int(doc["pitr"]["target_revision"])}
    if len(given) > 1 or doc.get("backup_id"):
        named = sorted(given) + (["backup_id"] if doc.get("backup_id") else [])
        raise InvalidRunbookInputError(
            f"runbook input: give one of backup_id, to_revision, to_time and latest, not {' and '.join(named)}"
        )
    if "to_revision" in given:
        return {"revision": given["to_revision"]}
    if "to_time" in given:
        return {"time": given["to_time"]}
    return {"latest": True}


# ---- the step ----------------------------------------------------------------------------------


def validate_backup(ctx: RestoreContext, doc: Document) -> Document:
    """Everything about the backup is checked before anything is stopped; nothing is changed here."""
    started = time.monotonic()
    store, keyring = ctx.backup_target()
    hosts = ctx.compute.hosts()
    if doc["mode"] == "in-place" and not hosts:
        raise InvalidRunbookInputError("in-place restore: the cluster has no hosts; use mode new-hosts")
    live = _live_cluster_id(ctx, [h.client_url for h in hosts if h.client_url])
    target = restore_target(doc)
    choice = target_choice(store, target) if target else None  # the backup the point in time starts from
    backup_id = choice.backup.id if choice else doc.get("backup_id")
    if not backup_id:  # the default is the newest verified backup of the live incarnation (invariant 11)
        newest = newest_verified(store, live)
        if newest is None:
            raise BackupNotFoundError(no_default_backup(store.uri, live))
        backup_id = newest.id
    record = load_volume_record(store, str(backup_id)) if not choice else None
    if record is not None:  # an EBS volume backup: its snapshot, which etcdops never read
        out = volume_source(ctx, doc, record, live, [_host_doc(h) for h in hosts])
        return _timed({**out, "approval_summary": approval_summary(out)}, "validate_backup", started)
    manifest = load_manifest(store, str(backup_id))
    if not manifest.verified:
        raise BackupNotVerifiedError(f"backup {manifest.id} is not verified; run `etcdops backup verify {manifest.id}`")
    snapshot = _plaintext(ctx, store, keyring, manifest)
    with _decrypting(ctx, manifest):
        for _chunk in snapshot:
            pass  # decrypted, hashed and summarized as it streams; checked against the manifest at its end
        backup_keys = live_key_digests(snapshot, lambda: _plaintext(ctx, store, keyring, manifest))
    pitr = pitr_record(store, keyring, choice, ctx.config.name, backup_keys) if choice else None
    out = {
        **doc,
        "backup_id": manifest.id,
        "backup_created_at": manifest.created_at.isoformat(),
        "backup_revision": manifest.revision,
        "backup_total_keys": manifest.total_keys,
        "backup_keys": len(backup_keys),
        "pitr": pitr,
        "backup_etcd_version": manifest.etcd_version,
        "backup_cluster_id": manifest.cluster_id,
        "backup_imported_from": manifest.imported.file if manifest.imported else None,
        "live_cluster_id": live,
        "old_hosts": [_host_doc(h) for h in hosts],
        "reason": doc.get("reason") or "requested by an operator",
    }
    return _timed({**out, "approval_summary": approval_summary(out)}, "validate_backup", started)


def _live_cluster_id(ctx: RestoreContext, host_urls: Sequence[str]) -> str | None:
    """The cluster id the surviving members answer with (any one member suffices), or None."""
    seeds = merge_endpoints(host_urls, ctx.config.endpoints, ctx.state.load_endpoints(ctx.config.name))
    if not seeds:
        return None
    with ctx.client(seeds) as client:
        return live_cluster_id(client, ctx.config.health.probe_deadline_seconds)
