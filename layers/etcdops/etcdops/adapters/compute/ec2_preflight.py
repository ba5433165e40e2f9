"""The EC2 provider's preflight: can the runbook launch, command, repoint and retire what it plans to?

Read-only calls and dry runs only. Each check asks the service that will later do the work, with the
same parameters:

- **CA**: the secret ``etcdops/<cluster>/ca`` is readable and holds a CA certificate and its key, valid now;
- **launch template**: it exists, and its default version has an AMI and an instance profile (the host
  reads its certificate secret and registers with SSM with that role) and no network interfaces (etcdops
  sets the subnet);
- **subnets**: every configured subnet exists;
- **launch**: ``RunInstances`` with ``DryRun`` and exactly the request ``launch`` will send. AWS
  authorizes a dry run like the real call, including ``iam:PassRole`` on the instance profile's role, so
  a role outside the RunbookStep role's PassRole scope (``role/etcdops-*``) is found here;
- **host commands**: every SSM document the runbook sends exists, is a Command document and declares
  every parameter etcdops passes;
- **hosts**: every host the runbook commands is online in SSM (``DescribeInstanceInformation``);
- **control plane**: for the Kubernetes hooks, running control-plane instances exist and are online;
- **target group**: it exists and takes instances;
- **retire**: ``TerminateInstances`` with ``DryRun`` on each host the runbook will retire.

Throttling and network errors raise :class:`ComputeApiError` (retryable): a check that could not be
made is not a finding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from etcdops.adapters.awserrors import aws_error_code, aws_error_message, is_transient
from etcdops.adapters.compute.ec2 import (
    _DENIED_CODES,
    CONTROL_PLANE_TAG,
    Ec2ComputeProvider,
    _api_error,
)
from etcdops.domain.compute.base import DOCUMENTS, Host, PreflightPlan
from etcdops.domain.compute.errors import CertificateAuthorityError, ComputeApiError
from etcdops.domain.findings import Check, Finding

_DRY_RUN_OK = "DryRunOperation"
_PASS_ROLE_FIX = (
    "give the RunbookStep role ec2:RunInstances and ec2:CreateTags, and iam:PassRole on the role of the "
    "launch template's instance profile: the template allows PassRole on role/etcdops-* only, so name the "
    'host role etcdops-<something> (see README "Deploying to AWS")'
)


def preflight(provider: Ec2ComputeProvider, plan: PreflightPlan) -> list[Finding]:
    checks = _Checks(provider)
    if plan.launch or "RenewCertificates" in plan.documents:  # both issue certificates from the CA
        checks.ca()
    if plan.launch:
        template = checks.launch_template()
        subnets_ok = checks.subnets()
        if template is not None and subnets_ok:
            checks.dry_run_launch(plan.launch[0], template)
    if plan.documents:
        checks.documents(plan.documents)
    if plan.commanded:
        checks.hosts_online(checks.hosts(plan.commanded, "will send it host commands"))
    if plan.control_plane:
        checks.control_plane()
    if plan.repoint and provider.settings.target_group_arn:
        checks.target_group(provider.settings.target_group_arn)
    if plan.retire:
        checks.dry_run_terminate(plan.retire)
    return checks.findings


class _Checks:
    def __init__(self, provider: Ec2ComputeProvider) -> None:
        self.provider = provider
        self.findings: list[Finding] = []

    def add(self, check: Check, subject: str, problem: str, fix: str) -> None:
        self.findings.append(Finding(check, subject, problem, fix))

    def call(
        self, check: Check, subject: str, action: str, call: Callable[[], Any], *, fix: str = ""
    ) -> tuple[Any, str]:
        """(response, "") or (None, error code); a refusal is a finding, a passing fault raises.

        ``fix`` overrides the default fix of a refused call ("allow <action> to the RunbookStep role").
        """
        try:
            return call(), ""
        except ClientError as exc:
            code = aws_error_code(exc)
            if code == _DRY_RUN_OK:
                return None, code
            if is_transient(exc):
                raise _api_error(f"preflight: {action} for {subject}", exc) from exc
            if code in _DENIED_CODES:
                self.add(
                    check,
                    subject,
                    f"AWS refused {action}: {code}: {_message(exc)}",
                    fix or f"allow {action} to the RunbookStep role (template.yaml).",
                )
            return None, code
        except BotoCoreError as exc:
            raise _api_error(f"preflight: {action} for {subject}", exc) from exc

    # ---- launching -----------------------------------------------------------------------

    def ca(self) -> None:
        try:
            self.provider.read_ca()
        except CertificateAuthorityError as exc:
            self.findings.append(exc.finding)

    def launch_template(self) -> dict[str, Any] | None:
        """The default version's data of the launch template, or None (with a finding)."""
        template = self.provider.settings.launch_template
        subject = f"launch template {template}"
        key = "LaunchTemplateId" if template.startswith("lt-") else "LaunchTemplateName"
        response, code = self.call(
            "launch-template",
            subject,
            "ec2:DescribeLaunchTemplateVersions",
            lambda: self.provider.ec2.describe_launch_template_versions(**{key: template}, Versions=["$Default"]),
        )
        if response is None:
            if code and code not in _DENIED_CODES:
                self.add(
                    "launch-template",
                    subject,
                    f"does not exist in {self.provider.region} ({code}).",
                    "create it, or set compute.launch_template to an existing template's name or id.",
                )
            return None
        versions = response.get("LaunchTemplateVersions") or []
        if not versions:
            self.add("launch-template", subject, "has no default version.", "set a default version of the template.")
            return None
        data: dict[str, Any] = dict(versions[0].get("LaunchTemplateData") or {})
        if not data.get("ImageId"):
            self.add(
                "launch-template",
                subject,
                "names no AMI (ImageId).",
                "set the AMI of the host image (docs/host-bootstrap.md: what the AMI must provide).",
            )
        if not data.get("IamInstanceProfile"):
            self.add(
                "launch-template",
                subject,
                "names no instance profile: a new host could neither read its certificate secret nor take "
                "SSM commands.",
                "set the instance profile of the host role (docs/host-bootstrap.md: the instance role).",
            )
        if data.get("NetworkInterfaces"):
            self.add(
                "launch-template",
                subject,
                "defines network interfaces; etcdops chooses the subnet, and EC2 refuses both in one launch.",
                "remove the network interfaces from the template; put security groups in SecurityGroupIds.",
            )
        return data

    def subnets(self) -> bool:
        ok = True
        for subnet in self.provider.settings.subnets:
            response, code = self.call(
                "subnet",
                f"subnet {subnet}",
                "ec2:DescribeSubnets",
                lambda subnet=subnet: self.provider.ec2.describe_subnets(SubnetIds=[subnet]),  # type: ignore[misc]
            )
            if response is None:
                ok = False
                if code not in _DENIED_CODES:
                    self.add(
                        "subnet",
                        f"subnet {subnet}",
                        f"does not exist in {self.provider.region} ({code}).",
                        "correct compute.subnets in the cluster configuration.",
                    )
        return ok

    def dry_run_launch(self, name: str, template: dict[str, Any]) -> None:
        request = {**self.provider.launch_request(name), "DryRun": True}
        subject = f"launching member {name} from launch template {self.provider.settings.launch_template}"
        profile = template.get("IamInstanceProfile") or {}
        profile_name = profile.get("Arn") or profile.get("Name") or "none"
        response, code = self.call(
            "launch",
            subject,
            "ec2:RunInstances (dry run)",
            lambda: self.provider.ec2.run_instances(**request),
            fix=f"{_PASS_ROLE_FIX}; the template's instance profile is {profile_name}.",
        )
        if code == _DRY_RUN_OK or code in _DENIED_CODES:
            return
        if response is not None:  # an emulator that ignored DryRun launched an instance: say so, loudly
            ids = [i.get("InstanceId") for i in response.get("Instances", [])]
            raise ComputeApiError(f"preflight: RunInstances ignored DryRun and launched {ids}")
        self.add(
            "launch",
            subject,
            f"EC2 refused the dry run of the launch: {code}.",
            "correct the launch template or compute.subnets so that the launch is valid (the error names the "
            "parameter).",
        )

    # ---- host commands -------------------------------------------------------------------

    def documents(self, keys: Sequence[str]) -> None:
        for key in dict.fromkeys(keys):
            spec = DOCUMENTS[key]
            name = self.provider.document_name(key)
            subject = f"SSM document {name}"
            response, code = self.call(
                "host-command",
                subject,
                "ssm:DescribeDocument",
                lambda name=name: self.provider.ssm.describe_document(Name=name),  # type: ignore[misc]
            )
            if response is None:
                if code not in _DENIED_CODES:
                    self.add(
                        "host-command",
                        subject,
                        f"does not exist ({code}); the runbook sends it: {spec.description}",
                        f"deploy the stack's {key}Document, or map compute.ssm_documents.{key} to the document "
                        "you use.",
                    )
                continue
            document = response.get("Document") or {}
            if document.get("DocumentType", "Command") != "Command":
                self.add(
                    "host-command",
                    subject,
                    f"is a {document.get('DocumentType')} document, not a Command document.",
                    f"point compute.ssm_documents.{key} at a Command document.",
                )
            declared = {p.get("Name") for p in document.get("Parameters") or []}
            missing = [p.ssm_name for p in spec.parameters if p.ssm_name not in declared]
            if missing:
                self.add(
                    "host-command",
                    subject,
                    f"does not declare the parameter(s) {', '.join(missing)} that etcdops passes.",
                    "update it to the document of docs/host-bootstrap.md (the stack creates it).",
                )

    def hosts(self, names: Sequence[str], why: str) -> list[Host]:
        found = []
        for name in names:
            host = self.provider.find(name)
            if host is None:
                self.add(
                    "host",
                    f"member host {name}",
                    f"has no live instance tagged etcdops:member={name}, but the runbook {why}.",
                    "tag the member's instance (docs/host-bootstrap.md: tags), or restore onto new hosts.",
                )
            else:
                found.append(host)
        return found

    def hosts_online(self, hosts: Sequence[Host]) -> None:
        if not hosts:
            return
        ids = [h.host_id for h in hosts]
        response, code = self.call(
            "host",
            f"instances {', '.join(ids)}",
            "ssm:DescribeInstanceInformation",
            lambda: self.provider.ssm.describe_instance_information(
                Filters=[{"Key": "InstanceIds", "Values": ids}], MaxResults=50
            ),
        )
        if response is None:
            if code not in _DENIED_CODES:
                self.add(
                    "host",
                    f"instances {', '.join(ids)}",
                    f"SSM could not say whether they take commands ({code}).",
                    "check the instances in Systems Manager Fleet Manager, then start the runbook again.",
                )
            return
        status = {i.get("InstanceId"): i.get("PingStatus") for i in response.get("InstanceInformationList") or []}
        for host in hosts:
            ping = status.get(host.host_id)
            if ping == "Online":
                continue
            what = f"instance {host.host_id} ({host.name or 'control plane'})"
            if ping is None:
                self.add(
                    "host",
                    what,
                    f"is not registered with SSM (it is {host.state}), so it cannot take the runbook's commands.",
                    "start it, and give its role AmazonSSMManagedInstanceCore and the SSM agent a route to SSM.",
                )
            else:
                self.add(
                    "host",
                    what,
                    f"is not online in SSM (PingStatus {ping}), so it cannot take the runbook's commands.",
                    "start the instance or its SSM agent, then start the runbook again.",
                )

    def control_plane(self) -> None:
        hosts = self.provider.control_plane_hosts()
        if not hosts:
            cluster = self.provider.cluster
            self.add(
                "control-plane",
                f"control-plane instances of {cluster}",
                f"none is running with the tag {CONTROL_PLANE_TAG}={cluster}: the restore stops and starts the "
                "Kubernetes API servers on them.",
                f"tag the control-plane instances {CONTROL_PLANE_TAG}={cluster} (docs/host-bootstrap.md: tags).",
            )
            return
        self.hosts_online(hosts)

    # ---- clients and retiring ------------------------------------------------------------

    def target_group(self, arn: str) -> None:
        subject = f"target group {arn}"
        response, code = self.call(
            "target-group",
            subject,
            "elasticloadbalancing:DescribeTargetGroups",
            lambda: self.provider.elbv2.describe_target_groups(TargetGroupArns=[arn]),
        )
        if response is None:
            if code not in _DENIED_CODES:
                self.add(
                    "target-group",
                    subject,
                    f"does not exist ({code}).",
                    "create it, or correct compute.target_group_arn (leave it out when clients use endpoints).",
                )
            return
        groups = response.get("TargetGroups") or [{}]
        if groups[0].get("TargetType", "instance") != "instance":
            self.add(
                "target-group",
                subject,
                f"takes targets of type {groups[0].get('TargetType')}; etcdops registers instances.",
                "use a target group of target type instance.",
            )

    def dry_run_terminate(self, names: Sequence[str]) -> None:
        for host in [h for h in (self.provider.find(n) for n in names) if h is not None]:
            self.call(
                "host",
                f"retiring instance {host.host_id} ({host.name})",
                "ec2:TerminateInstances (dry run)",
                lambda host=host: self.provider.ec2.terminate_instances(  # type: ignore[misc]
                    InstanceIds=[host.host_id], DryRun=True
                ),
            )


def _message(exc: ClientError) -> str:
    return aws_error_message(exc) or "no message"
