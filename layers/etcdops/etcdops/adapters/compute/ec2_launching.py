"""The EC2 provider's launching and retiring of hosts: one instance per member from the launch template
(an idempotency token so a retried launch never makes two), its status-check alarm, and on retirement
the instance, its alarm and its member secret."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from etcdops.adapters.awserrors import aws_error_code
from etcdops.adapters.compute.bootstrap import BootstrapSettings, user_data
from etcdops.adapters.compute.ec2_common import MEMBER_TAG, _api_error, gone_already_if
from etcdops.domain.compute.base import Host, check_host_name
from etcdops.domain.compute.errors import HostNotReadyError
from etcdops.domain.config import Ec2Compute

# the provider's one logger: its records read the same whichever part of it speaks
log = logging.getLogger("etcdops.adapters.compute.ec2")


class Ec2Launching:
    """The launch and terminate part of :class:`etcdops.adapters.compute.ec2.Ec2ComputeProvider`."""

    cluster: str
    settings: Ec2Compute
    region: str
    client_port: int
    peer_port: int
    ec2: Any
    cloudwatch: Any

    if TYPE_CHECKING:

        @property
        def owner_tags(self) -> dict[str, str]: ...
        def member_secret_id(self, name: str) -> str: ...
        def status_check_alarm_name(self, instance_id: str) -> str: ...
        def _find_instance(self, name: str) -> dict[str, Any] | None: ...
        def _cluster_instances(self, *filters: dict[str, Any]) -> list[dict[str, Any]]: ...
        def _host(self, instance: Mapping[str, Any]) -> Host: ...
        def _ensure_certificate(
            self, name: str, address_sans: Sequence[str], host: Host | None, owner: str, *, renew: bool = False
        ) -> str: ...
        def _delete_member_secret(self, name: str) -> None: ...

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
            with gone_already_if("InvalidInstanceID.NotFound", f"terminating {host.host_id}"):
                self.ec2.terminate_instances(InstanceIds=[host.host_id])
        self._delete_status_check_alarm(host.host_id)
        if host.name and self._find_instance(host.name) is None:
            self._delete_member_secret(host.name)
