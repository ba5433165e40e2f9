"""The members' own metrics in a health round: scrape every member's ``/metrics`` in parallel under
the round's deadline, compute what happened since the last round from the sample the state store kept
(a Lambda remembers nothing between invocations), keep this round's sample for the next, and announce
a starved member once per incident.

An incident of a member's resource (disk, network) starts in the round that first sees a p99 above
its threshold and ends in the first round that sees it below again; its id carries the round it
started in, so a starvation that comes back later is a new incident, announced again. A member that
did not answer this round keeps its last sample (the next round's interval is then longer); a member
that left the membership is forgotten.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from etcdops.adapters.etcd.client import TlsFiles
from etcdops.adapters.etcd.metrics import fetch_metrics
from etcdops.app.health_actions import announce
from etcdops.domain.errors import EtcdopsError
from etcdops.domain.health import ClusterHealth
from etcdops.domain.member_metrics import (
    LEADER_CHANGES_WINDOW,
    MemberIntervalStats,
    MemberSample,
    StarvationThresholds,
    interval_stats,
    member_sample,
    recent_total,
    starved_resources,
    window_text,
)

if TYPE_CHECKING:
    from etcdops.app.healthcheck import HealthContext

__all__ = ["MemberMetricsRound", "fold_member_metrics", "last_member_points", "start_scrapes"]

log = logging.getLogger("etcdops.app.member_metrics")


def start_scrapes(
    urls: Sequence[str], tls: TlsFiles | None, timeout: float, pool: ThreadPoolExecutor
) -> Callable[[], dict[str, str]]:
    """Start fetching each URL's /metrics; the returned function collects the texts that arrived
    within ``timeout`` of the start (a frozen member is left out, never waited for)."""
    futures = {pool.submit(fetch_metrics, url, tls, timeout): url for url in urls}

    def collect() -> dict[str, str]:
        done, _ = wait(futures, timeout=timeout + 0.25)
        texts: dict[str, str] = {}
        for future in done:
            try:
                texts[futures[future]] = future.result()
            except EtcdopsError as exc:
                log.info("metrics of %s not read: %s", futures[future], exc)
        return texts

    return collect


@dataclass(frozen=True)
class MemberMetricsRound:
    """Each member's interval this round (by member name), and the notices sent."""

    stats: Mapping[str, MemberIntervalStats] = field(default_factory=dict)
    notices: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, dict[str, float]]:
        return {member: {name: value for name, _, value in s.points()} for member, s in sorted(self.stats.items())}


def _kept(documents: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    kept: dict[str, dict[str, Any]] = {}
    for member, text in documents.items():
        try:
            document = json.loads(text)
            MemberSample.from_dict(document["sample"])
            [(datetime.fromisoformat(at), float(n)) for at, n in document.get("leader_changes", [])]
            kept[member] = document
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("the kept metrics of %s are unreadable (%s): this round is its first", member, exc)
    return kept


def last_member_points(documents: Mapping[str, str]) -> dict[str, dict[str, float]]:
    """What the last round published of each member (metric name -> value), from the kept documents
    (``StateStore.load_member_metrics``); a member whose document is unreadable or older is left out."""
    return {member: dict(document["last"]) for member, document in _kept(documents).items() if document.get("last")}


def _interval(previous: MemberSample | None, now: datetime) -> str:
    """The window this round's p99s are of: since the previous round's sample."""
    if previous is None:
        return "the last round"
    return window_text(max(0.0, (now - previous.taken_at).total_seconds()))


def _with_leader_changes(
    stats: MemberIntervalStats, before: Mapping[str, Any] | None, now: datetime
) -> tuple[MemberIntervalStats, list[list[Any]]]:
    """``LeaderChanges15m``: the leader changes each round saw, kept as [time, count] beside the sample
    for LEADER_CHANGES_WINDOW, summed. A round that does not know this interval's count adds nothing."""
    entries = [(datetime.fromisoformat(at), float(n)) for at, n in (before or {}).get("leader_changes", [])]
    if stats.leader_changes is not None:
        entries.append((now, stats.leader_changes))
    kept, total = recent_total(entries, now, LEADER_CHANGES_WINDOW)
    known = stats.leader_changes is not None or bool(kept)
    return replace(stats, leader_changes_15m=total if known else None), [[at.isoformat(), n] for at, n in kept]


def fold_member_metrics(
    ctx: HealthContext,
    health: ClusterHealth,
    texts: Mapping[str, str],
    thresholds: StarvationThresholds,
    now: datetime,
) -> MemberMetricsRound:
    """This round's member metrics from the scraped ``texts`` (client URL -> /metrics text)."""
    cluster = ctx.config.name
    names = {url: m.name or f"{m.id:x}" for m in health.members for url in m.client_urls}
    members = {m.name or f"{m.id:x}" for m in health.members}
    kept = {name: doc for name, doc in _kept(ctx.state.load_member_metrics(cluster)).items() if name in members}
    stats: dict[str, MemberIntervalStats] = {}
    notices: list[str] = []
    for url, text in sorted(texts.items()):
        member = names.get(url)
        if member is None or member in stats:
            continue
        try:
            sample = member_sample(text, now)
        except EtcdopsError as exc:
            log.warning("metrics of %s (%s) not understood: %s", member, url, exc)
            continue
        before = kept.get(member)
        previous = MemberSample.from_dict(before["sample"]) if before else None
        stats[member], changes = _with_leader_changes(interval_stats(previous, sample), before, now)
        was_starved: dict[str, str] = dict(before.get("starved", {})) if before else {}
        starved: dict[str, str] = {}
        for resource, what in starved_resources(stats[member], thresholds, _interval(previous, now)).items():
            starved[resource] = was_starved.get(resource, now.isoformat())
            since = datetime.fromisoformat(starved[resource])
            incident = f"starvation-{member}-{resource}-{since:%Y%m%dT%H%M%S}"
            subject = f"etcdops {cluster}: member {member} is starved: {resource}"
            message = (
                f"{member}: {what}.\n\nA starved member misses heartbeats and slows every write of the "
                f"cluster. See the README, Health checks and alarms, for what to check. This is said once "
                f"until a round sees {member}'s {resource} below the threshold again."
            )
            note = announce(ctx, incident, "starvation", subject[:100], message, now)
            if note:
                notices.append(f"{member}: {what}")
        kept[member] = {
            "sample": sample.to_dict(),
            "starved": starved,
            "leader_changes": changes,
            "last": {name: value for name, _, value in stats[member].points()},  # for etcdops status
        }
    ctx.state.save_member_metrics(cluster, {m: json.dumps(d, sort_keys=True) for m, d in kept.items()}, now)
    return MemberMetricsRound(stats, tuple(notices))
