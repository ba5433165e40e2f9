"""The emulated AWS says no where AWS says no: every function and state machine acts with its own role.

Given the real template (or a copy with a permission taken away, or with a test-only function), when
its functions and state machines run in the local stack, then each acts with the credentials of the
role CloudFormation made for it, each request is authorized against that role's policies as AWS would
(including AWS's implicit checks: kms:Decrypt to read an SSE-KMS object), a permission the role lacks
fails the call, and the IAM-coverage check sees every decision.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from builders import configured_stack, trust_policy
from stack_templates import ROOT, TEMPLATE, template_with_extras, without_policy, write_template

from etcdops.adapters.backup.store import open_store
from etcdops.app.backup.catalogue import record_drill
from etcdops.domain.backup.manifest import DrillRecord
from etcdops_local.aws.iam_coverage import coverage
from etcdops_local.aws.iam_records import RECORDS_ENV
from etcdops_local.aws.stack import (
    ACCOUNT_ID,
    InvocationError,
    LocalAws,
    LocalAwsError,
    LocalStack,
    invoke_async,
    start_execution,
    wait_for_execution,
)
from etcdops_local.cluster import LocalCluster

pytestmark = pytest.mark.e2e


@pytest.fixture
def aws() -> Iterator[LocalAws]:
    with LocalAws() as local:
        yield local


def invoke(aws: LocalAws, stack: LocalStack, function: str, payload: Any) -> tuple[str | None, Any]:
    response = aws.client("lambda").invoke(FunctionName=stack.functions[function], Payload=json.dumps(payload))
    return response.get("FunctionError"), json.loads(response["Payload"].read())


def event(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((ROOT / "events" / f"{name}.json").read_text())
    return loaded


def grant_test_parameter(template: dict[str, Any]) -> None:
    template["Resources"]["TestFunction"]["Properties"]["Policies"] = [
        {
            "Statement": [
                {
                    "Sid": "OneParameter",
                    "Effect": "Allow",
                    "Action": "ssm:GetParameter",
                    "Resource": {
                        "Fn::Sub": "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter/test/granted"
                    },
                }
            ]
        }
    ]


# ---- who acts ---------------------------------------------------------------------------------------------


def test_a_function_acts_with_its_own_role_in_every_thread_it_starts(aws: LocalAws, tmp_path: Path) -> None:
    stack = aws.build_stack(template_with_extras(tmp_path))

    error, seen = invoke(aws, stack, "TestFunction", {"mode": "whoami"})

    assert error is None, seen
    role = stack.roles["TestFunction"].rsplit("/", 1)[-1]
    expected = f"arn:aws:sts::{ACCOUNT_ID}:assumed-role/{role}/{stack.functions['TestFunction']}"
    assert seen == {"handler": expected, "thread": expected}


def test_the_harness_is_an_administrator_and_a_client_without_keys_is_nobody(aws: LocalAws) -> None:
    assert aws.client("sts").get_caller_identity()["Arn"].endswith(":user/etcdops-local-admin")

    with pytest.raises(ClientError) as refused:
        boto3.session.Session(region_name=aws.region).client("sts").get_caller_identity()

    assert refused.value.response["Error"]["Code"] == "InvalidClientTokenId"


# ---- whom a role trusts -------------------------------------------------------------------------------------


def test_role_credentials_go_only_to_whom_the_roles_trust_policy_trusts(aws: LocalAws) -> None:
    """A service gets a role's credentials only when the role trusts that service (Lambda's and Step
    Functions' refusals); an sts:AssumeRole the caller's policy allows is still refused, as STS refuses
    it, unless the target role's trust policy trusts the caller with every condition (sts:ExternalId)."""
    iam, account = aws.client("iam"), aws.authorizer.account_id

    def role(name: str, principal: dict[str, str], *denied: dict[str, Any], **condition: Any) -> str:
        trust = json.loads(trust_policy(principal, **condition))
        trust["Statement"] += [{"Effect": "Deny", "Principal": p, "Action": "sts:AssumeRole"} for p in denied]
        arn: str = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
        return arn

    caller = role("etcdops-fn", {"Service": "lambda.amazonaws.com"})
    anything = {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"}
    iam.put_role_policy(RoleName="etcdops-fn", PolicyName="assume",
                        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [anything]}))  # fmt: skip
    host = role("etcdops-host", {"Service": "ec2.amazonaws.com"})
    with pytest.raises(LocalAwsError, match="etcdops-host: InvalidParameterValueException: The role defined for "):
        aws.authorizer.role_credentials(host, "fn", "lambda.amazonaws.com")
    with pytest.raises(LocalAwsError, match=r"Neither the global service principal states\.amazonaws\.com, nor the"):
        aws.authorizer.role_credentials(caller, "machine", "states.amazonaws.com")
    c = aws.authorizer.role_credentials(caller, "fn", "lambda.amazonaws.com")
    sts = boto3.session.Session(region_name=aws.region, aws_access_key_id=c.access_key_id,
                                aws_secret_access_key=c.secret_access_key, aws_session_token=c.session_token,
                                ).client("sts")  # fmt: skip
    session = f"arn:aws:sts::{account}:assumed-role/etcdops-fn/fn"
    c2 = role("etcdops-cluster-c2", {"AWS": account}, StringEquals={"sts:ExternalId": "fleet-7"})
    c3 = role("etcdops-cluster-c3", {"AWS": "arn:aws:iam::222233334444:root"})
    c4 = role("etcdops-cluster-c4", {"AWS": caller}, {"AWS": session})
    c5 = role("etcdops-cluster-c5", {"AWS": caller})
    assumed = sts.assume_role(RoleArn=c2, RoleSessionName="c2", ExternalId="fleet-7")["AssumedRoleUser"]["Arn"]
    assert assumed == f"arn:aws:sts::{account}:assumed-role/etcdops-cluster-c2/c2"
    assert sts.assume_role(RoleArn=c5, RoleSessionName="c2")["AssumedRoleUser"]["Arn"].endswith("-c5/c2")
    nowhere = f"arn:aws:iam::{account}:role/etcdops-cluster-c6"
    for arn, external_id in ((c2, "fleet-8"), (c2, None), (c3, None), (c4, None), (nowhere, None)):
        with pytest.raises(ClientError) as refused:
            sts.assume_role(RoleArn=arn, RoleSessionName="c2", **({"ExternalId": external_id} if external_id else {}))
        assert refused.value.response["Error"] == {
            "Type": "Sender", "Code": "AccessDenied",
            "Message": f"User: {session} is not authorized to perform: sts:AssumeRole on resource: {arn}",
        }  # fmt: skip
    with pytest.raises(ClientError, match="AccessDenied"):  # the harness (an administrator) is no exception
        aws.client("sts").assume_role(RoleArn=c3, RoleSessionName="c2")
    denials = [(who.rsplit("/", 1)[-1], call.resource.rsplit("/", 1)[-1], reason.split(" (")[0])
               for who, call, reason in aws.authorizer.denials]  # fmt: skip
    assert denials == [
        ("lambda.amazonaws.com", "etcdops-host", "its trust policy does not allow lambda.amazonaws.com to assume it"),
        ("states.amazonaws.com", "etcdops-fn", "its trust policy does not allow states.amazonaws.com to assume it"),
        ("fn", "etcdops-cluster-c2", f"its trust policy does not allow {session} to assume it"),
        ("fn", "etcdops-cluster-c2", f"its trust policy does not allow {session} to assume it"),
        ("fn", "etcdops-cluster-c3", f"its trust policy does not allow {session} to assume it"),
        ("fn", "etcdops-cluster-c4", f"its trust policy denies {session} explicitly"),
        ("fn", "etcdops-cluster-c6", "no such role"),
        ("etcdops-local-admin", "etcdops-cluster-c3",
         f"its trust policy does not allow arn:aws:iam::{account}:user/etcdops-local-admin to assume it"),
    ]


def test_a_role_without_a_readable_trust_policy_is_not_created(aws: LocalAws) -> None:
    iam = aws.client("iam")
    no_principal = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole"}]}
    for document, says in (("{}", "needs a Statement"), (json.dumps({"Statement": []}), "needs a Statement"),
                           (json.dumps(no_principal), "exactly one of Principal and NotPrincipal")):  # fmt: skip
        with pytest.raises(ClientError) as refused:
            iam.create_role(RoleName="etcdops-host", AssumeRolePolicyDocument=document)
        assert refused.value.response["Error"]["Code"] == "MalformedPolicyDocument"
        assert says in refused.value.response["Error"]["Message"]
    assert iam.list_roles()["Roles"] == []
    # an operator AWS knows though the local evaluator does not: stored (an assume would then be refused)
    dated = trust_policy({"Service": "ec2.amazonaws.com"}, DateLessThan={"aws:CurrentTime": "2030-01-01T00:00:00Z"})
    assert iam.create_role(RoleName="etcdops-host", AssumeRolePolicyDocument=dated)["Role"]["RoleName"]


def test_a_function_whose_role_does_not_trust_lambda_fails_the_stack_as_in_aws(aws: LocalAws, tmp_path: Path) -> None:
    template = tmp_path / "template.yaml"
    template.write_text(json.dumps({  # JSON is YAML; one function, its role trusting EC2 instead of Lambda
        "Transform": "AWS::Serverless-2016-10-31",
        "Resources": {"HealthCheckFunction": {"Type": "AWS::Serverless::Function", "Properties": {
            "CodeUri": str(ROOT / "functions" / "health_check"), "Handler": "app.handler", "Runtime": "python3.12",
            "AssumeRolePolicyDocument": json.loads(trust_policy({"Service": "ec2.amazonaws.com"}))}}},
    }))  # fmt: skip

    with pytest.raises(LocalAwsError) as refused:
        aws.build_stack(template)

    assert str(refused.value).startswith(
        "stack etcdops: HealthCheckFunction: InvalidParameterValueException: The role defined for the function "
        "cannot be assumed by Lambda. (arn:aws:iam::"
    ), refused.value
    assert str(refused.value).endswith("its trust policy does not allow lambda.amazonaws.com to assume it)")


# ---- what a role may do --------------------------------------------------------------------------------------


def test_a_permission_the_role_lacks_fails_the_invocation_as_in_aws(aws: LocalAws, tmp_path: Path) -> None:
    stack = aws.build_stack(template_with_extras(tmp_path))  # TestFunction's role grants nothing
    aws.client("ssm").put_parameter(Name="/test/granted", Value="v", Type="String")

    error, payload = invoke(aws, stack, "TestFunction", {"mode": "read-parameter", "name": "/test/granted"})

    assert error == "Unhandled"
    # SSM answers a JSON AccessDeniedException, which botocore raises as its modelled class of that name
    assert payload["errorType"] == "AccessDeniedException"
    assert "AccessDenied" in payload["errorMessage"] and "ssm:GetParameter" in payload["errorMessage"]


def test_a_grant_allows_exactly_its_resource(aws: LocalAws, tmp_path: Path) -> None:
    stack = aws.build_stack(template_with_extras(tmp_path, grant_test_parameter))
    ssm = aws.client("ssm")
    ssm.put_parameter(Name="/test/granted", Value="yes", Type="String")
    ssm.put_parameter(Name="/test/other", Value="no", Type="String")

    granted = invoke(aws, stack, "TestFunction", {"mode": "read-parameter", "name": "/test/granted"})
    other = invoke(aws, stack, "TestFunction", {"mode": "read-parameter", "name": "/test/other"})

    assert granted == (None, {"value": "yes"})
    assert other[0] == "Unhandled" and "AccessDenied" in other[1]["errorMessage"]
    decided = {(r.resource.rsplit(":", 1)[-1], r.allowed) for r in aws.authorizer.recorder.records}
    assert decided >= {("parameter/test/granted", True), ("parameter/test/other", False)}


def test_a_real_function_without_its_statement_fails_by_name(aws: LocalAws, tmp_path: Path) -> None:
    template = write_template(tmp_path, lambda t: without_policy(t, "BackupFunction", sid="ReadClusterConfig"))
    stack = aws.build_stack(template)
    aws.client("ssm").put_parameter(
        Name=stack.parameters["ClusterConfigParameter"], Type="SecureString", Value=json.dumps({"name": "x"})
    )

    error, payload = invoke(aws, stack, "BackupFunction", event("backup_schedule"))

    assert error == "Unhandled"
    assert payload["errorType"] == "AwsError"
    assert "AccessDenied" in payload["errorMessage"] and "ssm:GetParameter" in payload["errorMessage"]


def test_a_state_machine_acts_with_its_own_role(aws: LocalAws, tmp_path: Path) -> None:
    def no_invoke_permission(template: dict[str, Any]) -> None:
        template["Resources"]["TestMachine"]["Properties"]["Policies"] = []

    stack = aws.build_stack(template_with_extras(tmp_path, no_invoke_permission))
    sfn = aws.client("stepfunctions")

    arn = start_execution(sfn, stack.state_machines["TestMachine"], {"mode": "ok"}, name="denied")
    described = wait_for_execution(sfn, arn, timeout=120)

    assert described["status"] == "FAILED"
    assert "AccessDenied" in (described.get("error", "") + described.get("cause", ""))
    [record] = [r for r in aws.authorizer.recorder.records if r.principal == "TestMachine"]
    assert (record.action, record.allowed) == ("lambda:InvokeFunction", False)


# ---- AWS's implicit checks: an SSE-KMS object needs kms:Decrypt -----------------------------------------------


def backed_up_stack(aws: LocalAws, template: Path, cluster: LocalCluster) -> LocalStack:
    """The stack with the cluster's config, one backup taken and verified by the stack's own functions."""
    stack = configured_stack(aws, template, cluster)
    for function, name in (("BackupFunction", "backup_schedule"), ("BackupVerifyFunction", "backup_verify_schedule")):
        error, result = invoke(aws, stack, function, event(name))
        assert error is None, result
    return stack


def test_health_check_reads_the_sse_kms_manifests_with_its_own_kms_permission(
    aws: LocalAws, shared_cluster: LocalCluster
) -> None:
    stack = backed_up_stack(aws, TEMPLATE, shared_cluster)

    error, result = invoke(aws, stack, "HealthCheckFunction", event("health_schedule"))

    assert error is None, result
    assert result["metrics"]["NewestVerifiedBackupAge"] is not None  # the catalogue was read
    reads = [r for r in aws.authorizer.recorder.records if r.principal == "HealthCheckFunction" and r.because]
    assert {(r.action, r.because, r.allowed) for r in reads} == {
        ("kms:Decrypt", "s3:GetObject of an SSE-KMS object", True)
    }

    # issue 17: LastRestoreDrillAge comes every round, not only from drills (a drill that never runs publishes
    # nothing): before the first good drill it counts from the oldest backup, then from the newest good drill
    [alarm] = aws.client("cloudwatch").describe_alarms(AlarmNames=[f"{stack.stack_name}-etcd-restore-drill-too-old"])[
        "MetricAlarms"
    ]
    assert alarm["MetricName"] == "LastRestoreDrillAge"
    assert alarm["Dimensions"] == [{"Name": "cluster", "Value": "local"}]  # what HealthCheck publishes it with
    assert alarm["Threshold"] == 8 * 86400 and alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert 0 <= result["metrics"]["LastRestoreDrillAge"] < alarm["Threshold"]  # the backup is minutes old
    drilled_at = datetime.now(UTC) - timedelta(days=9)  # a drill restored a backup 9 days ago, none since
    record = DrillRecord(
        drill_id=f"{drilled_at:%Y%m%dT%H%M%SZ}-000001", execution="drill-1", backup_id=None, restorable=True,
        started_at=drilled_at, finished_at=drilled_at, seconds=1.0,
    )  # fmt: skip
    record_drill(open_store(f"s3://{stack.bucket}/etcd/local", s3_client=aws.client("s3")), record)
    error, stale = invoke(aws, stack, "HealthCheckFunction", event("health_schedule"))
    assert error is None, stale
    assert stale["metrics"]["LastRestoreDrillAge"] > alarm["Threshold"]  # the alarm's threshold is passed

    # issue 15: the second round computes from the first's member samples: leader changes over 15 minutes,
    # each member's share of its quota and the fragmentation rule are published, and the alarms judging
    # them (and the p99s) are deployed at the etcd mixin's levels by the template's defaults
    members = stale["metrics"]["Members"]
    assert members and all(0 < values["DbQuotaUsedPercent"] < 95 for values in members.values()), members
    assert stale["metrics"]["MaxLeaderChanges15m"] >= 0 and stale["metrics"]["FragmentedMembers"] == 0
    prefix = f"{stack.stack_name}-etcd-"
    deployed = {
        a["AlarmName"].removeprefix(prefix): (a["MetricName"], a["ComparisonOperator"], a["Threshold"])
        for a in aws.client("cloudwatch").describe_alarms(AlarmNamePrefix=prefix)["MetricAlarms"]
    }
    assert {name: deployed[name] for name in (
        "wal-fsync-slow", "wal-fsync-critical", "backend-commit-slow", "peer-rtt-slow", "leader-changes",
        "db-quota-high", "db-quota-soon", "db-fragmented",
    )} == {
        "wal-fsync-slow": ("MaxWalFsyncP99", "GreaterThanThreshold", 0.5),
        "wal-fsync-critical": ("MaxWalFsyncP99", "GreaterThanThreshold", 1.0),
        "backend-commit-slow": ("MaxBackendCommitP99", "GreaterThanThreshold", 0.25),
        "peer-rtt-slow": ("MaxPeerRttP99", "GreaterThanThreshold", 0.15),
        "leader-changes": ("MaxLeaderChanges15m", "GreaterThanOrEqualToThreshold", 4.0),
        "db-quota-high": ("MaxDbQuotaUsedPercent", "GreaterThanThreshold", 95.0),
        "db-quota-soon": ("MinHoursToQuota", "LessThanThreshold", 4.0),
        "db-fragmented": ("FragmentedMembers", "GreaterThanOrEqualToThreshold", 1.0),
    }  # fmt: skip


def test_without_kms_decrypt_health_check_is_refused_and_the_coverage_check_says_what_is_missing(
    aws: LocalAws, shared_cluster: LocalCluster, tmp_path: Path
) -> None:
    # Given the template as it was before the fix: HealthCheck may read the bucket but not decrypt
    template = write_template(
        tmp_path, lambda t: without_policy(t, "HealthCheckFunction", sid="ReadSseKmsManifests")
    )
    stack = backed_up_stack(aws, template, shared_cluster)

    # When HealthCheck runs: AWS refuses the manifest reads, and HealthCheck (which must keep detecting
    # failures) carries on without the catalogue (saying once over SNS that it cannot read it)
    error, result = invoke(aws, stack, "HealthCheckFunction", event("health_schedule"))
    assert error is None, result
    assert result["metrics"].get("NewestVerifiedBackupAge") is None

    # Then the coverage check names the missing permission, and why it is needed
    found = coverage({}, aws.authorizer.recorder.records)
    assert not found.ok
    missing = (
        f"HealthCheckFunction: kms:Decrypt on arn:aws:kms:{stack.region}:{ACCOUNT_ID}:key/${{BackupKey}}"
        " (needed by s3:GetObject of an SSE-KMS object)"
    )
    assert [r.describe() for r in found.denied] == [missing]
    # and so does the check bin/test runs, over the records as the e2e runs write them
    records = tmp_path / "records"
    assert aws.authorizer.recorder.write(records) is not None
    checked = subprocess.run(
        [
            sys.executable, "-m", "etcdops_local.aws.iam_coverage", "check",
            "--records", str(records), "--template", str(template),
        ],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != RECORDS_ENV},
        check=False,
    )
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert f"\n  MISSING  {missing}\n" in checked.stdout


# ---- asynchronous invocations: retried, then the OnFailure destination, sent with the function's role ----------


def test_a_scheduled_backup_that_fails_for_good_is_said_once_by_failure_notice(aws: LocalAws) -> None:
    # Given the stack with a configuration whose members cannot be reached, and someone on the topic
    stack = configured_stack(aws, TEMPLATE, endpoints=["http://127.0.0.1:1"], plaintext=True)
    sqs = aws.client("sqs")
    queue = sqs.create_queue(QueueName="oncall")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    aws.client("sns").subscribe(TopicArn=stack.topic_arn, Protocol="sqs", Endpoint=queue_arn)

    # When EventBridge's schedule invokes Backup (asynchronously) and every attempt fails
    with pytest.raises(InvocationError) as failed:
        invoke_async(stack, "BackupFunction", event("backup_schedule"))

    # Then Lambda tried twice (MaximumRetryAttempts 1) and FailureNotice sent one message, no stack trace
    messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
    assert [json.loads(m["Body"])["Subject"] for m in messages] == ["etcdops: Backup FAILED for cluster local"]
    body = json.loads(messages[0]["Body"])["Message"]
    assert f", after 2 attempts:\n{failed.value.error_type}: " in body
    assert failed.value.document["stackTrace"] and "File " not in body
    # the record went to the destination with Backup's own role, and the notice to the encrypted topic
    # with FailureNotice's: each allowed by its role's policy, as AWS would decide
    decided = {(r.principal, r.action, r.resource, r.allowed) for r in aws.authorizer.recorder.records}
    notice = f"arn:aws:lambda:{stack.region}:{ACCOUNT_ID}:function:${{FailureNoticeFunction}}"
    key = f"arn:aws:kms:{stack.region}:{ACCOUNT_ID}:key/${{NotificationKey}}"
    assert {
        ("BackupFunction", "lambda:InvokeFunction", notice, True),
        ("FailureNoticeFunction", "sns:Publish", "${NotificationTopic}", True),
        ("FailureNoticeFunction", "kms:GenerateDataKey", key, True),
    } <= decided
