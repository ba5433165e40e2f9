"""Reads the tags of a registered cluster's AWS resources, the ones a function of the stack acts on
(:mod:`etcdops.domain.fleet_tags` says which must carry ``etcdops:fleet=<stack>`` and why).

Read-only calls with the caller's credentials (the operator's, as ``etcdops cluster add`` and ``cluster
check`` run), never a function's role: a resource the functions could not read is seen all the same.
They are ``secretsmanager:DescribeSecret`` (each ``tls`` secret) and ``ListSecrets`` (the secrets
under ``etcdops/<cluster>/``); with ``compute: {provider: ec2}`` also ``ec2:DescribeInstances`` (the
hosts tagged ``etcdops:cluster`` or ``etcdops:control-plane`` with the cluster's name),
``DescribeVolumes`` (their data volumes, which a volume backup snapshots), ``DescribeSnapshots`` (its
volume backups, which retention deletes), ``elasticloadbalancing:DescribeTargetGroups`` and
``DescribeTags`` (its target group).
A cluster with ``aws.role_arn`` is not read: its resources are reached with that role, whose own policy
decides, and the tag plays no part.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from etcdops.adapters.awserrors import aws_error, aws_error_code
from etcdops.adapters.compute.ec2_common import CLUSTER_TAG, CONTROL_PLANE_TAG, LIVE_STATES, MEMBER_TAG, _tags
from etcdops.domain.config import ClusterConfig, Ec2Compute
from etcdops.domain.fleet_tags import FleetAccess, FleetResource, StackScope, fleet_secret, tls_secret_problem

__all__ = ["read_fleet_access"]

_NOT_FOUND = {
    "ResourceNotFoundException",
    "TargetGroupNotFound",
    "TargetGroupNotFoundException",
    "LoadBalancerNotFound",
}


def read_fleet_access(session: Any, config: ClusterConfig, scope: StackScope) -> FleetAccess:
    """The resources of ``config``'s cluster a function of the stack of ``scope`` acts on, with their
    tags, and the problems no tag fixes; a refused or failed read is one line (:class:`AwsError`)."""
    access = FleetAccess()
    if config.aws is not None:
        access.skipped = (
            f"cluster {config.name} is reached with aws.role_arn {config.aws.role_arn}, whose own policy decides "
            "what the functions may do: no etcdops:fleet tag is needed"
        )
        return access
    tls = {f"tls.{name}": value for name, value in _tls_entries(config) if value.startswith("arn:")}
    compute = config.compute if isinstance(config.compute, Ec2Compute) else None
    if not tls and compute is None:
        access.skipped = (
            f"cluster {config.name} names no AWS resource the functions reach by tag (its TLS entries are not "
            "Secrets Manager secrets and it has no EC2 compute)"
        )
        return access
    reader = _Reader(session, config.name, access)
    reader.tls_secrets(tls, scope)
    reader.cluster_secrets()
    if compute is not None:
        reader.hosts()
        reader.snapshots()
        if compute.target_group_arn:
            reader.target_group(compute.target_group_arn)
    return access


def _tls_entries(config: ClusterConfig) -> list[tuple[str, str]]:
    if config.tls is None:
        return []
    entries = (("ca", config.tls.ca), ("cert", config.tls.cert), ("key", config.tls.key))
    return [(name, value) for name, value in entries if value]


class _Reader:
    def __init__(self, session: Any, cluster: str, access: FleetAccess) -> None:
        self.session, self.cluster, self.access = session, cluster, access
        self._clients: dict[str, Any] = {}

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = self.session.client(service)
        return self._clients[service]

    def call(self, what: str, call: Any, **params: Any) -> Any:
        """``call(**params)``; None when the resource does not exist; any other failure is one line."""
        try:
            return call(**params)
        except ClientError as exc:
            if aws_error_code(exc) in _NOT_FOUND:
                return None
            raise aws_error(f"cluster {self.cluster}: reading the tags of {what}", exc) from exc
        except BotoCoreError as exc:
            raise aws_error(f"cluster {self.cluster}: reading the tags of {what}", exc) from exc

    def listed(
        self, what: str, service: str, operation: str, items: Callable[[dict[str, Any]], Iterable[Any]], **params: Any
    ) -> list[dict[str, Any]]:
        """Every item of a paginated listing (``items`` picks them from a page), read as :meth:`call` reads."""
        found: list[dict[str, Any]] = []

        def listing() -> None:
            for page in self.client(service).get_paginator(operation).paginate(**params):
                found.extend(items(page))

        self.call(what, listing)
        return found

    def add(self, kind: Any, ident: str, why: str, tags: dict[str, str]) -> None:
        if all((r.kind, r.ident) != (kind, ident) for r in self.access.resources):
            self.access.resources.append(FleetResource(kind, ident, why, tags))

    def tls_secrets(self, tls: dict[str, str], scope: StackScope) -> None:
        secrets = self.client("secretsmanager")
        for field, arn in tls.items():
            problem = tls_secret_problem(field, arn, scope)
            if problem:
                self.access.problems.append(problem)
                continue
            described = self.call(f"secret {arn} ({field})", secrets.describe_secret, SecretId=arn)
            if described is None:
                self.access.problems.append(f"{field}: secret {arn} does not exist")
            elif described.get("DeletedDate"):
                self.access.problems.append(f"{field}: secret {arn} is scheduled for deletion")
            else:
                self.add("secret", described["Name"], field, _tags(described))

    def cluster_secrets(self) -> None:
        """The secrets named ``etcdops/<cluster>/...`` that a Fleet grant reaches (its CA, member
        certificates, a CA rotation's, issued clients, client TLS)."""
        prefix = f"etcdops/{self.cluster}/"
        found = self.listed(
            f"the secrets {prefix}*",
            "secretsmanager",
            "list_secrets",
            lambda page: page.get("SecretList", []),
            Filters=[{"Key": "name", "Values": [prefix]}],
        )
        for secret in sorted(found, key=lambda s: str(s["Name"])):
            name = str(secret["Name"])
            if name.startswith(prefix) and fleet_secret(str(secret["ARN"])):
                self.add("secret", name, _secret_role(name.removeprefix(prefix)), _tags(secret))

    def instances(self, tag: str) -> list[dict[str, Any]]:
        filters = [
            {"Name": "instance-state-name", "Values": list(LIVE_STATES)},
            {"Name": f"tag:{tag}", "Values": [self.cluster]},
        ]
        found = self.listed(
            f"the instances tagged {tag}={self.cluster}",
            "ec2",
            "describe_instances",
            lambda page: (i for r in page.get("Reservations", []) for i in r.get("Instances", [])),
            Filters=filters,
        )
        return sorted(found, key=lambda i: str(i["InstanceId"]))

    def hosts(self) -> None:
        """The cluster's hosts (commanded, retired, snapshotted), their data volumes, and its control-plane hosts."""
        volumes: dict[str, str] = {}
        for instance in self.instances(CLUSTER_TAG):
            member = _tags(instance).get(MEMBER_TAG)
            self.add("instance", instance["InstanceId"], f"member {member}" if member else "host", _tags(instance))
            for device in instance.get("BlockDeviceMappings", []):
                volume = (device.get("Ebs") or {}).get("VolumeId")
                if volume and device.get("DeviceName") != instance.get("RootDeviceName"):
                    volumes[volume] = instance["InstanceId"]
        for instance in self.instances(CONTROL_PLANE_TAG):
            self.add("instance", instance["InstanceId"], "control-plane host", _tags(instance))
        if volumes:
            ec2 = self.client("ec2")
            described = self.call("the hosts' data volumes", ec2.describe_volumes, VolumeIds=sorted(volumes))
            for volume in (described or {}).get("Volumes", []):
                self.add("volume", volume["VolumeId"], f"data volume of {volumes[volume['VolumeId']]}", _tags(volume))

    def snapshots(self) -> None:
        """The cluster's volume backups (retention deletes them)."""
        filters = [
            {"Name": f"tag:{CLUSTER_TAG}", "Values": [self.cluster]},
            {"Name": "tag:etcdops:kind", "Values": ["volume"]},
        ]
        found = self.listed(
            "its volume-backup snapshots",
            "ec2",
            "describe_snapshots",
            lambda page: page.get("Snapshots", []),
            OwnerIds=["self"],
            Filters=filters,
        )
        for snapshot in sorted(found, key=lambda s: str(s["SnapshotId"])):
            self.add("snapshot", snapshot["SnapshotId"], "volume backup", _tags(snapshot))

    def target_group(self, arn: str) -> None:
        """Its clients' target group (repointed at a new member): looked up first, as DescribeTags of one
        that does not exist is not refused everywhere."""
        elbv2 = self.client("elbv2")
        what = f"target group {arn}"
        if self.call(what, elbv2.describe_target_groups, TargetGroupArns=[arn]) is None:
            self.access.problems.append(f"compute.target_group_arn: target group {arn} does not exist")
            return
        found = (self.call(what, elbv2.describe_tags, ResourceArns=[arn]) or {}).get("TagDescriptions") or [{}]
        self.add("target-group", arn, "compute.target_group_arn", _tags(found[0]))


def _secret_role(rest: str) -> str:
    """What a secret under ``etcdops/<cluster>/`` is, by the rest of its name."""
    for start, role in (("client/", "client TLS"), ("members/", "member certificate"), ("clients/", "issued client")):
        if rest.startswith(start):
            return role
    return "cluster CA" if rest == "ca" else "CA rotation"
