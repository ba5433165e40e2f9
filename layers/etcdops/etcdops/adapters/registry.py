"""The cluster registry: one deployment, many clusters, each cluster's configuration document in its
own SSM parameter under one path (``/etcdops/clusters/<name>``).

The stack's own ClusterConfigParameter stays the **default cluster**: an input that names no cluster
(or names the default one) means it, so a one-cluster stack works as before. :class:`ClusterConfigs`
is what a function holds for one invocation: it loads each cluster's configuration once, validated.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from etcdops.adapters.aws import load_cluster_config
from etcdops.adapters.awserrors import aws_error, aws_error_code
from etcdops.domain.config import ClusterConfig, check_cluster_name, loads_config
from etcdops.domain.errors import NotFoundError, UsageError
from etcdops.domain.fleet import REGISTRY_PATH

__all__ = ["REGISTRY_PATH", "ClusterConfigs", "ClusterRegistry"]


class ClusterRegistry:
    """The registered clusters in SSM (the client is passed in)."""

    def __init__(self, ssm: Any, path: str = REGISTRY_PATH) -> None:
        self.ssm = ssm
        self.path = path.rstrip("/")

    def parameter(self, name: str) -> str:
        return f"{self.path}/{check_cluster_name(name)}"

    def names(self) -> list[str]:
        """Every registered cluster, sorted."""
        found: list[str] = []
        try:
            for page in self.ssm.get_paginator("get_parameters_by_path").paginate(Path=self.path, Recursive=False):
                found += [p["Name"].rsplit("/", 1)[-1] for p in page.get("Parameters", [])]
        except (ClientError, BotoCoreError) as exc:
            raise aws_error(f"listing the cluster registry {self.path}", exc) from exc
        return sorted(found)

    def add(self, text: str, source: str) -> ClusterConfig:
        """Register the configuration document ``text`` under its ``name`` (validated first; a name
        registered already is refused, nothing changed)."""
        config = loads_config(text, source)
        try:
            self.ssm.put_parameter(
                Name=self.parameter(config.name), Value=text, Type="SecureString", Overwrite=False, Tier="Standard"
            )
        except ClientError as exc:
            if aws_error_code(exc) == "ParameterAlreadyExists":
                raise UsageError(
                    f"cluster {config.name} is registered already (etcdops cluster remove {config.name} first)"
                ) from None
            raise aws_error(f"registering cluster {config.name}", exc) from exc
        except BotoCoreError as exc:
            raise aws_error(f"registering cluster {config.name}", exc) from exc
        return config

    def load(self, name: str) -> ClusterConfig:
        parameter = self.parameter(name)
        try:
            self.ssm.get_parameter(Name=parameter)  # existence first: a missing one is "not registered"
        except ClientError as exc:
            if aws_error_code(exc) == "ParameterNotFound":
                raise NotFoundError(
                    f"cluster {name} is not registered (etcdops cluster list shows those that are)"
                ) from None
            raise aws_error(f"reading SSM parameter {parameter}", exc) from exc
        return load_cluster_config(self.ssm, parameter, name)

    def remove(self, name: str) -> None:
        """Unregister ``name``: its configuration goes, its backups, state and history stay."""
        parameter = self.parameter(name)
        try:
            self.ssm.delete_parameter(Name=parameter)
        except ClientError as exc:
            if aws_error_code(exc) == "ParameterNotFound":
                raise NotFoundError(f"cluster {name} is not registered") from None
            raise aws_error(f"removing SSM parameter {parameter}", exc) from exc
        except BotoCoreError as exc:
            raise aws_error(f"removing SSM parameter {parameter}", exc) from exc


class ClusterConfigs:
    """The configurations one invocation uses, each loaded once: the default cluster (the stack's
    ClusterConfigParameter, named ``default_name`` when the stack says so) and the registered ones."""

    def __init__(self, ssm: Any, default_parameter: str, default_name: str | None, path: str = REGISTRY_PATH) -> None:
        self.ssm = ssm
        self.default_parameter = default_parameter
        self.default_name = default_name
        self.registry = ClusterRegistry(ssm, path)
        self._loaded: dict[str | None, ClusterConfig] = {}

    def is_default(self, cluster: str | None) -> bool:
        return cluster is None or cluster == self.default_name

    def parameter_for(self, cluster: str | None) -> str:
        return self.default_parameter if self.is_default(cluster) else self.registry.parameter(cluster or "")

    def load(self, cluster: str | None = None) -> ClusterConfig:
        """The configuration of ``cluster`` (None: the default cluster), validated; loaded once."""
        key = None if self.is_default(cluster) else cluster
        if key not in self._loaded:
            if key is None:
                self._loaded[key] = load_cluster_config(self.ssm, self.default_parameter, self.default_name)
            else:
                self._loaded[key] = self.registry.load(key)
        return self._loaded[key]
