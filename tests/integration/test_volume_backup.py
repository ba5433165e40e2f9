"""Volume backups on real clusters: a follower's data copied while it is SIGSTOPped, with a writer running,
restored by the RestoreCluster steps; a copy killed halfway leaves the member running."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from test_restore_steps import IN_PLACE, PREFIX, context_for, kv, run, start_doc

from etcdops.adapters.backup.target import open_backup_target
from etcdops.adapters.compute.factory import open_compute
from etcdops.adapters.etcd.connect import client_for
from etcdops.app.backup.catalogue import list_backups, newest_verified
from etcdops.app.backup.verify import verify_backup
from etcdops.app.backup.volume import run_volume_backup
from etcdops.app.probe import probe_cluster
from etcdops.domain.backup.manifest import Manifest
from etcdops.domain.compute.errors import HostDataNotEmptyError
from etcdops_local.cluster import EtcdBinaries, LocalCluster, LocalClusterError
from etcdops_local.compute import LocalComputeProvider, register_local_provider

pytestmark = pytest.mark.integration


class Writer:
    """Puts numbered keys one after the other until stopped; remembers which were acknowledged, in order."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.config = cluster.config()
        self.acknowledged: list[bytes] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="writer", daemon=True)

    def _run(self) -> None:
        with client_for(self.config) as client:
            i = 0
            while not self._stop.is_set():
                key = PREFIX + f"w/{i:06d}".encode()
                try:
                    client.put(key, key, timeout=10.0)  # longer than the documented pause
                except Exception as exc:  # every failed write is what the test looks for
                    self.errors.append(f"{key!r}: {exc}")
                else:
                    self.acknowledged.append(key)
                i += 1

    def __enter__(self) -> Writer:
        self._thread.start()
        while len(self.acknowledged) < 20:  # the writer is going
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def volume_backup(cluster: LocalCluster, compute: LocalComputeProvider | None = None) -> Manifest:
    register_local_provider()
    config = cluster.config()
    store, keyring = open_backup_target(config, create_local_key=True)
    provider = compute or open_compute(config)
    with cluster.client() as client:
        health = probe_cluster(client)
        return run_volume_backup(config, client, health, store, keyring, provider).manifest  # type: ignore[arg-type]


def test_a_volume_backup_taken_under_writes_restores_every_write_acknowledged_before_it(
    cluster: LocalCluster,
) -> None:
    # Given a cluster taking writes one after the other
    with Writer(cluster) as writer:
        before = list(writer.acknowledged)  # acknowledged before the backup began
        # When a volume backup copies a follower's data while it is SIGSTOPped
        manifest = volume_backup(cluster)
        during = len(writer.acknowledged)
        while len(writer.acknowledged) < during + 20:  # and the writer goes on afterwards
            time.sleep(0.01)
    # Then no write failed (one routed to the paused member only waited), the member runs again
    assert writer.errors == []
    copied = manifest.member_name
    assert {p.name: p.state for p in cluster.ps()} == {m.name: "running" for m in cluster.state().members}
    with cluster.client() as client:
        health = probe_cluster(client)
    assert copied != next(m.name for m in health.members if m.id == health.leader)  # a follower, never the leader
    # and the catalogue holds a verified volume backup that full-backup queries never answer with
    assert manifest.kind == "volume" and manifest.volume is not None and manifest.volume.provider == "local"
    assert manifest.revision >= manifest.volume.revision_observed > 0
    assert manifest.volume.paused_seconds is not None
    store, keyring = open_backup_target(cluster.config())
    assert [m.id for m in list_backups(store)] == [manifest.id]
    assert newest_verified(store, manifest.cluster_id) is None
    assert verify_backup(store, keyring, manifest.id).summary.revision == manifest.revision

    # When the cluster is restored from it (RestoreCluster, in place, the volume backup named)
    ctx = context_for(cluster)
    doc = run(ctx, IN_PLACE, start_doc(backup_id=manifest.id))

    # Then every write acknowledged before the backup began is there, and nothing the writer never wrote
    restored = kv(cluster, [t["client_url"] for t in doc["targets"]])
    written = {k for k in restored if k.startswith(PREFIX + b"w/")}
    assert set(before) <= written
    assert written <= set(writer.acknowledged) | {PREFIX + f"w/{len(writer.acknowledged):06d}".encode()}
    assert all(restored[k] == k for k in written)
    assert doc["verified"]["keys"] == doc["backup_keys"] == len(restored)


def test_a_copy_killed_halfway_leaves_the_member_running_and_nothing_stored(
    start_cluster: Callable[..., LocalCluster], etcd3530: EtcdBinaries, tmp_path: Path
) -> None:
    # Given a copy that writes part of the database, then hangs until it is killed (signals and
    # processes: one etcd version says it all)
    cluster = start_cluster(etcd3530)
    register_local_provider()
    compute = open_compute(cluster.config())
    assert isinstance(compute, LocalComputeProvider)
    pid_file = tmp_path / "copy.pid"
    compute.copy_command = ("sh", "-c", f'echo $$ > {pid_file}; head -c 4096 "$1" > "$2"; exec sleep 120', "copy")
    killed: list[str] = []

    def kill_the_copy_once_the_member_is_paused() -> None:
        while not pid_file.exists() or not pid_file.read_text().strip():
            time.sleep(0.01)
        killed.extend(p.name for p in cluster.ps() if p.state == "paused")
        os.kill(int(pid_file.read_text()), signal.SIGKILL)

    killer = threading.Thread(target=kill_the_copy_once_the_member_is_paused)
    killer.start()
    # When the volume backup runs
    with pytest.raises(LocalClusterError, match="paused failed"):
        volume_backup(cluster, compute)
    killer.join()
    # Then the member was paused while the copy ran, runs again, and the cluster takes writes
    assert len(killed) == 1
    assert {p.name: p.state for p in cluster.ps()} == {m.name: "running" for m in cluster.state().members}
    with cluster.client() as client:
        client.put(PREFIX + b"after", b"ok")
        assert all(m.healthy for m in probe_cluster(client).members)
    # and nothing was catalogued
    store, _ = open_backup_target(cluster.config())
    assert [k for k in store.list() if k.endswith((".snapshot.enc", ".manifest.json"))] == []


def test_a_new_member_is_never_started_on_a_copy_of_another_member_s_data(
    start_cluster: Callable[..., LocalCluster], etcd3530: EtcdBinaries
) -> None:
    # Given a launched host for a new member whose data directory holds a copy of m1's data (invariant 20)
    cluster = start_cluster(etcd3530, members=1)
    register_local_provider()
    compute = open_compute(cluster.config())
    host = compute.launch("m2")
    shutil.copytree(cluster.data_dir("m1"), cluster.data_dir("m2"))
    # When it is started as a new member of the cluster, Then that is refused and nothing runs on it
    with pytest.raises(HostDataNotEmptyError, match="invariant 20"):
        compute.start_etcd(host, f"m1={cluster.member('m1').peer_url},m2={host.peer_url}", "existing")
    assert {p.name: p.state for p in cluster.ps()} == {"m1": "running", "m2": "stopped"}
    with cluster.client() as client:
        assert [m.name for m in client.member_list()] == ["m1"]
