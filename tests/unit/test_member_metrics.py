"""etcd's /metrics text and the quantiles of one round's interval (pure: no etcd, no network)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etcdops.domain.member_metrics import (
    Histogram,
    MemberIntervalStats,
    MemberSample,
    MetricsFormatError,
    StarvationThresholds,
    counter_delta,
    histogram_delta,
    hours_to_quota,
    interval_stats,
    is_fragmented,
    member_sample,
    parse_exposition,
    quantile,
    recent_total,
    starved_resources,
    window_text,
)

T0 = datetime(2026, 12, 7, 20, 0, tzinfo=UTC)
BOUNDS = (0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, math.inf)


def exposition(
    wal: list[int],
    *,
    start: float = 1000.0,
    failed: int = 0,
    db: int = 8192,
    rtt: int = 0,
    space: tuple[int, int] | None = None,
    leaders: int | None = None,
) -> str:
    """A /metrics text as etcd writes it (comments, labels, a peer label), ``wal``: per-bucket counts;
    ``space``: (bytes in use, quota); ``leaders``: the leader changes counted since the start."""
    lines = [
        "# HELP etcd_disk_wal_fsync_duration_seconds The latency distributions of fsync called by WAL.",
        "# TYPE etcd_disk_wal_fsync_duration_seconds histogram",
    ]
    total = 0
    for bound, count in zip(BOUNDS, wal, strict=True):
        total += count
        le = "+Inf" if math.isinf(bound) else repr(bound)
        lines.append(f'etcd_disk_wal_fsync_duration_seconds_bucket{{le="{le}"}} {total}')
    lines += [
        f"etcd_disk_wal_fsync_duration_seconds_sum {total * 0.002}",
        f"etcd_disk_wal_fsync_duration_seconds_count {total}",
    ]
    for peer in ("8e9e05c52164694d", "91bc3c398fb3c146"):
        lines.append(f'etcd_network_peer_round_trip_time_seconds_bucket{{To="{peer}",le="0.0001"}} 0')
        lines.append(f'etcd_network_peer_round_trip_time_seconds_bucket{{To="{peer}",le="0.2048"}} {rtt}')
        lines.append(f'etcd_network_peer_round_trip_time_seconds_bucket{{To="{peer}",le="+Inf"}} {rtt}')
    lines += [
        f"process_start_time_seconds {start:e}",
        f"etcd_server_proposals_failed_total {failed}",
        "etcd_server_proposals_pending 2",
        f"etcd_mvcc_db_total_size_in_bytes {db}",
        'etcd_server_go_version{server_go_version="go1.23.4"} 1',
    ]
    if space is not None:
        lines += [f"etcd_mvcc_db_total_size_in_use_in_bytes {space[0]}", f"etcd_server_quota_backend_bytes {space[1]}"]
    if leaders is not None:
        lines.append(f"etcd_server_leader_changes_seen_total {leaders}")
    return "\n".join(lines) + "\n"


def test_a_sample_keeps_the_histograms_and_the_scalars() -> None:
    sample = member_sample(exposition([5, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2], rtt=4), T0)

    assert sample.histograms["wal_fsync"].buckets[0] == (0.001, 5.0)
    assert sample.histograms["wal_fsync"].buckets[-1] == (math.inf, 10.0)
    assert sample.histograms["peer_rtt"].total == 8  # summed over both peers
    assert sample.values == {"start": 1000.0, "pending": 2.0, "proposals_failed": 0.0, "db_size": 8192.0}
    assert MemberSample.from_dict(sample.to_dict()) == sample  # what the state store keeps


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('etcd_up{le="1" 1\n', "line 1: not a sample"),
        ('etcd_disk_wal_fsync_duration_seconds_bucket{le="1"} many\n', "'many' is not a number"),
        ('etcd_disk_wal_fsync_duration_seconds_bucket{le="1",x} 1\n', "line 1: malformed labels"),
        ('etcd_disk_wal_fsync_duration_seconds_bucket{le="1"} 1\n', "not cumulative up to \\+Inf"),
        ("process_start_time_seconds 1\n", "no etcd_disk_wal_fsync_duration_seconds"),
    ],
)
def test_bad_metrics_text_is_one_named_error(text: str, message: str) -> None:
    with pytest.raises(MetricsFormatError, match=message):
        member_sample(text, T0)


def test_label_values_keep_escaped_quotes_and_commas() -> None:
    parsed = parse_exposition('m{a="x,\\"y\\"",b="z"} 1.5 1700000000000\n')
    assert parsed == {"m": [((("a", 'x,"y"'), ("b", "z")), 1.5)]}


def test_quantile_interpolates_inside_the_bucket_like_prometheus() -> None:
    h = Histogram(((0.01, 50.0), (0.1, 100.0), (math.inf, 100.0)))
    assert quantile(0.5, h) == pytest.approx(0.01)
    assert quantile(0.99, h) == pytest.approx(0.01 + 0.09 * 49 / 50)
    assert quantile(0.99, Histogram(((0.01, 0.0), (math.inf, 10.0)))) == 0.01  # in +Inf: the highest bound
    assert quantile(0.99, Histogram(((0.01, 0.0), (math.inf, 0.0)))) is None  # nothing observed


def test_the_interval_is_the_difference_between_rounds_and_a_restart_counts_from_zero() -> None:
    first = member_sample(exposition([100, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], failed=3, db=3600), T0)
    slow = member_sample(
        exposition([100, 0, 0, 0, 0, 0, 0, 0, 0, 0, 50, 0], failed=5, db=7200), T0 + timedelta(hours=1)
    )
    restarted = member_sample(exposition([10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], start=2000.0), T0 + timedelta(hours=2))

    stats = interval_stats(first, slow)
    assert stats.wal_fsync_p99 is not None and 0.512 < stats.wal_fsync_p99 <= 1.024  # only the new slow fsyncs
    assert (stats.proposals_failed, stats.db_growth_per_hour, stats.proposals_pending) == (2, 3600, 2)
    after = interval_stats(slow, restarted)
    assert after.restarted and after.wal_fsync_p99 is not None and after.wal_fsync_p99 <= 0.001
    assert after.proposals_failed == 0  # its counter restarted at 0
    assert interval_stats(None, first) == MemberIntervalStats(proposals_pending=2)  # no base yet


def test_starvation_names_the_resource_and_the_numbers() -> None:
    stats = MemberIntervalStats(wal_fsync_p99=1.4, backend_commit_p99=0.02, peer_rtt_p99=0.2)
    found = starved_resources(stats, StarvationThresholds(), "10 min")

    assert found == {
        "disk": "disk: WAL fsync p99 1.4 s over 10 min (threshold 500 ms)",
        "network": "network: peer round trip p99 200 ms over 10 min (threshold 150 ms)",
    }
    healthy = MemberIntervalStats(wal_fsync_p99=0.004, backend_commit_p99=0.02, peer_rtt_p99=0.001)
    assert starved_resources(healthy, StarvationThresholds(), "60 s") == {}


def test_the_default_thresholds_are_the_etcd_mixins_warning_levels() -> None:
    # WAL fsync p99 > 0.5 s, backend commit p99 > 0.25 s, peer round trip p99 > 0.15 s (etcd's targets,
    # 10 ms and 25 ms, are what a good disk does, not where a member starts to starve)
    assert StarvationThresholds() == StarvationThresholds(wal_fsync_p99=0.5, backend_commit_p99=0.25, peer_rtt_p99=0.15)
    slow_disk = MemberIntervalStats(wal_fsync_p99=0.2, backend_commit_p99=0.1, peer_rtt_p99=0.1)
    assert starved_resources(slow_disk, StarvationThresholds(), "60 s") == {}  # slow, not starving


@pytest.mark.parametrize(
    ("seconds", "said"), [(0, "0 s"), (60, "60 s"), (119, "119 s"), (600, "10 min"), (900, "15 min"), (14400, "4 h")]
)
def test_a_window_is_said_in_the_unit_a_reader_expects(seconds: float, said: str) -> None:
    assert window_text(seconds) == said


MIB = 1024 * 1024


def test_a_members_database_against_its_own_quota() -> None:
    quota = 2048 * MIB
    before = member_sample(exposition([1] * 12, db=1000 * MIB, space=(600 * MIB, quota), leaders=1), T0)
    after = member_sample(
        exposition([2] * 12, db=1100 * MIB, space=(450 * MIB, quota), leaders=3), T0 + timedelta(hours=1)
    )

    stats = interval_stats(before, after)
    assert stats.quota_used_percent == pytest.approx(100 * 1100 / 2048)
    assert stats.db_growth_per_hour == 100 * MIB
    assert stats.hours_to_quota == pytest.approx(948 / 100)  # 948 MiB left at 100 MiB an hour
    assert stats.fragmented is True  # 450 of 1100 MiB in use, more than 100 MiB of it
    assert stats.leader_changes == 2  # this interval's; the round sums them over 15 minutes
    first = interval_stats(None, before)
    assert first.fragmented is False and first.hours_to_quota is None  # 600 of 1000 MiB in use
    assert first.leader_changes is None and first.quota_used_percent == pytest.approx(100 * 1000 / 2048)
    assert first.fragmented is False and first.hours_to_quota is None and first.leader_changes is None
    names = {name for name, _, _ in stats.points()}
    assert {"DbQuotaUsedPercent", "HoursToQuota"} <= names and "LeaderChanges15m" not in names  # not summed yet


@pytest.mark.parametrize(
    ("size", "in_use", "fragmented"),
    [(300 * MIB, 120 * MIB, True), (300 * MIB, 90 * MIB, False), (200 * MIB, 120 * MIB, False), (0, 0, False)],
)
def test_fragmentation_is_the_etcd_mixins_rule(size: int, in_use: int, fragmented: bool) -> None:
    # less than half of the file in use AND more than 100 MiB in use (a small database is not worth a defrag)
    assert is_fragmented(size, in_use) is fragmented


# ---- properties ---------------------------------------------------------------------------------------


@given(
    st.integers(min_value=0, max_value=8 * 1024**3),
    st.integers(min_value=1, max_value=8 * 1024**3),
    st.floats(min_value=-1e9, max_value=1e10, allow_nan=False),
)
def test_hours_to_quota_is_when_the_growth_reaches_the_quota(size: int, quota: int, growth: float) -> None:
    hours = hours_to_quota(size, quota, growth)
    if growth <= 0:
        assert hours is None  # a database that does not grow never reaches its quota
        return
    if hours is None:  # so little growth that the hours overflow: never, as far as a metric can say
        assert size < quota and not math.isfinite((quota - size) / growth)
        return
    assert hours >= 0 and math.isfinite(hours)
    if size < quota:
        assert size + growth * hours == pytest.approx(quota)
    else:
        assert hours == 0


@given(
    st.lists(st.tuples(st.integers(min_value=-3600, max_value=600), st.integers(min_value=0, max_value=10))),
    st.integers(min_value=1, max_value=3600),
)
def test_a_windowed_total_counts_exactly_the_entries_inside_the_window(
    entries: list[tuple[int, int]], window_seconds: int
) -> None:
    stamped = [(T0 + timedelta(seconds=offset), float(n)) for offset, n in entries]
    window = timedelta(seconds=window_seconds)
    kept, total = recent_total(stamped, T0, window)
    assert total == sum(n for offset, n in entries if -window_seconds < offset <= 0)
    assert all(T0 - window < at <= T0 for at, _ in kept) and kept == sorted(kept)
    # keeping only what is kept loses nothing the next round would count of what was there (the entries
    # stamped after now, a clock that went back, are dropped)
    later = T0 + timedelta(seconds=30)
    past = [(at, n) for at, n in stamped if at <= T0]
    assert recent_total(kept, later, window)[1] == recent_total(past, later, window)[1]


counts = st.lists(st.integers(min_value=0, max_value=1000), min_size=len(BOUNDS), max_size=len(BOUNDS))


def cumulative(per_bucket: list[int]) -> Histogram:
    total, buckets = 0, []
    for bound, count in zip(BOUNDS, per_bucket, strict=True):
        total += count
        buckets.append((bound, float(total)))
    return Histogram(tuple(buckets))


@given(counts, st.floats(min_value=0.01, max_value=1.0), st.floats(min_value=0.01, max_value=1.0))
def test_quantiles_are_monotone_and_within_the_finite_bounds(per_bucket: list[int], q1: float, q2: float) -> None:
    h = cumulative(per_bucket)
    low, high = quantile(min(q1, q2), h), quantile(max(q1, q2), h)
    if h.total == 0:
        assert low is None and high is None
        return
    assert low is not None and high is not None
    assert 0 <= low <= high <= BOUNDS[-2]


@given(counts, counts)
def test_a_delta_never_has_negative_counts_and_a_reset_is_a_restart(before: list[int], since: list[int]) -> None:
    previous = cumulative(before)
    grown = cumulative([a + b for a, b in zip(before, since, strict=True)])

    delta = histogram_delta(previous, grown)
    assert delta == cumulative(since)  # what was observed in between, exactly
    assert all(count >= 0 for _, count in delta.buckets)
    assert all(b[1] >= a[1] for a, b in zip(delta.buckets, delta.buckets[1:], strict=False))
    # a member that restarted has counts below the last round's: it counted `since` from zero
    restarted = cumulative(since)
    if any(c < p for (_, p), (_, c) in zip(previous.buckets, restarted.buckets, strict=True)):
        assert histogram_delta(previous, restarted) == restarted
    assert histogram_delta(previous, grown, restarted=True) == grown


@given(st.integers(min_value=0, max_value=10**9), st.integers(min_value=0, max_value=10**9))
def test_a_counter_delta_is_never_negative(previous: int, current: int) -> None:
    delta = counter_delta(previous, current)
    assert delta >= 0
    assert delta == (current - previous if current >= previous else current)
