"""Invariant 13 through the real ReplaceMember state machine: a replacement whose launch would fail stops
in preflight, before "Remove the failed member", with the cluster untouched.

A real etcd cluster with a killed member; template.yaml in the emulated AWS, whose EC2 and SSM say no
where AWS does (etcdops.localec2); the cluster's compute is the EC2 provider. The execution is started
as HealthCheck would start it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from etcdops.compute.base import DOCUMENTS
from etcdops.config import Ec2Compute, dump_config
from etcdops.local import LocalCluster
from etcdops.localaws import LocalAws, execution_name, start_execution, wait_for_execution
from etcdops.probe import probe_cluster
from etcdops.state import DynamoStateStore

pytestmark = pytest.mark.e2e
TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"


@pytest.fixture
def account(cluster: LocalCluster) -> Iterator[SimpleNamespace]:
    with LocalAws() as aws:
        stack = aws.build_stack(TEMPLATE, {})
        ec2, iam = aws.client("ec2"), aws.client("iam")
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
        iam.create_role(RoleName="etcdops-host", AssumeRolePolicyDocument=json.dumps({"Statement": []}))
        iam.create_instance_profile(InstanceProfileName="etcdops-host")
        iam.add_role_to_instance_profile(InstanceProfileName="etcdops-host", RoleName="etcdops-host")
        compute = Ec2Compute(
            launch_template="etcd-host",
            subnets=[subnet],
            ssm_documents={key: stack.physical(f"{key}Document") for key in DOCUMENTS},
        )
        config = cluster.config().model_copy(update={"compute": compute})
        aws.client("ssm").put_parameter(
            Name=stack.parameters["ClusterConfigParameter"], Type="SecureString", Value=dump_config(config)
        )
        sqs, sns = aws.client("sqs"), aws.client("sns")
        queue = sqs.create_queue(QueueName="operators")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=stack.topic_arn, Protocol="sqs", Endpoint=queue_arn)
        messages: list[dict[str, Any]] = []

        def inbox() -> list[dict[str, Any]]:
            while batch := sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", []):
                messages.extend(json.loads(m["Body"]) for m in batch)
                sqs.delete_message_batch(
                    QueueUrl=queue,
                    Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)],
                )
            return messages

        yield SimpleNamespace(
            aws=aws,
            stack=stack,
            ec2=ec2,
            secrets=aws.client("secretsmanager"),
            sfn=aws.client("stepfunctions"),
            state=DynamoStateStore(stack.table or "", aws.client("dynamodb")),
            inbox=inbox,
            subnet=subnet,
        )


def replace(account: SimpleNamespace, cluster: LocalCluster, victim: Any) -> dict[str, Any]:
    """A ReplaceMember execution as HealthCheck starts it, run to its end."""
    document = {
        "cluster": cluster.config().name,
        "member_id": f"{victim.id:x}",
        "member_name": victim.name,
        "incident_id": execution_name("incident"),
        "reason": f"test: member {victim.name} was killed",
        "requires_approval": False,
    }
    machine = account.stack.state_machines["ReplaceMemberStateMachine"]
    arn = start_execution(account.sfn, machine, document, name=execution_name("replace-preflight"))
    return wait_for_execution(account.sfn, arn, timeout=240.0)


def states_entered(account: SimpleNamespace, execution_arn: str) -> list[str]:
    events = account.sfn.get_execution_history(executionArn=execution_arn, maxResults=1000)["events"]
    return [e["stateEnteredEventDetails"]["name"] for e in events if "stateEnteredEventDetails" in e]


def test_a_replacement_whose_launch_would_fail_stops_in_preflight_with_the_cluster_untouched(
    account: SimpleNamespace, cluster: LocalCluster
) -> None:
    # Given the CA secret as the README used to say (the certificate only), no launch template, and a
    # follower killed -9
    ca_secret = "etcdops/local/ca"
    account.secrets.create_secret(Name=ca_secret, SecretString=(cluster.pki_dir / "ca.crt").read_text())
    with cluster.client() as client:
        health = probe_cluster(client)
    victim = next(m for m in health.members if m.id != health.leader)
    cluster.kill(victim.name)
    with cluster.client() as client:
        members_before = sorted((m.id, m.name, tuple(m.peer_urls)) for m in client.member_list())

    # When ReplaceMember runs
    first = replace(account, cluster, victim)

    # Then it stops in the preflight, after the backup and before the removal
    assert first["status"] == "FAILED", first
    entered = states_entered(account, first["executionArn"])
    assert "Check we can finish before changing anything" in entered
    assert "Remove the failed member" not in entered and "Launch the replacement host" not in entered
    assert entered[-2:] == ["Notify failure", "Replacement failed"]

    # and the cluster is untouched: the same members with the same ids, no instance, no lock
    with cluster.client() as client:
        assert sorted((m.id, m.name, tuple(m.peer_urls)) for m in client.member_list()) == members_before
    assert account.ec2.describe_instances()["Reservations"] == []
    assert account.state.get_lock("local") is None

    # and one failure message lists every finding with its fix
    failures = [m for m in account.inbox() if "FAILED" in m["Subject"]]
    assert len(failures) == 1
    body = failures[0]["Message"]
    assert "PreflightFailedError" in body and "nothing was changed" in body
    assert f"1. [ca] secret {ca_secret}: holds a certificate but no private key" in body
    assert "2. [launch-template] launch template etcd-host: does not exist" in body
    assert body.count("Fix: ") == 2 and "same members as before" in body and "stackTrace" not in body

    # When the operator fixes both, but the template's AMI is gone: the dry run of the launch says so
    ca = {
        "certificate": (cluster.pki_dir / "ca.crt").read_text(),
        "private_key": (cluster.pki_dir / "ca.key").read_text(),
    }
    account.secrets.put_secret_value(SecretId=ca_secret, SecretString=json.dumps(ca))
    account.ec2.create_launch_template(
        LaunchTemplateName="etcd-host",
        LaunchTemplateData={"ImageId": "ami-0123456789abcdef0", "IamInstanceProfile": {"Name": "etcdops-host"}},
    )
    second = replace(account, cluster, victim)

    assert second["status"] == "FAILED"
    assert "Remove the failed member" not in states_entered(account, second["executionArn"])
    failures = [m for m in account.inbox() if "FAILED" in m["Subject"]]
    assert len(failures) == 2
    assert "1. [launch] launching member" in failures[1]["Message"]
    assert "InvalidAMIID.NotFound" in failures[1]["Message"]
    with cluster.client() as client:
        assert sorted((m.id, m.name, tuple(m.peer_urls)) for m in client.member_list()) == members_before
    assert account.ec2.describe_instances()["Reservations"] == []
