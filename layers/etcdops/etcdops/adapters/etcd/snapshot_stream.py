"""A snapshot of one member's backend being received (:meth:`EtcdClient.snapshot_stream`)."""

from __future__ import annotations

import contextlib
import hashlib
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc

from etcdops.adapters.etcd.channel import _map_rpc_error
from etcdops.domain.errors import ConfigError, SnapshotIntegrityError, SnapshotStreamError

#: A snapshot stream that brings no message for this long is abandoned (a frozen or overloaded
#: member); callers with a configuration pass its probe deadline instead.
SNAPSHOT_IDLE_TIMEOUT = 10.0
SHA256_SIZE = 32


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
