"""EC2 and SSM in the emulated AWS, saying no where AWS says no to a launch or a host command.

The runbooks' preflight asks AWS whether a launch and the host commands would work (a ``DryRun`` of
``RunInstances``, ``DescribeInstanceInformation``, ``DescribeDocument``). moto (5.2, pinned) answers
yes where AWS answers no:

- ``RunInstances`` with ``DryRun`` answers ``DryRunOperation`` before it looks at anything: not at
  the launch template, the subnet, the AMI, nor ``iam:PassRole`` on the instance profile's role;
- a real ``RunInstances`` fails with an internal error for an unknown launch template id, accepts
  unknown AMIs, never checks ``iam:PassRole`` and drops the launch template's instance profile;
- ``DescribeInstanceInformation`` does not exist;
- ``SendCommand`` accepts any document name and any instance id;
- ``AttachVolume`` attaches a volume to an instance of another availability zone.

:func:`strict_compute` patches moto's response classes (process-wide, undone on exit) so that
``RunInstances``, dry or not, first resolves the launch template (its default version, or the one
asked for), the subnet, the AMI and the instance profile, refuses network interfaces next to a
subnet, and, with moto's IAM access control on, refuses a caller who may not pass the profile's
role (``UnauthorizedOperation``), as AWS authorizes a launch; only then does ``DryRun`` answer
``DryRunOperation``. A real launch keeps the template's instance profile. An instance counts as
registered with SSM when it has an instance profile (the role that lets its agent in): ``Online``
while running, ``ConnectionLost`` while stopped. ``SendCommand`` refuses unknown documents
(``InvalidDocument``) and instances that are not online (``InvalidInstanceId``); ``AttachVolume``
refuses a volume of another zone (``InvalidVolume.ZoneMismatch``).

moto is a development dependency: it is imported inside the functions, so the layer imports this
module without it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any


@contextmanager
def strict_compute() -> Iterator[None]:
    """moto's EC2 and SSM as strict as AWS for launches and host commands, while the block runs."""
    undo = patch_compute()
    try:
        yield
    finally:
        undo()


def patch_compute() -> Callable[[], None]:
    """Apply the patches of :func:`strict_compute`; returns the function that undoes them."""
    from moto.ec2.responses.instances import InstanceResponse
    from moto.ssm.responses import SimpleSystemManagerResponse

    original_run = InstanceResponse.run_instances
    original_send = SimpleSystemManagerResponse.send_command

    def run_instances(self: Any) -> Any:
        profile = _check_launch(self)
        result = original_run(self)  # answers DryRunOperation now, having checked what AWS checks
        if profile is not None and not (
            self._get_param("IamInstanceProfile.Name") or self._get_param("IamInstanceProfile.Arn")
        ):
            for instance in getattr(result.result, "instances", []):  # the template's profile, which moto leaves out
                self.ec2_backend.associate_iam_instance_profile(
                    instance_id=instance.id, iam_instance_profile_arn=profile.arn
                )
        return result

    def send_command(self: Any) -> Any:
        from moto.ssm.exceptions import SSMException

        self.ssm_backend._get_documents(self._get_param("DocumentName"))  # InvalidDocument if missing
        status = _ping_status(self.current_account, self.region)
        offline = [i for i in self._get_param("InstanceIds", []) if status.get(i) != "Online"]
        if offline:
            raise SSMException("InvalidInstanceId", f"Instances {offline} not in a valid state for account")
        return original_send(self)

    InstanceResponse.run_instances = run_instances  # type: ignore[method-assign]
    SimpleSystemManagerResponse.send_command = send_command  # type: ignore[method-assign]
    SimpleSystemManagerResponse.describe_instance_information = _describe_instance_information  # type: ignore[attr-defined]

    undo_volumes = _patch_volumes()

    def undo() -> None:
        undo_volumes()
        InstanceResponse.run_instances = original_run  # type: ignore[method-assign]
        SimpleSystemManagerResponse.send_command = original_send  # type: ignore[method-assign]
        del SimpleSystemManagerResponse.describe_instance_information  # type: ignore[attr-defined]

    return undo


def _describe_instance_information(self: Any) -> Any:
    """SSM's DescribeInstanceInformation (moto has none): the instances' agents as :func:`_ping_status` has them."""
    from moto.core.responses import ActionResult

    wanted: set[str] | None = None
    for entry in self._get_param("Filters", []) or []:
        if entry.get("Key") == "InstanceIds":
            wanted = set(entry.get("Values") or [])
    for entry in self._get_param("InstanceInformationFilterList", []) or []:
        if entry.get("key") == "InstanceIds":
            wanted = set(entry.get("valueSet") or [])
    now = datetime.now(UTC)
    listed = [
        {
            "InstanceId": instance_id,
            "PingStatus": ping,
            "LastPingDateTime": now,
            "PlatformType": "Linux",
            "ResourceType": "EC2Instance",
            "AgentVersion": "3.3.0.0",
            "IsLatestVersion": True,
        }
        for instance_id, ping in sorted(_ping_status(self.current_account, self.region).items())
        if wanted is None or instance_id in wanted
    ]
    return ActionResult({"InstanceInformationList": listed})


def _patch_volumes() -> Callable[[], None]:
    """``AttachVolume`` refuses a volume of another zone than the instance's (moto attaches any)."""
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.responses.elastic_block_store import ElasticBlockStore

    original_attach = ElasticBlockStore.attach_volume

    def attach_volume(self: Any) -> Any:
        volume = self.ec2_backend.get_volume(self._get_param("VolumeId"))
        instance = self.ec2_backend.get_instance(self._get_param("InstanceId"))
        zone = getattr(volume.zone, "name", volume.zone)
        if zone != getattr(instance.placement, "zone", instance.placement):
            raise EC2ClientError(
                "InvalidVolume.ZoneMismatch",
                f"The volume '{volume.id}' is not in the same availability zone as instance '{instance.id}'",
            )
        return original_attach(self)

    ElasticBlockStore.attach_volume = attach_volume  # type: ignore[method-assign]

    def undo() -> None:
        ElasticBlockStore.attach_volume = original_attach  # type: ignore[method-assign]

    return undo


def _check_launch(response: Any) -> Any:
    """What AWS checks before it launches (or answers a dry run); returns the template's instance profile."""
    from moto.ec2.exceptions import (
        InvalidAMIIdError,
        InvalidLaunchTemplateIdNotFound,
        InvalidLaunchTemplateNameNotFoundWithNameError,
        InvalidParameterCombination,
    )

    backend = response.ec2_backend
    template_arg = response._get_param("LaunchTemplate", {}) or {}
    data: dict[str, Any] = {}
    if template_arg:
        if template_arg.get("LaunchTemplateId"):
            template_id = template_arg["LaunchTemplateId"]
            if template_id not in backend.launch_templates:
                raise InvalidLaunchTemplateIdNotFound(template_id)
            template = backend.launch_templates[template_id]
        else:
            name = template_arg.get("LaunchTemplateName", "")
            if name not in backend.launch_template_name_to_ids:
                raise InvalidLaunchTemplateNameNotFoundWithNameError(name)
            template = backend.launch_templates[backend.launch_template_name_to_ids[name]]
        version = template_arg.get("Version") or template.default_version_number
        data = template.get_version(version).data  # InvalidLaunchTemplateVersion.NotFound if missing
    subnet = response._get_param("SubnetId")
    if subnet:
        backend.get_subnet(subnet)  # InvalidSubnetID.NotFound
        if data.get("NetworkInterfaces") or response._get_param("NetworkInterfaces"):
            raise InvalidParameterCombination(
                "Network interfaces and an instance-level subnet ID may not be specified on the same request"
            )
    image = response._get_param("ImageId") or data.get("ImageId")
    if image and not backend.describe_images(ami_ids=[image]):
        raise InvalidAMIIdError(image)
    profile_arg = {
        "Name": response._get_param("IamInstanceProfile.Name"),
        "Arn": response._get_param("IamInstanceProfile.Arn"),
    }
    if not (profile_arg["Name"] or profile_arg["Arn"]):
        profile_arg = dict(data.get("IamInstanceProfile") or {})
    if not (profile_arg.get("Name") or profile_arg.get("Arn")):
        return None
    profile = _instance_profile(response, profile_arg)
    for role in profile.roles:
        _check_pass_role(response, role.arn)
    return profile


def _instance_profile(response: Any, profile: dict[str, Any]) -> Any:
    from moto.ec2.exceptions import EC2ClientError
    from moto.iam.models import iam_backends

    iam = iam_backends[response.current_account][response.partition]
    try:
        if profile.get("Arn"):
            return iam.get_instance_profile_by_arn(profile["Arn"])
        return iam.get_instance_profile(profile["Name"])
    except Exception:  # moto's IAMNotFoundException; AWS answers with the EC2 error below
        name = profile.get("Arn") or profile.get("Name")
        raise EC2ClientError(
            "InvalidParameterValue",
            f"Value ({name}) for parameter iamInstanceProfile.name is invalid. Invalid IAM Instance Profile name",
        ) from None


def _check_pass_role(response: Any, role_arn: str) -> None:
    """With moto's IAM access control on, the caller must be allowed iam:PassRole on ``role_arn``."""
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.core.exceptions import AccessDeniedError
    from moto.ec2.exceptions import EC2ClientError
    from moto.iam.access_control import IAMRequest

    if ActionAuthenticatorMixin.request_count < settings.INITIAL_NO_AUTH_ACTION_COUNT:
        return  # access control is off: every caller may do everything
    from etcdops_local.aws import iam as localiam

    if localiam.active():
        return  # the local stack's IAM authorized the launch already, iam:PassRole (with its conditions) included
    request = IAMRequest(
        account_id=response.current_account,
        method=response.method,
        path=response.raw_path,
        data=response.data,
        body=response.raw_body,
        headers=response.headers,
        action="PassRole",
    )
    request._action = "iam:PassRole"
    try:
        request.check_action_permitted(role_arn)
    except AccessDeniedError:
        caller = request._access_key.arn
        raise EC2ClientError(
            "UnauthorizedOperation",
            f"You are not authorized to perform this operation. User: {caller} is not authorized to perform: "
            f"iam:PassRole on resource: {role_arn} because no identity-based policy allows the iam:PassRole action",
        ) from None


def _ping_status(account: str, region: str) -> dict[str, str]:
    """instance id -> PingStatus of the instances an SSM agent would have registered."""
    from moto.ec2.models import ec2_backends

    backend = ec2_backends[account][region]
    with_profile = set(backend.iam_instance_profile_associations)
    status = {}
    for reservation in backend.reservations.values():
        for instance in reservation.instances:
            if instance.id not in with_profile:
                continue
            state = instance.state
            if state == "running":
                status[instance.id] = "Online"
            elif state in ("stopping", "stopped"):
                status[instance.id] = "ConnectionLost"
    return status
