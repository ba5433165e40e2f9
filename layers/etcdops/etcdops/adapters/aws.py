"""The AWS side of a cluster: its configuration in SSM, TLS material in Secrets Manager, SNS.

Every function takes its boto3 clients as arguments; nothing here creates one at import.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from etcdops.adapters.awserrors import aws_error, aws_error_code
from etcdops.domain.config import ClusterConfig, loads_config
from etcdops.domain.errors import ConfigError


class ClusterNotConfiguredError(ConfigError):
    """The SSM parameter for the cluster configuration does not exist: the stack is deployed, not configured yet."""


def load_cluster_config(ssm: Any, parameter: str, expected_name: str | None = None) -> ClusterConfig:
    """The cluster configuration in SSM parameter ``parameter``.

    :class:`ClusterNotConfiguredError` when the parameter does not exist yet; a :class:`ConfigError`
    naming the field when it is invalid, or when it names another cluster than ``expected_name`` (the
    stack's ClusterName, which its alarms, dashboard and IAM policies are scoped to).
    """
    config = loads_config(SsmConfigParameter(ssm, parameter).read(), f"ssm:{parameter}")
    if expected_name is not None and config.name != expected_name:
        raise ConfigError(
            f"ssm:{parameter}: name: {config.name!r}, but this stack was deployed for cluster {expected_name!r} "
            "(ClusterName; its alarms, dashboard and IAM policies are scoped to that name): deploy with "
            f"ClusterName={config.name} or fix the configuration's name"
        )
    return config


class SsmConfigParameter:
    """The cluster configuration document in an SSM parameter (a :class:`etcdops.adapters.etcd.membership.ConfigStore`).

    A write keeps what the operator chose for the parameter: its type (a SecureString stays a
    SecureString, under the same KMS key), tier and data type; only the value changes. It needs
    ``ssm:PutParameter`` on the parameter and ``ssm:DescribeParameters`` (which has no resource-level
    permissions) to read the tier and key.
    """

    def __init__(self, ssm: Any, name: str) -> None:
        self.ssm = ssm
        self.name = name

    @property
    def where(self) -> str:
        return f"ssm:{self.name}"

    def read(self) -> str:
        try:
            value: str = self.ssm.get_parameter(Name=self.name, WithDecryption=True)["Parameter"]["Value"]
        except ClientError as exc:
            if aws_error_code(exc) == "ParameterNotFound":
                raise ClusterNotConfiguredError(
                    f"CLUSTER_CONFIG_PARAMETER: SSM parameter {self.name} does not exist: not configured yet "
                    "(put the cluster configuration there)"
                ) from None
            raise aws_error(f"reading SSM parameter {self.name}", exc) from exc
        except BotoCoreError as exc:
            raise aws_error(f"reading SSM parameter {self.name}", exc) from exc
        return value

    def _metadata(self) -> dict[str, Any]:
        try:
            found = self.ssm.describe_parameters(ParameterFilters=[{"Key": "Name", "Values": [self.name]}])
        except (ClientError, BotoCoreError) as exc:
            raise aws_error(f"describing SSM parameter {self.name}", exc) from exc
        for parameter in found.get("Parameters", []):
            if parameter.get("Name") == self.name:
                metadata: dict[str, Any] = parameter
                return metadata
        raise ConfigError(f"CLUSTER_CONFIG_PARAMETER: SSM parameter {self.name} does not exist")

    def write(self, text: str) -> None:
        """One PutParameter (atomic: readers get the old or the new version) with the same type,
        tier, key and data type."""
        metadata = self._metadata()
        request: dict[str, Any] = {
            "Name": self.name,
            "Value": text,
            "Type": metadata.get("Type", "String"),
            "Overwrite": True,
        }
        if metadata.get("Tier"):
            request["Tier"] = metadata["Tier"]
        if metadata.get("DataType"):
            request["DataType"] = metadata["DataType"]
        if request["Type"] == "SecureString" and metadata.get("KeyId"):
            request["KeyId"] = metadata["KeyId"]
        try:
            self.ssm.put_parameter(**request)
        except (ClientError, BotoCoreError) as exc:
            raise aws_error(f"writing SSM parameter {self.name}", exc) from exc


def materialize_tls(config: ClusterConfig, secrets: Any, directory: Path) -> ClusterConfig:
    """Fetch Secrets Manager TLS entries into files (0600) under ``directory``; paths stay paths."""
    if config.tls is None:
        return config
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    resolved: dict[str, str | None] = {}
    for field in ("ca", "cert", "key"):
        value: str | None = getattr(config.tls, field)
        if value and value.startswith("arn:aws:secretsmanager:"):
            try:
                secret = secrets.get_secret_value(SecretId=value)["SecretString"]
            except (ClientError, BotoCoreError) as exc:
                raise aws_error(f"tls.{field}: reading secret {value}", exc) from exc
            path = directory / f"{config.name}-{field}.pem"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secret)
            value = str(path)
        resolved[field] = value
    return config.model_copy(update={"tls": config.tls.model_copy(update=resolved)})


ASSUMED_SESSION_SECONDS = 3600
"""How long assumed credentials last: longer than any invocation (RunbookStep's limit is 900 s)."""


def role_session_name(function: str, cluster: str) -> str:
    """The STS session name of ``function`` acting for ``cluster`` (what CloudTrail in the cluster's
    account shows): ``etcdops-<function>-<cluster>``, at most the 64 characters STS takes."""
    return f"etcdops-{function}-{cluster}"[:64]


def cluster_session(session: Any, config: ClusterConfig, function: str) -> Any:
    """The boto3 session for ``config``'s EC2, SSM and Secrets Manager calls: ``session`` itself, or with
    ``aws.role_arn`` in the configuration a session of that role (one STS AssumeRole, with the
    configured external id). A refused or failed assume is one line naming the cluster and the role
    (:class:`~etcdops.adapters.awserrors.AwsError`, retryable when the failure is transient), raised before
    any of the cluster's resources is touched."""
    access = config.aws
    if access is None:
        return session
    request: dict[str, Any] = {
        "RoleArn": access.role_arn,
        "RoleSessionName": role_session_name(function, config.name),
        "DurationSeconds": ASSUMED_SESSION_SECONDS,
    }
    if access.external_id is not None:
        request["ExternalId"] = access.external_id
    sts = session.client("sts")
    try:
        credentials = sts.assume_role(**request)["Credentials"]
    except (ClientError, BotoCoreError) as exc:
        raise aws_error(f"cluster {config.name}: assuming aws.role_arn {access.role_arn}", exc) from exc
    import boto3

    return boto3.session.Session(
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
        region_name=sts.meta.region_name,
    )


class Notifier:
    """Publishes operator messages; :class:`SnsNotifier` in AWS, a list in the local stack."""

    def publish(self, subject: str, message: str, attributes: Mapping[str, str] | None = None) -> None:
        raise NotImplementedError


class SnsNotifier(Notifier):
    def __init__(self, sns: Any, topic_arn: str) -> None:
        self.sns = sns
        self.topic_arn = topic_arn

    def publish(self, subject: str, message: str, attributes: Mapping[str, str] | None = None) -> None:
        try:
            self.sns.publish(
                TopicArn=self.topic_arn,
                Subject=subject[:100],
                Message=message,
                MessageAttributes={k: {"DataType": "String", "StringValue": v} for k, v in (attributes or {}).items()},
            )
        except (ClientError, BotoCoreError) as exc:
            raise aws_error(f"publishing to {self.topic_arn}", exc) from exc


class MemoryNotifier(Notifier):
    """Keeps messages in memory (the local stack shows them; tests read them)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str, dict[str, str]]] = []

    def publish(self, subject: str, message: str, attributes: Mapping[str, str] | None = None) -> None:
        self.messages.append((subject, message, dict(attributes or {})))
