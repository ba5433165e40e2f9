"""The local stack's state file under concurrent read-modify-writes (health rounds, runbook steps and the
CLI change it from several threads and processes)."""

from __future__ import annotations

import threading
from pathlib import Path

from etcdops_local.cluster import EtcdBinaries, LocalCluster, LocalMember, LocalState


def test_concurrent_changes_of_the_state_file_lose_none(tmp_path: Path) -> None:
    # Given a stack's state file
    cluster = LocalCluster(tmp_path / "stack")
    cluster.state_dir.mkdir()
    LocalState(token="t", bin_dir="/opt/etcd", version="3.5.30", members=[LocalMember("m1", 1, 2)]).save(
        cluster.state_file
    )
    versions = [f"3.5.{n}" for n in range(40)]
    errors: list[BaseException] = []

    def add(version: str) -> None:
        try:
            cluster.add_binaries(EtcdBinaries(Path(f"/opt/{version}/etcd"), Path("etcdctl"), None, version))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    # When 40 threads each add a version at once
    threads = [threading.Thread(target=add, args=(v,)) for v in versions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then every change is there (no rename of another writer's file, no change written over)
    assert errors == []
    assert sorted(cluster.state().binaries) == sorted(versions)
    assert [p.name for p in cluster.state_dir.iterdir() if p.name.endswith(".tmp")] == []
