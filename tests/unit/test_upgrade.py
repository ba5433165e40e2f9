"""The upgrade path (UpgradeCluster's rules): one step at a time, the documented gates, the order."""

from __future__ import annotations

import pytest
from builders import cluster, member

from etcdops.domain.errors import UpgradeRefusedError
from etcdops.domain.health import Alarm
from etcdops.domain.upgrade import (
    NO_ENABLE_V2,
    V2STORE_CLEAN,
    EtcdVersion,
    failure_report,
    plan_path,
    refusals,
    report,
    rollback_refusal,
    upgrade_order,
)


def refused(versions: list[str | None], target: str, *, auth: bool = False) -> str:
    with pytest.raises(UpgradeRefusedError) as raised:
        plan_path(versions, target, auth_enabled=auth)
    return str(raised.value)


@pytest.mark.parametrize(
    ("versions", "target", "kind"),
    [
        (["3.5.1"] * 3, "3.5.30", "patch"),
        (["3.4.23"] * 3, "3.5.30", "minor"),
        (["3.5.26"] * 3, "3.6.0", "minor"),
        (["3.5.1", "3.5.30", "3.5.1"], "3.5.30", "patch"),  # an upgrade half done goes on
        (["3.5.30"] * 3, "3.5.30", "none"),
        (["3.5.30"] * 3, "v3.5.31", "patch"),
    ],
)
def test_allowed_paths(versions: list[str | None], target: str, kind: str) -> None:
    path = plan_path(versions, target, auth_enabled=False)
    assert path.kind == kind and str(path.target) == target.lstrip("v")
    assert path.gates == ((V2STORE_CLEAN, NO_ENABLE_V2) if path.target.line == (3, 6) else ())


@pytest.mark.parametrize(
    ("versions", "target", "auth", "says"),
    [
        (["3.4.23"] * 3, "3.6.0", False, "skips a minor version: upgrade to the newest 3.5.x first"),
        (["3.5.30"] * 3, "3.5.1", False, "is a downgrade"),
        (["3.5.30"] * 3, "3.4.23", False, "is a downgrade"),
        (["3.5.30"] * 3, "4.0.0", False, "unknown version 4.0.0"),
        (["3.5.30"] * 3, "3.7.0", False, "unknown version 3.7.0"),
        (["3.5.30"] * 3, "latest", False, "unknown version 'latest'"),
        (["3.5.30"] * 3, "3.5", False, "unknown version '3.5'"),
        (["3.4.23"] * 3, "3.5.30", True, "not a supported rolling upgrade with auth enabled"),
        (["3.5.25"] * 3, "3.6.0", False, "needs every member on 3.5.26 or later first"),
        (["3.5.1", "3.5.26", "3.5.30"], "3.5.30", False, "run 3.5.1, 3.5.26 besides 3.5.30"),
        (["3.5.30", None, "3.5.30"], "3.5.31", False, "member 2 reports no usable version"),
        ([], "3.5.30", False, "no members"),
    ],
)
def test_refused_paths_say_why(versions: list[str | None], target: str, auth: bool, says: str) -> None:
    assert says in refused(versions, target, auth=auth)


def test_every_reason_is_given_at_once() -> None:
    message = refused(["3.5.1", None, "3.4.23", "3.5.2"], "3.7.1")
    assert "unknown version 3.7.1" in message and "member 2" in message and "finish or roll back" in message


def test_versions_order_by_number_not_text() -> None:
    assert EtcdVersion.parse("3.5.30") > EtcdVersion.parse("3.5.4")  # type: ignore[operator]
    assert EtcdVersion.parse("3.10.0") > EtcdVersion.parse("3.9.9")  # type: ignore[operator]
    assert [EtcdVersion.parse(t) for t in ("3.5", "3.5.x", "", "3.5.1-rc")] == [None] * 4


def test_followers_go_first_the_leader_last_and_members_on_the_target_are_skipped() -> None:
    target = EtcdVersion(3, 5, 30)
    health = cluster(
        member(1, "c", version="3.5.1"),
        member(2, "a", version="3.5.1"),
        member(3, "b", version="3.5.30"),
        member(4, "d", version="3.5.1", learner=True),
        member(5, "e", version="3.5.1"),
        leader=1,
    )
    assert [m.name for m in upgrade_order(health, target)] == ["d", "a", "e", "c"]


def test_a_cluster_is_refused_for_every_unhealthy_member_a_missing_leader_and_each_alarm() -> None:
    assert refusals(cluster(member(1), member(2), leader=1)) == []
    sick = cluster(member(1), member(2, healthy=False), leader=None, alarms=(Alarm(1, "NOSPACE"),))
    assert refusals(sick) == [
        "member etcd-2 (2) is not healthy (context deadline exceeded)",
        "the cluster has no leader",
        "alarm NOSPACE is raised on member 1",
    ]


MIDWAY = {
    "version": "3.5.30",
    "members": {name: {"id": name[1], "before": "3.4.23"} for name in ("m1", "m2", "m3")},
    "upgraded": [
        {"name": "m1", "id": "1", "before": "3.4.23", "after": "3.5.30", "was_leader": False,
         "leadership_moved_to": None, "seconds": 6.1, "down_seconds": 2.3, "cluster_version": "3.4.0"},
    ],
    "cluster_version_before": "3.4.0",
}  # fmt: skip


def test_the_report_gives_each_members_before_and_after_and_the_failed_one_rolled_back() -> None:
    doc = {
        **MIDWAY,
        "current": {"name": "m2", "id": "2", "before": "3.4.23", "stopped_at": "x", "rolled_back_to": "3.4.23",
                    "seconds": 9.8},
        "error": {"Error": "MemberDidNotStartError", "Cause": "m2 stopped again"},
    }  # fmt: skip
    assert report(doc).splitlines() == [
        "  m1: 3.4.23 -> 3.5.30 in 6.1 s, down 2.3 s; cluster version then 3.4.0",
        "  m2: 3.4.23 -> failed on 3.5.30, rolled back to 3.4.23 after 9.8 s",
        "  m3: 3.4.23, not upgraded",
        "  cluster version: 3.4.0 before",
    ]
    said = failure_report(doc)
    assert said.startswith("Member m2 was rolled back to 3.4.23 and is healthy; the cluster is healthy and runs mixed")
    assert report(doc) in said


def test_a_refused_or_early_failure_says_nothing_was_changed() -> None:
    for error in ("UpgradeRefusedError", "PreflightFailedError", "LockHeldError"):
        doc = {**MIDWAY, "upgraded": [], "error": {"Error": error}}
        assert failure_report(doc) == "Nothing was changed: every member runs the version it ran before."
    stuck = {**MIDWAY, "current": {"name": "m2", "id": "2", "before": "3.4.23", "stopped_at": "x"}, "error": {}}
    assert failure_report(stuck).startswith("Member m2 may be down or on either version")


@pytest.mark.parametrize(
    ("before", "target", "cluster_version"),
    [
        ("3.4.23", "3.5.30", "3.4.0"),  # mixed: the cluster still runs at 3.4
        ("3.4.23", "3.5.30", "3.4"),
        ("3.5.1", "3.5.30", "3.5.0"),  # a patch upgrade never moves the cluster version
        ("3.4.23", "3.5.30", None),  # no member said: the rollback is not refused for that
    ],
)
def test_rollback_allowed_while_the_cluster_version_is_the_old_one(
    before: str, target: str, cluster_version: str | None
) -> None:
    assert rollback_refusal("m2", before, target, cluster_version) is None


@pytest.mark.parametrize("cluster_version", ["3.5.0", "3.5", "3.6.0"])
def test_rollback_refused_once_the_cluster_version_moved(cluster_version: str) -> None:
    reason = rollback_refusal("m2", "3.4.23", "3.5.30", cluster_version)
    assert reason is not None and "\n" not in reason
    assert reason.startswith(f"member m2 cannot go back to etcd 3.4.23: the cluster version is {cluster_version}")
    assert "invariant 16" in reason and "below 3.5" in reason and "nothing was changed" in reason


def test_a_downgrade_request_names_invariant_16() -> None:
    reason = refused(["3.5.30"] * 3, "3.4.23")
    assert "downgrade" in reason and "invariant 16" in reason and "\n" not in reason
