"""A member's own metrics: etcd's Prometheus text, the part of it a health round keeps, and what the
change between two rounds says (quantiles from histogram deltas, counter deltas, growth).

Pure: the text is an argument, every time is an argument. Prometheus histograms are cumulative since
the process started, so the quantile of *this interval* is the quantile of the difference between two
scrapes: :func:`histogram_delta` subtracts bucket by bucket, and when a bucket or the count went down
(or the process start time moved) the member restarted, so what it counted since its start is the
interval's delta. :func:`quantile` interpolates linearly inside the bucket the rank falls in, as
Prometheus' ``histogram_quantile`` does; a rank in the ``+Inf`` bucket gives the highest finite bound.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any

from etcdops.domain.errors import MetricsFormatError

__all__ = [
    "LEADER_CHANGES_WINDOW",
    "Histogram",
    "MemberIntervalStats",
    "MemberSample",
    "MetricsFormatError",
    "StarvationThresholds",
    "counter_delta",
    "database_space",
    "histogram_delta",
    "hours_to_quota",
    "interval_stats",
    "is_fragmented",
    "member_sample",
    "parse_exposition",
    "quantile",
    "recent_total",
    "starved_resources",
    "window_text",
]


Labels = tuple[tuple[str, str], ...]

_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{.*\})?\s+(\S+)(?:\s+-?\d+)?$")
_LABEL = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|$)')


def _labels(text: str, line_number: int) -> Labels:
    inner, found, position = text[1:-1], [], 0
    while position < len(inner):
        match = _LABEL.match(inner, position)
        if match is None:
            raise MetricsFormatError(f"metrics line {line_number}: malformed labels {text!r}")
        value = match.group(2).replace("\\\\", "\\").replace('\\"', '"').replace("\\n", "\n")
        found.append((match.group(1), value))
        position = match.end()
    return tuple(sorted(found))


def parse_exposition(text: str) -> dict[str, list[tuple[Labels, float]]]:
    """Every sample of Prometheus' text exposition format: metric name -> [(labels, value)]."""
    samples: dict[str, list[tuple[Labels, float]]] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            raise MetricsFormatError(f"metrics line {number}: not a sample: {line[:80]!r}")
        try:
            value = float(match.group(3))
        except ValueError:
            raise MetricsFormatError(f"metrics line {number}: {match.group(3)!r} is not a number") from None
        labels = _labels(match.group(2), number) if match.group(2) else ()
        samples.setdefault(match.group(1), []).append((labels, value))
    return samples


# ---- histograms -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Histogram:
    """Cumulative bucket counts, ascending upper bounds, the last one ``+Inf`` (its count is the total)."""

    buckets: tuple[tuple[float, float], ...]

    @property
    def total(self) -> float:
        return self.buckets[-1][1] if self.buckets else 0.0

    def to_list(self) -> list[list[float | str]]:
        return [["+Inf" if math.isinf(b) else b, c] for b, c in self.buckets]

    @classmethod
    def from_list(cls, items: Iterable[Iterable[Any]]) -> Histogram:
        return cls(tuple((float(b), float(c)) for b, c in items))


def _histogram(
    samples: Mapping[str, list[tuple[Labels, float]]], name: str, by: str | None = None
) -> dict[str, Histogram]:
    """The histogram ``name`` (series summed), or one per value of label ``by``."""
    sums: dict[str, dict[float, float]] = {}
    for labels, value in samples.get(f"{name}_bucket", []):
        tags = dict(labels)
        if "le" not in tags:
            raise MetricsFormatError(f"{name}_bucket: a bucket without 'le'")
        key = tags.get(by, "") if by else ""
        bucket = sums.setdefault(key, {})
        bound = float(tags["le"])
        bucket[bound] = bucket.get(bound, 0.0) + value
    found: dict[str, Histogram] = {}
    for key, buckets in sums.items():
        ordered = tuple(sorted(buckets.items()))
        if not math.isinf(ordered[-1][0]) or any(b[1] < a[1] for a, b in pairwise(ordered)):
            raise MetricsFormatError(f"{name}: buckets are not cumulative up to +Inf")
        found[key] = Histogram(ordered)
    return found


def histogram_delta(previous: Histogram | None, current: Histogram, *, restarted: bool = False) -> Histogram:
    """What was observed between two scrapes. A member that restarted (told, or seen: a bucket that
    went down, other bounds) counted everything it has since its start: that is the delta."""
    if previous is None or restarted or [b for b, _ in previous.buckets] != [b for b, _ in current.buckets]:
        return current
    if any(c < p for (_, p), (_, c) in zip(previous.buckets, current.buckets, strict=True)):
        return current
    return Histogram(tuple((b, c - p) for (b, p), (_, c) in zip(previous.buckets, current.buckets, strict=True)))


def quantile(q: float, histogram: Histogram) -> float | None:
    """The ``q``-quantile (0 < q <= 1) of what ``histogram`` counted; None when it counted nothing."""
    total = histogram.total
    if total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in histogram.buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


def counter_delta(previous: float | None, current: float, *, restarted: bool = False) -> float:
    """How much a counter grew; after a restart (told, or it went down) its whole value."""
    if previous is None:
        return 0.0
    return current if restarted or current < previous else current - previous


# ---- what a round keeps of one member ---------------------------------------------------------------

WAL_FSYNC = "etcd_disk_wal_fsync_duration_seconds"
BACKEND_COMMIT = "etcd_disk_backend_commit_duration_seconds"
PEER_RTT = "etcd_network_peer_round_trip_time_seconds"
_SCALARS = {
    "start": "process_start_time_seconds",
    "pending": "etcd_server_proposals_pending",
    "proposals_failed": "etcd_server_proposals_failed_total",
    "db_size": "etcd_mvcc_db_total_size_in_bytes",
    "db_in_use": "etcd_mvcc_db_total_size_in_use_in_bytes",
    "quota": "etcd_server_quota_backend_bytes",
    "leader_changes": "etcd_server_leader_changes_seen_total",
}


@dataclass(frozen=True)
class MemberSample:
    """One scrape, reduced: the histograms (peer round trips summed over the peers) and the scalars."""

    taken_at: datetime
    histograms: Mapping[str, Histogram]
    values: Mapping[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "taken_at": self.taken_at.isoformat(),
            "histograms": {k: h.to_list() for k, h in self.histograms.items()},
            "values": dict(self.values),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MemberSample:
        return cls(
            datetime.fromisoformat(data["taken_at"]),
            {k: Histogram.from_list(v) for k, v in data["histograms"].items()},
            {k: float(v) for k, v in data["values"].items()},
        )


def member_sample(text: str, taken_at: datetime) -> MemberSample:
    """What a round keeps of one member's /metrics text."""
    samples = parse_exposition(text)
    histograms: dict[str, Histogram] = {}
    for key, name in (("wal_fsync", WAL_FSYNC), ("backend_commit", BACKEND_COMMIT), ("peer_rtt", PEER_RTT)):
        found = _histogram(samples, name)
        if found:
            histograms[key] = found[""]
    if "wal_fsync" not in histograms:
        raise MetricsFormatError(f"the metrics have no {WAL_FSYNC} (is this an etcd member?)")
    values = {key: sum(v for _, v in samples[name]) for key, name in _SCALARS.items() if name in samples}
    return MemberSample(taken_at, histograms, values)


@dataclass(frozen=True)
class MemberIntervalStats:
    """What one member did between two rounds (None: not known, e.g. nothing observed), and where its
    database stands against its own quota."""

    wal_fsync_p99: float | None = None
    backend_commit_p99: float | None = None
    peer_rtt_p99: float | None = None
    proposals_failed: float | None = None
    proposals_pending: float | None = None
    db_growth_per_hour: float | None = None
    restarted: bool = False
    leader_changes: float | None = None  # this interval's; the app sums them over LEADER_CHANGES_WINDOW
    leader_changes_15m: float | None = None
    quota_used_percent: float | None = None
    hours_to_quota: float | None = None
    fragmented: bool | None = None

    def points(self) -> list[tuple[str, str, float]]:
        """(metric name, unit, value) of what is known."""
        named = [
            ("WalFsyncP99", "Seconds", self.wal_fsync_p99),
            ("BackendCommitP99", "Seconds", self.backend_commit_p99),
            ("PeerRttP99", "Seconds", self.peer_rtt_p99),
            ("ProposalsFailed", "Count", self.proposals_failed),
            ("ProposalsPending", "Count", self.proposals_pending),
            ("DbGrowthPerHour", "Bytes", self.db_growth_per_hour),
            ("LeaderChanges15m", "Count", self.leader_changes_15m),
            ("DbQuotaUsedPercent", "Percent", self.quota_used_percent),
            ("HoursToQuota", "None", self.hours_to_quota),
        ]
        return [(name, unit, round(value, 6)) for name, unit, value in named if value is not None]


def _counted(key: str, previous: MemberSample, current: MemberSample, restarted: bool) -> float | None:
    """How much the counter ``key`` grew since ``previous`` (None: not in both samples)."""
    if key not in current.values or key not in previous.values:
        return None
    return counter_delta(previous.values[key], current.values[key], restarted=restarted)


def interval_stats(previous: MemberSample | None, current: MemberSample) -> MemberIntervalStats:
    """The member's p99s, failed proposals, leader changes and database growth since ``previous`` (the
    last round's sample; None: the first round, only the gauges are known)."""
    space = database_space(current.values)
    if previous is None:
        return MemberIntervalStats(proposals_pending=current.values.get("pending"), **space)
    start_before, start_now = previous.values.get("start"), current.values.get("start")
    restarted = start_before is not None and start_now is not None and start_now != start_before

    def p99(key: str) -> float | None:
        now = current.histograms.get(key)
        return (
            None
            if now is None
            else quantile(0.99, histogram_delta(previous.histograms.get(key), now, restarted=restarted))
        )

    growth = None
    hours = (current.taken_at - previous.taken_at).total_seconds() / 3600.0
    if hours > 0 and "db_size" in current.values and "db_size" in previous.values:
        growth = (current.values["db_size"] - previous.values["db_size"]) / hours
    return MemberIntervalStats(
        wal_fsync_p99=p99("wal_fsync"),
        backend_commit_p99=p99("backend_commit"),
        peer_rtt_p99=p99("peer_rtt"),
        proposals_failed=_counted("proposals_failed", previous, current, restarted),
        proposals_pending=current.values.get("pending"),
        db_growth_per_hour=growth,
        restarted=restarted,
        leader_changes=_counted("leader_changes", previous, current, restarted),
        hours_to_quota=hours_to_quota(current.values.get("db_size"), current.values.get("quota"), growth),
        **space,
    )


# ---- the database against its quota -----------------------------------------------------------------

FRAGMENTED_IN_USE_RATIO = 0.5
FRAGMENTED_MIN_IN_USE = 100 * 1024 * 1024
LEADER_CHANGES_WINDOW = timedelta(minutes=15)


def is_fragmented(db_size: float, in_use: float) -> bool:
    """The etcd mixin's rule: less than half of the file in use, with more than 100 MiB in use
    (below that a defragmentation gives back too little to be worth blocking the member)."""
    return db_size > 0 and in_use / db_size < FRAGMENTED_IN_USE_RATIO and in_use > FRAGMENTED_MIN_IN_USE


def hours_to_quota(db_size: float | None, quota: float | None, growth_per_hour: float | None) -> float | None:
    """When the database reaches the quota at its present growth (0: it is there); None when it does not
    grow, grows too little for a number of hours to be written (a metric cannot carry infinity) or a
    number is unknown."""
    if db_size is None or not quota or growth_per_hour is None or growth_per_hour <= 0:
        return None
    hours = max(0.0, (quota - db_size) / growth_per_hour)
    return hours if math.isfinite(hours) else None


def database_space(values: Mapping[str, float]) -> dict[str, Any]:
    """The share of its own quota a member's database takes (percent) and whether it is fragmented."""
    size, in_use, quota = values.get("db_size"), values.get("db_in_use"), values.get("quota")
    return {
        "quota_used_percent": 100.0 * size / quota if size is not None and quota else None,
        "fragmented": is_fragmented(size, in_use) if size is not None and in_use is not None else None,
    }


def recent_total(
    entries: Iterable[tuple[datetime, float]], now: datetime, window: timedelta
) -> tuple[list[tuple[datetime, float]], float]:
    """The entries (time, amount) within ``window`` before ``now`` (later ones dropped: a clock that went
    back) and their sum: a count over a sliding window kept as one entry per round."""
    kept = sorted((at, amount) for at, amount in entries if now - window < at <= now)
    return kept, sum(amount for _, amount in kept)


# ---- starvation ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StarvationThresholds:
    """When a member counts as starved (seconds, p99 over one round's interval). Defaults: the etcd
    mixin's warning levels (WAL fsync p99 over 0.5 s, backend commit over 0.25 s, peer round trip over
    0.15 s); etcd's own *targets* for a healthy disk are far lower (WAL fsync p99 under 10 ms, backend
    commit under 25 ms): a disk between the two is slow, not yet starving the member."""

    wal_fsync_p99: float = 0.5
    backend_commit_p99: float = 0.25
    peer_rtt_p99: float = 0.15


def _seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"


def window_text(seconds: float) -> str:
    """How long a window was, as a notice says it: "60 s", "10 min", "2 h"."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.0f} h"


def starved_resources(stats: MemberIntervalStats, limits: StarvationThresholds, interval: str) -> dict[str, str]:
    """resource ("disk", "network") -> what shows it is starved, e.g. "disk: WAL fsync p99 1.4 s over
    10 min (threshold 500 ms)", ``interval`` the window the p99 is of; empty when nothing exceeds its
    threshold."""
    found: dict[str, list[str]] = {}
    for resource, what, value, limit in (
        ("disk", "WAL fsync p99", stats.wal_fsync_p99, limits.wal_fsync_p99),
        ("disk", "backend commit p99", stats.backend_commit_p99, limits.backend_commit_p99),
        ("network", "peer round trip p99", stats.peer_rtt_p99, limits.peer_rtt_p99),
    ):
        if value is not None and value > limit:
            found.setdefault(resource, []).append(
                f"{what} {_seconds(value)} over {interval} (threshold {_seconds(limit)})"
            )
    return {resource: f"{resource}: {', '.join(parts)}" for resource, parts in found.items()}
