"""RunbookStep's role, as template.yaml grants it, lets the EC2 provider run a host's whole life for its
own cluster, and refuses it another cluster's hosts; Backup's role snapshots and prunes only its own
cluster's volumes.

The runbooks in the other e2e tests run on local hosts (etcd needs real processes), so the EC2
provider's writes (launch with tags and the host role, the member's certificate secret, its
status-check alarm, the target group, the host documents, retirement) would otherwise meet RunbookStep's
policy only in AWS. Here the provider acts with RunbookStep's own role in the emulated account, every
request decided as AWS would (the IAM-coverage check sees them), against hosts that are emulated instances.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from builders import host_instance_profile, trust_policy

from etcdops.adapters import pki
from etcdops.adapters.aws import cluster_session, materialize_tls
from etcdops.adapters.awserrors import AwsError
from etcdops.adapters.compute.ec2 import Ec2ComputeProvider
from etcdops.adapters.pki_store import SecretsPki, follow_ca_rotation
from etcdops.adapters.registry import ClusterRegistry
from etcdops.app.pki import issue_client
from etcdops.domain.config import ClusterConfig, Ec2Compute, parse_config
from etcdops.entrypoints.health_check import HealthAwsClients
from etcdops.entrypoints.runbook_step import RunbookStepEvent, run_runbook_step
from etcdops.entrypoints.settings import RunbookSettings
from etcdops_local.aws.stack import LocalAws, LocalStack

pytestmark = pytest.mark.e2e
TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
CLUSTER = "local"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalAws]:
    monkeypatch.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")  # the test registers the one image it launches
    with LocalAws() as local:
        yield local


def account_with_a_launch_template(aws: LocalAws, stack: LocalStack) -> tuple[Ec2Compute, str]:
    """As the operator prepares it (README: Deploying to AWS): subnet, image, host role etcdops-*, the
    launch template with its instance profile, the clients' target group and the CA secret, all tagged."""
    ec2, iam = aws.client("ec2"), aws.client("iam")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    image = ec2.register_image(Name="etcd-host", RootDeviceName="/dev/xvda", VirtualizationType="hvm")["ImageId"]
    host_instance_profile(iam, "etcd-host", "etcdops-local-host")
    ec2.create_launch_template(
        LaunchTemplateName="etcd-host",
        LaunchTemplateData={"ImageId": image, "InstanceType": "t4g.small", "IamInstanceProfile": {"Name": "etcd-host"}},
    )
    target_group = aws.client("elbv2").create_target_group(
        Name="etcd-clients", Protocol="TCP", Port=2379, VpcId=vpc, TargetType="instance",
        Tags=[{"Key": "etcdops:cluster", "Value": CLUSTER}],
    )["TargetGroups"][0]["TargetGroupArn"]  # fmt: skip
    ca = pki.create_ca("local etcd CA")
    aws.client("secretsmanager").create_secret(
        Name=f"etcdops/{CLUSTER}/ca",
        SecretString=json.dumps({"certificate": ca.cert_pem.decode(), "private_key": ca.key_pem.decode()}),
    )
    return Ec2Compute(launch_template="etcd-host", subnets=[subnet], target_group_arn=target_group), image


def as_runbook_step(
    aws: LocalAws, stack: LocalStack, settings: Ec2Compute, cluster: str = CLUSTER
) -> Ec2ComputeProvider:
    """The provider as RunbookStep's handler makes it in Lambda: its clients carry the function's role."""
    session = aws.function_session(stack, "RunbookStepFunction")
    return Ec2ComputeProvider(
        cluster, settings, stack_name=stack.stack_name, region=aws.region,
        ec2=session.client("ec2"), elbv2=session.client("elbv2"), ssm=session.client("ssm"),
        secretsmanager=session.client("secretsmanager"), cloudwatch=session.client("cloudwatch"),
        poll_seconds=0.05,
    )  # fmt: skip


def test_runbook_steps_role_runs_a_hosts_whole_life_and_no_other_clusters_host(aws: LocalAws) -> None:
    stack = aws.build_stack(TEMPLATE, {"ClusterName": CLUSTER})
    settings, image = account_with_a_launch_template(aws, stack)
    compute = as_runbook_step(aws, stack, settings)

    # launch: RunInstances tagged for this cluster (with the host role passed and the tags created on
    # launch), the member's certificate secret signed with the CA, its status-check alarm
    host = compute.launch("m4")
    ec2 = aws.client("ec2")
    launched = ec2.describe_instances(InstanceIds=[host.host_id])["Reservations"][0]["Instances"][0]
    assert launched["IamInstanceProfile"]["Arn"].endswith("/etcd-host")
    assert {"Key": "etcdops:cluster", "Value": CLUSTER} in launched["Tags"]
    compute.register_target(host)
    compute.start_etcd(host, f"m4={host.peer_url}", "new")
    compute.stop_etcd(host)
    compute.deregister_target(host)
    compute.terminate(host)

    [instance] = [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]
    assert instance["State"]["Name"] in ("shutting-down", "terminated")
    commands = aws.client("ssm").list_commands()["Commands"]
    documents = sorted(c["DocumentName"] for c in commands)
    assert documents == [f"{stack.stack_name}-StartEtcd", f"{stack.stack_name}-StopEtcd"]
    assert (
        aws.client("cloudwatch").describe_alarms(AlarmNamePrefix=f"{stack.stack_name}-status-check-")["MetricAlarms"]
        == []
    )  # made at launch, deleted at retirement
    assert aws.authorizer.denials == []
    decided = {(r.principal, r.action) for r in aws.authorizer.recorder.records if r.allowed}
    assert {
        ("RunbookStepFunction", "ec2:RunInstances"),
        ("RunbookStepFunction", "ec2:CreateTags"),
        ("RunbookStepFunction", "iam:PassRole"),
        ("RunbookStepFunction", "secretsmanager:CreateSecret"),
        ("RunbookStepFunction", "cloudwatch:PutMetricAlarm"),
        ("RunbookStepFunction", "elasticloadbalancing:RegisterTargets"),
        ("RunbookStepFunction", "ssm:SendCommand"),
        ("RunbookStepFunction", "ec2:TerminateInstances"),
        ("RunbookStepFunction", "cloudwatch:DeleteAlarms"),
    } <= decided

    # Another cluster's host in the same account: RunbookStep may neither command nor retire it
    other = ec2.run_instances(
        ImageId=image, MinCount=1, MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "etcdops:cluster", "Value": "staging"}]}],
    )["Instances"][0]["InstanceId"]  # fmt: skip
    session = aws.function_session(stack, "RunbookStepFunction")
    aws.authorizer.expect_denied("RunbookStepFunction", "ec2:TerminateInstances")
    with pytest.raises(ClientError) as refused:
        session.client("ec2").terminate_instances(InstanceIds=[other])
    assert refused.value.response["Error"]["Code"] == "UnauthorizedOperation"
    assert ec2.describe_instances(InstanceIds=[other])["Reservations"][0]["Instances"][0]["State"]["Name"] == "running"


def member_instance(aws: LocalAws, image: str, cluster: str, member: str) -> str:
    """An instance of ``cluster`` with etcd's data on a volume of its own, both tagged as a launch tags them."""
    tags = [{"Key": "etcdops:cluster", "Value": cluster}, {"Key": "etcdops:member", "Value": member}]
    return str(aws.client("ec2").run_instances(
        ImageId=image, MinCount=1, MaxCount=1,
        BlockDeviceMappings=[{"DeviceName": "/dev/xvdb", "Ebs": {"VolumeSize": 20}}],
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags}, {"ResourceType": "volume", "Tags": tags}],
    )["Instances"][0]["InstanceId"])  # fmt: skip


def made_zone(aws: LocalAws, volume: str) -> str:
    return str(aws.client("ec2").describe_volumes(VolumeIds=[volume])["Volumes"][0]["AvailabilityZone"])


def volume_backups(aws: LocalAws) -> list[str]:
    """The snapshots tagged as volume backups (the image's own snapshot is not one)."""
    found = aws.client("ec2").describe_snapshots(
        OwnerIds=["self"], Filters=[{"Name": "tag:etcdops:kind", "Values": ["volume"]}]
    )
    return [s["SnapshotId"] for s in found["Snapshots"]]


def test_volume_backups_and_restores_from_them_touch_only_their_clusters_volumes_under_the_roles(
    aws: LocalAws,
) -> None:
    stack = aws.build_stack(TEMPLATE, {"ClusterName": CLUSTER})
    settings, image = account_with_a_launch_template(aws, stack)
    session = aws.function_session(stack, "BackupFunction")
    compute = Ec2ComputeProvider(  # as the Backup function's handler opens it (its clients, its role)
        CLUSTER, settings, stack_name=stack.stack_name, region=aws.region,
        ec2=session.client("ec2"), elbv2=session.client("elbv2"), ssm=session.client("ssm"),
        secretsmanager=session.client("secretsmanager"), cloudwatch=session.client("cloudwatch"), poll_seconds=0.05,
    )  # fmt: skip
    ec2 = aws.client("ec2")
    member_instance(aws, image, CLUSTER, "m2")
    host = compute.find("m2")
    assert host is not None

    # A volume backup as the Backup function takes it: its role snapshots the member's data volume into
    # snapshots tagged as this cluster's volume backups, and retention deletes them again
    tags = {"etcdops:kind": "volume", "etcdops:backup-id": "20261208T000000Z-abcdef", "etcdops:revision": "7"}
    [snapshot] = compute.snapshot_volume(host, tags, "").snapshot_ids
    made = ec2.describe_snapshots(SnapshotIds=[snapshot])["Snapshots"][0]
    assert {"Key": "etcdops:cluster", "Value": CLUSTER} in made["Tags"]
    # RestoreCluster from it, with RunbookStep's role: a new host gets a volume of the snapshot in its zone,
    # attached, then detached and deleted
    restoring = as_runbook_step(aws, stack, settings)
    new_host = restoring.launch("m2-s1")
    assert restoring.volume_snapshot_problem(snapshot) is None  # its dry run of CreateVolume passes the role
    uri = restoring.attach_snapshot_volume(new_host, snapshot, "restore-x1")
    assert restoring.remove_snapshot_volumes("restore-x1") == [uri.removeprefix("ebs://")]
    assert aws.authorizer.denials == []
    compute.delete_volume_snapshots([snapshot])
    assert volume_backups(aws) == []
    decided = {(r.principal, r.action) for r in aws.authorizer.recorder.records if r.allowed and r.modelled}
    wanted = ("ec2:CreateSnapshots", "ec2:CreateTags", "ec2:DeleteSnapshot", "ec2:DescribeInstances")
    assert {("BackupFunction", action) for action in wanted} <= decided
    restore = ("ec2:DescribeSnapshots", "ec2:CreateVolume", "ec2:CreateTags", "ec2:AttachVolume", "ec2:DetachVolume",
               "ec2:DeleteVolume")  # fmt: skip
    assert {("RunbookStepFunction", action) for action in restore} <= decided
    # RunbookStep deletes no volume a restore did not make (the member's data volume), makes none of a snapshot
    # that is no volume backup of this cluster
    data = next(v["VolumeId"] for v in ec2.describe_volumes()["Volumes"] if v["Attachments"] and v["Size"] == 20)
    step = aws.function_session(stack, "RunbookStepFunction").client("ec2")
    aws.authorizer.expect_denied("RunbookStepFunction", "ec2:DeleteVolume")
    with pytest.raises(ClientError, match="UnauthorizedOperation"):
        step.delete_volume(VolumeId=data)
    foreign = ec2.create_snapshot(VolumeId=data)["SnapshotId"]
    aws.authorizer.expect_denied("RunbookStepFunction", "ec2:CreateVolume")
    with pytest.raises(ClientError, match="UnauthorizedOperation"):
        step.create_volume(AvailabilityZone=made_zone(aws, data), SnapshotId=foreign, TagSpecifications=[
            {"ResourceType": "volume", "Tags": [{"Key": "etcdops:cluster", "Value": CLUSTER}]}])  # fmt: skip

    # Another cluster's member in the account: its volumes are not snapshotted, its snapshots not deleted
    staging = member_instance(aws, image, "staging", "m2")
    aws.authorizer.expect_denied("BackupFunction", "ec2:CreateSnapshots")
    with pytest.raises(ClientError) as refused:
        session.client("ec2").create_snapshots(
            InstanceSpecification={"InstanceId": staging, "ExcludeBootVolume": True},
            TagSpecifications=[{"ResourceType": "snapshot", "Tags": [
                {"Key": "etcdops:cluster", "Value": CLUSTER}, {"Key": "etcdops:kind", "Value": "volume"}]}],
        )  # fmt: skip
    assert refused.value.response["Error"]["Code"] == "UnauthorizedOperation"
    [theirs] = [
        s["SnapshotId"]
        for s in ec2.create_snapshots(InstanceSpecification={"InstanceId": staging, "ExcludeBootVolume": True})[
            "Snapshots"
        ]
    ]
    ec2.create_tags(
        Resources=[theirs],
        Tags=[{"Key": "etcdops:cluster", "Value": "staging"}, {"Key": "etcdops:kind", "Value": "volume"}],
    )
    aws.authorizer.expect_denied("BackupFunction", "ec2:DeleteSnapshot")
    with pytest.raises(ClientError) as refused:
        session.client("ec2").delete_snapshot(SnapshotId=theirs)
    assert refused.value.response["Error"]["Code"] == "UnauthorizedOperation"
    assert volume_backups(aws) == [theirs]


def test_a_registered_clusters_secrets_and_hosts_are_the_fleets_and_a_stranger_is_refused(aws: LocalAws) -> None:
    """A cluster registered with the stack (not its ClusterName) has its secrets and target group tagged
    etcdops:fleet=<stack> (README: IAM for a fleet): RunbookStep runs its host's whole life, HealthCheck
    and DeltaBackup read its client TLS; a cluster outside the fleet (another stack's tag, or none) is refused."""
    stack = aws.build_stack(TEMPLATE, {"ClusterName": CLUSTER})
    settings, image = account_with_a_launch_template(aws, stack)
    ec2, secrets = aws.client("ec2"), aws.client("secretsmanager")
    fleet = [{"Key": "etcdops:fleet", "Value": stack.stack_name}]
    vpc = ec2.describe_subnets(SubnetIds=settings.subnets)["Subnets"][0]["VpcId"]
    target_group = aws.client("elbv2").create_target_group(
        Name="c2-clients", Protocol="TCP", Port=2379, VpcId=vpc, TargetType="instance",
        Tags=[{"Key": "etcdops:cluster", "Value": "c2"}, *fleet],
    )["TargetGroups"][0]["TargetGroupArn"]  # fmt: skip
    ca = pki.create_ca("c2 etcd CA")
    pem = {"certificate": ca.cert_pem.decode(), "private_key": ca.key_pem.decode()}
    secrets.create_secret(Name="etcdops/c2/ca", SecretString=json.dumps(pem), Tags=fleet)
    secrets.create_secret(Name="etcdops/c2/client/ca", SecretString=pem["certificate"], Tags=fleet)
    compute = as_runbook_step(aws, stack, settings.model_copy(update={"target_group_arn": target_group}), "c2")

    # the member's secret does not exist yet: granted by its tag, AWS refuses the first read (not "not
    # found"), and the provider creates it tagged etcdops:fleet (which tells a missing secret from a stranger's)
    aws.authorizer.expect_denied("RunbookStepFunction", "secretsmanager:GetSecretValue")
    host = compute.launch("m1")
    compute.register_target(host)
    compute.start_etcd(host, f"m1={host.peer_url}", "new")
    compute.deregister_target(host)
    compute.terminate(host)
    health = aws.function_session(stack, "HealthCheckFunction").client("secretsmanager")
    delta = aws.function_session(stack, "DeltaBackupFunction").client("secretsmanager")  # its fan-out's runs
    for reader in (health, delta):
        assert reader.get_secret_value(SecretId="etcdops/c2/client/ca")["SecretString"] == pem["certificate"]
    assert [(who, call.action, call.resource.rsplit(":", 1)[-1]) for who, call, _ in aws.authorizer.denials] == [
        ("RunbookStepFunction", "secretsmanager:GetSecretValue", "etcdops/c2/members/m1")
    ]
    instance_arn = f"arn:aws:ec2:{aws.region}:{aws.authorizer.account_id}:instance/{host.host_id}"
    assert secrets.describe_secret(SecretId="etcdops/c2/members/m1")["Tags"] == [
        {"Key": "etcdops:cluster", "Value": "c2"}, *fleet, {"Key": "etcdops:member", "Value": "m1"},
        {"Key": "etcdops:instance-arn", "Value": instance_arn},
    ]  # fmt: skip
    # c2 is not the stack's ClusterName: only the fleet statements (tag etcdops:fleet) can have allowed these
    allowed = {(r.principal, r.action) for r in aws.authorizer.recorder.records if r.allowed}
    assert {
        ("RunbookStepFunction", "ec2:RunInstances"),
        ("RunbookStepFunction", "secretsmanager:GetSecretValue"),
        ("RunbookStepFunction", "secretsmanager:CreateSecret"),
        ("RunbookStepFunction", "secretsmanager:TagResource"),
        ("RunbookStepFunction", "elasticloadbalancing:RegisterTargets"),
        ("RunbookStepFunction", "ssm:SendCommand"),
        ("RunbookStepFunction", "ec2:TerminateInstances"),
        ("HealthCheckFunction", "secretsmanager:GetSecretValue"),
        ("DeltaBackupFunction", "secretsmanager:GetSecretValue"),
    } <= allowed

    # the clients `pki issue-client --stack-name` made for c2 carry the fleet's tag: c2's CA rotation
    # (RunbookStep, ec2_ca) finds, reads and renews them with the new CA
    issue_client(SecretsPki(secrets, "c2", fleet=stack.stack_name), "api")
    runbook = aws.function_session(stack, "RunbookStepFunction")
    rotated = pki.create_ca("c2 etcd CA (rotated)")
    assert follow_ca_rotation(
        SecretsPki(runbook.client("secretsmanager"), "c2"), rotated, rotated.cert_pem, reissue=True
    ) == ["api"]
    renewed = json.loads(secrets.get_secret_value(SecretId="etcdops/c2/clients/api")["SecretString"])
    pki.verify_chain(rotated, pki.KeyPair(renewed["certificate"].encode(), renewed["private_key"].encode()))
    assert renewed["ca"] == rotated.cert_pem.decode()

    # outside the fleet: another stack's cluster c3 (its secrets and host tagged with that stack), and an
    # untagged secret of the account: refused, and nothing changed
    other = [{"Key": "etcdops:fleet", "Value": "another-stack"}]
    secrets.create_secret(Name="etcdops/c3/client/ca", SecretString="c3", Tags=other)
    secrets.create_secret(Name="etcdops/c3/clients/api", SecretString="c3 client", Tags=other)
    secrets.create_secret(Name="etcdops/c4/ca", SecretString="c4")
    stranger = ec2.run_instances(
        ImageId=image, MinCount=1, MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "etcdops:cluster", "Value": "c3"}, *other]}],
    )["Instances"][0]["InstanceId"]  # fmt: skip
    for principal, action in (
        ("HealthCheckFunction", "secretsmanager:GetSecretValue"),
        ("DeltaBackupFunction", "secretsmanager:GetSecretValue"),
        ("RunbookStepFunction", "secretsmanager:GetSecretValue"),
        ("RunbookStepFunction", "secretsmanager:PutSecretValue"),
        ("RunbookStepFunction", "ec2:TerminateInstances"),
        ("RunbookStepFunction", "ec2:RunInstances"),
    ):
        aws.authorizer.expect_denied(principal, action)
    refusals = [
        lambda: health.get_secret_value(SecretId="etcdops/c3/client/ca"),
        lambda: delta.get_secret_value(SecretId="etcdops/c3/client/ca"),
        lambda: runbook.client("secretsmanager").get_secret_value(SecretId="etcdops/c4/ca"),
        lambda: runbook.client("secretsmanager").put_secret_value(SecretId="etcdops/c3/clients/api", SecretString="x"),
        lambda: runbook.client("ec2").terminate_instances(InstanceIds=[stranger]),
        lambda: runbook.client("ec2").run_instances(  # a host for c3 not tagged as this fleet's
            ImageId=image,
            MinCount=1,
            MaxCount=1,
            SubnetId=settings.subnets[0],
            TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "etcdops:cluster", "Value": "c3"}]}],
        ),
    ]
    for refused in refusals:
        with pytest.raises(ClientError) as denied:
            refused()
        assert denied.value.response["Error"]["Code"] in ("AccessDeniedException", "UnauthorizedOperation")
    instances = [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]
    assert {i["InstanceId"] for i in instances if i["State"]["Name"] == "running"} == {stranger}
    assert secrets.get_secret_value(SecretId="etcdops/c3/clients/api")["SecretString"] == "c3 client"


def test_a_cluster_with_a_role_of_its_own_is_reached_through_it_and_a_role_outside_the_stacks_pattern_is_refused(
    aws: LocalAws, tmp_path: Path
) -> None:
    """aws.role_arn (README: A fleet from one deployment, Cross-account clusters): the functions assume
    the cluster's role for its Secrets Manager and EC2 calls, under a session naming function and cluster;
    a role outside the stack's ClusterRoleArns, or one whose trust policy does not trust the function's
    role with the configured external id, is refused by STS in one line, before anything of the cluster
    is touched."""
    account = aws.authorizer.account_id
    stack = aws.build_stack(
        TEMPLATE, {"ClusterName": CLUSTER, "ClusterRoleArns": f"arn:aws:iam::{account}:role/etcdops-cluster-*"}
    )
    iam, secrets = aws.client("iam"), aws.client("secretsmanager")
    trust = trust_policy({"AWS": f"arn:aws:iam::{account}:root"}, StringEquals={"sts:ExternalId": "fleet-7"})
    roles = {
        name: iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust)["Role"]["Arn"]
        for name in ("etcdops-cluster-c2", "admin-c3")
    }
    iam.put_role_policy(
        RoleName="etcdops-cluster-c2", PolicyName="c2",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
             "Resource": f"arn:aws:secretsmanager:{aws.region}:{account}:secret:etcdops/c2/*"},
        ]}),
    )  # fmt: skip
    ca = secrets.create_secret(Name="etcdops/c2/client/ca", SecretString="c2 CA")["ARN"]  # no fleet tag: the role's

    def config(name: str, role: str) -> ClusterConfig:
        return parse_config({"name": name, "endpoints": ["https://10.0.2.10:2379"], "tls": {"ca": ca},
                             "aws": {"role_arn": role, "external_id": "fleet-7"}})  # fmt: skip

    health = aws.function_session(stack, "HealthCheckFunction")
    c2 = HealthAwsClients.from_session(health).for_cluster(config("c2", roles["etcdops-cluster-c2"]))
    materialized = materialize_tls(config("c2", roles["etcdops-cluster-c2"]), c2.secrets, tmp_path)
    assert materialized.tls is not None and Path(materialized.tls.ca).read_text() == "c2 CA"
    caller = cluster_session(health, config("c2", roles["etcdops-cluster-c2"]), "HealthCheck").client("sts")
    assert caller.get_caller_identity()["Arn"].endswith(":assumed-role/etcdops-cluster-c2/etcdops-HealthCheck-c2")
    with pytest.raises(ClientError):  # the stack's own role may not read it (no etcdops:fleet tag)
        aws.authorizer.expect_denied("HealthCheckFunction", "secretsmanager:GetSecretValue")
        health.client("secretsmanager").get_secret_value(SecretId=ca)

    # a role the stack may not assume (outside its pattern), or may but whose trust policy does not trust it
    # (another account trusted, the external id wrong): RunbookStep stops at once, in one line, having
    # touched nothing of the cluster
    untrusting = trust_policy({"AWS": "arn:aws:iam::222233334444:root"}, StringEquals={"sts:ExternalId": "fleet-7"})
    roles["etcdops-cluster-c4"] = iam.create_role(RoleName="etcdops-cluster-c4",
                                                  AssumeRolePolicyDocument=untrusting)["Role"]["Arn"]  # fmt: skip
    settings = RunbookSettings.from_env({"CLUSTER_CONFIG_PARAMETER": "/etcdops/cluster/config", "TABLE_NAME": "t",
                                         "TOPIC_ARN": "arn:aws:sns:x", "STACK_NAME": stack.stack_name})  # fmt: skip
    aws.authorizer.expect_denied("RunbookStepFunction", "sts:AssumeRole")
    refusals = [("c3", "admin-c3", None, "RunbookStepFunction"), ("c4", "etcdops-cluster-c4", "fleet-7", "trust"),
                ("c5", "etcdops-cluster-c2", "fleet-8", "trust")]  # fmt: skip
    for name, role, external_id, refused_by in refusals:
        access = {"role_arn": roles[role], **({"external_id": external_id} if external_id else {})}
        ClusterRegistry(aws.client("ssm")).add(json.dumps(
            {"name": name, "endpoints": ["https://10.0.3.10:2379"], "tls": {"ca": ca},
             "compute": {"provider": "ec2", "launch_template": "etcd-host", "subnets": ["subnet-0123abcd"]},
             "aws": access}), f"{name}.json")  # fmt: skip
        event = RunbookStepEvent(runbook="replace", step="LaunchReplacement", execution="e1",
                                 document={"cluster": name, "member_name": "m1"})  # fmt: skip
        denials = len(aws.authorizer.denials)
        with pytest.raises(AwsError) as refused:
            run_runbook_step(event, settings, aws.function_session(stack, "RunbookStepFunction"))
        message = str(refused.value)
        assert message.startswith(f"cluster {name}: assuming aws.role_arn {roles[role]}: AccessDenied"), message
        assert "\n" not in message and "sts:AssumeRole" in message
        (who, call, reason), = aws.authorizer.denials[denials:]  # the assume, refused by whom the case says
        assert call.resource == roles[role] and (reason.startswith("its trust policy") == (refused_by == "trust"))
        assert who.startswith(f"arn:aws:sts::{account}:assumed-role/" if refused_by == "trust" else refused_by)
    records = [r for r in aws.authorizer.recorder.records if r.principal == "RunbookStepFunction"]
    # its configuration read, each assume refused: no secret, host, state item or message touched
    assert {r.action for r in records} == {"ssm:GetParameter", "sts:AssumeRole"}
    assert {r.allowed for r in records if r.action == "sts:AssumeRole"} == {True, False}  # its grant's side: both
