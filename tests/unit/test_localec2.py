"""The emulated EC2 and SSM say no where AWS says no to a launch or a host command (etcdops_local.aws.ec2).

Each refusal the preflight relies on is shown twice: plain moto says yes, the strict emulation says
what AWS says.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from builders import host_instance_profile
from moto import mock_aws
from moto.core.authorization import enable_iam_authentication
from moto_ec2 import emulated_account, register_host_image

from etcdops_local.aws.ec2 import strict_compute

REGION = "eu-west-1"


@dataclass
class Ec2:
    ec2: Any
    ssm: Any
    iam: Any
    image: str
    subnet: str

    def profile(self, name: str) -> str:
        return host_instance_profile(self.iam, name)

    def template(self, name: str, **data: Any) -> dict[str, str]:
        self.ec2.create_launch_template(LaunchTemplateName=name, LaunchTemplateData={"ImageId": self.image, **data})
        return {"LaunchTemplateName": name}

    def dry_run(self, ec2: Any = None, **request: Any) -> str:
        try:
            (ec2 or self.ec2).run_instances(MinCount=1, MaxCount=1, DryRun=True, **request)
        except ClientError as exc:
            return str(exc.response["Error"]["Code"])
        return "launched"

    def document(self, name: str) -> None:
        content = {
            "schemaVersion": "2.2",
            "description": "test",
            "mainSteps": [{"action": "aws:runShellScript", "name": "run", "inputs": {"runCommand": ["true"]}}],
        }
        self.ssm.create_document(Name=name, Content=json.dumps(content), DocumentType="Command")


@pytest.fixture
def account(monkeypatch: pytest.MonkeyPatch) -> Iterator[Ec2]:
    emulated_account(monkeypatch, REGION)
    with mock_aws():
        ec2 = boto3.client("ec2", region_name=REGION)
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
        image = register_host_image(ec2)
        yield Ec2(ec2, boto3.client("ssm", region_name=REGION), boto3.client("iam", region_name=REGION), image, subnet)


def launches_that_aws_refuses(account: Ec2) -> dict[str, dict[str, Any]]:
    return {
        "InvalidLaunchTemplateId.NotFound": {"LaunchTemplate": {"LaunchTemplateId": "lt-0123456789abcdef0"}},
        "InvalidLaunchTemplateName.NotFoundException": {"LaunchTemplate": {"LaunchTemplateName": "no-such"}},
        "InvalidSubnetID.NotFound": {"ImageId": account.image, "SubnetId": "subnet-0123456789abcdef0"},
        "InvalidAMIID.NotFound": {"ImageId": "ami-0123456789abcdef0"},
        "InvalidParameterValue": {"ImageId": account.image, "IamInstanceProfile": {"Name": "no-such-profile"}},
        "InvalidParameterCombination": {
            "LaunchTemplate": account.template("with-nic", NetworkInterfaces=[{"DeviceIndex": 0}]),
            "SubnetId": account.subnet,
        },
    }


def test_plain_moto_does_not_refuse_these_dry_runs_as_aws_does(account: Ec2) -> None:
    """Why the strict emulation exists: if moto learns to say no, this test tells us."""
    answers = {code: account.dry_run(**request) for code, request in launches_that_aws_refuses(account).items()}
    # yes to all but an unknown profile named in the request, which moto refuses with an IAM error code
    assert set(answers.values()) == {"DryRunOperation", "NoSuchEntity"}
    assert all(answer != code for code, answer in answers.items())


def test_the_strict_dry_run_refuses_what_aws_refuses(account: Ec2) -> None:
    with strict_compute():
        for code, request in launches_that_aws_refuses(account).items():
            assert account.dry_run(**request) == code, request
        template = account.template("good", IamInstanceProfile={"Name": account.profile("etcdops-host")})
        assert account.dry_run(LaunchTemplate=template, SubnetId=account.subnet) == "DryRunOperation"
    assert account.ec2.describe_instances()["Reservations"] == []


def test_a_launch_keeps_the_templates_instance_profile(account: Ec2) -> None:
    template = account.template("good", IamInstanceProfile={"Name": account.profile("etcdops-host")})
    with strict_compute():
        instance = account.ec2.run_instances(MinCount=1, MaxCount=1, LaunchTemplate=template)["Instances"][0]

    associations = account.ec2.describe_iam_instance_profile_associations()["IamInstanceProfileAssociations"]
    assert [(a["InstanceId"], a["IamInstanceProfile"]["Arn"].rsplit("/", 1)[1]) for a in associations] == [
        (instance["InstanceId"], "etcdops-host")
    ]


@pytest.mark.parametrize(
    ("role", "answer"), [("etcd-host", "UnauthorizedOperation"), ("etcdops-host", "DryRunOperation")]
)
def test_pass_role_is_authorized_with_the_callers_policy(account: Ec2, role: str, answer: str) -> None:
    template = account.template("t", IamInstanceProfile={"Name": account.profile(role)})
    account.iam.create_user(UserName="caller")
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "ec2:*", "Resource": "*"},
            {"Effect": "Allow", "Action": "iam:PassRole", "Resource": "arn:aws:iam::123456789012:role/etcdops-*"},
        ],
    }
    account.iam.put_user_policy(UserName="caller", PolicyName="p", PolicyDocument=json.dumps(policy))
    key = account.iam.create_access_key(UserName="caller")["AccessKey"]
    caller = boto3.client(
        "ec2", region_name=REGION, aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"]
    )

    with strict_compute(), enable_iam_authentication():
        assert account.dry_run(caller, LaunchTemplate=template, SubnetId=account.subnet) == answer
    with enable_iam_authentication():  # plain moto never asks about PassRole
        assert account.dry_run(caller, LaunchTemplate=template, SubnetId=account.subnet) == "DryRunOperation"


def test_ssm_knows_the_instances_whose_agent_would_register(account: Ec2) -> None:
    template = account.template("good", IamInstanceProfile={"Name": account.profile("etcdops-host")})
    with strict_compute():
        online, stopped = (
            account.ec2.run_instances(MinCount=1, MaxCount=1, LaunchTemplate=template)["Instances"][0]["InstanceId"]
            for _ in range(2)
        )
        no_role = account.ec2.run_instances(ImageId=account.image, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
        account.ec2.stop_instances(InstanceIds=[stopped])

        listed = account.ssm.describe_instance_information()["InstanceInformationList"]
        only_one = account.ssm.describe_instance_information(Filters=[{"Key": "InstanceIds", "Values": [online]}])

    assert {i["InstanceId"]: i["PingStatus"] for i in listed} == {online: "Online", stopped: "ConnectionLost"}
    assert no_role not in {i["InstanceId"] for i in listed}
    assert [i["InstanceId"] for i in only_one["InstanceInformationList"]] == [online]


def test_send_command_refuses_unknown_documents_and_instances_that_are_not_online(account: Ec2) -> None:
    template = account.template("good", IamInstanceProfile={"Name": account.profile("etcdops-host")})
    account.document("etcdops-StopEtcd")

    def send(document: str, instance_id: str) -> str:
        try:
            account.ssm.send_command(InstanceIds=[instance_id], DocumentName=document)
        except ClientError as exc:
            return str(exc.response["Error"]["Code"])
        return "sent"

    # plain moto sends anything anywhere
    assert send("etcdops-NoSuchDocument", "i-0123456789abcdef0") == "sent"
    with strict_compute():
        online, stopped = (
            account.ec2.run_instances(MinCount=1, MaxCount=1, LaunchTemplate=template)["Instances"][0]["InstanceId"]
            for _ in range(2)
        )
        account.ec2.stop_instances(InstanceIds=[stopped])

        assert send("etcdops-NoSuchDocument", online) == "InvalidDocument"
        assert send("etcdops-StopEtcd", "i-0123456789abcdef0") == "InvalidInstanceId"
        assert send("etcdops-StopEtcd", stopped) == "InvalidInstanceId"
        assert send("etcdops-StopEtcd", online) == "sent"
