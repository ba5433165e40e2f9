"""The policy's settings (a cluster configuration's ``health`` section, its approval mode, the backup age)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from etcdops.domain.config import ClusterConfig, HealthConfig, describe_validation_error
from etcdops.domain.errors import ConfigError


class PolicyConfig(BaseModel):
    """The policy's settings: the cluster configuration's ``health`` section itself (not a copy of
    its fields), the ``approval`` mode, the backup age a repair accepts, and the one setting only the
    policy has (``db_size_warn_ratio``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    health: HealthConfig = HealthConfig()
    approval: Literal["auto", "always"] = Field(
        default="auto", description="'always': a replacement waits for a human approval"
    )
    backup_max_age_seconds: float = Field(default=2 * 3600.0, gt=0)
    db_size_warn_ratio: float = Field(
        default=0.8, gt=0, le=1, description="notify when a member's db size reaches this share of quota"
    )

    @property
    def failure_window(self) -> timedelta:
        return timedelta(seconds=self.health.failure_window_seconds)

    @property
    def backup_max_age(self) -> timedelta:
        return timedelta(seconds=self.backup_max_age_seconds)

    @property
    def mixed_versions_warn(self) -> timedelta:
        return timedelta(minutes=self.health.mixed_versions_warn_minutes)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, where: str = "policy") -> PolicyConfig:
        """Validate a configuration mapping; :class:`ConfigError` names the bad field."""
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            raise ConfigError(f"{where}.{describe_validation_error(exc)}") from None

    @classmethod
    def from_cluster_config(cls, config: ClusterConfig) -> PolicyConfig:
        """The policy settings of a cluster configuration document (``health``, ``backup``, ``approval``)."""
        return cls(
            health=config.health,
            approval=config.approval,
            **({"backup_max_age_seconds": config.backup.max_age_minutes * 60.0} if config.backup else {}),
        )
