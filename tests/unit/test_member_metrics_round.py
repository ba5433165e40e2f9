"""A health round's member metrics: deltas from the sample the state store kept, published per member,
and a starved member announced once per incident (no etcd: the scraped texts are given)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from functools import partial
from typing import cast

import builders
from test_healthcheck import CONFIG, NOW
from test_member_metrics import exposition

from etcdops.adapters.aws import MemoryNotifier
from etcdops.adapters.etcd.client import EtcdClient
from etcdops.adapters.health_aws import InstanceDirectory
from etcdops.adapters.healthmetrics import RecordingMetrics, compute_health_metrics, publish_health_metrics
from etcdops.adapters.state_memory import InMemoryStateStore
from etcdops.app.healthcheck import HealthContext
from etcdops.app.member_metrics import fold_member_metrics
from etcdops.domain.member_metrics import StarvationThresholds

HEALTH = builders.cluster(builders.member(1, "m1"), builders.member(2, "m2"), observed_at=NOW)
URL1, URL2 = "https://10.0.0.1:2379", "https://10.0.0.2:2379"
FAST = [100, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]  # every fsync under 1 ms
SLOW = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 100, 0]  # every fsync between 0.5 and 1 s
fsyncs = partial(exposition, rtt=0)


def cumulative_text(*rounds: list[int]) -> str:
    return fsyncs([sum(counts) for counts in zip(*rounds, strict=True)])


def test_a_starved_member_is_announced_once_per_incident_and_its_metrics_published() -> None:
    store, notifier = InMemoryStateStore(), MemoryNotifier()
    ctx = HealthContext(CONFIG, cast(EtcdClient, None), store, RecordingMetrics(), notifier, None,
                        InstanceDirectory(CONFIG), None, starvation=StarvationThresholds())  # fmt: skip
    history: list[list[int]] = []

    def round_at(minute: int, m2: list[int]) -> list[str]:
        history.append(m2)
        texts = {URL1: cumulative_text(*[FAST] * len(history)), URL2: cumulative_text(*history), "https://x:1": ""}
        result = fold_member_metrics(ctx, HEALTH, texts, ctx.starvation, NOW + timedelta(minutes=minute))
        metrics = compute_health_metrics(HEALTH, now=NOW, quota_bytes=2**31)
        publish_health_metrics(replace(metrics, members=result.stats), ctx.metrics)
        return list(result.notices)

    assert round_at(0, FAST) == []  # the first round has no base: nothing to judge
    assert round_at(1, SLOW) == ["m2: disk: WAL fsync p99 1.0 s over 60 s (threshold 500 ms)"]
    recorded = cast(RecordingMetrics, ctx.metrics)
    assert recorded.member_values[("m2", "WalFsyncP99")] > 0.5
    assert recorded.member_values[("m1", "WalFsyncP99")] < 0.001
    assert recorded.values["MaxWalFsyncP99"] == recorded.member_values[("m2", "WalFsyncP99")]
    assert round_at(2, SLOW) == []  # the same incident
    assert round_at(3, FAST) == []  # it ended
    # a new one, 10 minutes after the last round (the notice says the window its p99 is of)
    assert round_at(13, SLOW) == ["m2: disk: WAL fsync p99 1.0 s over 10 min (threshold 500 ms)"]
    assert [subject for subject, _, _ in notifier.messages] == ["etcdops prod: member m2 is starved: disk"] * 2
    assert set(store.load_member_metrics("prod")) == {"m1", "m2"}


def test_a_member_that_did_not_answer_keeps_its_base_and_a_departed_one_is_forgotten() -> None:
    store = InMemoryStateStore()
    ctx = HealthContext(CONFIG, cast(EtcdClient, None), store, RecordingMetrics(), None, None,
                        InstanceDirectory(CONFIG), None)  # fmt: skip
    store.save_member_metrics("prod", {"gone": "{}", "m2": "not json"}, NOW)
    fold_member_metrics(ctx, HEALTH, {URL1: fsyncs(FAST), URL2: "garbage"}, ctx.starvation, NOW)
    kept = store.load_member_metrics("prod")
    assert set(kept) == {"m1"}  # m2's text was not metrics, its kept document unreadable; "gone" left

    later = fold_member_metrics(ctx, HEALTH, {URL2: fsyncs(FAST)}, ctx.starvation, NOW + timedelta(minutes=1))
    assert set(later.stats) == {"m2"} and set(store.load_member_metrics("prod")) == {"m1", "m2"}


def test_leader_changes_are_summed_over_15_minutes_across_rounds_and_published() -> None:
    store = InMemoryStateStore()
    ctx = HealthContext(CONFIG, cast(EtcdClient, None), store, RecordingMetrics(), None, None,
                        InstanceDirectory(CONFIG), None)  # fmt: skip
    recorded = cast(RecordingMetrics, ctx.metrics)

    def round_at(minute: int, seen: dict[str, int], start: float = 1000.0) -> dict[str, float]:
        texts = {URL1: fsyncs(FAST, leaders=seen["m1"]), URL2: fsyncs(FAST, leaders=seen["m2"], start=start)}
        result = fold_member_metrics(ctx, HEALTH, texts, ctx.starvation, NOW + timedelta(minutes=minute))
        publish_health_metrics(
            replace(compute_health_metrics(HEALTH, now=NOW, quota_bytes=2**31), members=result.stats), recorded
        )
        return {member: s.leader_changes_15m for member, s in result.stats.items() if s.leader_changes_15m is not None}

    assert round_at(0, {"m1": 1, "m2": 1}) == {}  # the counters since start: no base, nothing counted
    assert round_at(1, {"m1": 3, "m2": 3}) == {"m1": 2, "m2": 2}
    assert round_at(5, {"m1": 4, "m2": 4}) == {"m1": 3, "m2": 3}
    assert round_at(10, {"m1": 5, "m2": 1}, start=2000.0) == {"m1": 4, "m2": 4}  # m2 restarted: its 1 counts
    assert recorded.values["MaxLeaderChanges15m"] == 4  # what the leader-changes alarm (>= 4) judges
    assert round_at(17, {"m1": 5, "m2": 1}, start=2000.0) == {"m1": 2, "m2": 2}  # minute 1's changes left the window
    assert round_at(40, {"m1": 5, "m2": 1}, start=2000.0) == {"m1": 0, "m2": 0}
    assert recorded.member_values[("m2", "LeaderChanges15m")] == 0


def test_status_of_a_stack_shows_the_p99s_the_last_round_kept_of_each_member() -> None:
    from moto_dynamodb import state_table

    from etcdops.adapters.state_dynamodb import DynamoStateStore
    from etcdops.domain.decisions import Action, Decision
    from etcdops_local.cli.status import health_check_last_round, render_last_round

    class Session:
        def __init__(self, client: object) -> None:
            self.dynamodb = client

        def client(self, service: str) -> object:
            assert service == "dynamodb"
            return self.dynamodb

    with state_table("state") as client:
        store = DynamoStateStore("state", client)
        ctx = HealthContext(CONFIG, cast(EtcdClient, None), store, RecordingMetrics(), MemoryNotifier(), None,
                            InstanceDirectory(CONFIG), None)  # fmt: skip
        fold_member_metrics(ctx, HEALTH, {URL1: fsyncs(FAST), URL2: fsyncs(FAST)}, ctx.starvation, NOW)
        later = NOW + timedelta(minutes=1)
        fold_member_metrics(ctx, HEALTH, {URL1: cumulative_text(FAST, FAST), URL2: cumulative_text(FAST, SLOW)},
                            ctx.starvation, later)  # fmt: skip
        store.save_last_decision("prod", Decision(Action.NONE, "all well", "prod"), later)

        last = health_check_last_round(Session(client), "state", "prod", "stack prod-stack")

    members = last["metrics"]["Members"]
    assert 0.5 < members["m2"]["WalFsyncP99"] <= 1.024 and members["m1"]["WalFsyncP99"] <= 0.001
    assert render_last_round(last).splitlines()[2:] == [
        "  m1: WAL fsync 1 ms (p99 since the round before)",
        f"  m2: WAL fsync {1000 * members['m2']['WalFsyncP99']:.0f} ms (p99 since the round before)",
    ]
