"""Build an etcd client from a cluster configuration: the one factory for it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from etcdops.adapters.etcd.client import DEFAULT_TIMEOUT, EtcdClient, TlsFiles
from etcdops.adapters.etcd.membership import merge_endpoints, read_membership
from etcdops.domain.config import ClusterConfig
from etcdops.domain.errors import ConfigError


def tls_files(config: ClusterConfig) -> TlsFiles | None:
    """Local TLS paths of a configuration (Secrets Manager ARNs are fetched by the AWS side first)."""
    if config.plaintext or config.tls is None:
        return None
    entries = {"ca": config.tls.ca, "cert": config.tls.cert, "key": config.tls.key}
    for field, value in entries.items():
        if value and value.startswith("arn:"):
            raise ConfigError(f"tls.{field}: {value} is a Secrets Manager ARN; resolve it before connecting")
    return TlsFiles(
        ca=Path(config.tls.ca),
        cert=Path(config.tls.cert) if config.tls.cert else None,
        key=Path(config.tls.key) if config.tls.key else None,
    )


def client_for(
    config: ClusterConfig, *, endpoints: list[str] | None = None, timeout: float = DEFAULT_TIMEOUT
) -> EtcdClient:
    """A client on exactly ``endpoints`` (default: the configured ones)."""
    chosen = endpoints or config.endpoints
    if not chosen:
        raise ConfigError("endpoints: none configured and none discovered")
    return EtcdClient(chosen, tls=tls_files(config), plaintext=config.plaintext, timeout=timeout)


def live_client(config: ClusterConfig, *, seeds: Sequence[str] = (), timeout: float = DEFAULT_TIMEOUT) -> EtcdClient:
    """A client on the live membership (invariant 10): the member list is read from the configured
    endpoints and ``seeds`` (all at once, the first answer wins, within the probe deadline); the
    client then talks to the member that answered first, then every member, then the seeds."""
    endpoints = merge_endpoints(config.endpoints, seeds)
    with client_for(config, endpoints=endpoints, timeout=timeout) as seed:
        membership = read_membership(seed, config.health.probe_deadline_seconds)
    return client_for(config, endpoints=membership.endpoints(endpoints), timeout=timeout)
