"""What the EC2 provider's parts share: the tags that mark a cluster's instances and secrets, and the one
translation of a failed AWS call into the provider's errors."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

from etcdops.adapters.awserrors import aws_error, aws_error_code
from etcdops.domain.compute.errors import ComputeApiError, ComputeApiUnavailableError
from etcdops.domain.fleet_tags import FLEET_TAG  # the deployment (stack) whose fleet a resource is of

__all__ = [
    "CLUSTER_TAG",
    "CONTROL_PLANE_TAG",
    "FLEET_TAG",
    "INSTANCE_ARN_TAG",
    "LIVE_STATES",
    "MEMBER_TAG",
    "SecretState",
]

CLUSTER_TAG = "etcdops:cluster"
MEMBER_TAG = "etcdops:member"
CONTROL_PLANE_TAG = "etcdops:control-plane"
INSTANCE_ARN_TAG = "etcdops:instance-arn"
LIVE_STATES = ("pending", "running", "stopping", "stopped")
# "denied": not readable by this role, which for a registered cluster's secret (granted by its etcdops:fleet
# tag) is what AWS answers for one that does not exist yet: creating it (tagged so) tells the two apart
SecretState = Literal["missing", "deleted", "present", "denied"]
_DENIED_CODES = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "UnauthorizedAccess"}


def _api_error(what: str, exc: Exception) -> ComputeApiError:
    """The compute provider's error for a failed AWS call (etcdops.adapters.awserrors decides which)."""
    return aws_error(what, exc, refused=ComputeApiError, unavailable=ComputeApiUnavailableError)


@contextmanager
def gone_already_if(code: str, what: str) -> Iterator[None]:
    """Around the AWS calls that remove something: the error ``code`` says it is gone already (a retry
    converges), so it passes; any other failure raises the provider's error about ``what``."""
    try:
        yield
    except ClientError as exc:
        if aws_error_code(exc) != code:
            raise _api_error(what, exc) from exc
    except BotoCoreError as exc:
        raise _api_error(what, exc) from exc


def _tags(resource: Mapping[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags", [])}


def _partition(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"
