# Long on purpose: one streaming reader of one file format (bbolt pages, meta, freelist, the tree
# walk and the CRC arithmetic etcd hashes with); each part is only meaningful beside the others.
"""A streaming, pure-Python reader of etcd snapshot files.

An etcd snapshot is a bbolt database file, optionally followed by a 32-byte sha256 of everything
before it (present when ``file_size % 512 == 32``). :class:`SnapshotSummarizer` consumes the
database bytes once, in file order and in chunks of any size, and computes the four numbers that
``etcdutl snapshot status`` prints (``hash``, ``revision``, ``totalKey``, ``totalSize``) while
checking the database like bolt's consistency check does. It never holds the database in
memory: it keeps, per page, a small summary (for a leaf: the CRC-32C and length of the bytes
etcd hashes, its key count and first/last key; for a branch: its keys and child page ids) and,
at :meth:`SnapshotSummarizer.finish`, walks the trees from the meta page's root in key order,
joining the leaves' CRCs with a CRC-32C combine.

Pages arrive in page-id order while the trees are in key order, and free pages may hold stale
bytes, so every page whose header names its own position is summarised as a candidate; only
pages reachable from the meta root are required to be well formed.

The bbolt on-disk format used here (little-endian throughout):

* page header: ``id u64, flags u16, count u16, overflow u32``; a page spans ``1 + overflow``
  pages of ``page_size`` bytes. Flags: branch 0x01, leaf 0x02, meta 0x04, freelist 0x10.
* meta page body (pages 0 and 1): ``magic u32, version u32, page_size u32, flags u32,
  root {pgid u64, sequence u64}, freelist u64, pgid u64 (high-water mark), txid u64,
  checksum u64`` (FNV-1a 64 of the body before the checksum).
* branch element: ``pos u32, ksize u32, pgid u64``; leaf element: ``flags u32, pos u32,
  ksize u32, vsize u32`` (flag 0x01: the value is a nested bucket). ``pos`` is relative to the
  element's own offset; a leaf's value follows its key.
* a bucket value starts with ``root pgid u64, sequence u64``; ``root == 0`` means an inline
  bucket whose (leaf) page follows the 16-byte header inside the value.
* a freelist page lists free page ids as u64; ``count == 0xFFFF`` means the real count is the
  first u64.
"""

from __future__ import annotations

import hashlib
import struct
import sys
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import compress, islice
from operator import add, eq, lt
from pathlib import Path
from typing import cast

import crc32c as _crc32c_mod

from etcdops.domain.errors import SnapshotIntegrityError

__all__ = [
    "SnapshotInfo",
    "SnapshotSummarizer",
    "SnapshotSummary",
    "crc32c",
    "crc32c_combine",
    "crc32c_shift",
    "inspect_file",
    "summarize_bytes",
]

BRANCH_PAGE = 0x01
LEAF_PAGE = 0x02
META_PAGE = 0x04
FREELIST_PAGE = 0x10
BUCKET_LEAF_FLAG = 0x01

MAGIC = 0xED0CDAED
VERSION = 2
NO_FREELIST = 0xFFFFFFFFFFFFFFFF
DEFAULT_PAGE_SIZE = 4096  # bolt assumes the OS page size when meta page 0 is unreadable
MIN_PAGE_SIZE = 512
MAX_PAGE_SIZE = 1 << 20
SHA256_TRAILER = 32

_PAGE_HEADER = struct.Struct("<QHHI")  # id, flags, count, overflow
_META_BODY = struct.Struct("<IIIIQQQQQQ")  # magic .. txid, checksum
_META_SIZE = 16 + _META_BODY.size
_BUCKET_HEADER = struct.Struct("<QQ")
_U64 = struct.Struct("<Q")
_LITTLE_ENDIAN = sys.byteorder == "little"
_MAX_DEPTH = 64


def crc32c(data: bytes | bytearray | memoryview, value: int = 0) -> int:
    """CRC-32C (Castagnoli) of ``data``, continuing from ``value`` (a previous result)."""
    return int(_crc32c_mod.crc32c(data, value))


# ---- CRC-32C combine ---------------------------------------------------------------------
#
# Appending n zero bytes to the CRC register is a linear map over GF(2)^32. For each k we keep
# the map for 2**k bytes as four 256-entry tables (one per input byte), so shifting a CRC by n
# bytes costs popcount(n) table applications. Then crc(A || B) = shift(crc(A), len(B)) ^ crc(B).

_POLY = 0x82F63B78  # reflected Castagnoli polynomial
_Tables = tuple[list[int], list[int], list[int], list[int]]
_SHIFT_TABLES: list[_Tables] = []


def _tables_from_columns(columns: list[int]) -> _Tables:
    out: list[list[int]] = []
    for byte in range(4):
        cols = columns[8 * byte : 8 * byte + 8]
        table = [0] * 256
        for i in range(1, 256):
            low = i & -i
            table[i] = table[i ^ low] ^ cols[low.bit_length() - 1]
        out.append(table)
    return out[0], out[1], out[2], out[3]


def _apply(tables: _Tables, value: int) -> int:
    t0, t1, t2, t3 = tables
    return t0[value & 0xFF] ^ t1[(value >> 8) & 0xFF] ^ t2[(value >> 16) & 0xFF] ^ t3[value >> 24]


def _shift_tables(k: int) -> _Tables:
    while len(_SHIFT_TABLES) <= k:
        if not _SHIFT_TABLES:
            columns = []
            for bit in range(32):
                reg = 1 << bit
                for _ in range(8):
                    reg = (reg >> 1) ^ (_POLY if reg & 1 else 0)
                columns.append(reg)
        else:
            prev = _SHIFT_TABLES[-1]
            columns = [_apply(prev, _apply(prev, 1 << bit)) for bit in range(32)]
        _SHIFT_TABLES.append(_tables_from_columns(columns))
    return _SHIFT_TABLES[k]


def crc32c_shift(crc: int, length: int) -> int:
    """The CRC-32C register ``crc`` advanced over ``length`` zero bytes (linear part only)."""
    if length < 0:
        raise ValueError("length must be >= 0")
    k = 0
    while length and crc:
        if length & 1:
            crc = _apply(_shift_tables(k), crc)
        length >>= 1
        k += 1
    return crc


def crc32c_combine(crc1: int, crc2: int, length2: int) -> int:
    """``crc32c(A + B)`` from ``crc1 = crc32c(A)``, ``crc2 = crc32c(B)`` and ``length2 = len(B)``."""
    return crc32c_shift(crc1, length2) ^ crc2


# For short B it is cheaper to let the (hardware) CRC run over zeros:
# shift(c, n) = crc32c(zeros(n), c) ^ crc32c(zeros(n), 0).
_ZEROS_LIMIT = 16384
_ZEROS = memoryview(bytes(_ZEROS_LIMIT))
_ZERO_CRC: dict[int, int] = {}


def _combine(crc1: int, crc2: int, length2: int) -> int:
    if length2 > _ZEROS_LIMIT:
        return crc32c_shift(crc1, length2) ^ crc2
    zero_crc = _ZERO_CRC.get(length2)
    if zero_crc is None:
        zero_crc = _ZERO_CRC[length2] = crc32c(_ZEROS[:length2])
    return crc32c(_ZEROS[:length2], crc1) ^ zero_crc ^ crc2


# ---- page summaries ----------------------------------------------------------------------


class _Leaf:
    """What the hash walk needs of one leaf page."""

    __slots__ = ("buckets", "count", "crc", "error", "first", "last", "length", "overflow")

    def __init__(self, overflow: int, count: int = 0, error: str | None = None) -> None:
        self.overflow = overflow
        self.count = count
        self.error = error
        self.crc = 0  # CRC-32C of what ForEach hands to etcd's hash: k1 v1 k2 v2 ... (no bucket values)
        self.length = 0
        self.first: bytes | None = None
        self.last: bytes | None = None
        self.buckets: list[tuple[bytes, bytes]] | None = None  # (key, bucket value) of nested buckets


class _Branch:
    __slots__ = ("error", "keys", "overflow", "pgids")

    def __init__(self, overflow: int, keys: list[bytes], pgids: list[int], error: str | None = None) -> None:
        self.overflow = overflow
        self.keys = keys
        self.pgids = pgids
        self.error = error


class _Freelist:
    __slots__ = ("error", "ids", "overflow")

    def __init__(self, overflow: int, ids: list[int], error: str | None = None) -> None:
        self.overflow = overflow
        self.ids = ids
        self.error = error


_Page = _Leaf | _Branch | _Freelist
_STRUCTS: dict[tuple[str, int], struct.Struct] = {}


def _elements(fmt: str, buf: bytes | bytearray | memoryview, offset: int, count: int) -> tuple[int, ...]:
    s = _STRUCTS.get((fmt, count))
    if s is None:
        if len(_STRUCTS) > 4096:
            _STRUCTS.clear()
        s = _STRUCTS[(fmt, count)] = struct.Struct("<" + fmt * count)
    return s.unpack_from(buf, offset)


def _slices(page: bytes, starts: list[int], ends: list[int]) -> list[bytes]:
    return cast(list[bytes], list(map(page.__getitem__, map(slice, starts, ends))))


def _is_increasing(keys: list[bytes]) -> bool:
    return all(map(lt, keys, islice(keys, 1, None)))


def _leaf_layout(
    header: bytes | bytearray | memoryview, count: int, size: int
) -> tuple[tuple[int, ...], list[int], list[int], list[int]] | str:
    """Element flags and key start, key end, value end offsets; or what is wrong."""
    t = _elements("IIII", header, 16, count)
    kstart = list(map(add, t[1::4], range(16, 16 + 16 * count, 16)))
    kend = list(map(add, kstart, t[2::4]))
    vend = list(map(add, kend, t[3::4]))
    # back to back (the usual layout): everything lies between the first key and the last value
    high = vend[-1] if kstart[1:] == vend[:-1] else max(vend)
    if high > size:
        i = vend.index(high)
        return f"leaf element {i} ends at byte {high}, past the end of the {size}-byte page"
    return t[0::4], kstart, kend, vend


def _summarize_leaf(page: bytes, count: int, overflow: int) -> _Leaf:
    """Summarise a leaf page held whole in memory (``page`` spans all its overflow pages)."""
    leaf = _Leaf(overflow, count)
    if count == 0:
        return leaf
    size = len(page)
    if 16 + 16 * count > size:
        leaf.error = f"{count} leaf elements do not fit in the {size}-byte page"
        return leaf
    layout = _leaf_layout(page, count, size)
    if isinstance(layout, str):
        leaf.error = layout
        return leaf
    flags, kstart, kend, vend = layout
    keys = _slices(page, kstart, kend)
    if not _is_increasing(keys):
        leaf.error = "leaf keys are not in strictly increasing order"
        return leaf
    leaf.first, leaf.last = keys[0], keys[-1]
    view = memoryview(page)
    if not any(flags) and kstart[1:] == vend[:-1]:
        # the usual bbolt layout: k1 v1 k2 v2 ... back to back
        leaf.crc = crc32c(view[kstart[0] : vend[-1]])
        leaf.length = vend[-1] - kstart[0]
        return leaf
    crc = length = 0
    buckets: list[tuple[bytes, bytes]] = []
    for i in range(count):
        crc = crc32c(view[kstart[i] : kend[i]], crc)
        if flags[i] & BUCKET_LEAF_FLAG:
            buckets.append((keys[i], page[kend[i] : vend[i]]))
            length += kend[i] - kstart[i]
        else:
            crc = crc32c(view[kend[i] : vend[i]], crc)
            length += vend[i] - kstart[i]
    leaf.crc, leaf.length = crc, length
    leaf.buckets = buckets or None
    return leaf


def _summarize_branch(page: bytes, count: int, overflow: int) -> _Branch:
    size = len(page)
    if count == 0:
        return _Branch(overflow, [], [], "branch page has no elements")
    if 16 + 16 * count > size:
        return _Branch(overflow, [], [], f"{count} branch elements do not fit in the {size}-byte page")
    t = _elements("IIQ", page, 16, count)
    kstart = list(map(add, t[0::3], range(16, 16 + 16 * count, 16)))
    kend = list(map(add, kstart, t[1::3]))
    if max(kend) > size:
        return _Branch(overflow, [], [], f"a branch key ends past the end of the {size}-byte page")
    keys = _slices(page, kstart, kend)
    if not _is_increasing(keys):
        return _Branch(overflow, [], [], "branch keys are not in strictly increasing order")
    return _Branch(overflow, keys, list(t[2::3]))


def _summarize_freelist(page: bytes, count: int, overflow: int) -> _Freelist:
    offset = 16
    if count == 0xFFFF:
        if len(page) < 24:
            return _Freelist(overflow, [], "freelist page too short for its count")
        count = _U64.unpack_from(page, 16)[0]
        offset = 24
    if offset + 8 * count > len(page):
        return _Freelist(overflow, [], f"freelist of {count} ids does not fit in its {len(page)}-byte page")
    return _Freelist(overflow, list(struct.unpack_from(f"<{count}Q", page, offset)))


def _summarize(flags: int, page: bytes, count: int, overflow: int) -> _Page:
    if flags == LEAF_PAGE:
        return _summarize_leaf(page, count, overflow)
    if flags == BRANCH_PAGE:
        return _summarize_branch(page, count, overflow)
    return _summarize_freelist(page, count, overflow)


class _SpanStream:
    """Summarises one page whose bytes arrive in pieces (it spans several incoming chunks).

    Keeps only the element headers, the keys and nested-bucket values; the bytes that are hashed
    are folded into running CRCs as they pass.
    """

    def __init__(self, flags: int, count: int, overflow: int, size: int) -> None:
        self.flags, self.count, self.overflow, self.size = flags, count, overflow, size
        self.received = 0
        self.prefix: bytearray | None = bytearray()
        # leaf/branch: buffer only up to the end of the element headers; else the whole page
        header_end = 16 + 16 * count if flags in (LEAF_PAGE, BRANCH_PAGE) else size
        self.header_end = header_end if header_end < size else size
        self.ranges: list[tuple[int, int, int]] = []  # (start, end, slot) sorted by start
        self.next_range = 0
        self.active: list[tuple[int, int, int]] = []
        self.captures: list[bytearray] = []
        self.crcs: list[int] = []
        self.segments: list[int] = []  # hashed segment lengths, in hash order
        self.kinds: tuple[int, ...] = ()
        self.error: str | None = None

    def feed(self, piece: memoryview) -> None:
        offset = self.received
        self.received += len(piece)
        if self.error is not None:
            return
        if self.prefix is not None:
            self.prefix += piece
            if len(self.prefix) < self.header_end or self.header_end == self.size:
                return
            prefix, self.prefix = self.prefix, None
            self._plan(prefix)
            if self.error is None:
                self._feed_ranges(memoryview(prefix), 0)
            return
        self._feed_ranges(piece, offset)

    def _plan(self, header: bytearray) -> None:
        count = self.count
        if self.flags == BRANCH_PAGE:
            if count == 0:
                self.error = "branch page has no elements"
                return
            t = _elements("IIQ", header, 16, count)
            kstart = list(map(add, t[0::3], range(16, 16 + 16 * count, 16)))
            kend = list(map(add, kstart, t[1::3]))
            if max(kend) > self.size:
                self.error = f"a branch key ends past the end of the {self.size}-byte page"
                return
            self.kinds = t[2::3]  # child pgids
            ranges = list(zip(kstart, kend, range(count), strict=True))
            self.captures = [bytearray() for _ in range(count)]
        else:
            if count == 0:
                return
            layout = _leaf_layout(header, count, self.size)
            if isinstance(layout, str):
                self.error = layout
                return
            flags, kstart, kend, vend = layout
            self.kinds = flags
            ranges = list(zip(kstart, kend, range(count), strict=True))
            self.captures = [bytearray() for _ in range(count)]
            # nested bucket values are kept (they are small: a header, or an inline page)
            for i in range(count):
                if flags[i] & BUCKET_LEAF_FLAG:
                    ranges.append((kend[i], vend[i], len(self.captures)))
                    self.captures.append(bytearray())
            # hashed segments in hash order, adjacent pieces merged; slot -1 - n is segment n
            segs: list[list[int]] = []
            for i in range(count):
                pieces = [(kstart[i], kend[i])]
                if not flags[i] & BUCKET_LEAF_FLAG:
                    pieces.append((kend[i], vend[i]))
                for s, e in pieces:
                    if s == e:
                        continue
                    if segs and segs[-1][1] == s:
                        segs[-1][1] = e
                    else:
                        segs.append([s, e])
            for n, (s, e) in enumerate(segs):
                ranges.append((s, e, -1 - n))
            self.segments = [e - s for s, e in segs]
            self.crcs = [0] * len(segs)
        self.ranges = sorted((r for r in ranges if r[0] < r[1]), key=lambda r: r[0])

    def _feed_ranges(self, piece: memoryview, offset: int) -> None:
        end = offset + len(piece)
        ranges, active = self.ranges, self.active
        while self.next_range < len(ranges) and ranges[self.next_range][0] < end:
            active.append(ranges[self.next_range])
            self.next_range += 1
        if not active:
            return
        still = []
        for r in active:
            start, stop, slot = r
            a = (start if start > offset else offset) - offset
            b = (stop if stop < end else end) - offset
            if a < b:
                if slot >= 0:
                    self.captures[slot] += piece[a:b]
                else:
                    self.crcs[-1 - slot] = crc32c(piece[a:b], self.crcs[-1 - slot])
            if stop > end:
                still.append(r)
        self.active = still

    def result(self) -> _Page:
        if self.prefix is not None:  # the whole page was buffered
            return _summarize(self.flags, bytes(self.prefix), self.count, self.overflow)
        if self.error is not None:
            if self.flags == BRANCH_PAGE:
                return _Branch(self.overflow, [], [], self.error)
            return _Leaf(self.overflow, self.count, self.error)
        count = self.count
        keys = [bytes(c) for c in self.captures[:count]]
        if self.flags == BRANCH_PAGE:
            if not _is_increasing(keys):
                return _Branch(self.overflow, [], [], "branch keys are not in strictly increasing order")
            return _Branch(self.overflow, keys, list(self.kinds))
        leaf = _Leaf(self.overflow, count)
        if count == 0:
            return leaf
        if not _is_increasing(keys):
            leaf.error = "leaf keys are not in strictly increasing order"
            return leaf
        leaf.first, leaf.last = keys[0], keys[-1]
        crc = length = 0
        for seg_crc, seg_len in zip(self.crcs, self.segments, strict=True):
            crc = _combine(crc, seg_crc, seg_len)
            length += seg_len
        leaf.crc, leaf.length = crc, length
        values = iter(self.captures[count:])
        buckets = [(keys[i], bytes(next(values))) for i in range(count) if self.kinds[i] & BUCKET_LEAF_FLAG]
        leaf.buckets = buckets or None
        return leaf


# ---- meta pages --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Meta:
    page: int
    page_size: int
    root: int
    freelist: int
    pgid: int
    txid: int


def _fnv1a64(data: bytes | bytearray | memoryview) -> int:
    h = 0xCBF29CE484222325
    for b in bytes(data):
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def _parse_meta(buf: bytes | bytearray | memoryview, offset: int, page: int) -> _Meta | str:
    """The meta page at ``offset`` or why it is invalid."""
    if len(buf) < offset + _META_SIZE:
        return f"meta page {page}: missing ({len(buf)} bytes of data)"
    pid, flags, _count, _overflow = _PAGE_HEADER.unpack_from(buf, offset)
    magic, version, page_size, _flags, root, _seq, freelist, pgid, txid, checksum = _META_BODY.unpack_from(
        buf, offset + 16
    )
    if magic != MAGIC:
        return f"meta page {page}: bad magic 0x{magic:08x} (a bbolt file has 0x{MAGIC:08x})"
    if version != VERSION:
        return f"meta page {page}: unsupported version {version} (expected {VERSION})"
    actual = _fnv1a64(memoryview(buf)[offset + 16 : offset + 16 + _META_BODY.size - 8])
    if actual != checksum:
        return f"meta page {page}: checksum mismatch (stored 0x{checksum:016x}, computed 0x{actual:016x})"
    if pid != page or flags != META_PAGE:
        return f"meta page {page}: page header says id {pid}, flags 0x{flags:x}"
    if page_size & (page_size - 1) or not MIN_PAGE_SIZE <= page_size <= MAX_PAGE_SIZE:
        return f"meta page {page}: unsupported page size {page_size}"
    if pgid < 3 or pgid > (1 << 48):
        return f"meta page {page}: implausible high-water mark {pgid}"
    if not 2 <= root < pgid:
        return f"meta page {page}: root page {root} outside the database's {pgid} pages"
    if freelist != NO_FREELIST and not 2 <= freelist < pgid:
        return f"meta page {page}: freelist page {freelist} outside the database's {pgid} pages"
    return _Meta(page, page_size, root, freelist, pgid, txid)


# ---- the summarizer ----------------------------------------------------------------------


@dataclass(frozen=True)
class SnapshotSummary:
    """What ``etcdutl snapshot status`` reports, plus a few facts about the database."""

    hash: int  # CRC-32C over bucket names, keys and values, as etcd computes it
    revision: int  # main revision of the last key in the "key" bucket (0 if none)
    total_keys: int  # keys (and nested buckets) in all top-level buckets
    total_size: int  # high-water mark * page size
    page_size: int
    txid: int
    db_bytes: int  # length of the bbolt part of the stream


@dataclass(frozen=True)
class SnapshotInfo:
    """The result of :func:`inspect_file`."""

    summary: SnapshotSummary
    has_sha256_trailer: bool
    sha256_ok: bool | None  # None when there is no trailer; a mismatch raises instead
    file_size: int


class SnapshotSummarizer:
    """Summarise a bbolt database fed in file order, in chunks of any size, exactly once.

    Call :meth:`update` with each chunk, then :meth:`finish`. Nothing is raised before
    :meth:`finish` (which raises :class:`SnapshotIntegrityError` for any corruption); a fatal
    problem seen early (e.g. no valid meta page) is available as :attr:`error` meanwhile, so a
    caller that streams elsewhere can give up early. The caller may reuse its buffers: nothing
    passed to :meth:`update` is referenced afterwards.
    """

    def __init__(self) -> None:
        self._received = 0
        self._buf = bytearray()  # header bytes before the meta pages are read; then a partial page
        self._meta: _Meta | None = None
        self._meta_note: str | None = None
        self._error: str | None = None
        self._ps = 0
        self._next_page = 0
        self._ids = array("Q")  # the id in each page's header (for error messages)
        self._pages: dict[int, _Page] = {}
        self._bad: dict[int, str] = {}
        self._streams: list[tuple[int, int, _SpanStream]] = []  # (first page, end page, stream)
        self._done = False
        self.stats: dict[str, int] = {}  # after finish(): pages, depth (tree levels), leaves
        self.free_pages: list[int] = []  # after finish(): pages not reachable from the meta page
        self.buckets: dict[bytes, bytes] = {}  # after finish(): each top-level bucket's name and value

    @property
    def error(self) -> str | None:
        """A fatal problem already known (finish() will raise it), else None."""
        return self._error

    # ---- feeding ---------------------------------------------------------------------

    def update(self, data: bytes | bytearray | memoryview) -> None:
        if self._done:
            raise RuntimeError("SnapshotSummarizer.update() after finish()")
        view = memoryview(data)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        if not view:
            return
        self._received += len(view)
        if self._error is not None:
            return
        if self._meta is None:
            self._buf += view
            if not self._read_metas():
                return
            view = memoryview(bytes(self._buf[2 * self._ps :]))
            self._buf = bytearray()
            self._next_page = 2
        ps = self._ps
        if self._buf:
            need = ps - len(self._buf)
            if len(view) < need:
                self._buf += view
                return
            self._buf += view[:need]
            view = view[need:]
            self._pages_in(memoryview(bytes(self._buf)))
            self._buf = bytearray()
        whole = len(view) - len(view) % ps
        if whole:
            self._pages_in(view[:whole])
        if whole < len(view):
            self._buf += view[whole:]

    def _read_metas(self) -> bool:
        buf = self._buf
        if len(buf) < _META_SIZE:
            return False
        meta0 = _parse_meta(buf, 0, 0)
        ps = meta0.page_size if isinstance(meta0, _Meta) else DEFAULT_PAGE_SIZE
        if len(buf) < 2 * ps:
            return False
        meta1 = _parse_meta(buf, ps, 1)
        if isinstance(meta1, _Meta) and meta1.page_size != ps:
            meta1 = f"meta page 1: page size {meta1.page_size} differs from meta page 0's {ps}"
        if isinstance(meta0, _Meta) and isinstance(meta1, _Meta):
            meta = meta1 if meta1.txid > meta0.txid else meta0
        elif isinstance(meta0, _Meta):
            meta, self._meta_note = meta0, str(meta1)
        elif isinstance(meta1, _Meta):
            meta, self._meta_note = meta1, str(meta0)
        else:
            self._error = f"not a valid bbolt database: {meta0}; {meta1}"
            return False
        self._meta, self._ps = meta, ps
        self._ids.extend(_PAGE_HEADER.unpack_from(buf, i * ps)[0] for i in range(2))
        return True

    def _pages_in(self, view: memoryview) -> None:
        """Handle whole pages, starting at page ``self._next_page``."""
        assert self._meta is not None
        ps, hw = self._ps, self._meta.pgid
        p0 = self._next_page
        n = len(view) // ps
        self._next_page += n
        n = min(n, hw - p0)
        if n <= 0:
            return  # past the high-water mark: not part of the database
        view = view[: n * ps]
        if self._streams:
            kept = []
            for first, end, stream in self._streams:
                a, b = max(first + stream.received // ps, p0), min(end, p0 + n)
                stream.feed(view[(a - p0) * ps : (b - p0) * ps])
                if b == end:
                    self._pages[first] = stream.result()
                else:
                    kept.append((first, end, stream))
            self._streams = kept
        if _LITTLE_ENDIAN:
            ids = view.cast("Q")[:: ps // 8].tolist()
        else:
            ids = [_U64.unpack_from(view, i * ps)[0] for i in range(n)]
        self._ids.extend(ids)
        for i in compress(range(n), map(eq, ids, range(p0, p0 + n))):
            self._candidate(view, i, p0 + i, n)

    def _candidate(self, view: memoryview, i: int, pgid: int, n: int) -> None:
        """Page ``pgid`` names itself in its header: summarise it in case it is reachable."""
        assert self._meta is not None
        ps, hw = self._ps, self._meta.pgid
        _, flags, count, overflow = _PAGE_HEADER.unpack_from(view, i * ps)
        known = flags in (LEAF_PAGE, BRANCH_PAGE) or (flags == FREELIST_PAGE and pgid == self._meta.freelist)
        if not known:
            self._bad[pgid] = f"has page flags 0x{flags:x}"
            return
        if pgid + 1 + overflow > hw:
            self._bad[pgid] = f"overflow of {overflow} pages runs past the high-water mark ({hw} pages)"
            return
        size = (1 + overflow) * ps
        start = i * ps
        if i + 1 + overflow <= n:
            self._pages[pgid] = _summarize(flags, bytes(view[start : start + size]), count, overflow)
        else:
            stream = _SpanStream(flags, count, overflow, size)
            stream.feed(view[start:])
            self._streams.append((pgid, pgid + 1 + overflow, stream))

    # ---- finishing -------------------------------------------------------------------

    def _fail(self, message: str) -> SnapshotIntegrityError:
        return SnapshotIntegrityError(message)

    def finish(self) -> SnapshotSummary:
        """Check the database and return its summary; raises SnapshotIntegrityError."""
        self._done = True
        total = self._received
        if self._meta is None:
            if self._error:
                raise self._fail(self._error)
            if total == 0:
                raise self._fail("snapshot is empty (0 bytes)")
            if len(self._buf) >= _META_SIZE:
                meta0 = _parse_meta(self._buf, 0, 0)
                if isinstance(meta0, str):
                    raise self._fail(f"not a valid bbolt database: {meta0}")
                raise self._fail(
                    f"snapshot truncated: {total} bytes, less than the two {meta0.page_size}-byte meta pages"
                )
            raise self._fail(f"not a bbolt database: {total} bytes is too short for a meta page")
        meta, ps = self._meta, self._ps
        hw = meta.pgid
        need = hw * ps
        if total < need:
            raise self._fail(
                f"snapshot truncated: meta page {meta.page} (txid {meta.txid}) gives {hw} pages of {ps} bytes "
                f"({need} bytes) but the data ends at byte {total}, inside page {total // ps}"
            )
        state = bytearray(hw)  # 0 unaccounted, 1 reachable, 2 free
        state[0] = state[1] = 1
        self._load_freelist(state)
        walker = _Walker(self, state)
        h, total_keys, revision = walker.hash_buckets()
        walker.check_nested()
        if meta.freelist != NO_FREELIST:
            lost = state.find(0)
            if lost >= 0:
                raise self._fail(f"page {lost} is neither reachable nor on the freelist")
        self.free_pages = [i for i, v in enumerate(state) if v != 1]
        self.buckets = dict(walker.buckets)
        self.stats = {"pages": hw, "depth": walker.max_depth, "leaves": walker.leaves}
        return SnapshotSummary(
            hash=h,
            revision=revision,
            total_keys=total_keys,
            total_size=need,
            page_size=ps,
            txid=meta.txid,
            db_bytes=total,
        )

    def leaf_spans(self, root: int) -> list[tuple[int, int]]:
        """After :meth:`finish`: (page id, overflow) of each leaf page of the tree at ``root``, in key order.

        The tree was checked by :meth:`finish`; this only follows its branch pages again, so a caller
        can pick those pages out of a second pass over the same bytes."""
        if not self._done or self._meta is None:
            raise RuntimeError("SnapshotSummarizer.leaf_spans() before finish()")
        spans: list[tuple[int, int]] = []
        pending = [root]
        while pending:
            page = self._pages[pending[-1]]
            pgid = pending.pop()
            if isinstance(page, _Branch):
                pending.extend(reversed(page.pgids))
            else:
                spans.append((pgid, page.overflow))
        return spans

    def _describe_missing(self, pgid: int) -> str:
        if pgid in self._bad:
            return f"page {pgid} {self._bad[pgid]}"
        return f"page {pgid} has id {self._ids[pgid]} in its header"

    def _load_freelist(self, state: bytearray) -> None:
        assert self._meta is not None
        fl = self._meta.freelist
        if fl == NO_FREELIST:
            return
        page = self._pages.get(fl)
        if not isinstance(page, _Freelist):
            raise self._fail(f"freelist {self._describe_missing(fl)}, expected a freelist page")
        if page.error:
            raise self._fail(f"freelist page {fl}: {page.error}")
        if state[fl : fl + 1 + page.overflow].count(0) != 1 + page.overflow:
            raise self._fail(f"freelist page {fl} overlaps the meta pages")
        state[fl : fl + 1 + page.overflow] = b"\x01" * (1 + page.overflow)
        hw = len(state)
        for pid in page.ids:
            if not 2 <= pid < hw:
                raise self._fail(f"freelist names page {pid}, outside the database's {hw} pages")
            if state[pid] == 2:
                raise self._fail(f"page {pid} is freed twice in the freelist")
            if state[pid] == 1:
                raise self._fail(f"freelist names page {pid}, which is a meta or freelist page")
            state[pid] = 2


def _show(name: bytes, limit: int = 60) -> str:
    text = repr(name.decode("utf-8", "backslashreplace"))
    return text if len(text) <= limit else text[: limit - 4] + "...'"


class _Walker:
    """Walks the trees of a fed database in key order (used by finish())."""

    def __init__(self, owner: SnapshotSummarizer, state: bytearray) -> None:
        self.owner = owner
        self.state = state
        self.pages = owner._pages
        self.max_depth = 0
        self.leaves = 0
        self.nested: list[tuple[bytes, int]] = []  # (path, root pgid) of nested buckets to check
        self.buckets: list[tuple[bytes, bytes]] = []  # (name, value) of the top-level buckets

    def _fail(self, message: str) -> SnapshotIntegrityError:
        return SnapshotIntegrityError(message)

    def _page(self, pgid: int, where: str) -> _Leaf | _Branch:
        hw = len(self.state)
        if not 2 <= pgid < hw:
            raise self._fail(f"{where}: page {pgid} is outside the database's {hw} pages")
        page = self.pages.get(pgid)
        if page is None:
            raise self._fail(f"{where}: {self.owner._describe_missing(pgid)}")
        if isinstance(page, _Freelist):
            raise self._fail(f"{where}: page {pgid} is a freelist page")
        if page.error:
            raise self._fail(f"{where}: page {pgid}: {page.error}")
        span = 1 + page.overflow
        used = self.state[pgid : pgid + span]
        if used.count(0) != span:
            if 2 in used:
                raise self._fail(f"{where}: page {pgid} is in use but on the freelist")
            raise self._fail(f"{where}: page {pgid} is referenced more than once")
        self.state[pgid : pgid + span] = b"\x01" * span
        return page

    def leaves_of(self, root: int, where: str) -> Iterator[_Leaf]:
        """The leaf pages of the tree at ``root``, in key order, checking key order throughout."""
        last: bytes | None = None
        page = self._page(root, where)
        stack: list[Iterator[tuple[bytes, int]]] = []
        while True:
            if isinstance(page, _Branch):
                stack.append(zip(page.keys, page.pgids, strict=True))
                if len(stack) > _MAX_DEPTH:
                    raise self._fail(f"{where}: tree deeper than {_MAX_DEPTH} levels")
            else:
                self.leaves += 1
                self.max_depth = max(self.max_depth, len(stack) + 1)
                if page.first is not None:
                    if last is not None and page.first <= last:
                        raise self._fail(f"{where}: keys out of order across leaf pages")
                    last = page.last
                yield page
            while stack:
                item = next(stack[-1], None)
                if item is None:
                    stack.pop()
                    continue
                key, child = item
                page = self._page(child, where)
                first = page.keys[0] if isinstance(page, _Branch) else page.first
                if first is not None and first < key:
                    raise self._fail(f"{where}: page {child} starts below its key in the parent branch page")
                break
            else:
                return

    def _inline_leaf(self, value: bytes, where: str) -> _Leaf:
        page = value[16:]
        if len(page) < 16:
            raise self._fail(f"{where}: inline bucket value of {len(value)} bytes is too short")
        _, flags, count, _ = _PAGE_HEADER.unpack_from(page, 0)
        if not flags & LEAF_PAGE:
            raise self._fail(f"{where}: inline bucket page has flags 0x{flags:x}, expected a leaf")
        leaf = _summarize_leaf(page, count, 0)
        if leaf.error:
            raise self._fail(f"{where}: inline bucket: {leaf.error}")
        return leaf

    def _bucket_root(self, value: bytes, where: str) -> int:
        if len(value) < _BUCKET_HEADER.size:
            raise self._fail(f"{where}: bucket value of {len(value)} bytes is too short")
        return int(_BUCKET_HEADER.unpack_from(value, 0)[0])

    def _leaves(self, value: bytes, where: str) -> Iterator[_Leaf]:
        root = self._bucket_root(value, where)
        if root == 0:
            yield self._inline_leaf(value, where)
        else:
            yield from self.leaves_of(root, where)

    def hash_buckets(self) -> tuple[int, int, int]:
        meta = self.owner._meta
        assert meta is not None
        buckets: list[tuple[bytes, bytes]] = []
        for leaf in self.leaves_of(meta.root, "root bucket"):
            if leaf.count != len(leaf.buckets or ()):
                raise self._fail(f"root bucket: leaf with a key that is not a bucket (key {_show(leaf.first or b'')})")
            buckets.extend(leaf.buckets or ())
        self.buckets = buckets
        h = total_keys = revision = 0
        for name, value in buckets:
            where = f"bucket {_show(name)}"
            h = crc32c(name, h)
            last: bytes | None = None
            for leaf in self._leaves(value, where):
                h = _combine(h, leaf.crc, leaf.length)
                total_keys += leaf.count
                if leaf.count:
                    last = leaf.last
                for key, sub in leaf.buckets or ():
                    self.nested.append((name + b"/" + key, self._bucket_root(sub, where)))
            if name == b"key" and last is not None:
                if len(last) < 8:
                    raise self._fail(f"bucket 'key': last key {_show(last)} is shorter than a revision")
                revision = int.from_bytes(last[:8], "big", signed=True)
        return h, total_keys, revision

    def check_nested(self) -> None:
        """Nested buckets are not hashed but their pages must be sound (bolt's check walks them)."""
        while self.nested:
            path, root = self.nested.pop()
            if root == 0:
                continue  # bolt's check skips inline buckets
            where = f"bucket {_show(path)}"
            for leaf in self.leaves_of(root, where):
                for key, sub in leaf.buckets or ():
                    self.nested.append((path + b"/" + key, self._bucket_root(sub, where)))


# ---- convenience -------------------------------------------------------------------------


def summarize_bytes(data: bytes | bytearray | memoryview) -> SnapshotSummary:
    """Summarise a bbolt database held in memory (no sha256 trailer handling)."""
    s = SnapshotSummarizer()
    s.update(data)
    return s.finish()


def inspect_file(path: Path, *, chunk_size: int = 1 << 20) -> SnapshotInfo:
    """Check a snapshot file (sha256 trailer if present, then the database) and summarise it.

    The file is read once, in ``chunk_size`` pieces, into one reused buffer.
    """
    path = Path(path)
    size = path.stat().st_size
    has_trailer = size >= SHA256_TRAILER and size % 512 == SHA256_TRAILER
    db_size = size - SHA256_TRAILER if has_trailer else size
    summarizer = SnapshotSummarizer()
    sha = hashlib.sha256()
    view = memoryview(bytearray(max(chunk_size, 1)))
    with path.open("rb", buffering=0) as f:
        remaining = db_size
        while remaining:
            got = f.readinto(view[: min(len(view), remaining)])
            if not got:
                raise SnapshotIntegrityError(f"snapshot {path} shrank while being read")
            chunk = view[:got]
            if has_trailer:
                sha.update(chunk)
            summarizer.update(chunk)
            remaining -= got
        trailer = f.read(SHA256_TRAILER) if has_trailer else b""
    sha_ok: bool | None = None
    if has_trailer:
        digest = sha.digest()
        if digest != trailer:
            raise SnapshotIntegrityError(
                f"snapshot sha256 mismatch: the trailer says {trailer.hex()}, "
                f"the first {db_size} bytes hash to {digest.hex()}"
            )
        sha_ok = True
    return SnapshotInfo(summary=summarizer.finish(), has_sha256_trailer=has_trailer, sha256_ok=sha_ok, file_size=size)
