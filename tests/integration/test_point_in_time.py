"""Point-in-time restore on a real 3-member TLS cluster (etcd 3.4.23, 3.5.1 and 3.5.30): with a writer running
(puts, deletes, transactions, keys with leases) delta runs build a chain; every member is killed; the
cluster restored from the full backup with the deltas replayed holds, key by key, what `get --rev R`
returned before the disaster, for a random R and for the newest revision the chain covers (--latest).
3.5.30's restore bumps the revision (the replay's offset); 3.4's and 3.5.1's (etcdutl before 3.5.10) do not."""

from __future__ import annotations

import os
import random
import subprocess
import threading
import time

import pytest
from etcd_versions import etcd_flavour, restore_bumps_revision
from test_restore_steps import IN_PLACE, context_for, run, start_doc

from etcdops.adapters.backup.target import open_backup_target
from etcdops.adapters.etcd.client import EtcdClient
from etcdops.adapters.etcd.connect import client_for
from etcdops.adapters.state_delta import InMemoryDeltaChainStore
from etcdops.app.backup.delta_job import run_delta_backup
from etcdops.app.backup.replay import point_in_time
from etcdops.app.probe import probe_cluster
from etcdops.app.runbook import PreflightFailedError, restore
from etcdops.app.runbook.restore import DEFAULT_BUMP_REVISION
from etcdops.domain.backup.delta import DeltaEvent, delta_object_key
from etcdops_local.cluster import LocalCluster

pytestmark = pytest.mark.integration


class Writer:
    """Writes until stopped; remembers every acknowledged write (revision, when)."""

    def __init__(self, client: EtcdClient) -> None:
        self.client = client
        self.acked: list[tuple[int, float]] = []
        self.stop = threading.Event()
        self.lease = client.lease_grant(3600)
        self.failed: BaseException | None = None

    def wait_for_more(self, writes: int) -> None:
        """Until ``writes`` more writes were acknowledged (a writer that died fails the test here)."""
        goal = len(self.acked) + writes
        while len(self.acked) < goal:
            if self.failed is not None:
                raise self.failed
            time.sleep(0.05)

    def run(self) -> None:
        try:
            self._write()
        except BaseException as exc:  # said by wait_for_more, in the test's thread
            self.failed = exc

    def _write(self) -> None:
        i = 0
        while not self.stop.is_set():
            i += 1
            if i % 7 == 0:
                rev = self.client.txn([DeltaEvent("put", f"/t/{i}/{j}".encode(), 0, b"t") for j in range(3)])
            elif i % 5 == 0:
                self.client.delete(f"/k/{(i - 3) % 40}")
                rev = self.client.range(b"\0", count_only=True).revision
            elif i % 11 == 0:
                rev = self.client.txn([DeltaEvent("put", f"/lease/{i % 6}".encode(), 0, b"l", lease=self.lease)])
            else:
                rev = self.client.put(f"/k/{i % 40}", f"v{i}")
            self.acked.append((rev, time.time()))


def keyspace(client: EtcdClient, revision: int) -> dict[bytes, bytes]:
    return {kv.key: kv.value for kv in client.range(b"\0", b"\0", revision=revision).kvs}


def kill_all(cluster: LocalCluster) -> float:
    for process in cluster.ps():
        if process.state == "running":
            cluster.kill(process.name)
    return time.time()


@pytest.mark.parametrize("flavour", ["etcd34", "etcd351", "etcd3530"])
def test_restore_to_a_random_revision_and_to_the_latest_equals_get_rev(flavour: str, start_cluster) -> None:  # type: ignore[no-untyped-def]
    binaries = etcd_flavour(flavour)
    cluster: LocalCluster = start_cluster(binaries)
    config = cluster.config()
    store, keyring = open_backup_target(config, create_local_key=True)
    chains = InMemoryDeltaChainStore()

    def delta_run() -> None:
        with cluster.client() as c:
            run_delta_backup(config, c, probe_cluster(c), store, keyring, chains)

    # Given a writer running while a full backup and four delta runs take place
    with cluster.client() as client:
        client.put("/lease/early", "l")  # a key of the backup with no lease, and keys with one after it
        writer = Writer(client)
        thread = threading.Thread(target=writer.run, daemon=True)
        thread.start()
        delta_run()  # the first run starts the chain from a full backup
        for _ in range(4):
            writer.wait_for_more(5)  # however slow the machine: every delta run has writes to store
            delta_run()
        writer.wait_for_more(5)  # writes after the last delta: what a disaster now loses
        writer.stop.set()
        thread.join()
        choice = point_in_time(store)
        latest = choice.target_revision
        assert len(choice.deltas) >= 4 and latest > choice.backup.revision
        r = random.Random(flavour).randint(choice.backup.revision + 1, latest)
        base = choice.backup.revision
        before = {rev: keyspace(client, rev) for rev in (base, r, latest)}  # `get --rev` before the disaster
    killed_at = kill_all(cluster)

    ctx = context_for(cluster)
    at = IN_PLACE.index("VerifyRestore")
    steps = [*IN_PLACE[:at], "ReplayDeltas", *IN_PLACE[at:]]
    for target, point in ((r, {"to_revision": r}), (latest, {"latest": True})):
        # When RestoreCluster restores to R (each step twice, as after a crash), then, killed again, to the latest
        doc = run(ctx, steps, {**start_doc(), "execution": f"pitr-{target}", **point}, twice=target == r)
        urls = [t["client_url"] for t in doc["targets"]]
        with client_for(config, endpoints=urls) as client:
            # Then it holds, key by key, what `get --rev` said before the disaster
            assert keyspace(client, 0) == before[target]
            offset = doc["replayed"]["offset"]
            assert client.range(b"\0", count_only=True).revision == target + offset == doc["replayed"]["revision"]
        assert offset == (DEFAULT_BUMP_REVISION if restore_bumps_revision(binaries) else 0)
        assert doc["pitr"]["target_revision"] == target and doc["verified"]["keys"] == len(before[target])
        leased = int(doc["pitr"]["leased_puts"])
        assert (doc["replayed"]["unleased_count"] > 0) == (leased > 0)  # written without a lease, and said
        assert target != latest or leased > 0
        summary = doc["approval_summary"]
        assert f"up to revision {target}" in summary and "one transaction per revision" in summary
        if target != latest:
            kill_all(cluster)

    survived = [when for rev, when in writer.acked if rev <= latest]
    lost = [when for rev, when in writer.acked if rev > latest]
    print(
        f"\n{flavour}: recovery point {killed_at - max(survived):.2f} s before the kill "
        f"(newest surviving write at revision {latest}); {len(lost)} acknowledged writes after the last delta lost"
    )
    assert len(survived) > 0


def test_a_delta_gone_while_the_approval_waits_stops_the_restore_in_preflight_with_nothing_stopped(  # type: ignore[no-untyped-def]
    start_cluster, etcd3530
) -> None:
    """Invariant 13 for a point in time: ValidateBackup read every delta; one is deleted during the approval
    wait; the preflight reads them again and names it, before anything is stopped (the replay would
    otherwise fail on a cluster already restored at the backup's revision)."""
    cluster: LocalCluster = start_cluster(etcd3530, members=1)
    config = cluster.config()
    store, keyring = open_backup_target(config, create_local_key=True)
    chains = InMemoryDeltaChainStore()
    with cluster.client() as client:
        for n in range(3):
            client.put(f"/k/{n}", "v")
            run_delta_backup(config, client, probe_cluster(client), store, keyring, chains)  # the first: a full one
    ctx = context_for(cluster)
    doc = run(ctx, ["AcquireLock", "ValidateBackup"], {**start_doc(), "latest": True})
    first, _second = doc["pitr"]["deltas"]  # the first run's full backup, then one delta per later run
    doc = {**doc, "approval": {"approved": True}}
    gone = b"".join(store.open_read(delta_object_key(first)))
    store.delete(delta_object_key(first))
    states = {p.name: p.state for p in cluster.ps()}

    with pytest.raises(PreflightFailedError) as failed:
        restore.run_step(ctx, "Preflight", doc)

    ((check, subject, problem, fix),) = [(f.check, f.subject, f.problem, f.fix) for f in failed.value.findings]
    assert (check, subject) == ("backup", f"delta {first} in {store.uri}") and "is missing" in problem
    assert "\n" not in problem + fix and "start the restore again" in fix
    assert {p.name: p.state for p in cluster.ps()} == states
    with cluster.client() as client:
        assert keyspace(client, 0) == {f"/k/{n}".encode(): b"v" for n in range(3)}
    # the same delta back, whole: the preflight passes (the check is about the deltas, nothing else)
    store.put_bytes(delta_object_key(first), gone)
    assert restore.run_step(ctx, "Preflight", doc)["preflight"]["passed_at"]


def test_a_revision_of_200_changes_is_replayed_as_one_transaction_with_max_txn_ops_raised(  # type: ignore[no-untyped-def]
    start_cluster, etcd3530
) -> None:
    """One revision of 200 changes inside the chain: a transaction of 200 puts (its member started once with
    --max-txn-ops=1000, a flag of that start only) and a lease revoked with 200 keys (one revision of 200
    deletes, which a cluster at etcd's default limit makes too). The restored members start with
    --max-txn-ops raised to 200 and replay each as one transaction; the keyspace equals `get --rev`."""
    cluster: LocalCluster = start_cluster(etcd3530, members=1)
    config = cluster.config()
    store, keyring = open_backup_target(config, create_local_key=True)
    ctx = context_for(cluster)
    (host,) = ctx.compute.hosts()
    ctx.compute.stop_etcd(host)
    ctx.compute.start_etcd(host, f"{host.name}={host.peer_url}", "new", {"max-txn-ops": 1000})
    cluster.wait_ready(timeout=120.0)
    chains = InMemoryDeltaChainStore()
    with client_for(config, endpoints=[host.client_url]) as client:
        client.put("/before", "b")
        run_delta_backup(config, client, probe_cluster(client), store, keyring, chains)  # the chain's full backup
        txn = client.txn([DeltaEvent("put", f"/txn/{n:03d}".encode(), 0, b"t") for n in range(200)])
        lease = client.lease_grant(3600)
        for n in range(2):  # 200 keys on one lease, in two transactions of 100
            client.txn([DeltaEvent("put", f"/l/{n}{k:02d}".encode(), 0, b"l", lease=lease) for k in range(100)])
        etcdctl = [str(cluster.binaries().etcdctl), "lease", "revoke", f"{lease:x}"]
        subprocess.run(etcdctl, env={**os.environ, **cluster.env()}, check=True, capture_output=True)
        revoked = client.range(b"\0", count_only=True).revision
        client.put("/after", "a")
        run_delta_backup(config, client, probe_cluster(client), store, keyring, chains)
        target = client.range(b"\0", count_only=True).revision
        before = keyspace(client, target)
    assert revoked == txn + 3 and len(keyspace(client, revoked - 1)) - len(keyspace(client, revoked)) == 200
    kill_all(cluster)

    at = IN_PLACE.index("VerifyRestore")
    steps = [*IN_PLACE[:at], "ReplayDeltas", *IN_PLACE[at:]]
    doc = run(ctx, steps, {**start_doc(), "execution": "pitr-200", "latest": True})
    assert doc["pitr"]["largest"][1] == 200 and doc["start_flags"] == ["--max-txn-ops=200"]
    assert "--max-txn-ops=200 so that" in doc["approval_summary"]
    with client_for(config, endpoints=[t["client_url"] for t in doc["targets"]]) as client:
        assert keyspace(client, 0) == before
        assert client.range(b"\0", count_only=True).revision == target + doc["replayed"]["offset"]
