"""Which backups to keep: a pure grandfather-father-son retention policy.

:func:`plan_retention` only decides; deleting is the caller's job. A backup is kept if any rule
applies, checked in this order (the first one is recorded as its reason):

1. it is the newest *verified* backup (if no backup is verified at all: the newest backup), the
   newest verified backup of the live cluster incarnation (``live_cluster_id``: invariant 11), or the
   newest verified backup a restore drill restored (invariant 18);
2. it is younger than ``min_age`` (this includes backups dated in the future);
3. it is younger than ``keep_all_within``;
4. it represents one of the last ``daily_days`` UTC calendar days (today included);
5. it represents one of the last ``weekly_weeks`` ISO weeks (Monday to Sunday, UTC; this week
   included).

The representative of a day or week is its newest verified backup that a restore drill restored,
else its newest verified backup never drilled, else its newest verified backup (a drill could not
restore it), or its newest backup if none of that bucket's backups is verified. Everything else is
deleted, in particular unverified
backups older than ``keep_all_within`` that do not represent a bucket.

Orphans (snapshot objects without a manifest: a run that failed between the object and its
manifest) are planned separately by :func:`plan_orphans`: removed once older than the grace period,
so that the object of a backup still being written is never taken for one. A backup whose manifest
cannot be read is in neither plan: it is reported and left alone, never deleted unread.

Each kind of backup (``full``, ``volume``) is planned on its own with the same policy: a kind's
newest verified backup, its representatives of days and weeks are chosen among that kind only, so
frequent volume snapshots never push a full backup out of its day (nor the other way round).

Two properties the tests check (for a fixed set of backups): applying a plan and planning again at
the same time deletes nothing more (a fixed point), and planning at a later time never keeps a
backup that an earlier plan deleted (so deleting early is never regretted). Planning again later
with *new* backups may of course delete more: the new ones supersede old representatives.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from etcdops.domain.errors import UsageError


@dataclass(frozen=True)
class BackupRef:
    """What retention needs to know about a backup. ``created_at`` must be timezone-aware."""

    id: str
    created_at: datetime
    verified: bool
    cluster_id: str | None = None  # the incarnation it was taken of (the manifest's ``cluster_id``)
    restorable: bool | None = None  # what its newest restore drill found (None: never drilled)
    kind: str = "full"  # full or volume: each kind is planned on its own


class RetentionPolicy(BaseModel):
    """How long to keep backups. All durations are non-negative."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    keep_all_within: timedelta = timedelta(hours=24)
    daily_days: Annotated[int, Field(ge=0, le=3660)] = 7
    weekly_weeks: Annotated[int, Field(ge=0, le=520)] = 4
    min_age: timedelta = timedelta(hours=1)
    orphan_grace: timedelta = timedelta(hours=24)

    @field_validator("keep_all_within", "min_age", "orphan_grace")
    @classmethod
    def _non_negative(cls, value: timedelta) -> timedelta:
        if value < timedelta(0):
            raise ValueError("must not be negative")
        return value


@dataclass(frozen=True)
class RetentionPlan:
    """The decision: ``keep`` and ``delete`` partition the input ids (both oldest first), and
    ``reasons`` explains each id in one line."""

    keep: list[str]
    delete: list[str]
    reasons: dict[str, str] = field(default_factory=dict)


def _order(backup: BackupRef) -> tuple[datetime, str]:
    return (backup.created_at, backup.id)


def _drill_rank(backup: BackupRef) -> int:
    """Drilled and restorable first, then never drilled, then a backup a drill could not restore."""
    return {True: 2, None: 1, False: 0}[backup.restorable]


def _representatives(
    backups: Iterable[BackupRef], bucket_of: Callable[[BackupRef], Hashable]
) -> dict[Hashable, BackupRef]:
    """Per bucket: the newest verified backup a drill restored, else the newest verified one never drilled,
    else the newest verified one; the newest backup if none is verified."""
    chosen: dict[Hashable, BackupRef] = {}
    for backup in backups:
        bucket = bucket_of(backup)
        current = chosen.get(bucket)
        if current is None or _preference(backup) > _preference(current):
            chosen[bucket] = backup
    return chosen


def _preference(backup: BackupRef) -> tuple[bool, int, tuple[datetime, str]]:
    return (backup.verified, _drill_rank(backup) if backup.verified else 0, _order(backup))


def _utc_day(backup: BackupRef) -> date:
    return backup.created_at.astimezone(UTC).date()


def _week_start(day: date) -> date:
    return day - timedelta(days=day.weekday())


def _utc_week(backup: BackupRef) -> date:
    return _week_start(_utc_day(backup))


def plan_retention(
    backups: Sequence[BackupRef], now: datetime, policy: RetentionPolicy, *, live_cluster_id: str | None = None
) -> RetentionPlan:
    """Decide which of ``backups`` to keep at time ``now`` (aware); see the module docs for the rules.

    The result does not depend on the order of ``backups``. Raises :class:`UsageError` for
    duplicate ids or naive datetimes.
    """
    if now.tzinfo is None:
        raise UsageError("retention needs a timezone-aware 'now'")
    seen: set[str] = set()
    for backup in backups:
        if backup.created_at.tzinfo is None:
            raise UsageError(f"backup {backup.id!r} has a naive created_at")
        if backup.id in seen:
            raise UsageError(f"backup id {backup.id!r} appears twice")
        seen.add(backup.id)

    plans = [
        _plan_kind([b for b in backups if b.kind == kind], now, policy, live_cluster_id)
        for kind in sorted({b.kind for b in backups})
    ]
    ordered = [b.id for b in sorted(backups, key=_order)]
    keep = {i for plan in plans for i in plan.keep}
    reasons = {i: r for plan in plans for i, r in plan.reasons.items()}
    return RetentionPlan(
        keep=[i for i in ordered if i in keep], delete=[i for i in ordered if i not in keep], reasons=reasons
    )


def _plan_kind(
    backups: Sequence[BackupRef], now: datetime, policy: RetentionPolicy, live_cluster_id: str | None
) -> RetentionPlan:
    """:func:`plan_retention` over backups of one kind."""
    ordered = sorted(backups, key=_order)
    verified = [backup for backup in ordered if backup.verified]
    anchor = verified[-1] if verified else (ordered[-1] if ordered else None)
    live = [b for b in verified if live_cluster_id is not None and b.cluster_id == live_cluster_id]
    live_anchor = live[-1] if live else None
    drilled = [b for b in verified if b.restorable]
    drilled_anchor = drilled[-1] if drilled else None

    daily, weekly = _calendar_keepers(ordered, now, policy)
    keep: list[str] = []
    delete: list[str] = []
    reasons: dict[str, str] = {}
    for backup in ordered:
        age = now - backup.created_at
        reason: str | None
        if anchor is not None and backup.id == anchor.id:
            reason = f"newest verified {_of(backup)}" if backup.verified else f"newest {_of(backup)} (none is verified)"
        elif live_anchor is not None and backup.id == live_anchor.id:
            reason = f"newest verified {_of(backup)} of the live incarnation (cluster id {live_cluster_id})"
        elif drilled_anchor is not None and backup.id == drilled_anchor.id:
            reason = "newest backup a restore drill restored"
        elif age < policy.min_age:
            reason = f"younger than min_age ({policy.min_age})"
        elif age < policy.keep_all_within:
            reason = f"younger than keep_all_within ({policy.keep_all_within})"
        elif backup.id in daily:
            reason = f"newest {_kind(backup)} of day {daily[backup.id].isoformat()}"
        elif backup.id in weekly:
            year, week, _ = weekly[backup.id].isocalendar()
            reason = f"newest {_kind(backup)} of week {year}-W{week:02d}"
        else:
            reason = None
        if reason is not None:
            keep.append(backup.id)
        else:
            delete.append(backup.id)
            status = "verified" if backup.verified else "unverified"
            reason = (
                f"{status}, older than keep_all_within ({policy.keep_all_within}) "
                "and not the backup kept for its day or week"
            )
        reasons[backup.id] = reason
    return RetentionPlan(keep=keep, delete=delete, reasons=reasons)


def _calendar_keepers(
    ordered: Sequence[BackupRef], now: datetime, policy: RetentionPolicy
) -> tuple[dict[str, date], dict[str, date]]:
    """(backup id -> its UTC day, backup id -> its week's Monday) of the newest backup of each of the last
    ``daily_days`` days and ``weekly_weeks`` weeks."""
    today = now.astimezone(UTC).date()
    this_week = _week_start(today)
    days = _representatives(ordered, _utc_day)
    weeks = _representatives(ordered, _utc_week)
    daily = {
        rep.id: bucket
        for bucket, rep in days.items()
        if isinstance(bucket, date) and 0 <= (today - bucket).days < policy.daily_days
    }
    weekly = {
        rep.id: bucket
        for bucket, rep in weeks.items()
        if isinstance(bucket, date) and 0 <= (this_week - bucket).days // 7 < policy.weekly_weeks
    }
    return daily, weekly


def _of(backup: BackupRef) -> str:
    return "backup" if backup.kind == "full" else f"{backup.kind} backup"


def _kind(backup: BackupRef) -> str:
    return f"verified {_of(backup)}" if backup.verified else f"{_of(backup)} (no verified one that period)"


def plan_orphans(orphans: Iterable[tuple[str, datetime]], now: datetime, grace: timedelta) -> list[str]:
    """Which orphan objects (id, time the run started) to remove at ``now``: those older than ``grace``.

    A younger one may be the object of a backup whose manifest is about to be written."""
    if now.tzinfo is None:
        raise UsageError("retention needs a timezone-aware 'now'")
    return sorted(orphan_id for orphan_id, created_at in orphans if now - created_at >= grace)
