"""Delta backups on a real one-member TLS cluster (every etcd version under test): the chain that a
series of runs builds holds every change (puts, deletes, a 100-key transaction at a boundary, leased
keys), replaying it on the full backup's keys gives `get --rev R` for every R it covers, and a
compacted start revision starts a new chain from a full backup and says so (invariant 19)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from etcdops.adapters.backup.target import open_backup_target
from etcdops.adapters.etcd.client import EtcdClient
from etcdops.adapters.state_delta import InMemoryDeltaChainStore
from etcdops.app.backup.catalogue import read_delta_catalogue
from etcdops.app.backup.delta import read_delta
from etcdops.app.backup.delta_job import DeltaRunResult, run_delta_backup
from etcdops.app.probe import probe_cluster
from etcdops.domain.backup.chain import build_chains
from etcdops.domain.backup.delta import DeltaEvent
from etcdops_local.cluster import EtcdBinaries, LocalCluster

pytestmark = pytest.mark.integration
NOW = datetime(2026, 12, 7, 21, 0, tzinfo=UTC)


@pytest.fixture
def one(start_cluster, etcd_binaries: EtcdBinaries) -> LocalCluster:  # type: ignore[no-untyped-def]
    cluster: LocalCluster = start_cluster(etcd_binaries, members=1)
    return cluster


def run(
    cluster: LocalCluster, chains: InMemoryDeltaChainStore, minute: int, new_chain: str | None = None
) -> DeltaRunResult:
    config = cluster.config()
    store, keyring = open_backup_target(config, create_local_key=True)
    with cluster.client() as client:
        health = probe_cluster(client)
        at = NOW + timedelta(minutes=minute)
        return run_delta_backup(config, client, health, store, keyring, chains, now=at, new_chain=new_chain)


def keyspace(client: EtcdClient, revision: int = 0) -> dict[bytes, bytes]:
    return {kv.key: kv.value for kv in client.range(b"\0", b"\0", revision=revision).kvs}


def writes(client: EtcdClient, n: int) -> None:
    lease = client.lease_grant(600)
    for i in range(5):
        client.put(f"/k/{n}/{i}", f"v{n}-{i}")
    client.delete(f"/k/{n}/0")
    client.txn([DeltaEvent("put", f"/txn/{n}/{i:03d}".encode(), 0, b"x" * i) for i in range(100)])
    client.txn([DeltaEvent("put", f"/leased/{n}".encode(), 0, b"l", lease=lease)])


def test_the_chain_holds_every_revision_replays_to_get_rev_and_a_compaction_breaks_it(one: LocalCluster) -> None:
    chains = InMemoryDeltaChainStore()
    with one.client() as client:
        writes(client, 0)
        first = run(one, chains, 0)
        assert (first.action, first.broken) == ("new-chain", None) and first.backup is not None
        assert run(one, chains, 1).action == "none"  # no write since
        history: dict[int, dict[bytes, bytes]] = {}
        for n in range(1, 4):
            writes(client, n)  # ends in a 100-key transaction then a leased key: a boundary after each
            history[client.range(b"\0", count_only=True).revision] = keyspace(client)
            result = run(one, chains, n + 1)
            assert result.action == "delta" and result.delta is not None
        config = one.config()
        store, keyring = open_backup_target(config)
        catalogue = read_delta_catalogue(store)
        (chain,) = build_chains(catalogue.deltas)
        assert (chain.chain_id, chain.gap_at, len(chain.deltas)) == (first.backup.id, None, 3)
        assert sum(d.leased_keys for d in chain.deltas) == 3
        # replaying the deltas on the full backup's keys gives the keyspace at each delta's end
        state = keyspace(client, first.backup.revision)
        for delta in chain.deltas:
            revisions = read_delta(store, keyring, delta)
            assert max(len(events) for _, events in revisions) == 100  # the transaction stayed whole
            for _revision, events in revisions:
                for event in events:
                    if event.kind == "put":
                        state[event.key] = event.value
                    else:
                        state.pop(event.key, None)
            assert state == history[delta.last_revision] == keyspace(client, delta.last_revision)

        # When the revision the chain continues at is compacted before the next run reads it
        writes(client, 9)
        client.compact(client.range(b"\0", count_only=True).revision)
        writes(client, 10)
        result = run(one, chains, 9)
    # Then a new chain starts from a fresh full backup, and the break is said
    assert result.action == "new-chain" and result.broken is not None and "compacted" in result.broken
    assert result.backup is not None and result.backup.id != first.backup.id
    head = chains.load_chain_head("local")
    assert head is not None and (head.chain_id, head.last_delta) == (result.backup.id, None)
    assert run(one, chains, 10).action == "none"

    # And a new chain asked for by hand (a verification found a break inside the chain, which the runs do not
    # see) starts from a fresh full backup although the chain could go on; the old one is not called broken
    asked = run(one, chains, 11, new_chain="by hand")
    assert (asked.action, asked.reason, asked.broken) == ("new-chain", "by hand", None) and asked.backup is not None
    head = chains.load_chain_head("local")
    assert head is not None and (head.chain_id, head.last_delta) == (asked.backup.id, None)
    assert asked.backup.id != result.backup.id
