"""The foundation against real etcd: health probes, failures, TLS, membership, snapshots."""

from __future__ import annotations

import hashlib
import subprocess

import pytest
from retries import retry

from etcdops.adapters.etcd.client import EtcdClient, TlsFiles
from etcdops.app.probe import probe_cluster
from etcdops.domain.errors import EtcdAuthError, EtcdError, EtcdUnavailableError, EtcdUnhealthyClusterError
from etcdops.domain.health import ClusterHealth
from etcdops_local.cluster import LocalCluster, free_ports

pytestmark = pytest.mark.integration


def probe(cluster: LocalCluster, deadline: float = 30.0) -> ClusterHealth:
    """A probe round; by default with a deadline that only a member that cannot answer meets (a loaded
    machine can take seconds to answer a linearizable read), so a healthy member is never cut off."""
    with cluster.client(timeout=deadline) as client:
        return probe_cluster(client, deadline=deadline)


def test_all_members_healthy_with_one_leader(shared_cluster: LocalCluster) -> None:
    health = probe(shared_cluster)

    assert health.has_quorum
    assert len(health.members) == 3 and all(m.healthy for m in health.members)
    assert health.leader in {m.id for m in health.members}
    assert len({m.leader for m in health.members}) == 1
    assert health.cluster_id
    assert all(m.version and m.db_size and m.raft_index for m in health.members)
    assert health.quorum_margin == 1


def a_follower(cluster: LocalCluster) -> str:
    health = probe(cluster)
    return next(m.name for m in health.members if m.id != health.leader)


def test_killed_member_is_unhealthy_and_quorum_holds(cluster: LocalCluster) -> None:
    # Given a healthy cluster, When a follower is killed
    victim = a_follower(cluster)
    cluster.kill(victim)

    # Then only that member is reported unhealthy, with an error, and the cluster keeps quorum
    health = probe(cluster)
    assert [(m.name, bool(m.error)) for m in health.members if not m.healthy] == [(victim, True)]
    assert health.has_quorum and health.quorum_margin == 0


def test_killed_leader_is_replaced_by_an_election(cluster: LocalCluster) -> None:
    health = probe(cluster)
    leader = next(m.name for m in health.members if m.id == health.leader)
    cluster.kill(leader)

    # during the election the survivors see no leader; within a few election timeouts they do
    # (a read asked while there is no leader waits on etcd's own request timeout: short rounds, retried)
    health = retry(lambda: _with_quorum(probe(cluster, deadline=2.0)), retry_on=(AssertionError,), timeout=15)
    assert [m.name for m in health.members if not m.healthy] == [leader]
    assert health.leader not in (None, next(m.id for m in health.members if m.name == leader))


def _with_quorum(health: ClusterHealth) -> ClusterHealth:
    assert health.has_quorum
    return health


def test_paused_member_cannot_stall_the_probe(cluster: LocalCluster) -> None:
    victim = a_follower(cluster)
    cluster.pause(victim)
    try:
        health = probe(cluster, deadline=2.0)

        # the frozen member is cut off by the round's deadline and the others are answered
        # (how long a round takes is measured by bench/bench_probe.py, not asserted here)
        unhealthy = [m for m in health.members if not m.healthy]
        assert [m.name for m in unhealthy] == [victim]
        assert unhealthy[0].error and "deadline" in unhealthy[0].error
        assert health.has_quorum
    finally:
        cluster.resume(victim)


def test_two_of_three_killed_loses_quorum(cluster: LocalCluster) -> None:
    cluster.kill("m1")
    cluster.kill("m2")

    health = probe(cluster, deadline=2.0)  # the survivor cannot answer a linearizable read: it is cut off

    assert not health.has_quorum
    assert health.leader is None
    assert [m.name for m in health.members if m.healthy] == []


def test_client_without_certificate_is_refused(shared_cluster: LocalCluster) -> None:
    endpoint = shared_cluster.ps()[0].client_urls[0]
    with (
        EtcdClient([endpoint], tls=TlsFiles(ca=shared_cluster.tls.ca), timeout=2.0) as client,
        pytest.raises((EtcdAuthError, EtcdUnavailableError)),
    ):
        client.status(endpoint)


def test_plain_http_is_refused_without_explicit_plaintext(shared_cluster: LocalCluster) -> None:
    from etcdops.domain.errors import ConfigError

    with pytest.raises(ConfigError, match="plaintext"):
        EtcdClient(["http://127.0.0.1:2379"], tls=shared_cluster.tls)
    with pytest.raises(ConfigError, match="tls"):
        EtcdClient(["https://127.0.0.1:2379"])


def test_learner_add_promote_remove_round_trip(cluster: LocalCluster) -> None:
    with cluster.client() as client:
        (peer_port,) = free_ports(1)
        # a cluster younger than ~5 s refuses membership changes as "unhealthy cluster": retry by design
        learner = retry(
            lambda: client.member_add([f"https://127.0.0.1:{peer_port}"], learner=True),
            retry_on=(EtcdUnhealthyClusterError,),
        )
        assert learner.is_learner and not learner.started

        # an added learner that never started cannot be promoted: etcd says it is not in sync
        with pytest.raises(EtcdError):
            client.member_promote(learner.id)
        client.member_remove(learner.id)

        # now a learner that really runs: add it, start its process, promote once it is in sync
        initial = ",".join(f"{m.name}={m.peer_url}" for m in cluster.state().members)
        (port,) = free_ports(1)
        # re-adding right after a remove can fail for about a second
        added = retry(lambda: client.member_add([f"https://127.0.0.1:{port}"], learner=True), retry_on=(EtcdError,))
        member = cluster.start_member("m4", peer_port=port, initial_cluster=f"{initial},m4={added.peer_urls[0]}")
        promoted = retry(lambda: client.member_promote(added.id), retry_on=(EtcdError,), timeout=30)
        assert not next(m for m in promoted if m.id == added.id).is_learner

        # right after a promotion etcd may refuse a remove as "unhealthy cluster" for a few seconds
        retry(lambda: client.member_remove(added.id), retry_on=(EtcdUnhealthyClusterError, EtcdUnavailableError))
        assert added.id not in {m.id for m in client.member_list()}
        cluster.stop_member(member.name)


def test_snapshot_stream_passes_its_integrity_check(shared_cluster: LocalCluster) -> None:
    with shared_cluster.client() as client:
        for i in range(50):
            client.put(f"/snap/{i}", "v" * 100)
        endpoint = shared_cluster.ps()[1].client_urls[0]
        stream = client.snapshot_stream(endpoint)
        data = b"".join(stream.chunks())

    assert stream.sha256 == hashlib.sha256(data).digest()
    assert len(data) == stream.db_bytes and len(data) % 4096 == 0


def test_etcdctl_uses_the_local_env(shared_cluster: LocalCluster) -> None:
    env = shared_cluster.env()
    etcdctl = str(shared_cluster.binaries().etcdctl)

    ok = subprocess.run([etcdctl, "endpoint", "health"], env=env, capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr

    without_cert = {k: v for k, v in env.items() if k not in ("ETCDCTL_CERT", "ETCDCTL_KEY")}
    refused = subprocess.run(
        [etcdctl, "--dial-timeout=2s", "--command-timeout=3s", "endpoint", "health"],
        env=without_cert,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode != 0
