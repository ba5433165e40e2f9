"""A small synchronous etcd v3 client over gRPC, with mTLS and a deadline on every call.

Results are plain dataclasses; protobuf messages never leave this module. gRPC failures are mapped
to the named errors of :mod:`etcdops.domain.errors` in exactly one place (:func:`_map_rpc_error`).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import queue
import secrets
import ssl
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import urlsplit

import grpc

from etcdops.adapters.etcd.pb import etcd_pb2 as pb
from etcdops.adapters.etcd.pb import etcd_pb2_grpc as rpc
from etcdops.domain.backup.delta import DeltaEvent, EventKind
from etcdops.domain.errors import (
    ConfigError,
    EtcdAuthError,
    EtcdCompactedError,
    EtcdError,
    EtcdLearnerNotReadyError,
    EtcdMemberNotFoundError,
    EtcdNoSpaceError,
    EtcdPreconditionError,
    EtcdRequestError,
    EtcdTimeoutError,
    EtcdUnavailableError,
    EtcdUnhealthyClusterError,
    SnapshotIntegrityError,
    SnapshotStreamError,
)
from etcdops.domain.health import Alarm

DEFAULT_TIMEOUT = 5.0
SNAPSHOT_TIMEOUT = 3600.0
#: A snapshot stream that brings no message for this long is abandoned (a frozen or overloaded
#: member); callers with a configuration pass its probe deadline instead.
SNAPSHOT_IDLE_TIMEOUT = 10.0
#: HTTP/2 keepalive on every channel: a ping after this much silence on a call...
KEEPALIVE_TIME_MS = 10_000  # etcd refuses pings more often than every 5 s (--grpc-keepalive-min-time)
#: ...that must be answered within this, else the connection is closed and its calls fail.
KEEPALIVE_TIMEOUT_MS = 5_000
SHA256_SIZE = 32
_MAX_MESSAGE = 256 * 1024 * 1024
_ALARM_NAMES = {pb.NOSPACE: "NOSPACE", pb.CORRUPT: "CORRUPT"}
_ALARM_TYPES = {name: value for value, name in _ALARM_NAMES.items()}

T = TypeVar("T")


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


@dataclass(frozen=True)
class Member:
    id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    is_learner: bool

    @property
    def started(self) -> bool:
        """A member added but not yet started has no name and no client URLs."""
        return bool(self.name) and bool(self.client_urls)


@dataclass(frozen=True)
class Status:
    endpoint: str
    cluster_id: int
    member_id: int
    leader: int
    version: str
    db_size: int
    db_size_in_use: int
    raft_index: int
    raft_term: int
    raft_applied_index: int
    revision: int
    is_learner: bool
    errors: tuple[str, ...]


@dataclass(frozen=True)
class KeyValue:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int


@dataclass(frozen=True)
class RangeResult:
    kvs: tuple[KeyValue, ...]
    count: int
    more: bool
    revision: int


@dataclass(frozen=True)
class HashKV:
    hash: int
    compact_revision: int
    revision: int
    member_id: int


def _target(endpoint: str) -> str:
    """``https://host:port`` (or a bare ``host:port``) to the gRPC target ``host:port``."""
    parts = urlsplit(endpoint if "://" in endpoint else f"//{endpoint}")
    if not parts.hostname or not parts.port:
        raise ConfigError(f"endpoints: {endpoint!r} is not a host:port or https://host:port URL")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{parts.port}"


def _key(key: str | bytes) -> bytes:
    return key.encode() if isinstance(key, str) else key


def prefix_end(prefix: bytes) -> bytes:
    """The range end that selects every key starting with ``prefix``."""
    end = bytearray(prefix)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\0"  # every key


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


class EtcdClient:
    """A client for one etcd cluster.

    Calls without ``endpoint=`` go to the first endpoint that answers (in the given order);
    calls with ``endpoint=`` go to exactly that member. Every call has a deadline: ``timeout``
    seconds, or the client's default.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        tls: TlsFiles | None = None,
        plaintext: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if not endpoints:
            raise ConfigError("endpoints: at least one endpoint is required")
        if tls is None and not plaintext:
            raise ConfigError("tls: TLS material is required unless plaintext is set explicitly")
        for endpoint in endpoints:
            _target(endpoint)
            scheme = urlsplit(endpoint).scheme
            if plaintext and scheme == "https":
                raise ConfigError(f"endpoints: {endpoint} is https but plaintext is set")
            if not plaintext and scheme == "http":
                raise ConfigError(f"endpoints: {endpoint} is plain http; set plaintext to allow it")
        self.endpoints = tuple(endpoints)
        self.timeout = timeout
        self._tls = None if plaintext else tls
        self._credentials = None if plaintext else tls.credentials() if tls else None
        self._channels: dict[str, _Channel] = {}
        self._lock = threading.Lock()

    # ---- plumbing ------------------------------------------------------------------------

    def _channel(self, endpoint: str) -> _Channel:
        with self._lock:
            channel = self._channels.get(endpoint)
            if channel is None:
                channel = self._channels[endpoint] = _Channel(endpoint, self._credentials)
            return channel

    def close(self) -> None:
        with self._lock:
            channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            channel.channel.close()

    def __enter__(self) -> EtcdClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _call(self, service: str, method: str, request: Any, endpoint: str | None, timeout: float | None) -> Any:
        """Unary call to ``endpoint``, or to the first endpoint that is reachable."""
        deadline = self.timeout if timeout is None else timeout
        targets = [endpoint] if endpoint else list(self.endpoints)
        last: EtcdError | None = None
        for target in targets:
            stub = getattr(self._channel(target), service)
            try:
                return getattr(stub, method)(request, timeout=deadline)
            except grpc.RpcError as exc:
                last = _map_rpc_error(exc, target)
                # only connectivity problems are worth another endpoint; answers are answers
                if not isinstance(last, EtcdUnavailableError | EtcdTimeoutError | EtcdAuthError):
                    raise last from exc
                if isinstance(last, EtcdUnhealthyClusterError):
                    raise last from exc
        assert last is not None
        raise last

    # ---- maintenance ---------------------------------------------------------------------

    def status(self, endpoint: str | None = None, *, timeout: float | None = None) -> Status:
        resp = self._call("maintenance", "Status", pb.StatusRequest(), endpoint, timeout)
        return Status(
            endpoint=endpoint or "",
            cluster_id=resp.header.cluster_id,
            member_id=resp.header.member_id,
            leader=resp.leader,
            version=resp.version,
            db_size=resp.dbSize,
            db_size_in_use=resp.dbSizeInUse,
            raft_index=resp.raftIndex,
            raft_term=resp.raftTerm,
            raft_applied_index=resp.raftAppliedIndex,
            revision=resp.header.revision,
            is_learner=resp.isLearner,
            errors=tuple(resp.errors),
        )

    def cluster_version(self, endpoint: str, *, timeout: float | None = None) -> str:
        """The cluster version as ``endpoint`` knows it (``etcdcluster`` of etcd's HTTP ``/version``,
        e.g. ``3.5.0``: the lowest major.minor of the members, decided by the leader). The v3 gRPC API
        does not carry it; the member serves ``/version`` on its client port with the same TLS."""
        parts = urlsplit(endpoint)
        host, port = parts.hostname or "", parts.port or 2379
        wait = timeout if timeout is not None else self.timeout
        ends = time.monotonic() + wait
        connection: http.client.HTTPConnection | None = None

        def within_deadline(conn: http.client.HTTPConnection) -> None:
            # a socket timeout bounds each read; the deadline bounds the whole exchange
            left = ends - time.monotonic()
            if left <= 0:
                raise TimeoutError("deadline exceeded")
            if conn.sock is not None:
                conn.sock.settimeout(left)

        try:
            if self._tls is None:
                connection = http.client.HTTPConnection(host, port, timeout=wait)
            else:
                context = ssl.create_default_context(cafile=str(self._tls.ca))
                if self._tls.cert:
                    context.load_cert_chain(str(self._tls.cert), str(self._tls.key) if self._tls.key else None)
                connection = http.client.HTTPSConnection(host, port, timeout=wait, context=context)
            connection.connect()  # TCP and the TLS handshake, each read under the socket timeout
            within_deadline(connection)
            connection.request("GET", "/version")
            within_deadline(connection)
            response = connection.getresponse()
            within_deadline(connection)
            body = response.read(64 * 1024)
        except (OSError, http.client.HTTPException) as exc:
            raise EtcdUnavailableError(f"{endpoint}: /version: {exc}") from exc
        finally:
            if connection is not None:
                connection.close()
        try:
            version = json.loads(body)["etcdcluster"] if response.status == 200 else None
        except (ValueError, KeyError, TypeError):
            version = None
        if not isinstance(version, str) or not version or version == "not_decided":
            raise EtcdRequestError(f"{endpoint}: /version gave no cluster version (HTTP {response.status})")
        return version

    def alarms(self, endpoint: str | None = None, *, timeout: float | None = None) -> list[Alarm]:
        request = pb.AlarmRequest(action=pb.AlarmRequest.GET)
        resp = self._call("maintenance", "Alarm", request, endpoint, timeout)
        return [
            Alarm(member_id=a.memberID, alarm=_ALARM_NAMES.get(a.alarm, str(a.alarm)))
            for a in resp.alarms
            if a.alarm != pb.NONE
        ]

    def disarm(self, alarm: Alarm, *, timeout: float | None = None) -> list[Alarm]:
        """Deactivate one alarm; returns the alarms etcd reports as deactivated."""
        request = pb.AlarmRequest(
            action=pb.AlarmRequest.DEACTIVATE, memberID=alarm.member_id, alarm=_ALARM_TYPES[alarm.alarm]
        )
        resp = self._call("maintenance", "Alarm", request, None, timeout)
        return [Alarm(member_id=a.memberID, alarm=_ALARM_NAMES.get(a.alarm, str(a.alarm))) for a in resp.alarms]

    def defragment(self, endpoint: str, *, timeout: float | None = None) -> None:
        """Defragment one member's backend (blocks that member while it runs)."""
        self._call("maintenance", "Defragment", pb.DefragmentRequest(), endpoint, timeout or 300.0)

    def hash_kv(self, endpoint: str, revision: int = 0, *, timeout: float | None = None) -> HashKV:
        resp = self._call("maintenance", "HashKV", pb.HashKVRequest(revision=revision), endpoint, timeout)
        return HashKV(
            hash=resp.hash,
            compact_revision=resp.compact_revision,
            revision=resp.header.revision,
            member_id=resp.header.member_id,
        )

    def move_leader(self, target_id: int, *, timeout: float | None = None) -> None:
        """Transfer leadership to ``target_id``. The request must reach the current leader."""
        leader_endpoint = self._leader_endpoint(timeout)
        self._call("maintenance", "MoveLeader", pb.MoveLeaderRequest(targetID=target_id), leader_endpoint, timeout)

    def auth_enabled(self, *, timeout: float | None = None) -> bool:
        """Whether the cluster has authentication on. etcd 3.4 has no AuthStatus call, so a sign-in with a
        made-up user and a random password asks: "not enabled" means off, "authentication failed" on."""
        request = pb.AuthenticateRequest(name="etcdops-auth-probe", password=secrets.token_hex(16))
        try:
            self._call("auth", "Authenticate", request, None, timeout)
        except (EtcdPreconditionError, EtcdRequestError, EtcdAuthError) as exc:
            text = str(exc)
            if "authentication is not enabled" in text:
                return False
            if "authentication failed" in text or isinstance(exc, EtcdAuthError):
                return True
            raise
        return True  # that user exists with that password: only where authentication is on

    def _leader_endpoint(self, timeout: float | None) -> str:
        leader = self.status(timeout=timeout).leader
        for member in self.member_list(timeout=timeout):
            if member.id == leader and member.client_urls:
                return member.client_urls[0]
        raise EtcdUnavailableError("no reachable leader")

    def snapshot(
        self, endpoint: str, *, timeout: float = SNAPSHOT_TIMEOUT, idle_timeout: float = SNAPSHOT_IDLE_TIMEOUT
    ) -> Iterator[bytes]:
        """Stream a snapshot of ``endpoint``'s backend: the database bytes, chunk by chunk.

        etcd appends the sha256 of the database to the stream; it is checked here and held
        back, so the chunks are exactly the database. Use :meth:`snapshot_stream` to get at the
        trailer (:attr:`SnapshotStream.sha256`) once the chunks are consumed.
        """
        return self.snapshot_stream(endpoint, timeout=timeout, idle_timeout=idle_timeout).chunks()

    def snapshot_stream(
        self, endpoint: str, *, timeout: float = SNAPSHOT_TIMEOUT, idle_timeout: float = SNAPSHOT_IDLE_TIMEOUT
    ) -> SnapshotStream:
        """A snapshot stream of ``endpoint``: ``timeout`` bounds the whole stream, ``idle_timeout``
        the silence between two messages (then :class:`SnapshotStreamError`, and the call is cancelled)."""
        call = self._channel(endpoint).maintenance.Snapshot(pb.SnapshotRequest(), timeout=timeout)
        return SnapshotStream(call, endpoint, idle_timeout=idle_timeout)

    # ---- cluster -------------------------------------------------------------------------

    def member_list(
        self, endpoint: str | None = None, *, linearizable: bool = False, timeout: float | None = None
    ) -> list[Member]:
        request = pb.MemberListRequest(linearizable=linearizable)
        resp = self._call("cluster", "MemberList", request, endpoint, timeout)
        return [_member(m) for m in resp.members]

    def member_add(self, peer_urls: Sequence[str], *, learner: bool = False, timeout: float | None = None) -> Member:
        request = pb.MemberAddRequest(peerURLs=list(peer_urls), isLearner=learner)
        resp = self._call("cluster", "MemberAdd", request, None, timeout)
        return _member(resp.member)

    def member_remove(self, member_id: int, *, timeout: float | None = None) -> list[Member]:
        resp = self._call("cluster", "MemberRemove", pb.MemberRemoveRequest(ID=member_id), None, timeout)
        return [_member(m) for m in resp.members]

    def member_promote(self, member_id: int, *, timeout: float | None = None) -> list[Member]:
        resp = self._call("cluster", "MemberPromote", pb.MemberPromoteRequest(ID=member_id), None, timeout)
        return [_member(m) for m in resp.members]

    # ---- kv ------------------------------------------------------------------------------

    def range(
        self,
        key: str | bytes,
        range_end: str | bytes | None = None,
        *,
        prefix: bool = False,
        limit: int = 0,
        serializable: bool = False,
        keys_only: bool = False,
        count_only: bool = False,
        revision: int = 0,
        endpoint: str | None = None,
        timeout: float | None = None,
    ) -> RangeResult:
        """Keys at the current revision, or as they were at ``revision`` (0: current)."""
        k = _key(key)
        end = prefix_end(k) if prefix else _key(range_end) if range_end is not None else b""
        request = pb.RangeRequest(
            key=k,
            range_end=end,
            limit=limit,
            serializable=serializable,
            keys_only=keys_only,
            count_only=count_only,
            revision=revision,
        )
        resp = self._call("kv", "Range", request, endpoint, timeout)
        return RangeResult(
            kvs=tuple(
                KeyValue(
                    key=kv.key,
                    value=kv.value,
                    create_revision=kv.create_revision,
                    mod_revision=kv.mod_revision,
                    version=kv.version,
                )
                for kv in resp.kvs
            ),
            count=resp.count,
            more=resp.more,
            revision=resp.header.revision,
        )

    def get(self, key: str | bytes, *, timeout: float | None = None) -> bytes | None:
        kvs = self.range(key, timeout=timeout).kvs
        return kvs[0].value if kvs else None

    def put(self, key: str | bytes, value: str | bytes, *, timeout: float | None = None) -> int:
        """Write ``key``; returns the revision of the write."""
        resp = self._call("kv", "Put", pb.PutRequest(key=_key(key), value=_key(value)), None, timeout)
        return int(resp.header.revision)

    def delete(self, key: str | bytes, *, prefix: bool = False, timeout: float | None = None) -> int:
        """Delete ``key`` (or every key under it with ``prefix``); returns how many were deleted."""
        k = _key(key)
        request = pb.DeleteRangeRequest(key=k, range_end=prefix_end(k) if prefix else b"")
        resp = self._call("kv", "DeleteRange", request, None, timeout)
        return int(resp.deleted)

    def compact(self, revision: int, *, physical: bool = True, timeout: float | None = None) -> None:
        self._call("kv", "Compact", pb.CompactionRequest(revision=revision, physical=physical), None, timeout)

    def txn(self, events: Sequence[DeltaEvent], *, timeout: float | None = None) -> int:
        """Apply ``events`` (puts with their value and lease, deletes of single keys) in one
        transaction without conditions; returns its revision."""
        ops = [
            pb.RequestOp(request_put=pb.PutRequest(key=e.key, value=e.value, lease=e.lease))
            if e.kind == "put"
            else pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=e.key))
            for e in events
        ]
        resp = self._call("kv", "Txn", pb.TxnRequest(success=ops), None, timeout)
        return int(resp.header.revision)

    def lease_grant(self, ttl: int, *, timeout: float | None = None) -> int:
        """A new lease of ``ttl`` seconds; returns its id."""
        resp = self._call("lease", "LeaseGrant", pb.LeaseGrantRequest(TTL=ttl), None, timeout)
        if resp.error:
            raise EtcdRequestError(f"lease grant refused: {resp.error}")
        return int(resp.ID)

    def changes(
        self, start_revision: int, end_revision: int, *, endpoint: str | None = None, timeout: float = 60.0
    ) -> list[DeltaEvent]:
        """Every event of revisions ``start_revision..end_revision`` of the whole keyspace, in order,
        read with a watch from ``start_revision`` (:class:`EtcdCompactedError` if it was compacted).

        The watch ends at the first event after ``end_revision`` (dropped: the next delta holds it)
        or, once an event of ``end_revision`` arrived, at a progress notification, which etcd sends
        only after every event up to its header revision: no event of ``end_revision`` can follow
        it. etcd sends the events of one revision in one response (we ask for no fragments)."""
        target = endpoint or self.endpoints[0]
        requests: queue.Queue[Any] = queue.Queue()
        create = pb.WatchCreateRequest(key=b"\0", range_end=b"\0", start_revision=start_revision)
        requests.put(pb.WatchRequest(create_request=create))
        call = self._channel(target).watch.Watch(iter(requests.get, None), timeout=timeout)
        events: list[DeltaEvent] = []
        try:
            for resp in call:
                if resp.compact_revision or resp.canceled:
                    raise EtcdCompactedError(
                        f"{target}: revision {start_revision} is compacted (oldest kept: {resp.compact_revision})",
                        target,
                        resp.compact_revision,
                    ) if resp.compact_revision else EtcdRequestError(f"{target}: watch canceled: {resp.cancel_reason}")
                if _watch_done(resp, events, end_revision, requests):
                    break
        except grpc.RpcError as exc:
            raise _map_rpc_error(exc, target) from exc
        finally:
            requests.put(None)
            call.cancel()
        return events


class SnapshotStream:
    """A snapshot being received: iterate :meth:`chunks`; the sha256 is checked at the end.

    A reader thread pulls etcd's small (32 KiB) messages off the wire and joins them into
    ``chunk_size`` pieces in a bounded queue, so receiving overlaps with whatever the consumer
    does with a piece (hashing, encrypting, writing) while memory stays within
    ``(prefetch + 2) * chunk_size``.

    Idle deadline: when the consumer waits for data and the reader has made no progress (no
    message received, no piece handed over) for ``idle_timeout`` seconds, the call is cancelled
    and :class:`SnapshotStreamError` is raised, so a frozen member is abandoned instead of holding
    the backup until the stream's total timeout. A slow consumer never trips it: while the queue
    is full the consumer does not wait, and each piece it takes lets the reader progress again.
    """

    _POLL = 0.1  # seconds between two looks at the reader's progress while waiting for data

    def __init__(
        self,
        call: Any,
        endpoint: str,
        *,
        chunk_size: int = 1 << 20,
        prefetch: int = 8,
        idle_timeout: float = SNAPSHOT_IDLE_TIMEOUT,
    ) -> None:
        if idle_timeout <= 0:
            raise ConfigError(f"snapshot idle timeout must be positive, not {idle_timeout}")
        self._call = call
        self.endpoint = endpoint
        self.chunk_size = chunk_size
        self.prefetch = prefetch
        self.idle_timeout = idle_timeout
        self.sha256: bytes | None = None
        self.db_bytes = 0
        self._progress_at = time.monotonic()  # written by the reader thread, read by the consumer

    def cancel(self) -> None:
        self._call.cancel()

    def _read(self, out: queue.Queue[tuple[str, Any]]) -> None:
        buffer = bytearray()
        try:
            for response in self._call:  # etcd sends no response header on this stream
                self._progress_at = time.monotonic()
                buffer += response.blob
                if len(buffer) >= self.chunk_size + SHA256_SIZE:
                    # keep the last 32 bytes back: at the end of the stream they are the trailer
                    with memoryview(buffer) as view:
                        piece = bytes(view[:-SHA256_SIZE])
                    del buffer[:-SHA256_SIZE]
                    out.put(("data", piece))
                    self._progress_at = time.monotonic()
            out.put(("end", bytes(buffer)))
        except grpc.RpcError as exc:
            out.put(("error", exc))
        except BaseException as exc:  # a reader must always say how it ended
            out.put(("error", exc))

    def _next(self, pieces: queue.Queue[tuple[str, Any]]) -> tuple[str, Any]:
        """The reader's next item, or :class:`SnapshotStreamError` once it made no progress for too long."""
        while True:
            try:
                return pieces.get(timeout=self._POLL)
            except queue.Empty:
                silent = time.monotonic() - self._progress_at
                if silent > self.idle_timeout:
                    self._call.cancel()
                    raise SnapshotStreamError(
                        f"snapshot stream from {self.endpoint} stalled: no data for {silent:.1f}s "
                        f"(idle deadline {self.idle_timeout:g}s; the member may be frozen or overloaded)"
                    ) from None

    def chunks(self) -> Iterator[bytes]:
        digest = hashlib.sha256()
        pieces: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=self.prefetch)
        self._progress_at = time.monotonic()
        reader = threading.Thread(target=self._read, args=(pieces,), name="snapshot-reader", daemon=True)
        reader.start()
        try:
            while True:
                kind, value = self._next(pieces)
                if kind == "error":
                    if isinstance(value, grpc.RpcError):
                        error = _map_rpc_error(value, self.endpoint)
                        raise SnapshotStreamError(f"snapshot stream from {self.endpoint} broke off: {error}") from value
                    raise value
                if kind == "end":
                    tail: bytes = value
                    break
                digest.update(value)
                self.db_bytes += len(value)
                yield value
            body, held = tail[:-SHA256_SIZE], tail[-SHA256_SIZE:]
            if len(held) != SHA256_SIZE:
                raise SnapshotIntegrityError(f"snapshot from {self.endpoint} ended without its sha256 trailer")
            if body:
                digest.update(body)
                self.db_bytes += len(body)
            if digest.digest() != held:
                raise SnapshotIntegrityError(
                    f"snapshot from {self.endpoint} does not match its sha256 trailer "
                    f"({digest.hexdigest()} != {held.hex()})"
                )
            if body:
                yield body
            self.sha256 = held
        finally:
            if reader.is_alive():
                self._call.cancel()  # the consumer stopped early: end the stream, unblock the reader
                while reader.is_alive():
                    with contextlib.suppress(queue.Empty):
                        pieces.get(timeout=0.1)


def _watch_done(resp: Any, events: list[DeltaEvent], end_revision: int, requests: queue.Queue[Any]) -> bool:
    """Take one watch response into ``events``; whether every event up to ``end_revision`` is in."""
    reached = bool(events) and events[-1].revision >= end_revision
    if not resp.events:
        return reached and not resp.created  # a progress notification after the end's events
    for event in resp.events:
        kv = event.kv
        if kv.mod_revision > end_revision:
            return True
        kind: EventKind = "del" if event.type == pb.Event.DELETE else "put"
        events.append(DeltaEvent(kind, kv.key, kv.mod_revision, kv.value, kv.create_revision, kv.version, kv.lease))
    if events and events[-1].revision >= end_revision:
        requests.put(pb.WatchRequest(progress_request=pb.WatchProgressRequest()))
    return False


def _member(m: Any) -> Member:
    return Member(
        id=m.ID,
        name=m.name,
        peer_urls=tuple(m.peerURLs),
        client_urls=tuple(m.clientURLs),
        is_learner=m.isLearner,
    )
