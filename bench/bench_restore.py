"""RestoreCluster speed on the local stack, side by side with restoring by hand, on one >= 1 GiB backup.

    python bench/bench_restore.py [--gib 1.0] [--etcd-bin-dir DIR]

Builds a 3-member TLS cluster of the local stack, fills it with 1 MiB values to --gib GiB, takes a
backup, loses two members (SIGKILL), then runs the real RestoreCluster state machine in the emulated
AWS and approves it. Measured: from the approval to a healthy 3-member cluster. Beside it, the
manual way on the same (decrypted) snapshot: `etcdutl snapshot restore` three times, one after the
other, plus etcd's start-up (starting those three data directories until a leader answers).
Target: the runbook within 1.5 x the manual restores plus the start-up.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from etcdops.adapters.backup.target import open_backup_target
from etcdops.adapters.state_dynamodb import DynamoStateStore
from etcdops.app.approval import decide_approval
from etcdops.app.backup.job import fetch_backup, run_backup
from etcdops.app.probe import probe_cluster
from etcdops_local.aws.stack import LocalAws
from etcdops_local.cluster import EtcdBinaries, LocalCluster, free_ports

MiB = 1 << 20
TEMPLATE = Path(__file__).resolve().parents[1] / "template.yaml"


def wait(what: str, check, timeout: float = 900.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise SystemExit(f"timed out: {what}")


def manual(binaries: EtcdBinaries, snapshot: Path, work: Path) -> tuple[float, float]:
    """Three restores by hand, then the start-up of the three restored members until a leader."""
    ports = free_ports(6)
    names = ["a", "b", "c"]
    peers = {n: f"http://127.0.0.1:{ports[i]}" for i, n in enumerate(names)}
    initial = ",".join(f"{n}={u}" for n, u in peers.items())
    tool = [str(binaries.etcdutl)] if binaries.etcdutl else [str(binaries.etcdctl)]
    started = time.monotonic()
    for n in names:
        subprocess.run(
            [*tool, "snapshot", "restore", str(snapshot), f"--name={n}", f"--data-dir={work / n}",
             f"--initial-cluster={initial}", f"--initial-advertise-peer-urls={peers[n]}"],
            check=True, capture_output=True, env={"ETCDCTL_API": "3"},
        )  # fmt: skip
    restored = time.monotonic() - started
    processes = []
    started = time.monotonic()
    try:
        for i, n in enumerate(names):
            client = f"http://127.0.0.1:{ports[3 + i]}"
            processes.append(subprocess.Popen(
                [str(binaries.etcd), f"--name={n}", f"--data-dir={work / n}", f"--listen-peer-urls={peers[n]}",
                 f"--listen-client-urls={client}", f"--advertise-client-urls={client}"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))  # fmt: skip
        from etcdops.adapters.etcd.client import EtcdClient

        endpoint = f"http://127.0.0.1:{ports[3]}"
        with EtcdClient([endpoint], plaintext=True, timeout=1.0) as c:

            def leader() -> bool:
                try:
                    return bool(c.status(endpoint).leader)
                except Exception:
                    return False

            wait("the manual cluster's leader", leader, 300)
        startup = time.monotonic() - started
    finally:
        for p in processes:
            p.kill()
            p.wait()
    return restored, startup


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--etcd-bin-dir", default=os.environ.get("ETCD_BIN_DIR"))
    args = parser.parse_args()
    binaries = EtcdBinaries.locate(args.etcd_bin_dir)
    work = Path(tempfile.mkdtemp(prefix="etcdops-restore-bench-"))
    cluster = LocalCluster(work / ".etcdops")
    try:
        cluster.up(3, binaries=binaries, extra_args=["--quota-backend-bytes=8589934592", "--max-request-bytes=2097152"])
        value = os.urandom(MiB)
        with cluster.client(timeout=30) as client:
            i = 0
            while client.status(cluster.ps()[0].client_urls[0]).db_size < int(args.gib * 1024**3):
                for _ in range(32):
                    client.put(f"/bench/{i:08d}", value[i % 997 :] + value[: i % 997])
                    i += 1
            config = cluster.config()
            store, keyring = open_backup_target(config, create_local_key=True)
            backup = run_backup(config, client, probe_cluster(client), store, keyring).manifest
        print(f"backup {backup.id}: {backup.size_plain / MiB:.0f} MiB, {i} keys, etcd {binaries.version}")
        snapshot = work / "manual.db"
        fetch_backup(store, keyring, backup.id, snapshot)
        restored, startup = manual(binaries, snapshot, work / "manual")
        snapshot.unlink()

        health = probe_cluster(cluster.client())
        for member in [m for m in health.members if m.id != health.leader]:
            cluster.kill(member.name)
        with LocalAws() as aws:
            stack = aws.build_stack(TEMPLATE, {"ClusterName": "local"})
            aws.client("ssm").put_parameter(
                Name=stack.parameters["ClusterConfigParameter"], Type="SecureString",
                Value=cluster.config_file.read_text(), Overwrite=True,
            )  # fmt: skip
            sfn = aws.client("stepfunctions")
            state = DynamoStateStore(stack.table or "", aws.client("dynamodb"))
            machine = stack.state_machines["RestoreClusterStateMachine"]
            name = "bench-restore"
            arn = sfn.start_execution(
                stateMachineArn=machine, name=name, input=f'{{"cluster": "local", "backup_id": "{backup.id}"}}'
            )["executionArn"]
            wait("the approval request", lambda: state.load_approval(name), 600)
            approved = time.monotonic()
            decide_approval(name, "approve", None, store=state, sfn=sfn, now=datetime.now(UTC), by="bench")
            result = wait(
                "the restore", lambda: (d := sfn.describe_execution(executionArn=arn))["status"] != "RUNNING" and d
            )
            if result["status"] != "SUCCEEDED":
                raise SystemExit(f"restore {result['status']}: {result.get('error')}: {result.get('cause')}")
            wait("3 healthy voters", lambda: len(probe_cluster(cluster.client()).healthy_voters) == 3, 300)
            ours = time.monotonic() - approved
        target = 1.5 * restored + startup
        print(f"{'etcdutl snapshot restore x3 (by hand)':40} {restored:7.1f} s")
        print(f"{'etcd start-up of the restored members':40} {startup:7.1f} s")
        print(f"{'RestoreCluster: approval -> healthy':40} {ours:7.1f} s")
        print(f"{'target 1.5 x manual + start-up':40} {target:7.1f} s   ratio {ours / target:.2f}")
    finally:
        cluster.down()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
