"""One HealthCheck probe round on a 5-member TLS cluster with one member paused (SIGSTOP).

A paused member accepts TCP connections and then says nothing, the worst case for a probe. The
round (``probe_cluster``: member list, status and a read of every member, the alarm list) must come
back within the probe deadline + 0.5 s; the full HealthCheck round (probe, served certificates,
policy, state, metrics) is timed too, and so is ``etcdops status --json`` as an operator runs it (a
new process: start-up, probe, print) with the member paused and, after it, with the member killed;
its budget is 3 s. Runs ``--rounds`` rounds of each and prints each and the worst.

    python bench/bench_probe.py [--rounds 5] [--deadline 2.0] [--etcd-bin-dir /usr/bin]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from etcdops.adapters.aws import MemoryNotifier
from etcdops.adapters.etcd.connect import client_for
from etcdops.adapters.health_aws import InstanceDirectory, RecordingReplaceStarter
from etcdops.adapters.healthmetrics import RecordingMetrics
from etcdops.adapters.state_memory import InMemoryStateStore
from etcdops.app.healthcheck import HealthContext, Trigger, run_health_round
from etcdops.app.probe import probe_cluster
from etcdops_local.cluster import EtcdBinaries, LocalCluster

SLACK = 0.5
STATUS_BUDGET = 3.0  # seconds for `etcdops status` with a dead or frozen member


def time_status(state_dir: Path, deadline: float) -> float:
    """Wall time of one `etcdops status --json` process; its answer must name a member unhealthy."""
    command = [sys.executable, "-m", "etcdops_local.cli.main", "status", "--json", "--state-dir", str(state_dir)]
    started = time.monotonic()
    result = subprocess.run([*command, "--deadline", str(deadline)], capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - started
    assert result.returncode in (0, 1) and '"healthy": false' in result.stdout, result.stderr
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--deadline", type=float, default=2.0)
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--etcd-bin-dir", default=os.environ.get("ETCD_BIN_DIR"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="etcdops-bench-probe-") as tmp:
        cluster = LocalCluster(Path(tmp) / "stack")
        binaries = EtcdBinaries.locate(args.etcd_bin_dir)
        cluster.up(args.members, binaries=binaries)
        paused = f"m{args.members}"
        try:
            config = cluster.config()
            config = config.model_copy(
                update={"health": config.health.model_copy(update={"probe_deadline_seconds": args.deadline})}
            )
            cluster.pause(paused)
            state = InMemoryStateStore()
            probes: list[float] = []
            rounds: list[float] = []
            with client_for(config, timeout=args.deadline) as client:
                for _ in range(args.rounds):
                    started = time.monotonic()
                    health = probe_cluster(client, deadline=args.deadline)
                    probes.append(time.monotonic() - started)
                    assert not next(m for m in health.members if m.name == paused).healthy
                    ctx = HealthContext(
                        config=config,
                        client=client,
                        state=state,
                        metrics=RecordingMetrics(),
                        notifier=MemoryNotifier(),
                        replace=RecordingReplaceStarter(),
                        instances=InstanceDirectory(config),
                        backups=None,
                    )
                    started = time.monotonic()
                    run_health_round(ctx, Trigger.manual("bench"), datetime.now(UTC))
                    rounds.append(time.monotonic() - started)
            status_paused = [time_status(cluster.state_dir, args.deadline) for _ in range(args.rounds)]
            cluster.kill(paused)
            status_killed = [time_status(cluster.state_dir, args.deadline) for _ in range(args.rounds)]
        finally:
            cluster.down()  # stops a paused member too

    budget = args.deadline + SLACK
    print(f"etcd {binaries.version}")
    print(f"{args.members} members, {paused} paused, probe deadline {args.deadline:.1f} s, budget {budget:.1f} s")
    for label, times in (
        ("probe rounds", probes),
        ("HealthCheck rounds", rounds),
        ("status, member paused", status_paused),
        ("status, member killed", status_killed),
    ):
        print(f"{label + ' (s):':28}" + " ".join(f"{t:.2f}" for t in times) + f"   worst {max(times):.2f}")
    print(f"status budget {STATUS_BUDGET:.1f} s")
    ok = max(probes) <= budget and max(rounds) <= budget and max(status_paused + status_killed) <= STATUS_BUDGET
    print("within budget" if ok else "OVER BUDGET")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
