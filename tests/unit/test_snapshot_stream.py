"""The snapshot stream's own checks, on scripted streams (no network)."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace

import grpc
import pytest

from etcdops.adapters.etcd.client import SnapshotStream
from etcdops.domain.errors import SnapshotIntegrityError, SnapshotStreamError


class Call:
    """Stands in for a gRPC server-streaming call: yields scripted messages, may fail midway."""

    def __init__(self, blobs: list[bytes], fail_after: int | None = None) -> None:
        self.blobs = blobs
        self.fail_after = fail_after
        self.cancelled = False

    def __iter__(self) -> Iterator[SimpleNamespace]:
        for i, blob in enumerate(self.blobs):
            if self.fail_after is not None and i == self.fail_after:
                raise Broken()
            yield SimpleNamespace(blob=blob)

    def cancel(self) -> None:
        self.cancelled = True


class Broken(grpc.RpcError):
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return "connection reset"


def etcd_like(db: bytes, piece: int = 32 * 1024) -> list[bytes]:
    """What etcd sends: the database in pieces, then its sha256 as the last message."""
    return [db[i : i + piece] for i in range(0, len(db), piece)] + [hashlib.sha256(db).digest()]


def stream(blobs: list[bytes], **kwargs: object) -> SnapshotStream:
    return SnapshotStream(Call(blobs, **kwargs), "https://m1:2379", chunk_size=64 * 1024, prefetch=2)  # type: ignore[arg-type]


def test_a_whole_stream_yields_exactly_the_database_and_keeps_the_trailer() -> None:
    db = bytes(range(256)) * 1000
    s = stream(etcd_like(db))

    assert b"".join(s.chunks()) == db
    assert s.sha256 == hashlib.sha256(db).digest() and s.db_bytes == len(db)


def test_a_truncated_stream_is_refused() -> None:
    db = b"x" * 200_000
    blobs = etcd_like(db)[:-2]  # the last piece of data and the trailer never arrive

    with pytest.raises(SnapshotIntegrityError, match="does not match its sha256 trailer"):
        b"".join(stream(blobs).chunks())


def test_a_stream_without_any_trailer_is_refused() -> None:
    with pytest.raises(SnapshotIntegrityError, match="without its sha256 trailer"):
        b"".join(stream([b"short"]).chunks())


def test_a_broken_stream_is_a_retryable_stream_error() -> None:
    with pytest.raises(SnapshotStreamError, match=r"broke off: .*connection reset") as error:
        b"".join(stream(etcd_like(b"y" * 300_000), fail_after=3).chunks())
    assert error.value.retryable


def test_a_consumer_that_stops_early_cancels_the_stream() -> None:
    call = Call(etcd_like(b"z" * 1_000_000))
    s = SnapshotStream(call, "https://m1:2379", chunk_size=64 * 1024, prefetch=1)  # type: ignore[arg-type]
    chunks = s.chunks()
    next(chunks)
    chunks.close()

    assert call.cancelled and s.sha256 is None


class FrozenCall(Call):
    """A member that sends some messages, then nothing (SIGSTOP), until the call is cancelled."""

    def __init__(self, blobs: list[bytes], freeze_after: int) -> None:
        super().__init__(blobs)
        self.freeze_after = freeze_after
        self.thawed = threading.Event()

    def __iter__(self) -> Iterator[SimpleNamespace]:
        for i, blob in enumerate(self.blobs):
            if i == self.freeze_after:
                self.thawed.wait()  # cancel() thaws it, as gRPC ends a cancelled call
                raise Cancelled()
            yield SimpleNamespace(blob=blob)

    def cancel(self) -> None:
        super().cancel()
        self.thawed.set()


class Cancelled(grpc.RpcError):
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.CANCELLED

    def details(self) -> str:
        return "Locally cancelled by application!"


def test_a_stream_that_goes_silent_is_abandoned_after_the_idle_deadline() -> None:
    call = FrozenCall(etcd_like(b"s" * 400_000), freeze_after=4)
    s = SnapshotStream(call, "https://m1:2379", chunk_size=64 * 1024, prefetch=2, idle_timeout=0.3)  # type: ignore[arg-type]

    with pytest.raises(SnapshotStreamError, match=r"m1:2379 stalled: no data for .* \(idle deadline 0.3s") as error:
        b"".join(s.chunks())

    assert call.cancelled and error.value.retryable and s.sha256 is None


def test_a_slow_consumer_never_trips_the_idle_deadline() -> None:
    db = bytes(range(256)) * 2000
    s = SnapshotStream(Call(etcd_like(db)), "https://m1:2379", chunk_size=64 * 1024, prefetch=1, idle_timeout=0.2)  # type: ignore[arg-type]

    received = bytearray()
    for chunk in s.chunks():
        time.sleep(0.3)  # each piece takes the consumer longer than the idle deadline
        received += chunk

    assert bytes(received) == db and s.sha256 == hashlib.sha256(db).digest()
