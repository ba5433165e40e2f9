"""The EC2 compute provider: hosts are EC2 instances, host commands are SSM Run Command documents.

- a host is the live instance tagged ``etcdops:cluster=<cluster>`` and ``etcdops:member=<name>``
  (pending, running, stopping or stopped; terminated instances are ignored);
- ``launch`` runs one instance from the configured launch template, in the subnet with the fewest
  of the cluster's hosts (``compute.subnets``) and with the cluster's ``compute.security_groups`` when it
  names any, with the bootstrap user data (:mod:`etcdops.adapters.compute.bootstrap`) and an
  idempotency token derived from cluster and name, so a retried launch never makes two;
- certificates: the CA lives in Secrets Manager (``etcdops/<cluster>/ca``, read only by etcdops);
  each member's certificate, key and CA certificate go to ``etcdops/<cluster>/members/<name>``,
  tagged ``etcdops:instance-arn`` with its instance's ARN so that the instance role can read that
  one secret only (the IAM condition is in docs/host-bootstrap.md);
- ``register_target``/``deregister_target``: the instance id and the client port in the target group;
- every host it launches gets a CloudWatch alarm on its EC2 status checks, named
  ``<stack>-status-check-<instance id>`` so that the stack's EventBridge rule sends the alarm to
  HealthCheck; retiring the host deletes it. The alarm is a faster signal, not a condition of the
  repair: an alarm that cannot be made is logged and the launch goes on (HealthCheck still probes);
- etcd start/stop and host actions: ``ssm.send_command`` with the documents named in
  ``compute.ssm_documents`` (default ``<stack>-<Key>``, the documents of the etcdops stack that runs
  this provider), waiting for every invocation under a deadline.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

from etcdops.adapters import pki
from etcdops.adapters.awserrors import aws_error, aws_error_code, is_transient
from etcdops.adapters.compute import ec2_ca, ec2_volumes
from etcdops.adapters.compute.bootstrap import BootstrapSettings, user_data
from etcdops.domain.compute.base import (
    DOCUMENTS,
    ActionResult,
    ActionStatus,
    ComputeProvider,
    Host,
    HostActionResult,
    InitialState,
    PreflightPlan,
    VolumeCopy,
    action_spec,
    check_host_name,
    check_initial_cluster,
    start_flags,
)
from etcdops.domain.compute.errors import (
    ActionParameterError,
    CertificateAuthorityError,
    ComputeApiError,
    ComputeApiUnavailableError,
    ComputeConfigError,
    HostCommandFailedError,
    HostCommandTimeoutError,
    HostConflictError,
    HostNotFoundError,
    HostNotReadyError,
)
from etcdops.domain.config import Ec2Compute
from etcdops.domain.errors import PkiError
from etcdops.domain.findings import Finding

log = logging.getLogger("etcdops.adapters.compute.ec2")
CLUSTER_TAG = "etcdops:cluster"
MEMBER_TAG = "etcdops:member"
CONTROL_PLANE_TAG = "etcdops:control-plane"
INSTANCE_ARN_TAG = "etcdops:instance-arn"
#: the deployment (stack) whose fleet a resource is of: the IAM grants for registered clusters require it
FLEET_TAG = "etcdops:fleet"
LIVE_STATES = ("pending", "running", "stopping", "stopped")
# "denied": not readable by this role, which for a registered cluster's secret (granted by its etcdops:fleet
# tag) is what AWS answers for one that does not exist yet: creating it (tagged so) tells the two apart
SecretState = Literal["missing", "deleted", "present", "denied"]
_TERMINAL: tuple[ActionStatus, ...] = ("Success", "Failed", "Cancelled", "TimedOut")
_IN_FLIGHT = ("Pending", "InProgress", "Delayed")
_DENIED_CODES = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "UnauthorizedAccess"}


def _api_error(what: str, exc: Exception) -> ComputeApiError:
    """The compute provider's error for a failed AWS call (etcdops.adapters.awserrors decides which)."""
    return aws_error(what, exc, refused=ComputeApiError, unavailable=ComputeApiUnavailableError)


def _tags(resource: Mapping[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags", [])}


def _partition(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


class Ec2ComputeProvider(ComputeProvider):
    """The hosts of cluster ``cluster`` in EC2; every AWS client is passed in.

    ``stack_name`` is the etcdops stack whose SSM documents run the host commands.
    """

    def __init__(
        self,
        cluster: str,
        settings: Ec2Compute,
        *,
        stack_name: str,
        ec2: Any,
        elbv2: Any,
        ssm: Any,
        secretsmanager: Any,
        cloudwatch: Any,
        region: str | None = None,
        client_port: int = 2379,
        peer_port: int = 2380,
        certificate_days: int = 365,
        renew_before_days: int = 30,
        max_wait_seconds: float = 600.0,
        poll_seconds: float = 2.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        secrets_cluster: str | None = None,
    ) -> None:
        for key in settings.ssm_documents:
            if key not in DOCUMENTS:
                raise ComputeConfigError(
                    f"compute.ssm_documents.{key}: unknown document (known: {', '.join(sorted(DOCUMENTS))})"
                )
        if not stack_name:
            raise ComputeConfigError("the ec2 provider needs the etcdops stack's name (STACK_NAME)")
        self.cluster = cluster
        # whose CA and member certificates (a scratch pool's hosts use the cluster's CA, under its name)
        self.secrets_cluster = secrets_cluster or cluster
        self.stack_name = stack_name
        self.settings = settings
        self.ec2, self.elbv2, self.ssm, self.secrets = ec2, elbv2, ssm, secretsmanager
        self.cloudwatch = cloudwatch
        self.region = region or str(ec2.meta.region_name)
        self.client_port, self.peer_port = client_port, peer_port
        self.certificate_days, self.renew_before_days = certificate_days, renew_before_days
        self.max_wait_seconds, self.poll_seconds = max_wait_seconds, poll_seconds
        self._sleep, self._clock = sleep, clock
        self._ca_pair: pki.KeyPair | None = None

    # ---- names ---------------------------------------------------------------------------

    @property
    def ca_secret_id(self) -> str:
        return f"etcdops/{self.secrets_cluster}/ca"

    def member_secret_id(self, name: str) -> str:
        return f"etcdops/{self.secrets_cluster}/members/{check_host_name(name)}"

    def status_check_alarm_name(self, instance_id: str) -> str:
        """Matched by the stack's EventBridge rule (prefix ``<stack>-status-check-``), so it triggers HealthCheck."""
        return f"{self.stack_name}-status-check-{instance_id}"

    @property
    def owner_tags(self) -> dict[str, str]:
        """The tags of everything this provider makes: its cluster, and the deployment whose fleet it is of
        (the IAM grants of a registered cluster's hosts, secrets and snapshots require both)."""
        return {CLUSTER_TAG: self.cluster, FLEET_TAG: self.stack_name}

    def document_name(self, key: str) -> str:
        return self.settings.ssm_documents.get(key) or DOCUMENTS[key].default_name(self.stack_name)

    # ---- hosts ---------------------------------------------------------------------------

    def _instances(self, filters: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], str]]:
        """(instance, owner account) for live instances matching ``filters``."""
        try:
            pages = self.ec2.get_paginator("describe_instances").paginate(
                Filters=[{"Name": "instance-state-name", "Values": list(LIVE_STATES)}, *filters]
            )
            for page in pages:
                for reservation in page.get("Reservations", []):
                    for instance in reservation.get("Instances", []):
                        yield instance, str(reservation.get("OwnerId", ""))
        except (ClientError, BotoCoreError) as exc:
            raise _api_error("describing instances", exc) from exc

    def _cluster_instances(self, *filters: dict[str, Any]) -> list[dict[str, Any]]:
        found = self._instances([{"Name": f"tag:{CLUSTER_TAG}", "Values": [self.cluster]}, *filters])
        return [{**instance, "_owner": owner} for instance, owner in found]

    def _host(self, instance: Mapping[str, Any]) -> Host:
        address = str(instance.get("PrivateIpAddress") or "")
        return Host(
            host_id=str(instance["InstanceId"]),
            name=_tags(instance).get(MEMBER_TAG, ""),
            address=address,
            peer_url=f"https://{address}:{self.peer_port}" if address else "",
            client_url=f"https://{address}:{self.client_port}" if address else "",
            state=str(instance.get("State", {}).get("Name", "")),
        )

    def _find_instance(self, name: str) -> dict[str, Any] | None:
        found = self._cluster_instances({"Name": f"tag:{MEMBER_TAG}", "Values": [name]})
        if len(found) > 1:
            ids = ", ".join(sorted(i["InstanceId"] for i in found))
            raise HostConflictError(f"member {name} of {self.cluster} has {len(found)} live instances: {ids}")
        return found[0] if found else None

    def find(self, name: str) -> Host | None:
        instance = self._find_instance(check_host_name(name))
        return self._host(instance) if instance else None

    def hosts(self) -> list[Host]:
        hosts = [self._host(i) for i in self._cluster_instances() if _tags(i).get(MEMBER_TAG)]
        return sorted(hosts, key=lambda h: h.name)

    def _instance_arn(self, instance_id: str, owner: str) -> str:
        return f"arn:{_partition(self.region)}:ec2:{self.region}:{owner}:instance/{instance_id}"

    # ---- launch and terminate ------------------------------------------------------------

    def launch(self, name: str) -> Host:
        check_host_name(name)
        instance = self._find_instance(name) or self._run_instance(name)
        host = self._host(instance)
        if not host.address:
            raise HostNotReadyError(f"instance {host.host_id} of member {name} has no private address yet")
        # the certificate gains the instance's address, and the secret is opened to this instance
        self._ensure_certificate(name, (), host, instance.get("_owner", ""))
        self._ensure_status_check_alarm(host)
        return host

    def _ensure_status_check_alarm(self, host: Host) -> None:
        name = self.status_check_alarm_name(host.host_id)
        try:
            self.cloudwatch.put_metric_alarm(  # the same definition again is a no-op: a retry converges
                AlarmName=name,
                AlarmDescription=(
                    f"etcdops: EC2 status checks of etcd member {host.name} of {self.cluster} "
                    f"(instance {host.host_id}); HealthCheck replaces the member when they fail"
                ),
                Namespace="AWS/EC2",
                MetricName="StatusCheckFailed",
                Dimensions=[{"Name": "InstanceId", "Value": host.host_id}],
                Statistic="Maximum",
                Period=60,
                EvaluationPeriods=2,
                DatapointsToAlarm=2,
                Threshold=1,
                ComparisonOperator="GreaterThanOrEqualToThreshold",
                TreatMissingData="missing",  # a stopped instance reports nothing; its state change says it
            )
        except (ClientError, BotoCoreError) as exc:
            log.error(
                "status-check alarm %s of member %s not created (%s); HealthCheck's probes still watch the "
                "member. Create it by hand (README: Health checks and alarms).",
                name, host.name, _api_error("creating the alarm", exc),
            )  # fmt: skip

    def _delete_status_check_alarm(self, instance_id: str) -> None:
        name = self.status_check_alarm_name(instance_id)
        try:
            self.cloudwatch.delete_alarms(AlarmNames=[name])
        except ClientError as exc:
            if aws_error_code(exc) != "ResourceNotFound":
                log.error("status-check alarm %s of a retired host not deleted: %s", name, _api_error("", exc))
        except BotoCoreError as exc:
            log.error("status-check alarm %s of a retired host not deleted: %s", name, _api_error("", exc))

    def _launch_template(self) -> dict[str, str]:
        template = self.settings.launch_template
        key = "LaunchTemplateId" if template.startswith("lt-") else "LaunchTemplateName"
        return {key: template}

    def _pick_subnet(self) -> str:
        """The configured subnet with the fewest of this cluster's hosts (spreads across zones)."""
        counts = {subnet: 0 for subnet in self.settings.subnets}
        for instance in self._cluster_instances():
            if instance.get("SubnetId") in counts:
                counts[instance["SubnetId"]] += 1
        return min(self.settings.subnets, key=lambda s: counts[s])

    def _client_token(self, name: str, previous: str = "") -> str:
        digest = hashlib.sha256(f"{self.cluster}/{name}/{previous}".encode()).hexdigest()
        return f"etcdops-{digest[:48]}"

    def launch_request(self, name: str) -> dict[str, Any]:
        """The RunInstances request that launches member ``name`` (the preflight dry-runs exactly this)."""
        tags = [
            *({"Key": k, "Value": v} for k, v in self.owner_tags.items()),
            {"Key": MEMBER_TAG, "Value": name},
            {"Key": "Name", "Value": f"etcd-{self.cluster}-{name}"},
        ]
        script = user_data(
            BootstrapSettings(
                cluster=self.cluster,
                member=name,
                secret_id=self.member_secret_id(name),
                region=self.region,
                client_port=self.client_port,
                peer_port=self.peer_port,
            )
        )
        request: dict[str, Any] = {
            "LaunchTemplate": self._launch_template(),
            "MinCount": 1,
            "MaxCount": 1,
            "SubnetId": self._pick_subnet(),
            "UserData": script,
            "ClientToken": self._client_token(name),
            "TagSpecifications": [
                {"ResourceType": "instance", "Tags": tags},
                {"ResourceType": "volume", "Tags": tags},
            ],
        }
        if self.settings.security_groups:  # the cluster's own; else the launch template's
            request["SecurityGroupIds"] = list(self.settings.security_groups)
        return request

    def _run_instance(self, name: str) -> dict[str, Any]:
        request = self.launch_request(name)
        try:
            response = self.ec2.run_instances(**request)
            instance = response["Instances"][0]
            if instance.get("State", {}).get("Name") in ("shutting-down", "terminated"):
                # the token belongs to an earlier host of this name, gone now: a new one for a new host
                request["ClientToken"] = self._client_token(name, instance["InstanceId"])
                response = self.ec2.run_instances(**request)
                instance = response["Instances"][0]
        except (ClientError, BotoCoreError) as exc:
            raise _api_error(f"launching member {name} from {self.settings.launch_template}", exc) from exc
        return {**instance, "_owner": str(response.get("OwnerId", ""))}

    def terminate(self, host: Host) -> None:
        found = self._cluster_instances({"Name": "instance-id", "Values": [host.host_id]})
        if found:
            try:
                self.ec2.terminate_instances(InstanceIds=[host.host_id])
            except ClientError as exc:
                if aws_error_code(exc) != "InvalidInstanceID.NotFound":
                    raise _api_error(f"terminating {host.host_id}", exc) from exc
            except BotoCoreError as exc:
                raise _api_error(f"terminating {host.host_id}", exc) from exc
        self._delete_status_check_alarm(host.host_id)
        if host.name and self._find_instance(host.name) is None:
            self._delete_member_secret(host.name)

    # ---- volume snapshots ----------------------------------------------------------------

    def snapshot_volume(self, host: Host, tags: Mapping[str, str], workdir: str) -> VolumeCopy:
        """EBS snapshots of every data volume of ``host``'s instance, taken together (``CreateSnapshots``:
        crash-consistent across the volumes), the boot volume left out, tagged with ``tags`` and the
        cluster and member tags (what the IAM conditions check). Nothing is copied below ``workdir``."""
        snapshot_tags = {**tags, **self.owner_tags, MEMBER_TAG: host.name}
        try:
            response = self.ec2.create_snapshots(
                InstanceSpecification={"InstanceId": host.host_id, "ExcludeBootVolume": True},
                Description=f"etcdops volume backup of etcd member {host.name} of {self.cluster}",
                TagSpecifications=[
                    {"ResourceType": "snapshot", "Tags": [{"Key": k, "Value": v} for k, v in snapshot_tags.items()]}
                ],
            )
        except (ClientError, BotoCoreError) as exc:
            raise _api_error(f"snapshotting the volumes of {host.host_id} ({host.name})", exc) from exc
        ids = tuple(str(s["SnapshotId"]) for s in response.get("Snapshots", []))
        if not ids:
            raise ComputeConfigError(
                f"instance {host.host_id} of member {host.name} has no volume besides its boot volume: etcd's data "
                "must be on a data volume of its own (the launch template's block device mappings) for a volume backup"
            )
        return VolumeCopy(snapshot_ids=ids)

    def delete_volume_snapshots(self, snapshot_ids: Sequence[str]) -> None:
        for snapshot_id in snapshot_ids:
            try:
                self.ec2.delete_snapshot(SnapshotId=snapshot_id)
            except ClientError as exc:
                if aws_error_code(exc) != "InvalidSnapshot.NotFound":  # deleted already: a retry converges
                    raise _api_error(f"deleting snapshot {snapshot_id}", exc) from exc
            except BotoCoreError as exc:
                raise _api_error(f"deleting snapshot {snapshot_id}", exc) from exc

    def volume_snapshot_problem(self, snapshot_id: str) -> str | None:
        return ec2_volumes.snapshot_problem(self, snapshot_id)

    def attach_snapshot_volume(self, host: Host, snapshot_id: str, owner: str) -> str:
        return ec2_volumes.attach_snapshot_volume(self, host, snapshot_id, owner)

    def remove_snapshot_volumes(self, owner: str) -> list[str]:
        return ec2_volumes.remove_snapshot_volumes(self, owner)

    # ---- certificates --------------------------------------------------------------------

    def issue_certificates(self, name: str, address_sans: Sequence[str] = ()) -> str:
        instance = self._find_instance(check_host_name(name))
        host = self._host(instance) if instance else None
        return self._ensure_certificate(name, address_sans, host, instance.get("_owner", "") if instance else "")

    def renew_certificates(self, host: Host) -> str:
        """A new certificate in the member's secret, then RenewCertificates: the host fetches and writes it."""
        instance = self._find_instance(check_host_name(host.name))
        if instance is None:
            raise HostNotFoundError(f"no live instance for member {host.name} of cluster {self.cluster}")
        current = self._host(instance)
        secret_id = self._ensure_certificate(host.name, (), current, instance.get("_owner", ""), renew=True)
        pair, _ = self._read_member(secret_id)
        if pair is None:
            raise ComputeApiError(f"{secret_id}: the certificate just written cannot be read back")
        self.run_action("renew-certificates", [current], {"member_name": host.name})
        return f"{pair.certificate.serial_number:x}"

    def fetch_certificates(self, host: Host) -> None:
        """RenewCertificates: the host writes what its secret holds now (the trusted CAs included)."""
        instance = self._find_instance(check_host_name(host.name))
        if instance is None:
            raise HostNotFoundError(f"no live instance for member {host.name} of cluster {self.cluster}")
        self.run_action("renew-certificates", [self._host(instance)], {"member_name": host.name})

    def ca_rotation(self) -> dict[str, int]:
        return ec2_ca.recorded(self)

    def begin_ca_phase(self, phase: int) -> None:
        ec2_ca.begin(self, phase)

    def finish_ca_phase(self, phase: int) -> None:
        ec2_ca.finish(self, phase)

    def _ca(self) -> pki.KeyPair:
        if self._ca_pair is None:
            self._ca_pair = self.read_ca()
        return self._ca_pair

    def read_ca(self) -> pki.KeyPair:
        """The cluster CA from its secret, checked: CertificateAuthorityError says what is wrong and the fix."""
        subject = f"secret {self.ca_secret_id}"
        try:
            secret = self.secrets.get_secret_value(SecretId=self.ca_secret_id)
        except ClientError as exc:
            code = aws_error_code(exc)
            if is_transient(exc):
                raise _api_error(f"reading {self.ca_secret_id}", exc) from exc
            if code == "ResourceNotFoundException":
                problem = "does not exist."
            elif code in _DENIED_CODES:
                problem = f"the RunbookStep role may not read it ({code})."
                fix = (
                    f"allow secretsmanager:GetSecretValue on {self.ca_secret_id} (and kms:Decrypt on the secret's "
                    "KMS key if it has its own) to the RunbookStep role only."
                )
                raise CertificateAuthorityError(Finding("ca", subject, problem, fix)) from None
            elif code == "DecryptionFailure":
                problem = "Secrets Manager could not decrypt it with its KMS key (DecryptionFailure)."
            else:
                problem = f"reading it failed: {code}: {exc}."
            raise CertificateAuthorityError(Finding("ca", subject, problem, CA_SECRET_FIX)) from None
        except BotoCoreError as exc:
            raise _api_error(f"reading {self.ca_secret_id}", exc) from exc
        text = secret.get("SecretString")
        if not isinstance(text, str):
            raise CertificateAuthorityError(Finding("ca", subject, "holds binary data, not text.", CA_SECRET_FIX))
        return parse_ca(subject, text)

    def _read_member(self, secret_id: str) -> tuple[pki.KeyPair | None, SecretState]:
        """The member's key pair (None if missing or unreadable) and whether its secret exists."""
        try:
            text = self.secrets.get_secret_value(SecretId=secret_id)["SecretString"]
        except ClientError as exc:
            if aws_error_code(exc) == "ResourceNotFoundException":
                return None, "missing"
            if aws_error_code(exc) == "InvalidRequestException":  # scheduled for deletion
                return None, "deleted"
            if aws_error_code(exc) in _DENIED_CODES:
                return None, "denied"
            raise _api_error(f"reading {secret_id}", exc) from exc
        except BotoCoreError as exc:
            raise _api_error(f"reading {secret_id}", exc) from exc
        try:
            data = json.loads(text)
            return pki.KeyPair(data["certificate"].encode(), data["private_key"].encode()), "present"
        except (ValueError, KeyError, TypeError, AttributeError):
            return None, "present"  # unreadable: it is replaced

    def _ensure_certificate(
        self, name: str, address_sans: Sequence[str], host: Host | None, owner: str, *, renew: bool = False
    ) -> str:
        """The member's certificate, issued when missing, not good any more or lacking a name (``renew``:
        issued in any case, with the names the old one had)."""
        secret_id = self.member_secret_id(name)
        ca = self._ca()
        current, secret_state = self._read_member(secret_id)
        ips, dns = _split_sans(["127.0.0.1", "localhost", name, *address_sans, *([host.address] if host else [])])
        if current is not None:
            have_ips, have_dns = _sans_of(current)
            wanted = set(ips) | set(dns)
            if not renew and wanted <= set(have_ips) | set(have_dns) and self._still_good(ca, current):
                ips, dns = [], []  # nothing to issue
            else:
                ips, dns = _merge(have_ips, ips), _merge(have_dns, dns)
        if ips or dns:
            pair = pki.issue_certificate(
                ca, name, kind="peer", dns_names=dns, ip_addresses=ips, valid_days=self.certificate_days
            )
            value = json.dumps(
                {
                    "certificate": pair.cert_pem.decode(),
                    "private_key": pair.key_pem.decode(),
                    "ca": ec2_ca.trusted(self),  # both CAs while a rotation trusts both
                    "member": name,
                }
            )
            self._write_secret(secret_id, name, value, secret_state)
        if host is not None and owner:
            try:
                self.secrets.tag_resource(
                    SecretId=secret_id,
                    Tags=[{"Key": INSTANCE_ARN_TAG, "Value": self._instance_arn(host.host_id, owner)}],
                )
            except (ClientError, BotoCoreError) as exc:
                raise _api_error(f"tagging {secret_id} for {host.host_id}", exc) from exc
        return secret_id

    def _still_good(self, ca: pki.KeyPair, pair: pki.KeyPair) -> bool:
        try:
            pki.verify_chain(ca, pair)
        except PkiError:
            return False
        left = pair.not_after.timestamp() - time.time()
        return left > self.renew_before_days * 86400

    def _write_secret(self, secret_id: str, name: str, value: str, state: SecretState) -> None:
        try:
            if state in ("missing", "denied"):
                try:
                    self.secrets.create_secret(
                        Name=secret_id,
                        SecretString=value,
                        Description=f"etcd member {name} of {self.cluster}: certificate, key, CA (etcdops)",
                        Tags=[
                            *({"Key": k, "Value": v} for k, v in self.owner_tags.items()),
                            {"Key": MEMBER_TAG, "Value": name},
                        ],
                    )
                    return
                except ClientError as exc:
                    if aws_error_code(exc) != "ResourceExistsException":
                        raise
                    if state == "denied":
                        raise ComputeApiError(
                            f"{secret_id} exists but this function may not read it: a registered cluster's secrets "
                            f"must be tagged {FLEET_TAG}={self.stack_name} (README: IAM for a fleet)"
                        ) from None
            if state == "deleted":
                self.secrets.restore_secret(SecretId=secret_id)  # retired with an earlier host of this name
            self.secrets.put_secret_value(SecretId=secret_id, SecretString=value)
        except (ClientError, BotoCoreError) as exc:
            raise _api_error(f"writing {secret_id}", exc) from exc

    def _delete_member_secret(self, name: str) -> None:
        secret_id = self.member_secret_id(name)
        try:
            self.secrets.delete_secret(SecretId=secret_id, RecoveryWindowInDays=7)
        except ClientError as exc:
            if aws_error_code(exc) not in ("ResourceNotFoundException", "InvalidRequestException"):
                raise _api_error(f"deleting {secret_id}", exc) from exc
        except BotoCoreError as exc:
            raise _api_error(f"deleting {secret_id}", exc) from exc

    # ---- target group --------------------------------------------------------------------

    def _targets(self, host: Host) -> dict[str, Any] | None:
        if not self.settings.target_group_arn:
            return None  # no load balancer: clients use the configured endpoints
        return {
            "TargetGroupArn": self.settings.target_group_arn,
            "Targets": [{"Id": host.host_id, "Port": self.client_port}],
        }

    def register_target(self, host: Host) -> None:
        request = self._targets(host)
        if request is None:
            return
        try:
            self.elbv2.register_targets(**request)
        except (ClientError, BotoCoreError) as exc:
            raise _api_error(f"registering {host.host_id} in {self.settings.target_group_arn}", exc) from exc

    def deregister_target(self, host: Host) -> None:
        request = self._targets(host)
        if request is None:
            return
        try:
            self.elbv2.deregister_targets(**request)
        except ClientError as exc:
            if aws_error_code(exc) != "InvalidTarget":  # not registered, or the instance is gone: nothing to do
                raise _api_error(f"deregistering {host.host_id}", exc) from exc
        except BotoCoreError as exc:
            raise _api_error(f"deregistering {host.host_id}", exc) from exc

    # ---- preflight -----------------------------------------------------------------------

    def preflight(self, plan: PreflightPlan) -> list[Finding]:
        from etcdops.adapters.compute.ec2_preflight import preflight

        return preflight(self, plan)

    # ---- commands ------------------------------------------------------------------------

    def start_etcd(
        self, host: Host, initial_cluster: str, initial_state: InitialState, flags: Mapping[str, int] | None = None
    ) -> None:
        check_initial_cluster(host, initial_cluster, initial_state)
        extra = start_flags(flags)  # StartEtcd writes them into etcd.env as ETCD_* variables
        parameters = DOCUMENTS["StartEtcd"].ssm_parameters(
            {
                "member_name": host.name,
                "peer_url": host.peer_url,
                "client_url": host.client_url,
                "initial_cluster": initial_cluster,
                "initial_state": initial_state,
                **({"extra_flags": " ".join(extra)} if extra else {}),
            }
        )
        self._command("StartEtcd", [host], parameters)

    def stop_etcd(self, host: Host) -> None:
        self._command("StopEtcd", [host], {})

    def run_action(
        self, action: str, hosts: Sequence[Host] | None = None, parameters: Mapping[str, str] | None = None
    ) -> ActionResult:
        spec = action_spec(action)
        ssm_parameters = spec.ssm_parameters(dict(parameters or {}))
        targets = self._group(spec.group) if hosts is None else list(hosts)
        if not targets:
            raise HostNotFoundError(f"{action}: no running {spec.group} hosts of {self.cluster} to run it on")
        return self._command(spec.key, targets, ssm_parameters, action)

    def _group(self, group: str) -> list[Host]:
        if group == "etcd":
            return [h for h in self.hosts() if h.state == "running"]
        return self.control_plane_hosts()

    def control_plane_hosts(self) -> list[Host]:
        """The running instances tagged ``etcdops:control-plane=<cluster>`` (where the Kubernetes hooks run)."""
        found = self._instances(
            [
                {"Name": f"tag:{CONTROL_PLANE_TAG}", "Values": [self.cluster]},
                {"Name": "instance-state-name", "Values": ["running"]},
            ]
        )
        return [self._host(instance) for instance, _ in found]

    def _command(
        self, key: str, hosts: Sequence[Host], parameters: Mapping[str, str], action: str | None = None
    ) -> ActionResult:
        """Send document ``key`` to ``hosts`` (or join the same command still running) and wait."""
        spec = DOCUMENTS[key]
        document = self.document_name(key)
        ids = sorted({h.host_id for h in hosts})
        names = {h.host_id: h.name for h in hosts}
        fingerprint = hashlib.sha256(json.dumps([document, ids, dict(parameters)], sort_keys=True).encode())
        comment = f"etcdops {self.cluster} {key} {fingerprint.hexdigest()[:16]}"[:100]
        command_id = self._in_flight(ids[0], document, comment) or self._send(key, document, ids, parameters, comment)
        deadline = self._clock() + min(spec.timeout_seconds + 60, self.max_wait_seconds)
        results: dict[str, HostActionResult] = {}
        while True:
            for instance_id in ids:
                if instance_id not in results:
                    result = self._invocation(command_id, instance_id, names.get(instance_id, ""))
                    if result is not None:
                        results[instance_id] = result
            if len(results) == len(ids):
                break
            if self._clock() >= deadline:
                waiting = ", ".join(i for i in ids if i not in results)
                raise HostCommandTimeoutError(
                    f"{document} (command {command_id}) still running on {waiting}; it is safe to wait again",
                    command_id,
                )
            self._sleep(self.poll_seconds)
        outcome = ActionResult(action or key, command_id, tuple(results[i] for i in ids))
        if not outcome.ok:
            failed = "; ".join(
                f"{h.name or h.host_id} {h.status}: {(h.output.strip().splitlines() or ['no output'])[-1]}"
                for h in outcome.hosts
                if h.status != "Success"
            )
            raise HostCommandFailedError(f"{document} (command {command_id}) failed: {failed}", outcome)
        return outcome

    def _in_flight(self, instance_id: str, document: str, comment: str) -> str | None:
        """The id of the same command, sent by an earlier try and still running, if there is one."""
        try:
            commands = self.ssm.list_commands(InstanceId=instance_id)["Commands"]
        except (ClientError, BotoCoreError) as exc:
            raise _api_error(f"listing commands of {instance_id}", exc) from exc
        for command in commands:
            if (
                command.get("Comment") == comment
                and command.get("DocumentName") == document
                and command.get("Status") in _IN_FLIGHT
            ):
                return str(command["CommandId"])
        return None

    def _send(self, key: str, document: str, ids: list[str], parameters: Mapping[str, str], comment: str) -> str:
        try:
            response = self.ssm.send_command(
                InstanceIds=ids,
                DocumentName=document,
                Parameters={name: [value] for name, value in parameters.items()},
                Comment=comment,
                TimeoutSeconds=300,  # for delivery; the document bounds the run itself
            )
        except ClientError as exc:
            code = aws_error_code(exc)
            if code == "InvalidInstanceId":
                raise HostNotReadyError(
                    f"{document}: instance(s) {', '.join(ids)} not online in SSM yet (still booting?)"
                ) from None
            if code == "InvalidDocument":
                raise ComputeConfigError(
                    f"compute.ssm_documents.{key}: SSM document {document} does not exist"
                ) from None
            if code in ("InvalidParameters", "ValidationException"):
                raise ActionParameterError(f"{document}: {exc}") from None
            raise _api_error(f"sending {document}", exc) from exc
        except BotoCoreError as exc:
            raise _api_error(f"sending {document}", exc) from exc
        return str(response["Command"]["CommandId"])

    def _invocation(self, command_id: str, instance_id: str, name: str) -> HostActionResult | None:
        try:
            invocation = self.ssm.get_command_invocation(CommandId=command_id, InstanceId=instance_id)
        except ClientError as exc:
            if aws_error_code(exc) == "InvocationDoesNotExist":
                return None  # right after sending, the invocation is not visible yet
            raise _api_error(f"reading command {command_id} on {instance_id}", exc) from exc
        except BotoCoreError as exc:
            raise _api_error(f"reading command {command_id} on {instance_id}", exc) from exc
        status = invocation.get("Status")
        for terminal in _TERMINAL:
            if status == terminal:
                output = (invocation.get("StandardOutputContent") or "") + (
                    invocation.get("StandardErrorContent") or ""
                )
                return HostActionResult(instance_id, name, terminal, output[-4000:])
        return None


CA_SECRET_FIX = (
    'store the cluster CA\'s certificate and key as JSON {"certificate": "<ca.crt PEM>", '
    '"private_key": "<ca.key PEM>"} (or both PEM blocks in one text); see README "Deploying to AWS".'
)
_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----.+?-----END \1-----", re.DOTALL)


def parse_ca(subject: str, text: str) -> pki.KeyPair:
    """``{"certificate": PEM, "private_key": PEM}``, or one PEM text holding both blocks; a CA valid now."""

    def refuse(problem: str) -> CertificateAuthorityError:
        return CertificateAuthorityError(Finding("ca", subject, problem, CA_SECRET_FIX))

    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            raise refuse("is not valid JSON.") from None
        if not isinstance(data, dict):
            raise refuse("is JSON but not an object.")
        missing = [f for f in ("certificate", "private_key") if not isinstance(data.get(f), str) or not data[f].strip()]
        if missing:
            raise refuse(f"has no {' and no '.join(missing)} field.")
        cert_pem, key_pem = data["certificate"], data["private_key"]
    else:
        blocks = list(_PEM_BLOCK.finditer(text))
        cert = next((b for b in blocks if b.group(1) == "CERTIFICATE"), None)
        key = next((b for b in blocks if b.group(1).endswith("PRIVATE KEY")), None)
        if cert is None:
            raise refuse("holds no PEM certificate.")
        if key is None:
            raise refuse("holds a certificate but no private key (was only ca.crt stored?).")
        if key.group(1) == "ENCRYPTED PRIVATE KEY":
            raise refuse("holds an encrypted private key; etcdops needs it unencrypted (Secrets Manager encrypts it).")
        cert_pem, key_pem = cert.group(0) + "\n", key.group(0) + "\n"
    pair = pki.KeyPair(cert_pem.encode(), key_pem.encode())
    try:
        pki.check_ca(pair)
    except PkiError as exc:
        raise refuse(f"is not a usable CA: {str(exc).removeprefix('ca: ')}.") from None
    return pair


def _split_sans(values: Sequence[str]) -> tuple[list[str], list[str]]:
    import ipaddress

    ips: list[str] = []
    dns: list[str] = []
    for value in values:
        if not value:
            continue
        try:
            ips.append(str(ipaddress.ip_address(value)))
        except ValueError:
            dns.append(value)
    return list(dict.fromkeys(ips)), list(dict.fromkeys(dns))


def _sans_of(pair: pki.KeyPair) -> tuple[list[str], list[str]]:
    from cryptography import x509

    try:
        san = pair.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], []
    return [str(ip) for ip in san.get_values_for_type(x509.IPAddress)], list(san.get_values_for_type(x509.DNSName))


def _merge(first: list[str], second: list[str]) -> list[str]:
    return list(dict.fromkeys([*first, *second]))
