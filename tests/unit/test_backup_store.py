"""Backup stores (a directory, and S3 emulated by moto) and encryption end to end, including KMS."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.session
import pytest
from moto import mock_aws

from etcdops.adapters.backup import store as store_module
from etcdops.adapters.backup.crypto import KeyProvider, decrypt_stream, encrypt_stream
from etcdops.adapters.backup.keys import kms_key_provider, local_key_provider, open_key_provider
from etcdops.adapters.backup.store import MIN_PART_SIZE, BackupStore, FileStore, S3Store, open_store
from etcdops.domain.backup.errors import (
    BackupExistsError,
    BackupNotFoundError,
    DecryptionError,
    StoreFullError,
    StorePermissionError,
)
from etcdops.domain.backup.manifest import manifest_key, object_key
from etcdops.domain.errors import ConfigError, UsageError

MiB = 1024 * 1024
REGION = "us-east-1"
BUCKET = "etcd-backups"
CONTEXT = {"cluster": "prod", "backup": "20261125T203000Z-a1b2c3"}
MARKER = b"PLAINTEXT-MARKER-0123456789"


def chunks(total: int, size: int = 256 * 1024, fill: bytes = b"") -> Iterator[bytes]:
    block = (fill * (size // max(len(fill), 1) + 1))[:size] if fill else os.urandom(size)
    sent = 0
    while sent < total:
        piece = block[: min(size, total - sent)]
        sent += len(piece)
        yield piece


class Broken(Exception):
    pass


def failing_after(total: int, size: int = 256 * 1024) -> Iterator[bytes]:
    yield from chunks(total, size)
    raise Broken("the snapshot stream broke off")


# ---- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        yield


@pytest.fixture
def s3(aws: None) -> Any:
    client = boto3.client("s3", region_name=REGION)
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture
def s3_store(s3: Any) -> S3Store:
    store = open_store(f"s3://{BUCKET}/etcd/prod", s3_client=s3, part_size=MIN_PART_SIZE)
    assert isinstance(store, S3Store)
    return store


@pytest.fixture
def file_store(tmp_path: Path) -> FileStore:
    store = open_store((tmp_path / "backups").as_uri())
    assert isinstance(store, FileStore)
    return store


@pytest.fixture(params=["file", "s3"])
def any_store(request: pytest.FixtureRequest) -> BackupStore:
    fixture = "file_store" if request.param == "file" else "s3_store"
    store: BackupStore = request.getfixturevalue(fixture)
    return store


@pytest.fixture
def local_key(tmp_path: Path) -> KeyProvider:
    return local_key_provider(tmp_path / "backup.key", create=True)


def pending_uploads(s3: Any) -> list[Any]:
    uploads: list[Any] = s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
    return uploads


# ---- the factory --------------------------------------------------------------------------------


def test_open_store_parses_uris(tmp_path: Path, s3: Any) -> None:
    store = open_store(f"s3://{BUCKET}/a/b/", s3_client=s3)
    assert isinstance(store, S3Store)
    assert (store.bucket, store.prefix) == (BUCKET, "a/b")
    assert store.uri_for("x.manifest.json") == f"s3://{BUCKET}/a/b/x.manifest.json"
    assert open_store(f"s3://{BUCKET}", s3_client=s3).uri_for("k") == f"s3://{BUCKET}/k"
    local = open_store("file://" + str(tmp_path / "with space"))
    assert isinstance(local, FileStore)
    assert local.root == tmp_path / "with space"
    assert open_store(local.uri_for("k")).uri == local.uri_for("k")


@pytest.mark.parametrize(
    "uri",
    ["", "backups", "/abs/path", "file://relative/path", "gs://bucket/x", "s3://", "s3://Bad_Bucket/x", "s3://b/x?y=1"],
)
def test_open_store_refuses_bad_uris(uri: str) -> None:
    with pytest.raises(ConfigError) as info:
        open_store(uri, s3_client=object())
    assert repr(uri) in str(info.value)


@pytest.mark.parametrize("key", ["", "/abs", "a//b", "../x", "a/../b", ".hidden", "a/.tmp", "a\\b", "dir/"])
def test_bad_keys_are_refused(any_store: BackupStore, key: str) -> None:
    with pytest.raises(UsageError):
        any_store.put_bytes(key, b"x")


# ---- behaviour shared by both backends ---------------------------------------------------------


def test_put_get_list_delete(any_store: BackupStore) -> None:
    assert any_store.list() == []
    assert any_store.put_bytes("b.manifest.json", b"{}") == 2
    assert any_store.put_stream("a.snapshot.enc", chunks(3 * MiB + 5)) == 3 * MiB + 5
    assert any_store.put_stream("sub/c.snapshot.enc", iter([b"", b"abc", b""])) == 3
    assert any_store.put_bytes("empty", b"") == 0
    assert any_store.exists("a.snapshot.enc")
    assert not any_store.exists("missing")
    assert any_store.get_bytes("b.manifest.json") == b"{}"
    assert any_store.get_bytes("sub/c.snapshot.enc") == b"abc"
    assert any_store.get_bytes("empty") == b""
    pieces = list(any_store.open_read("a.snapshot.enc"))
    assert sum(map(len, pieces)) == 3 * MiB + 5
    assert max(map(len, pieces)) <= MiB
    assert any_store.list() == ["a.snapshot.enc", "b.manifest.json", "empty", "sub/c.snapshot.enc"]
    assert any_store.list("b") == ["b.manifest.json"]
    assert any_store.list("sub/") == ["sub/c.snapshot.enc"]
    assert any_store.list("sub/c") == ["sub/c.snapshot.enc"]
    assert any_store.list("nothing") == []
    any_store.delete("a.snapshot.enc")
    any_store.delete("a.snapshot.enc")  # deleting a missing key is fine
    assert not any_store.exists("a.snapshot.enc")
    assert "a.snapshot.enc" not in any_store.list()


def test_missing_object_is_reported_when_opened(any_store: BackupStore) -> None:
    with pytest.raises(BackupNotFoundError, match=r"missing\.snapshot\.enc"):
        any_store.open_read("missing.snapshot.enc")


def test_never_overwrites(any_store: BackupStore) -> None:
    any_store.put_bytes("k", b"first")
    with pytest.raises(BackupExistsError, match="never overwritten"):
        any_store.put_bytes("k", b"second")
    with pytest.raises(BackupExistsError):
        any_store.put_stream("k", chunks(12 * MiB))
    assert any_store.get_bytes("k") == b"first"


def test_failed_stream_leaves_nothing(any_store: BackupStore) -> None:
    with pytest.raises(Broken):
        any_store.put_stream("k", failing_after(12 * MiB))
    assert not any_store.exists("k")
    assert any_store.list() == []
    with pytest.raises(Broken):
        any_store.put_stream("small", failing_after(10))
    assert any_store.list() == []


# ---- FileStore ----------------------------------------------------------------------------------


def test_file_store_files_are_private_and_complete(file_store: FileStore) -> None:
    file_store.put_bytes("dir/x", b"data")
    path = file_store.root / "dir" / "x"
    assert path.read_bytes() == b"data"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(os.listdir(path.parent)) == ["x"]  # no temporary file left


def test_file_store_race_with_another_writer_keeps_the_other_file(file_store: FileStore) -> None:
    """The existence check passed, then someone else created the file: os.link refuses."""

    def racing() -> Iterator[bytes]:
        yield b"ours"
        (file_store.root / "k").write_bytes(b"theirs")
        yield b" more"

    with pytest.raises(BackupExistsError, match="another writer"):
        file_store.put_stream("k", racing())
    assert (file_store.root / "k").read_bytes() == b"theirs"
    assert os.listdir(file_store.root) == ["k"]


def test_file_store_nothing_visible_until_complete(file_store: FileStore) -> None:
    seen: list[list[str]] = []

    def observed() -> Iterator[bytes]:
        for piece in chunks(2 * MiB):
            seen.append(file_store.list())
            yield piece

    file_store.put_stream("k", observed())
    assert all(listing == [] for listing in seen)
    assert file_store.list() == ["k"]


def test_file_store_disk_full(file_store: FileStore, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = os.write
    calls = 0

    def write(fd: int, data: Any) -> int:
        nonlocal calls
        calls += 1
        if calls > 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(store_module.os, "write", write)
    with pytest.raises(StoreFullError, match="no space left") as info:
        file_store.put_stream("20261125T203000Z-a1b2c3.snapshot.enc", chunks(5 * MiB))
    monkeypatch.undo()
    assert "20261125T203000Z-a1b2c3.snapshot.enc" in str(info.value)
    assert "removed" in str(info.value)
    assert not info.value.retryable
    assert os.listdir(file_store.root) == []  # temporary file removed, nothing published


def test_file_store_disk_full_on_fsync(file_store: FileStore, monkeypatch: pytest.MonkeyPatch) -> None:
    def fsync(fd: int) -> None:
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))

    monkeypatch.setattr(store_module.os, "fsync", fsync)
    with pytest.raises(StoreFullError):
        file_store.put_bytes("k", b"data")
    monkeypatch.undo()
    assert os.listdir(file_store.root) == []


def test_file_store_read_only_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # root ignores directory modes, so the refusal the kernel gives other users is simulated
    real_open = store_module.os.open

    def refuse(path: object, flags: int, mode: int = 0o777, *args: object, **kwargs: object) -> int:
        if flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, flags, mode, *args, **kwargs)  # type: ignore[arg-type]

    root = tmp_path / "ro"
    root.mkdir()
    monkeypatch.setattr(store_module.os, "open", refuse)
    with pytest.raises(StorePermissionError):
        FileStore(root).put_bytes("k", b"x")
    monkeypatch.undo()
    assert os.listdir(root) == []


def test_file_store_needs_an_absolute_root() -> None:
    with pytest.raises(ConfigError):
        FileStore(Path("relative"))


# ---- S3Store ------------------------------------------------------------------------------------


class CallLog:
    """Records the S3 operations a client makes (by botocore event)."""

    def __init__(self, client: Any) -> None:
        self.operations: list[str] = []
        self.params: list[dict[str, Any]] = []
        client.meta.events.register("provide-client-params.s3.*", self._record)

    def _record(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        self.operations.append(model.name)
        self.params.append(params)


def test_s3_small_object_is_one_conditional_put(s3: Any, s3_store: S3Store) -> None:
    log = CallLog(s3)
    s3_store.put_bytes("x.manifest.json", b"{}")
    assert log.operations == ["HeadObject", "PutObject"]
    assert log.params[1]["IfNoneMatch"] == "*"
    assert s3.get_object(Bucket=BUCKET, Key="etcd/prod/x.manifest.json")["Body"].read() == b"{}"


def test_s3_large_stream_is_multipart_with_bounded_memory(s3: Any, s3_store: S3Store) -> None:
    part = s3_store.part_size
    total = 22 * MiB + 12345
    chunk = 256 * 1024
    consumed = 0
    buffered_at_upload: list[int] = []
    uploaded = 0

    def source() -> Iterator[bytes]:
        nonlocal consumed
        for piece in chunks(total, chunk):
            consumed += len(piece)
            yield piece

    def on_part(params: dict[str, Any], **_: Any) -> None:
        nonlocal uploaded
        uploaded += len(params["Body"])
        assert len(params["Body"]) <= part
        buffered_at_upload.append(consumed - uploaded)  # read from the source, not yet uploaded

    s3.meta.events.register("provide-client-params.s3.UploadPart", on_part)
    log = CallLog(s3)
    assert s3_store.put_stream("big.snapshot.enc", source()) == total

    assert log.operations[:2] == ["HeadObject", "CreateMultipartUpload"]
    assert log.operations[-1] == "CompleteMultipartUpload"
    assert log.operations.count("UploadPart") == 5
    assert log.params[-1]["IfNoneMatch"] == "*"
    # never more than one part (plus one incoming chunk) waiting in memory besides the part in flight
    assert max(buffered_at_upload) <= chunk
    head = s3.head_object(Bucket=BUCKET, Key="etcd/prod/big.snapshot.enc")
    assert head["ContentLength"] == total
    assert head["ETag"].strip('"').endswith("-5")
    assert pending_uploads(s3) == []


def test_s3_failed_stream_aborts_the_upload(s3: Any, s3_store: S3Store) -> None:
    log = CallLog(s3)
    with pytest.raises(Broken):
        s3_store.put_stream("big.snapshot.enc", failing_after(12 * MiB))
    assert "CreateMultipartUpload" in log.operations
    assert log.operations[-1] == "AbortMultipartUpload"
    assert pending_uploads(s3) == []
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET)


def test_s3_failing_part_upload_aborts(s3: Any, s3_store: S3Store) -> None:
    def deny(params: dict[str, Any], **_: Any) -> None:
        if params["PartNumber"] == 2:
            raise botocore.exceptions.EndpointConnectionError(endpoint_url="https://s3.example")

    s3.meta.events.register("provide-client-params.s3.UploadPart", deny)
    with pytest.raises(store_module.BackupStoreError) as info:
        s3_store.put_stream("big.snapshot.enc", chunks(12 * MiB))
    assert info.value.retryable
    assert pending_uploads(s3) == []
    assert not s3_store.exists("big.snapshot.enc")


@pytest.mark.parametrize("size", [100, 12 * MiB])
def test_s3_race_with_another_writer_is_caught_by_if_none_match(
    s3: Any, s3_store: S3Store, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    """The HeadObject check passed, then someone else wrote the key: the conditional write fails."""

    def racing() -> Iterator[bytes]:
        yield from chunks(size // 2)
        s3.put_object(Bucket=BUCKET, Key="etcd/prod/k", Body=b"theirs")
        yield from chunks(size - size // 2)

    with pytest.raises(BackupExistsError, match="another writer"):
        s3_store.put_stream("k", racing())
    assert s3_store.get_bytes("k") == b"theirs"
    assert pending_uploads(s3) == []


def test_s3_server_side_encryption(s3: Any, aws: None) -> None:
    kms = boto3.client("kms", region_name=REGION)
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    store = open_store(f"s3://{BUCKET}/p", s3_client=s3, sse_kms_key_id=key_id, part_size=MIN_PART_SIZE)
    store.put_bytes("small", b"x")
    store.put_stream("large", chunks(6 * MiB))
    for key in ("p/small", "p/large"):
        head = s3.head_object(Bucket=BUCKET, Key=key)
        assert head["ServerSideEncryption"] == "aws:kms"
        assert key_id in head["SSEKMSKeyId"]


def test_s3_missing_bucket_is_a_permission_error(s3: Any) -> None:
    store = open_store("s3://no-such-bucket/x", s3_client=s3)
    with pytest.raises(StorePermissionError, match="NoSuchBucket"):
        store.put_bytes("k", b"x")


def test_s3_list_is_paginated_and_relative(s3: Any, s3_store: S3Store) -> None:
    s3.put_object(Bucket=BUCKET, Key="etcd/prodother/x", Body=b"")  # a sibling prefix is not ours
    for index in range(1005):
        s3.put_object(Bucket=BUCKET, Key=f"etcd/prod/{index:05d}", Body=b"")
    keys = s3_store.list()
    assert len(keys) == 1005
    assert keys[0] == "00000"


# ---- encryption end to end ------------------------------------------------------------------------


def encrypted_backup(store: BackupStore, key: KeyProvider, plaintext: Iterator[bytes], backup_id: str) -> int:
    return store.put_stream(object_key(backup_id), encrypt_stream(plaintext, key, CONTEXT, 64 * 1024))


def restore(store: BackupStore, key: KeyProvider, backup_id: str, context: dict[str, str] = CONTEXT) -> bytes:
    return b"".join(decrypt_stream(store.open_read(object_key(backup_id)), key, context))


def test_encrypted_round_trip_through_the_store(any_store: BackupStore, local_key: KeyProvider) -> None:
    backup_id = "20261125T203000Z-a1b2c3"
    plaintext = MARKER * (12 * MiB // len(MARKER))
    size = encrypted_backup(
        any_store, local_key, iter([plaintext[i : i + MiB] for i in range(0, len(plaintext), MiB)]), backup_id
    )
    stored = any_store.get_bytes(object_key(backup_id))
    assert len(stored) == size > len(plaintext)
    assert MARKER not in stored
    assert restore(any_store, local_key, backup_id) == plaintext
    any_store.put_bytes(manifest_key(backup_id), b"{}")
    assert any_store.list() == [manifest_key(backup_id), object_key(backup_id)]


def test_tampered_object_is_a_decryption_error(any_store: BackupStore, local_key: KeyProvider) -> None:
    encrypted_backup(any_store, local_key, chunks(2 * MiB), "20261125T203000Z-a1b2c3")
    stored = bytearray(any_store.get_bytes(object_key("20261125T203000Z-a1b2c3")))
    stored[len(stored) // 2] ^= 0x01
    any_store.put_bytes(object_key("20261125T203001Z-a1b2c3"), bytes(stored))
    with pytest.raises(DecryptionError):
        restore(any_store, local_key, "20261125T203001Z-a1b2c3")


def test_wrong_key_and_wrong_context(any_store: BackupStore, local_key: KeyProvider, tmp_path: Path) -> None:
    encrypted_backup(any_store, local_key, chunks(MiB), "20261125T203000Z-a1b2c3")
    other = local_key_provider(tmp_path / "other.key", create=True)
    with pytest.raises(DecryptionError, match="data key"):
        restore(any_store, other, "20261125T203000Z-a1b2c3")
    with pytest.raises(DecryptionError, match="encryption context"):
        restore(any_store, local_key, "20261125T203000Z-a1b2c3", {"cluster": "staging"})


def test_store_errors_during_decryption_are_not_disguised(any_store: BackupStore, local_key: KeyProvider) -> None:
    with pytest.raises(BackupNotFoundError):
        restore(any_store, local_key, "20261125T203000Z-000000")


# ---- KMS ----------------------------------------------------------------------------------------


def test_kms_round_trip_through_s3(s3: Any, s3_store: S3Store) -> None:
    kms = boto3.client("kms", region_name=REGION)
    arn = kms.create_key(Description="etcd backups")["KeyMetadata"]["Arn"]
    key = kms_key_provider(arn, kms_client=kms)
    assert (key.kind, key.key_id) == ("kms", arn)
    plaintext = MARKER * 100_000
    encrypted_backup(s3_store, key, iter([plaintext]), "20261125T203000Z-a1b2c3")
    assert MARKER not in s3_store.get_bytes(object_key("20261125T203000Z-a1b2c3"))
    assert restore(s3_store, key, "20261125T203000Z-a1b2c3") == plaintext
    # the same key through a botocore session and through the one factory
    via_session = kms_key_provider(arn, botocore_session=botocore.session.get_session())
    assert restore(s3_store, via_session, "20261125T203000Z-a1b2c3") == plaintext
    assert restore(s3_store, open_key_provider(arn, kms_client=kms), "20261125T203000Z-a1b2c3") == plaintext

    other_arn = kms.create_key()["KeyMetadata"]["Arn"]
    with pytest.raises(DecryptionError, match="data key"):
        restore(s3_store, kms_key_provider(other_arn, kms_client=kms), "20261125T203000Z-a1b2c3")
    with pytest.raises(DecryptionError, match="encryption context"):
        restore(s3_store, key, "20261125T203000Z-a1b2c3", {"backup": "20261125T203000Z-000000"})


def test_a_local_key_cannot_open_a_kms_backup(aws: None, local_key: KeyProvider) -> None:
    # (moto's Decrypt ignores a disabled key, so "key disabled after the backup" is not testable here)
    kms = boto3.client("kms", region_name=REGION)
    key = kms_key_provider(kms.create_key()["KeyMetadata"]["Arn"], kms_client=kms)
    ciphertext = b"".join(encrypt_stream([b"secret" * 1000], key, CONTEXT))
    with pytest.raises(DecryptionError, match="data key"):
        b"".join(decrypt_stream([ciphertext], local_key, CONTEXT))


def test_kms_client_of_another_region_is_a_config_error(aws: None) -> None:
    kms = boto3.client("kms", region_name=REGION)
    arn = kms.create_key()["KeyMetadata"]["Arn"].replace(REGION, "eu-west-1")
    with pytest.raises(ConfigError, match="region"):
        kms_key_provider(arn, kms_client=kms)
