"""The ScaleCluster rules (etcdops.domain.scale), pure: the sizes it scales to, when it may change the
cluster, and the path from any size to 3, 5 or 7: one member at a time, at most one learner, never the
leader removed, never fewer failures tolerated than at the start or the end. And the state machine file
names exactly the runbook's steps."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import pytest
from builders import cluster, member
from hypothesis import given
from hypothesis import strategies as st

from etcdops.app.runbook import scale as runbook
from etcdops.domain.health import Alarm, ClusterHealth, quorum_of
from etcdops.domain.policy import change_safety
from etcdops.domain.scale import SIZES, Stage, next_change, plan, refusals, size_refusal, summary, tolerance

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("size", SIZES)
def test_3_5_and_7_are_sizes_etcdops_scales_to(size: int) -> None:
    assert size_refusal(size) is None


@pytest.mark.parametrize(
    ("size", "why"),
    [
        (4, "size 4 is even: 4 voters tolerate 1 failed member, no more than 3 do"),
        (2, "size 2 is even: 2 voters tolerate 0 failed members, no more than 1 do"),
        (6, "use 5 or 7"),
        (8, "size 8 is beyond 7"),
        (9, "size 9 is beyond 7"),
        (0, "size 0 is below 1"),
        (-3, "size -3 is below 1"),
        (1, "size 1 tolerates no failed member"),
        ("five", "'five' is not a whole number"),
        (True, "True is not a whole number"),
        (None, "None is not a whole number"),
    ],
)
def test_any_other_size_is_refused_in_one_line_with_the_reason(size: object, why: str) -> None:
    refusal = size_refusal(size)
    assert refusal is not None and why in refusal and "\n" not in refusal, refusal


def three(**kwargs: object) -> ClusterHealth:
    return cluster(member(1), member(2), member(3), **kwargs)  # type: ignore[arg-type]


def test_a_cluster_changes_its_size_only_when_every_member_is_healthy_with_no_learner_and_no_alarm() -> None:
    assert refusals(three()) == []
    sick = cluster(member(1), member(2, healthy=False), member(3))
    assert refusals(sick) == ["member etcd-2 (2) is not healthy (context deadline exceeded)"]
    learner = cluster(member(1), member(2), member(3), member(4, learner=True))
    assert refusals(learner) == ["learner etcd-4 (4) is in the cluster; promote or remove it first"]
    assert refusals(three(alarms=(Alarm(2, "NOSPACE"),))) == ["alarm NOSPACE is raised on member 2"]
    assert "no leader" in refusals(three(leader=None))[0]


def healthy_cluster(voters: int, leader: int) -> ClusterHealth:
    return cluster(*(member(i + 1) for i in range(voters)), leader=leader)


@given(start=st.integers(min_value=1, max_value=9), size=st.sampled_from(SIZES), data=st.data())
def test_from_any_size_one_member_at_a_time_the_cluster_never_tolerates_fewer_failures(
    start: int, size: int, data: st.DataObject
) -> None:
    # Given a healthy cluster of ``start`` voters, with any of them leading
    health = healthy_cluster(start, data.draw(st.integers(min_value=1, max_value=start)))
    floor = min(tolerance(start), tolerance(size))
    seen: list[Stage] = []
    next_id = 100
    for _ in range(2 * abs(start - size) + 1):
        # When the runbook asks for the next change from what the cluster is now
        assert refusals(health) == []
        change = next_change(health, size)
        assert next_change(health, size) == change  # the same answer when a step is retried
        if change.kind == "done":
            break
        if change.kind == "add":
            # a learner first (the only one), then a voter once promoted; adding needs the current quorum
            assert change_safety(health, None).safe
            learner = member(next_id, learner=True)
            seen.append(Stage(len(health.voters), 1))
            assert len([*health.learners, learner]) == 1
            health = cluster(*health.members, member(next_id), leader=health.leader)
            next_id += 1
        else:
            # never the leader, and only while the others keep a quorum with and without it
            assert change.member is not None and change.member.id != health.leader
            assert change_safety(health, change.member.id).safe
            rest = [m for m in health.members if m.id != change.member.id]
            health = cluster(*rest, leader=health.leader)
        assert len(health.voters) == change.voters_after
        seen.append(Stage(len(health.voters), 0))
        # Then it never tolerates fewer failed members than at the start or the end, and keeps a quorum
        assert all(s.tolerance >= floor and s.learners <= 1 for s in seen), seen
        assert len(health.healthy_voters) >= quorum_of(len(health.voters))
    # and it ends at the size asked, having made one change per member added or removed, as planned
    assert len(health.voters) == size and not health.learners
    assert seen == plan(start, size)


@given(start=st.integers(min_value=1, max_value=9), size=st.sampled_from(SIZES))
def test_the_plan_moves_one_voter_at_a_time_with_at_most_one_learner(start: int, size: int) -> None:
    stages = plan(start, size)
    voters = [start, *(s.voters for s in stages if not s.learners)]
    assert voters[-1] == size and all(abs(a - b) == 1 for a, b in pairwise(voters))
    assert all(s.learners <= 1 for s in stages)
    assert all(s.voters == prev.voters for prev, s in pairwise(stages) if s.learners)
    assert min((s.tolerance for s in stages), default=tolerance(start)) >= min(tolerance(start), tolerance(size))


def test_the_approval_summary_says_the_path_and_how() -> None:
    grow = summary("prod", 3, 5)
    assert grow.startswith("Scale etcd cluster prod from 3 to 5 voting members (3 -> 4 -> 5)"), grow
    assert "as a learner" in grow
    shrink = summary("prod", 5, 3)
    assert "(5 -> 4 -> 3)" in shrink and "never the leader" in shrink, shrink


def test_runbook_show_says_the_sizes_and_each_member_added_or_removed() -> None:
    from etcdops_local.cli.story import outcome

    grown = {
        "size": 5,
        "voters_before": 3,
        "changes": [{"kind": "add", "name": "local-sab12cd4"}, {"kind": "add", "name": "local-sab12cd5"}],
    }
    assert (
        outcome("SUCCEEDED", grown, [])
        == "succeeded: 3 -> 5 voting members: added local-sab12cd4, added local-sab12cd5"
    )
    shrunk = {
        "size": 3,
        "voters_before": 5,
        "changes": [{"kind": "remove", "name": "m3"}, {"kind": "remove", "name": "m2"}],
    }
    assert outcome("SUCCEEDED", shrunk, []) == "succeeded: 5 -> 3 voting members: removed m3, removed m2"
    assert (
        outcome("SUCCEEDED", {"size": 3, "changes": []}, []) == "succeeded: 3 voting members already; nothing changed"
    )


def test_the_state_machine_runs_exactly_the_scale_steps() -> None:
    machine = json.loads((ROOT / "statemachines" / "scale_cluster.asl.json").read_text())
    steps = {
        state["Parameters"]["Payload"]["step"]
        for state in machine["States"].values()
        if state["Type"] == "Task" and "step" in state["Parameters"]["Payload"]
    }
    assert steps == set(runbook.STEPS)
    assert all(
        state["Parameters"]["Payload"].get("runbook") in ("scale", "ScaleCluster")
        for state in machine["States"].values()
        if state["Type"] == "Task"
    )


def test_a_removal_refused_as_unhealthy_right_after_a_promotion_is_retried_and_a_promotion_waits_for_catch_up() -> None:
    # etcd answers "unhealthy cluster" to a removal for a few seconds after a promotion; a learner is refused
    # promotion until it caught up: both are retried in place, for about 26 s and about 90 s
    machine = json.loads((ROOT / "statemachines" / "scale_cluster.asl.json").read_text())

    def patience(state: str, error: str) -> float:
        (retrier,) = [r for r in machine["States"][state]["Retry"] if error in r["ErrorEquals"]]
        return sum(retrier["IntervalSeconds"] * retrier["BackoffRate"] ** i for i in range(retrier["MaxAttempts"]))

    assert patience("Remove the member", "EtcdUnhealthyClusterError") >= 20
    assert patience("Promote it once caught up", "EtcdLearnerNotReadyError") >= 80


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [("size", "5", "size"), ("size", True, "size"), ("changes", [{"kind": "add"}], "voters_after")],
)
def test_a_scale_document_with_a_field_of_the_wrong_type_is_refused_by_name_before_anything(
    field: str, value: object, why: str
) -> None:
    from etcdops.app.runbook import InvalidRunbookInputError

    doc = {"cluster": "local", "execution": "scale-1", "size": 5, field: value}
    with pytest.raises(InvalidRunbookInputError, match=f"runbook input: .*{why}"):
        runbook.run_step(None, "AcquireLock", doc)  # type: ignore[arg-type]
