"""Health derivation: quorum, margin, leader and member lookup from one probe round."""

from __future__ import annotations

from builders import member

from etcdops.domain.health import ClusterHealth, quorum_of


def test_quorum_of_sizes() -> None:
    assert [quorum_of(n) for n in range(1, 8)] == [1, 2, 2, 3, 3, 4, 4]


def test_healthy_cluster() -> None:
    health = ClusterHealth(cluster_id=1, leader=1, members=(member(1), member(2), member(3)))

    assert health.has_quorum and health.quorum == 2 and health.quorum_margin == 1


def test_one_member_down_keeps_quorum_with_no_margin() -> None:
    health = ClusterHealth(cluster_id=1, leader=1, members=(member(1), member(2, healthy=False), member(3)))

    assert health.has_quorum and health.quorum_margin == 0


def test_learners_do_not_vote() -> None:
    health = ClusterHealth(
        cluster_id=1,
        leader=1,
        members=(member(1), member(2, healthy=False), member(3, healthy=False), member(4, learner=True)),
    )

    assert health.quorum == 2 and len(health.voters) == 3 and len(health.learners) == 1
    assert not health.has_quorum and health.quorum_margin == -1


def test_no_leader_means_no_quorum_even_with_answers() -> None:
    health = ClusterHealth(cluster_id=1, leader=None, members=(member(1), member(2), member(3)))

    assert not health.has_quorum
    assert health.member(2) == member(2) and health.member(9) is None
