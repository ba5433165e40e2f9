"""The grandfather-father-son retention policy: examples and properties."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from etcdops.domain.backup.retention import BackupRef, RetentionPlan, RetentionPolicy, plan_orphans, plan_retention
from etcdops.domain.errors import UsageError

NOW = datetime(2026, 11, 25, 20, 30, tzinfo=UTC)  # a Wednesday
DEFAULT = RetentionPolicy()


def ref(
    id: str, age: timedelta, verified: bool = True, now: datetime = NOW, restorable: bool | None = None
) -> BackupRef:
    return BackupRef(id=id, created_at=now - age, verified=verified, restorable=restorable)


# ---- examples ---------------------------------------------------------------------------------


def test_defaults() -> None:
    assert DEFAULT.keep_all_within == timedelta(hours=24)
    assert DEFAULT.daily_days == 7
    assert DEFAULT.weekly_weeks == 4
    assert DEFAULT.min_age == timedelta(hours=1)


def test_half_hourly_backups_for_forty_days() -> None:
    backups = [ref(f"b{step:04d}", timedelta(minutes=30 * step)) for step in range(40 * 48)]
    plan = plan_retention(backups, NOW, DEFAULT)
    by_id = {backup.id: backup for backup in backups}
    old_kept = [by_id[i] for i in plan.keep if NOW - by_id[i].created_at >= timedelta(hours=24)]
    recent = [b for b in backups if NOW - b.created_at < timedelta(hours=24)]
    assert set(plan.keep) >= {b.id for b in recent}
    # one per day for the days before the 24h window within the last 7 days, then one per week
    days = {b.created_at.date() for b in old_kept}
    assert len(days) == len(old_kept)
    assert len(old_kept) <= 7 + 4
    for backup in old_kept:
        same_day = [b for b in backups if b.created_at.date() == backup.created_at.date()]
        same_week = [b for b in backups if b.created_at.isocalendar()[:2] == backup.created_at.isocalendar()[:2]]
        assert backup.created_at in (max(b.created_at for b in same_day), max(b.created_at for b in same_week))
    oldest_kept = min(by_id[i].created_at for i in plan.keep)
    assert NOW - oldest_kept < timedelta(weeks=4)
    assert plan.reasons[plan.delete[0]].startswith("verified, older than keep_all_within")


def test_newest_verified_is_kept_even_when_ancient() -> None:
    backups = [ref("old-verified", timedelta(days=400)), ref("old-unverified", timedelta(days=300), False)]
    plan = plan_retention(backups, NOW, DEFAULT)
    assert plan.keep == ["old-verified"]
    assert plan.delete == ["old-unverified"]
    assert plan.reasons["old-verified"] == "newest verified backup"


def test_unverified_backups_are_deleted_after_keep_all_within() -> None:
    backups = [
        ref("verified-day-2", timedelta(days=2, hours=5)),
        ref("unverified-day-2", timedelta(days=2, hours=1), False),  # newer, same day
        ref("unverified-recent", timedelta(hours=20), False),
        ref("verified-recent", timedelta(hours=10)),
    ]
    plan = plan_retention(backups, NOW, DEFAULT)
    assert "unverified-day-2" in plan.delete
    assert {"verified-day-2", "unverified-recent", "verified-recent"} <= set(plan.keep)
    assert plan.reasons["unverified-day-2"].startswith("unverified")


def test_a_day_without_verified_backups_keeps_its_newest_one() -> None:
    backups = [
        ref("verified-now", timedelta(hours=2)),
        ref("a", timedelta(days=3, hours=2), False),
        ref("b", timedelta(days=3, hours=1), False),
    ]
    plan = plan_retention(backups, NOW, DEFAULT)
    assert "b" in plan.keep and "a" in plan.delete
    assert "no verified one" in plan.reasons["b"]


def test_without_any_verified_backup_the_newest_is_kept() -> None:
    policy = RetentionPolicy(keep_all_within=timedelta(0), daily_days=0, weekly_weeks=0, min_age=timedelta(0))
    backups = [ref("a", timedelta(days=3), False), ref("b", timedelta(days=2), False)]
    plan = plan_retention(backups, NOW, policy)
    assert plan.keep == ["b"]
    assert plan.reasons["b"] == "newest backup (none is verified)"


def test_nothing_younger_than_min_age_is_deleted_even_with_a_zero_window() -> None:
    policy = RetentionPolicy(keep_all_within=timedelta(0), daily_days=0, weekly_weeks=0, min_age=timedelta(hours=1))
    backups = [ref("newest", timedelta(minutes=1)), ref("young", timedelta(minutes=59), False)]
    backups.append(ref("future", -timedelta(hours=3), False))
    backups.append(ref("older", timedelta(minutes=61)))
    plan = plan_retention(backups, NOW, policy)
    assert set(plan.keep) == {"newest", "young", "future"}
    assert plan.delete == ["older"]


def test_empty_input() -> None:
    assert plan_retention([], NOW, DEFAULT) == RetentionPlan(keep=[], delete=[], reasons={})


def test_bad_input_is_refused() -> None:
    with pytest.raises(UsageError, match="aware"):
        plan_retention([], datetime(2026, 1, 1), DEFAULT)
    with pytest.raises(UsageError, match="twice"):
        plan_retention([ref("a", timedelta(hours=1)), ref("a", timedelta(hours=2))], NOW, DEFAULT)
    with pytest.raises(UsageError, match="naive"):
        plan_retention([BackupRef("a", datetime(2026, 1, 1), True)], NOW, DEFAULT)


@pytest.mark.parametrize(
    "settings_",
    [{"keep_all_within": timedelta(hours=-1)}, {"min_age": timedelta(seconds=-1)}, {"daily_days": -1}, {"x": 1}],
)
def test_policy_is_validated(settings_: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        RetentionPolicy.model_validate(settings_)


# ---- properties ---------------------------------------------------------------------------------

MINUTE = 60
policies = st.builds(
    RetentionPolicy,
    keep_all_within=st.integers(0, 72 * 60).map(lambda m: timedelta(minutes=m)),
    daily_days=st.integers(0, 10),
    weekly_weeks=st.integers(0, 6),
    min_age=st.integers(0, 180).map(lambda m: timedelta(minutes=m)),
)
# ages in minutes: mostly the past 60 days, a few in the future (clock skew); what restore drills found
backup_lists = st.lists(
    st.tuples(st.integers(-120, 60 * 24 * 60), st.booleans(), st.sampled_from([None, True, False])),
    max_size=60,
).map(
    lambda items: [
        ref(f"b{index:03d}", timedelta(minutes=age), verified, restorable=restorable)
        for index, (age, verified, restorable) in enumerate(items)
    ]
)
nows = st.integers(0, 14 * 24 * 60).map(lambda m: NOW + timedelta(minutes=m))


def _newest(backups: list[BackupRef]) -> BackupRef:
    return max(backups, key=lambda b: (b.created_at, b.id))


@given(backups=backup_lists, policy=policies)
def test_plan_partitions_the_input_and_explains_everything(backups: list[BackupRef], policy: RetentionPolicy) -> None:
    plan = plan_retention(backups, NOW, policy)
    ids = {b.id for b in backups}
    assert set(plan.keep) | set(plan.delete) == ids
    assert not set(plan.keep) & set(plan.delete)
    assert len(plan.keep) + len(plan.delete) == len(backups)
    assert set(plan.reasons) == ids


@given(backups=backup_lists, policy=policies)
def test_newest_verified_is_always_kept(backups: list[BackupRef], policy: RetentionPolicy) -> None:
    plan = plan_retention(backups, NOW, policy)
    verified = [b for b in backups if b.verified]
    if verified:
        assert _newest(verified).id in plan.keep
    elif backups:
        assert _newest(backups).id in plan.keep


@given(backups=backup_lists, policy=policies)
def test_nothing_young_is_deleted(backups: list[BackupRef], policy: RetentionPolicy) -> None:
    plan = plan_retention(backups, NOW, policy)
    by_id = {b.id: b for b in backups}
    for backup_id in plan.delete:
        age = NOW - by_id[backup_id].created_at
        assert age >= policy.min_age
        assert age >= policy.keep_all_within


@given(backups=backup_lists, policy=policies)
def test_every_recent_day_and_week_keeps_a_backup(backups: list[BackupRef], policy: RetentionPolicy) -> None:
    plan = plan_retention(backups, NOW, policy)
    kept = [b for b in backups if b.id in set(plan.keep)]
    today = NOW.date()
    for backup in backups:
        day = backup.created_at.date()
        if 0 <= (today - day).days < policy.daily_days:
            assert any(k.created_at.date() == day for k in kept)
        week = backup.created_at.isocalendar()[:2]
        monday = day - timedelta(days=day.weekday())
        this_monday = today - timedelta(days=today.weekday())
        if 0 <= (this_monday - monday).days // 7 < policy.weekly_weeks:
            assert any(k.created_at.isocalendar()[:2] == week for k in kept)
        # a verified backup exists in that day => the one kept for the day is verified
        if backup.verified and 0 <= (today - day).days < policy.daily_days:
            assert any(k.created_at.date() == day and k.verified for k in kept)


@given(backups=backup_lists, policy=policies, seed=st.integers())
def test_plan_is_deterministic_and_independent_of_input_order(
    backups: list[BackupRef], policy: RetentionPolicy, seed: int
) -> None:
    shuffled = list(backups)
    random.Random(seed).shuffle(shuffled)
    assert plan_retention(shuffled, NOW, policy) == plan_retention(backups, NOW, policy)


@given(backups=backup_lists, policy=policies, now=nows)
def test_applying_a_plan_is_a_fixed_point(backups: list[BackupRef], policy: RetentionPolicy, now: datetime) -> None:
    """Idempotency as it really holds: at the same time, planning again over what was kept
    deletes nothing more (and keeps everything)."""
    plan = plan_retention(backups, now, policy)
    remaining = [b for b in backups if b.id in set(plan.keep)]
    again = plan_retention(remaining, now, policy)
    assert again.delete == []
    assert again.keep == plan.keep


@given(backups=backup_lists, policy=policies, now=nows, later=st.integers(0, 30 * 24 * 60))
def test_a_deleted_backup_is_never_wanted_later(
    backups: list[BackupRef], policy: RetentionPolicy, now: datetime, later: int
) -> None:
    """For the same set of backups, a later plan keeps a subset of an earlier plan: running
    retention late (or often) never regrets an earlier deletion. (With *new* backups a later plan
    may delete more, so "planning again deletes nothing" only holds at the same time.)"""
    earlier = plan_retention(backups, now, policy)
    afterwards = plan_retention(backups, now + timedelta(minutes=later), policy)
    assert set(afterwards.keep) <= set(earlier.keep)


@given(backups=backup_lists, policy=policies)
def test_new_backups_never_resurrect_the_need_for_deleted_ones(
    backups: list[BackupRef], policy: RetentionPolicy
) -> None:
    """Adding a newer verified backup can only make older backups less needed."""
    plan = plan_retention(backups, NOW, policy)
    newer = [*backups, BackupRef("zz-new", NOW, True)]
    with_new = plan_retention(newer, NOW + timedelta(minutes=1), policy)
    assert set(with_new.keep) - {"zz-new"} <= set(plan.keep)


# ---- incarnations and orphans ---------------------------------------------------------------------


def test_the_newest_verified_backup_of_the_live_incarnation_is_kept_beside_the_newest_overall() -> None:
    backups = [
        BackupRef("live", NOW - timedelta(days=300), True, "c1"),
        BackupRef("older-cluster", NOW - timedelta(days=200), True, "a0"),
    ]
    plan = plan_retention(backups, NOW, DEFAULT, live_cluster_id="c1")
    assert plan.keep == ["live", "older-cluster"]
    assert plan.reasons["live"] == "newest verified backup of the live incarnation (cluster id c1)"
    assert plan_retention(backups, NOW, DEFAULT).delete == ["live"]  # without the live id: by age only


def test_retention_prefers_backups_a_drill_restored() -> None:
    day = timedelta(days=1)
    backups = [
        ref("d2-drilled", 2 * day + timedelta(hours=3), restorable=True),
        ref("d2-newer", 2 * day + timedelta(hours=1)),  # newer, never drilled
        ref("d1-failed", 1 * day + timedelta(hours=3), restorable=False),
        ref("d1-undrilled", 1 * day + timedelta(hours=5)),  # older, but not known to fail
        ref("today", timedelta(hours=2)),
    ]
    plan = plan_retention(backups, NOW, RetentionPolicy(keep_all_within=timedelta(hours=1), weekly_weeks=0))
    assert sorted(plan.delete) == ["d1-failed", "d2-newer"], plan.reasons
    assert plan.reasons["d2-drilled"] == "newest backup a restore drill restored"


def test_the_newest_backup_a_drill_restored_is_kept_whatever_its_age() -> None:
    backups = [ref("proven", timedelta(days=400), restorable=True), ref("later", timedelta(days=300), restorable=False)]
    plan = plan_retention([*backups, ref("newest", timedelta(days=200))], NOW, DEFAULT)
    assert plan.keep == ["proven", "newest"] and plan.delete == ["later"]
    assert plan.reasons["proven"] == "newest backup a restore drill restored"


@given(backups=backup_lists, policy=policies)
def test_the_newest_drilled_and_restorable_backup_is_always_kept(
    backups: list[BackupRef], policy: RetentionPolicy
) -> None:
    restorable = [b for b in backups if b.verified and b.restorable]
    if restorable:
        assert _newest(restorable).id in plan_retention(backups, NOW, policy).keep


def test_orphans_go_once_older_than_the_grace_period() -> None:
    orphans = [
        ("young", NOW - timedelta(hours=23)),
        ("old", NOW - timedelta(hours=24)),
        ("future", NOW + timedelta(hours=1)),
    ]
    assert plan_orphans(orphans, NOW, timedelta(hours=24)) == ["old"]
    assert RetentionPolicy().orphan_grace == timedelta(hours=24)
    with pytest.raises(UsageError):
        plan_orphans(orphans, NOW.replace(tzinfo=None), timedelta(hours=24))


incarnated = backup_lists.flatmap(
    lambda backups: st.lists(st.sampled_from(["a0", "c1"]), min_size=len(backups), max_size=len(backups)).map(
        lambda ids: [BackupRef(b.id, b.created_at, b.verified, i) for b, i in zip(backups, ids, strict=True)]
    )
)


@given(backups=incarnated, policy=policies)
def test_the_live_incarnation_only_ever_keeps_more(backups: list[BackupRef], policy: RetentionPolicy) -> None:
    plan = plan_retention(backups, NOW, policy, live_cluster_id="c1")
    live = [b for b in backups if b.verified and b.cluster_id == "c1"]
    if live:
        assert _newest(live).id in plan.keep
    assert set(plan.delete) <= set(plan_retention(backups, NOW, policy).delete)


# ---- kinds of backup --------------------------------------------------------------------------

kinded_lists = st.lists(
    st.tuples(st.integers(-120, 60 * 24 * 60), st.booleans(), st.sampled_from(["full", "volume"])), max_size=60
).map(
    lambda items: [
        BackupRef(f"b{index:03d}", NOW - timedelta(minutes=age), verified, kind=kind)
        for index, (age, verified, kind) in enumerate(items)
    ]
)


@given(backups=kinded_lists, policy=policies)
def test_each_kind_is_planned_as_if_it_were_alone(backups: list[BackupRef], policy: RetentionPolicy) -> None:
    plan = plan_retention(backups, NOW, policy, live_cluster_id="c1")
    for kind in ("full", "volume"):
        alone = plan_retention([b for b in backups if b.kind == kind], NOW, policy, live_cluster_id="c1")
        assert [i for i in plan.keep if i in alone.keep + alone.delete] == alone.keep
        assert {i: plan.reasons[i] for i in alone.reasons} == alone.reasons


def test_frequent_volume_backups_never_push_a_full_backup_out_of_its_day() -> None:
    # Given a full backup three days ago and volume backups every hour since, the newest the latest
    full = BackupRef("full", NOW - timedelta(days=3), True)
    volumes = [BackupRef(f"v{h:03d}", NOW - timedelta(hours=h), True, kind="volume") for h in range(1, 72)]
    plan = plan_retention([full, *volumes], NOW, DEFAULT)
    # Then the full backup is its kind's newest verified one, and each kind keeps its own days
    assert plan.reasons["full"] == "newest verified backup"
    assert plan.reasons["v001"] == "newest verified volume backup"
    assert plan.reasons["v045"] == "newest verified volume backup of day 2026-11-23"
    assert plan.reasons["v021"] == "younger than keep_all_within (1 day, 0:00:00)"
    assert "v030" in plan.delete
