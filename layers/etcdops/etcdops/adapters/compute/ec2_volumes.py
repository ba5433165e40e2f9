"""A whole-cluster restore from one member's EBS volume backup (the EC2 provider): a new volume from the
snapshot for each restored host, in the host's own zone, attached to it while RestoreDataDir reads
etcd's database off it (``ebs://<volume id>``), then detached and deleted.

Every volume is tagged with the cluster, the member and the restore that made it (``etcdops:restore`` =
the execution), so a retry finds the volume it made instead of making a second, and the clean-up (also
the Catch path's) finds every volume of that restore. Each function converges when called again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from etcdops.adapters.awserrors import aws_error_code
from etcdops.adapters.compute.ec2_common import gone_already_if
from etcdops.domain.compute.base import Host
from etcdops.domain.compute.errors import ComputeApiError, ComputeConfigError, HostCommandTimeoutError

if TYPE_CHECKING:
    from etcdops.adapters.compute.ec2 import Ec2ComputeProvider

RESTORE_TAG = "etcdops:restore"
_DEVICES = tuple(f"/dev/sd{letter}" for letter in "fghijklmnop")


def _api_error(what: str, exc: Exception) -> ComputeApiError:
    from etcdops.adapters.compute.ec2 import _api_error as make

    return make(what, exc)


def _tags(resource: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags", [])}


def snapshot_problem(provider: Ec2ComputeProvider, snapshot_id: str) -> str | None:
    """Why ``snapshot_id`` is no volume backup of this cluster to restore from (yet), or None."""
    try:
        found = provider.ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"]
    except ClientError as exc:
        if aws_error_code(exc) in ("InvalidSnapshot.NotFound", "InvalidSnapshotID.Malformed"):
            return f"snapshot {snapshot_id} does not exist (deleted, or in another account or region)"
        raise _api_error(f"describing snapshot {snapshot_id}", exc) from exc
    except BotoCoreError as exc:
        raise _api_error(f"describing snapshot {snapshot_id}", exc) from exc
    if not found:
        return f"snapshot {snapshot_id} does not exist (deleted, or in another account or region)"
    snapshot = found[0]
    tags = _tags(snapshot)
    if tags.get("etcdops:cluster") != provider.cluster or tags.get("etcdops:kind") != "volume":
        return f"snapshot {snapshot_id} is not a volume backup of cluster {provider.cluster} (its etcdops tags)"
    if snapshot.get("State") != "completed":
        progress = snapshot.get("Progress") or "?"
        state = snapshot.get("State")
        return f"snapshot {snapshot_id} is {state} ({progress}), not completed: wait for it or choose another"
    return _volume_refused(provider, snapshot_id)


def _volume_refused(provider: Ec2ComputeProvider, snapshot_id: str) -> str | None:
    """A ``DryRun`` of the ``CreateVolume`` a restore sends (in the first subnet's zone, with its tags):
    why EC2 would refuse it, or None (invariant 13: proven before anything is stopped)."""
    try:
        subnet = provider.ec2.describe_subnets(SubnetIds=list(provider.settings.subnets[:1]))["Subnets"][0]
        provider.ec2.create_volume(
            DryRun=True, AvailabilityZone=subnet["AvailabilityZone"], SnapshotId=snapshot_id, VolumeType="gp3",
            TagSpecifications=[{"ResourceType": "volume", "Tags": [
                {"Key": "etcdops:cluster", "Value": provider.cluster}, {"Key": RESTORE_TAG, "Value": "preflight"}]}],
        )  # fmt: skip
    except ClientError as exc:
        code = aws_error_code(exc)
        if code == "DryRunOperation":
            return None
        if code in ("UnauthorizedOperation", "AccessDenied", "AccessDeniedException"):
            return (
                f"a volume of snapshot {snapshot_id} may not be made (ec2:CreateVolume refused: {code}); allow the "
                "RunbookStep role the restore statements of template.yaml"
            )
        raise _api_error(f"checking a volume of {snapshot_id} (dry run)", exc) from exc
    except (BotoCoreError, IndexError, KeyError) as exc:
        raise _api_error(f"checking a volume of {snapshot_id} (dry run)", exc) from exc
    return None


def _wait(provider: Ec2ComputeProvider, what: str, done: Callable[[], bool]) -> None:
    deadline = provider._clock() + provider.max_wait_seconds
    while not done():
        if provider._clock() >= deadline:
            raise HostCommandTimeoutError(f"{what}: not done within {provider.max_wait_seconds:.0f} s")
        provider._sleep(provider.poll_seconds)


def _volumes(provider: Ec2ComputeProvider, *filters: dict[str, Any]) -> list[dict[str, Any]]:
    try:
        pages = provider.ec2.get_paginator("describe_volumes").paginate(
            Filters=[{"Name": "tag:etcdops:cluster", "Values": [provider.cluster]}, *filters]
        )
        return [v for page in pages for v in page.get("Volumes", []) if v.get("State") not in ("deleting", "deleted")]
    except (ClientError, BotoCoreError) as exc:
        raise _api_error("describing volumes", exc) from exc


def _volume(provider: Ec2ComputeProvider, volume_id: str) -> dict[str, Any]:
    found = _volumes(provider, {"Name": "volume-id", "Values": [volume_id]})
    if not found:
        raise ComputeApiError(f"volume {volume_id} disappeared")
    return found[0]


def attach_snapshot_volume(provider: Ec2ComputeProvider, host: Host, snapshot_id: str, owner: str) -> str:
    """The volume of ``owner``'s restore for ``host``: made from ``snapshot_id`` in the instance's zone
    (a volume attaches only to an instance of its own zone), attached; ``ebs://<volume id>``."""
    problem = snapshot_problem(provider, snapshot_id)
    if problem:
        raise ComputeConfigError(problem)
    instance = provider._find_instance(host.name)
    if instance is None or instance["InstanceId"] != host.host_id:
        raise ComputeConfigError(f"host {host.name} ({host.host_id}) is not a live instance of {provider.cluster}")
    zone = str(instance["Placement"]["AvailabilityZone"])
    mine = _volumes(
        provider,
        {"Name": f"tag:{RESTORE_TAG}", "Values": [owner]},
        {"Name": "tag:etcdops:member", "Values": [host.name]},
    )
    volume = mine[0] if mine else _create(provider, host, snapshot_id, owner, zone)
    volume_id = str(volume["VolumeId"])
    _wait(
        provider, f"volume {volume_id} from {snapshot_id}", lambda: _volume(provider, volume_id)["State"] != "creating"
    )
    attached = [a for a in _volume(provider, volume_id).get("Attachments", []) if a.get("InstanceId") == host.host_id]
    if not attached:
        used = {m.get("DeviceName") for m in instance.get("BlockDeviceMappings", [])}
        device = next(d for d in _DEVICES if d not in used)
        try:
            provider.ec2.attach_volume(VolumeId=volume_id, InstanceId=host.host_id, Device=device)
        except (ClientError, BotoCoreError) as exc:
            raise _api_error(f"attaching volume {volume_id} to {host.host_id} ({host.name})", exc) from exc

    def is_attached() -> bool:
        attachments = _volume(provider, volume_id).get("Attachments", [])
        return any(a.get("InstanceId") == host.host_id and a.get("State") == "attached" for a in attachments)

    _wait(provider, f"attaching volume {volume_id} to {host.host_id}", is_attached)
    return f"ebs://{volume_id}"


def _create(provider: Ec2ComputeProvider, host: Host, snapshot_id: str, owner: str, zone: str) -> dict[str, Any]:
    tags = {"etcdops:cluster": provider.cluster, "etcdops:member": host.name, RESTORE_TAG: owner,
            "Name": f"etcd-{provider.cluster}-{host.name}-restore"}  # fmt: skip
    try:
        return dict(
            provider.ec2.create_volume(
                AvailabilityZone=zone,
                SnapshotId=snapshot_id,
                VolumeType="gp3",
                TagSpecifications=[
                    {"ResourceType": "volume", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
                ],
            )
        )
    except (ClientError, BotoCoreError) as exc:
        raise _api_error(f"creating a volume from {snapshot_id} in {zone} for {host.name}", exc) from exc


def remove_snapshot_volumes(provider: Ec2ComputeProvider, owner: str) -> list[str]:
    """Detach and delete every volume of ``owner``'s restore (the hosts read them already, or failed)."""
    removed = []
    for volume in _volumes(provider, {"Name": f"tag:{RESTORE_TAG}", "Values": [owner]}):
        volume_id = str(volume["VolumeId"])
        with gone_already_if("InvalidVolume.NotFound", f"removing restore volume {volume_id}"):
            for attachment in volume.get("Attachments", []):
                if attachment.get("State") in ("attaching", "attached"):
                    provider.ec2.detach_volume(VolumeId=volume_id, InstanceId=attachment["InstanceId"])
            _wait(provider, f"detaching volume {volume_id}", _free_check(provider, volume_id))
            provider.ec2.delete_volume(VolumeId=volume_id)
        removed.append(volume_id)
    return removed


def _free_check(provider: Ec2ComputeProvider, volume_id: str) -> Callable[[], bool]:
    def free() -> bool:
        found = _volumes(provider, {"Name": "volume-id", "Values": [volume_id]})
        return not found or found[0].get("State") == "available"

    return free
