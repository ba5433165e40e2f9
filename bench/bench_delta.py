"""What one minute of delta backup costs, at 100 and 1,000 writes per second.

    python bench/bench_delta.py [--rates 100,1000] [--seconds 60] [--value-bytes 256] [--etcd-bin-dir DIR]

For each rate: a one-member TLS cluster of the local stack in a temporary directory, a first delta
run (a full backup starts the chain), then writers that put (every tenth write a delete, every
twentieth a 10-key transaction) at the rate for --seconds (the writes column says what the machine
achieved), then one delta run in a child process, as the one-minute schedule would run it. Prints
per rate: the writes done, the revisions and events the delta holds, the run's wall time (and the
child process's, imports included), the bytes of the delta before and after encryption (the local
file store) and the child's peak RSS (from wait4). The chain head is handed to the child in a file.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from etcdops.adapters.backup.target import open_backup_target
from etcdops.adapters.state_delta import InMemoryDeltaChainStore
from etcdops.app.backup.delta_job import run_delta_backup
from etcdops.app.probe import probe_cluster
from etcdops.domain.backup.delta import DeltaEvent
from etcdops_local.cluster import EtcdBinaries, LocalCluster

CHILD = """
import json, pickle, sys, time
from pathlib import Path
from etcdops.adapters.backup.target import open_backup_target
from etcdops.adapters.state_delta import InMemoryDeltaChainStore
from etcdops.app.backup.delta_job import run_delta_backup
from etcdops.app.probe import probe_cluster
from etcdops_local.cluster import LocalCluster

state, head_file = Path(sys.argv[1]), Path(sys.argv[2])
cluster = LocalCluster(state)
chains = InMemoryDeltaChainStore()
chains.move_chain_head(None, pickle.loads(head_file.read_bytes()))
config = cluster.config()
store, keyring = open_backup_target(config)
started = time.monotonic()
with cluster.client(timeout=30) as client:
    result = run_delta_backup(config, client, probe_cluster(client), store, keyring, chains)
seconds = time.monotonic() - started
d = result.delta
print(json.dumps({"action": result.action, "seconds": seconds, "revisions": d.last_revision - d.first_revision + 1 if d
                  else 0, "events": d.events if d else 0, "stored": d.size_stored if d else 0,
                  "plain": d.size_plain if d else 0}))
"""


def write_at(cluster: LocalCluster, rate: int, seconds: float, value: bytes) -> int:
    """Writes at ``rate`` per second for ``seconds`` (one thread per 40 writes/s, 4 to 32: each waits for
    its write to commit); the writes done, which fall short of the rate when the machine cannot keep up."""
    threads_n = max(4, min(32, rate // 40))
    done = [0] * threads_n
    stop = time.monotonic() + seconds

    def worker(n: int) -> None:
        with cluster.client(timeout=30) as client:
            i, interval = 0, threads_n / rate
            next_at = time.monotonic()
            while time.monotonic() < stop:
                i += 1
                key = f"/bench/{n}/{i % 5000}"
                if i % 20 == 0:
                    client.txn([DeltaEvent("put", f"{key}/{j}".encode(), 0, value) for j in range(10)])
                elif i % 10 == 0:
                    client.delete(key)
                else:
                    client.put(key, value)
                done[n] += 1
                next_at += interval
                time.sleep(max(0.0, next_at - time.monotonic()))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done)


def one_rate(binaries: EtcdBinaries, rate: int, seconds: float, value: bytes) -> dict[str, float]:
    work = Path(tempfile.mkdtemp(prefix="etcdops-bench-delta-"))
    cluster = LocalCluster(work / ".etcdops")
    try:
        cluster.up(1, binaries=binaries)
        config = cluster.config()
        store, keyring = open_backup_target(config, create_local_key=True)
        chains = InMemoryDeltaChainStore()
        with cluster.client() as client:
            first = run_delta_backup(config, client, probe_cluster(client), store, keyring, chains)
        assert first.head is not None
        head_file = work / "head.pickle"
        head_file.write_bytes(pickle.dumps(first.head))
        writes = write_at(cluster, rate, seconds, value)
        started = time.monotonic()
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(work / ".etcdops"), str(head_file)], stdout=subprocess.PIPE
        )
        assert child.stdout is not None
        out = child.stdout.read()
        _, status, usage = os.wait4(child.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"the delta run failed at {rate} writes/s")
        result = json.loads(out)
        result.update(rate=rate, writes=writes, rss_mib=usage.ru_maxrss / 1024,
                      process_seconds=time.monotonic() - started)  # fmt: skip
        return result
    finally:
        cluster.down()
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="100,1000")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--value-bytes", type=int, default=256)
    parser.add_argument("--etcd-bin-dir", default=os.environ.get("ETCD_BIN_DIR"))
    args = parser.parse_args()
    binaries = EtcdBinaries.locate(args.etcd_bin_dir)
    value = os.urandom(args.value_bytes // 2).hex().encode()
    print(f"etcd {binaries.version}, {args.seconds:g} s of writes, {args.value_bytes}-byte values")
    print(f"{'rate/s':>7} {'writes':>7} {'revs':>7} {'events':>7} {'run s':>6} {'proc s':>6} "
          f"{'plain':>10} {'stored':>10} {'RSS MiB':>8}")  # fmt: skip
    for rate in (int(r) for r in args.rates.split(",")):
        r = one_rate(binaries, rate, args.seconds, value)
        print(f"{r['rate']:>7} {r['writes']:>7} {r['revisions']:>7} {r['events']:>7} {r['seconds']:>6.2f} "
              f"{r['process_seconds']:>6.2f} {r['plain']:>10,} {r['stored']:>10,} {r['rss_mib']:>8.1f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
