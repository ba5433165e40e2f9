"""Where RestoreCluster puts the verified plain snapshot for the hosts to download, and how every trace
of it (and of the volumes a volume-backup restore made) is removed again: at the end of RestoreMembers
and first on the Catch path (invariant 14). Split out of :mod:`etcdops.app.runbook.restore`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from etcdops.adapters.backup.store import BackupStore
from etcdops.app.backup.catalogue import load_manifest
from etcdops.app.runbook import stage_plaintext
from etcdops.app.runbook.restore_report import STAGING_PREFIX, staged_keys
from etcdops.app.runbook.restore_validate import _decrypting, _plaintext

if TYPE_CHECKING:
    from etcdops.app.runbook.restore import Document, RestoreContext


def _staging_store(ctx: RestoreContext) -> BackupStore:
    return ctx.staging() if ctx.staging is not None else ctx.backup_target()[0]


def _stage_snapshot(ctx: RestoreContext, doc: Document) -> dict[str, str]:
    """The verified plain snapshot in the staging store for the hosts to download (once per execution).

    Streamed: decrypted, hashed and checked against the manifest while it is uploaded (multipart),
    so no copy is held locally; a check failing at the end aborts the upload and nothing is staged.
    We hold the cluster lock, so what other executions left under the prefix (a crash halfway) is
    theirs and no longer needed: it is removed first.
    """
    store, keyring = ctx.backup_target()
    staging = _staging_store(ctx)
    key = staged_keys(doc)[0]
    staged = doc.get("staged") or {}
    if staged.get("key") == key and staging.exists(key):
        return dict(staged)
    staging.abort_uploads(f"{STAGING_PREFIX}/")  # parts of uploads whose writer died
    for leftover in staging.list(f"{STAGING_PREFIX}/"):
        if leftover.endswith((".snapshot", ".preflight")):
            staging.delete(leftover)  # ours from an earlier try (its sha256 unrecorded), or another execution's
    manifest = load_manifest(store, doc["backup_id"])
    with _decrypting(ctx, manifest):
        return stage_plaintext(staging, key, _plaintext(ctx, store, keyring, manifest))


def remove_staged(ctx: RestoreContext, doc: Document) -> list[str]:
    """Delete what this execution staged (also what a crashed try may have left); the keys removed."""
    staging = _staging_store(ctx)
    removed = staging.abort_uploads(staged_keys(doc)[0])  # an upload cut off by a crash holds parts
    for key in staged_keys(doc):
        if staging.exists(key):
            staging.delete(key)
            removed.append(key)
    return removed


def remove_volumes(ctx: RestoreContext, doc: Document) -> list[str]:
    """The volumes this execution made of a volume backup's snapshot, detached and deleted (none otherwise)."""
    return ctx.compute.remove_snapshot_volumes(doc["execution"]) if doc.get("volume_source") else []


def remove_staged_snapshot(ctx: RestoreContext, doc: Document) -> Document:
    """The Catch path's first state: no plaintext is left behind by a failed restore (invariant 14)."""
    if not doc.get("cluster") or not doc.get("execution"):
        return doc  # refused before anything was named, so before anything was staged
    return {**doc, "staging_removed": remove_staged(ctx, doc), "volumes_removed": remove_volumes(ctx, doc)}
