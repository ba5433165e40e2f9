"""The RestoreDrill steps on real etcd, driven in runbook order as the state machine runs them (the
Catch path included): a good backup restores into a scratch member; a scratch member that refuses to
start and one whose keys differ from the backup are recorded as not restorable, with the metric, and
leave no scratch host and no plaintext; a drill that died halfway is cleaned up by the next.

On one etcd version per scenario family (the restore itself is covered on all three by
test_restore_steps.py); the live cluster is one member, since a drill never contacts it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import pytest

from etcdops.adapters.aws import MemoryNotifier
from etcdops.adapters.backup.target import open_backup_target
from etcdops.adapters.compute.factory import open_compute
from etcdops.adapters.etcd.client import EtcdClient
from etcdops.adapters.etcd.connect import client_for
from etcdops.adapters.state_memory import InMemoryStateStore
from etcdops.app.backup.catalogue import drill_results, read_drills
from etcdops.app.backup.job import run_backup
from etcdops.app.probe import probe_cluster
from etcdops.app.runbook import drill
from etcdops.domain.backup.manifest import Manifest
from etcdops.domain.errors import EtcdUnavailableError
from etcdops_local.cluster import EtcdBinaries, LocalCluster
from etcdops_local.compute import register_local_provider

pytestmark = pytest.mark.integration

STEPS = ["AcquireDrillLock", "CleanUpScratch", "PickBackup", "LaunchScratch", "RestoreScratch", "StartScratch",
         "CheckScratch"]  # fmt: skip


@pytest.fixture
def live(start_cluster: Callable[..., LocalCluster], etcd3530: EtcdBinaries) -> LocalCluster:
    cluster = start_cluster(etcd3530, members=1)
    with cluster.client() as client:
        for i in range(25):
            client.put(f"/registry/pods/p{i:02d}".encode(), f"value-{i}".encode() * 4)
        client.delete(b"/registry/pods/p00")
    return cluster


def take_backup(cluster: LocalCluster) -> Manifest:
    store, keyring = open_backup_target(cluster.config(), create_local_key=True)
    with cluster.client() as client:
        return run_backup(cluster.config(), client, probe_cluster(client), store, keyring).manifest


class Metrics:
    def __init__(self) -> None:
        self.values: dict[str, float] = {}

    def __call__(self, name: str, unit: str, value: float) -> None:
        self.values[name] = value


def context_for(cluster: LocalCluster, state: InMemoryStateStore | None = None) -> drill.DrillContext:
    register_local_provider()  # as the local stack does: the Lambda layer's factory knows only ec2
    config = cluster.config()

    def client(endpoints: Sequence[str]) -> EtcdClient:
        return client_for(config, endpoints=list(endpoints))

    return drill.DrillContext(
        config=config,
        client=client,
        scratch=lambda: open_compute(config, scratch=True),
        state=state or InMemoryStateStore(),
        notifier=MemoryNotifier(),
        backup_target=lambda: open_backup_target(config),
        metrics=Metrics(),
    )


def run_drill(
    ctx: drill.DrillContext, execution: str, *, inject: Callable[[str, dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """The state machine's order: the steps, then TearDown and RecordResult, also after a failure (Catch)."""
    doc: dict[str, Any] = {"cluster": "local", "execution": execution}
    try:
        for step in STEPS:
            if inject:
                inject(step, doc)
            doc = with_not_ready_retries(ctx, step, doc)
    except Exception as exc:
        doc = {**doc, "error": {"Error": type(exc).__name__, "Cause": str(exc)}}
    doc = drill.run_step(ctx, "TearDown", doc)
    return drill.run_step(ctx, "RecordResult", doc)


def with_not_ready_retries(ctx: drill.DrillContext, step: str, doc: dict[str, Any]) -> dict[str, Any]:
    """What the state machine's Retry does for the scratch member coming up (ClusterNotReadyError)."""
    for _ in range(60):
        try:
            return drill.run_step(ctx, step, doc)
        except drill.ClusterNotReadyError:
            time.sleep(1)
    return drill.run_step(ctx, step, doc)


def leftovers(cluster: LocalCluster) -> tuple[list[str], list[str]]:
    """Scratch hosts and staged snapshots (plaintext) that are still there."""
    ctx = context_for(cluster)
    store, _ = ctx.backup_target()
    return [h.name for h in ctx.scratch().hosts()], store.list(drill.STAGING_PREFIX + "/")


def test_a_good_backup_is_restorable_and_recorded_with_its_duration(live: LocalCluster) -> None:
    backup = take_backup(live)
    ctx = context_for(live)

    doc = run_drill(ctx, "drill-good")

    result = doc["result"]
    assert result["restorable"] is True and result["error"] is None, result
    assert result["backup_id"] == backup.id and result["seconds"] > 0
    assert (result["revision"], result["keys"], result["sampled"]) == (backup.revision, 24, 20)
    assert drill_results(read_drills(ctx.backup_target()[0]))[backup.id].restorable is True
    assert ctx.metrics.values == {"RestoreDrillFailed": 0, "LastRestoreDrillAge": 0}  # type: ignore[union-attr]
    assert leftovers(live) == ([], [])
    assert ctx.state.get_lock("local-drill") is None and ctx.notifier.messages == []  # type: ignore[attr-defined]
    # the live cluster was not touched: its one member, its keys, no scratch member among them
    with live.client() as client:
        assert [m.name for m in client.member_list()] == ["m1"]
        assert client.range(b"\0", b"\0", count_only=True).count == 24


def test_a_backup_of_a_keyspace_never_written_is_restorable(
    start_cluster: Callable[..., LocalCluster], etcd3530: EtcdBinaries
) -> None:
    # Given the backup of a new cluster (the snapshot holds no key revision: its manifest says 0)
    fresh = start_cluster(etcd3530, members=1)
    backup = take_backup(fresh)
    assert backup.revision == 0

    # When it is drilled, Then it restores (etcd serves an empty keyspace at revision 1)
    result = run_drill(context_for(fresh), "drill-empty")["result"]
    assert result["restorable"] is True and (result["revision"], result["keys"]) == (1, 0), result
    assert leftovers(fresh) == ([], [])


def break_the_scratch_database(live: LocalCluster) -> Callable[[str, dict[str, Any]], None]:
    def inject(step: str, doc: dict[str, Any]) -> None:
        if step == "StartScratch":  # the restored data directory's database is overwritten: etcd refuses it
            db = live.scratch().data_dir(doc["scratch_name"]) / "member" / "snap" / "db"
            db.write_bytes(b"\0" * db.stat().st_size)

    return inject


def add_a_key_to_the_scratch_member(live: LocalCluster) -> Callable[[str, dict[str, Any]], None]:
    def inject(step: str, doc: dict[str, Any]) -> None:
        if step == "CheckScratch":  # the scratch member holds one key more than the backup, once it is up
            with client_for(live.config(), endpoints=[doc["scratch"]["client_url"]]) as client:
                for _ in range(60):
                    try:
                        client.put(b"/not/in/the/backup", b"x")
                        return
                    except EtcdUnavailableError:
                        time.sleep(0.5)
                client.put(b"/not/in/the/backup", b"x")

    return inject


@pytest.mark.parametrize(
    ("inject", "error", "says"),
    [
        (break_the_scratch_database, "ScratchMemberDidNotStartError", "exited after it was started"),
        (add_a_key_to_the_scratch_member, "DrillCheckFailedError", "25 live keys, the backup's 24"),
    ],
    ids=["refuses-to-start", "key-count-differs"],
)
def test_a_backup_that_does_not_come_up_is_not_restorable_and_leaves_nothing(
    live: LocalCluster, inject: Callable[[LocalCluster], Callable[[str, dict[str, Any]], None]], error: str, says: str
) -> None:
    backup = take_backup(live)
    ctx = context_for(live)

    doc = run_drill(ctx, f"drill-{error}", inject=inject(live))

    assert doc["error"]["Error"] == error, doc["error"]
    result = doc["result"]
    assert result["restorable"] is False and says in result["error"], result
    assert drill_results(read_drills(ctx.backup_target()[0]))[backup.id].restorable is False
    assert ctx.metrics.values["RestoreDrillFailed"] == 1  # type: ignore[union-attr]
    [(subject, body, _)] = ctx.notifier.messages  # type: ignore[attr-defined]
    assert "restore drill of cluster local failed" in subject and says in body
    assert leftovers(live) == ([], [])
    assert not live.scratch().member_dir(doc["scratch_name"]).exists()
    assert ctx.state.get_lock("local-drill") is None


def test_a_drill_that_died_halfway_is_cleaned_up_by_the_next(live: LocalCluster) -> None:
    take_backup(live)
    state = InMemoryStateStore()
    ctx = context_for(live, state)
    # Given a drill that died after its scratch member started (no TearDown, no RecordResult), and the
    # plaintext a restore step cut off by the crash left staged
    doc: dict[str, Any] = {"cluster": "local", "execution": "drill-crashed"}
    for step in STEPS[:6]:
        doc = drill.run_step(ctx, step, doc)
    store, _ = ctx.backup_target()
    store.put_bytes(f"{drill.STAGING_PREFIX}/crashedtry.snapshot", b"plaintext a crash left")
    assert leftovers(live) == ([doc["scratch_name"]], [f"{drill.STAGING_PREFIX}/crashedtry.snapshot"])

    # When the next drill runs once the dead one's lease ran out
    later = context_for(live, state)
    later.now = lambda: ctx.now() + timedelta(seconds=drill.LOCK_LEASE_SECONDS + 60)
    done = run_drill(later, "drill-next")

    # Then it removed what the dead one left, restored and recorded the backup, and left nothing itself
    staged = [f"{drill.STAGING_PREFIX}/crashedtry.snapshot"]
    assert done["cleaned_up"] == {"hosts": [doc["scratch_name"]], "staged": staged}
    assert done["result"]["restorable"] is True
    assert leftovers(live) == ([], [])
