"""Maintenance rules (MaintainCluster): defragmentation by rule with reasons, the order (leader last),
compaction to the retention revision (not fighting Kubernetes), and when NOSPACE may be disarmed."""

from __future__ import annotations

from builders import cluster, member
from hypothesis import given
from hypothesis import strategies as st

from etcdops.domain.health import Alarm
from etcdops.domain.maintenance import (
    DefragRule,
    compaction_plan,
    defrag_order,
    defrag_verdict,
    disarm_verdict,
    fragmented_ratio,
)

MB = 1024 * 1024
RULE = DefragRule(min_fragmented_ratio=0.45, min_db_bytes=100 * MB)
sizes = st.integers(min_value=0, max_value=8 * 1024 * MB)


@given(size=sizes, data=st.data())
def test_defragment_exactly_when_fragmented_enough_and_big_enough(size: int, data: st.DataObject) -> None:
    used = data.draw(st.integers(min_value=0, max_value=size))
    verdict = defrag_verdict(member(1, db_size=size, db_size_in_use=used), RULE)
    ratio = fragmented_ratio(size, used)
    assert verdict.defragment == (ratio >= 0.45 and size >= 100 * MB)
    assert verdict.reclaimable_bytes == size - used and len(verdict.reasons) == 1
    reason = verdict.reasons[0]
    assert reason.startswith(f"etcd-1: {size} bytes, {used} in use")
    assert ("below 45 % fragmented" in reason) == (ratio < 0.45)
    assert ("smaller than" in reason) == (size < 100 * MB)


@given(size=sizes, data=st.data())
def test_nospace_recovery_defragments_every_member_that_answered(size: int, data: st.DataObject) -> None:
    used = data.draw(st.integers(min_value=0, max_value=size))
    assert defrag_verdict(member(1, db_size=size, db_size_in_use=used), RULE, nospace=True).defragment
    silent = defrag_verdict(member(2, healthy=False), RULE, nospace=True)
    assert not silent.defragment and "no status" in silent.reasons[0]


def test_the_documented_examples() -> None:
    assert defrag_verdict(member(1, db_size=200 * MB, db_size_in_use=100 * MB), RULE).defragment
    small = defrag_verdict(member(1, db_size=50 * MB, db_size_in_use=1 * MB), RULE)
    assert not small.defragment and "smaller than 104857600 bytes" in small.reasons[0]
    dense = defrag_verdict(member(1, db_size=1000 * MB, db_size_in_use=600 * MB), RULE)
    assert not dense.defragment and "below 45 % fragmented" in dense.reasons[0]


@given(leader=st.sampled_from([1, 2, 3, 4, 5]), due=st.sets(st.sampled_from([1, 2, 3, 4, 5]), min_size=1))
def test_the_leader_goes_last_and_every_due_member_once(leader: int, due: set[int]) -> None:
    health = cluster(*(member(i) for i in range(1, 6)), leader=leader)
    order = defrag_order(health, [f"etcd-{i}" for i in sorted(due, reverse=True)])
    assert sorted(order) == sorted(f"etcd-{i}" for i in due)
    if leader in due:
        assert order[-1] == f"etcd-{leader}"
    assert order[: len(order) - (leader in due)] == sorted(f"etcd-{i}" for i in due if i != leader)


@given(current=st.integers(min_value=0, max_value=10**9), keep=st.integers(min_value=0, max_value=10**6))
def test_compaction_keeps_the_retention_and_leaves_kubernetes_alone(current: int, keep: int) -> None:
    plan = compaction_plan(current, keep, external_compactor=False)
    assert plan.revision == (current - keep if current - keep > 1 else None)
    assert compaction_plan(current, keep, external_compactor=True).revision is None
    assert "Kubernetes" in compaction_plan(current, keep, external_compactor=True).reason
    # out of space, Kubernetes' own compaction (a write) is refused too: recovery compacts anyway
    assert compaction_plan(current, keep, external_compactor=True, nospace=True) == plan


def test_disarm_only_when_every_member_is_below_the_ratio() -> None:
    nospace = (Alarm(member_id=1, alarm="NOSPACE"),)
    below = cluster(member(1, db_size=800), member(2, db_size=899), alarms=nospace)
    assert disarm_verdict(below, quota_bytes=1000, disarm_ratio=0.9).disarm
    one_over = cluster(member(1, db_size=800), member(2, db_size=900), alarms=nospace)
    verdict = disarm_verdict(one_over, quota_bytes=1000, disarm_ratio=0.9)
    assert not verdict.disarm and verdict.over == ("etcd-2 (2)",) and verdict.limit_bytes == 900
    assert verdict.numbers == ("etcd-1 (1): 800 bytes (80 % of quota)", "etcd-2 (2): 900 bytes (90 % of quota)")
    silent = cluster(member(1, db_size=10), member(2, healthy=False), alarms=nospace)
    assert not disarm_verdict(silent, quota_bytes=1000, disarm_ratio=0.9).disarm

