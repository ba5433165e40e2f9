"""The etcd client's gRPC plumbing: TLS material, one channel per endpoint with its stubs and keepalive,
and the one place where gRPC failures become the named errors of :mod:`etcdops.domain.errors`
(:func:`_map_rpc_error`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import grpc

from etcdops.adapters.etcd.pb import etcd_pb2_grpc as rpc
from etcdops.domain.errors import (
    ConfigError,
    EtcdAuthError,
    EtcdError,
    EtcdLearnerNotReadyError,
    EtcdMemberNotFoundError,
    EtcdNoSpaceError,
    EtcdPreconditionError,
    EtcdRequestError,
    EtcdTimeoutError,
    EtcdUnavailableError,
    EtcdUnhealthyClusterError,
)

#: HTTP/2 keepalive on every channel: a ping after this much silence on a call...
KEEPALIVE_TIME_MS = 10_000  # etcd refuses pings more often than every 5 s (--grpc-keepalive-min-time)
#: ...that must be answered within this, else the connection is closed and its calls fail.
KEEPALIVE_TIMEOUT_MS = 5_000
_MAX_MESSAGE = 256 * 1024 * 1024


@dataclass(frozen=True)
class TlsFiles:
    """Client TLS material: the CA that signed the servers, and our client certificate and key."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        try:
            ca = self.ca.read_bytes()
            cert = self.cert.read_bytes() if self.cert else None
            key = self.key.read_bytes() if self.key else None
        except OSError as exc:
            raise ConfigError(f"tls: cannot read {exc.filename}: {exc.strerror}") from exc
        return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


def _target(endpoint: str) -> str:
    """``https://host:port`` (or a bare ``host:port``) to the gRPC target ``host:port``."""
    parts = urlsplit(endpoint if "://" in endpoint else f"//{endpoint}")
    if not parts.hostname or not parts.port:
        raise ConfigError(f"endpoints: {endpoint!r} is not a host:port or https://host:port URL")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{parts.port}"


def _map_rpc_error(exc: grpc.RpcError, endpoint: str) -> EtcdError:
    """The one place where gRPC status codes (and etcd's fixed error texts) become named errors."""
    code = exc.code() if hasattr(exc, "code") else None
    details = (exc.details() if hasattr(exc, "details") else None) or str(exc)
    message = f"{endpoint}: {details}"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return EtcdTimeoutError(f"{endpoint}: deadline exceeded", endpoint)
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return EtcdAuthError(message, endpoint)
    if code == grpc.StatusCode.UNAVAILABLE:
        lowered = details.lower()
        if "handshake" in lowered or "certificate" in lowered or "ssl" in lowered:
            return EtcdAuthError(f"{endpoint}: TLS handshake failed ({details})", endpoint)
        if "unhealthy cluster" in lowered:
            return EtcdUnhealthyClusterError(message, endpoint)
        if "connection refused" in lowered:
            return EtcdUnavailableError(f"{endpoint}: connection refused", endpoint)
        return EtcdUnavailableError(message, endpoint)
    if code == grpc.StatusCode.NOT_FOUND:
        return EtcdMemberNotFoundError(message, endpoint)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        if "in sync" in details or "not ready" in details:
            return EtcdLearnerNotReadyError(message, endpoint)
        return EtcdPreconditionError(message, endpoint)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return EtcdNoSpaceError(message, endpoint)
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE):
        return EtcdRequestError(message, endpoint)
    return EtcdError(message, endpoint)


class _Channel:
    def __init__(self, endpoint: str, credentials: grpc.ChannelCredentials | None) -> None:
        self.endpoint = endpoint
        options = [
            ("grpc.max_receive_message_length", _MAX_MESSAGE),
            ("grpc.max_send_message_length", _MAX_MESSAGE),
            # fail fast on a dead peer instead of waiting for exponential reconnect backoff
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
            # a peer that stops answering (SIGSTOP, a dead host behind a live route) is noticed on
            # an open call even when no data flows our way: a server stream sends us nothing to ack
            ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
            ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
            ("grpc.keepalive_permit_without_calls", 0),
            ("grpc.http2.max_pings_without_data", 0),
        ]
        target = _target(endpoint)
        if credentials is None:
            self.channel = grpc.insecure_channel(target, options=options)
        else:
            self.channel = grpc.secure_channel(target, credentials, options=options)
        self.kv = rpc.KVStub(self.channel)
        self.cluster = rpc.ClusterStub(self.channel)
        self.maintenance = rpc.MaintenanceStub(self.channel)
        self.auth = rpc.AuthStub(self.channel)
        self.watch = rpc.WatchStub(self.channel)
        self.lease = rpc.LeaseStub(self.channel)
