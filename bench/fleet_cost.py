"""What watching a fleet from one deployment costs per cluster-day, and the two fan-outs compared.

A model, not a measurement of a bill: the counts come from what the code does per round (one HealthCheck
invocation per cluster, its state-table reads and writes, the fan-out's registry listing and invokes),
the durations are inputs (``--round-seconds``: the health round of one cluster, see bench_probe.py; the
fan-out's own time is modelled from its calls), and the prices are the public on-demand list prices in
us-east-1 (arm64 Lambda), free tiers left out. It prints a Markdown table (the README's).

    python bench/fleet_cost.py [--clusters 10 100 1000] [--interval 60] [--round-seconds 0.6]

Fan-out A (built): the scheduled HealthCheck lists the registry and invokes itself asynchronously per
cluster. Fan-out B (not built): one EventBridge Scheduler schedule per cluster, created on registration.
Both run the same per-cluster round; they differ in the fan-out invocation (A) and the scheduler
invocations and schedule management (B).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

# public list prices, us-east-1 (USD)
LAMBDA_GB_SECOND_ARM = 0.0000133334
LAMBDA_REQUEST = 0.20 / 1_000_000
SCHEDULER_INVOCATION = 1.00 / 1_000_000
DDB_WRITE_UNIT = 0.625 / 1_000_000  # on-demand write request unit
DDB_READ_UNIT = 0.125 / 1_000_000  # on-demand read request unit (a strongly consistent read <= 4 KB)
SFN_TRANSITION = 0.025 / 1000  # Standard workflows: only repairs, not rounds
SSM_STANDARD_API = 0.0  # standard throughput parameter API calls are not charged
CW_METRIC_MONTH = 0.30  # per custom metric per month (first 10,000)
LOG_INGEST_GB = 0.50

MEMORY_GB = 512 / 1024  # template.yaml: Globals MemorySize 512
SECONDS_PER_DAY = 86400

# per round of one cluster, from the code (app/healthcheck.py, adapters/state_dynamodb.py, fleet_state.py)
READS_PER_ROUND = 9  # streaks, lock, endpoints, repairs (query), raft term, the brake (a round without a failure:
# it may release it); members/reports/slots only before a repair
WRITES_PER_ROUND = 5  # streaks, last decision, raft term, endpoints (when changed), fleet report
CLUSTER_METRICS = 17  # cluster-level EMF metrics of a round (+ per-member RaftIndexLag)
LOG_BYTES_PER_ROUND = 4000

# fan-out A: its own calls per interval
PAGE = 10  # GetParametersByPath returns at most 10 parameters a call
LIST_CALL_SECONDS = 0.05
INVOKE_CALL_SECONDS = 0.025
FAN_OUT_THREADS = 16  # entrypoints/health_check.py


@dataclass(frozen=True)
class Day:
    clusters: int
    rounds: float
    lambda_usd: float
    dynamodb_usd: float
    metrics_usd: float
    logs_usd: float
    fan_out_a_usd: float
    fan_out_b_usd: float
    fan_out_a_seconds: float
    gb_seconds: float

    def per_cluster(self, fan_out: str) -> float:
        extra = self.fan_out_a_usd if fan_out == "A" else self.fan_out_b_usd
        total = self.lambda_usd + self.dynamodb_usd + self.metrics_usd + self.logs_usd + extra
        return total / self.clusters


def model(clusters: int, interval: float, round_seconds: float) -> Day:
    rounds = SECONDS_PER_DAY / interval  # per cluster per day
    gb_seconds = clusters * rounds * round_seconds * MEMORY_GB
    lambda_usd = gb_seconds * LAMBDA_GB_SECOND_ARM + clusters * rounds * LAMBDA_REQUEST
    dynamodb_usd = clusters * rounds * (READS_PER_ROUND * DDB_READ_UNIT + WRITES_PER_ROUND * DDB_WRITE_UNIT)
    members = 3
    metrics_usd = clusters * (CLUSTER_METRICS + members) * CW_METRIC_MONTH / 30
    logs_usd = clusters * rounds * LOG_BYTES_PER_ROUND / 1e9 * LOG_INGEST_GB
    # A: one more invocation per interval: list the registry, invoke each cluster (16 at a time),
    # save the members (1 write); its round for the default cluster is counted above
    fan_seconds = math.ceil(clusters / PAGE) * LIST_CALL_SECONDS + clusters / FAN_OUT_THREADS * INVOKE_CALL_SECONDS
    fan_out_a = rounds * (fan_seconds * MEMORY_GB * LAMBDA_GB_SECOND_ARM + LAMBDA_REQUEST + DDB_WRITE_UNIT)
    fan_out_a += rounds * math.ceil(clusters / PAGE) * SSM_STANDARD_API
    # B: one scheduler invocation per cluster per round (the schedules themselves cost nothing to keep)
    fan_out_b = clusters * rounds * SCHEDULER_INVOCATION
    return Day(clusters, rounds, lambda_usd, dynamodb_usd, metrics_usd, logs_usd, fan_out_a, fan_out_b,
               fan_seconds, gb_seconds)  # fmt: skip


def table(days: list[Day]) -> str:
    lines = [
        "| fleet | rounds/day | Lambda GB-s/day | fan-out A time/round | per cluster-day, A (built) | "
        "per cluster-day, B (schedules) | fleet per month, A |",
        "|---|---|---|---|---|---|---|",
    ]
    for day in days:
        lines.append(
            f"| {day.clusters:,} clusters | {day.rounds * day.clusters:,.0f} | {day.gb_seconds:,.0f} | "
            f"{day.fan_out_a_seconds:.2f} s | ${day.per_cluster('A'):.4f} | ${day.per_cluster('B'):.4f} | "
            f"${day.per_cluster('A') * day.clusters * 30:,.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clusters", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between rounds (HealthCheckSchedule)")
    parser.add_argument("--round-seconds", type=float, default=0.6, help="billed duration of one cluster's round")
    args = parser.parse_args()
    days = [model(n, args.interval, args.round_seconds) for n in args.clusters]
    print(table(days))
    one = days[-1]
    print(
        f"\nof which per cluster-day at {one.clusters:,}: Lambda ${one.lambda_usd / one.clusters:.4f}, "
        f"DynamoDB ${one.dynamodb_usd / one.clusters:.4f}, CloudWatch metrics ${one.metrics_usd / one.clusters:.4f}, "
        f"logs ${one.logs_usd / one.clusters:.4f}, fan-out A ${one.fan_out_a_usd / one.clusters:.6f} "
        f"(B ${one.fan_out_b_usd / one.clusters:.4f}); Step Functions: none per round "
        f"(a repair is about 40 transitions, ${40 * SFN_TRANSITION:.4f})"
    )


if __name__ == "__main__":
    main()
