"""EventBridge schedule expressions, as the local timer reads them: ``rate(N unit)`` and ``cron(...)``
with the next firing after a moment; locally ``rate(N seconds)`` is accepted too (AWS refuses it)."""

from __future__ import annotations

import calendar
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from etcdops.domain.errors import ConfigError

_RATE = re.compile(r"^rate\(\s*(\d+)\s+(second|seconds|minute|minutes|hour|hours|day|days)\s*\)$")
_CRON = re.compile(r"^cron\((.*)\)$")
_UNIT_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_MONTHS = {name: i for i, name in enumerate(calendar.month_abbr) if name}
_DAYS = {"SUN": 1, "MON": 2, "TUE": 3, "WED": 4, "THU": 5, "FRI": 6, "SAT": 7}


@dataclass(frozen=True)
class Rate:
    seconds: int

    def next_after(self, moment: datetime) -> datetime:
        return moment + timedelta(seconds=self.seconds)


@dataclass(frozen=True)
class Cron:
    """EventBridge's six-field cron (minutes hours day-of-month month day-of-week year), in UTC."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int] | None  # None: '?'
    months: frozenset[int]
    weekdays: frozenset[int] | None  # 1 = SUN ... 7 = SAT; None: '?'
    years: frozenset[int] | None  # None: any year

    def _day_matches(self, day: datetime) -> bool:
        if self.years is not None and day.year not in self.years:
            return False
        if day.month not in self.months:
            return False
        if self.days is not None and day.day not in self.days:
            return False
        return self.weekdays is None or (day.weekday() + 1) % 7 + 1 in self.weekdays

    def next_after(self, moment: datetime) -> datetime:
        start = moment.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
        day = start.replace(hour=0, minute=0)
        for _ in range(366 * 5):
            if self._day_matches(day):
                for hour in sorted(self.hours):
                    for minute in sorted(self.minutes):
                        candidate = day.replace(hour=hour, minute=minute)
                        if candidate >= start:
                            return candidate
            day += timedelta(days=1)
        raise ConfigError("schedule: the cron expression never fires in the next five years")


Timing = Rate | Cron


def _field(text: str, low: int, high: int, names: Mapping[str, int], what: str) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        step = 1
        if "/" in part:
            part, step_text = part.split("/", 1)
            if not step_text.isdigit() or int(step_text) == 0:
                raise ConfigError(f"schedule: {what}: bad step in {text!r}")
            step = int(step_text)
        if part == "*":
            first, last = low, high
        elif "-" in part:
            a, b = part.split("-", 1)
            first, last = _value(a, names, what), _value(b, names, what)
        else:
            first = _value(part, names, what)
            last = high if step > 1 else first
        if not (low <= first <= high and low <= last <= high and first <= last):
            raise ConfigError(f"schedule: {what}: {text!r} is outside {low}-{high}")
        values.update(range(first, last + 1, step))
    return frozenset(values)


def _value(text: str, names: Mapping[str, int], what: str) -> int:
    if text.isdigit():
        return int(text)
    if text.upper() in names:
        return names[text.upper()]
    raise ConfigError(f"schedule: {what}: {text!r} is not supported locally (L, W and # are not)")


def parse_schedule(expression: str, *, allow_seconds: bool = True) -> Timing:
    """``rate(N unit)`` or ``cron(m h dom mon dow year)``; ``rate(N seconds)`` only when allowed."""
    text = expression.strip()
    rate = _RATE.match(text)
    if rate:
        count, unit = int(rate.group(1)), rate.group(2).rstrip("s")
        if count <= 0:
            raise ConfigError(f"schedule: {expression}: the rate must be positive")
        if unit == "second" and not allow_seconds:
            raise ConfigError(f"schedule: {expression}: EventBridge's smallest unit is minutes")
        return Rate(count * _UNIT_SECONDS[unit])
    cron = _CRON.match(text)
    if not cron:
        raise ConfigError(f"schedule: {expression!r} is neither rate(...) nor cron(...)")
    fields = cron.group(1).split()
    if len(fields) != 6:
        raise ConfigError(f"schedule: {expression}: cron needs 6 fields, got {len(fields)}")
    minute, hour, dom, month, dow, year = fields
    if (dom == "?") == (dow == "?"):
        raise ConfigError(f"schedule: {expression}: exactly one of day-of-month and day-of-week must be '?'")
    return Cron(
        minutes=_field(minute, 0, 59, {}, "minutes"),
        hours=_field(hour, 0, 23, {}, "hours"),
        days=None if dom == "?" else _field(dom, 1, 31, {}, "day-of-month"),
        months=_field(month, 1, 12, {k.upper(): v for k, v in _MONTHS.items()}, "month"),
        weekdays=None if dow == "?" else _field(dow, 1, 7, _DAYS, "day-of-week"),
        years=None if year == "*" else _field(year, 1970, 2199, {}, "year"),
    )
