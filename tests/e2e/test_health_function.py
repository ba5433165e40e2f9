"""The HealthCheck Lambda handler against a real cluster, with AWS (SSM, Secrets Manager, DynamoDB,
SNS, Step Functions, EC2) emulated by moto."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from builders import operator_config
from lambda_handlers import lambda_context, load_handler
from moto import mock_aws

from etcdops.adapters.state_dynamodb import TTL_ATTRIBUTE, table_definition
from etcdops.domain.errors import ConfigError
from etcdops.entrypoints.events import InvalidEventError
from etcdops_local.cluster import LocalCluster

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"


def event(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((ROOT / "events" / f"health_{name}.json").read_text())
    return loaded


def emf_documents(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{") and '"_aws"' in line]


@pytest.fixture
def aws(shared_cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch) -> Iterator[SimpleNamespace]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        ssm, secrets, sns, sqs, dynamodb, sfn = (
            boto3.client(n, region_name=REGION)
            for n in ("ssm", "secretsmanager", "sns", "sqs", "dynamodb", "stepfunctions")
        )
        operator_config(ssm, secrets, shared_cluster, "local", "/etcdops/local/config")
        dynamodb.create_table(**table_definition("etcdops-state"))
        dynamodb.update_time_to_live(
            TableName="etcdops-state", TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE}
        )
        topic = sns.create_topic(Name="etcdops")["TopicArn"]
        queue = sqs.create_queue(QueueName="inbox")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
        machine = sfn.create_state_machine(
            name="replace-member",
            definition=json.dumps({"StartAt": "Placeholder", "States": {"Placeholder": {"Type": "Pass", "End": True}}}),
            roleArn="arn:aws:iam::123456789012:role/sfn",
        )["stateMachineArn"]
        monkeypatch.setenv("CLUSTER_CONFIG_PARAMETER", "/etcdops/local/config")
        monkeypatch.setenv("TABLE_NAME", "etcdops-state")
        monkeypatch.setenv("TOPIC_ARN", topic)
        monkeypatch.setenv("REPLACE_STATE_MACHINE_ARN", machine)

        def inbox() -> list[str]:
            messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
            return [json.loads(m["Body"])["Subject"] for m in messages]

        def items() -> list[dict[str, Any]]:
            scanned: list[dict[str, Any]] = dynamodb.scan(TableName="etcdops-state")["Items"]
            return scanned

        yield SimpleNamespace(ssm=ssm, sfn=sfn, machine=machine, inbox=inbox, items=items)


def test_a_scheduled_round_records_its_decision_and_publishes_metrics(
    aws: SimpleNamespace, capsys: pytest.CaptureFixture[str]
) -> None:
    result = load_handler("health_check").handler(event("schedule"), lambda_context("etcdops-health-check"))

    assert result["skipped"] is None and result["cluster"] == "local"
    assert result["decision"]["action"] in ("NONE", "NOTIFY")
    assert result["health"]["has_quorum"] is True
    documents = emf_documents(capsys.readouterr().out)
    cluster_level = next(d for d in documents if "QuorumMargin" in d)
    # exactly the dimensions the template's alarms and dashboard use
    assert [m["Dimensions"] for m in cluster_level["_aws"]["CloudWatchMetrics"]] == [[["cluster"]]]
    assert cluster_level["cluster"] == "local"
    assert cluster_level["HasLeader"] == [1.0] and cluster_level["QuorumMargin"] == [1.0]
    assert cluster_level["VotingMembers"] == [3.0] and 0 < cluster_level["CertificateExpiryDays"][0] < 3660
    assert 3000 < cluster_level["CaCertificateExpiryDays"][0] <= 3650  # the local stack's CA, from tls.ca
    lags = [d for d in documents if "RaftIndexLag" in d]
    assert {d["member"] for d in lags} == {"m1", "m2", "m3"}
    assert all(sorted(d["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0]) == ["cluster", "member"] for d in lags)
    assert {i["sk"]["S"] for i in aws.items()} >= {"streaks", "lastdecision", "raftterm"}
    assert aws.sfn.list_executions(stateMachineArn=aws.machine)["executions"] == []


def test_repeated_rounds_send_each_notification_once(aws: SimpleNamespace) -> None:
    handler = load_handler("health_check").handler
    for _ in range(3):
        handler(event("schedule"), lambda_context("etcdops-health-check"))

    subjects = aws.inbox()
    assert len(subjects) == len(set(subjects))  # e.g. the missing backup: once, not once a round


def test_malformed_event_is_refused_and_nothing_is_recorded(aws: SimpleNamespace) -> None:
    with pytest.raises(InvalidEventError, match=r"^HealthCheckEvent: "):
        load_handler("health_check").handler(
            {"source": "aws.cloudwatch", "detail": {}}, lambda_context("etcdops-health-check")
        )

    assert aws.items() == [] and aws.inbox() == []


def test_an_unreadable_config_is_a_named_error(aws: SimpleNamespace) -> None:
    aws.ssm.put_parameter(Name="/etcdops/local/config", Type="SecureString", Value="name: [", Overwrite=True)

    with pytest.raises(ConfigError, match=r"^ssm:/etcdops/local/config: not valid YAML/JSON"):
        load_handler("health_check").handler(event("schedule"), lambda_context("etcdops-health-check"))

    assert aws.items() == []


def test_alarms_of_other_clusters_and_events_of_strangers_are_skipped(aws: SimpleNamespace) -> None:
    handler = load_handler("health_check").handler
    alarm = event("alarm")
    alarm["detail"]["configuration"]["metrics"][0]["metricStat"]["metric"]["dimensions"] = {"cluster": "prod"}

    skipped = [
        handler(alarm, lambda_context("etcdops-health-check")),
        handler(event("ec2_state_change"), lambda_context("etcdops-health-check")),
    ]

    assert "cluster 'prod'" in skipped[0]["skipped"]
    assert "not a member of any cluster this deployment watches" in skipped[1]["skipped"]
    assert all(r["decision"] is None and r["actions"] == [] for r in skipped)
    assert aws.items() == [] and aws.inbox() == []
    assert aws.sfn.list_executions(stateMachineArn=aws.machine)["executions"] == []


def test_before_the_configuration_exists_rounds_do_nothing_and_say_so_once(
    aws: SimpleNamespace, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a stack deployed for cluster "local" whose configuration was not put into SSM yet
    aws.ssm.delete_parameter(Name="/etcdops/local/config")
    monkeypatch.setenv("CLUSTER_NAME", "local")
    handler = load_handler("health_check").handler

    # When the schedule, an alarm and an EC2 event invoke HealthCheck
    triggers = ("schedule", "alarm", "ec2_state_change")
    results = [handler(event(name), lambda_context("etcdops-health-check")) for name in triggers]

    # Then nothing is probed or started, no metric is published (so no alarm can fire on it),
    # and one SNS message says what to do
    assert [r["configured"] for r in results] == [False, False, False]
    assert all("not configured yet" in r["skipped"] for r in results)
    assert [r["announced"] for r in results] == [True, False, False]
    assert aws.inbox() == ["etcdops: cluster local is not configured yet"]
    assert emf_documents(capsys.readouterr().out) == []
    assert aws.sfn.list_executions(stateMachineArn=aws.machine)["executions"] == []


def test_a_configuration_of_another_cluster_is_refused_by_name(
    aws: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLUSTER_NAME", "prod-eu")  # the stack's ClusterName; the document says "local"
    with pytest.raises(ConfigError, match=r"name: 'local', but this stack was deployed for cluster 'prod-eu'"):
        load_handler("health_check").handler(event("schedule"), lambda_context("etcdops-health-check"))
    assert aws.inbox() == []
