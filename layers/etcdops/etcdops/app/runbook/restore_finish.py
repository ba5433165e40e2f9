"""RestoreCluster's last checks and messages: VerifyRestore (a leader, every member healthy, revisions
not below the backup's, the backup's live keys or the point in time's keyspace), RepointClients
(invariant 10: the stored configuration names the restored members) and the success message. Split
out of :mod:`etcdops.app.runbook.restore`."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from etcdops.adapters.etcd.membership import merge_endpoints, record_membership
from etcdops.app.backup.replay import keyspace_digest, live_digests
from etcdops.app.probe import probe_cluster
from etcdops.app.runbook import ClusterNotReadyError, durations, publish_success_once
from etcdops.app.runbook import timed as _timed
from etcdops.app.runbook.restore_report import replayed_note, target_hosts
from etcdops.app.runbook.restore_validate import RestoreVerificationError, _live_host

if TYPE_CHECKING:
    from etcdops.app.runbook.restore import Document, RestoreContext


def verify_restore(ctx: RestoreContext, doc: Document) -> Document:
    """A leader, every member healthy, revisions not below the backup's, the backup's live key count."""
    started = time.monotonic()
    targets = target_hosts(doc)
    urls = [t["client_url"] for t in targets]
    with ctx.client(urls) as client:
        health = probe_cluster(client, deadline=ctx.config.health.probe_deadline_seconds)
        healthy = {m.name for m in health.healthy_voters}
        if health.leader is None or not health.has_quorum or {t["name"] for t in targets} - healthy:
            raise ClusterNotReadyError(
                f"restored cluster not healthy yet: {len(healthy)}/{len(targets)} members healthy, "
                f"leader {'yes' if health.leader else 'no'}"
            )
        if len(health.members) != len(targets):
            raise RestoreVerificationError(
                f"the restored cluster has {len(health.members)} members, expected {len(targets)}"
            )
        revisions = {t["name"]: client.status(t["client_url"]).revision for t in targets}
        count = client.range(b"\0", b"\0", count_only=True).count
    backup_revision = int(doc["backup_revision"])
    low = {name: r for name, r in revisions.items() if r < backup_revision}
    if low:
        raise RestoreVerificationError(f"revisions below the backup's {backup_revision}: {low}")
    pitr = doc.get("pitr")
    if pitr:  # the keyspace is what the backup and the chain say it was at the target, key by key
        with ctx.client(urls) as client:
            actual = live_digests(client)
        if len(actual) != int(pitr["expected_keys"]) or keyspace_digest(actual) != pitr["expected_digest"]:
            raise RestoreVerificationError(
                f"the restored cluster holds {len(actual)} keys, the backup and its deltas {pitr['expected_keys']} at "
                f"revision {pitr['target_revision']}, or other values: not the data of that point in time"
            )
        count = len(actual)
    elif doc.get("backup_keys") is not None and count != int(doc["backup_keys"]):  # unknown for a volume backup
        raise RestoreVerificationError(
            f"the restored cluster holds {count} keys, the backup {doc['backup_keys']}: not the backup's data"
        )
    bump = int(doc.get("bump_revision") or 0)
    bumped = bump > 0 and min(revisions.values()) >= backup_revision + bump
    return _timed(
        {**doc, "verified": {"revision": max(revisions.values()), "keys": count, "revision_bumped": bumped}},
        "verify_restore",
        started,
    )


def _record_membership(ctx: RestoreContext, doc: Document) -> list[str]:
    """Invariant 10: the stored configuration names the restored members (read from their member list)."""
    urls = [t["client_url"] for t in target_hosts(doc)]
    with ctx.client(urls) as client:
        members = client.member_list(linearizable=True)
    live = merge_endpoints(*(m.client_urls for m in members if m.started))
    return record_membership(ctx.config_stores, live).endpoints


def repoint_clients(ctx: RestoreContext, doc: Document) -> Document:
    """Clients (the load balancer) go to the restored members only (a no-op in place), and the
    stored configuration names the restored members."""
    started = time.monotonic()
    names = {t["name"] for t in target_hosts(doc)}
    for target in target_hosts(doc):
        ctx.compute.register_target(_live_host(ctx, target["name"]))
    for old in doc.get("old_hosts") or []:
        host = ctx.compute.find(old["name"]) if old["name"] not in names else None
        if host is not None:
            ctx.compute.deregister_target(host)
    endpoints = _record_membership(ctx, doc)
    return _timed({**doc, "repointed": True, "stored_endpoints": endpoints}, "repoint_clients", started)


def notify_success(ctx: RestoreContext, doc: Document) -> Document:
    verified = doc.get("verified") or {}
    revisions = (
        f"revision raised to {verified.get('revision')} (bumped by {doc.get('bump_revision'):,}, "
        "old revisions marked compacted)"
        if verified.get("revision_bumped")
        else f"revision {verified.get('revision')} (not bumped: the hosts' etcd restore tool has no --bump-revision; "
        "restart every etcd client that watches)"
    )
    return publish_success_once(
        ctx,
        doc,
        "restore-succeeded",
        f"etcdops: restored cluster {doc['cluster']} from backup {doc['backup_id']}",
        f"Runbook {doc['execution']} restored {doc['cluster']} ({doc['mode']}) from backup {doc['backup_id']} taken "
        f"{doc.get('backup_created_at')}.\nMembers: {', '.join(t['name'] for t in target_hosts(doc))}, "
        "all healthy with "
        f"a leader; {verified.get('keys')} keys, as in the backup{replayed_note(doc)}; {revisions}.\n"
        f"The old data directories are kept (suffix .{doc.get('old_data_suffix')}); "
        "delete them once you are satisfied.\n"
        "API servers started and scheduler, controller manager and kubelets restarted.\n"
        f"Step durations: {durations(doc)}",
    )
