"""Reading a range of revisions' events with a watch (:meth:`EtcdClient.changes`)."""

from __future__ import annotations

import queue
from typing import Any

import grpc

from etcdops.adapters.etcd.channel import _map_rpc_error
from etcdops.adapters.etcd.pb import etcd_pb2 as pb
from etcdops.domain.backup.delta import DeltaEvent, EventKind
from etcdops.domain.errors import EtcdCompactedError, EtcdRequestError


def changes(stub: Any, target: str, start_revision: int, end_revision: int, timeout: float) -> list[DeltaEvent]:
    """Every event of revisions ``start_revision..end_revision`` from ``target``'s watch service ``stub``
    (the contract is :meth:`etcdops.adapters.etcd.client.EtcdClient.changes`)."""
    requests: queue.Queue[Any] = queue.Queue()
    create = pb.WatchCreateRequest(key=b"\0", range_end=b"\0", start_revision=start_revision)
    requests.put(pb.WatchRequest(create_request=create))
    call = stub.Watch(iter(requests.get, None), timeout=timeout)
    events: list[DeltaEvent] = []
    try:
        for resp in call:
            if resp.compact_revision or resp.canceled:
                raise (
                    EtcdCompactedError(
                        f"{target}: revision {start_revision} is compacted (oldest kept: {resp.compact_revision})",
                        target,
                        resp.compact_revision,
                    )
                    if resp.compact_revision
                    else EtcdRequestError(f"{target}: watch canceled: {resp.cancel_reason}")
                )
            if _watch_done(resp, events, end_revision, requests):
                break
    except grpc.RpcError as exc:
        raise _map_rpc_error(exc, target) from exc
    finally:
        requests.put(None)
        call.cancel()
    return events


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
