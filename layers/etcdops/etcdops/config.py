"""The cluster configuration document: one per cluster, YAML or JSON, validated on load.

In AWS it lives in SSM Parameter Store and TLS material in Secrets Manager; locally it is a file
whose TLS entries are paths. Every validation error names the field it is about.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from etcdops.errors import ConfigError

_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")
_INSTANCE_ID = re.compile(r"^i-[0-9a-f]{8,17}$")
_SCHEDULE = re.compile(r"^(rate\(\d+ (minute|minutes|hour|hours|day|days)\)|cron\(.+\))$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsConfig(_Model):
    """Paths locally; Secrets Manager ARNs (``arn:aws:secretsmanager:...``) in AWS."""

    ca: str
    cert: str | None = None
    key: str | None = None

    @model_validator(mode="after")
    def _cert_and_key_together(self) -> TlsConfig:
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key must be given together")
        return self


class Ec2Discovery(_Model):
    tag_key: str = "etcdops:cluster"
    tag_value: str
    client_port: Annotated[int, Field(ge=1, le=65535)] = 2379


class RetentionConfig(_Model):
    keep_all_hours: Annotated[int, Field(ge=0)] = 24
    daily_days: Annotated[int, Field(ge=0)] = 7
    weekly_weeks: Annotated[int, Field(ge=0)] = 4
    min_age_minutes: Annotated[int, Field(ge=0)] = 60


class BackupConfig(_Model):
    destination: str
    encryption_key: str
    schedule: str = "rate(30 minutes)"
    compression: Literal["none", "zstd"] = "none"
    max_age_minutes: Annotated[int, Field(ge=1)] = 120
    retention: RetentionConfig = RetentionConfig()

    @field_validator("destination")
    @classmethod
    def _destination(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme == "s3" and parts.netloc:
            return value
        if parts.scheme == "file" and parts.path.startswith("/") and not parts.netloc:
            return value
        raise ValueError("must be s3://bucket/prefix or file:///absolute/path")

    @field_validator("encryption_key")
    @classmethod
    def _key(cls, value: str) -> str:
        # a key ARN, not an alias: decryption in strict mode must name the exact key
        if (value.startswith("arn:aws:kms:") and ":key/" in value) or value.startswith("file:///"):
            return value
        raise ValueError("must be a KMS key ARN (arn:aws:kms:...:key/...) or file:///path/to/local.key")

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        return _check_schedule(value)


class HealthConfig(_Model):
    schedule: str = "rate(1 minute)"
    probe_deadline_seconds: Annotated[float, Field(gt=0, le=30)] = 2.0
    failure_threshold: Annotated[int, Field(ge=1, le=100)] = 3
    failure_window_seconds: Annotated[int, Field(ge=0)] = 60
    quota_backend_bytes: Annotated[int, Field(gt=0)] = 2 * 1024**3
    certificate_warn_days: Annotated[int, Field(ge=1)] = 30
    # member name -> EC2 instance id, for EC2 events; members not listed are looked up by their
    # instance's tags (etcdops:member=<name>)
    member_instances: dict[str, str] = {}

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        return _check_schedule(value)

    @field_validator("member_instances")
    @classmethod
    def _member_instances(cls, value: dict[str, str]) -> dict[str, str]:
        owners: dict[str, str] = {}
        for name, instance in value.items():
            if not name:
                raise ValueError("member names must not be empty")
            if not _INSTANCE_ID.match(instance):
                raise ValueError(f"{name}: {instance!r} is not an EC2 instance id such as i-0123456789abcdef0")
            if instance in owners:
                raise ValueError(f"{name}: instance {instance} is already given for member {owners[instance]}")
            owners[instance] = name
        return value


class LocalCompute(_Model):
    provider: Literal["local"] = "local"
    state_dir: str


class Ec2Compute(_Model):
    provider: Literal["ec2"] = "ec2"
    launch_template: str
    subnets: list[str] = Field(min_length=1)
    target_group_arn: str | None = None
    ssm_documents: dict[str, str] = {}


class ClusterConfig(_Model):
    name: str
    endpoints: list[str] = []
    discovery: Ec2Discovery | None = None
    tls: TlsConfig | None = None
    plaintext: bool = False
    backup: BackupConfig | None = None
    health: HealthConfig = HealthConfig()
    approval: Literal["auto", "always"] = "auto"
    compute: LocalCompute | Ec2Compute | None = Field(default=None, discriminator="provider")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("must be 1-40 lowercase letters, digits or '-', not starting or ending with '-'")
        return value

    @field_validator("endpoints")
    @classmethod
    def _endpoints(cls, value: list[str]) -> list[str]:
        for i, endpoint in enumerate(value):
            parts = urlsplit(endpoint)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"[{i}] {endpoint!r} is not an http(s)://host:port URL")
            try:
                port = parts.port
            except ValueError:
                port = None
            if port is None:
                raise ValueError(f"[{i}] {endpoint!r} has no valid port")
        return value

    @model_validator(mode="after")
    def _transport(self) -> ClusterConfig:
        if not self.endpoints and self.discovery is None:
            raise ValueError("endpoints: give endpoints or a discovery filter")
        schemes = {urlsplit(e).scheme for e in self.endpoints}
        if self.plaintext:
            if "https" in schemes:
                raise ValueError("endpoints: https endpoints with plaintext: true")
        else:
            if "http" in schemes:
                raise ValueError("endpoints: http:// endpoints need plaintext: true (TLS is the default)")
            if self.tls is None:
                raise ValueError("tls: required unless plaintext: true")
        return self


def _check_schedule(value: str) -> str:
    if not _SCHEDULE.match(value):
        raise ValueError("must be an EventBridge expression such as rate(5 minutes) or cron(0 * * * ? *)")
    return value


def parse_config(document: dict[str, Any], source: str = "config") -> ClusterConfig:
    """Validate a configuration document; the error names the first bad field."""
    if not isinstance(document, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    try:
        return ClusterConfig.model_validate(document)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {describe_validation_error(exc)}") from None


def describe_validation_error(exc: ValidationError) -> str:
    """One line: the dotted field path and what is wrong with it (and how many more errors)."""
    errors = exc.errors()
    first = errors[0]
    path = ".".join(str(p) for p in first["loc"] if p not in ("local", "ec2"))
    message = first["msg"].removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    # model-level checks already start their message with the field they are about
    return f"{path}: {message}{more}" if path else f"{message}{more}"


def load_config(path: Path) -> ClusterConfig:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    return loads_config(text, str(path))


def loads_config(text: str, source: str = "config") -> ClusterConfig:
    try:
        document = json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{source}: not valid YAML/JSON: {str(exc).splitlines()[0]}") from None
    return parse_config(document, source)


def dump_config(config: ClusterConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json", exclude_none=True), sort_keys=False)
