"""Invariant 13 through the real state machines: a ReplaceMember whose launch would fail stops in
preflight, before "Remove the failed member", with the cluster untouched; an approved RestoreCluster
whose hosts cannot take commands stops in preflight with nothing stopped.

A real etcd cluster; template.yaml in the emulated AWS, whose EC2 and SSM say no where AWS does
(etcdops_local.aws.ec2); the cluster's compute is the EC2 provider (its hosts are emulated instances, etcd
runs locally). ReplaceMember is started as HealthCheck would start it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from builders import host_instance_profile

from etcdops.adapters.state_dynamodb import DynamoStateStore
from etcdops.app.approval import decide_approval
from etcdops.app.probe import probe_cluster
from etcdops.domain.compute.base import DOCUMENTS
from etcdops.domain.config import Ec2Compute, dump_config
from etcdops_local.aws.stack import LocalAws, execution_name, start_execution, wait_for_execution
from etcdops_local.cluster import LocalCluster

pytestmark = pytest.mark.e2e
TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"


@pytest.fixture
def account(cluster: LocalCluster) -> Iterator[SimpleNamespace]:
    with LocalAws() as aws:
        stack = aws.build_stack(TEMPLATE, {"ClusterName": cluster.config().name})
        ec2, iam = aws.client("ec2"), aws.client("iam")
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
        host_instance_profile(iam, "etcdops-host")
        target_group = aws.client("elbv2").create_target_group(
            Name="etcd-clients", Protocol="TCP", Port=2379, VpcId=vpc, TargetType="instance"
        )["TargetGroups"][0]["TargetGroupArn"]
        compute = Ec2Compute(
            launch_template="etcd-host",
            subnets=[subnet],
            target_group_arn=target_group,
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
            iam=iam,
            secrets=aws.client("secretsmanager"),
            sfn=aws.client("stepfunctions"),
            state=DynamoStateStore(stack.table or "", aws.client("dynamodb")),
            inbox=inbox,
            subnet=subnet,
        )


def members(cluster: LocalCluster) -> list[tuple[int, str, tuple[str, ...]]]:
    with cluster.client() as client:
        return sorted((m.id, m.name, tuple(m.peer_urls)) for m in client.member_list())


def failure_messages(account: SimpleNamespace) -> list[str]:
    return [m["Message"] for m in account.inbox() if "FAILED" in m["Subject"]]


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
    members_before = members(cluster)

    # When ReplaceMember runs
    first = replace(account, cluster, victim)

    # Then it stops in the preflight, after the backup and before the removal
    assert first["status"] == "FAILED", first
    entered = states_entered(account, first["executionArn"])
    assert "Check we can finish before changing anything" in entered
    assert "Remove the failed member" not in entered and "Launch the replacement host" not in entered
    assert entered[-2:] == ["Notify failure", "Replacement failed"]

    # and the cluster is untouched: the same members with the same ids, no instance, no lock
    assert members(cluster) == members_before
    assert account.ec2.describe_instances()["Reservations"] == []
    assert account.state.get_lock("local") is None

    # and one failure message lists every finding with its fix
    (body,) = failure_messages(account)
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
    failures = failure_messages(account)
    assert len(failures) == 2
    assert "1. [launch] launching member" in failures[1] and "InvalidAMIID.NotFound" in failures[1]
    assert members(cluster) == members_before
    assert account.ec2.describe_instances()["Reservations"] == []

    # When the template gets a real AMI but an instance profile whose role is outside RunbookStep's
    # iam:PassRole scope (role/etcdops-*): the emulated IAM refuses the dry run as AWS would
    image = account.ec2.register_image(Name="etcd-host", RootDeviceName="/dev/xvda", VirtualizationType="hvm")
    host_instance_profile(account.iam, "etcd-host")
    account.ec2.delete_launch_template(LaunchTemplateName="etcd-host")
    account.ec2.create_launch_template(
        LaunchTemplateName="etcd-host",
        LaunchTemplateData={"ImageId": image["ImageId"], "IamInstanceProfile": {"Name": "etcd-host"}},
    )
    account.aws.authorizer.expect_denied("RunbookStepFunction", "iam:PassRole")  # not a gap of the template
    third = replace(account, cluster, victim)

    assert third["status"] == "FAILED"
    assert "Remove the failed member" not in states_entered(account, third["executionArn"])
    failures = failure_messages(account)
    assert len(failures) == 3
    assert "1. [launch] launching member" in failures[2] and "UnauthorizedOperation" in failures[2]
    assert "iam:PassRole" in failures[2] and "role/etcd-host" in failures[2]
    assert "name the host role etcdops-<something>" in failures[2]
    assert members(cluster) == members_before
    assert account.ec2.describe_instances()["Reservations"] == []


def test_an_approved_restore_whose_hosts_cannot_take_commands_stops_in_preflight_with_nothing_stopped(
    account: SimpleNamespace, cluster: LocalCluster
) -> None:
    from etcdops.adapters.backup.target import open_backup_target
    from etcdops.app.backup.job import run_backup

    # Given a verified backup, and member instances whose SSM agent never registered (no instance
    # profile) and no instance tagged as the Kubernetes control plane
    config = cluster.config()
    with cluster.client() as client:
        store, keyring = open_backup_target(config, create_local_key=True)
        backup = run_backup(config, client, probe_cluster(client), store, keyring).manifest
    image = account.ec2.register_image(Name="etcd-host", RootDeviceName="/dev/xvda", VirtualizationType="hvm")
    names = sorted(p.name for p in cluster.ps())
    for name in names:
        tags = [{"Key": "etcdops:cluster", "Value": config.name}, {"Key": "etcdops:member", "Value": name}]
        account.ec2.run_instances(
            ImageId=image["ImageId"],
            MinCount=1,
            MaxCount=1,
            SubnetId=account.subnet,
            TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
        )
    members_before, processes_before = members(cluster), {p.name: (p.pid, p.state) for p in cluster.ps()}

    # When the operator starts RestoreCluster and approves it
    machine = account.stack.state_machines["RestoreClusterStateMachine"]
    name = execution_name("restore-preflight")
    arn = start_execution(
        account.sfn, machine, {"cluster": config.name, "backup_id": backup.id, "mode": "in-place"}, name=name
    )
    deadline = time.monotonic() + 120
    while account.state.load_approval(name) is None:
        assert time.monotonic() < deadline, "no approval request"
        time.sleep(0.5)
    decide_approval(name, "approve", None, store=account.state, sfn=account.sfn, now=datetime.now(UTC), by="test")
    ended = wait_for_execution(account.sfn, arn, timeout=240.0)

    # Then it stops in the preflight: nothing stopped, no data changed, the lock released
    assert ended["status"] == "FAILED", ended
    entered = states_entered(account, arn)
    assert "Check we can finish before changing anything" in entered
    assert "Notify that the restore starts" not in entered and "Stop the API servers" not in entered
    assert members(cluster) == members_before
    assert {p.name: (p.pid, p.state) for p in cluster.ps()} == processes_before
    assert account.state.get_lock(config.name) is None
    assert not store.list("restore/")

    # and one message lists every host that cannot take the commands, and the missing control plane
    (body,) = failure_messages(account)
    assert "PreflightFailedError" in body and "Nothing was stopped or changed" in body
    assert "could NOT be removed" not in body  # the Catch path's staging clean-up ran with RunbookStep's role
    for name in names:
        assert f"({name}): is not registered with SSM" in body
    assert "[control-plane] control-plane instances of local: none is running" in body
    assert body.count("Fix: ") == len(names) + 1
