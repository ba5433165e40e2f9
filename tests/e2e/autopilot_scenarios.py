"""The autopilot on real clusters, as the e2e tests drive it: a cluster's configuration at test speed,
the stack built from template.yaml in the local AWS with the cluster's configuration where the stack
reads it, HealthCheck on a one-second timer, an operators' inbox on the topic, and helpers that read
like the runbooks they wait for."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from types import SimpleNamespace
from typing import Any

from stack_templates import TEMPLATE

from etcdops.adapters.etcd.client import EtcdClient
from etcdops.adapters.state_dynamodb import DynamoStateStore
from etcdops.app.probe import probe_cluster
from etcdops.domain.config import dump_config
from etcdops_local.aws.schedule import LocalScheduler
from etcdops_local.aws.stack import DEFAULT_STACK_NAME, LocalAws
from etcdops_local.cluster import LocalCluster

TEST_SCHEDULES = {"HealthCheckSchedule": "rate(1 second)", "DeltaBackupSchedule": "rate(1 day)"}


@contextmanager
def running_autopilot(
    aws: LocalAws,
    cluster: LocalCluster,
    *,
    stack_name: str = DEFAULT_STACK_NAME,
    parameters: Mapping[str, str] | None = None,
    schedules: bool = True,
    **changes: Any,
) -> Iterator[SimpleNamespace]:
    """A stack of template.yaml running the autopilot for ``cluster`` (config ``changes`` applied); without
    ``schedules`` nothing fires on its own (no health rounds): the stack only runs what the test starts."""
    document = configure(cluster, **changes)
    stack = aws.build_stack(
        TEMPLATE, {"ClusterName": cluster.config().name, **(parameters or {})}, stack_name=stack_name
    )
    aws.client("ssm").put_parameter(
        Name=stack.parameters["ClusterConfigParameter"], Type="SecureString", Value=document, Overwrite=True
    )
    sqs, sns = aws.client("sqs"), aws.client("sns")
    queue = sqs.create_queue(QueueName=f"{stack_name}-operators")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=stack.topic_arn, Protocol="sqs", Endpoint=queue_arn)
    subjects: list[str] = []
    bodies: dict[str, str] = {}  # the text of each message by its subject

    def inbox() -> list[str]:
        """Every message sent so far, once each: a message read is deleted from the queue (else SQS hands
        it out again after its visibility timeout, and one message would count twice)."""
        while True:
            messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
            if not messages:
                return subjects
            for message in messages:
                body = json.loads(message["Body"])
                subjects.append(body["Subject"])
                bodies[body["Subject"]] = body["Message"]
                sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])

    # DeltaBackup (every minute in the template) is left out: its first run takes a full backup, which would
    # change what these scenarios see after a minute (tests/e2e/test_delta_backup_function.py runs it)
    timer = LocalScheduler.for_stack(stack, TEST_SCHEDULES) if schedules else nullcontext()
    with timer:
        yield SimpleNamespace(
            aws=aws,
            stack=stack,
            cluster=cluster,
            sfn=aws.client("stepfunctions"),
            state=DynamoStateStore(stack.table or "", aws.client("dynamodb")),
            machine=stack.state_machines["ReplaceMemberStateMachine"],
            inbox=inbox,
            bodies=bodies,
            parameter=stack.parameters["ClusterConfigParameter"],
        )


def configure(
    cluster: LocalCluster, health: dict[str, Any] | None = None, compute: dict[str, Any] | None = None, **changes: Any
) -> str:
    """The local stack's config with test-speed failure detection (K=3 rounds over 2 s) and repairs
    (a short re-check, a 1 s backoff), plus ``health`` and ``compute`` settings and top-level ``changes``."""
    config = cluster.config()
    speed = {"failure_threshold": 3, "failure_window_seconds": 2, "recheck_seconds": 1, "repair_backoff_seconds": 1}
    settings = config.health.model_copy(update={**speed, **(health or {})})
    hosts = config.compute.model_copy(update=compute or {}) if config.compute else None
    config = config.model_copy(update={"health": settings, "compute": hosts, **changes})
    document = dump_config(config)
    cluster.config_file.write_text(document)
    return document


def executions(pilot: SimpleNamespace) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = pilot.sfn.list_executions(stateMachineArn=pilot.machine)["executions"]
    return found


def wait_for(what: str, predicate: Any, timeout: float = 150.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def wait_rounds(pilot: SimpleNamespace, count: int) -> None:
    """Wait until the stack's HealthCheck has decided ``count`` more times (each round saves its decision)."""
    for _ in range(count):
        seen = pilot.state.load_last_decision("local")
        before = seen.decided_at if seen else None
        wait_for(
            "another health round",
            lambda before=before: (d := pilot.state.load_last_decision("local")) and d.decided_at != before,
        )


def finished(pilot: SimpleNamespace) -> list[dict[str, Any]]:
    return [e for e in executions(pilot) if e["status"] != "RUNNING"]


def follower(cluster: LocalCluster) -> Any:
    with cluster.client() as client:
        health = probe_cluster(client)
    return next(m for m in health.members if m.id != health.leader)


def healthy(cluster: LocalCluster) -> Any:
    with EtcdClient([m.client_urls[0] for m in cluster.ps() if m.state == "running"], tls=cluster.tls) as client:
        return probe_cluster(client)
