"""RestoreCluster reads a backup as a stream: the snapshot is checked, its live keys counted and its
plaintext staged without a local copy, and a stream that fails its checks stages nothing."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pytest
from hypothesis import given
from hypothesis import strategies as st
from moto import mock_aws

from etcdops.adapters.backup.store import MIN_PART_SIZE, S3Store
from etcdops.adapters.bbolt import summarize_bytes
from etcdops.adapters.bbolt_keys import leaf_elements
from etcdops.adapters.etcd.pb import etcd_pb2 as pb
from etcdops.app.backup.verify import CheckedSnapshot
from etcdops.app.runbook import restore, restore_validate
from etcdops.domain.backup.errors import BackupIntegrityError
from etcdops.domain.backup.manifest import Manifest

DATA = Path(__file__).resolve().parents[1] / "data"
SNAPSHOTS = ["bbolt-etcd34.snap", "bbolt-etcd35.snap"]


def manifest_for(data: bytes) -> Manifest:
    summary = summarize_bytes(data[:-32])
    return Manifest(
        id="20261207T120000Z-a1b2c3",
        uri="file:///backups/20261207T120000Z-a1b2c3.snapshot.enc",
        cluster_id="cdf818194e3a8c32",
        cluster_name="local",
        member_id="8e9e05c52164694d",
        etcd_version="3.5.1",
        revision=summary.revision,
        snapshot_hash=summary.hash,
        total_keys=summary.total_keys,
        sha256=data[-32:].hex(),
        size_plain=len(data),
        size_stored=len(data),
        created_at=datetime(2026, 12, 7, 12, tzinfo=UTC),
        key_id="local",
        compression="none",
        frame_length=262144,
    )


def chunked(data: bytes, sizes: list[int]) -> Iterator[bytes]:
    at, i = 0, 0
    while at < len(data):
        size = sizes[i % len(sizes)] if sizes else len(data)
        yield data[at : at + size]
        at, i = at + size, i + 1


def replayed_in_key_order(data: bytes, snapshot: CheckedSnapshot) -> int:
    """The reference: the "key" bucket's leaves in key order from the whole file, puts add, tombstones remove."""
    summarizer = snapshot.summarizer
    assert snapshot.summary is not None
    page_size = snapshot.summary.page_size
    root = int.from_bytes(summarizer.buckets[b"key"][:8], "little")
    live: set[bytes] = set()
    for pgid, overflow in summarizer.leaf_spans(root):
        page = data[pgid * page_size : (pgid + 1 + overflow) * page_size]
        for _flags, revision, value in leaf_elements(page, 0, page_size):
            key = pb.KeyValue.FromString(value).key
            if revision[17:18] == b"t":
                live.discard(key)
            elif key:
                live.add(key)
    return len(live)


@pytest.mark.parametrize("name", SNAPSHOTS)
@given(first=st.lists(st.integers(1, 9000), max_size=6), second=st.lists(st.integers(1, 9000), max_size=6))
def test_live_keys_counted_over_two_streamed_passes_equal_a_replay_in_key_order(
    name: str, first: list[int], second: list[int]
) -> None:
    data = (DATA / name).read_bytes()
    snapshot = CheckedSnapshot(chunked(data, first), manifest_for(data))
    assert b"".join(snapshot) == data  # the stream hands every byte on, checked at its end

    def again() -> CheckedSnapshot:
        return CheckedSnapshot(chunked(data, second), manifest_for(data))

    count = restore_validate.count_live_keys(snapshot, again)

    assert count == replayed_in_key_order(data, snapshot) > 0


def test_a_second_pass_that_differs_from_the_first_fails_its_checks() -> None:
    data = (DATA / "bbolt-etcd35.snap").read_bytes()
    snapshot = CheckedSnapshot([data], manifest_for(data))
    for _chunk in snapshot:
        pass
    tampered = bytearray(data)
    tampered[len(data) // 2] ^= 0x01

    with pytest.raises(BackupIntegrityError, match="sha256"):
        restore_validate.count_live_keys(snapshot, lambda: CheckedSnapshot([bytes(tampered)], manifest_for(data)))


@mock_aws
def test_a_staged_stream_that_fails_its_checks_at_the_end_leaves_no_object_and_no_upload() -> None:
    # Given a staging bucket and a "snapshot" of three multipart parts whose checks fail at its end
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="staging")
    staging = S3Store(s3, "staging", "local", part_size=MIN_PART_SIZE)
    good = (DATA / "bbolt-etcd35.snap").read_bytes()
    body = good[:-32] + b"\0" * (3 * MIN_PART_SIZE)
    bad = body + hashlib.sha256(body).digest()  # a consistent trailer, but not the manifest's database

    # When it is staged as RestoreMembers stages it
    with pytest.raises(BackupIntegrityError):
        staging.put_stream("restore/x.snapshot", CheckedSnapshot(chunked(bad, [1 << 20]), manifest_for(good)))

    # Then nothing is left: no object, no parts of an unfinished upload
    assert s3.list_objects_v2(Bucket="staging").get("KeyCount") == 0
    assert not s3.list_multipart_uploads(Bucket="staging").get("Uploads")


@mock_aws
def test_removing_what_a_restore_staged_also_aborts_an_upload_a_crash_cut_off() -> None:
    # Given the staging bucket with a finished staged snapshot and the parts of an upload whose writer died
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="staging")
    staging = S3Store(s3, "staging", "local", part_size=MIN_PART_SIZE)
    doc = {"cluster": "local", "execution": "restore-crashed"}
    snapshot, probe = restore.staged_keys(doc)
    staging.put_bytes(snapshot, b"plain snapshot")
    upload = s3.create_multipart_upload(Bucket="staging", Key=f"local/{snapshot}")["UploadId"]
    s3.upload_part(Bucket="staging", Key=f"local/{snapshot}", UploadId=upload, PartNumber=1, Body=b"x" * MIN_PART_SIZE)
    ctx = restore.RestoreContext(
        config=None,  # type: ignore[arg-type]  # removing staged objects needs only the staging store
        client=None,  # type: ignore[arg-type]
        compute=None,  # type: ignore[arg-type]
        state=None,  # type: ignore[arg-type]
        notifier=None,  # type: ignore[arg-type]
        backup_target=None,  # type: ignore[arg-type]
        config_stores=[],
        staging=lambda: staging,
    )

    # When the Catch path's step runs
    out = restore.run_step(ctx, "RemoveStagedSnapshot", doc)

    # Then neither the object nor the parts are left
    assert sorted(out["staging_removed"]) == [snapshot, snapshot]  # the aborted upload and the object
    assert s3.list_objects_v2(Bucket="staging").get("KeyCount") == 0
    assert not s3.list_multipart_uploads(Bucket="staging").get("Uploads")
    assert probe not in out["staging_removed"]
