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

Its parts: launching and terminating hosts in :mod:`.ec2_launching`, the certificates in
:mod:`.ec2_certificates`, the host commands in :mod:`.ec2_commands`, what they share in
:mod:`.ec2_common`; the CA rotation is :mod:`.ec2_ca`, volumes :mod:`.ec2_volumes`, the preflight
:mod:`.ec2_preflight`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from etcdops.adapters import pki
from etcdops.adapters.compute import ec2_ca, ec2_volumes
from etcdops.adapters.compute.ec2_certificates import CA_SECRET_FIX, Ec2Certificates, parse_ca
from etcdops.adapters.compute.ec2_commands import Ec2Commands
from etcdops.adapters.compute.ec2_common import (
    _DENIED_CODES,
    CLUSTER_TAG,
    CONTROL_PLANE_TAG,
    FLEET_TAG,
    LIVE_STATES,
    MEMBER_TAG,
    _api_error,
    _partition,
    _tags,
    gone_already_if,
)
from etcdops.adapters.compute.ec2_launching import Ec2Launching
from etcdops.domain.compute.base import (
    DOCUMENTS,
    ComputeProvider,
    Host,
    PreflightPlan,
    VolumeCopy,
    check_host_name,
)
from etcdops.domain.compute.errors import (
    ComputeConfigError,
    HostConflictError,
)
from etcdops.domain.config import Ec2Compute
from etcdops.domain.findings import Finding

# what the provider's other modules (ec2_ca, ec2_volumes, ec2_preflight) and its callers import from here
__all__ = ["CA_SECRET_FIX", "CONTROL_PLANE_TAG", "_DENIED_CODES", "Ec2ComputeProvider", "_api_error", "parse_ca"]


class Ec2ComputeProvider(Ec2Launching, Ec2Certificates, Ec2Commands, ComputeProvider):
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

    # ---- launch and terminate: Ec2Launching -----------------------------------------------

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
            with gone_already_if("InvalidSnapshot.NotFound", f"deleting snapshot {snapshot_id}"):
                self.ec2.delete_snapshot(SnapshotId=snapshot_id)

    def volume_snapshot_problem(self, snapshot_id: str) -> str | None:
        return ec2_volumes.snapshot_problem(self, snapshot_id)

    def attach_snapshot_volume(self, host: Host, snapshot_id: str, owner: str) -> str:
        return ec2_volumes.attach_snapshot_volume(self, host, snapshot_id, owner)

    def remove_snapshot_volumes(self, owner: str) -> list[str]:
        return ec2_volumes.remove_snapshot_volumes(self, owner)

    # ---- certificates (Ec2Certificates) and the CA rotation's phases ------------------------

    def ca_rotation(self) -> dict[str, int]:
        return ec2_ca.recorded(self)

    def begin_ca_phase(self, phase: int) -> None:
        ec2_ca.begin(self, phase)

    def finish_ca_phase(self, phase: int) -> None:
        ec2_ca.finish(self, phase)

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
        # InvalidTarget: not registered, or the instance is gone: nothing to do
        with gone_already_if("InvalidTarget", f"deregistering {host.host_id}"):
            self.elbv2.deregister_targets(**request)

    # ---- preflight -----------------------------------------------------------------------

    def preflight(self, plan: PreflightPlan) -> list[Finding]:
        from etcdops.adapters.compute.ec2_preflight import preflight

        return preflight(self, plan)
