"""Client-side envelope encryption (and optional zstd compression) of backup streams.

Encryption uses the AWS Encryption SDK message format: a fresh data key per backup, wrapped by the
configured key (a local AES-256 key file or a KMS key), AES-256-GCM frames of ``frame_length``
bytes and key commitment (suite AES_256_GCM_HKDF_SHA512_COMMIT_KEY). We leave out the SDK's default
ECDSA signature: it protects readers from writers who hold the same data key, but here whoever can
read a backup can also write one (both need the same wrapping key), and signing cost ~40 % of the
encryption time (a SHA-384 over every byte). Decryption still accepts signed messages. Both
directions stream: memory use is a few frames, whatever the snapshot size.

**Decrypted output is untrusted until the stream ends without an error.** Every frame is
authenticated before its plaintext is yielded, so a yielded chunk was written by someone who held
the data key; but truncation, reordering of the end, a bad signature or trailing data are only
detected at the end. A caller that writes plaintext somewhere (a restore) must write it to a
temporary place and only use it after :func:`decrypt_stream` finished without raising.

The keys that wrap the data keys (:class:`KeyProvider`, a local key file or a KMS key) are made in
:mod:`etcdops.adapters.backup.keys`.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NoReturn

import aws_encryption_sdk
from aws_encryption_sdk.exceptions import AWSEncryptionSDKClientError, DecryptKeyError, SerializationError
from aws_encryption_sdk.identifiers import Algorithm, CommitmentPolicy
from cryptography.exceptions import InvalidSignature, InvalidTag

from etcdops.adapters.awserrors import AWS_SDK_ERRORS, aws_error
from etcdops.adapters.backup.keys import KeyProvider
from etcdops.domain.backup.errors import (
    BackupIntegrityError,
    DecryptionError,
    EncryptionError,
    KeyUnavailableError,
)
from etcdops.domain.errors import ConfigError, UsageError

KiB = 1024
MiB = 1024 * KiB

#: Plaintext bytes per authenticated frame, measured with bench/bench_encryption.py (512 MiB, local
#: key, best of several fresh processes, 2 vCPU VM): encrypt / decrypt MB/s and peak RSS were about
#: 4 KiB 125/137 (54 MiB), 64 KiB 378/521 (54 MiB), 256 KiB 419-433/607-636 (53 MiB),
#: 1 MiB 383-454/453 (58 MiB), 4 MiB 363-449/439 (75 MiB). 256 KiB is the fastest in both directions
#: with the least memory; its size overhead is 28 bytes per frame (~0.01%).
#: Committing AES-256-GCM without a signature (see the module docs).
ALGORITHM = Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY
DEFAULT_FRAME_LENGTH = 256 * KiB
#: Largest frame we write or accept when decrypting; bounds memory (a frame is held whole).
MAX_FRAME_LENGTH = 16 * MiB
#: Frame lengths must be multiples of this (an aws-encryption-sdk rule).
FRAME_LENGTH_MULTIPLE = 128
#: Messages with more wrapped data keys than this are refused (they would cost one key call each).
MAX_ENCRYPTED_DATA_KEYS = 4
#: zstd level used by :func:`compress_stream`. On a 168 MiB etcd 3.5 snapshot of 60k JSON-valued
#: Kubernetes-like objects level 1 gave ratio 4.4 at ~600 MB per CPU-second; level 3 ratio 4.3 at
#: ~200; level 9 ratio 4.3 at ~56 (bench/bench_encryption.py zstd --snapshot ...).
DEFAULT_ZSTD_LEVEL = 1

_RESERVED_CONTEXT_PREFIX = "aws-crypto-"


# ---- encryption --------------------------------------------------------------------------------


class _ChunkReader:
    """A minimal read-only file over an iterable of byte chunks (what the SDK reads from).

    ``read(n)`` returns exactly ``n`` bytes unless the chunks are exhausted: the SDK takes a short
    read for the end of the plaintext. An exception raised by the chunks is remembered in
    ``error`` so that it can be re-raised unchanged instead of being mistaken for a crypto error.
    """

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._pending = b""
        self._offset = 0
        self.error: BaseException | None = None
        self.closed = False

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        raise io.UnsupportedOperation("stream is not seekable")

    def seek(self, offset: int, whence: int = 0) -> int:
        raise io.UnsupportedOperation("stream is not seekable")

    def close(self) -> None:
        self.closed = True

    def _refill(self) -> bool:
        while True:
            try:
                chunk = next(self._chunks)
            except StopIteration:
                return False
            except BaseException as exc:
                self.error = exc
                raise
            if chunk:
                self._pending = bytes(chunk)
                self._offset = 0
                return True

    def read(self, size: int | None = -1) -> bytes:
        pieces: list[bytes] = []
        need = -1 if size is None or size < 0 else size
        while need != 0:
            if self._offset >= len(self._pending) and not self._refill():
                break
            available = len(self._pending) - self._offset
            take = available if need < 0 else min(need, available)
            if self._offset == 0 and take == len(self._pending):
                pieces.append(self._pending)
            else:
                pieces.append(self._pending[self._offset : self._offset + take])
            self._offset += take
            if need > 0:
                need -= take
        return b"".join(pieces)


def _sdk_client() -> Any:
    return aws_encryption_sdk.EncryptionSDKClient(
        commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT,
        max_encrypted_data_keys=MAX_ENCRYPTED_DATA_KEYS,
    )


def _check_context(context: Mapping[str, str], what: str) -> dict[str, str]:
    if not context:
        raise UsageError(f"{what} must not be empty (bind backups to at least their cluster and id)")
    checked: dict[str, str] = {}
    for key, value in context.items():
        if not isinstance(key, str) or not isinstance(value, str) or not key:
            raise UsageError(f"{what}: keys and values must be strings and keys non-empty")
        if key.startswith(_RESERVED_CONTEXT_PREFIX):
            raise UsageError(f"{what}: key {key!r} uses the reserved prefix {_RESERVED_CONTEXT_PREFIX!r}")
        checked[key] = value
    return checked


def _check_frame_length(frame_length: int) -> None:
    # The SDK requires a multiple of the cipher's block size *in bits* (128), counted in bytes.
    if not FRAME_LENGTH_MULTIPLE <= frame_length <= MAX_FRAME_LENGTH or frame_length % FRAME_LENGTH_MULTIPLE:
        raise UsageError(
            f"frame_length {frame_length} must be a multiple of {FRAME_LENGTH_MULTIPLE} "
            f"between {FRAME_LENGTH_MULTIPLE} and {MAX_FRAME_LENGTH} bytes"
        )


def _read_size(frame_length: int) -> int:
    # The SDK encrypts whole frames per read and concatenates them with bytes +=, so reading many
    # small frames at once is quadratic; reading one big frame at a time costs call overhead.
    return frame_length * max(1, (256 * KiB) // frame_length)


def encrypt_stream(
    chunks: Iterable[bytes],
    keyring: KeyProvider,
    context: Mapping[str, str],
    frame_length: int = DEFAULT_FRAME_LENGTH,
) -> Iterator[bytes]:
    """Encrypt the concatenation of ``chunks``; yield the ciphertext message in pieces.

    ``context`` is the encryption context: non-secret key/value pairs bound to the ciphertext and
    stored in its header (put the cluster name and backup id there; never secrets). Arguments are
    checked now; key errors are raised on the first ``next`` as :class:`EncryptionError` or
    :class:`KeyUnavailableError` (retryable). An exception raised by ``chunks`` propagates
    unchanged.
    """
    checked = _check_context(context, "encryption context")
    _check_frame_length(frame_length)
    return _encrypt(chunks, keyring, checked, frame_length)


def _encrypt(
    chunks: Iterable[bytes], keyring: KeyProvider, context: dict[str, str], frame_length: int
) -> Iterator[bytes]:
    source = _ChunkReader(chunks)
    read_size = _read_size(frame_length)
    try:
        encryptor = _sdk_client().stream(
            mode="e",
            source=source,
            key_provider=keyring.master_key_provider,
            encryption_context=context,
            frame_length=frame_length,
            algorithm=ALGORITHM,
        )
        while True:
            piece = encryptor.read(read_size)
            if not piece:
                return
            yield piece
    except Exception as exc:
        if source.error is not None:
            raise source.error from None
        if isinstance(exc, (AWSEncryptionSDKClientError, *AWS_SDK_ERRORS)):
            raise _key_error(exc, keyring) from exc
        raise


def _key_error(exc: BaseException, keyring: KeyProvider) -> EncryptionError:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, AWS_SDK_ERRORS):
            what = f"key {keyring.key_id}: producing a data key"
            return aws_error(what, cause, refused=EncryptionError, unavailable=KeyUnavailableError)
        cause = cause.__cause__ or cause.__context__
    return EncryptionError(f"cannot encrypt with key {keyring.key_id}: {_one_line(exc)}")


# ---- decryption --------------------------------------------------------------------------------


def decrypt_stream(
    chunks: Iterable[bytes],
    keyring: KeyProvider,
    expected_context: Mapping[str, str],
) -> Iterator[bytes]:
    """Decrypt a message produced by :func:`encrypt_stream`; yield the plaintext in pieces.

    Before the first plaintext byte is yielded the header is authenticated and its encryption
    context must contain every pair of ``expected_context``. Any failure (wrong key, missing
    permission, modified or truncated ciphertext, bad signature, trailing bytes, context mismatch)
    raises :class:`DecryptionError` with a one-line message. Plaintext already yielded must be
    discarded then: treat the output as untrusted until the iterator is exhausted without error.
    An exception raised by ``chunks`` (e.g. a store read error) propagates unchanged.
    """
    expected = _check_context(expected_context, "expected encryption context")
    return _decrypt(chunks, keyring, expected)


def _open_message(source: _ChunkReader, keyring: KeyProvider, expected: dict[str, str]) -> tuple[Any, Any]:
    """The SDK's decryptor with the header read and authenticated, its data key unwrapped, its context checked."""
    decryptor = _sdk_client().stream(
        mode="d",
        source=source,
        key_provider=keyring.master_key_provider,
        max_body_length=MAX_FRAME_LENGTH,
    )
    header = decryptor.header  # reads the header, unwraps the data key, checks the header tag
    actual = dict(header.encryption_context)
    for key, value in expected.items():
        if key not in actual:
            raise DecryptionError(f"encryption context has no {key!r} (expected {value!r})")
        if actual[key] != value:
            raise DecryptionError(f"encryption context {key!r} is {actual[key]!r}, expected {value!r}")
    return decryptor, header


def _decrypt(chunks: Iterable[bytes], keyring: KeyProvider, expected: dict[str, str]) -> Iterator[bytes]:
    source = _ChunkReader(chunks)
    try:
        decryptor, header = _open_message(source, keyring, expected)
        read_size = _read_size(min(header.frame_length or MiB, MAX_FRAME_LENGTH))
        while True:
            piece = decryptor.read(read_size)
            if not piece:
                break
            yield piece
        if not hasattr(decryptor, "footer"):
            raise DecryptionError("the encrypted message ended before its final frame")
        if source.read(1):
            raise DecryptionError("unexpected bytes after the end of the encrypted message")
    except DecryptionError:
        raise
    except Exception as exc:
        _raise_failure(exc, source, keyring)


def check_header(chunks: Iterable[bytes], keyring: KeyProvider, expected_context: Mapping[str, str]) -> None:
    """Prove ``keyring`` opens the message: authenticate its header and unwrap its data key (the key
    service is asked, so a missing permission shows), check the encryption context; no content is
    decrypted. Raises like :func:`decrypt_stream`; reads only the first chunk(s) of ``chunks``."""
    expected = _check_context(expected_context, "expected encryption context")
    source = _ChunkReader(chunks)
    try:
        _open_message(source, keyring, expected)
    except DecryptionError:
        raise
    except Exception as exc:
        _raise_failure(exc, source, keyring)


def _raise_failure(exc: Exception, source: _ChunkReader, keyring: KeyProvider) -> NoReturn:
    """The chunks' own error unchanged (a store read error), else a one-line DecryptionError."""
    if source.error is not None:
        raise source.error from None
    raise DecryptionError(_decryption_message(exc, keyring)) from exc


def _decryption_message(exc: BaseException, keyring: KeyProvider) -> str:
    if isinstance(exc, DecryptKeyError):
        return f"cannot decrypt the backup's data key with {keyring.key_id} (wrong key, or no permission to use it)"
    if isinstance(exc, InvalidTag):
        return "authentication failed: the ciphertext was modified or is corrupt"
    if isinstance(exc, InvalidSignature):
        return "signature check failed: the ciphertext was modified or is corrupt"
    if isinstance(exc, SerializationError):
        return f"the ciphertext is malformed or truncated: {_one_line(exc)}"
    return f"cannot decrypt the backup: {type(exc).__name__}: {_one_line(exc)}"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] if text else type(exc).__name__


# ---- compression -------------------------------------------------------------------------------


def _zstandard() -> Any:
    try:
        import zstandard  # optional: only needed with compression
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ConfigError("compression 'zstd' needs the zstandard package") from exc
    return zstandard


def compress_stream(chunks: Iterable[bytes], level: int = DEFAULT_ZSTD_LEVEL) -> Iterator[bytes]:
    """zstd-compress the concatenation of ``chunks`` into one frame with a content checksum."""
    zstd = _zstandard()
    compressor = zstd.ZstdCompressor(level=level, write_checksum=True).compressobj()
    for chunk in chunks:
        out = compressor.compress(chunk)
        if out:
            yield out
    yield compressor.flush()


def decompress_stream(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Undo :func:`compress_stream`; raises :class:`BackupIntegrityError` if the data is corrupt,
    truncated, or followed by extra bytes."""
    zstd = _zstandard()
    decompressor = zstd.ZstdDecompressor().decompressobj()
    piece_size = 128 * KiB  # feed small pieces so that one call does not expand too much at once
    try:
        for chunk in chunks:
            for start in range(0, len(chunk), piece_size):
                if decompressor.eof:
                    raise BackupIntegrityError("unexpected bytes after the end of the compressed stream")
                out = decompressor.decompress(chunk[start : start + piece_size])
                if out:
                    yield out
        if not decompressor.eof:
            raise BackupIntegrityError("the compressed stream is truncated")
        if decompressor.unused_data:
            raise BackupIntegrityError("unexpected bytes after the end of the compressed stream")
    except zstd.ZstdError as exc:
        raise BackupIntegrityError(f"the compressed stream is corrupt: {_one_line(exc)}") from exc
