"""The cluster configuration document: one per cluster, YAML or JSON, validated on load.

In AWS it lives in SSM Parameter Store and TLS material in Secrets Manager; locally it is a file
whose TLS entries are paths. Every validation error names the field it is about.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from etcdops.domain.config_aws import AwsAccess, Ec2Compute
from etcdops.domain.config_aws import ConfigModel as _Model
from etcdops.domain.errors import ConfigError

# matched with fullmatch: "$" alone would let a trailing newline through ("local\n")
_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?")
NAME_RULE = "must be 1-40 lowercase letters, digits or '-', not starting or ending with '-'"


def check_cluster_name(name: str) -> str:
    """``name`` if it is a valid cluster name, else a one-line :class:`ConfigError` saying why."""
    if not _NAME.fullmatch(name):
        raise ConfigError(f"cluster name {name!r}: {NAME_RULE}")
    return name


_INSTANCE_ID = re.compile(r"i-[0-9a-f]{8,17}")
_RATE = re.compile(r"rate\((\d+) (minute|hour|day)(s?)\)")
_CRON = re.compile(r"cron\([^\n]+\)")




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
    # a snapshot object without a manifest (a run that failed before writing it) is removed after this
    orphan_grace_hours: Annotated[int, Field(ge=1)] = 24


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
    # a CA the clients trust (tls.ca) that expires within this many days is notified once, asking for a CA
    # rotation (a human starts it: runbook start rotate-certs --ca); the CaExpiryDaysThreshold alarm's default
    ca_warn_days: Annotated[int, Field(ge=1, le=3650)] = 60
    # members running different etcd versions this long (an upgrade left half done) are notified once
    mixed_versions_warn_minutes: Annotated[int, Field(ge=1, le=10080)] = 60
    # member name -> EC2 instance id, for EC2 events; members not listed are looked up by their
    # instance's tags (etcdops:member=<name>)
    member_instances: dict[str, str] = {}
    # a failed repair is tried again by later rounds, backoff doubling from repair_backoff_seconds,
    # up to max_repair_attempts attempts; then one escalation (invariant 12)
    max_repair_attempts: Annotated[int, Field(ge=1, le=20)] = 3
    repair_backoff_seconds: Annotated[float, Field(ge=0, le=86400)] = 60.0
    # "Check the member is still failed" probes for up to this long before it concludes, so a member
    # that was just resumed (a paused VM, a long GC pause) gets a fair chance to answer again
    recheck_seconds: Annotated[float, Field(ge=0, le=120)] = 8.0

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
            if not _INSTANCE_ID.fullmatch(instance):
                raise ValueError(f"{name}: {instance!r} is not an EC2 instance id such as i-0123456789abcdef0")
            if instance in owners:
                raise ValueError(f"{name}: instance {instance} is already given for member {owners[instance]}")
            owners[instance] = name
        return value


class MaintenanceConfig(_Model):
    """The MaintainCluster runbook (domain/maintenance.py): compaction, defragmentation by rule, NOSPACE recovery."""

    schedule: str = "rate(1 day)"
    # compaction keeps this many revisions of history (watchers and readers of older revisions need them)
    retention_revisions: Annotated[int, Field(ge=0)] = 10000
    # defragment a member when this share of its file is free pages and the file is at least this big
    defrag_min_fragmented_ratio: Annotated[float, Field(gt=0, le=1)] = 0.45
    defrag_min_db_bytes: Annotated[int, Field(ge=0)] = 100 * 1024 * 1024
    # the wait between two members' defragmentations (the member just done catches up, clients settle)
    pause_between_members_seconds: Annotated[float, Field(ge=0, le=600)] = 10.0
    # NOSPACE is disarmed only when every member's database is below this share of the quota
    nospace_disarm_ratio: Annotated[float, Field(gt=0, lt=1)] = 0.9

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        return _check_schedule(value)


class CertificatesConfig(_Model):
    """The RotateCertificates runbook: when the members' certificates are renewed on their own."""

    # HealthCheck starts a leaf rotation when a certificate a member serves expires in fewer days than this
    # (CertificateExpiryDays < renew_days); member certificates are issued for 365 days
    renew_days: Annotated[int, Field(ge=1, le=364)] = 30


LOCAL_CONFIG_FILE = "cluster.yaml"
"""The local stack keeps its cluster configuration in this file of its state directory."""


class LocalCompute(_Model):
    provider: Literal["local"] = "local"
    state_dir: str
    # a launched host comes online this long after its launch and refuses commands with
    # HostNotReadyError until then, as a fresh EC2 instance does until its SSM agent registers
    boot_seconds: Annotated[float, Field(ge=0, le=600)] = 0.0


class ClusterConfig(_Model):
    name: str
    endpoints: list[str] = []
    discovery: Ec2Discovery | None = None
    tls: TlsConfig | None = None
    plaintext: bool = False
    backup: BackupConfig | None = None
    health: HealthConfig = HealthConfig()
    maintenance: MaintenanceConfig = MaintenanceConfig()
    certificates: CertificatesConfig = CertificatesConfig()
    approval: Literal["auto", "always"] = "auto"
    compute: LocalCompute | Ec2Compute | None = Field(default=None, discriminator="provider")
    aws: AwsAccess | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError(NAME_RULE)
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
    """As EventBridge checks it: a rate of at least 1, singular unit for 1 and plural above; or a cron."""
    rate = _RATE.fullmatch(value)
    if rate:
        count, unit, plural = int(rate.group(1)), rate.group(2), rate.group(3)
        if count < 1:
            raise ValueError(f"{value!r}: a rate must be at least 1")
        if (count == 1) == bool(plural):
            expected = f"rate(1 {unit})" if count == 1 else f"rate({count} {unit}s)"
            raise ValueError(f"{value!r}: EventBridge wants {expected}")
        return value
    if not _CRON.fullmatch(value):
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
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply to be a cluster configuration") from None


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
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    return loads_config(text, str(path))


def _is_json(text: str) -> bool:
    return text.lstrip().startswith("{")


def _document(text: str, source: str) -> Any:
    try:
        return json.loads(text) if _is_json(text) else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{source}: not valid YAML/JSON: {str(exc).splitlines()[0]}") from None
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply to be a cluster configuration") from None


def loads_config(text: str, source: str = "config") -> ClusterConfig:
    return parse_config(_document(text, source), source)


def dump_config(config: ClusterConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json", exclude_none=True), sort_keys=False)


def rewrite_endpoints(
    text: str, update: Callable[[list[str]], list[str]], *, source: str = "config"
) -> tuple[str, list[str]]:
    """The document ``text`` with its ``endpoints`` replaced by ``update(endpoints)``, and the new list.

    Only the endpoints change: every other field stays as the operator wrote it, and the document
    keeps its format (JSON stays JSON, YAML stays YAML; YAML comments are not kept). The result is
    validated like any document; when the endpoints do not change, ``text`` itself is returned.
    """
    document = _document(text, source)
    parse_config(document, source)
    current = [str(e) for e in document.get("endpoints") or []]
    endpoints = update(current)
    if endpoints == current:
        return text, current
    document["endpoints"] = list(endpoints)
    parse_config(document, source)
    rendered = json.dumps(document, indent=2) + "\n" if _is_json(text) else yaml.safe_dump(document, sort_keys=False)
    return rendered, list(endpoints)


class ConfigFile:
    """A configuration document in a local file (the local stack's ``cluster.yaml``)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def where(self) -> str:
        return str(self.path)

    def read(self) -> str:
        try:
            return self.path.read_text()
        except OSError as exc:
            raise ConfigError(f"{self.path}: cannot read: {exc.strerror}") from None

    def write(self, text: str) -> None:
        """Atomically: a temporary file beside it, then a rename (readers see the old or the new document)."""
        write_text_atomically(self.path, text)


def write_text_atomically(path: Path, text: str) -> None:
    """Replace ``path``'s content in one step: write a temporary file beside it, then rename it over."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        temporary.write_text(text)
        if path.exists():
            os.chmod(temporary, path.stat().st_mode & 0o777)
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise ConfigError(f"{path}: cannot write: {exc.strerror}") from None
