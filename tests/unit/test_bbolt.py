"""etcdops.adapters.bbolt: CRC-32C combine, streaming summaries and integrity errors (no network).

The snapshots in tests/data were taken with ``etcdctl snapshot save`` from etcd 3.5.1 and 3.4.23
(60 small keys, a 12 KB value spanning several pages, deletes and a compaction); their expected
numbers in bbolt-expected.json come from ``etcdutl``/``etcdctl snapshot status -w json``.
"""

from __future__ import annotations

import json
import random
import struct
from pathlib import Path

import crc32c as crc32c_mod
import pytest
from hypothesis import given
from hypothesis import strategies as st

from etcdops.adapters.bbolt import (
    NO_FREELIST,
    SnapshotSummarizer,
    SnapshotSummary,
    _combine,
    crc32c,
    crc32c_combine,
    crc32c_shift,
    inspect_file,
    summarize_bytes,
)
from etcdops.domain.errors import SnapshotIntegrityError

DATA = Path(__file__).resolve().parent.parent / "data"
EXPECTED = json.loads((DATA / "bbolt-expected.json").read_text())
SNAPSHOTS = sorted(EXPECTED)
PS = 4096


def _db(name: str) -> bytes:
    """The bbolt part of a snapshot file (without its sha256 trailer)."""
    data = (DATA / name).read_bytes()
    assert len(data) % 512 == 32
    return data[:-32]


def _summary(data: bytes, chunks: list[int] | None = None) -> SnapshotSummary:
    s = SnapshotSummarizer()
    if chunks is None:
        s.update(data)
    else:
        pos = 0
        for size in chunks:
            s.update(data[pos : pos + size])
            pos += size
        assert pos >= len(data)
    return s.finish()


def _fnv(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) % (1 << 64)
    return h


def _set_meta(db: bytearray, page: int, **fields: int) -> None:
    """Rewrite fields of a meta page and fix its checksum."""
    names = ["magic", "version", "page_size", "flags", "root", "sequence", "freelist", "pgid", "txid"]
    base = page * PS + 16
    values = dict(zip(names, struct.unpack_from("<IIIIQQQQQ", db, base), strict=True))
    values.update(fields)
    struct.pack_into("<IIIIQQQQQ", db, base, *(values[n] for n in names))
    struct.pack_into("<Q", db, base + 56, _fnv(bytes(db[base : base + 56])))


def _meta_field(db: bytes, page: int, name: str) -> int:
    offsets = {"root": 16, "freelist": 32, "pgid": 40, "txid": 48}
    return int(struct.unpack_from("<Q", db, page * PS + 16 + offsets[name])[0])


# ---- CRC-32C combine ---------------------------------------------------------------------


@given(st.binary(max_size=3000), st.binary(max_size=40000))
def test_combine_matches_crc_of_concatenation(a: bytes, b: bytes) -> None:
    expected = crc32c_mod.crc32c(a + b)
    assert crc32c_combine(crc32c(a), crc32c(b), len(b)) == expected
    assert _combine(crc32c(a), crc32c(b), len(b)) == expected


@given(st.integers(0, 0xFFFFFFFF), st.integers(0, 70000))
def test_shift_matches_crc_over_zeros(crc: int, n: int) -> None:
    zeros = bytes(n)
    assert crc32c_shift(crc, n) == crc32c_mod.crc32c(zeros, crc) ^ crc32c_mod.crc32c(zeros)


@given(
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 1 << 40),
    st.integers(0, 1 << 40),
)
def test_combine_is_associative_for_huge_lengths(x: int, y: int, z: int, ly: int, lz: int) -> None:
    left = crc32c_combine(crc32c_combine(x, y, ly), z, lz)
    right = crc32c_combine(x, crc32c_combine(y, z, lz), ly + lz)
    assert left == right
    assert crc32c_shift(crc32c_shift(x, ly), lz) == crc32c_shift(x, ly + lz)


def test_combine_with_empty_parts() -> None:
    c = crc32c(b"hello")
    assert crc32c_combine(c, crc32c(b""), 0) == c
    assert crc32c_combine(0, c, 5) == c


# ---- summaries of real snapshots ---------------------------------------------------------


@pytest.mark.parametrize("name", SNAPSHOTS)
def test_inspect_file_matches_reference(name: str) -> None:
    info = inspect_file(DATA / name)
    expected = EXPECTED[name]
    s = info.summary
    assert (s.hash, s.revision, s.total_keys, s.total_size) == (
        expected["hash"],
        expected["revision"],
        expected["totalKey"],
        expected["totalSize"],
    )
    assert info.has_sha256_trailer and info.sha256_ok is True
    assert info.file_size == s.db_bytes + 32 == s.total_size + 32
    assert s.page_size == PS


@pytest.mark.parametrize("name", SNAPSHOTS)
def test_any_chunking_gives_the_same_summary(name: str) -> None:
    db = _db(name)
    whole = _summary(db)
    assert _summary(db, [1] * len(db)) == whole
    assert _summary(db, [4096] * (len(db) // 4096 + 1)) == whole
    rnd = random.Random(name)
    for _ in range(5):
        chunks = [rnd.choice([1, 7, 100, 4095, 4097, 9000, 20000]) for _ in range(len(db))]
        assert _summary(db, chunks) == whole
    assert summarize_bytes(memoryview(bytearray(db))) == whole


@pytest.mark.parametrize("chunk_size", [1, 1000, 4096, 5000, 1 << 20])
def test_inspect_file_chunk_sizes(chunk_size: int) -> None:
    name = SNAPSHOTS[0]
    assert inspect_file(DATA / name, chunk_size=chunk_size).summary == inspect_file(DATA / name).summary


def test_file_without_trailer(tmp_path: Path) -> None:
    name = SNAPSHOTS[0]
    path = tmp_path / "plain.db"
    path.write_bytes(_db(name))
    info = inspect_file(path)
    assert not info.has_sha256_trailer and info.sha256_ok is None
    assert info.summary.hash == EXPECTED[name]["hash"]


def test_bytes_past_the_high_water_mark_are_ignored() -> None:
    """A bbolt file may be longer than pgid * page_size (preallocated space)."""
    db = _db(SNAPSHOTS[0])
    longer = db + b"\xaa" * (3 * PS + 100)
    got = _summary(longer)
    assert got.hash == _summary(db).hash and got.db_bytes == len(longer)


# ---- integrity errors --------------------------------------------------------------------


def _error(data: bytes) -> str:
    with pytest.raises(SnapshotIntegrityError) as excinfo:
        _summary(data)
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def _file_error(path: Path) -> str:
    with pytest.raises(SnapshotIntegrityError) as excinfo:
        inspect_file(path)
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.snap"
    path.write_bytes(b"")
    assert "empty" in _file_error(path)


def test_garbage_file(tmp_path: Path) -> None:
    path = tmp_path / "garbage.snap"
    path.write_bytes(random.Random(1).randbytes(50000))
    assert "bad magic" in _file_error(path)
    assert "too short" in _error(b"hello")
    assert "bad magic" in _error(b"\x00" * 100)


@pytest.mark.parametrize("cut", [60, 5000, 2 * PS, 10 * PS + 123, -PS, -1])
def test_truncated_database(cut: int) -> None:
    db = _db(SNAPSHOTS[0])
    message = _error(db[:cut])
    assert "truncated" in message or "too short" in message, message
    if cut % len(db) >= 2 * PS:
        assert f"ends at byte {cut % len(db)}" in message


def test_truncated_file_with_trailer_is_a_sha_mismatch(tmp_path: Path) -> None:
    data = (DATA / SNAPSHOTS[0]).read_bytes()
    path = tmp_path / "cut.snap"
    path.write_bytes(data[: 10 * PS] + data[-32:])  # still looks like it has a trailer
    assert "sha256 mismatch" in _file_error(path)
    path.write_bytes(data[: 10 * PS + 7])  # no trailer
    assert "truncated" in _file_error(path)


def test_flipped_byte_in_trailer(tmp_path: Path) -> None:
    data = bytearray((DATA / SNAPSHOTS[0]).read_bytes())
    data[-5] ^= 0x40
    path = tmp_path / "bad-trailer.snap"
    path.write_bytes(data)
    assert "sha256 mismatch" in _file_error(path)


@pytest.mark.parametrize("offset", [16, 20, 40, 70])
def test_flipped_byte_in_meta_page_of_file(tmp_path: Path, offset: int) -> None:
    data = bytearray((DATA / SNAPSHOTS[0]).read_bytes())
    data[offset] ^= 0x01
    path = tmp_path / "bad-meta.snap"
    path.write_bytes(data)
    assert "sha256 mismatch" in _file_error(path)


@pytest.mark.parametrize("name", SNAPSHOTS)
def test_flipped_byte_in_one_meta_page_falls_back_like_bolt(name: str) -> None:
    """Without a trailer, bolt uses the other meta page (etcd writes both with the same root)."""
    db = _db(name)
    good = _summary(db)
    for page in (0, 1):
        bad = bytearray(db)
        bad[page * PS + 16 + 40] ^= 0x10  # inside pgid: checksum mismatch
        got = _summary(bytes(bad))
        assert (got.hash, got.revision, got.total_keys, got.total_size) == (
            good.hash,
            good.revision,
            good.total_keys,
            good.total_size,
        )


def test_flipped_bytes_in_both_meta_pages() -> None:
    db = bytearray(_db(SNAPSHOTS[0]))
    db[16 + 48] ^= 0x01
    db[PS + 16 + 48] ^= 0x01
    message = _error(bytes(db))
    assert "meta page 0: checksum mismatch" in message and "meta page 1: checksum mismatch" in message


def test_flipped_magic_in_both_meta_pages() -> None:
    db = bytearray(_db(SNAPSHOTS[0]))
    db[16] ^= 0x01
    db[PS + 16] ^= 0x01
    assert "bad magic" in _error(bytes(db))


@pytest.mark.parametrize("name", SNAPSHOTS)
def test_corrupt_reachable_pages_fail(name: str) -> None:
    db = _db(name)
    s = SnapshotSummarizer()
    s.update(db)
    s.finish()
    free = set(s.free_pages)
    # reachable page starts (overflow pages carry data, not a header)
    reachable = [p for p in range(2, len(db) // PS) if p not in free and struct.unpack_from("<Q", db, p * PS)[0] == p]
    root = _meta_field(db, 0, "root")
    assert root in reachable
    for page in reachable:
        bad = bytearray(db)
        bad[page * PS] ^= 0x01  # page id
        message = _error(bytes(bad))
        assert f"page {page}" in message or f"page {page ^ 1}" in message, message
    # root page: wrong page type
    bad = bytearray(db)
    struct.pack_into("<H", bad, root * PS + 8, 0x04)
    assert "flags 0x4" in _error(bytes(bad))
    # element pointing past the end of the page
    bad = bytearray(db)
    struct.pack_into("<I", bad, root * PS + 16 + 4, 5000)
    assert "past the end" in _error(bytes(bad))


@pytest.mark.parametrize("name", SNAPSHOTS)
def test_keys_out_of_order_fail(name: str) -> None:
    db = _db(name)
    root = _meta_field(db, 0, "root")
    bad = bytearray(db)
    # swap the first two elements of the root bucket's leaf (pos is relative to the element)
    count = struct.unpack_from("<H", db, root * PS + 10)[0]
    assert count >= 2
    f0, p0, k0, v0 = struct.unpack_from("<IIII", db, root * PS + 16)
    f1, p1, k1, v1 = struct.unpack_from("<IIII", db, root * PS + 32)
    struct.pack_into("<IIIIIIII", bad, root * PS + 16, f1, p1 + 16, k1, v1, f0, p0 - 16, k0, v0)
    assert "not in strictly increasing order" in _error(bytes(bad))


@pytest.mark.parametrize("name", SNAPSHOTS)
def test_junk_in_free_pages_is_ignored(name: str) -> None:
    db = _db(name)
    s = SnapshotSummarizer()
    s.update(db)
    good = s.finish()
    free = [p for p in s.free_pages if p >= 2]
    assert free, "the test snapshot should have free pages"
    junk = bytearray(db)
    rnd = random.Random(3)
    for p in free:
        junk[p * PS : (p + 1) * PS] = rnd.randbytes(PS)
        # a header that names itself with an absurd overflow and count
        struct.pack_into("<QHHI", junk, p * PS, p, 0x02, 0xFFFF, 0x7FFFFFFF)
    assert _summary(bytes(junk)) == good
    assert _summary(bytes(junk), [333] * (len(junk) // 333 + 1)) == good


def _with_synced_freelist(db: bytes, drop: int = 0, extra: tuple[int, ...] = ()) -> tuple[bytes, SnapshotSummary]:
    """etcd does not sync bolt's freelist; write one into a free page, as bolt would."""
    s = SnapshotSummarizer()
    s.update(db)
    good = s.finish()
    free = [p for p in s.free_pages if p >= 2]
    target, listed = free[0], free[1 + drop :] + list(extra)
    out = bytearray(db)
    out[target * PS : (target + 1) * PS] = bytes(PS)
    struct.pack_into(f"<QHHI{len(listed)}Q", out, target * PS, target, 0x10, len(listed), 0, *listed)
    for page in (0, 1):
        _set_meta(out, page, freelist=target)
    return bytes(out), good


@pytest.mark.parametrize("name", SNAPSHOTS)
def test_synced_freelist(name: str) -> None:
    db = _db(name)
    assert _meta_field(db, 0, "freelist") == NO_FREELIST
    with_freelist, good = _with_synced_freelist(db)
    assert _summary(with_freelist) == good
    missing, _ = _with_synced_freelist(db, drop=1)
    assert "neither reachable nor on the freelist" in _error(missing)
    root = _meta_field(db, 0, "root")
    in_use, _ = _with_synced_freelist(db, extra=(root,))
    assert "on the freelist" in _error(in_use)
    twice, _ = _with_synced_freelist(db, extra=(_with_free_page(db),))
    assert "freed twice" in _error(twice)


def _with_free_page(db: bytes) -> int:
    s = SnapshotSummarizer()
    s.update(db)
    s.finish()
    return [p for p in s.free_pages if p >= 2][-1]


def test_update_after_finish_is_an_error() -> None:
    s = SnapshotSummarizer()
    s.update(_db(SNAPSHOTS[0]))
    s.finish()
    with pytest.raises(RuntimeError):
        s.update(b"x")


def test_early_error_is_visible_before_finish() -> None:
    s = SnapshotSummarizer()
    s.update(b"\x00" * 3 * PS)
    assert s.error is not None and "bad magic" in s.error
    s.update(b"\x00" * PS)  # still accepted, ignored
    with pytest.raises(SnapshotIntegrityError):
        s.finish()
