"""Envelope encryption and compression of backup streams (local keys only; KMS is in integration)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from etcdops.adapters.backup.crypto import (
    DEFAULT_FRAME_LENGTH,
    MAX_FRAME_LENGTH,
    KeyProvider,
    check_header,
    compress_stream,
    decompress_stream,
    decrypt_stream,
    encrypt_stream,
)
from etcdops.adapters.backup.keys import kms_key_provider, local_key_provider, open_key_provider
from etcdops.domain.backup.errors import BackupIntegrityError, BackupStoreError, DecryptionError
from etcdops.domain.errors import ConfigError, UsageError

CONTEXT = {"cluster": "prod", "backup": "20261125T203000Z-abcdef"}
MARKER = b"PLAINTEXT-MARKER-0123456789"


@pytest.fixture
def key(tmp_path: Path) -> KeyProvider:
    return local_key_provider(tmp_path / "backup.key", create=True)


@pytest.fixture
def other_key(tmp_path: Path) -> KeyProvider:
    return local_key_provider(tmp_path / "other.key", create=True)


def chunked(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def encrypt(data: bytes, key: KeyProvider, frame_length: int = 4096, context: dict[str, str] = CONTEXT) -> bytes:
    return b"".join(encrypt_stream(chunked(data, 1000), key, context, frame_length))


def decrypt(ciphertext: bytes, key: KeyProvider, context: dict[str, str] = CONTEXT) -> bytes:
    return b"".join(decrypt_stream(chunked(ciphertext, 777), key, context))


# ---- key files --------------------------------------------------------------------------------


def test_created_key_file_is_32_bytes_mode_0600_even_with_a_permissive_umask(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    old = os.umask(0)
    try:
        provider = local_key_provider(path, create=True)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(path.read_bytes()) == 32
    assert provider.kind == "local"
    assert provider.key_id.startswith("local:")
    assert path.read_bytes().hex() not in provider.key_id


def test_create_keeps_an_existing_key(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    first = local_key_provider(path, create=True)
    second = local_key_provider(path, create=True)
    assert first.key_id == second.key_id
    assert local_key_provider(path).key_id == first.key_id


def test_different_keys_have_different_ids(key: KeyProvider, other_key: KeyProvider) -> None:
    assert key.key_id != other_key.key_id


def test_missing_key_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        local_key_provider(tmp_path / "missing.key")


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_key_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "k.key"
    local_key_provider(path, create=True)
    path.chmod(mode)
    with pytest.raises(ConfigError, match="chmod 600"):
        local_key_provider(path)


def test_key_file_of_wrong_size_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    path.write_bytes(b"x" * 31)
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="32 bytes"):
        local_key_provider(path)


def test_open_key_provider_dispatches_on_the_spec(tmp_path: Path) -> None:
    provider = open_key_provider((tmp_path / "k.key").as_uri(), create=True)
    assert provider.kind == "local"
    with pytest.raises(ConfigError):
        open_key_provider("alias/backups")
    with pytest.raises(ConfigError):
        open_key_provider("file://host/k.key")


def test_kms_provider_needs_a_key_arn() -> None:
    with pytest.raises(ConfigError, match="key ARN"):
        kms_key_provider("arn:aws:kms:us-east-1:123456789012:alias/backups")


# ---- encryption ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 4097, 3 * 4096, 100_003])
def test_round_trip(key: KeyProvider, size: int) -> None:
    data = os.urandom(size)
    assert decrypt(encrypt(data, key), key) == data


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.binary(max_size=20_000),
    chunk=st.integers(min_value=1, max_value=5000),
    frame=st.sampled_from([128, 1152, 4096, 65536]),
)
def test_round_trip_any_chunking(key: KeyProvider, data: bytes, chunk: int, frame: int) -> None:
    ciphertext = b"".join(encrypt_stream(chunked(data, chunk), key, CONTEXT, frame))
    assert b"".join(decrypt_stream(chunked(ciphertext, chunk), key, CONTEXT)) == data


def test_ciphertext_hides_the_plaintext(key: KeyProvider) -> None:
    data = MARKER * 1000
    ciphertext = encrypt(data, key)
    assert MARKER not in ciphertext
    assert MARKER[:12] not in ciphertext


def test_default_frame_length_is_used_and_bounded(key: KeyProvider) -> None:
    assert 4096 <= DEFAULT_FRAME_LENGTH <= MAX_FRAME_LENGTH
    data = os.urandom(DEFAULT_FRAME_LENGTH + 10)
    ciphertext = b"".join(encrypt_stream([data], key, CONTEXT))
    assert decrypt(ciphertext, key) == data


def test_encryption_streams(key: KeyProvider) -> None:
    """Ciphertext comes out before the whole input was consumed (constant memory)."""
    consumed = 0

    def source() -> Iterator[bytes]:
        nonlocal consumed
        for _ in range(64):
            consumed += 65536
            yield b"\0" * 65536

    stream = encrypt_stream(source(), key, CONTEXT, 65536)
    next(stream)
    assert consumed < 64 * 65536
    assert len(b"".join(stream)) > 0


def test_wrong_key_is_a_decryption_error(key: KeyProvider, other_key: KeyProvider) -> None:
    ciphertext = encrypt(b"data" * 100, key)
    with pytest.raises(DecryptionError, match=other_key.key_id):
        decrypt(ciphertext, other_key)


@pytest.mark.parametrize(
    "expected",
    [{"cluster": "staging"}, {"cluster": "prod", "extra": "x"}, {"backup": "20261125T203000Z-000000"}],
)
def test_wrong_expected_context_is_a_decryption_error(key: KeyProvider, expected: dict[str, str]) -> None:
    ciphertext = encrypt(b"data" * 100, key)
    stream = decrypt_stream([ciphertext], key, expected)
    with pytest.raises(DecryptionError, match="encryption context"):
        next(stream)  # refused before any plaintext


def test_the_header_check_opens_the_data_key_and_reads_only_the_beginning(
    key: KeyProvider, other_key: KeyProvider
) -> None:
    """What a runbook's preflight asks of a backup: the key opens it, the context fits; nothing else is read."""
    ciphertext = encrypt(os.urandom(200_000), key)
    read: list[int] = []

    def source() -> Iterator[bytes]:
        for chunk in chunked(ciphertext, 4096):
            read.append(len(chunk))
            yield chunk

    check_header(source(), key, CONTEXT)
    assert sum(read) < len(ciphertext) // 10
    with pytest.raises(DecryptionError, match=other_key.key_id):
        check_header(source(), other_key, CONTEXT)
    with pytest.raises(DecryptionError, match="encryption context"):
        check_header(source(), key, {"cluster": "staging"})
    with pytest.raises(DecryptionError):
        check_header([b"not an encrypted message"], key, CONTEXT)


def test_subset_of_the_context_is_enough(key: KeyProvider) -> None:
    ciphertext = encrypt(b"data", key)
    assert decrypt(ciphertext, key, {"cluster": "prod"}) == b"data"


@pytest.mark.parametrize("position", [0, 5, 60, 200, -200, -100, -1])
def test_any_flipped_byte_is_a_decryption_error(key: KeyProvider, position: int) -> None:
    ciphertext = bytearray(encrypt(os.urandom(20_000), key))
    ciphertext[position] ^= 0x01
    with pytest.raises(DecryptionError):
        decrypt(bytes(ciphertext), key)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(position=st.integers(min_value=0), bit=st.integers(min_value=0, max_value=7))
def test_every_single_bit_flip_is_detected(key: KeyProvider, position: int, bit: int) -> None:
    ciphertext = bytearray(encrypt(b"0123456789abcdef" * 700, key, frame_length=1024))
    ciphertext[position % len(ciphertext)] ^= 1 << bit
    with pytest.raises(DecryptionError):
        decrypt(bytes(ciphertext), key)


@pytest.mark.parametrize("cut", [1, 50, 103, 1000, 5000])
def test_truncation_is_a_decryption_error(key: KeyProvider, cut: int) -> None:
    ciphertext = encrypt(os.urandom(20_000), key)
    with pytest.raises(DecryptionError):
        decrypt(ciphertext[:-cut], key)


def test_trailing_bytes_are_a_decryption_error(key: KeyProvider) -> None:
    ciphertext = encrypt(b"data" * 100, key)
    with pytest.raises(DecryptionError, match="after the end"):
        decrypt(ciphertext + b"\0", key)


def test_empty_or_garbage_input_is_a_decryption_error(key: KeyProvider) -> None:
    with pytest.raises(DecryptionError):
        decrypt(b"", key)
    with pytest.raises(DecryptionError):
        decrypt(os.urandom(5000), key)


def test_tampering_late_in_the_stream_fails_before_the_stream_ends(key: KeyProvider) -> None:
    """Earlier (authentic) frames may already have been yielded: the caller must wait for the end."""
    ciphertext = bytearray(encrypt(os.urandom(64 * 1024), key, frame_length=1024))
    ciphertext[-300] ^= 0x80
    received = []
    with pytest.raises(DecryptionError):
        for piece in decrypt_stream([bytes(ciphertext)], key, CONTEXT):
            received.append(piece)
    assert sum(len(piece) for piece in received) < 64 * 1024


class Boom(BackupStoreError):
    pass


def failing_source(data: bytes) -> Iterable[bytes]:
    yield data
    raise Boom("the store broke")


def test_errors_of_the_source_propagate_unchanged(key: KeyProvider) -> None:
    with pytest.raises(Boom):
        b"".join(encrypt_stream(failing_source(b"x" * 10_000), key, CONTEXT, 4096))
    ciphertext = encrypt(os.urandom(10_000), key)
    with pytest.raises(Boom):
        b"".join(decrypt_stream(failing_source(ciphertext[:5000]), key, CONTEXT))


def test_bad_arguments_are_usage_errors(key: KeyProvider) -> None:
    with pytest.raises(UsageError, match="empty"):
        encrypt_stream([b"x"], key, {})
    with pytest.raises(UsageError, match="empty"):
        decrypt_stream([b"x"], key, {})
    with pytest.raises(UsageError, match="reserved"):
        encrypt_stream([b"x"], key, {"aws-crypto-public-key": "x"})
    with pytest.raises(UsageError, match="frame_length"):
        encrypt_stream([b"x"], key, CONTEXT, 0)
    with pytest.raises(UsageError, match="frame_length"):
        encrypt_stream([b"x"], key, CONTEXT, MAX_FRAME_LENGTH + 16)
    with pytest.raises(UsageError, match="frame_length"):
        encrypt_stream([b"x"], key, CONTEXT, 1000)


# ---- compression ------------------------------------------------------------------------------


def test_compression_round_trip_and_pipeline(key: KeyProvider) -> None:
    data = b'{"kind":"Pod","metadata":{"name":"web-1"}}' * 5000 + os.urandom(5000)
    compressed = b"".join(compress_stream(chunked(data, 4096)))
    assert len(compressed) < len(data) / 5
    assert b"".join(decompress_stream(chunked(compressed, 333))) == data
    stored = b"".join(encrypt_stream(compress_stream(chunked(data, 4096)), key, CONTEXT, 4096))
    restored = b"".join(decompress_stream(decrypt_stream(chunked(stored, 1000), key, CONTEXT)))
    assert restored == data


def test_empty_stream_compresses(key: KeyProvider) -> None:
    assert b"".join(decompress_stream(compress_stream([]))) == b""


def test_truncated_or_extended_compressed_stream_is_an_integrity_error() -> None:
    compressed = b"".join(compress_stream([os.urandom(100_000)]))
    with pytest.raises(BackupIntegrityError, match="truncated"):
        b"".join(decompress_stream([compressed[:-5]]))
    with pytest.raises(BackupIntegrityError, match="after the end"):
        b"".join(decompress_stream([compressed, b"x"]))
    corrupt = bytearray(compressed)
    corrupt[len(corrupt) // 2] ^= 0xFF
    with pytest.raises(BackupIntegrityError):
        b"".join(decompress_stream([bytes(corrupt)]))
