"""The EC2 compute provider against moto: launch, certificates, target group, SSM commands."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from cryptography import x509
from moto import mock_aws
from moto_ec2 import emulated_account, register_host_image

from etcdops.adapters import pki
from etcdops.adapters.compute import factory
from etcdops.adapters.compute.ec2 import Ec2ComputeProvider
from etcdops.adapters.compute.factory import open_compute
from etcdops.domain.compute.base import Host
from etcdops.domain.compute.errors import (
    ActionParameterError,
    CertificateAuthorityError,
    ComputeApiError,
    ComputeConfigError,
    HostCommandFailedError,
    HostCommandTimeoutError,
    HostNotFoundError,
    UnknownActionError,
)
from etcdops.domain.config import Ec2Compute, parse_config
from etcdops.domain.errors import EtcdopsError
from etcdops_local.compute import LocalComputeProvider, register_local_provider

REGION = "eu-west-1"
CLUSTER = "prod"
STACK = "etcdops-prod"


@dataclass
class Aws:
    ec2: Any
    elbv2: Any
    ssm: Any
    secrets: Any
    subnets: list[str]
    vpc: str
    template: str
    target_group: str
    ca: pki.KeyPair
    image: str
    cloudwatch: Any

    def provider(self, **settings: Any) -> Ec2ComputeProvider:
        settings = {"launch_template": self.template, "subnets": self.subnets,
                    "target_group_arn": self.target_group, **settings}  # fmt: skip
        config = Ec2Compute(**settings)
        return Ec2ComputeProvider(
            CLUSTER, config, stack_name=STACK, ec2=self.ec2, elbv2=self.elbv2, ssm=self.ssm,
            secretsmanager=self.secrets, cloudwatch=self.cloudwatch,
        )  # fmt: skip

    def alarms(self) -> dict[str, dict[str, Any]]:
        return {a["AlarmName"]: a for a in self.cloudwatch.describe_alarms()["MetricAlarms"]}

    def user_data(self, instance_id: str) -> str:
        attribute = self.ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
        return base64.b64decode(attribute["UserData"]["Value"]).decode()

    def instance(self, instance_id: str) -> dict[str, Any]:
        return self.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]

    def member_secret(self, name: str) -> dict[str, str]:
        value = self.secrets.get_secret_value(SecretId=f"etcdops/{CLUSTER}/members/{name}")["SecretString"]
        return dict(json.loads(value))

    def commands(self) -> list[dict[str, Any]]:
        return list(self.ssm.list_commands()["Commands"])


@pytest.fixture(scope="session")
def ca() -> pki.KeyPair:
    """The cluster's CA: made once, stored in each test's own emulated Secrets Manager."""
    return pki.create_ca("prod etcd CA")


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, ca: pki.KeyPair) -> Iterator[Aws]:
    emulated_account(monkeypatch, REGION)
    with mock_aws():
        ec2 = boto3.client("ec2", region_name=REGION)
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnets = [
            ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"{REGION}{zone}")["Subnet"][
                "SubnetId"
            ]
            for i, zone in ((1, "a"), (2, "b"))
        ]
        image = register_host_image(ec2)
        template = ec2.create_launch_template(
            LaunchTemplateName="etcd-host", LaunchTemplateData={"ImageId": image, "InstanceType": "t3.small"}
        )["LaunchTemplate"]["LaunchTemplateId"]
        elbv2 = boto3.client("elbv2", region_name=REGION)
        target_group = elbv2.create_target_group(
            Name="etcd-clients", Protocol="TCP", Port=2379, VpcId=vpc, TargetType="instance"
        )["TargetGroups"][0]["TargetGroupArn"]
        secrets = boto3.client("secretsmanager", region_name=REGION)
        secrets.create_secret(
            Name=f"etcdops/{CLUSTER}/ca",
            SecretString=json.dumps({"certificate": ca.cert_pem.decode(), "private_key": ca.key_pem.decode()}),
        )
        ssm = boto3.client("ssm", region_name=REGION)
        cloudwatch = boto3.client("cloudwatch", region_name=REGION)
        yield Aws(ec2, elbv2, ssm, secrets, subnets, vpc, template, target_group, ca, image, cloudwatch)


def _launch_plain_instance(aws: Aws, tags: dict[str, str]) -> str:
    return str(
        aws.ec2.run_instances(
            ImageId=aws.image,
            MinCount=1,
            MaxCount=1,
            SubnetId=aws.subnets[0],
            TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}],
        )["Instances"][0]["InstanceId"]
    )


# ---- launch ------------------------------------------------------------------------------------


def test_launch_uses_the_template_tags_and_bootstrap_user_data(aws: Aws) -> None:
    compute = aws.provider()

    host = compute.launch("m4")

    instance = aws.instance(host.host_id)
    tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
    assert tags["etcdops:cluster"] == CLUSTER and tags["etcdops:member"] == "m4"
    assert host.name == "m4" and host.address == instance["PrivateIpAddress"]
    assert host.peer_url == f"https://{host.address}:2380" and host.client_url == f"https://{host.address}:2379"
    assert instance["SubnetId"] in aws.subnets

    script = aws.user_data(host.host_id)
    assert script.startswith("#!/bin/bash\n")
    for line in (
        f"ETCDOPS_CLUSTER={CLUSTER}",
        "ETCDOPS_MEMBER=m4",
        f"ETCDOPS_SECRET_ID=etcdops/{CLUSTER}/members/m4",
        f"ETCDOPS_REGION={REGION}",
        "ETCDOPS_PEER_PORT=2380",
        "ETCDOPS_CLIENT_PORT=2379",
    ):
        assert f"\n{line}\n" in script
    assert "/etc/systemd/system/etcd.service" in script and "/usr/local/sbin/etcdops-fetch-certs" in script
    # etcd is not started at boot: the runbook adds the member first, then sends StartEtcd
    assert "systemctl start" not in script and "systemctl enable" not in script


def test_launch_is_idempotent_and_spreads_over_subnets(aws: Aws) -> None:
    compute = aws.provider()

    first = compute.launch("m4")
    again = compute.launch("m4")
    other = compute.launch("m5")

    assert (again.host_id, again.peer_url) == (first.host_id, first.peer_url)
    assert [h.name for h in compute.hosts()] == ["m4", "m5"]
    subnets = {aws.instance(h.host_id)["SubnetId"] for h in (first, other)}
    assert subnets == set(aws.subnets)


def test_each_cluster_launches_into_its_own_subnet_with_its_own_security_groups(aws: Aws) -> None:
    """A fleet's clusters live in different networks: a replacement (and a drill's scratch host) of
    this cluster lands in the subnet and security groups its configuration names."""
    groups = [
        aws.ec2.create_security_group(GroupName=f"etcd-{CLUSTER}-{n}", Description="etcd", VpcId=aws.vpc)["GroupId"]
        for n in ("peers", "clients")
    ]
    config = parse_config(
        {
            "name": CLUSTER,
            "endpoints": ["https://10.0.2.10:2379"],
            "tls": {"ca": "/ca.crt"},
            "compute": {"provider": "ec2", "launch_template": aws.template, "subnets": [aws.subnets[1]],
                        "security_groups": groups},
        }
    )  # fmt: skip
    clients = {"ec2": aws.ec2, "elbv2": aws.elbv2, "ssm": aws.ssm, "secretsmanager": aws.secrets,
               "cloudwatch": aws.cloudwatch}  # fmt: skip

    for scratch in (False, True):
        compute = open_compute(config, stack_name=STACK, scratch=scratch, **clients)
        instance = aws.instance(compute.launch("m4").host_id)
        assert instance["SubnetId"] == aws.subnets[1]
        assert sorted(g["GroupId"] for g in instance["SecurityGroups"]) == sorted(groups)

    # without security groups of its own, a cluster keeps the launch template's (none named: EC2's choice)
    assert "SecurityGroupIds" not in aws.provider().launch_request("m5")


def test_what_the_provider_makes_is_tagged_with_its_cluster_and_fleet(aws: Aws) -> None:
    host = aws.provider().launch("m4")
    owner = {"etcdops:cluster": CLUSTER, "etcdops:fleet": STACK}
    assert owner.items() <= {t["Key"]: t["Value"] for t in aws.instance(host.host_id)["Tags"]}.items()
    secret = aws.secrets.describe_secret(SecretId=f"etcdops/{CLUSTER}/members/m4")
    assert owner.items() <= {t["Key"]: t["Value"] for t in secret["Tags"]}.items()


class DeniedReads:
    """Secrets Manager as a registered cluster's role sees it: a read is refused for a secret without
    this fleet's tag, and for one that does not exist (AWS cannot check a missing secret's tag)."""

    def __init__(self, secrets: Any) -> None:
        self.secrets = secrets

    def get_secret_value(self, SecretId: str) -> Any:
        if not SecretId.endswith("/ca"):
            raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "GetSecretValue")
        return self.secrets.get_secret_value(SecretId=SecretId)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.secrets, name)


def test_a_refused_read_of_a_member_secret_creates_it_or_names_a_stranger_s(aws: Aws) -> None:
    compute = aws.provider()
    compute.secrets = DeniedReads(aws.secrets)

    compute.issue_certificates("m4")  # refused because missing: created, tagged as this fleet's
    assert aws.member_secret("m4")["member"] == "m4"

    compute.secrets.create_secret(Name=f"etcdops/{CLUSTER}/members/m5", SecretString="{}")  # someone else's
    with pytest.raises(ComputeApiError, match=rf"^etcdops/{CLUSTER}/members/m5 exists but this function may not "
                       rf"read it: .* must be tagged etcdops:fleet={STACK} "):  # fmt: skip
        compute.issue_certificates("m5")
    assert aws.secrets.get_secret_value(SecretId=f"etcdops/{CLUSTER}/members/m5")["SecretString"] == "{}"


def test_find_ignores_terminated_instances_and_other_clusters(aws: Aws) -> None:
    compute = aws.provider()
    _launch_plain_instance(aws, {"etcdops:cluster": "staging", "etcdops:member": "m4"})
    assert compute.find("m4") is None

    host = compute.launch("m4")
    compute.terminate(host)

    assert compute.find("m4") is None
    relaunched = compute.launch("m4")
    assert relaunched.host_id != host.host_id


# ---- certificates ------------------------------------------------------------------------------


def test_launch_stores_a_certificate_chaining_to_the_ca_for_the_host_only(aws: Aws) -> None:
    compute = aws.provider()

    host = compute.launch("m4")

    secret = aws.member_secret("m4")
    pair = pki.KeyPair(secret["certificate"].encode(), secret["private_key"].encode())
    pki.verify_chain(aws.ca, pair)
    assert secret["ca"] == aws.ca.cert_pem.decode() and secret["member"] == "m4"
    assert "PRIVATE KEY" not in secret["ca"]
    san = pair.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert host.address in {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    assert "m4" in san.get_values_for_type(x509.DNSName)
    # the instance role's IAM condition matches this tag against ec2:SourceInstanceARN
    tags = {t["Key"]: t["Value"] for t in aws.secrets.describe_secret(SecretId=f"etcdops/{CLUSTER}/members/m4")["Tags"]}
    assert tags["etcdops:instance-arn"].endswith(f":instance/{host.host_id}")
    assert tags["etcdops:instance-arn"].startswith(f"arn:aws:ec2:{REGION}:")


def test_certificates_issued_before_launch_gain_the_address_and_keep_extra_names(aws: Aws) -> None:
    compute = aws.provider()

    secret_id = compute.issue_certificates("m4", ["etcd-m4.internal", "10.9.9.9"])
    before = aws.member_secret("m4")["certificate"]
    assert secret_id == f"etcdops/{CLUSTER}/members/m4"
    assert compute.issue_certificates("m4", ["etcd-m4.internal"]) == secret_id
    assert aws.member_secret("m4")["certificate"] == before  # still good: not issued again

    host = compute.launch("m4")

    pair = pki.KeyPair(aws.member_secret("m4")["certificate"].encode(), b"")
    san = pair.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {host.address, "10.9.9.9"} <= {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    assert "etcd-m4.internal" in san.get_values_for_type(x509.DNSName)


def test_missing_ca_secret_is_a_named_error(aws: Aws) -> None:
    aws.secrets.delete_secret(SecretId=f"etcdops/{CLUSTER}/ca", ForceDeleteWithoutRecovery=True)

    with pytest.raises(CertificateAuthorityError, match=f"etcdops/{CLUSTER}/ca"):
        aws.provider().issue_certificates("m4")


def test_ca_secret_may_be_both_pem_blocks(aws: Aws) -> None:
    aws.secrets.put_secret_value(
        SecretId=f"etcdops/{CLUSTER}/ca", SecretString=(aws.ca.cert_pem + aws.ca.key_pem).decode()
    )
    aws.provider().issue_certificates("m4")
    secret = aws.member_secret("m4")
    pki.verify_chain(aws.ca, pki.KeyPair(secret["certificate"].encode(), secret["private_key"].encode()))


# ---- terminate ---------------------------------------------------------------------------------


def test_terminate_is_idempotent_and_retires_the_secret(aws: Aws) -> None:
    compute = aws.provider()
    host = compute.launch("m4")

    compute.terminate(host)
    compute.terminate(host)

    assert aws.instance(host.host_id)["State"]["Name"] in ("shutting-down", "terminated")
    assert compute.find("m4") is None
    assert "DeletedDate" in aws.secrets.describe_secret(SecretId=f"etcdops/{CLUSTER}/members/m4")
    # a later host of the same name gets its certificate secret back
    compute.launch("m4")
    assert "DeletedDate" not in aws.secrets.describe_secret(SecretId=f"etcdops/{CLUSTER}/members/m4")


# ---- status-check alarms -------------------------------------------------------------------------


def test_every_launched_host_gets_a_status_check_alarm_the_stack_rule_matches(aws: Aws) -> None:
    compute = aws.provider()

    host = compute.launch("m4")
    compute.launch("m4")  # a retried launch keeps one alarm

    (alarm,) = aws.alarms().values()
    # the stack's EventBridge rule takes alarm names starting <stack>-status-check- to HealthCheck, and
    # HealthCheck maps the InstanceId dimension of StatusCheckFailed to the member
    assert alarm["AlarmName"] == f"{STACK}-status-check-{host.host_id}"
    assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/EC2", "StatusCheckFailed")
    assert alarm["Dimensions"] == [{"Name": "InstanceId", "Value": host.host_id}]
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold" and alarm["Threshold"] == 1
    assert alarm["EvaluationPeriods"] == 2 and alarm["Period"] == 60


def test_retiring_a_host_deletes_its_alarm_and_leaves_the_others(aws: Aws) -> None:
    compute = aws.provider()
    old, kept = compute.launch("m4"), compute.launch("m5")

    compute.terminate(old)
    compute.terminate(old)  # again: nothing left to delete, no error

    assert list(aws.alarms()) == [f"{STACK}-status-check-{kept.host_id}"]


def test_an_alarm_that_cannot_be_made_does_not_stop_the_launch(aws: Aws, caplog: pytest.LogCaptureFixture) -> None:
    class Refusing:
        def put_metric_alarm(self, **request: Any) -> None:
            message = "not authorized to perform cloudwatch:PutMetricAlarm"
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": message}}, "PutMetricAlarm")

    compute = aws.provider()
    compute.cloudwatch = Refusing()

    host = compute.launch("m4")  # a replacement must not fail after the old member was removed

    found = compute.find("m4")
    assert found is not None and found.host_id == host.host_id
    assert f"status-check alarm {STACK}-status-check-{host.host_id} of member m4 not created" in caplog.text
    assert "AccessDenied" in caplog.text


def test_terminate_leaves_instances_of_other_clusters_alone(aws: Aws) -> None:
    foreign = _launch_plain_instance(aws, {"etcdops:cluster": "staging", "etcdops:member": "m4"})

    aws.provider().terminate(Host(foreign, "m4", "10.0.1.9", "", "", "running"))

    assert aws.instance(foreign)["State"]["Name"] == "running"


# ---- target group ------------------------------------------------------------------------------


def _targets(aws: Aws) -> set[tuple[str, int]]:
    health = aws.elbv2.describe_target_health(TargetGroupArn=aws.target_group)["TargetHealthDescriptions"]
    return {(t["Target"]["Id"], t["Target"]["Port"]) for t in health}


def test_register_and_deregister_swap_the_target_group(aws: Aws) -> None:
    compute = aws.provider()
    old, new = compute.launch("m1"), compute.launch("m4")
    compute.register_target(old)

    compute.register_target(new)
    compute.register_target(new)
    compute.deregister_target(old)
    compute.deregister_target(old)

    assert _targets(aws) == {(new.host_id, 2379)}


def test_without_a_target_group_registration_is_a_no_op(aws: Aws) -> None:
    compute = aws.provider(target_group_arn=None)
    host = compute.launch("m4")

    compute.register_target(host)
    compute.deregister_target(host)

    assert _targets(aws) == set()


# ---- SSM commands ------------------------------------------------------------------------------


def test_start_and_stop_etcd_send_the_documents_with_their_parameters(aws: Aws) -> None:
    compute = aws.provider()
    host = compute.launch("m4")
    initial = f"m1=https://10.0.1.10:2380,m2=https://10.0.2.10:2380,m4={host.peer_url}"

    compute.start_etcd(host, initial, "existing")
    compute.stop_etcd(host)

    start, stop = sorted(aws.commands(), key=lambda c: c["RequestedDateTime"])
    assert start["DocumentName"] == f"{STACK}-StartEtcd" and start["InstanceIds"] == [host.host_id]
    assert start["Parameters"] == {
        "MemberName": ["m4"],
        "PeerUrl": [host.peer_url],
        "ClientUrl": [host.client_url],
        "InitialCluster": [initial],
        "InitialClusterState": ["existing"],
    }
    assert stop["DocumentName"] == f"{STACK}-StopEtcd" and stop["Parameters"] == {}


def test_a_start_with_flags_sends_them_and_refuses_any_other_flag(aws: Aws) -> None:
    compute = aws.provider()
    host = compute.launch("m4")

    compute.start_etcd(host, f"m4={host.peer_url}", "new", {"max-txn-ops": 200})
    for bad, says in (({"data-dir": 1}, "only max-txn-ops, max-request-bytes"), ({"max-txn-ops": 0}, "not a whole")):
        with pytest.raises(ActionParameterError, match=says):
            compute.start_etcd(host, f"m4={host.peer_url}", "new", bad)

    (start,) = aws.commands()  # the refused ones sent nothing
    assert start["Parameters"]["ExtraFlags"] == ["--max-txn-ops=200"]


def test_the_binary_swap_sends_its_document_with_the_version_and_refuses_a_version_that_is_none(aws: Aws) -> None:
    compute = aws.provider()
    host = compute.launch("m4")

    compute.run_action("swap-etcd-binary", [host], {"version": "3.5.30", "check_only": "true"})
    compute.run_action("swap-etcd-binary", [host], {"version": "3.5.30"})
    with pytest.raises(ActionParameterError, match=r"'version'='3\.5' does not match"):
        compute.run_action("swap-etcd-binary", [host], {"version": "3.5"})

    check, swap = sorted(aws.commands(), key=lambda c: c["RequestedDateTime"])
    assert check["DocumentName"] == swap["DocumentName"] == f"{STACK}-SwapEtcdBinary"
    assert check["InstanceIds"] == swap["InstanceIds"] == [host.host_id]
    assert check["Parameters"] == {"Version": ["3.5.30"], "CheckOnly": ["true"]}
    assert swap["Parameters"] == {"Version": ["3.5.30"]}


def test_renewing_a_members_certificates_issues_a_new_one_and_sends_the_host_to_fetch_it(aws: Aws) -> None:
    compute = aws.provider()
    host = compute.launch("m4")
    old = pki.KeyPair(aws.member_secret("m4")["certificate"].encode(), aws.member_secret("m4")["private_key"].encode())

    serial = compute.renew_certificates(host)

    secret = aws.member_secret("m4")
    new = pki.KeyPair(secret["certificate"].encode(), secret["private_key"].encode())
    pki.verify_chain(aws.ca, new)  # from the cluster CA, with its own key
    assert serial == f"{new.certificate.serial_number:x}" != f"{old.certificate.serial_number:x}"
    names = x509.SubjectAlternativeName
    old_names = old.certificate.extensions.get_extension_for_class(names)
    assert new.certificate.extensions.get_extension_for_class(names) == old_names  # the host's address among them
    (renew,) = [c for c in aws.commands() if c["DocumentName"] == f"{STACK}-RenewCertificates"]
    assert renew["InstanceIds"] == [host.host_id] and renew["Parameters"] == {"MemberName": ["m4"]}


def test_document_names_come_from_the_config(aws: Aws) -> None:
    compute = aws.provider(ssm_documents={"StartEtcd": "systemd-StartEtcd"})
    host = compute.launch("m4")

    compute.start_etcd(host, f"m4={host.peer_url}", "new")
    compute.stop_etcd(host)

    assert [c["DocumentName"] for c in aws.commands()] == ["systemd-StartEtcd", f"{STACK}-StopEtcd"]


def test_unknown_document_key_in_config_is_refused_by_name(aws: Aws) -> None:
    with pytest.raises(ComputeConfigError, match=r"compute\.ssm_documents\.StartEcd"):
        aws.provider(ssm_documents={"StartEcd": "x"})


def test_start_etcd_refuses_an_initial_cluster_without_the_host(aws: Aws) -> None:
    compute = aws.provider()
    host = compute.launch("m4")

    with pytest.raises(ActionParameterError, match="m4="):
        compute.start_etcd(host, "m1=https://10.0.1.10:2380", "existing")
    with pytest.raises(ActionParameterError, match="initial_state"):
        compute.start_etcd(host, f"m4={host.peer_url}", "maybe")  # type: ignore[arg-type]
    assert aws.commands() == []


def test_actions_run_their_documents_on_their_host_group(aws: Aws) -> None:
    compute = aws.provider()
    etcd_hosts = [compute.launch("m1"), compute.launch("m2")]
    control_plane = _launch_plain_instance(aws, {"etcdops:control-plane": CLUSTER, "Name": "cp-1"})

    stopped = compute.run_action("stop-apiserver")
    restored = compute.run_action(
        "restore-data-dir",
        None,
        {"snapshot_uri": "s3://backups/prod/snap.db", "initial_cluster": "m1=https://10.0.1.10:2380"},
    )

    assert stopped.ok and [h.host_id for h in stopped.hosts] == [control_plane]
    assert {h.host_id for h in restored.hosts} == {h.host_id for h in etcd_hosts}
    by_document = {c["DocumentName"]: c for c in aws.commands()}
    assert by_document[f"{STACK}-StopApiServer"]["Parameters"] == {}
    assert by_document[f"{STACK}-RestoreDataDir"]["Parameters"] == {
        "SnapshotUri": ["s3://backups/prod/snap.db"],
        "InitialCluster": ["m1=https://10.0.1.10:2380"],
    }


def test_unknown_action_and_bad_parameters_are_named_errors(aws: Aws) -> None:
    compute = aws.provider()
    host = compute.launch("m4")

    with pytest.raises(UnknownActionError, match="reboot-everything") as unknown:
        compute.run_action("reboot-everything", [host], {})
    assert isinstance(unknown.value, EtcdopsError) and not unknown.value.retryable
    with pytest.raises(ActionParameterError, match="'force'"):
        compute.run_action("start-apiserver", [host], {"force": "true"})
    with pytest.raises(ActionParameterError, match="'snapshot_uri'"):
        compute.run_action("restore-data-dir", [host], {"initial_cluster": f"m4={host.peer_url}"})
    with pytest.raises(ActionParameterError, match="manifest_dir"):
        compute.run_action("stop-apiserver", [host], {"manifest_dir": "/etc; rm -rf /"})
    with pytest.raises(HostNotFoundError, match="control-plane"):
        compute.run_action("restart-control-plane")
    assert aws.commands() == []


# ---- waiting for commands (a scripted SSM: moto's commands always succeed at once) --------------------


class ScriptedSsm:
    """Answers get_command_invocation from a script of statuses; records what was sent."""

    def __init__(self, statuses: list[str], in_flight: list[dict[str, Any]] | None = None) -> None:
        self.statuses = statuses
        self.in_flight = in_flight or []
        self.sent: list[dict[str, Any]] = []

    def list_commands(self, InstanceId: str) -> dict[str, Any]:
        return {"Commands": self.in_flight}

    def send_command(self, **request: Any) -> dict[str, Any]:
        self.sent.append(request)
        return {"Command": {"CommandId": "c-1"}}

    def get_command_invocation(self, CommandId: str, InstanceId: str) -> dict[str, Any]:
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return {"Status": status, "StandardOutputContent": "", "StandardErrorContent": "etcd.service failed\n"}


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _scripted(aws: Aws, ssm: ScriptedSsm, clock: FakeClock) -> tuple[Ec2ComputeProvider, Host]:
    host = aws.provider().launch("m4")
    config = Ec2Compute(launch_template=aws.template, subnets=aws.subnets)
    compute = Ec2ComputeProvider(
        CLUSTER, config, stack_name=STACK, ec2=aws.ec2, elbv2=aws.elbv2, ssm=ssm, secretsmanager=aws.secrets,
        cloudwatch=aws.cloudwatch,
        sleep=clock.sleep, clock=clock, max_wait_seconds=60, poll_seconds=5,
    )  # fmt: skip
    return compute, host


def test_a_failed_command_raises_with_every_hosts_result(aws: Aws) -> None:
    clock = FakeClock()
    compute, host = _scripted(aws, ScriptedSsm(["Pending", "InProgress", "Failed"]), clock)

    with pytest.raises(HostCommandFailedError) as failed:
        compute.stop_etcd(host)

    assert failed.value.result is not None and failed.value.result.hosts[0].status == "Failed"
    command = failed.value.result.command_id
    assert str(failed.value) == f"{STACK}-StopEtcd (command {command}) failed: m4 Failed: etcd.service failed"
    assert clock.now == 10.0  # polled three times, slept twice


def test_a_command_running_past_the_deadline_is_retryable_and_the_retry_joins_it(aws: Aws) -> None:
    clock = FakeClock()
    ssm = ScriptedSsm(["InProgress"])
    compute, host = _scripted(aws, ssm, clock)

    with pytest.raises(HostCommandTimeoutError) as timeout:
        compute.stop_etcd(host)
    assert timeout.value.retryable and timeout.value.command_id == "c-1"
    assert len(ssm.sent) == 1

    # the retry finds the same command still in flight and waits for it instead of sending again
    ssm.in_flight = [{**ssm.sent[0], "CommandId": "c-1", "Status": "InProgress"}]
    ssm.statuses = ["Success"]
    result = compute.stop_etcd(host)
    assert result is None and len(ssm.sent) == 1


# ---- the factory -------------------------------------------------------------------------------


def test_factory_chooses_the_backend_from_the_config(aws: Aws, tmp_path: Any) -> None:
    base = {"name": CLUSTER, "endpoints": ["https://10.0.1.10:2379"], "tls": {"ca": "/ca.crt"}}
    ec2_config = parse_config(
        {**base, "compute": {"provider": "ec2", "launch_template": aws.template, "subnets": aws.subnets}}
    )
    local_config = parse_config({**base, "compute": {"provider": "local", "state_dir": str(tmp_path)}})

    session = boto3.Session(region_name=REGION)
    assert isinstance(open_compute(ec2_config, session=session, stack_name=STACK), Ec2ComputeProvider)
    register_local_provider()  # what the local stack does; the Lambda functions never do
    assert isinstance(open_compute(local_config), LocalComputeProvider)
    with pytest.raises(ComputeConfigError, match="ssm"):
        open_compute(ec2_config, ec2=aws.ec2, elbv2=aws.elbv2, secretsmanager=aws.secrets, stack_name=STACK)
    with pytest.raises(ComputeConfigError, match="STACK_NAME"):  # whose documents would it send?
        open_compute(ec2_config, session=session)
    with pytest.raises(ComputeConfigError, match="compute"):
        open_compute(parse_config(base))


def test_a_provider_nobody_registered_is_refused_by_name(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    # Given a process where only the built-in ec2 provider is known (as in the Lambda functions)
    monkeypatch.setattr(factory, "_REGISTERED", {})
    local_config = parse_config(
        {
            "name": CLUSTER,
            "endpoints": ["https://10.0.1.10:2379"],
            "tls": {"ca": "/ca.crt"},
            "compute": {"provider": "local", "state_dir": str(tmp_path)},
        }
    )

    # When a configuration names the local provider, it is refused in one line naming what is known
    with pytest.raises(ComputeConfigError, match=r"provider 'local' is not available here \(this process knows: ec2\)"):
        open_compute(local_config)
    # and nobody replaces the built-in one
    with pytest.raises(ComputeConfigError, match="built in"):
        factory.register_provider("ec2", lambda config, hooks: None)  # type: ignore[arg-type,return-value]


# ---- the scratch pool (restore drills) -----------------------------------------------------------


def test_the_drill_scratch_pool_never_touches_the_cluster_s_hosts_or_targets(aws: Aws) -> None:
    # Given a cluster host that serves clients, and the scratch pool opened as RestoreDrill opens it
    config = parse_config(
        {
            "name": CLUSTER,
            "endpoints": ["https://10.0.1.10:2379"],
            "tls": {"ca": "/ca.crt"},
            "compute": {"provider": "ec2", "launch_template": aws.template, "subnets": aws.subnets,
                        "target_group_arn": aws.target_group},
        }
    )  # fmt: skip
    clients = {"ec2": aws.ec2, "elbv2": aws.elbv2, "ssm": aws.ssm, "secretsmanager": aws.secrets,
               "cloudwatch": aws.cloudwatch}  # fmt: skip
    cluster = open_compute(config, stack_name=STACK, **clients)
    scratch = open_compute(config, stack_name=STACK, scratch=True, **clients)
    sent: list[tuple[str, list[str]]] = []  # what was asked of SSM (moto records every instance when no Targets)
    aws.ssm.meta.events.register(
        "provide-client-params.ssm.SendCommand",
        lambda params, **_: sent.append((params["DocumentName"], params["InstanceIds"])),
    )
    member = cluster.launch("m1")
    cluster.register_target(member)
    leftover = scratch.launch("drill-earlier")  # what a drill that died halfway left

    # When a drill cleans up, launches its scratch host, restores, starts, registers nothing and tears down
    for host in scratch.hosts():  # CleanUpScratch
        scratch.terminate(host)
    host = scratch.launch("drill-abc123")
    scratch.run_action("restore-data-dir", [host], {"snapshot_uri": "s3://staging/drill/x.db",
                                                   "initial_cluster": f"{host.name}={host.peer_url}"})  # fmt: skip
    scratch.start_etcd(host, f"{host.name}={host.peer_url}", "new")
    scratch.register_target(host)  # never a load balancer target, even if asked
    seen_by_cluster = [h.name for h in cluster.hosts()]
    scratch.terminate(host)

    # Then the scratch hosts are tagged as the pool's, never seen by the cluster's lookups, and use the cluster's CA
    tags = {t["Key"]: t["Value"] for t in aws.instance(host.host_id)["Tags"]}
    assert tags["etcdops:cluster"] == f"{CLUSTER}-drill" and tags["etcdops:member"] == "drill-abc123"
    assert seen_by_cluster == ["m1"] and cluster.find("drill-abc123") is None
    assert scratch.find("m1") is None  # and the pool never sees the cluster's hosts
    assert _targets(aws) == {(member.host_id, 2379)}
    # its commands went to the scratch host only
    assert sent == [(f"{STACK}-RestoreDataDir", [host.host_id]), (f"{STACK}-StartEtcd", [host.host_id])]
    # the leftover and the drill's host are gone, with their secrets; the cluster's host and secret stay
    states = {i: aws.instance(i)["State"]["Name"] for i in (leftover.host_id, host.host_id, member.host_id)}
    assert states == {leftover.host_id: "terminated", host.host_id: "terminated", member.host_id: "running"}
    names = {s["Name"] for s in aws.secrets.list_secrets()["SecretList"]}
    assert f"etcdops/{CLUSTER}/members/m1" in names and f"etcdops/{CLUSTER}/members/drill-abc123" not in names


# ---- volume backups: EBS snapshots ---------------------------------------------------------------


class _SettlingClient:
    """What a volume backup asks of etcd before the copy: a linearizable read, then a snapshot stream's start."""

    def __init__(self, revision: int) -> None:
        self.revision, self.asked = revision, []  # type: ignore[var-annotated]

    def range(self, key: bytes, **kwargs: Any) -> Any:
        self.asked.append(("range", kwargs["endpoint"]))
        return type("Range", (), {"revision": self.revision})()

    def snapshot_stream(self, endpoint: str, **_: Any) -> Any:
        self.asked.append(("snapshot", endpoint))
        return type("Stream", (), {"chunks": lambda self: iter([b"db"]), "cancel": lambda self: None})()


def test_a_volume_backup_on_ec2_snapshots_the_follower_s_data_volumes_together_and_records_them(
    aws: Aws, tmp_path: Any
) -> None:
    from builders import cluster, member

    from etcdops.adapters.backup.keys import local_key_provider
    from etcdops.adapters.backup.store import FileStore
    from etcdops.app.backup.catalogue import read_catalogue, read_volume_records, record_volume
    from etcdops.app.backup.volume import ProviderSnapshotResult, run_volume_backup
    from etcdops.domain.backup.manifest import VolumeSnapshotRecord

    # Given three members on EC2, m2 a follower furthest along, its instance with a data volume beside its boot volume
    compute = aws.provider()
    hosts = {name: compute.launch(name) for name in ("m1", "m2", "m3")}
    zone = aws.instance(hosts["m2"].host_id)["Placement"]["AvailabilityZone"]
    data = aws.ec2.create_volume(Size=20, AvailabilityZone=zone)["VolumeId"]
    aws.ec2.attach_volume(VolumeId=data, InstanceId=hosts["m2"].host_id, Device="/dev/sdf")
    health = cluster(
        member(1, "m1", raft_index=90), member(2, "m2", raft_index=90, version="3.5.30"), member(3, "m3", raft_index=80)
    )
    config = parse_config(
        {"name": CLUSTER, "endpoints": ["https://10.0.1.10:2379"], "tls": {"ca": "/ca.crt"},
         "compute": {"provider": "ec2", "launch_template": aws.template, "subnets": aws.subnets}}
    )  # fmt: skip
    store, client = FileStore(tmp_path / "store"), _SettlingClient(revision=4242)
    # and a volume backup of two weeks ago whose snapshot retention no longer keeps (it is not a week's newest)
    old_snapshot = aws.ec2.create_snapshot(VolumeId=data)["SnapshotId"]
    stale = VolumeSnapshotRecord(
        id="20261101T000000Z-0a0a0a", cluster_name=CLUSTER, cluster_id="c1", member_id="2", member_name="m2",
        etcd_version="3.5.30", created_at="2026-11-01T00:00:00Z",
        volume={"provider": "ec2", "revision_observed": 7, "snapshot_ids": [old_snapshot]},
    )  # fmt: skip
    record_volume(store, stale)

    # When a volume backup runs
    result = run_volume_backup(
        config,
        client,
        health,
        store,
        local_key_provider(tmp_path / "k", create=True),
        compute,  # type: ignore[arg-type]
    )

    # Then the follower was read through and made to commit before its volumes were snapshotted together,
    # the boot volume left out, each snapshot tagged with cluster, member, revision and kind
    assert isinstance(result, ProviderSnapshotResult)
    assert client.asked == [("range", "https://10.0.0.2:2379"), ("snapshot", "https://10.0.0.2:2379")]
    record = result.record
    snapshots = aws.ec2.describe_snapshots(SnapshotIds=list(record.volume.snapshot_ids))["Snapshots"]
    assert [s["VolumeId"] for s in snapshots] == [data]
    tags = {t["Key"]: t["Value"] for t in snapshots[0]["Tags"]}
    assert tags == {
        "etcdops:cluster": CLUSTER, "etcdops:member": "m2", "etcdops:revision": "4242", "etcdops:kind": "volume",
        "etcdops:backup-id": record.id, "etcdops:fleet": STACK,
    }  # fmt: skip
    # and the catalogue records it as a volume backup the provider keeps, never as a verified full one,
    # and retention deleted the stale one's snapshot, then its record
    assert read_volume_records(store) == [record] and result.pruned == [stale.id]
    left = {s["SnapshotId"] for s in aws.ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    assert old_snapshot not in left and set(record.volume.snapshot_ids) <= left
    assert (record.member_name, record.volume.revision_observed, record.volume.provider) == ("m2", 4242, "ec2")
    assert read_catalogue(store).backups == []

    # A host without a data volume: refused by name, nothing recorded
    with pytest.raises(ComputeConfigError, match="no volume besides its boot volume"):
        compute.snapshot_volume(hosts["m3"], {}, str(tmp_path))
    assert len(read_volume_records(store)) == 1


def _ca_secret(aws: Aws, which: str) -> dict[str, Any]:
    return dict(json.loads(aws.secrets.get_secret_value(SecretId=f"etcdops/{CLUSTER}/{which}")["SecretString"]))


def _certs(bundle: str) -> list[str]:
    return [b + "-----END CERTIFICATE-----\n" for b in bundle.split("-----END CERTIFICATE-----\n") if b.strip()]


def _sent_commands(aws: Aws) -> list[dict[str, Any]]:
    """The SendCommand requests as sent (moto's list_commands may name every instance of a command)."""
    sent: list[dict[str, Any]] = []
    aws.ssm.meta.events.register("provide-client-params.ssm.SendCommand", lambda params, **_: sent.append(params))
    return sent


def test_a_ca_rotation_on_ec2_goes_through_the_secrets_phase_by_phase(aws: Aws) -> None:
    compute = aws.provider()
    sent = _sent_commands(aws)
    hosts = [compute.launch(name) for name in ("m1", "m2")]
    old = aws.ca.cert_pem.decode()
    assert compute.ca_rotation() == {"begun": 0, "finished": 0}

    compute.begin_ca_phase(1)
    new = _ca_secret(aws, "ca-next")
    pki.check_ca(pki.KeyPair(new["certificate"].encode(), new["private_key"].encode()))
    for name in ("m1", "m2"):  # both trusted; the leaf still of the old CA
        assert _certs(aws.member_secret(name)["ca"]) == [old, new["certificate"]]
        secret = aws.member_secret(name)
        pki.verify_chain(aws.ca, pki.KeyPair(secret["certificate"].encode(), secret["private_key"].encode()))
    assert _ca_secret(aws, "ca")["certificate"] == old
    compute.fetch_certificates(hosts[0])
    (fetch,) = [c for c in sent if c["DocumentName"] == f"{STACK}-RenewCertificates"]
    assert fetch["InstanceIds"] == [hosts[0].host_id] and fetch["Parameters"] == {"MemberName": ["m1"]}
    compute.finish_ca_phase(1)
    assert aws.provider().ca_rotation() == {"begun": 1, "finished": 1}  # a new start reads it

    compute.begin_ca_phase(2)
    assert _ca_secret(aws, "ca")["certificate"] == new["certificate"]  # the new CA issues
    assert _ca_secret(aws, "ca-old") == {"certificate": old, "private_key": aws.ca.key_pem.decode()}
    compute.renew_certificates(hosts[1])
    leaf = aws.member_secret("m2")
    pki.verify_chain(pki.KeyPair(new["certificate"].encode(), new["private_key"].encode()),
                     pki.KeyPair(leaf["certificate"].encode(), leaf["private_key"].encode()))  # fmt: skip
    assert _certs(leaf["ca"]) == [old, new["certificate"]]  # still both trusted
    compute.finish_ca_phase(2)

    compute.begin_ca_phase(3)
    assert [_certs(aws.member_secret(n)["ca"]) for n in ("m1", "m2")] == [[new["certificate"]]] * 2
    assert compute.ca_rotation() == {"begun": 3, "finished": 2}
    compute.finish_ca_phase(3)
    assert compute.ca_rotation() == {"begun": 0, "finished": 0}
    assert _ca_secret(aws, "ca") == {"certificate": new["certificate"], "private_key": new["private_key"]}
    for which in ("ca-next", "ca-old"):
        with pytest.raises(ClientError, match="ResourceNotFound"):
            aws.secrets.get_secret_value(SecretId=f"etcdops/{CLUSTER}/{which}")


def test_each_ca_rotation_phase_on_ec2_converges_when_begun_again(aws: Aws) -> None:
    compute = aws.provider()
    compute.launch("m1")
    compute.begin_ca_phase(1)
    new = _ca_secret(aws, "ca-next")
    compute.begin_ca_phase(1)  # the same new CA, not another one
    assert _ca_secret(aws, "ca-next") == new
    compute.finish_ca_phase(1)
    for _ in range(2):  # the second finds the promotion done and keeps the old CA saved
        compute.begin_ca_phase(2)
        assert _ca_secret(aws, "ca-old")["certificate"] == aws.ca.cert_pem.decode()
        assert aws.provider().ca_rotation() == {"begun": 2, "finished": 1}
    assert _ca_secret(aws, "ca")["certificate"] == new["certificate"]
    with pytest.raises(ComputeConfigError, match="not a CA rotation phase"):
        compute.begin_ca_phase(4)
    assert aws.provider().ca_rotation() == {"begun": 2, "finished": 1}


def test_a_ca_rotation_on_ec2_renews_the_functions_client_tls_secrets(aws: Aws) -> None:
    compute = aws.provider()
    compute.launch("m1")
    client = pki.issue_certificate(aws.ca, "etcdops", kind="client")
    for part, pem in (("ca", aws.ca.cert_pem), ("cert", client.cert_pem), ("key", client.key_pem)):
        aws.secrets.create_secret(Name=f"etcdops/{CLUSTER}/client/{part}", SecretString=pem.decode())

    def client_secret(part: str) -> str:
        return str(aws.secrets.get_secret_value(SecretId=f"etcdops/{CLUSTER}/client/{part}")["SecretString"])

    compute.begin_ca_phase(1)
    new = _ca_secret(aws, "ca-next")
    assert _certs(client_secret("ca")) == [aws.ca.cert_pem.decode(), new["certificate"]]
    assert client_secret("cert") == client.cert_pem.decode()  # phase 1 issues nothing
    compute.finish_ca_phase(1)
    compute.begin_ca_phase(2)
    renewed = pki.KeyPair(client_secret("cert").encode(), client_secret("key").encode())
    new_ca = pki.KeyPair(new["certificate"].encode(), new["private_key"].encode())
    pki.verify_chain(new_ca, renewed)  # of the new CA, with its own key
    compute.begin_ca_phase(2)  # again: the renewed certificate is kept
    assert client_secret("cert") == renewed.cert_pem.decode()
    assert _certs(client_secret("ca")) == [aws.ca.cert_pem.decode(), new["certificate"]]
    compute.finish_ca_phase(2)
    compute.begin_ca_phase(3)
    assert client_secret("ca") == new["certificate"]


def test_a_ca_rotation_on_ec2_leaves_client_tls_secrets_it_does_not_find_alone(aws: Aws) -> None:
    compute = aws.provider()
    compute.launch("m1")
    for phase in (1, 2, 3):
        compute.begin_ca_phase(phase)
        compute.finish_ca_phase(phase)
    names = [s["Name"] for s in aws.secrets.list_secrets()["SecretList"]]
    assert not [n for n in names if "/client/" in n]


def test_a_ca_rotation_on_ec2_reads_a_pem_ca_secret_and_refuses_an_unreadable_record(aws: Aws) -> None:
    compute = aws.provider()
    ca_id = f"etcdops/{CLUSTER}/ca"
    aws.secrets.put_secret_value(SecretId=ca_id, SecretString=(aws.ca.cert_pem + aws.ca.key_pem).decode())
    assert compute.ca_rotation() == {"begun": 0, "finished": 0}  # both PEM blocks in one text: none under way
    compute.begin_ca_phase(1)  # recorded as JSON with the same CA
    assert _ca_secret(aws, "ca") == {
        "certificate": aws.ca.cert_pem.decode(),
        "private_key": aws.ca.key_pem.decode(),
        "rotation": {"begun": 1, "finished": 0},
    }
    for bad in ("phase one", {"begun": "one"}):
        value = json.dumps({**_ca_secret(aws, "ca"), "rotation": bad})
        aws.secrets.put_secret_value(SecretId=ca_id, SecretString=value)
        with pytest.raises(ComputeConfigError, match="unreadable CA rotation record"):
            compute.ca_rotation()
        with pytest.raises(ComputeConfigError, match="unreadable CA rotation record"):
            compute.begin_ca_phase(2)  # refused, not overwritten
        assert aws.secrets.get_secret_value(SecretId=ca_id)["SecretString"] == value


def test_a_ca_rotation_on_ec2_keeps_the_issued_clients_working_in_their_secrets(aws: Aws) -> None:
    """pki issue-client's secrets follow the trust of every phase, and phase 2 reissues their certificate from
    the new CA in place; pki list shows the next and old CA with the recorded phase."""
    from etcdops.adapters.pki_store import SecretsPki
    from etcdops.app.pki import issue_client

    compute = aws.provider()
    compute.launch("m1")
    store = SecretsPki(aws.secrets, CLUSTER)
    issue_client(store, "kube-apiserver", days=90)
    old = _ca_secret(aws, "clients/kube-apiserver")

    compute.begin_ca_phase(1)
    new_ca = _ca_secret(aws, "ca-next")
    client = _ca_secret(aws, "clients/kube-apiserver")
    assert _certs(client["ca"]) == [aws.ca.cert_pem.decode(), new_ca["certificate"]]  # both trusted
    assert (client["certificate"], client["private_key"]) == (old["certificate"], old["private_key"])
    listed = {c.role: c for c in store.certificates()}
    assert listed["ca-next"].rotation == listed["ca"].rotation == {"begun": 1, "finished": 0}
    compute.finish_ca_phase(1)

    compute.begin_ca_phase(2)
    reissued = _ca_secret(aws, "clients/kube-apiserver")
    pair = pki.KeyPair(reissued["certificate"].encode(), reissued["private_key"].encode())
    pki.verify_chain(pki.KeyPair(new_ca["certificate"].encode(), new_ca["private_key"].encode()), pair)
    assert pair.certificate.subject.rfc4514_string() == "CN=kube-apiserver" and reissued["client"] == "kube-apiserver"
    compute.begin_ca_phase(2)  # again: the reissued certificate is kept
    assert _ca_secret(aws, "clients/kube-apiserver") == reissued
    assert {c.role for c in store.certificates()} == {"ca", "ca-next", "ca-old", "member", "client"}
    compute.finish_ca_phase(2)

    compute.begin_ca_phase(3)
    assert _ca_secret(aws, "clients/kube-apiserver") == {**reissued, "ca": new_ca["certificate"]}
    compute.finish_ca_phase(3)
    assert [(c.role, c.rotation) for c in store.certificates() if c.role.startswith("ca")] == [("ca", None)]


def test_the_ca_rotation_sends_only_documented_host_commands_with_parameters_the_contract_allows(
    aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CA rotation's phases on EC2, through the runbook's own RollMember (probe and member list
    stand-ins: every other member healthy, the rolled one not leading): each host command is a document of
    docs/host-bootstrap.md (its CloudFormation block), sent to the member's own instance, with only declared
    parameters, every required one, each value matching its allowedPattern; phases 1 and 3 have the host
    fetch the trust bundle before etcd stops and starts again, phase 2 renews its leaf only."""
    from contextlib import nullcontext
    from datetime import UTC, datetime
    from types import SimpleNamespace

    from builders import cluster, member
    from test_compute_contract import documented

    from etcdops.app import runbook
    from etcdops.app.runbook import rotate_ca

    compute = aws.provider()
    sent = _sent_commands(aws)
    hosts = {name: compute.launch(name) for name in ("m1", "m2", "m3")}
    ids = {"m1": 1, "m2": 2, "m3": 3}
    listed = [SimpleNamespace(name=n, peer_urls=[h.peer_url]) for n, h in hosts.items()]
    ctx = SimpleNamespace(
        compute=compute,
        client=lambda: nullcontext(SimpleNamespace(member_list=lambda: listed)),
        now=lambda: datetime.now(UTC),
    )
    healthy = cluster(*(member(i, n) for n, i in ids.items()), leader=1)
    monkeypatch.setattr(runbook, "probe", lambda ctx: healthy)
    contract = documented()

    by_phase: dict[int, list[tuple[str, str]]] = {}
    for phase in (1, 2, 3):
        compute.begin_ca_phase(phase)
        start = len(sent)
        for name in ("m2", "m3"):  # followers (the leader's hand-over is the probe's, not the host's)
            doc = {"ca_phase": phase, "current": {"name": name, "id": f"{ids[name]:x}"}, "to_roll": list(ids)}
            rotate_ca.roll_member(ctx, doc)  # type: ignore[arg-type]
        by_phase[phase] = [(c["DocumentName"].removeprefix(f"{STACK}-"), c["InstanceIds"][0]) for c in sent[start:]]
        compute.finish_ca_phase(phase)

    roll = ["RenewCertificates", "StopEtcd", "StartEtcd"]
    for phase in (1, 3):
        assert by_phase[phase] == [(d, hosts[n].host_id) for n in ("m2", "m3") for d in roll], by_phase
    assert by_phase[2] == [("RenewCertificates", hosts[n].host_id) for n in ("m2", "m3")]
    for command in sent:
        key = command["DocumentName"].removeprefix(f"{STACK}-")
        declared = contract[key]["Properties"]["Content"].get("parameters", {})
        given = {p: v[0] if isinstance(v, list) else v for p, v in command.get("Parameters", {}).items()}
        assert set(given) <= set(declared), (key, given)
        assert {p for p, d in declared.items() if "default" not in d} <= set(given), (key, given)
        for parameter, value in given.items():
            assert re.fullmatch(declared[parameter]["allowedPattern"], value), (key, parameter, value)
        if key == "StartEtcd":
            assert given["InitialClusterState"] == "existing"
            assert f"m1={hosts['m1'].peer_url}" in given["InitialCluster"]


# ---- restoring a whole cluster from one member's EBS volume backup ---------------------------------


def test_a_restore_gets_a_volume_of_the_snapshot_in_each_hosts_zone_attached_and_removes_them(aws: Aws) -> None:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ec2.models import ec2_backends

    from etcdops_local.aws.ec2 import strict_compute

    compute = aws.provider()
    compute.poll_seconds = 0
    with strict_compute():
        # Given two new hosts in two zones and a volume backup of the cluster (a snapshot tagged as one)
        hosts = [compute.launch("m1-s1"), compute.launch("m2-s1")]
        zones = [aws.instance(h.host_id)["Placement"]["AvailabilityZone"] for h in hosts]
        assert zones == [f"{REGION}a", f"{REGION}b"]
        data = aws.ec2.create_volume(Size=20, AvailabilityZone=f"{REGION}a")["VolumeId"]
        snapshot = aws.ec2.create_snapshot(VolumeId=data)["SnapshotId"]
        aws.ec2.create_tags(Resources=[snapshot], Tags=[{"Key": "etcdops:cluster", "Value": CLUSTER},
                                                       {"Key": "etcdops:kind", "Value": "volume"}])  # fmt: skip
        assert compute.volume_snapshot_problem(snapshot) is None

        # When each host gets its volume (and a retry asks again for the first)
        uris = [compute.attach_snapshot_volume(h, snapshot, "restore-x1") for h in hosts]
        assert compute.attach_snapshot_volume(hosts[0], snapshot, "restore-x1") == uris[0]

        # Then each is a new volume from the snapshot in its host's zone, attached to it and tagged for the restore
        made = aws.ec2.describe_volumes(Filters=[{"Name": "tag:etcdops:restore", "Values": ["restore-x1"]}])["Volumes"]
        by_id = {v["VolumeId"]: v for v in made}
        assert sorted(uris) == sorted(f"ebs://{v}" for v in by_id) and len(made) == 2
        for host, zone, uri in zip(hosts, zones, uris, strict=True):
            volume = by_id[uri.removeprefix("ebs://")]
            assert volume["SnapshotId"] == snapshot and volume["AvailabilityZone"] == zone
            assert [a["InstanceId"] for a in volume["Attachments"]] == [host.host_id]
            assert {"Key": "etcdops:member", "Value": host.name} in volume["Tags"]
        # the emulator, as EC2, makes no volume of a snapshot that is not there, and never attaches a volume
        # to an instance of another zone
        with pytest.raises(ClientError, match=r"InvalidSnapshot\.NotFound"):
            aws.ec2.create_volume(AvailabilityZone=zones[0], SnapshotId="snap-0123456789abcdef0")
        with pytest.raises(ClientError, match="ZoneMismatch"):
            aws.ec2.attach_volume(VolumeId=data, InstanceId=hosts[1].host_id, Device="/dev/sdz")

        # and the clean-up (the restore's, or its Catch path's) detaches and deletes exactly those, again a no-op
        assert sorted(compute.remove_snapshot_volumes("restore-x1")) == sorted(by_id)
        assert compute.remove_snapshot_volumes("restore-x1") == []
        left = {v["VolumeId"] for v in aws.ec2.describe_volumes()["Volumes"]}
        assert data in left and not set(by_id) & left

        # A snapshot that is missing, still pending or not this cluster's volume backup is refused by name
        other = aws.ec2.create_snapshot(VolumeId=data)["SnapshotId"]
        ec2_backends[DEFAULT_ACCOUNT_ID][REGION].snapshots[snapshot].status = "pending"
        for snap, why in (("snap-0123456789abcdef0", "does not exist"), (snapshot, "is pending"),
                          (other, "not a volume backup of cluster prod")):  # fmt: skip
            assert why in (compute.volume_snapshot_problem(snap) or "")
            with pytest.raises(ComputeConfigError, match=why):
                compute.attach_snapshot_volume(hosts[0], snap, "restore-x2")
        made_now = aws.ec2.describe_volumes(Filters=[{"Name": "tag:etcdops:restore", "Values": ["restore-x2"]}])
        assert made_now["Volumes"] == []

        # A role that may not make the volume is found out by the check's dry run, before anything is stopped
        ec2_backends[DEFAULT_ACCOUNT_ID][REGION].snapshots[snapshot].status = "completed"
        dry_runs: list[bool] = []

        def refused(params: dict[str, Any], **_: Any) -> None:
            dry_runs.append(params.get("DryRun", False))
            raise ClientError({"Error": {"Code": "UnauthorizedOperation", "Message": "no"}}, "CreateVolume")

        aws.ec2.meta.events.register("provide-client-params.ec2.CreateVolume", refused)
        assert "ec2:CreateVolume refused: UnauthorizedOperation" in (compute.volume_snapshot_problem(snapshot) or "")
        assert dry_runs == [True]


def test_restore_cluster_from_an_ebs_volume_backup_restores_every_new_host_from_its_own_volume(
    aws: Aws, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dataclasses import replace
    from datetime import UTC, datetime

    from etcdops.adapters.aws import MemoryNotifier
    from etcdops.adapters.backup.keys import local_key_provider
    from etcdops.adapters.backup.store import FileStore
    from etcdops.adapters.state_memory import InMemoryStateStore
    from etcdops.app.backup.catalogue import record_volume
    from etcdops.app.runbook import restore, restore_validate
    from etcdops.domain.backup.errors import BackupNotFoundError
    from etcdops.domain.backup.manifest import VolumeSnapshotRecord

    # Given a cluster of three hosts on EC2 and a volume backup of m2's data volume (an EBS snapshot)
    compute = aws.provider()
    compute.poll_seconds = 0
    old = [compute.launch(name) for name in ("m1", "m2", "m3")]
    zone = aws.instance(old[1].host_id)["Placement"]["AvailabilityZone"]
    data = aws.ec2.create_volume(Size=20, AvailabilityZone=zone)["VolumeId"]
    aws.ec2.attach_volume(VolumeId=data, InstanceId=old[1].host_id, Device="/dev/sdf")
    tags = {"etcdops:kind": "volume", "etcdops:backup-id": "20261207T034500Z-0b0b0b", "etcdops:revision": "4242"}
    [snapshot] = compute.snapshot_volume(old[1], tags, str(tmp_path)).snapshot_ids
    store = FileStore(tmp_path / "store")
    record = VolumeSnapshotRecord(
        id="20261207T034500Z-0b0b0b", cluster_name=CLUSTER, cluster_id="c1", member_id="2", member_name="m2",
        etcd_version="3.5.30", created_at=datetime(2026, 12, 7, 3, 45, tzinfo=UTC),
        volume={"provider": "ec2", "revision_observed": 4242, "snapshot_ids": [snapshot]},
    )  # fmt: skip
    record_volume(store, record)
    config = parse_config(
        {"name": CLUSTER, "endpoints": ["https://10.0.1.10:2379"], "tls": {"ca": "/ca.crt"},
         "compute": {"provider": "ec2", "launch_template": aws.template, "subnets": aws.subnets}}
    )  # fmt: skip
    keyring = local_key_provider(tmp_path / "k", create=True)
    ctx = restore.RestoreContext(
        config=config, client=None, compute=compute, state=InMemoryStateStore(),  # type: ignore[arg-type]
        notifier=MemoryNotifier(), backup_target=lambda: (store, keyring), config_stores=[],
    )  # fmt: skip
    monkeypatch.setattr(restore_validate, "_live_cluster_id", lambda ctx, urls: "c1")  # no etcd answers in this test

    # When RestoreCluster is asked for it onto new hosts: its checks, then the hosts, then their data directories
    doc = restore.acquire_lock(ctx, {"cluster": CLUSTER, "execution": "restore-x1", "backup_id": record.id,
                                     "mode": "new-hosts"})  # fmt: skip
    doc = restore.validate_backup(ctx, doc)
    assert doc["volume_source"] == {"snapshot_id": snapshot, "member": "m2"} and doc["backup_revision"] == 4242
    assert "VOLUME BACKUP" in doc["approval_summary"] and "--skip-hash-check" in doc["approval_summary"]
    doc = restore.run_step(ctx, "LaunchHosts", doc)
    # (a RestoreMembers that died after making its first volume leaves it to the Catch path, which removes it)
    first = compute.find(doc["targets"][0]["name"])
    assert first is not None
    left = compute.attach_snapshot_volume(first, snapshot, "restore-x1").removeprefix("ebs://")
    assert restore.run_step(ctx, "RemoveStagedSnapshot", doc)["volumes_removed"] == [left]
    sent, created, attached = _sent_commands(aws), {}, {}
    aws.ec2.meta.events.register(
        "after-call.ec2.CreateVolume",
        lambda parsed, **_: "VolumeId" in parsed and created.update({parsed["VolumeId"]: parsed}),
    )
    aws.ec2.meta.events.register(
        "provide-client-params.ec2.AttachVolume", lambda params, **_: attached.update({params["VolumeId"]: params})
    )
    doc = restore.run_step(ctx, "RestoreMembers", doc)
    made = {v: (c["SnapshotId"], c["AvailabilityZone"], attached[v]["InstanceId"]) for v, c in created.items()}

    # Then each new host restored from a volume of the snapshot made in its own zone (sent as ebs://<volume>,
    # without a sha256: the copy has none), and those volumes are gone again; no plaintext was staged
    assert {c["DocumentName"] for c in sent} == {f"{STACK}-RestoreDataDir"} and len(sent) == 3
    zones = {t["host_id"]: aws.instance(t["host_id"])["Placement"]["AvailabilityZone"] for t in doc["targets"]}
    for command in sent:
        [host_id] = command["InstanceIds"]
        volume = command["Parameters"]["SnapshotUri"][0].removeprefix("ebs://")
        assert command["Parameters"]["SnapshotSha256"] == [""]
        assert volume in made and made[volume] == (snapshot, zones[host_id], host_id)
    assert sorted(zones) == sorted(c["InstanceIds"][0] for c in sent)
    assert len(doc["volumes_removed"]) == 3 and "staged" not in doc
    assert (
        aws.ec2.describe_volumes(Filters=[{"Name": "tag:etcdops:restore", "Values": ["restore-x1"]}])["Volumes"] == []
    )
    assert store.list("restore/") == []

    # A volume backup whose snapshot is gone is refused before anything is stopped or launched
    compute.delete_volume_snapshots([snapshot])
    later = replace(ctx, state=InMemoryStateStore())  # after the first restore ended
    again = restore.acquire_lock(later, {"cluster": CLUSTER, "execution": "restore-x2", "backup_id": record.id})
    with pytest.raises(BackupNotFoundError, match=f"snapshot {snapshot} does not exist"):
        restore.validate_backup(later, again)
