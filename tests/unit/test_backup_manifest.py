"""Backup manifests and the naming of backups in a store."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from etcdops.domain.backup.errors import ManifestInvalidError
from etcdops.domain.backup.manifest import (
    MANIFEST_FORMAT_VERSION,
    Manifest,
    backup_id_from_manifest_key,
    backup_id_time,
    check_backup_id,
    manifest_key,
    new_backup_id,
    object_key,
)
from etcdops.domain.errors import UsageError

CREATED = datetime(2026, 11, 25, 20, 30, tzinfo=UTC)


def fields(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "20261125T203000Z-a1b2c3",
        "uri": "s3://bucket/etcd/prod/20261125T203000Z-a1b2c3.snapshot.enc",
        "cluster_id": "cdf818194e3a8c32",
        "cluster_name": "prod",
        "member_id": "8e9e05c52164694d",
        "etcd_version": "3.5.17",
        "revision": 123456,
        "snapshot_hash": 3735928559,
        "total_keys": 4242,
        "sha256": "ab" * 32,
        "size_plain": 10_000_000,
        "size_stored": 10_016_874,
        "created_at": CREATED,
        "key_id": "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555",
        "compression": "none",
        "frame_length": 1048576,
    }
    base.update(overrides)
    return base


def test_json_round_trip() -> None:
    manifest = Manifest(**fields())
    assert manifest.format_version == MANIFEST_FORMAT_VERSION
    assert manifest.verified is False and manifest.verified_at is None
    assert Manifest.from_json(manifest.to_json()) == manifest
    assert Manifest.from_json(manifest.to_json().decode()) == manifest
    document = json.loads(manifest.to_json())
    assert document["created_at"] == "2026-11-25T20:30:00Z"
    assert document["snapshot_hash"] == 3735928559


def test_times_are_normalised_to_utc_and_must_be_aware() -> None:
    plus_two = timezone(timedelta(hours=2))
    manifest = Manifest(**fields(created_at=datetime(2026, 11, 25, 22, 30, tzinfo=plus_two)))
    assert manifest.created_at == CREATED
    assert manifest.created_at.utcoffset() == timedelta(0)
    with pytest.raises(ValidationError, match="created_at"):
        Manifest(**fields(created_at=datetime(2026, 11, 25, 20, 30)))


def test_mark_verified() -> None:
    manifest = Manifest(**fields())
    at = CREATED + timedelta(minutes=5)
    verified = manifest.mark_verified(at)
    assert verified.verified and verified.verified_at == at
    assert not manifest.verified
    assert Manifest.from_json(verified.to_json()) == verified


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"id": "2026-11-25"}, "id"),
        ({"id": "20261325T203000Z-a1b2c3"}, "id"),
        ({"cluster_id": "not hex"}, "cluster_id"),
        ({"member_id": "1" * 17}, "member_id"),
        ({"revision": -1}, "revision"),
        ({"snapshot_hash": -5}, "snapshot_hash"),
        ({"sha256": "abc"}, "sha256"),
        ({"size_plain": -1}, "size_plain"),
        ({"compression": "gzip"}, "compression"),
        ({"frame_length": 0}, "frame_length"),
        ({"format_version": 2}, "format_version"),
        ({"created_at": "yesterday"}, "created_at"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_invalid_manifest_names_the_field(overrides: dict[str, Any], field: str) -> None:
    document = json.loads(Manifest(**fields()).to_json())
    document.update(overrides)
    with pytest.raises(ManifestInvalidError) as info:
        Manifest.from_json(json.dumps(document), source="s3://b/x.manifest.json")
    assert info.value.field == field
    assert field in str(info.value)
    assert "s3://b/x.manifest.json" in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_field_is_named() -> None:
    document = json.loads(Manifest(**fields()).to_json())
    del document["sha256"]
    with pytest.raises(ManifestInvalidError) as info:
        Manifest.from_json(json.dumps(document))
    assert info.value.field == "sha256"


def test_verified_and_verified_at_go_together() -> None:
    document = json.loads(Manifest(**fields()).to_json())
    document["verified"] = True
    with pytest.raises(ManifestInvalidError, match="verified_at"):
        Manifest.from_json(json.dumps(document))


def test_not_json_is_an_invalid_manifest() -> None:
    with pytest.raises(ManifestInvalidError) as info:
        Manifest.from_json(b"\x00not json")
    assert info.value.field is None


def test_hex_ids_are_lowercased() -> None:
    manifest = Manifest(**fields(cluster_id="CDF818194E3A8C32", sha256="AB" * 32))
    assert manifest.cluster_id == "cdf818194e3a8c32"
    assert manifest.sha256 == "ab" * 32


# ---- ids and keys -------------------------------------------------------------------------------


def test_new_ids_have_the_documented_form_and_sort_by_time() -> None:
    times = [CREATED + timedelta(seconds=step * 37) for step in range(50)]
    ids = [new_backup_id(moment) for moment in times]
    assert sorted(ids) == ids
    assert ids[0].startswith("20261125T203000Z-")
    assert all(check_backup_id(backup_id) == backup_id for backup_id in ids)
    assert backup_id_time(ids[0]) == CREATED
    other_zone = new_backup_id(datetime(2026, 11, 25, 21, 30, tzinfo=timezone(timedelta(hours=1))))
    assert other_zone.startswith("20261125T203000Z-")


def test_new_id_without_time_is_now_and_naive_time_is_refused() -> None:
    backup_id = new_backup_id()
    assert abs(backup_id_time(backup_id) - datetime.now(UTC)) < timedelta(minutes=1)
    with pytest.raises(UsageError):
        new_backup_id(datetime(2026, 1, 1))


def test_keys() -> None:
    backup_id = "20261125T203000Z-a1b2c3"
    assert object_key(backup_id) == "20261125T203000Z-a1b2c3.snapshot.enc"
    assert manifest_key(backup_id) == "20261125T203000Z-a1b2c3.manifest.json"
    manifest = Manifest(**fields())
    assert manifest.object_key == object_key(backup_id)
    assert manifest.manifest_key == manifest_key(backup_id)
    assert backup_id_from_manifest_key("prod/" + manifest_key(backup_id)) == backup_id
    assert backup_id_from_manifest_key(object_key(backup_id)) is None
    assert backup_id_from_manifest_key("junk.manifest.json") is None


@pytest.mark.parametrize("bad", ["", "../x", "20261125T203000Z", "20261125T203000Z-ABCDEF", "20261125T250000Z-a1b2c3"])
def test_bad_ids_are_usage_errors(bad: str) -> None:
    with pytest.raises(UsageError):
        object_key(bad)
    with pytest.raises(UsageError):
        manifest_key(bad)


def test_a_volume_backup_says_how_it_was_taken_and_only_a_volume_backup_does() -> None:
    volume = {"provider": "local", "revision_observed": 7, "paused_seconds": 0.01}
    manifest = Manifest(**fields(kind="volume", volume=volume))
    assert Manifest.from_json(manifest.to_json()) == manifest
    assert Manifest(**fields()).kind == "full"  # manifests written before volume backups are full ones
    for wrong in (fields(kind="volume"), fields(volume=volume)):
        document = json.loads(Manifest(**fields()).to_json()) | {k: wrong.get(k) for k in ("kind", "volume")}
        document["kind"] = document["kind"] or "full"
        with pytest.raises(ManifestInvalidError, match="volume must be set exactly when kind is volume"):
            Manifest.from_json(json.dumps(document))
