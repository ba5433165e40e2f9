"""The Backup and BackupVerify Lambda handlers against a real cluster, with AWS emulated by moto."""

from __future__ import annotations

import json
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from builders import operator_config
from lambda_handlers import lambda_context, load_handler
from moto import mock_aws

from etcdops.entrypoints.events import InvalidEventError
from etcdops_local.cluster import EtcdBinaries, LocalCluster

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"


def event(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((ROOT / "events" / f"{name}.json").read_text())
    return loaded


def emitted_metrics(output: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for line in output.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            document = json.loads(line)
            for definition in document["_aws"]["CloudWatchMetrics"]:
                for metric in definition["Metrics"]:
                    value = document[metric["Name"]]
                    values[metric["Name"]] = value[-1] if isinstance(value, list) else value
                # exactly the dimension set of the template's alarms (BackupTooOld matches cluster only)
                assert definition["Dimensions"] == [["cluster"]]
                assert document["cluster"] == "local"
    return values


@pytest.fixture
def aws(shared_cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch) -> Iterator[SimpleNamespace]:
    yield from emulated_aws(shared_cluster, monkeypatch)


@pytest.fixture
def own_cluster(start_cluster: Callable[..., LocalCluster], etcd3530: EtcdBinaries) -> LocalCluster:
    """For a test that pauses a member (the handler's path is the same on every version; the copy itself is
    tested on each in tests/integration/test_volume_backup.py)."""
    return start_cluster(etcd3530)


@pytest.fixture
def aws_of_own_cluster(own_cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch) -> Iterator[SimpleNamespace]:
    """Its configuration names the local compute provider."""
    cluster = own_cluster
    compute = cluster.config().compute
    assert compute is not None
    yield from emulated_aws(cluster, monkeypatch, compute=compute.model_dump(mode="json"))


def emulated_aws(
    shared_cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch, **more: Any
) -> Iterator[SimpleNamespace]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        s3, kms, ssm, secrets, sns, sqs = (
            boto3.client(n, region_name=REGION) for n in ("s3", "kms", "ssm", "secretsmanager", "sns", "sqs")
        )
        s3.create_bucket(Bucket="backups")
        key_arn = kms.create_key()["KeyMetadata"]["Arn"]
        backup = {"destination": "s3://backups/etcd/local", "encryption_key": key_arn}
        operator_config(ssm, secrets, shared_cluster, "local", "/etcdops/local/config", backup=backup, **more)
        topic = sns.create_topic(Name="etcdops")["TopicArn"]
        queue = sqs.create_queue(QueueName="inbox")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
        monkeypatch.setenv("CLUSTER_CONFIG_PARAMETER", "/etcdops/local/config")
        monkeypatch.setenv("TOPIC_ARN", topic)
        monkeypatch.setenv("CLUSTER_NAME", "local")  # the stack's ClusterName

        def inbox(bodies: bool = False) -> list[str]:
            messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
            return [json.loads(m["Body"])["Message" if bodies else "Subject"] for m in messages]

        yield SimpleNamespace(s3=s3, ssm=ssm, inbox=inbox)


def test_backup_then_verify_through_the_handlers(aws: SimpleNamespace, capsys: pytest.CaptureFixture[str]) -> None:
    backup = load_handler("backup").handler(event("backup_schedule"), lambda_context())
    metrics = emitted_metrics(capsys.readouterr().out)
    assert metrics["BackupSucceeded"] == 1 and metrics["BackupBytes"] > 0
    assert metrics["NewestVerifiedBackupAge"] == 0

    keys = [o["Key"] for o in aws.s3.list_objects_v2(Bucket="backups")["Contents"]]
    assert f"etcd/local/{backup['backup_id']}.manifest.json" in keys

    verified = load_handler("backup_verify").handler(event("backup_verify_schedule"), lambda_context())
    assert verified["ok"] and verified["backup_id"] == backup["backup_id"] and verified["warnings"] == []
    metrics = emitted_metrics(capsys.readouterr().out)
    # the age is HealthCheck's metric: the verification does not talk to the cluster, so it cannot know
    # which incarnation is live (invariant 11)
    assert metrics["BackupVerifyFailed"] == 0 and "NewestVerifiedBackupAge" not in metrics
    assert metrics["DeltaChainBroken"] == 0 and verified["delta_chains"] == []  # what delta-chain-broken watches
    assert aws.inbox() == []


def test_a_volume_backup_through_the_handler_copies_a_follower_and_counts_as_its_kind(
    aws_of_own_cluster: SimpleNamespace, own_cluster: LocalCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster = own_cluster
    from etcdops_local.compute import register_local_provider

    register_local_provider()  # as the local stack does: the Lambda layer's factory knows only ec2
    # Given a written key, and an EventBridge event asking for a volume backup
    with cluster.client() as client:
        written = client.put(b"/registry/k", b"v")
    volume_event = {"detail": {"kind": "volume"}}  # VolumeBackupSchedule's constant input, as EventBridge sends it
    # When the Backup function runs it
    result = load_handler("backup").handler(volume_event, lambda_context())
    # Then a follower's copy is stored as a volume backup, counted under its own metrics, and every member runs
    assert result["kind"] == "volume" and result["revision"] >= written
    metrics = emitted_metrics(capsys.readouterr().out)
    assert metrics["VolumeBackupSucceeded"] == 1 and metrics["VolumeBackupBytes"] > 0
    assert "BackupSucceeded" not in metrics and "NewestVerifiedBackupAge" not in metrics  # not a full backup
    manifest = json.loads(
        aws_of_own_cluster.s3.get_object(Bucket="backups", Key=f"etcd/local/{result['backup_id']}.manifest.json")[
            "Body"
        ].read()
    )
    assert manifest["kind"] == "volume" and manifest["volume"]["provider"] == "local"
    assert {p.state for p in cluster.ps()} == {"running"}
    # and a kind it does not know is refused before anything is taken
    with pytest.raises(InvalidEventError, match="kind"):
        load_handler("backup").handler({**event("backup_schedule"), "detail": {"kind": "disk"}}, lambda_context())


def test_malformed_event_is_refused_and_changes_nothing(aws: SimpleNamespace) -> None:
    with pytest.raises(InvalidEventError, match=r"^BackupEvent: version: Field required"):
        load_handler("backup").handler({"source": "aws.events"}, lambda_context())
    assert aws.s3.list_objects_v2(Bucket="backups").get("KeyCount") == 0


def failed_for_good(function: str, event: dict[str, Any], error: BaseException) -> dict[str, Any]:
    """Lambda's record of an asynchronous invocation whose retry is spent, as FailureNotice receives it."""
    return {
        "version": "1.0",
        "timestamp": "2026-12-01T08:30:05.568Z",
        "requestContext": {
            "requestId": "req-1",
            "functionArn": f"arn:aws:lambda:{REGION}:123456789012:function:etcdops-{function}-1AbC2dE3:$LATEST",
            "condition": "RetriesExhausted",
            "approximateInvokeCount": 2,
        },
        "requestPayload": event,
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "responsePayload": {
            "errorMessage": str(error),
            "errorType": type(error).__name__,
            "stackTrace": traceback.format_tb(error.__traceback__),
        },
    }


def test_tampered_backup_fails_verification_with_metric_and_sns(
    aws: SimpleNamespace, capsys: pytest.CaptureFixture[str]
) -> None:
    from etcdops.domain.backup.errors import DecryptionError

    backup = load_handler("backup").handler(event("backup_schedule"), lambda_context())
    key = f"etcd/local/{backup['backup_id']}.snapshot.enc"
    data = bytearray(aws.s3.get_object(Bucket="backups", Key=key)["Body"].read())
    data[-100] ^= 0xFF
    aws.s3.put_object(Bucket="backups", Key=key, Body=bytes(data))
    capsys.readouterr()

    with pytest.raises(DecryptionError) as failure:
        load_handler("backup_verify").handler(event("backup_verify_schedule"), lambda_context())

    assert emitted_metrics(capsys.readouterr().out)["BackupVerifyFailed"] == 1
    assert aws.inbox() == []  # the job itself mails nobody: each retry would mail again

    # once Lambda has given up, its OnFailure destination says it once
    load_handler("failure_notice").handler(
        failed_for_good("BackupVerifyFunction", event("backup_verify_schedule"), failure.value), lambda_context()
    )
    assert aws.inbox() == ["etcdops: Backup verification FAILED for cluster local"]


def test_backup_of_an_unreachable_cluster_fails_loudly(
    aws: SimpleNamespace, capsys: pytest.CaptureFixture[str]
) -> None:
    document = json.loads(
        aws.ssm.get_parameter(Name="/etcdops/local/config", WithDecryption=True)["Parameter"]["Value"]
    )
    document["endpoints"] = ["https://127.0.0.1:1"]
    aws.ssm.put_parameter(Name="/etcdops/local/config", Type="SecureString", Value=json.dumps(document), Overwrite=True)

    with pytest.raises(Exception) as failure:
        load_handler("backup").handler(event("backup_schedule"), lambda_context())

    assert type(failure.value).__name__.endswith("Error")
    assert emitted_metrics(capsys.readouterr().out)["BackupFailed"] == 1
    assert aws.inbox() == []  # FailureNotice says it once Lambda has given up
    assert aws.s3.list_objects_v2(Bucket="backups").get("KeyCount") == 0


def test_before_the_configuration_exists_the_jobs_do_nothing_quietly(
    aws: SimpleNamespace, capsys: pytest.CaptureFixture[str]
) -> None:
    aws.ssm.delete_parameter(Name="/etcdops/local/config")

    backup = load_handler("backup").handler(event("backup_schedule"), lambda_context())
    verify = load_handler("backup_verify").handler(event("backup_verify_schedule"), lambda_context())

    for result in (backup, verify):
        assert result["configured"] is False and "not configured yet" in result["skipped"]
    assert emitted_metrics(capsys.readouterr().out) == {}  # nothing an alarm could fire on
    assert aws.inbox() == []  # HealthCheck says it once; the jobs stay quiet
    assert aws.s3.list_objects_v2(Bucket="backups").get("KeyCount") == 0


def test_an_unexpected_failure_is_counted_and_mailed_once_without_its_stack_trace(
    aws: SimpleNamespace, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import etcdops.entrypoints.jobs

    def broken(*args: object, **kwargs: object) -> None:
        raise KeyError("manifest")  # not one of our named errors: a bug

    monkeypatch.setattr(etcdops.entrypoints.jobs, "run_backup", broken)

    with pytest.raises(KeyError) as failure:
        load_handler("backup").handler(event("backup_schedule"), lambda_context())
    assert emitted_metrics(capsys.readouterr().out)["BackupFailed"] == 1
    assert aws.inbox() == []

    record = failed_for_good("BackupFunction", event("backup_schedule"), failure.value)
    assert record["responsePayload"]["stackTrace"]  # Lambda's record has it; the mail must not
    sent = load_handler("failure_notice").handler(record, lambda_context())

    assert sent["subject"] == "etcdops: Backup FAILED for cluster local"
    [body] = aws.inbox(bodies=True)
    assert "after 2 attempts:\nKeyError: 'manifest'" in body
    assert "File " not in body and "Traceback" not in body and "app.py" not in body



@pytest.fixture
def aws_of_one_member(
    start_cluster: Callable[..., LocalCluster], etcd3530: EtcdBinaries, monkeypatch: pytest.MonkeyPatch
) -> Iterator[SimpleNamespace]:
    """A one-member cluster of its own (it is written to) and the state table that holds the delta chain's head;
    one version: the handlers' path is the same on every one."""
    from etcdops.adapters.state_dynamodb import table_definition

    cluster = start_cluster(etcd3530, members=1)
    for aws in emulated_aws(cluster, monkeypatch):
        boto3.client("dynamodb", region_name=REGION).create_table(**table_definition("etcdops-state"))
        monkeypatch.setenv("TABLE_NAME", "etcdops-state")
        aws.cluster = cluster
        yield aws


def test_a_delta_chain_broken_in_the_middle_is_seen_by_backup_verify_not_by_the_delta_runs(
    aws_of_one_member: SimpleNamespace, capsys: pytest.CaptureFixture[str]
) -> None:
    aws, delta_backup = aws_of_one_member, load_handler("delta_backup")  # one container for every run

    def delta() -> tuple[dict[str, Any], dict[str, float]]:
        result = delta_backup.handler(event("delta_backup_schedule"), lambda_context())
        return result, emitted_metrics(capsys.readouterr().out)

    # Given a chain of two deltas, each run publishing DeltaChainBroken 0
    started, metrics = delta()
    assert (started["action"], started["broken"], metrics["DeltaChainBroken"]) == ("new-chain", None, 0)
    stored = []
    with aws.cluster.client() as client:
        for n in range(3):
            client.put(f"/chain/{n}", "x")
            if n < 2:
                stored.append(delta())
        assert [(r["action"], m["DeltaChainBroken"]) for r, m in stored] == [("delta", 0), ("delta", 0)]

        # When the first delta is deleted (object and manifest): a gap in the middle of the chain
        first = stored[0][0]["delta_id"]
        for suffix in ("enc", "json"):
            aws.s3.delete_object(Bucket="backups", Key=f"etcd/local/deltas/{first}.delta.{suffix}")

        # Then the next delta run goes on (it reads back the newest delta only) and reports nothing
        after, metrics = delta()
    assert (after["action"], after["broken"], metrics["DeltaChainBroken"]) == ("delta", None, 0)
    # but BackupVerify finds the break and publishes DeltaChainBroken 1, the delta-chain-broken alarm's datapoint
    verified = load_handler("backup_verify").handler(event("backup_verify_schedule"), lambda_context())
    metrics = emitted_metrics(capsys.readouterr().out)
    (chain,) = verified["delta_chains"]
    assert metrics["DeltaChainBroken"] == 1 and metrics["BackupVerifyFailed"] == 0 and verified["ok"]
    assert chain["broken"] and chain["chain"] == started["backup_id"]
    assert any(w.startswith(f"delta chain {started['backup_id']} ") for w in verified["warnings"])
