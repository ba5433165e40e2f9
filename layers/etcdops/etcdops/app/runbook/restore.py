"""The steps of the RestoreCluster runbook, one function each, run by the state machine.

Like :mod:`etcdops.app.runbook.replace`, every step takes the execution's document (the input plus what
earlier steps recorded) and returns it extended, and every step converges when retried.

The order, and why:

1. ``AcquireLock`` — invariant 2: one restoring or membership-changing operation per cluster.
2. ``ValidateBackup`` — before anything is stopped: the backup exists, is verified, decrypts with
   this cluster's encryption context (the context binds the cluster name, so a backup of another
   cluster or under another key is refused with ``DecryptionError``), and its sha256, revision, hash
   and bbolt key count agree with the manifest. All of it on the decrypted stream, never on a local
   copy (a Lambda's /tmp is 512 MB by default, an etcd database up to 8 GiB): a first pass checks
   and learns the page tree, a second pass (checked again) parses the "key" bucket's leaves to count
   the live keys. Records the backup's time, revision and key counts, the hosts that will be
   stopped, the new cluster token and the name the old data directories will be kept under, and the
   summary the approval message shows.
3. Approval (an ASL task on RequestApprovalFunction, invariant 8).
3a. ``Preflight`` — invariant 13, after the approval (which can wait for an hour) and before anything
   is stopped: the control-plane and member hosts will take the host commands, the documents exist,
   new hosts can be launched (new-hosts mode), the load balancer is there, the backup still opens
   with the key, the staging object can be written, and the lock is still ours. A finding stops the
   runbook with nothing stopped; then ``NotifyStart``.
4. ``StopApiServers``, ``StopEtcd`` (every member host), in new-hosts mode ``LaunchHosts``.
5. ``RestoreMembers`` — the snapshot is decrypted and checked once more while it is uploaded
   (multipart, streamed) to the staging location as ``restore/<execution>.snapshot``: in AWS the
   stack's staging bucket (not versioned, KMS-encrypted, objects expire after a day), locally the
   backup directory. A check failing at the end aborts the upload, so only a verified snapshot is
   ever staged; what crashed earlier executions left there is removed first (we hold the lock).
   Invariant 14: the staged plaintext is deleted at the end of this step (every member restored),
   and on every failure path by ``RemoveStagedSnapshot``, the first state of the Catch path. The
   host action ``restore-data-dir`` runs on each member with its own name and peer URL, a new
   cluster token derived from the execution, the revision bump and the suffix the old data
   directory is kept under (renamed, never deleted).
6. ``StartMembers`` (with a restored data directory etcd ignores the initial-cluster flags),
   ``VerifyRestore``, ``RepointClients``, ``StartApiServers``, ``RestartControlPlane``,
   ``ReleaseLock``, ``NotifySuccess``. ``RemoveStagedSnapshot`` then ``NotifyFailure`` is the Catch
   path of every state (a failed removal is caught and said in the failure message).

Revisions. etcd clients (Kubernetes informers, watchers) assume revisions never go backwards. Where
the host's ``etcdutl``/``etcdctl snapshot restore --help`` lists ``--bump-revision`` and
``--mark-compacted`` (etcd 3.6, and 3.5.10 and later), the restore adds both, with ``bump_revision``
(default 1,000,000,000, as the Kubernetes documentation suggests), so the restored revision is
higher than any revision the lost cluster can have served and every old watch is cancelled as
compacted. Older tools (etcd 3.4, 3.5 before 3.5.10) restore at the backup's revision: clients that
saw later revisions may miss changes or see stale caches until they re-list, which is why the
runbook restarts the control plane after the restore and the approval message says so.
``VerifyRestore`` records whether the bump took effect (the revision is then at least the backup's
plus the bump).

Key equality. The manifest's ``total_keys`` is what ``etcdutl snapshot status`` reports: the bbolt
entries of *all* buckets, i.e. every stored revision plus the members, meta and other bookkeeping
buckets. A restore rewrites the members and meta buckets (and a revision bump adds an entry and a
compaction mark), so no count taken from the restored cluster can equal it. The sound check is on
what clients see: ``ValidateBackup`` reads the verified snapshot (whose ``total_keys``, revision,
hash and sha256 were just checked against the manifest) and replays its "key" bucket in revision
order to count the live keys (puts minus tombstones); ``VerifyRestore`` then counts the keys on the
restored cluster with a linearizable count-only range over the whole key space and demands the same
number, on a cluster where nothing has written yet (the API servers are still stopped), with each
member's revision at least the backup's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from etcdops.adapters.aws import Notifier
from etcdops.adapters.backup.crypto import KeyProvider
from etcdops.adapters.backup.store import BackupStore
from etcdops.adapters.etcd.client import EtcdClient
from etcdops.adapters.etcd.membership import ConfigStore
from etcdops.adapters.state import IncidentStore, LockStore, ObservationStore
from etcdops.app.backup.replay import (
    replay_start_flags,
)
from etcdops.app.runbook import (
    ClusterNotReadyError,
    InvalidRunbookInputError,
    caught_and_released,
    dispatch,
    execution_tail,
    first_time,
    publish_failure_once,
    release_lock,
    require_configured_cluster,
)
from etcdops.app.runbook import preflight as checks
from etcdops.app.runbook import timed as _timed
from etcdops.app.runbook.restore_finish import notify_success, repoint_clients, verify_restore
from etcdops.app.runbook.restore_report import (
    failure_report,
    staged_keys,
    target_hosts,
)
from etcdops.app.runbook.restore_sources import replay
from etcdops.app.runbook.restore_staging import _stage_snapshot, remove_staged, remove_staged_snapshot, remove_volumes
from etcdops.app.runbook.restore_validate import (
    _host_doc,
    _live_host,
    restore_target,
    validate_backup,
)
from etcdops.domain.compute.base import ComputeProvider, PreflightPlan, start_flags
from etcdops.domain.config import ClusterConfig
from etcdops.domain.errors import Backoff, EtcdopsError
from etcdops.domain.findings import Finding
from etcdops.domain.runbook_documents import RestoreDocument

LOCK_LEASE_SECONDS = 7200  # taken again (extended) once the approval arrived
DEFAULT_BUMP_REVISION = 1_000_000_000
Document = dict[str, Any]


_HOSTS_COMING: dict[type[EtcdopsError], Backoff] = {
    ClusterNotReadyError: Backoff(interval_seconds=2, max_attempts=30, rate=1.0)
}
STEP_RETRY: dict[str, dict[type[EtcdopsError], Backoff]] = {
    "LaunchHosts": _HOSTS_COMING,
    "RestoreMembers": _HOSTS_COMING,
    "StartMembers": _HOSTS_COMING,
    "VerifyRestore": {ClusterNotReadyError: Backoff(interval_seconds=2, max_attempts=45, rate=1.0)},
    "RepointClients": {ClusterNotReadyError: Backoff(interval_seconds=2, max_attempts=10, rate=1.0)},
}
"""Steps that wait longer than the default for an error (see :mod:`etcdops_local.retry_contract`)."""


class RestoreStateStore(LockStore, IncidentStore, ObservationStore, Protocol):
    """What RestoreCluster keeps in the state table: the lock, its announcements, the members last seen."""


@dataclass
class RestoreContext:
    """What the steps need, passed in by the handler (AWS) or the local stack."""

    config: ClusterConfig
    client: Callable[[Sequence[str]], EtcdClient]  # a client for these client URLs (TLS from the config)
    compute: ComputeProvider
    state: RestoreStateStore
    notifier: Notifier
    backup_target: Callable[[], tuple[BackupStore, KeyProvider]]
    config_stores: Sequence[ConfigStore]  # where the configuration lives: updated after the restore
    now: Callable[[], datetime] = lambda: datetime.now(UTC)
    # where the plain snapshot is staged for the hosts (AWS: the stack's staging bucket, not versioned,
    # expiring by lifecycle); None: under restore/ in the backup store (the local stack's directory)
    staging: Callable[[], BackupStore] | None = None


# ---- helpers ----------------------------------------------------------------------------------


def _initial_cluster(doc: Document) -> str:
    return ",".join(f"{t['name']}={t['peer_url']}" for t in target_hosts(doc))


# ---- the steps, in runbook order --------------------------------------------------------------


def acquire_lock(ctx: RestoreContext, doc: Document) -> Document:
    require_configured_cluster(ctx.config, doc)
    restore_target(doc)  # one point in time at most, or a backup: refused before the lock otherwise
    # their types and ranges were checked against RestoreDocument before this step
    mode = doc.get("mode") or "in-place"
    bump = doc.get("bump_revision", DEFAULT_BUMP_REVISION)
    wait = doc.get("approval_timeout_seconds") or 0
    started = time.monotonic()
    lease = max(LOCK_LEASE_SECONDS, wait + 3600)  # outlasts the approval wait; extended again after it
    lock = ctx.state.acquire_lock(doc["cluster"], doc["execution"], lease, ctx.now())
    tail = execution_tail(doc)
    return _timed(
        {
            **doc,
            "mode": mode,
            "bump_revision": bump,
            "lock_owner": lock.owner,
            "lock_lease_seconds": lease,
            "started_at": doc.get("started_at") or ctx.now().isoformat(),
            "cluster_token": f"restore-{tail}",
            "old_data_suffix": f"before-restore-{tail}",
        },
        "acquire_lock",
        started,
    )


# the host commands a restore sends (not the upgrade's binary swap nor the certificate renewal)
RESTORE_DOCUMENTS = (
    "StopApiServer", "StopEtcd", "RestoreDataDir", "StartEtcd", "StartApiServer", "RestartControlPlane",
)  # fmt: skip


def preflight(ctx: RestoreContext, doc: Document) -> Document:
    """Invariant 13: everything the restore needs from here on is there and allowed, or nothing is stopped."""
    started = time.monotonic()
    old = [h["name"] for h in doc.get("old_hosts") or []]
    if doc["mode"] == "in-place":
        plan = PreflightPlan(documents=RESTORE_DOCUMENTS, commanded=tuple(old), control_plane=True, repoint=True)
    else:  # the old hosts still there are stopped; fresh ones are launched and restored
        present = tuple(n for n in old if ctx.compute.find(n) is not None)
        launch = tuple(new_host_name(n, doc) for n in old)
        plan = PreflightPlan(
            launch=launch, documents=RESTORE_DOCUMENTS, commanded=present, control_plane=True, repoint=True
        )
    volume = doc.get("volume_source")
    findings = checks.plan_findings(
        ctx,
        doc,
        plan,
        lease_seconds=LOCK_LEASE_SECONDS,
        why="restores every member from it",
        staging_key=None if volume else staged_keys(doc)[1],
        staging=ctx.staging,
        deltas=(doc.get("pitr") or {}).get("deltas") or (),
        check_backup=not volume,
    )
    if volume:  # the snapshot is still there and completed (the approval may have waited an hour)
        problem = ctx.compute.volume_snapshot_problem(volume["snapshot_id"])
        if problem:
            findings.append(
                Finding("backup", f"volume backup {doc['backup_id']}", f"{problem}.", "choose another backup.")
            )
    return checks.passed(ctx, doc, "RestoreCluster", findings, started)


def notify_start(ctx: RestoreContext, doc: Document) -> Document:
    """After the approval: extend our lock's lease (the wait may have been long), then announce."""
    ctx.state.acquire_lock(doc["cluster"], doc["execution"], LOCK_LEASE_SECONDS, ctx.now())
    if first_time(ctx, doc, "restore-started"):
        ctx.notifier.publish(
            f"etcdops: restoring cluster {doc['cluster']} from backup {doc['backup_id']}",
            f"Runbook {doc['execution']} was approved and starts now.\n{doc.get('approval_summary', '')}",
            {"cluster": doc["cluster"], "kind": "restore-started"},
        )
    return doc


def stop_api_servers(ctx: RestoreContext, doc: Document) -> Document:
    started = time.monotonic()
    ctx.compute.run_action("stop-apiserver")
    return _timed({**doc, "apiservers_stopped": True}, "stop_api_servers", started)


def stop_etcd(ctx: RestoreContext, doc: Document) -> Document:
    """Stop etcd on every member host still there; in-place, those hosts are the restore targets."""
    started = time.monotonic()
    stopped = []
    for old in doc.get("old_hosts") or []:
        host = ctx.compute.find(old["name"])
        if host is None:
            continue  # gone (new-hosts mode is for that)
        ctx.compute.stop_etcd(host)
        stopped.append(host.name)
    out = {**doc, "etcd_stopped": stopped}
    if doc["mode"] == "in-place":
        missing = [h["name"] for h in doc.get("old_hosts") or [] if h["name"] not in stopped]
        if missing:
            raise InvalidRunbookInputError(
                f"in-place restore: hosts {', '.join(missing)} are gone since the approval; use mode new-hosts"
            )
        out["targets"] = list(doc.get("old_hosts") or [])
    return _timed(out, "stop_etcd", started)


def new_host_name(old: str, doc: Document) -> str:
    """A deterministic name for the fresh host replacing ``old``: its stem and the execution's tail."""
    stem = old.split("-s")[0][:40]
    return f"{stem}-s{execution_tail(doc)[-8:]}"


def launch_hosts(ctx: RestoreContext, doc: Document) -> Document:
    """new-hosts mode: one fresh host per old member (found again by name on a retry)."""
    started = time.monotonic()
    targets = []
    for old in doc.get("old_hosts") or []:
        name = new_host_name(old["name"], doc)
        ctx.compute.issue_certificates(name)
        targets.append(_host_doc(ctx.compute.launch(name)))
    if not targets:
        raise InvalidRunbookInputError("new-hosts restore: no member hosts are known to replace")
    return _timed({**doc, "targets": targets, "launched": [t["name"] for t in targets]}, "launch_hosts", started)


def restore_members(ctx: RestoreContext, doc: Document) -> Document:
    """Each member's data directory from the staged snapshot; the plaintext is removed once all are done."""
    started = time.monotonic()
    targets = target_hosts(doc)
    if not targets:
        raise InvalidRunbookInputError("restore: no target hosts recorded (StopEtcd or LaunchHosts first)")
    restored = dict(doc.get("restored") or {})
    pending = [t for t in targets if t["name"] not in restored]  # a rerun after success has none
    volume = doc.get("volume_source")
    if pending and not volume:
        doc = {**doc, "staged": _stage_snapshot(ctx, doc)}
    for target in pending:
        host = _live_host(ctx, target["name"])
        if host.state not in ("stopped", "running", "pending"):
            raise ClusterNotReadyError(f"host {host.name} is {host.state}")
        source = (  # a volume of the snapshot in the host's zone, attached to it; else the staged plaintext
            (ctx.compute.attach_snapshot_volume(host, volume["snapshot_id"], doc["execution"]), "")
            if volume
            else (doc["staged"]["uri"], doc["staged"]["sha256"])
        )
        ctx.compute.run_action(
            "restore-data-dir",
            [host],
            {
                "snapshot_uri": source[0],
                "sha256": source[1],
                "initial_cluster": _initial_cluster(doc),
                "initial_cluster_token": doc["cluster_token"],
                "bump_revision": str(int(doc.get("bump_revision") or 0)),
                "old_data_suffix": doc["old_data_suffix"],
            },
        )
        restored[target["name"]] = ctx.now().isoformat()
    if volume:  # the volumes were read: detached and deleted (also by the Catch path)
        return _timed(
            {**doc, "restored": restored, "volumes_removed": remove_volumes(ctx, doc)}, "restore_members", started
        )
    remove_staged(ctx, doc)  # invariant 14: the plain snapshot lives only as long as this step
    return _timed({**doc, "restored": restored}, "restore_members", started)


def start_members(ctx: RestoreContext, doc: Document) -> Document:
    """Start every restored member; for a replay whose largest revision holds more changes than etcd's
    default --max-txn-ops, with --max-txn-ops raised to that count (:func:`replay_start_flags`)."""
    started = time.monotonic()
    initial = _initial_cluster(doc)
    flags = replay_start_flags(doc.get("pitr"))
    for target in target_hosts(doc):
        ctx.compute.start_etcd(_live_host(ctx, target["name"]), initial, "new", flags or None)
    done = {"members_started": [t["name"] for t in target_hosts(doc)], "start_flags": start_flags(flags)}
    return _timed({**doc, **done}, "start_members", started)


def start_api_servers(ctx: RestoreContext, doc: Document) -> Document:
    started = time.monotonic()
    ctx.compute.run_action("start-apiserver")
    return _timed({**doc, "apiservers_started": True}, "start_api_servers", started)


def restart_control_plane(ctx: RestoreContext, doc: Document) -> Document:
    started = time.monotonic()
    ctx.compute.run_action("restart-control-plane")
    return _timed({**doc, "control_plane_restarted": True}, "restart_control_plane", started)


def notify_failure(ctx: RestoreContext, doc: Document) -> Document:
    """The Catch path: say the exact state the cluster was left in and how to roll back; release the lock.

    The stored configuration is left as it was: a failed restore is rolled back by a human, perhaps
    onto the old hosts, so there is no membership to record yet (the health rounds see whichever runs).
    """
    caught_and_released(ctx, doc)
    return publish_failure_once(
        ctx, doc, "restore-failed", f"etcdops: RestoreCluster FAILED for {doc.get('cluster')}", failure_report(doc)
    )


STEPS: dict[str, Callable[[RestoreContext, Document], Document]] = {
    "AcquireLock": acquire_lock,
    "ValidateBackup": validate_backup,
    "Preflight": preflight,
    "NotifyStart": notify_start,
    "StopApiServers": stop_api_servers,
    "StopEtcd": stop_etcd,
    "LaunchHosts": launch_hosts,
    "RestoreMembers": restore_members,
    "StartMembers": start_members,
    "ReplayDeltas": replay,
    "VerifyRestore": verify_restore,
    "RepointClients": repoint_clients,
    "StartApiServers": start_api_servers,
    "RestartControlPlane": restart_control_plane,
    "ReleaseLock": release_lock,
    "NotifySuccess": notify_success,
    "RemoveStagedSnapshot": remove_staged_snapshot,
    "NotifyFailure": notify_failure,
}


def run_step(ctx: RestoreContext, step: str, doc: Document) -> Document:
    return dispatch(STEPS, ctx, step, doc, RestoreDocument)
