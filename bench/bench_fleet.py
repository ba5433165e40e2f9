"""A fleet under one emulated stack: how long a health round over every cluster takes, and how long a
failure in the last-registered cluster takes to be decided.

Starts ``--clusters`` one-member TLS clusters (c1 is the stack's default cluster, the others are
registered in its cluster registry), builds template.yaml in the emulated AWS with HealthCheck on a
``--interval`` timer (failure threshold K=3 over 2 s), then measures

* a round over all: how far apart every cluster's decision of one round lies (each round saves its
  decision with its time), for ``--rounds`` rounds after a first (cold) one, and the emulator
  process's CPU per cluster round over them (every function runs in this one process);
* detection: the last-registered cluster's only member is killed; the time until that cluster's round
  decides the quorum loss (a one-member cluster cannot lose a member and keep quorum, so the decision
  is ESCALATE_QUORUM_LOSS; a 3-member cluster's REPLACE_MEMBER is decided after the same K rounds).

The goal (issue 13): detection no slower than with one cluster, <= K x interval + 10 s.

    python -u bench/bench_fleet.py [--clusters 20] [--interval 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from etcdops.adapters.registry import ClusterRegistry
from etcdops.adapters.state_dynamodb import DynamoStateStore
from etcdops.domain.config import dump_config
from etcdops_local.aws.schedule import LocalScheduler
from etcdops_local.aws.stack import LocalAws
from etcdops_local.cluster import LocalCluster

TEMPLATE = Path(__file__).resolve().parents[1] / "template.yaml"
K = 3
POLL_SECONDS = 0.5


def document(cluster: LocalCluster, name: str) -> str:
    config = cluster.config()
    health = config.health.model_copy(update={"failure_threshold": K, "failure_window_seconds": 2})
    return dump_config(config.model_copy(update={"name": name, "health": health}))


def decided_at(state: DynamoStateStore, name: str) -> float | None:
    last = state.load_last_decision(name)
    return last.decided_at.timestamp() if last else None


def wait_round(state: DynamoStateStore, names: list[str]) -> None:
    """Until every cluster decided once more (polled slowly: see run)."""
    before = {name: decided_at(state, name) for name in names}
    while any(decided_at(state, n) == before[n] for n in names):
        time.sleep(POLL_SECONDS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clusters", type=int, default=20)
    parser.add_argument("--interval", type=int, default=5, help="seconds between scheduled rounds")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    names = [f"c{i}" for i in range(1, args.clusters + 1)]
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as root:
        clusters = {name: LocalCluster(Path(root) / name) for name in names}
        started = time.monotonic()
        for cluster in clusters.values():
            cluster.up(1)
        print(f"{len(clusters)} one-member clusters up in {time.monotonic() - started:.1f} s")
        try:
            run(args, clusters)
        finally:
            for cluster in clusters.values():
                cluster.down()


def run(args: argparse.Namespace, clusters: dict[str, LocalCluster]) -> None:
    names = list(clusters)
    with LocalAws() as aws:
        stack = aws.build_stack(TEMPLATE, {"ClusterName": names[0]})
        ssm = aws.client("ssm")
        default = stack.parameters["ClusterConfigParameter"]
        ssm.put_parameter(Name=default, Type="SecureString", Value=document(clusters[names[0]], names[0]))
        registry = ClusterRegistry(ssm)
        for name in names[1:]:
            registry.add(document(clusters[name], name), name)
        state = DynamoStateStore(stack.table or "", aws.client("dynamodb"))
        # DeltaBackup (every minute in the template) is left out, as the e2e tests leave it out
        schedules = {"HealthCheckSchedule": f"rate({args.interval} seconds)", "DeltaBackupSchedule": "rate(1 day)"}
        with LocalScheduler.for_stack(stack, schedules):
            wait_round(state, names)  # the first round: every function's cold start, not counted
            spans = []
            cpu, wall = time.process_time(), time.monotonic()
            for _ in range(args.rounds):
                # the decisions carry their own time: polled slowly, so that the bench's own reads (in the
                # emulator's process, like every round) do not slow the rounds it measures
                wait_round(state, names)
                stamps = [decided_at(state, n) or 0.0 for n in names]
                spans.append(max(stamps) - min(stamps))  # the spread of one round's decisions across the fleet
            rounds = args.rounds * len(names)
            used = (time.process_time() - cpu) / rounds
            measured = time.monotonic() - wall
            print(f"a round over all {len(names)} clusters: decisions spread over "
                  + ", ".join(f"{s:.2f} s" for s in spans) + f" (interval {args.interval} s); the emulator's "
                  f"process used {used:.2f} CPU-s per cluster round ({measured:.0f} s measured)")  # fmt: skip
            last = names[-1]
            victim = clusters[last]
            killed = time.time()
            victim.kill("m1")
            while True:
                decision = state.load_last_decision(last)
                if decision is not None and str(decision.decision.action) == "ESCALATE_QUORUM_LOSS":
                    break
                time.sleep(POLL_SECONDS)
            detection = decision.decided_at.timestamp() - killed
            goal = K * args.interval + 10
            print(f"failure in the last-registered cluster {last} decided after {detection:.1f} s "
                  f"(goal <= K x interval + 10 s = {goal} s): {'met' if detection <= goal else 'MISSED'}")  # fmt: skip


if __name__ == "__main__":
    main()
