"""The keys that wrap each backup's data key: a local AES-256 key file or a KMS key, made by one
factory, :func:`open_key_provider`, which dispatches to :func:`local_key_provider` or
:func:`kms_key_provider`. :mod:`etcdops.adapters.backup.crypto` encrypts and decrypts with them."""

from __future__ import annotations

import hashlib
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from aws_encryption_sdk.exceptions import AWSEncryptionSDKClientError
from aws_encryption_sdk.identifiers import EncryptionKeyType, WrappingAlgorithm
from aws_encryption_sdk.internal.crypto.wrapping_keys import WrappingKey
from aws_encryption_sdk.key_providers.kms import StrictAwsKmsMasterKeyProvider
from aws_encryption_sdk.key_providers.raw import RawMasterKey

from etcdops.domain.errors import ConfigError, UsageError

LOCAL_PROVIDER_ID = "etcdops-local"
LOCAL_KEY_SIZE = 32
_KMS_KEY_ARN = re.compile(r"^arn:aws[a-z-]*:kms:([a-z0-9-]+):(\d{12}):key/[A-Za-z0-9-]+$")


@dataclass(frozen=True)
class KeyProvider:
    """A key that wraps the per-backup data keys.

    ``key_id`` identifies the key in manifests: the key ARN for KMS, ``local:<16 hex>`` (a
    fingerprint, not the key) for a local key file.
    """

    key_id: str
    kind: Literal["local", "kms"]
    master_key_provider: Any = field(repr=False, compare=False)


def open_key_provider(
    spec: str,
    *,
    create: bool = False,
    kms_client: Any = None,
    botocore_session: Any = None,
) -> KeyProvider:
    """The key named by ``spec``: ``file:///absolute/path`` or a KMS key ARN.

    ``create`` only applies to key files (create one if missing); ``kms_client`` /
    ``botocore_session`` only to KMS keys.
    """
    if spec.startswith("file:"):
        parts = urlsplit(spec)
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ConfigError(f"encryption key {spec!r} must be file:///absolute/path")
        return local_key_provider(Path(unquote(parts.path)), create=create)
    if spec.startswith("arn:"):
        return kms_key_provider(spec, kms_client=kms_client, botocore_session=botocore_session)
    raise ConfigError(f"encryption key {spec!r} must be a KMS key ARN or file:///path/to/local.key")


def local_key_provider(path: Path, create: bool = False) -> KeyProvider:
    """A raw AES-256 key read from ``path`` (32 bytes, readable by the owner only).

    With ``create=True`` a missing file is created with 32 random bytes and mode 0600 (set at
    creation, never widened). Raises :class:`ConfigError` if the file is missing (and not created),
    is not a regular file, is readable or writable by group/others, or does not hold 32 bytes.
    """
    if create:
        _create_key_file(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise ConfigError(f"encryption key file {path} does not exist") from exc
    except OSError as exc:
        raise ConfigError(f"cannot open encryption key file {path}: {exc.strerror or exc}") from exc
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"encryption key file {path} is not a regular file")
        if info.st_mode & 0o077:
            raise ConfigError(
                f"encryption key file {path} has mode {stat.S_IMODE(info.st_mode):04o}; "
                "it must not be accessible by group or others (chmod 600)"
            )
        key = handle.read(LOCAL_KEY_SIZE + 1)
    if len(key) != LOCAL_KEY_SIZE:
        raise ConfigError(f"encryption key file {path} must hold exactly {LOCAL_KEY_SIZE} bytes")
    return _local_provider(key)


def _create_key_file(path: Path) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return  # keep an existing key; it is loaded (and its permissions checked) by the caller
    except OSError as exc:
        raise ConfigError(f"cannot create encryption key file {path}: {exc.strerror or exc}") from exc
    try:
        os.fchmod(fd, 0o600)  # independent of the umask
        data = os.urandom(LOCAL_KEY_SIZE)
        written = 0
        while written < len(data):
            written += os.write(fd, data[written:])
        os.fsync(fd)
    except OSError as exc:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise ConfigError(f"cannot write encryption key file {path}: {exc.strerror or exc}") from exc
    os.close(fd)


def _local_provider(key: bytes) -> KeyProvider:
    fingerprint = hashlib.sha256(b"etcdops local key id\x00" + key).hexdigest()[:16]
    key_id = f"local:{fingerprint}"
    master_key = RawMasterKey(
        provider_id=LOCAL_PROVIDER_ID,
        key_id=key_id.encode(),
        wrapping_key=WrappingKey(
            wrapping_algorithm=WrappingAlgorithm.AES_256_GCM_IV12_TAG16_NO_PADDING,
            wrapping_key=key,
            wrapping_key_type=EncryptionKeyType.SYMMETRIC,
        ),
    )
    return KeyProvider(key_id=key_id, kind="local", master_key_provider=master_key)


class _StrictKmsProviderWithClient(StrictAwsKmsMasterKeyProvider):
    """The SDK's strict KMS provider, using a KMS client the caller made instead of its own."""

    def __new__(cls, *, kms_client: Any, **kwargs: Any) -> _StrictKmsProviderWithClient:
        instance = super().__new__(cls, **kwargs)
        instance._etcdops_kms_client = kms_client
        return instance

    def __init__(self, *, kms_client: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)

    def add_regional_client(self, region_name: str) -> None:
        if region_name in self._regional_clients:
            return
        client = self._etcdops_kms_client
        if region_name != client.meta.region_name:
            raise ConfigError(f"the KMS client is for region {client.meta.region_name}, the key is in {region_name}")
        self._regional_clients[region_name] = client


def kms_key_provider(key_arn: str, *, kms_client: Any = None, botocore_session: Any = None) -> KeyProvider:
    """A KMS key, used through the SDK's *strict* KMS master key provider.

    ``key_arn`` must be a full key ARN (strict mode cannot decrypt with aliases). Pass a boto3 KMS
    client for the key's region, or a botocore session (default: a new default session).
    """
    match = _KMS_KEY_ARN.match(key_arn)
    if match is None:
        raise ConfigError(
            f"KMS key {key_arn!r} must be a key ARN (arn:aws:kms:<region>:<account>:key/<id>); "
            "aliases cannot be used to decrypt"
        )
    if kms_client is not None and botocore_session is not None:
        raise UsageError("pass either a KMS client or a botocore session, not both")
    region = match.group(1)
    provider: Any
    try:
        if kms_client is not None:
            provider = _StrictKmsProviderWithClient(kms_client=kms_client, key_ids=[key_arn], region_names=[region])
        elif botocore_session is not None:
            provider = StrictAwsKmsMasterKeyProvider(
                key_ids=[key_arn], region_names=[region], botocore_session=botocore_session
            )
        else:
            provider = StrictAwsKmsMasterKeyProvider(key_ids=[key_arn], region_names=[region])
    except AWSEncryptionSDKClientError as exc:
        raise ConfigError(f"KMS key {key_arn!r}: {exc}") from exc
    return KeyProvider(key_id=key_arn, kind="kms", master_key_provider=provider)
