"""What seeding a new member from a volume backup would save: the bytes the leader sends it, measured.

    python bench/bench_volume_seed.py [--mib 8] [--snapshot-count N] [--etcd-bin-dir DIR]

Builds a 3-member TLS cluster of the local stack, writes --mib MiB (4 KiB values), takes a volume
backup (a follower's database copied while it is SIGSTOPped: the newest volume copy), writes 5 % more,
then adds a learner twice and waits each time until it has applied the leader's index:

  (a) from an empty data directory (what ReplaceMember does);
  (b) from a data directory holding only the volume copy's database (``member/snap/db``), the one
      way etcd could take a copy under a new member at all (invariant 20 explains the others).

Measured on the leader: ``etcd_network_peer_sent_bytes_total{To=<learner>}`` (raft messages and raft
snapshots sent to it), and ``etcd_network_snapshot_send_success{To=<learner>}`` (how many full raft
snapshots it sent). Printed: both, their ratio, and whether (b) ended up holding the cluster's data.
The bench starts the seeded learner's process itself: the local provider refuses to start a host on
data it never wrote (``HostDataNotEmptyError``), as it must.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from etcdops.adapters.backup.target import open_backup_target
from etcdops.adapters.compute.factory import open_compute
from etcdops.adapters.etcd.client import EtcdClient
from etcdops.adapters.etcd.metrics import fetch_metrics
from etcdops.app.backup.job import fetch_backup
from etcdops.app.backup.volume import run_volume_backup
from etcdops.app.probe import probe_cluster
from etcdops.domain.errors import EtcdopsError
from etcdops_local.cluster import EtcdBinaries, LocalCluster
from etcdops_local.compute import register_local_provider

MiB = 1 << 20
VALUE = 4096
T = TypeVar("T")


def wait(what: str, check: Callable[[], T | None], timeout: float = 300.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except EtcdopsError:
            value = None
        if value:
            return value
        time.sleep(0.2)
    raise SystemExit(f"timed out: {what}")


def metric(text: str, name: str, to: int) -> float:
    """The sum of ``name``'s samples labelled To=<member id in hex> in a /metrics text."""
    pattern = re.compile(rf'^{name}\{{[^}}]*To="{to:x}"[^}}]*\}} (\S+)$', re.M)
    return sum(float(v) for v in pattern.findall(text))


def fill(client: EtcdClient, prefix: str, nbytes: int) -> int:
    value = os.urandom(VALUE)
    count = max(1, nbytes // VALUE)
    for i in range(count):
        client.put(f"/bench/{prefix}/{i:08d}", value[i % 251 :] + value[: i % 251])
    return count


def volume_copy_db(cluster: LocalCluster, work: Path) -> tuple[Path, int]:
    """The newest volume backup's database (the copy without our sha256 trailer) and its revision."""
    register_local_provider()
    config = cluster.config()
    store, keyring = open_backup_target(config, create_local_key=True)
    with cluster.client() as client:
        result = run_volume_backup(config, client, probe_cluster(client), store, keyring, open_compute(config))
    manifest = result.manifest  # type: ignore[union-attr]  # the local provider hands the copy over
    snapshot = work / "volume.snapshot"
    fetch_backup(store, keyring, manifest.id, snapshot)
    db = work / "volume.db"
    with snapshot.open("rb") as src, db.open("wb") as out:
        out.write(src.read(snapshot.stat().st_size - 32))  # etcd's data dir holds the database alone
    snapshot.unlink()
    return db, manifest.revision


def join_learner(cluster: LocalCluster, name: str, seed: Path | None) -> dict[str, float]:
    """Add ``name`` as a learner (its data directory seeded with ``seed``, or empty), wait until it
    applied the leader's index, and read what the leader sent it."""
    with cluster.client(timeout=30) as client:
        health = probe_cluster(client)
        leader = next(m for m in health.members if m.id == health.leader)
        member = cluster.reserve_member(name)
        added = client.member_add([member.peer_url], learner=True)
        if seed is not None:
            snap = cluster.data_dir(name) / "member" / "snap"
            snap.mkdir(parents=True)
            shutil.copyfile(seed, snap / "db")
            os.chmod(cluster.data_dir(name), 0o700)
        members = client.member_list(linearizable=True)
        initial = ",".join(f"{m.name or name}={m.peer_urls[0]}" for m in members)
        started = time.monotonic()
        cluster.spawn_member(name, initial_cluster=initial, initial_state="existing")
        target = client.status(leader.client_urls[0]).raft_index
        new_url = member.client_url

        def caught_up() -> bool:
            return client.status(new_url, timeout=2).raft_applied_index >= target

        wait(f"learner {name} catching up", caught_up)
        seconds = time.monotonic() - started
        count = client.range(b"/bench/", b"/bench0", count_only=True).count
        with EtcdClient([new_url], tls=cluster.tls, timeout=10) as own:
            local_count = own.range(b"/bench/", b"/bench0", count_only=True, serializable=True).count
        text = fetch_metrics(leader.client_urls[0], cluster.tls, 10)
        out = {
            "sent": metric(text, "etcd_network_peer_sent_bytes_total", added.id),
            "snapshots": metric(text, "etcd_network_snapshot_send_success", added.id),
            "seconds": seconds,
            "keys_match": float(count == local_count),
        }
        client.member_remove(added.id)
    cluster.stop_member(name)
    cluster.remove_member_record(name)
    cluster.remove_member_files(name)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=float, default=8.0)
    parser.add_argument("--snapshot-count", type=int, default=0, help="every member's --snapshot-count (0: etcd's)")
    parser.add_argument("--etcd-bin-dir", default=os.environ.get("ETCD_BIN_DIR"))
    args = parser.parse_args()
    binaries = EtcdBinaries.locate(args.etcd_bin_dir)
    work = Path(tempfile.mkdtemp(prefix="etcdops-seed-bench-"))
    cluster = LocalCluster(work / ".etcdops")
    extra = [f"--snapshot-count={args.snapshot_count}"] if args.snapshot_count else []
    try:
        cluster.up(3, binaries=binaries, extra_args=extra)
        with cluster.client(timeout=30) as client:
            keys = fill(client, "a", int(args.mib * MiB))
        db, revision = volume_copy_db(cluster, work)
        with cluster.client(timeout=30) as client:
            keys += fill(client, "b", int(args.mib * MiB * 0.05))
        print(
            f"etcd {binaries.version}, 3 members, {keys} keys of {VALUE} B ({args.mib:g} MiB + 5 % after the copy), "
            f"snapshot-count {args.snapshot_count or 'default'}; volume copy {db.stat().st_size / MiB:.1f} MiB "
            f"at revision {revision}"
        )
        empty = join_learner(cluster, "empty", None)
        seeded = join_learner(cluster, "seeded", db)
        for label, r in (("(a) empty data dir", empty), ("(b) seeded with the copy's db", seeded)):
            print(
                f"{label:32} leader sent {r['sent'] / MiB:8.2f} MiB, {int(r['snapshots'])} raft snapshot(s), "
                f"caught up in {r['seconds']:.1f} s, "
                f"its keys {'match' if r['keys_match'] else 'DIFFER from'} the cluster's"
            )
        ratio = seeded["sent"] / empty["sent"] if empty["sent"] else float("nan")
        print(f"seeded / empty bytes: {ratio:.3f}")
        return 0
    finally:
        cluster.down(purge=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
