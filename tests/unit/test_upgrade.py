"""The upgrade path (UpgradeCluster's rules): one step at a time, the documented gates, the order."""

from __future__ import annotations

import pytest
from builders import cluster, member

from etcdops.domain.errors import UpgradeRefusedError
from etcdops.domain.upgrade import NO_ENABLE_V2, V2STORE_CLEAN, EtcdVersion, plan_path, upgrade_order


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
