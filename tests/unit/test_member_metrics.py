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
    interval_stats,
    member_sample,
    parse_exposition,
    quantile,
    starved_resources,
)

T0 = datetime(2026, 12, 7, 20, 0, tzinfo=UTC)
BOUNDS = (0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, math.inf)


def exposition(wal: list[int], *, start: float = 1000.0, failed: int = 0, db: int = 8192, rtt: int = 0) -> str:
    """A /metrics text as etcd writes it (comments, labels, a peer label), ``wal``: per-bucket counts."""
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
    found = starved_resources(stats, StarvationThresholds(), "the last 60 s")

    assert found == {
        "disk": "disk: WAL fsync p99 1.4 s over the last 60 s (threshold 10 ms)",
        "network": "network: peer round trip p99 200 ms over the last 60 s (threshold 150 ms)",
    }
    healthy = MemberIntervalStats(wal_fsync_p99=0.004, backend_commit_p99=0.02, peer_rtt_p99=0.001)
    assert starved_resources(healthy, StarvationThresholds(), "the last 60 s") == {}


# ---- properties ---------------------------------------------------------------------------------------

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
