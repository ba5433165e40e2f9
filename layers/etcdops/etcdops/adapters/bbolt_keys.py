"""The live keys of an etcd snapshot: the bbolt reader's second pass over the "key" bucket.

:class:`~etcdops.adapters.bbolt.SnapshotSummarizer` checks a snapshot in one streamed pass and
learns its page tree, but does not decode values. Counting the keys a client would see needs the
mvcc entries of the "key" bucket: each is one revision (8-byte main, ``_``, 8-byte sub, ``t`` for a
deletion) holding an etcd ``mvccpb.KeyValue``. :func:`count_live_keys` streams the snapshot once
more, cuts out only that bucket's leaf pages (known from the first pass) and replays their entries.
Nothing is written anywhere; memory holds one leaf and the live key set.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from etcdops.adapters.bbolt import SnapshotSummarizer
from etcdops.adapters.etcd.pb import etcd_pb2 as pb
from etcdops.domain.errors import SnapshotIncompleteError

_PAGE = struct.Struct("<QHHI")
_BRANCH_ELEMENT = struct.Struct("<IIQ")
_LEAF_ELEMENT = struct.Struct("<IIII")


def leaf_elements(buf: Any, base: int, page_size: int) -> Iterator[tuple[int, bytes, bytes]]:
    """(flags, key, value) of every leaf element under the page at ``buf[base:]``, in key order."""
    _id, flags, count, _overflow = _PAGE.unpack_from(buf, base)
    for i in range(count):
        at = base + _PAGE.size + i * 16
        if flags & 0x01:  # branch: children are pages of the file
            _pos, _ksize, child = _BRANCH_ELEMENT.unpack_from(buf, at)
            yield from leaf_elements(buf, child * page_size, page_size)
        elif flags & 0x02:
            eflags, pos, ksize, vsize = _LEAF_ELEMENT.unpack_from(buf, at)
            yield (
                eflags,
                bytes(buf[at + pos : at + pos + ksize]),
                bytes(buf[at + pos + ksize : at + pos + ksize + vsize]),
            )


class LiveKeys:
    """Replays entries of the "key" bucket, in any order, into the set of keys a client sees.

    Revision keys sort as their revisions, so for each key the entry with the greatest revision key
    is its last change: the key is live unless that change is a deletion. This equals a replay in
    revision order, whatever order the pages come in. Per key it keeps the revision key and a 16-byte
    digest of the value (a restore drill compares a sample of them with a restored member).
    """

    def __init__(self) -> None:
        self.last: dict[bytes, tuple[bytes, bool, bytes]] = {}

    def add(self, entries: Iterable[tuple[int, bytes, bytes]]) -> None:
        for _flags, revision, value in entries:
            kv = pb.KeyValue.FromString(value) if value else pb.KeyValue()
            if not kv.key:
                continue  # the entry a revision bump writes
            seen = self.last.get(kv.key)
            if seen is None or revision > seen[0]:
                deleted = len(revision) > 17 and revision[17:18] == b"t"
                self.last[kv.key] = (revision, deleted, value_digest(kv.value))

    @property
    def count(self) -> int:
        return sum(1 for _revision, deleted, _digest in self.last.values() if not deleted)

    def sample(self, size: int) -> list[tuple[bytes, bytes]]:
        """``size`` live keys and their value digests, chosen by the hash of the key (the same every time)."""
        live = [(key, digest) for key, (_revision, deleted, digest) in self.last.items() if not deleted]
        return sorted(live, key=lambda item: hashlib.sha256(item[0]).digest())[:size]


def value_digest(value: bytes) -> bytes:
    """The digest a sample compares values by."""
    return hashlib.blake2b(value, digest_size=16).digest()


class _PagePicker:
    """Cuts the given page spans out of a database streamed in file order, holding one span at a time."""

    def __init__(self, page_size: int, spans: Iterable[tuple[int, int]]) -> None:
        self.ranges = sorted((pgid * page_size, (pgid + 1 + overflow) * page_size) for pgid, overflow in spans)
        self.next = 0
        self.offset = 0
        self.piece = bytearray()

    def feed(self, chunk: bytes) -> Iterator[bytes]:
        start, self.offset = self.offset, self.offset + len(chunk)
        view = memoryview(chunk)
        while self.next < len(self.ranges):
            low, high = self.ranges[self.next]
            if low >= self.offset:
                return
            self.piece += view[max(low, start) - start : min(high, self.offset) - start]
            if high > self.offset:
                return
            yield bytes(self.piece)
            self.piece.clear()
            self.next += 1

    @property
    def complete(self) -> bool:
        return self.next == len(self.ranges)


def count_live_keys(summarizer: SnapshotSummarizer, page_size: int, again: Callable[[], Iterable[bytes]]) -> int:
    """The number of keys a client sees at the snapshot's revision: the "key" bucket replayed.

    ``summarizer`` has consumed the whole database (its page tree is known); ``again`` streams the
    same database once more, and only the bucket's leaves are parsed. A second pass that ends before
    the bucket's last leaf raises :class:`SnapshotIncompleteError`.
    """
    return live_keys(summarizer, page_size, again).count


def live_keys(summarizer: SnapshotSummarizer, page_size: int, again: Callable[[], Iterable[bytes]]) -> LiveKeys:
    """The live keys themselves (see :func:`count_live_keys`)."""
    bucket = summarizer.buckets.get(b"key")
    live = LiveKeys()
    if bucket is None:
        return live
    root = struct.unpack_from("<Q", bucket, 0)[0]
    if root == 0:  # an inline bucket: its leaf is in the value
        live.add(leaf_elements(bucket, 16, page_size))
        return live
    picker = _PagePicker(page_size, summarizer.leaf_spans(root))
    for chunk in again():
        for page in picker.feed(chunk):
            live.add(leaf_elements(page, 0, page_size))
    if not picker.complete:
        raise SnapshotIncompleteError("the second pass over the backup ended before the 'key' bucket's last page")
    return live
