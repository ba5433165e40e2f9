"""Snapshot and backup speed and memory, side by side with etcdctl, on one >= 1 GiB database.

    python bench/bench_backup.py [--gib 1.0] [--rounds 2] [--etcd-bin-dir DIR]

Starts a one-member TLS cluster of the local stack in a temporary directory, fills it with
1 MiB values until the database holds --gib GiB, then times, alternating, in each round:
``etcdctl snapshot save``, ``etcdops snapshot save`` and ``etcdops backup run`` (stream, check,
encrypt, store in the local file store). Prints the best wall time of each, the ratios to
etcdctl, and the peak RSS of each process (from wait4). The database and the temporary
directory are removed at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from etcdops_local.cluster import EtcdBinaries, LocalCluster

MiB = 1 << 20


def run(command: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one command."""
    started = time.monotonic()
    process = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.monotonic() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{command[0]} failed: {process.stderr.read().decode() if process.stderr else ''}")
    return elapsed, usage.ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gib", type=float, default=1.0, help="database size to build (default 1 GiB)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--etcd-bin-dir", default=os.environ.get("ETCD_BIN_DIR"))
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="etcdops-bench-"))
    binaries = EtcdBinaries.locate(args.etcd_bin_dir)
    cluster = LocalCluster(work / ".etcdops")
    try:
        cluster.up(
            1,
            binaries=binaries,
            extra_args=["--quota-backend-bytes=8589934592", "--max-request-bytes=2097152", "--snapshot-count=100000"],
        )
        target = int(args.gib * 1024**3)
        value = os.urandom(MiB)
        started = time.monotonic()
        with cluster.client(timeout=30) as client:
            i = 0
            while client.status(cluster.ps()[0].client_urls[0]).db_size < target:
                for _ in range(64):
                    # vary the value so pages differ; random data is the worst case for compression
                    client.put(f"/bench/{i:08d}", value[i % 997 :] + value[: i % 997])
                    i += 1
            db_size = client.status(cluster.ps()[0].client_urls[0]).db_size
        print(
            f"database: {db_size / MiB:.0f} MiB in {i} keys "
            f"(filled in {time.monotonic() - started:.0f}s), etcd {binaries.version}"
        )

        env = {**os.environ, **cluster.env(), "ETCDOPS_STATE_DIR": str(cluster.state_dir)}
        etcdops = [sys.executable, "-m", "etcdops_local.cli.main"]
        commands = {
            "etcdctl snapshot save": [str(binaries.etcdctl), "snapshot", "save", str(work / "ctl.db")],
            "etcdops snapshot save": [*etcdops, "snapshot", "save", str(work / "ops.db")],
            "etcdops backup run": [*etcdops, "backup", "run"],
        }
        env["ETCDCTL_ENDPOINTS"] = env["ETCDCTL_ENDPOINTS"].split(",")[0]
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        for _ in range(args.rounds):
            for name, command in commands.items():
                for leftover in (work / "ctl.db", work / "ops.db"):
                    leftover.unlink(missing_ok=True)
                results[name].append(run(command, env, work))
        base = min(t for t, _ in results["etcdctl snapshot save"])
        print(f"{'command':24} {'best wall':>10} {'ratio':>7} {'peak RSS':>10}")
        for name, samples in results.items():
            best = min(t for t, _ in samples)
            rss = max(r for _, r in samples)
            print(f"{name:24} {best:9.2f}s {best / base:6.2f}x {rss:8.0f} MiB")
    finally:
        cluster.down()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
