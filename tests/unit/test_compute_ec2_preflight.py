"""The EC2 provider's preflight on moto made as strict as AWS (etcdops_local.aws.ec2): one test per finding.

Given an account where everything a runbook needs is in place, each test takes one thing away and
checks that the preflight names it, says how to fix it, and changes nothing.
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
from moto.core.authorization import enable_iam_authentication
from test_compute_ec2 import CLUSTER, REGION, STACK, Aws, aws, ca  # noqa: F401 - the account fixtures

from etcdops.adapters import pki
from etcdops.adapters.compute.ec2 import Ec2ComputeProvider
from etcdops.domain.compute.base import DOCUMENTS, PreflightPlan
from etcdops.domain.compute.errors import ComputeApiError
from etcdops.domain.config import Ec2Compute
from etcdops.domain.findings import Finding, describe_findings
from etcdops_local.aws.ec2 import strict_compute

REPLACE = PreflightPlan(launch=("m2-r1",), documents=("StartEtcd",), repoint=True, retire=("m2",))
RESTORE = PreflightPlan(documents=tuple(DOCUMENTS), commanded=("m1", "m2"), control_plane=True, repoint=True)


@dataclass
class Account:
    aws: Aws
    image: str
    template: str = ""  # a launch template with an AMI and the host role's instance profile

    def provider(self, **settings: Any) -> Ec2ComputeProvider:
        return self.aws.provider(**{"launch_template": self.template, **settings})

    def role(self, name: str) -> str:
        return host_instance_profile(boto3.client("iam", region_name=REGION), name)

    def launch_template(self, name: str, **data: Any) -> str:
        return str(
            self.aws.ec2.create_launch_template(
                LaunchTemplateName=name,
                LaunchTemplateData={"ImageId": self.image, "InstanceType": "t3.small", **data},
            )["LaunchTemplate"]["LaunchTemplateId"]
        )

    def document(self, key: str, *, drop: str | None = None) -> None:
        spec = DOCUMENTS[key]
        parameters = {p.ssm_name: {"type": "String"} for p in spec.parameters if p.ssm_name != drop}
        content = {
            "schemaVersion": "2.2",
            "description": spec.description,
            "parameters": parameters,
            "mainSteps": [{"action": "aws:runShellScript", "name": "run", "inputs": {"runCommand": ["true"]}}],
        }
        self.aws.ssm.create_document(
            Name=spec.default_name(STACK), Content=json.dumps(content), DocumentType="Command", DocumentFormat="JSON"
        )

    def snapshot(self) -> dict[str, Any]:
        """What a preflight must leave as it was: instances, secrets, commands, targets."""
        instances = self.aws.ec2.describe_instances()["Reservations"]
        return {
            "instances": sorted((i["InstanceId"], i["State"]["Name"]) for r in instances for i in r["Instances"]),
            "secrets": sorted(s["Name"] for s in self.aws.secrets.list_secrets()["SecretList"]),
            "commands": len(self.aws.commands()),
            "targets": self.aws.elbv2.describe_target_health(TargetGroupArn=self.aws.target_group)[
                "TargetHealthDescriptions"
            ],
        }


@pytest.fixture
def account(aws: Aws) -> Iterator[Account]:  # noqa: F811 - the fixture imported above
    with strict_compute():
        account = Account(aws, aws.image)
        profile = account.role("etcdops-host")
        account.template = account.launch_template("etcdops-member", IamInstanceProfile={"Name": profile})
        for key in DOCUMENTS:
            account.document(key)
        compute = account.provider()
        for name in ("m1", "m2", "m3"):
            compute.launch(name)
        aws.ec2.run_instances(
            ImageId=account.image,
            MinCount=1,
            MaxCount=1,
            SubnetId=aws.subnets[0],
            IamInstanceProfile={"Name": profile},
            TagSpecifications=[
                {"ResourceType": "instance", "Tags": [{"Key": "etcdops:control-plane", "Value": CLUSTER}]}
            ],
        )
        yield account


def only(findings: list[Finding], check: str) -> Finding:
    assert [f.check for f in findings] == [check], describe_findings(findings)
    return findings[0]


# ---- everything in place --------------------------------------------------------------------------


def test_an_account_with_everything_in_place_has_no_findings_and_nothing_changes(account: Account) -> None:
    compute = account.provider()
    before = account.snapshot()

    assert compute.preflight(REPLACE) == []
    assert compute.preflight(RESTORE) == []
    assert compute.preflight(PreflightPlan(launch=("m1-s1", "m2-s1"), documents=tuple(DOCUMENTS))) == []

    assert account.snapshot() == before  # dry runs and reads only


# ---- the CA ---------------------------------------------------------------------------------------


def test_a_missing_ca_secret_is_found(account: Account) -> None:
    account.aws.secrets.delete_secret(SecretId=f"etcdops/{CLUSTER}/ca", ForceDeleteWithoutRecovery=True)

    finding = only(account.provider().preflight(REPLACE), "ca")

    assert finding.subject == f"secret etcdops/{CLUSTER}/ca" and "does not exist" in finding.problem
    assert '"private_key"' in finding.fix


def test_a_ca_secret_holding_only_the_certificate_is_found(account: Account) -> None:
    """What the README used to say: ca.crt alone in etcdops/<cluster>/ca."""
    account.aws.secrets.put_secret_value(
        SecretId=f"etcdops/{CLUSTER}/ca", SecretString=account.aws.ca.cert_pem.decode()
    )

    finding = only(account.provider().preflight(REPLACE), "ca")

    assert "no private key" in finding.problem


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (lambda authority, other: json.dumps({"certificate": authority.cert_pem.decode()}), "no private_key field"),
        (
            lambda authority, other: json.dumps(
                {"certificate": authority.cert_pem.decode(), "private_key": other.key_pem.decode()}
            ),
            "private key does not belong",
        ),
        (
            lambda authority, other: json.dumps(
                {
                    "certificate": pki.issue_certificate(authority, "leaf", kind="peer").cert_pem.decode(),
                    "private_key": authority.key_pem.decode(),
                }
            ),
            "is not a CA certificate",
        ),
        (lambda authority, other: "not a certificate", "holds no PEM certificate"),
    ],
)
def test_a_ca_secret_that_cannot_sign_is_found(account: Account, value: Any, says: str) -> None:
    other = pki.create_ca("another CA")
    account.aws.secrets.put_secret_value(SecretId=f"etcdops/{CLUSTER}/ca", SecretString=value(account.aws.ca, other))

    finding = only(account.provider().preflight(REPLACE), "ca")

    assert says in finding.problem


def test_a_ca_stored_as_both_pem_blocks_is_accepted(account: Account) -> None:
    authority = account.aws.ca
    account.aws.secrets.put_secret_value(
        SecretId=f"etcdops/{CLUSTER}/ca", SecretString=(authority.key_pem + authority.cert_pem).decode()
    )

    assert account.provider().preflight(REPLACE) == []


# ---- the launch ---------------------------------------------------------------------------------


@pytest.mark.parametrize("template", ["lt-0123456789abcdef0", "no-such-template"])
def test_a_launch_template_that_does_not_exist_is_found(account: Account, template: str) -> None:
    finding = only(account.provider(launch_template=template).preflight(REPLACE), "launch-template")

    assert finding.subject == f"launch template {template}" and "does not exist" in finding.problem
    assert "compute.launch_template" in finding.fix


def test_a_launch_template_hosts_could_not_work_from_is_found(account: Account) -> None:
    template = account.launch_template(
        "no-profile", NetworkInterfaces=[{"DeviceIndex": 0, "SubnetId": account.aws.subnets[0]}]
    )

    findings = account.provider(launch_template=template).preflight(REPLACE)

    problems = " ".join(f.problem for f in findings)
    assert {f.check for f in findings} >= {"launch-template"}
    assert "no instance profile" in problems and "network interfaces" in problems


def test_a_subnet_that_does_not_exist_is_found(account: Account) -> None:
    subnets = [account.aws.subnets[0], "subnet-0123456789abcdef0"]

    finding = only(account.provider(subnets=subnets).preflight(REPLACE), "subnet")

    assert finding.subject == "subnet subnet-0123456789abcdef0" and "compute.subnets" in finding.fix


def test_an_ami_that_does_not_exist_fails_the_dry_run(account: Account) -> None:
    template = account.launch_template(
        "gone-ami", ImageId="ami-0123456789abcdef0", IamInstanceProfile={"Name": "etcdops-host"}
    )

    finding = only(account.provider(launch_template=template).preflight(REPLACE), "launch")

    assert "InvalidAMIID.NotFound" in finding.problem


RUNBOOK_STEP_POLICY = {
    "Version": "2012-10-17",
    "Statement": [  # what template.yaml gives RunbookStep for launching: PassRole on etcdops-* roles only
        {
            "Effect": "Allow",
            "Action": ["ec2:*", "ssm:*", "secretsmanager:*", "elasticloadbalancing:*"],
            "Resource": "*",
        },
        {"Effect": "Allow", "Action": "iam:PassRole", "Resource": "arn:aws:iam::123456789012:role/etcdops-*"},
    ],
}


@pytest.mark.parametrize(("role", "allowed"), [("etcd-host", False), ("etcdops-member-host", True)])
def test_pass_role_is_checked_by_the_dry_run_with_the_callers_policy(
    account: Account, role: str, allowed: bool
) -> None:
    # Given a host role outside (or inside) the PassRole scope, and clients with RunbookStep's permissions
    profile = account.role(role)
    template = account.launch_template(f"tpl-{role}", IamInstanceProfile={"Name": profile})
    iam = boto3.client("iam", region_name=REGION)
    iam.create_user(UserName="runbook-step")
    iam.put_user_policy(UserName="runbook-step", PolicyName="p", PolicyDocument=json.dumps(RUNBOOK_STEP_POLICY))
    key = iam.create_access_key(UserName="runbook-step")["AccessKey"]
    session = boto3.Session(
        aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"], region_name=REGION
    )
    settings = Ec2Compute(
        launch_template=template, subnets=account.aws.subnets, target_group_arn=account.aws.target_group
    )
    compute = Ec2ComputeProvider(
        CLUSTER,
        settings,
        stack_name=STACK,
        ec2=session.client("ec2"),
        elbv2=session.client("elbv2"),
        ssm=session.client("ssm"),
        secretsmanager=session.client("secretsmanager"),
        cloudwatch=session.client("cloudwatch"),
    )

    # When the preflight runs with IAM enforced
    with enable_iam_authentication():
        findings = compute.preflight(REPLACE)

    # Then a role outside the scope is found, with the naming rule as the fix
    if allowed:
        assert findings == []
    else:
        finding = only(findings, "launch")
        assert "UnauthorizedOperation" in finding.problem and f"role/{role}" in finding.problem
        assert "etcdops-" in finding.fix and profile in finding.fix


# ---- host commands, hosts, control plane ----------------------------------------------------------


def test_a_missing_document_and_one_of_another_contract_are_found(account: Account) -> None:
    account.aws.ssm.delete_document(Name=f"{STACK}-StartEtcd")
    account.aws.ssm.delete_document(Name=f"{STACK}-RestoreDataDir")
    account.document("RestoreDataDir", drop="OldDataSuffix")

    findings = account.provider().preflight(RESTORE)

    assert [f.subject for f in findings] == [f"SSM document {STACK}-StartEtcd", f"SSM document {STACK}-RestoreDataDir"]
    assert "does not exist" in findings[0].problem and "OldDataSuffix" in findings[1].problem


def test_a_ca_rotation_stops_at_its_preflight_before_any_secret_changes(
    account: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Invariant 13: CheckCa runs the preflight of what the phases send (RenewCertificates, StopEtcd,
    StartEtcd on every member) before the first phase creates a CA."""
    from types import SimpleNamespace

    from etcdops.app.runbook import PreflightFailedError, rotate_ca

    account.aws.ssm.delete_document(Name=f"{STACK}-RenewCertificates")
    monkeypatch.setattr(rotate_ca, "probe", lambda ctx: None)  # the cluster's health is not the point here
    monkeypatch.setattr(rotate_ca, "refusals", lambda health: [])
    before = account.snapshot()

    with pytest.raises(PreflightFailedError, match=f"SSM document {STACK}-RenewCertificates"):
        rotate_ca.check_ca(SimpleNamespace(compute=account.provider()), {"cluster": CLUSTER})  # type: ignore[arg-type]

    assert account.snapshot() == before


def test_documents_named_in_the_config_are_the_ones_checked(account: Account) -> None:
    compute = account.provider(ssm_documents={"StartEtcd": "prod-StartEtcd"})

    finding = only(compute.preflight(REPLACE), "host-command")

    assert finding.subject == "SSM document prod-StartEtcd" and "compute.ssm_documents.StartEtcd" in finding.fix


def test_hosts_that_cannot_take_commands_are_found(account: Account) -> None:
    compute = account.provider()
    stopped = compute.find("m1")
    assert stopped is not None
    account.aws.ec2.stop_instances(InstanceIds=[stopped.host_id])

    findings = compute.preflight(PreflightPlan(documents=("StopEtcd",), commanded=("m1", "m2", "m9")))

    assert [(f.check, f.subject) for f in findings] == [
        ("host", "member host m9"),
        ("host", f"instance {stopped.host_id} (m1)"),
    ]
    assert "ConnectionLost" in findings[1].problem


def test_a_host_without_an_instance_profile_is_not_registered_with_ssm(account: Account) -> None:
    tags = [{"Key": "etcdops:cluster", "Value": CLUSTER}, {"Key": "etcdops:member", "Value": "m7"}]
    account.aws.ec2.run_instances(
        ImageId=account.image, MinCount=1, MaxCount=1, TagSpecifications=[{"ResourceType": "instance", "Tags": tags}]
    )

    finding = only(account.provider().preflight(PreflightPlan(commanded=("m7",))), "host")

    assert "not registered with SSM" in finding.problem and "AmazonSSMManagedInstanceCore" in finding.fix


def test_a_restore_without_control_plane_instances_is_found(account: Account) -> None:
    reservations = account.aws.ec2.describe_instances(
        Filters=[{"Name": "tag:etcdops:control-plane", "Values": [CLUSTER]}]
    )["Reservations"]
    account.aws.ec2.terminate_instances(InstanceIds=[i["InstanceId"] for r in reservations for i in r["Instances"]])

    finding = only(account.provider().preflight(RESTORE), "control-plane")

    assert f"etcdops:control-plane={CLUSTER}" in finding.fix


# ---- the target group ---------------------------------------------------------------------------


def test_a_target_group_that_is_gone_or_takes_ip_addresses_is_found(account: Account) -> None:
    gone = account.aws.target_group.rsplit("/", 1)[0] + "/0123456789abcdef"
    by_ip = account.aws.elbv2.create_target_group(
        Name="by-ip", Protocol="TCP", Port=2379, VpcId=account.aws.vpc, TargetType="ip"
    )["TargetGroups"][0]["TargetGroupArn"]

    missing = only(account.provider(target_group_arn=gone).preflight(REPLACE), "target-group")
    wrong = only(account.provider(target_group_arn=by_ip).preflight(REPLACE), "target-group")

    assert "does not exist" in missing.problem and "type ip" in wrong.problem


# ---- all at once, and what is not a finding ------------------------------------------------------


def test_every_finding_is_reported_not_only_the_first(account: Account) -> None:
    account.aws.secrets.put_secret_value(
        SecretId=f"etcdops/{CLUSTER}/ca", SecretString=account.aws.ca.cert_pem.decode()
    )
    account.aws.ssm.delete_document(Name=f"{STACK}-StartEtcd")
    before = account.snapshot()

    findings = account.provider(launch_template="no-such-template").preflight(REPLACE)

    assert [f.check for f in findings] == ["ca", "launch-template", "host-command"]
    text = describe_findings(findings)
    assert text.splitlines()[0].startswith("1. [ca] secret etcdops/prod/ca:") and text.count("Fix:") == 3
    assert account.snapshot() == before


class Throttled:
    """An EC2 client that throttles one operation and passes the others through."""

    def __init__(self, client: Any, operation: str) -> None:
        self.client, self.operation = client, operation

    def __getattr__(self, name: str) -> Any:
        if name == self.operation:

            def throttled(**_: Any) -> Any:
                raise ClientError({"Error": {"Code": "RequestLimitExceeded", "Message": "slow down"}}, name)

            return throttled
        return getattr(self.client, name)


@pytest.mark.parametrize("operation", ["describe_launch_template_versions", "run_instances"])
def test_throttling_is_not_a_finding_but_a_retryable_error(account: Account, operation: str) -> None:
    compute = account.provider()
    compute.ec2 = Throttled(account.aws.ec2, operation)

    with pytest.raises(ComputeApiError) as raised:
        compute.preflight(REPLACE)

    assert raised.value.retryable and "RequestLimitExceeded" in str(raised.value)
