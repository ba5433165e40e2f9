"""The MaintainCluster steps on real 3-member TLS clusters, driven in runbook order, each step twice.

Each step is called twice in a row, as after a crash right after it finished (invariant 7). Two scenarios:
a cluster filled to NOSPACE under a small quota (``local up --quota-backend-bytes``) brought back to
accepting writes, on 3.4.23 and 3.5.30 (what the version changes here: how the quota is checked and
the alarm raised and disarmed; 3.4 is the oldest); and a fragmented cluster defragmented by rule while a
writer runs, on 3.5.1 (defragmentation itself has not changed across the versions; this makes the file
cover the third version), the leader last. What the version does not change is tested once.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import pytest
from builders import QUOTA, Writer, discard, fill_to_nospace, none_lost, write_until_nospace
from etcd_versions import etcd_flavour
from retries import with_retries
from test_replace_steps import context_for

from etcdops.adapters.state import LockHeldError
from etcdops.app.probe import probe_cluster
from etcdops.app.runbook import RunbookContext, maintain
from etcdops.domain.health import discount_alarm_reports
from etcdops_local.cluster import EtcdBinaries, LocalCluster

pytestmark = pytest.mark.integration

PER_MEMBER = ["MoveLeadership", "Defragment", "WaitMemberReady"]
AFTER_LOOP = ["Disarm", "ReleaseLock", "NotifySuccess"]


def twice(ctx: RunbookContext, step: str, doc: dict[str, Any]) -> dict[str, Any]:
    for _ in range(2):
        doc = with_retries(lambda doc=doc: maintain.run_step(ctx, step, doc))  # type: ignore[misc]
    return doc


def run_maintain(ctx: RunbookContext, doc: dict[str, Any], windows: list[tuple[float, float]]) -> dict[str, Any]:
    """The state machine's order, every step twice; ``windows`` gets when each member's pause ran (its
    leadership moved away, its defragmentation)."""
    for step in ("AcquireLock", "Assess"):
        doc = twice(ctx, step, doc)
    if doc["mode"] == "skipped":
        return twice(ctx, "ReleaseLock", doc)
    doc = twice(ctx, "Compact", doc)
    while not (doc := twice(ctx, "NextMember", doc))["done"]:
        started = time.monotonic()
        for step in PER_MEMBER:
            doc = twice(ctx, step, doc)
            if step == "Defragment":
                windows.append((started, time.monotonic()))
    for step in AFTER_LOOP:
        doc = twice(ctx, step, doc)
    return doc


def maintenance_context(cluster: LocalCluster, **maintenance: Any) -> RunbookContext:
    ctx = context_for(cluster)
    ctx.config = ctx.config.model_copy(
        update={"maintenance": ctx.config.maintenance.model_copy(update=maintenance)}
    )
    return ctx


@pytest.fixture
def small_cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    """A 3-member cluster of the flavour given, made by ``local up --quota-backend-bytes`` 512 KiB."""
    cluster = LocalCluster(tmp_path / "stack")
    cluster.up(3, binaries=etcd_flavour(request.param), quota_backend_bytes=QUOTA)
    try:
        yield cluster
    finally:
        discard(cluster)


@pytest.mark.parametrize("small_cluster", ["etcd34", "etcd3530"], indirect=True)
def test_nospace_recovered_each_step_twice(small_cluster: LocalCluster) -> None:
    cluster = small_cluster
    # Given a cluster filled to NOSPACE by overwrites (history that compaction can free)
    acked, refused = fill_to_nospace(cluster)
    with cluster.client() as client:
        assert {a.alarm for a in client.alarms()} == {"NOSPACE"}
        leader = discount_alarm_reports(probe_cluster(client)).leader
    ctx = maintenance_context(cluster, retention_revisions=8, pause_between_members_seconds=0)

    # When MaintainCluster runs, every step twice
    doc = run_maintain(ctx, {"cluster": "local", "execution": "maintain-nospace-1"}, [])

    # Then it recovered: compacted, every member defragmented (the leader of the start last), alarm disarmed
    assert doc["mode"] == "nospace", doc["skipped"]
    assert doc["compaction"]["revision"] is not None
    order = [d["name"] for d in doc["defragmented"]]
    assert sorted(order) == ["m1", "m2", "m3"] and [d["was_leader"] for d in doc["defragmented"]] == [
        False,
        False,
        True,
    ]
    assert f"{leader:x}" == doc["defragmented"][-1]["id"]
    assert all(d["after"] < 0.9 * QUOTA for d in doc["defragmented"])
    with cluster.client() as client:
        assert client.alarms() == []
        # and writes are accepted again, and no acknowledged write was lost
        client.put("/after", "ok")
        stored = {kv.key: kv.value for kv in client.range(b"/fill/", prefix=True).kvs}
    assert none_lost(stored, acked, refused)
    ((subject, body, _),) = ctx.notifier.messages  # type: ignore[attr-defined]
    assert subject == "etcdops: local recovered from NOSPACE; writes accepted again" and "Alarm disarmed" in body


@pytest.mark.parametrize("small_cluster", ["etcd3530"], indirect=True)
def test_nospace_not_cleared_escalates_with_the_numbers(small_cluster: LocalCluster) -> None:
    cluster = small_cluster
    # Given a cluster out of space with live data only (distinct keys: nothing for compaction to free)
    write_until_nospace(cluster, ((f"/live/{i}".encode(), b"x" * 8192) for i in itertools.count()), QUOTA)
    ctx = maintenance_context(cluster, retention_revisions=8, pause_between_members_seconds=0)
    # When MaintainCluster runs, Then Disarm refuses with each member's numbers and the alarm stays
    doc = {"cluster": "local", "execution": "maintain-nospace-2"}
    for step in ("AcquireLock", "Assess", "Compact"):
        doc = twice(ctx, step, doc)
    while not (doc := twice(ctx, "NextMember", doc))["done"]:
        for step in PER_MEMBER:
            doc = twice(ctx, step, doc)
    with pytest.raises(maintain.NospaceNotClearedError, match=r"m1 \(\w+\): \d+ bytes \(\d+ % of quota\)"):
        maintain.run_step(ctx, "Disarm", doc)
    failed = maintain.run_step(ctx, "NotifyFailure", {**doc, "error": {"Error": "NospaceNotClearedError"}})
    assert failed is not None and ctx.notifier.messages[-1][0].startswith("etcdops: MaintainCluster FAILED")  # type: ignore[attr-defined]
    with cluster.client() as client:
        assert {a.alarm for a in client.alarms()} == {"NOSPACE"}
    assert ctx.state.get_lock("local") is None or not ctx.state.get_lock("local").is_active(ctx.now())  # type: ignore[union-attr]


def test_fragmented_cluster_defragmented_with_a_writer_leader_last(start_cluster: Any, etcd351: EtcdBinaries) -> None:
    # Given a 3-member cluster whose files are mostly free pages (2 MB written, deleted, compacted)
    cluster: LocalCluster = start_cluster(etcd351)
    with cluster.client() as client:
        for i in range(256):
            client.put(f"/bulk/{i}", b"b" * 8192)
        client.delete("/bulk/", prefix=True)
        client.compact(client.status().revision)
        # etcd counts the pages compaction freed only once later backend commits have released them: write
        # until every member reports its file mostly free (how soon is the machine's speed, not the runbook's)
        give_up, urls = time.monotonic() + 60, [m.client_url for m in cluster.state().members]  # a hang guard only
        while not all(s.db_size_in_use < 0.5 * s.db_size for s in map(client.status, urls)):
            assert time.monotonic() < give_up, "the members never reported the compacted pages free"
            client.put("/settle", "x")
            time.sleep(0.05)
        leader = probe_cluster(client).leader
    ctx = maintenance_context(
        cluster, defrag_min_db_bytes=1024 * 1024, retention_revisions=100, pause_between_members_seconds=0
    )
    writer = Writer(cluster)
    writer.thread.start()

    # When MaintainCluster runs, every step twice, while the writer writes
    windows: list[tuple[float, float]] = []
    doc = run_maintain(ctx, {"cluster": "local", "execution": "maintain-defrag-1"}, windows)

    # Then every member was defragmented once, one at a time, the leader of the start last
    assert doc["mode"] == "routine" and [d["was_leader"] for d in doc["defragmented"]] == [False, False, True]
    assert f"{leader:x}" == doc["defragmented"][-1]["id"]
    assert doc["defragmented"][-1]["leadership_moved_to"] in [d["name"] for d in doc["defragmented"][:2]]
    # and each gave back about what the rule predicted (the writer adds a little meanwhile)
    for d in doc["defragmented"]:
        assert d["predicted"] > 1024 * 1024 and d["returned"] >= 0.8 * d["predicted"], d
    # and no acknowledged write was lost, and no write failed outside a member's pause
    assert writer.acked and not writer.lost()
    assert writer.failed_outside(windows) == []

    # When it runs again, Then the rule finds nothing worth defragmenting, and says why
    again = run_maintain(ctx, {"cluster": "local", "execution": "maintain-defrag-2"}, [])
    assert again["defragmented"] == [] and "skipped: below 45 % fragmented" in again["approval_summary"]
    # and each run's message counts the members it defragmented in words
    assert [m[0] for m in ctx.notifier.messages] == [  # type: ignore[attr-defined]
        "etcdops: maintained local (3 members defragmented)",
        "etcdops: maintained local (0 members defragmented)",
    ]

    # When a member is down, Then maintenance is skipped with the reason, nothing changed
    cluster.kill(doc["defragmented"][0]["name"])
    skipped = run_maintain(ctx, {"cluster": "local", "execution": "maintain-defrag-3"}, [])
    assert skipped["mode"] == "skipped" and any(doc["defragmented"][0]["name"] in r for r in skipped["skipped"])
    # and while another runbook holds the lock, it does not start
    ctx.state.acquire_lock("local", "someone-else", 600, ctx.now())
    with pytest.raises(LockHeldError):
        maintain.run_step(ctx, "AcquireLock", {"cluster": "local", "execution": "maintain-defrag-4"})
