"""Taking snapshots: pick the best member, stream, check, and retry on another member.

The file written by :func:`save_snapshot` is byte for byte what ``etcdctl snapshot save`` writes:
the database followed by its sha256, so ``etcdutl snapshot status|restore`` accept it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from etcdops.adapters.etcd.client import SNAPSHOT_IDLE_TIMEOUT, EtcdClient, SnapshotStream
from etcdops.domain.errors import EtcdError, SnapshotError, SnapshotStreamError
from etcdops.domain.health import ClusterHealth, MemberHealth

T = TypeVar("T")
Progress = Callable[[int, int | None], None]  # bytes so far, expected total (db size) or None


@dataclass(frozen=True)
class SnapshotSource:
    member_id: int
    name: str
    endpoint: str
    version: str | None
    db_size: int | None


@dataclass(frozen=True)
class SavedSnapshot:
    path: Path
    size: int  # bytes in the file, trailer included
    db_bytes: int
    sha256: str
    source: SnapshotSource
    revision: int | None  # the cluster's revision just before the stream: the snapshot holds at least this
    attempts: int


def snapshot_sources(health: ClusterHealth) -> list[SnapshotSource]:
    """Healthy members, best first: highest raft index, then followers before the leader.

    Streaming a large snapshot costs the serving member I/O and bandwidth; sparing the leader
    keeps heartbeats and proposals on time.
    """
    candidates = [m for m in health.members if m.healthy and m.client_urls]

    def rank(m: MemberHealth) -> tuple[int, int, int]:
        return (-(m.raft_index or 0), 1 if m.id == health.leader else 0, 1 if m.is_learner else 0)

    return [
        SnapshotSource(m.id, m.name, m.client_urls[0], m.version, m.db_size)
        for m in sorted(candidates, key=rank)
    ]


def current_revision(client: EtcdClient) -> int | None:
    """The cluster's current revision (a floor for a snapshot taken right after), or None."""
    try:
        return client.range(b"health", count_only=True, timeout=2.0).revision
    except EtcdError:
        return None


def with_snapshot_stream(
    client: EtcdClient,
    sources: list[SnapshotSource],
    consume: Callable[[Iterator[bytes], SnapshotStream, SnapshotSource], T],
    *,
    idle_timeout: float = SNAPSHOT_IDLE_TIMEOUT,
    log: Callable[[str], None] = lambda _: None,
) -> tuple[T, int]:
    """Run ``consume`` on a snapshot stream, moving on to the next member when a stream breaks.

    A stream breaks when its member fails, and also when it sends nothing for ``idle_timeout``
    seconds (a frozen member; pass the configuration's probe deadline). ``consume`` must leave
    nothing behind when the stream raises (it is called again from the start with the next
    member). Returns its result and the number of attempts.
    """
    if not sources:
        raise SnapshotError("no healthy member to take a snapshot from")
    last: Exception | None = None
    for attempt, source in enumerate(sources, start=1):
        log(f"streaming snapshot from {source.name} at {source.endpoint}")
        stream = client.snapshot_stream(source.endpoint, idle_timeout=idle_timeout)
        try:
            return consume(stream.chunks(), stream, source), attempt
        except (SnapshotStreamError, EtcdError) as exc:
            stream.cancel()
            log(f"snapshot from {source.name} ({source.endpoint}) failed: {exc}; trying the next member")
            last = exc
    raise SnapshotStreamError(f"snapshot failed on every healthy member ({len(sources)} tried); last: {last}")


def save_snapshot(
    client: EtcdClient,
    health: ClusterHealth,
    path: Path,
    *,
    progress: Progress | None = None,
    idle_timeout: float = SNAPSHOT_IDLE_TIMEOUT,
    log: Callable[[str], None] = lambda _: None,
) -> SavedSnapshot:
    """Write a snapshot to ``path`` atomically: a temporary file, fsync, then rename."""
    path = path.absolute()
    tmp = path.with_name(f".{path.name}.part")

    def consume(chunks: Iterator[bytes], stream: SnapshotStream, source: SnapshotSource) -> SavedSnapshot:
        written = 0
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb", buffering=1 << 20) as out:
                for chunk in chunks:
                    out.write(chunk)
                    written += len(chunk)
                    if progress:
                        progress(written, source.db_size)
                assert stream.sha256 is not None
                out.write(stream.sha256)
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        return SavedSnapshot(
            path=path,
            size=written + len(stream.sha256),
            db_bytes=written,
            sha256=stream.sha256.hex(),
            source=source,
            revision=revision,
            attempts=0,
        )

    revision = current_revision(client)
    saved, attempts = with_snapshot_stream(
        client, snapshot_sources(health), consume, idle_timeout=idle_timeout, log=log
    )
    return SavedSnapshot(**{**saved.__dict__, "attempts": attempts})


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class TerminalProgress:
    """A one-line progress display on a terminal stream; silent elsewhere."""

    def __init__(self, stream: object, label: str) -> None:
        self.stream = stream
        self.label = label
        self.started = time.monotonic()
        self.last = 0.0
        self.enabled = bool(getattr(stream, "isatty", lambda: False)())

    def __call__(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        if not self.enabled or now - self.last < 0.2:
            return
        self.last = now
        rate = done / max(now - self.started, 1e-6) / 2**20
        pct = f" {min(done / total, 1.0):4.0%} of ~{total / 2**20:.0f} MiB" if total else ""
        self.stream.write(f"\r{self.label}: {done / 2**20:8.1f} MiB{pct}  {rate:6.1f} MiB/s")  # type: ignore[attr-defined]
        self.stream.flush()  # type: ignore[attr-defined]

    def done(self) -> None:
        if self.enabled and self.last:
            self.stream.write("\n")  # type: ignore[attr-defined]


def settle_member(client: EtcdClient, endpoint: str, *, timeout: float) -> int:
    """Make the database file of the member at ``endpoint`` hold every write acknowledged so far, and
    return the revision it answered with (what a copy of its data taken next holds at least).

    A linearizable read through that member returns only once it applied everything the cluster had
    committed when the read began, so every write acknowledged before it; etcd then keeps applied
    writes in a batch that reaches the file within ~100 ms, and commits that batch at once when a
    snapshot stream starts: reading the stream's first piece (then cancelling it) is that commit.
    """
    revision = client.range(b"health", count_only=True, endpoint=endpoint, timeout=timeout).revision
    stream = client.snapshot_stream(endpoint, idle_timeout=timeout)
    chunks = stream.chunks()
    try:
        next(chunks, None)
    finally:
        stream.cancel()
        close = getattr(chunks, "close", None)
        if close is not None:
            close()  # ends the stream's reader
    return revision
