"""`etcdops cluster add` reads the etcdops:fleet tag of every AWS resource of a registered cluster the
stack's Fleet* grants reach (etcdops.domain.fleet_tags says which; etcdops.adapters.fleet_tags reads them
with the caller's credentials), and the commands it prints tag exactly what lacks it."""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto_ec2 import emulated_account, register_host_image

from etcdops.adapters.fleet_tags import read_fleet_access
from etcdops.domain.config import parse_config
from etcdops.domain.fleet_tags import FleetAccess, FleetResource, StackScope, refusal, tag_commands

REGION, ACCOUNT = "eu-west-1", "123456789012"
SCOPE = StackScope("etcdops-prod", REGION, ACCOUNT)
FLEET = {"Key": "etcdops:fleet", "Value": "etcdops-prod"}


def test_the_refusal_names_each_untagged_resource_and_one_command_per_service() -> None:
    access = FleetAccess(
        [
            FleetResource("secret", "etcdops/c2/client/ca", "tls.ca", {}),
            FleetResource("secret", "etcdops/c2/client/key", "tls.key", {"etcdops:fleet": "etcdops-prod"}),
            FleetResource("secret", "etcdops/c2/ca", "cluster CA", {"etcdops:fleet": "etcdops-staging"}),
            FleetResource("instance", "i-0123456789abcdef0", "member m1", {"etcdops:cluster": "c2"}),
            FleetResource("volume", "vol-0123456789abcdef0", "data volume of i-0123456789abcdef0", {}),
            FleetResource("target-group", "arn:aws:elasticloadbalancing:eu-west-1:1:targetgroup/c2/1", "tg", {}),
        ],
        ["tls.cert: secret arn:... does not exist"],
    )
    tag = "--tags Key=etcdops:fleet,Value=etcdops-prod"
    assert refusal("c2", access, SCOPE) == (
        "cluster c2: tls.cert: secret arn:... does not exist; the stack etcdops-prod reaches a registered "
        "cluster's resources only through the tag etcdops:fleet=etcdops-prod (README: IAM for a fleet), which 5 "
        "lack: secret etcdops/c2/client/ca (tls.ca), secret etcdops/c2/ca (cluster CA), tagged "
        "etcdops:fleet=etcdops-staging (another deployment's), instance i-0123456789abcdef0 (member m1), volume "
        "vol-0123456789abcdef0 (data volume of i-0123456789abcdef0), target group "
        "arn:aws:elasticloadbalancing:eu-west-1:1:targetgroup/c2/1 (tg); tag them with: "
        f"aws secretsmanager tag-resource --region eu-west-1 --secret-id etcdops/c2/client/ca {tag} && "
        f"aws secretsmanager tag-resource --region eu-west-1 --secret-id etcdops/c2/ca {tag} && "
        f"aws ec2 create-tags --region eu-west-1 --resources i-0123456789abcdef0 vol-0123456789abcdef0 {tag} && "
        "aws elbv2 add-tags --region eu-west-1 --resource-arns "
        f"arn:aws:elasticloadbalancing:eu-west-1:1:targetgroup/c2/1 {tag}"
    )
    assert access.untagged("etcdops-staging")[0].ident == "etcdops/c2/client/ca"
    assert refusal("c2", FleetAccess(access.resources[1:2]), SCOPE) == ""
    assert tag_commands([], SCOPE) == []


@pytest.fixture
def account(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    emulated_account(monkeypatch, REGION)
    with mock_aws():
        yield boto3.session.Session(region_name=REGION)


def run_commands(session: Any, refused: str) -> None:
    """What the operator runs: the AWS CLI commands at the end of the refusal, as the calls they make."""
    for command in refused.split("; tag them with: ")[1].split(" && "):
        words = shlex.split(command)
        options = {words[i]: words[i + 1 : i + 2] for i in range(len(words)) if words[i].startswith("--")}
        key, value = (part.split("=", 1)[1] for part in options["--tags"][0].split(","))
        assert options["--region"] == [REGION]
        if words[1:3] == ["secretsmanager", "tag-resource"]:
            session.client("secretsmanager").tag_resource(
                SecretId=options["--secret-id"][0], Tags=[{"Key": key, "Value": value}]
            )
        elif words[1:3] == ["ec2", "create-tags"]:
            resources = words[words.index("--resources") + 1 : words.index("--tags")]
            session.client("ec2").create_tags(Resources=resources, Tags=[{"Key": key, "Value": value}])
        else:
            assert words[1:3] == ["elbv2", "add-tags"], command
            session.client("elbv2").add_tags(
                ResourceArns=options["--resource-arns"], Tags=[{"Key": key, "Value": value}]
            )


def ec2_cluster(session: Any) -> dict[str, Any]:
    """A cluster c2 on EC2 as it stood before it joined a fleet: nothing carries etcdops:fleet."""
    ec2, secrets = session.client("ec2"), session.client("secretsmanager")
    image = register_host_image(ec2)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]

    def host(tags: dict[str, str]) -> dict[str, Any]:
        spec = [{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]
        return dict(ec2.run_instances(
            ImageId=image, MinCount=1, MaxCount=1, SubnetId=subnet, TagSpecifications=spec,
            BlockDeviceMappings=[{"DeviceName": "/dev/sdf", "Ebs": {"VolumeSize": 8}}],
        )["Instances"][0])  # fmt: skip

    member = host({"etcdops:cluster": "c2", "etcdops:member": "m1"})
    control_plane = host({"etcdops:control-plane": "c2"})
    host({"etcdops:cluster": "c3"})  # another cluster's: not asked
    volume = next(d["Ebs"]["VolumeId"] for d in member["BlockDeviceMappings"] if d["DeviceName"] == "/dev/sdf")
    backup = [{"Key": "etcdops:cluster", "Value": "c2"}, {"Key": "etcdops:kind", "Value": "volume"}]
    spec = [{"ResourceType": "snapshot", "Tags": backup}]
    snapshot = ec2.create_snapshot(VolumeId=volume, TagSpecifications=spec)["SnapshotId"]
    group = session.client("elbv2").create_target_group(
        Name="c2-clients", Protocol="TCP", Port=2379, VpcId=vpc, TargetType="instance"
    )["TargetGroups"][0]["TargetGroupArn"]
    tls = {f: secrets.create_secret(Name=f"etcdops/c2/client/{f}", SecretString="pem")["ARN"] for f in ("ca", "key")}
    secrets.create_secret(Name="etcdops/c2/ca", SecretString="{}")
    secrets.create_secret(Name="etcdops/c2/members/m1", SecretString="{}", Tags=[FLEET])  # made by etcdops
    secrets.create_secret(Name="etcdops/c2/notes", SecretString="-")  # no grant reads it: not asked
    secrets.create_secret(Name="etcdops/c22/ca", SecretString="{}")  # another cluster's
    config = parse_config({
        "name": "c2", "endpoints": ["https://10.0.1.5:2379"],
        "tls": {"ca": tls["ca"], "cert": tls["key"], "key": tls["key"]},
        "compute": {"provider": "ec2", "launch_template": "etcd-host", "subnets": [subnet], "target_group_arn": group},
    })  # fmt: skip
    ids = {"member": member["InstanceId"], "control_plane": control_plane["InstanceId"], "volume": volume}
    return {"config": config, "snapshot": snapshot, "group": group, **ids}


def test_every_resource_a_fleet_grant_reaches_is_read_and_the_printed_commands_tag_them(account: Any) -> None:
    made = ec2_cluster(account)

    access = read_fleet_access(account, made["config"], SCOPE)

    assert access.problems == []
    assert {(r.kind, r.ident, r.why) for r in access.untagged(SCOPE.stack)} == {
        ("secret", "etcdops/c2/client/ca", "tls.ca"),
        ("secret", "etcdops/c2/client/key", "tls.cert"),  # one secret named twice is asked once
        ("secret", "etcdops/c2/ca", "cluster CA"),
        ("instance", made["member"], "member m1"),
        ("instance", made["control_plane"], "control-plane host"),
        ("volume", made["volume"], f"data volume of {made['member']}"),  # its root volume is never snapshotted
        ("snapshot", made["snapshot"], "volume backup"),
        ("target-group", made["group"], "compute.target_group_arn"),
    }
    assert [r.ident for r in access.resources if r.tagged_for(SCOPE.stack)] == ["etcdops/c2/members/m1"]

    run_commands(account, refusal("c2", access, SCOPE))
    again = read_fleet_access(account, made["config"], SCOPE)
    assert again.ok(SCOPE.stack) and len(again.resources) == 9


def test_what_no_tag_fixes_is_named_and_what_the_tag_does_not_govern_is_not_read(account: Any) -> None:
    secrets = account.client("secretsmanager")
    ca = secrets.create_secret(Name="etcdops/c2/client/ca", SecretString="pem", Tags=[FLEET])["ARN"]
    odd = secrets.create_secret(Name="team/c2-ca", SecretString="pem", Tags=[FLEET])["ARN"]
    gone = ca[: -len("-AbCdEf")] + "-Zz9Zz9"
    elsewhere = ca.replace(REGION, "us-east-1")

    def read(**document: Any) -> FleetAccess:
        config = parse_config({"name": "c2", "endpoints": ["https://10.0.1.5:2379"], **document})
        return read_fleet_access(account, config, SCOPE)

    assert read(tls={"ca": odd}).problems == [
        f"tls.ca: no grant of the stack reaches secret {odd}: a registered cluster's TLS secrets must be named "
        "etcdops/<cluster>/client/<name>"
    ]
    assert read(tls={"ca": gone}).problems == [f"tls.ca: secret {gone} does not exist"]
    assert read(tls={"ca": elsewhere}).problems[0].startswith(
        f"tls.ca: secret {elsewhere} is in us-east-1 of account {ACCOUNT}, but the stack etcdops-prod reads secrets "
        f"in {REGION} of {ACCOUNT} only"
    )
    assert read(tls={"ca": ca}).ok(SCOPE.stack)
    # another account's role reaches them: its policy decides, not the tag; files are not AWS resources
    role = {"role_arn": "arn:aws:iam::222233334444:role/etcdops-c2"}
    assert read(tls={"ca": odd}, aws=role).skipped.endswith("no etcdops:fleet tag is needed")
    files = read(tls={"ca": "/etc/etcd/ca.pem"})
    assert files.resources == [] and files.ok(SCOPE.stack) and "names no AWS resource" in files.skipped
