"""The AWS parts of a cluster's configuration document (:mod:`etcdops.domain.config`): where its members
live in EC2 (``compute: {provider: ec2}``) and how the functions reach its AWS resources (``aws``)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ConfigModel(BaseModel):
    """A part of the configuration document: unknown fields refused, immutable once read."""

    model_config = ConfigDict(extra="forbid", frozen=True)


_SUBNET_ID = re.compile(r"subnet-([0-9a-f]{8}|[0-9a-f]{17})")
_SECURITY_GROUP_ID = re.compile(r"sg-([0-9a-f]{8}|[0-9a-f]{17})")


def _ids(value: list[str], pattern: re.Pattern[str], kind: str) -> list[str]:
    """``value`` if every entry is an EC2 id of ``kind`` (``subnet``, ``sg``) and none repeats."""
    for i, item in enumerate(value):
        if not pattern.fullmatch(item):
            raise ValueError(f"[{i}] {item!r} is not a {kind} id ({kind}- and 8 or 17 hex digits)")
        if item in value[:i]:
            raise ValueError(f"[{i}] {item!r} is listed twice")
    return value


class Ec2Compute(ConfigModel):
    """Where a cluster's members live in EC2: each cluster of a fleet has its own subnets and security
    groups (launches of replacements, new members and drill scratch hosts use them)."""

    provider: Literal["ec2"] = "ec2"
    launch_template: str
    subnets: list[str] = Field(min_length=1)
    # empty: the launch template's security groups
    security_groups: list[str] = []
    target_group_arn: str | None = None
    ssm_documents: dict[str, str] = {}

    @field_validator("subnets")
    @classmethod
    def _subnets(cls, value: list[str]) -> list[str]:
        return _ids(value, _SUBNET_ID, "subnet")

    @field_validator("security_groups")
    @classmethod
    def _security_groups(cls, value: list[str]) -> list[str]:
        return _ids(value, _SECURITY_GROUP_ID, "sg")


_ROLE_ARN = re.compile(r"arn:aws(-cn|-us-gov)?:iam::\d{12}:role/([\w+=,.@-]+/)*[\w+=,.@-]{1,64}")
_EXTERNAL_ID = re.compile(r"[\w+=,.@:/-]{2,1224}")


class AwsAccess(ConfigModel):
    """How the functions reach this cluster's AWS resources: by default with their own role; with
    ``role_arn`` (typically another account's) they assume that role (STS AssumeRole, with
    ``external_id`` when its trust policy asks for one) for the cluster's EC2, SSM and Secrets Manager calls."""

    role_arn: str
    external_id: str | None = None

    @field_validator("role_arn")
    @classmethod
    def _role_arn(cls, value: str) -> str:
        if not _ROLE_ARN.fullmatch(value):
            raise ValueError(f"{value!r} is not an IAM role ARN (arn:aws:iam::<12-digit account>:role/<name>)")
        return value

    @field_validator("external_id")
    @classmethod
    def _external_id(cls, value: str | None) -> str | None:
        if value is not None and not _EXTERNAL_ID.fullmatch(value):
            raise ValueError("must be 2-1224 letters, digits or any of +=,.@:/-_")
        return value


