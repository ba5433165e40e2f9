"""The steps of the RestoreDrill runbook: prove, weekly, that the newest verified backup restores.

A hash proves a backup is intact, not that it restores. A drill restores it into a scratch
single-member etcd on a throwaway host of the compute provider's scratch pool (locally: a process of
the scratch stack ``drill/``) and checks what comes up. Like the other runbooks every step takes the
execution's document and returns it extended, and converges when run again.

1. ``AcquireDrillLock`` — one drill per cluster at a time, under its own lock (``<cluster>-drill``),
   never the cluster lock: a drill changes nothing of the live cluster, so it never defers a repair.
2. ``CleanUpScratch`` — invariant 18: every scratch host and staged snapshot an earlier drill that
   died halfway left behind is removed (we hold the drill lock, so none is in use).
3. ``PickBackup`` — the newest verified backup in the catalogue (or the one named in ``backup_id``),
   decrypted and checked against its manifest on the stream; a second checked pass replays its "key"
   bucket: the live key count and a sample of keys with their values' digests.
4. ``LaunchScratch`` — the scratch host, named ``drill-<execution tail>``.
5. ``RestoreScratch`` — the plain snapshot staged under ``drill-staging/``, restored by the host
   action ``restore-data-dir`` as a new one-member cluster (no revision bump), the staged plaintext
   removed at the end of the step, whatever happened (invariant 14).
6. ``StartScratch``; ``CheckScratch`` — it started (a member that exited refused to start), its
   revision is the manifest's, its live key count is the backup's, the sampled keys hold the
   backup's values.
7. ``TearDown`` — the scratch host terminated and any staged plaintext removed; the first state of
   the Catch path too, so a failed drill leaves nothing either.
8. ``RecordResult`` — the drill record in the catalogue (``drills/<drill id>.json``: restorable,
   when, how long, what was found), the metrics ``RestoreDrillFailed`` and ``LastRestoreDrillAge``,
   one SNS message when the backup did not restore, the drill lock released.

A drill never contacts the live cluster's members, hosts, load balancer or lock (invariant 18).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from etcdops.adapters.aws import Notifier
from etcdops.adapters.backup.crypto import KeyProvider
from etcdops.adapters.backup.store import BackupStore
from etcdops.adapters.bbolt_keys import live_keys, value_digest
from etcdops.adapters.compute.factory import SCRATCH_SUFFIX
from etcdops.adapters.etcd.client import EtcdClient
from etcdops.adapters.state import StateStore
from etcdops.app.backup.catalogue import list_backups, load_manifest, read_drills, record_drill
from etcdops.app.backup.verify import checked_plaintext
from etcdops.app.runbook import (
    ClusterNotReadyError,
    InvalidRunbookInputError,
    RunbookError,
    caught_error,
    dispatch,
    execution_tail,
    first_time,
    require_configured_cluster,
    stage_plaintext,
)
from etcdops.domain.backup.manifest import DrillRecord, new_backup_id
from etcdops.domain.compute.base import ComputeProvider, Host
from etcdops.domain.config import ClusterConfig
from etcdops.domain.errors import Backoff, EtcdopsError
from etcdops.domain.runbook_documents import DrillDocument

Document = dict[str, Any]
LOCK_LEASE_SECONDS = 3600
SAMPLE_SIZE = 20
STAGING_PREFIX = "drill-staging"
HOST_PREFIX = "drill-"
MetricsSink = Callable[[str, str, float], None]  # name, unit, value (dimension: the cluster)


class NoBackupToDrillError(RunbookError):
    """The catalogue holds no verified backup (or not the one named)."""


class ScratchMemberDidNotStartError(RunbookError):
    """The scratch member exited after it was started: the backup's data did not come up."""


class DrillCheckFailedError(RunbookError):
    """The scratch member came up, but not with the backup's data (revision, key count or values)."""


STEP_RETRY: dict[str, dict[type[EtcdopsError], Backoff]] = {
    "CheckScratch": {ClusterNotReadyError: Backoff(interval_seconds=2, max_attempts=30, rate=1.0)},
}
"""Steps that wait longer than the default for an error (see :mod:`etcdops_local.retry_contract`)."""


@dataclass
class DrillContext:
    """What the steps need, passed in by the handler (AWS) or the tests."""

    config: ClusterConfig
    client: Callable[[Sequence[str]], EtcdClient]  # a client for these client URLs (TLS from the config)
    scratch: Callable[[], ComputeProvider]  # the compute provider's scratch pool, never the cluster's hosts
    state: StateStore
    notifier: Notifier
    backup_target: Callable[[], tuple[BackupStore, KeyProvider]]
    now: Callable[[], datetime] = lambda: datetime.now(UTC)
    staging: Callable[[], BackupStore] | None = None  # None: under drill-staging/ in the backup store
    metrics: MetricsSink | None = None


def _lock_name(cluster: str) -> str:
    return f"{cluster}{SCRATCH_SUFFIX}"


def _staging(ctx: DrillContext) -> BackupStore:
    return ctx.staging() if ctx.staging is not None else ctx.backup_target()[0]


def _staged_key(doc: Document) -> str:
    return f"{STAGING_PREFIX}/{execution_tail(doc)}.snapshot"


def _remove_staged(ctx: DrillContext, prefix: str) -> list[str]:
    """Every staged snapshot (and unfinished upload) under ``prefix``: the keys removed."""
    staging = _staging(ctx)
    removed = staging.abort_uploads(prefix)
    for key in staging.list(prefix):
        staging.delete(key)
        removed.append(key)
    return removed


def _scratch_host(ctx: DrillContext, doc: Document) -> Host:
    host = ctx.scratch().find(doc["scratch_name"])
    if host is None:
        raise ClusterNotReadyError(f"scratch host {doc['scratch_name']} is not there (yet)")
    return host


# ---- the steps, in runbook order --------------------------------------------------------------


def acquire_drill_lock(ctx: DrillContext, doc: Document) -> Document:
    if not doc.get("cluster") or not doc.get("execution"):
        raise InvalidRunbookInputError("runbook input: missing cluster or execution")
    require_configured_cluster(ctx.config, doc)
    lock = ctx.state.acquire_lock(_lock_name(doc["cluster"]), doc["execution"], LOCK_LEASE_SECONDS, ctx.now())
    return {
        **doc,
        "lock_owner": lock.owner,
        "started_at": doc.get("started_at") or ctx.now().isoformat(),
        "drill_id": doc.get("drill_id") or new_backup_id(ctx.now()),
        "scratch_name": f"{HOST_PREFIX}{execution_tail(doc)}",
    }


def clean_up_scratch(ctx: DrillContext, doc: Document) -> Document:
    """Invariant 18: what earlier drills left (we hold the drill lock: no other drill is running)."""
    scratch = ctx.scratch()
    hosts = []
    for host in scratch.hosts():
        scratch.terminate(host)
        hosts.append(host.name)
    staged = _remove_staged(ctx, f"{STAGING_PREFIX}/")
    return {**doc, "cleaned_up": {"hosts": hosts, "staged": staged}}


def pick_backup(ctx: DrillContext, doc: Document) -> Document:
    """The backup to drill, checked on the decrypted stream; its live keys and a sample of them."""
    store, keyring = ctx.backup_target()
    if doc.get("backup_id"):
        manifest = load_manifest(store, str(doc["backup_id"]))
        if not manifest.verified:
            raise NoBackupToDrillError(f"backup {manifest.id} is not verified")
    else:
        verified = [m for m in list_backups(store) if m.verified]
        if not verified:
            raise NoBackupToDrillError(f"no verified backup in {store.uri} to drill")
        manifest = verified[-1]
    snapshot = checked_plaintext(store, keyring, manifest, cluster=ctx.config.name)
    for _chunk in snapshot:
        pass  # checked against the manifest at its end
    page_size = snapshot.summary.page_size if snapshot.summary else 0
    again = lambda: checked_plaintext(store, keyring, manifest, cluster=ctx.config.name)  # noqa: E731
    keys = live_keys(snapshot.summarizer, page_size, again)
    sample = [[base64.b64encode(k).decode(), d.hex()] for k, d in keys.sample(SAMPLE_SIZE)]
    # a keyspace never written has no revision in the snapshot (0, as `etcdutl snapshot status` says) but
    # etcd serves it at revision 1: that is the revision a faithful restore comes up with
    expected = {"revision": max(manifest.revision, 1), "keys": keys.count, "sample": sample}
    return {**doc, "backup_id": manifest.id, "backup_created_at": manifest.created_at.isoformat(), "expected": expected}


def launch_scratch(ctx: DrillContext, doc: Document) -> Document:
    host = ctx.scratch().launch(doc["scratch_name"])
    return {**doc, "scratch": {"name": host.name, "host_id": host.host_id, "client_url": host.client_url}}


def restore_scratch(ctx: DrillContext, doc: Document) -> Document:
    """The backup restored into the scratch host's data directory; the staged plaintext removed always."""
    if doc.get("scratch_restored"):
        return doc
    host = _scratch_host(ctx, doc)
    store, keyring = ctx.backup_target()
    manifest = load_manifest(store, doc["backup_id"])
    key = _staged_key(doc)
    try:
        staging = _staging(ctx)
        if staging.exists(key):
            staging.delete(key)  # an earlier try of this step was cut off after staging
        staged = stage_plaintext(staging, key, checked_plaintext(store, keyring, manifest, cluster=ctx.config.name))
        ctx.scratch().run_action(
            "restore-data-dir",
            [host],
            {
                "snapshot_uri": staged["uri"],
                "sha256": staged["sha256"],
                "initial_cluster": f"{host.name}={host.peer_url}",
                "initial_cluster_token": f"drill-{execution_tail(doc)}",
                "bump_revision": "0",
                "old_data_suffix": f"drill-{execution_tail(doc)}",
            },
        )
    finally:
        _remove_staged(ctx, key)  # invariant 14: the plaintext lives only as long as this step
    return {**doc, "scratch_restored": ctx.now().isoformat()}


def start_scratch(ctx: DrillContext, doc: Document) -> Document:
    host = _scratch_host(ctx, doc)
    ctx.scratch().start_etcd(host, f"{host.name}={host.peer_url}", "new")
    return {**doc, "scratch_started": ctx.now().isoformat()}


def check_scratch(ctx: DrillContext, doc: Document) -> Document:
    """It started; its revision, live key count and sampled values are the backup's."""
    host = _scratch_host(ctx, doc)
    if host.state == "stopped":
        raise ScratchMemberDidNotStartError(
            f"the scratch member {host.name} restored from backup {doc['backup_id']} exited after it was started: "
            "the backup did not come up"
        )
    expected = doc["expected"]
    try:
        with ctx.client([host.client_url]) as client:
            revision = client.status(host.client_url).revision
            count = client.range(b"\0", b"\0", count_only=True).count
            values = {key: client.get(base64.b64decode(key)) for key, _digest in expected["sample"]}
    except EtcdopsError as exc:
        if not exc.retryable:
            raise
        raise ClusterNotReadyError(f"the scratch member {host.name} does not answer yet: {exc}") from exc
    problems = []
    if revision != expected["revision"]:
        problems.append(f"revision {revision}, the manifest's {expected['revision']}")
    if count != expected["keys"]:
        problems.append(f"{count} live keys, the backup's {expected['keys']}")
    wrong = [k for k, d in expected["sample"] if values[k] is None or value_digest(values[k] or b"").hex() != d]
    if wrong:
        problems.append(f"{len(wrong)} of {len(expected['sample'])} sampled keys differ from the backup")
    observed = {"revision": revision, "keys": count, "sampled": len(expected["sample"])}
    if problems:
        raise DrillCheckFailedError(
            f"the scratch member restored from backup {doc['backup_id']} has " + "; ".join(problems)
        )
    return {**doc, "observed": observed}


def tear_down(ctx: DrillContext, doc: Document) -> Document:
    """The scratch host and any staged plaintext of this drill, gone; also the Catch path's first state."""
    if not doc.get("scratch_name"):
        return doc  # refused before anything was launched or staged
    scratch = ctx.scratch()
    host = scratch.find(doc["scratch_name"])
    if host is not None:
        scratch.terminate(host)
    removed = _remove_staged(ctx, _staged_key(doc))
    return {**doc, "torn_down": {"host": host.name if host else None, "staged": removed}}


def record_result(ctx: DrillContext, doc: Document) -> Document:
    """The drill record, the metrics, a message when the backup did not restore, the lock released."""
    error = doc.get("error")
    if error and error.get("Error") == "LockHeldError":
        return {**doc, "result": None}  # another drill runs: nothing of ours to record or release
    finished = ctx.now()
    started = datetime.fromisoformat(doc["started_at"]) if doc.get("started_at") else finished
    observed = doc.get("observed") or {}
    restorable = not error and bool(observed)
    why = caught_error(error) if error else None
    if doc.get("teardown_error"):
        failed = caught_error(doc["teardown_error"])
        why = f"{why or 'restorable'}; tearing the scratch host down failed ({failed}); the next drill removes it"
    record = DrillRecord(
        drill_id=doc.get("drill_id") or new_backup_id(finished),
        execution=str(doc.get("execution") or "unknown"),
        backup_id=doc.get("backup_id"),
        restorable=restorable,
        started_at=started,
        finished_at=finished,
        seconds=max(0.0, (finished - started).total_seconds()),
        revision=observed.get("revision"),
        keys=observed.get("keys"),
        sampled=observed.get("sampled", 0),
        error=why if not restorable or doc.get("teardown_error") else None,
    )
    store, _keyring = ctx.backup_target()
    record_drill(store, record)
    _publish(ctx, store, record)
    if not restorable and first_time(ctx, doc, "drill-failed"):
        ctx.notifier.publish(
            f"etcdops: restore drill of cluster {doc.get('cluster')} failed",
            f"Restore drill {doc.get('execution')} of backup {record.backup_id or '(none)'}: the backup did not "
            f"restore into a scratch member. {why}\nThe scratch host and the staged snapshot were removed; the live "
            "cluster was not touched. Run `etcdops backup verify` on the backup and take a new one "
            "(`etcdops backup run`); the next drill tries again.",
        )
    if doc.get("lock_owner"):
        ctx.state.release_lock(_lock_name(str(doc["cluster"])), str(doc["lock_owner"]))
    return {**doc, "result": record.model_dump(mode="json")}


def _publish(ctx: DrillContext, store: BackupStore, record: DrillRecord) -> None:
    """``RestoreDrillFailed`` (1 or 0) and ``LastRestoreDrillAge``: seconds since the newest drill that
    restored its backup (absent when none ever did)."""
    if ctx.metrics is None:
        return
    ctx.metrics("RestoreDrillFailed", "Count", 0 if record.restorable else 1)
    good = [r.finished_at for r in read_drills(store) if r.restorable]
    if good:
        ctx.metrics("LastRestoreDrillAge", "Seconds", max(0.0, (record.finished_at - max(good)).total_seconds()))


STEPS: dict[str, Callable[[DrillContext, Document], Document]] = {
    "AcquireDrillLock": acquire_drill_lock,
    "CleanUpScratch": clean_up_scratch,
    "PickBackup": pick_backup,
    "LaunchScratch": launch_scratch,
    "RestoreScratch": restore_scratch,
    "StartScratch": start_scratch,
    "CheckScratch": check_scratch,
    "TearDown": tear_down,
    "RecordResult": record_result,
}


def run_step(ctx: DrillContext, step: str, doc: Document) -> Document:
    started = time.monotonic()
    out = dispatch(STEPS, ctx, step, doc, DrillDocument)
    timings = dict(out.get("timings") or {})
    timings[step] = round(time.monotonic() - started, 3)
    return {**out, "timings": timings}
