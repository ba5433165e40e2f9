"""CPU time of one HealthCheck invocation, as the handler runs it, and the AWS clients it makes.

A 3-member TLS cluster on 127.0.0.1, AWS emulated by moto in this process (so the figures include
moto answering the calls, as on the local stack), ``functions/health_check/app.py`` loaded once as
a Lambda container loads it, then ``--rounds`` scheduled rounds. Prints the process CPU time of
each round (the first is the container's first invocation), the median of the others, and how many
botocore clients each round made.

    python bench/bench_health_clients.py [--rounds 20] [--etcd-bin-dir /usr/bin] [--handler app.py]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
from moto import mock_aws

from etcdops.adapters.state_dynamodb import table_definition
from etcdops_local.cluster import EtcdBinaries, LocalCluster

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the configuration set up as the e2e tests of the handler set it up
from builders import operator_config  # noqa: E402

REGION = "us-east-1"


def load_handler(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location("bench_health_check_app", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def prepare(cluster: LocalCluster) -> None:
    ssm, secrets, sns, dynamodb = (
        boto3.client(n, region_name=REGION) for n in ("ssm", "secretsmanager", "sns", "dynamodb")
    )
    operator_config(ssm, secrets, cluster, "bench", "/etcdops/bench/config")
    dynamodb.create_table(**table_definition("etcdops-state"))
    os.environ.update(
        CLUSTER_CONFIG_PARAMETER="/etcdops/bench/config",
        TABLE_NAME="etcdops-state",
        TOPIC_ARN=sns.create_topic(Name="etcdops")["TopicArn"],
    )


def count_clients() -> list[str]:
    """Every client made from now on (botocore's client creator, under boto3 and moto alike)."""
    import botocore.client

    made: list[str] = []
    original = botocore.client.ClientCreator.create_client

    def counting(self: Any, service_name: str, *args: Any, **kwargs: Any) -> Any:
        made.append(service_name)
        return original(self, service_name, *args, **kwargs)

    botocore.client.ClientCreator.create_client = counting  # type: ignore[method-assign]
    return made


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--etcd-bin-dir", default=os.environ.get("ETCD_BIN_DIR"))
    parser.add_argument(
        "--handler", type=Path, default=ROOT / "functions/health_check/app.py", help="the app.py to load (to compare)"
    )
    args = parser.parse_args()
    os.environ.update(AWS_DEFAULT_REGION=REGION, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    event = json.loads((ROOT / "events/health_schedule.json").read_text())
    context = SimpleNamespace(
        function_name="etcdops-health-check",
        memory_limit_in_mb=512,
        invoked_function_arn=f"arn:aws:lambda:{REGION}:123456789012:function:etcdops-health-check",
        aws_request_id="bench",
    )
    with tempfile.TemporaryDirectory(prefix="etcdops-bench-clients-") as tmp:
        cluster = LocalCluster(Path(tmp) / "stack")
        cluster.up(3, binaries=EtcdBinaries.locate(args.etcd_bin_dir))
        try:
            with mock_aws(), contextlib.redirect_stdout(io.StringIO()):  # the handler's log lines and metrics
                prepare(cluster)
                handler = load_handler(args.handler).handler
                made = count_clients()
                cpu: list[float] = []
                clients: list[int] = []
                for _ in range(args.rounds):
                    before, started = len(made), time.process_time()
                    result = handler(event, context)
                    cpu.append(time.process_time() - started)
                    clients.append(len(made) - before)
                    assert result.get("cluster") == "bench" and not result.get("skipped"), result
        finally:
            cluster.down()
    print("CPU per round (s): " + " ".join(f"{t:.3f}" for t in cpu))
    print(f"first round {cpu[0]:.3f} s, median of the others {statistics.median(cpu[1:]):.3f} s")
    print("clients made per round: " + " ".join(str(n) for n in clients))
    return 0


if __name__ == "__main__":
    sys.exit(main())
