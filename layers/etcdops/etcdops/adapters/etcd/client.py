"""A small synchronous etcd v3 client over gRPC, with mTLS and a deadline on every call.

Results are plain dataclasses (:mod:`.results`); protobuf messages never leave this package. gRPC
failures are mapped to the named errors of :mod:`etcdops.domain.errors` in exactly one place
(:func:`.channel._map_rpc_error`). Its parts: the channels and TLS in :mod:`.channel`, the snapshot
stream in :mod:`.snapshot_stream`, reading revisions with a watch in :mod:`.watch`, the cluster
version over HTTP in :mod:`.http_version`.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import urlsplit

import grpc

from etcdops.adapters.etcd import http_version, watch
from etcdops.adapters.etcd.channel import TlsFiles, _Channel, _map_rpc_error, _target
from etcdops.adapters.etcd.pb import etcd_pb2 as pb
from etcdops.adapters.etcd.results import HashKV, KeyValue, Member, RangeResult, Status, _member
from etcdops.adapters.etcd.snapshot_stream import SHA256_SIZE, SNAPSHOT_IDLE_TIMEOUT, SnapshotStream
from etcdops.domain.backup.delta import DeltaEvent
from etcdops.domain.errors import (
    ConfigError,
    EtcdAuthError,
    EtcdError,
    EtcdPreconditionError,
    EtcdRequestError,
    EtcdTimeoutError,
    EtcdUnavailableError,
    EtcdUnhealthyClusterError,
)
from etcdops.domain.health import Alarm

DEFAULT_TIMEOUT = 5.0
SNAPSHOT_TIMEOUT = 3600.0
_ALARM_NAMES = {pb.NOSPACE: "NOSPACE", pb.CORRUPT: "CORRUPT"}
_ALARM_TYPES = {name: value for value, name in _ALARM_NAMES.items()}

T = TypeVar("T")

# what the client's callers import from here
__all__ = [
    "DEFAULT_TIMEOUT",
    "SHA256_SIZE",
    "SNAPSHOT_IDLE_TIMEOUT",
    "EtcdClient",
    "HashKV",
    "KeyValue",
    "Member",
    "RangeResult",
    "SnapshotStream",
    "Status",
    "TlsFiles",
]


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
        return http_version.cluster_version(endpoint, self._tls, timeout if timeout is not None else self.timeout)

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
        return watch.changes(self._channel(target).watch, target, start_revision, end_revision, timeout)
