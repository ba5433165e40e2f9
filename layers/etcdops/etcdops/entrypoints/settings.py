"""One settings model per Lambda function: what it needs from its environment, validated once.

Each model names the environment variable of every field (its alias) and is built by
:meth:`EnvSettings.from_env` at the start of an invocation, from the mapping the caller passes
(``os.environ`` in Lambda; nothing here reads the environment itself). A missing or malformed
setting is one :class:`~etcdops.domain.errors.ConfigError` whose line names the variable; nothing has been
done yet when it is raised. Blank values count as not set.

The models are plain pydantic (no settings library in the layer): template.yaml is the one place
that sets these variables, and ``tests/unit/test_settings.py`` checks that every variable a model
reads is one the template gives that function.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from etcdops.domain.config import describe_validation_error
from etcdops.domain.errors import ConfigError
from etcdops.domain.fleet import DEFAULT_BRAKE_SHARE, DEFAULT_REPAIR_CAP, REGISTRY_PATH, FleetLimits
from etcdops.domain.member_metrics import StarvationThresholds

DEFAULT_APPROVAL_TTL_SECONDS = 3600
"""How long an approval request waits for a human unless APPROVAL_TTL_SECONDS says otherwise."""


class EnvSettings(BaseModel):
    """Base of the settings models: fields are filled from environment variables named by their alias."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True, str_strip_whitespace=True)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        """The settings in ``env``; a :class:`ConfigError` naming every missing variable, or the
        first malformed one."""
        values: dict[str, str] = {}
        missing: list[str] = []
        for name, field in cls.model_fields.items():
            variable = field.alias or name.upper()
            value = str(env.get(variable, "")).strip()
            if value:
                values[variable] = value
            elif field.is_required():
                missing.append(variable)
        if missing:
            raise ConfigError(f"{', '.join(missing)}: not set in the function's environment")
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(exc)) from None


class JobSettings(EnvSettings):
    """Backup and BackupVerify: the cluster configuration, and where operators are told."""

    config_parameter: str = Field(alias="CLUSTER_CONFIG_PARAMETER")
    topic_arn: str | None = Field(default=None, alias="TOPIC_ARN")
    # the stack's ClusterName: the configuration must name this cluster
    cluster_name: str | None = Field(default=None, alias="CLUSTER_NAME")
    registry_path: str = Field(default=REGISTRY_PATH, alias="CLUSTER_REGISTRY_PATH")
    # whose SSM documents the EC2 provider would send (a volume backup opens the provider)
    stack_name: str | None = Field(default=None, alias="STACK_NAME")


class DeltaJobSettings(JobSettings):
    """DeltaBackup: as Backup, plus the state table that holds the delta chain's head."""

    table_name: str = Field(alias="TABLE_NAME")


class FailureNoticeSettings(JobSettings):
    """FailureNotice: its whole job is to publish, so the topic is required."""

    topic_arn: str = Field(alias="TOPIC_ARN")


class HealthSettings(EnvSettings):
    """HealthCheck."""

    config_parameter: str = Field(alias="CLUSTER_CONFIG_PARAMETER")
    table_name: str = Field(alias="TABLE_NAME")
    topic_arn: str | None = Field(default=None, alias="TOPIC_ARN")
    replace_state_machine_arn: str | None = Field(default=None, alias="REPLACE_STATE_MACHINE_ARN")
    rotate_state_machine_arn: str | None = Field(default=None, alias="ROTATE_STATE_MACHINE_ARN")
    cluster_name: str | None = Field(default=None, alias="CLUSTER_NAME")
    # when a member counts as starved (p99 over one round, seconds): template parameters
    wal_fsync_p99_seconds: float = Field(
        default=StarvationThresholds.wal_fsync_p99, gt=0, alias="WAL_FSYNC_P99_SECONDS"
    )
    backend_commit_p99_seconds: float = Field(
        default=StarvationThresholds.backend_commit_p99, gt=0, alias="BACKEND_COMMIT_P99_SECONDS"
    )
    peer_rtt_p99_seconds: float = Field(default=StarvationThresholds.peer_rtt_p99, gt=0, alias="PEER_RTT_P99_SECONDS")

    def starvation(self) -> StarvationThresholds:
        return StarvationThresholds(
            self.wal_fsync_p99_seconds, self.backend_commit_p99_seconds, self.peer_rtt_p99_seconds
        )

    registry_path: str = Field(default=REGISTRY_PATH, alias="CLUSTER_REGISTRY_PATH")
    # the fleet brake (invariant 15): the share of clusters failing at once that pauses repairs, and
    # the most repairs running at once across the fleet
    fleet_brake_share: float = Field(default=DEFAULT_BRAKE_SHARE, gt=0, lt=1, alias="FLEET_BRAKE_SHARE")
    fleet_repair_cap: int = Field(default=DEFAULT_REPAIR_CAP, ge=1, alias="FLEET_REPAIR_CAP")

    @property
    def fleet_limits(self) -> FleetLimits:
        return FleetLimits(brake_share=self.fleet_brake_share, repair_cap=self.fleet_repair_cap)

    @field_validator("replace_state_machine_arn", "rotate_state_machine_arn")
    @classmethod
    def _is_an_arn(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("arn:"):
            raise ValueError(f"{value!r} is not a state machine ARN")
        return value


class RunbookSettings(EnvSettings):
    """RunbookStep (every Task of every runbook)."""

    config_parameter: str = Field(alias="CLUSTER_CONFIG_PARAMETER")
    table_name: str = Field(alias="TABLE_NAME")
    topic_arn: str = Field(alias="TOPIC_ARN")
    # the stack name says whose SSM documents the EC2 provider sends
    stack_name: str = Field(alias="STACK_NAME")
    cluster_name: str | None = Field(default=None, alias="CLUSTER_NAME")
    registry_path: str = Field(default=REGISTRY_PATH, alias="CLUSTER_REGISTRY_PATH")
    # where RestoreCluster stages the plain snapshot for the hosts
    staging_bucket: str | None = Field(default=None, alias="RESTORE_STAGING_BUCKET")


class RequestApprovalSettings(EnvSettings):
    """RequestApproval (the runbooks' "Wait for approval" task)."""

    table_name: str = Field(alias="TABLE_NAME")
    topic_arn: str = Field(alias="TOPIC_ARN")
    secret_arn: str = Field(alias="APPROVAL_SECRET_ARN")
    base_url: str = Field(alias="APPROVAL_BASE_URL")
    ttl_seconds: int = Field(default=DEFAULT_APPROVAL_TTL_SECONDS, alias="APPROVAL_TTL_SECONDS")

    @field_validator("base_url")
    @classmethod
    def _is_https(cls, value: str) -> str:
        if not value.startswith("https://"):
            raise ValueError(f"must start with https://, got {value!r}")
        return value

    @field_validator("ttl_seconds", mode="before")
    @classmethod
    def _is_positive_seconds(cls, value: object) -> object:
        if isinstance(value, str) and (not value.isdigit() or int(value) <= 0):
            raise ValueError(f"must be a positive number of seconds, got {value!r}")
        return value


class ApprovalApiSettings(EnvSettings):
    """Approval (the HTTP API behind the signed links)."""

    table_name: str = Field(alias="TABLE_NAME")
    secret_arn: str = Field(alias="APPROVAL_SECRET_ARN")


class ScheduledRunbookSettings(EnvSettings):
    """ScheduledRunbooks: the two rules' names and the state machines they start."""

    cluster_name: str | None = Field(default=None, alias="CLUSTER_NAME")
    registry_path: str = Field(default=REGISTRY_PATH, alias="CLUSTER_REGISTRY_PATH")
    maintenance_rule: str = Field(alias="MAINTENANCE_RULE")
    maintain_state_machine_arn: str = Field(alias="MAINTAIN_STATE_MACHINE_ARN")
    restore_drill_rule: str = Field(alias="RESTORE_DRILL_RULE")
    restore_drill_state_machine_arn: str = Field(alias="RESTORE_DRILL_STATE_MACHINE_ARN")
