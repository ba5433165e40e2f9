"""One probe round: every member of the live membership in parallel, under one overall deadline.

A dead member refuses connections at once; a frozen one (SIGSTOP, a hung host) accepts the TCP
connection and then says nothing. Each call's deadline is what is left of the round's, so neither
can stall the round, and the answer comes back within the deadline plus a small overhead.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime
from typing import Any

from etcdops.adapters.etcd.client import EtcdClient, Member
from etcdops.adapters.etcd.membership import Membership, read_membership
from etcdops.domain.errors import EtcdError
from etcdops.domain.health import Alarm, ClusterHealth, MemberHealth

DEFAULT_DEADLINE = 2.0
HEALTH_KEY = b"health"


def probe_cluster(
    client: EtcdClient, *, deadline: float = DEFAULT_DEADLINE, membership: Membership | None = None
) -> ClusterHealth:
    """Probe every member: status plus a linearizable read (serializable for learners).

    The members come from the member list, read from the first of ``client.endpoints`` (the seeds)
    that answers, or given as ``membership`` when the caller read it already; each member is then
    probed at its own client URL. When no seed answers, each seed is reported as an unreachable,
    unknown member (id 0) named by its endpoint.
    """
    started = time.monotonic()
    observed_at = datetime.now(UTC)

    def remaining() -> float:
        return max(0.05, deadline - (time.monotonic() - started))

    if membership is None:
        membership = read_membership(client, remaining() / 2)  # at most half of the round's deadline
    # a seed that failed while another served the member list is no news: a live member's own row
    # says what is wrong with it, and a seed that is no member any more is only an old address
    known = membership.members is not None
    errors = [] if known else [f"member list via {e}: {error}" for e, error in membership.failures.items()]
    if membership.members is None:
        return _nobody_answered(client, membership, observed_at, errors)
    members = list(membership.members)

    pool = ThreadPoolExecutor(max_workers=max(1, len(members) + 2), thread_name_prefix="probe")
    try:
        futures = {pool.submit(_probe_member, client, m, remaining): m for m in members}
        alarms_future = pool.submit(_alarms, client, members, remaining)
        version_future = pool.submit(_cluster_version, client, members, remaining)
        pending: list[Future[Any]] = [*futures, alarms_future, version_future]
        done, _ = wait(pending, timeout=deadline + 0.25)
        results: list[tuple[MemberHealth, int | None]] = []
        for future, member in futures.items():
            if future in done:
                results.append(future.result())
            else:
                results.append((_unhealthy(member, "probe did not finish within the deadline"), None))
        alarms: tuple[Alarm, ...] = ()
        if alarms_future in done:
            alarms, alarm_error = alarms_future.result()
            if alarm_error:
                errors.append(alarm_error)
        else:
            errors.append("alarm list did not finish within the deadline")
        cluster_version = version_future.result() if version_future in done else None
    finally:
        # grpc calls carry their own deadlines; do not wait for stragglers here
        pool.shutdown(wait=False, cancel_futures=True)

    return _cluster_health(results, alarms, observed_at, errors, cluster_version)


def _nobody_answered(
    client: EtcdClient, membership: Membership, observed_at: datetime, errors: list[str]
) -> ClusterHealth:
    """Each seed as an unreachable, unknown member (id 0) named by its endpoint."""
    unreachable = tuple(
        MemberHealth(
            id=0,
            name="",
            client_urls=(endpoint,),
            peer_urls=(),
            is_learner=False,
            healthy=False,
            error=membership.failures.get(endpoint, "unreachable"),
        )
        for endpoint in client.endpoints
    )
    return ClusterHealth(
        cluster_id=None, leader=None, members=unreachable, observed_at=observed_at, errors=tuple(errors)
    )


def _cluster_health(
    results: list[tuple[MemberHealth, int | None]],
    alarms: tuple[Alarm, ...],
    observed_at: datetime,
    errors: list[str],
    cluster_version: str | None,
) -> ClusterHealth:
    """The members' probes as one observation: the leader and cluster id most healthy members name."""
    healthy_leaders = Counter(m.leader for m in (r[0] for r in results) if m.healthy and m.leader)
    leader = healthy_leaders.most_common(1)[0][0] if healthy_leaders else None
    cluster_ids = Counter(cid for _, cid in results if cid)
    cluster_id = cluster_ids.most_common(1)[0][0] if cluster_ids else None
    return ClusterHealth(
        cluster_id=cluster_id,
        leader=leader,
        members=tuple(sorted((r[0] for r in results), key=lambda m: (m.name == "", m.name, m.id))),
        alarms=alarms,
        observed_at=observed_at,
        errors=tuple(errors),
        cluster_version=cluster_version,
    )


def _unhealthy(member: Member, error: str) -> MemberHealth:
    return MemberHealth(
        id=member.id,
        name=member.name,
        client_urls=member.client_urls,
        peer_urls=member.peer_urls,
        is_learner=member.is_learner,
        healthy=False,
        error=error,
    )


def _probe_member(
    client: EtcdClient, member: Member, remaining: Callable[[], float]
) -> tuple[MemberHealth, int | None]:
    if not member.started:
        return _unhealthy(member, "added but not started (no name or client URLs yet)"), None
    endpoint = member.client_urls[0]
    try:
        status = client.status(endpoint, timeout=remaining())
    except EtcdError as exc:
        return _unhealthy(member, str(exc)), None
    error: str | None = None
    if not status.leader:
        error = "member sees no leader"
    else:
        try:
            # learners refuse linearizable reads; a serializable read still proves they serve
            client.range(HEALTH_KEY, endpoint=endpoint, serializable=member.is_learner, timeout=remaining())
        except EtcdError as exc:
            error = f"read failed: {exc}"
    if status.errors and error is None:
        error = "; ".join(status.errors)
    return (
        MemberHealth(
            id=member.id,
            name=member.name,
            client_urls=member.client_urls,
            peer_urls=member.peer_urls,
            is_learner=member.is_learner,
            healthy=error is None,
            error=error,
            db_size=status.db_size,
            db_size_in_use=status.db_size_in_use,
            raft_index=status.raft_index,
            raft_term=status.raft_term,
            version=status.version,
            leader=status.leader or None,
        ),
        status.cluster_id,
    )


def _alarms(
    client: EtcdClient, members: list[Member], remaining: Callable[[], float]
) -> tuple[tuple[Alarm, ...], str | None]:
    last = "no member answered the alarm list"
    for member in members:
        if not member.started:
            continue
        try:
            return tuple(client.alarms(member.client_urls[0], timeout=remaining())), None
        except EtcdError as exc:
            last = f"alarm list: {exc}"
    return (), last


def _cluster_version(client: EtcdClient, members: list[Member], remaining: Callable[[], float]) -> str | None:
    """The cluster version from the first started member that tells it (None when none does)."""
    for member in members:
        if not member.started:
            continue
        try:
            return client.cluster_version(member.client_urls[0], timeout=remaining())
        except EtcdError:
            continue
    return None


def health_to_dict(health: ClusterHealth) -> dict[str, object]:
    """The JSON shape of ``etcdops status --json``."""
    return {
        "cluster_id": f"{health.cluster_id:x}" if health.cluster_id else None,
        "leader": f"{health.leader:x}" if health.leader else None,
        "has_quorum": health.has_quorum,
        "quorum": health.quorum,
        "quorum_margin": health.quorum_margin,
        "cluster_version": health.cluster_version,
        "members": [
            {
                "id": f"{m.id:x}",
                "name": m.name,
                "client_urls": list(m.client_urls),
                "peer_urls": list(m.peer_urls),
                "is_learner": m.is_learner,
                "is_leader": bool(health.leader) and m.id == health.leader,
                "healthy": m.healthy,
                "error": m.error,
                "db_size": m.db_size,
                "db_size_in_use": m.db_size_in_use,
                "raft_index": m.raft_index,
                "raft_term": m.raft_term,
                "version": m.version,
            }
            for m in health.members
        ],
        "alarms": [{"member_id": f"{a.member_id:x}", "alarm": a.alarm} for a in health.alarms],
        "errors": list(health.errors),
        "observed_at": health.observed_at.isoformat() if health.observed_at else None,
    }
