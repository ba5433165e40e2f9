"""The named errors of the backup building blocks.

They extend the project's error hierarchy in :mod:`etcdops.domain.errors`; the state machines catch them by
class name and ``retryable`` says whether the same call may succeed later.
"""

from __future__ import annotations

from etcdops.domain.errors import EtcdopsError, NotFoundError


class BackupError(EtcdopsError):
    """A backup could not be written, read, or checked."""


class BackupNotFoundError(BackupError, NotFoundError):
    """The backup object (or its manifest) does not exist in the store."""


class BackupExistsError(BackupError):
    """An object already exists under the key; backups are never overwritten."""


class BackupIntegrityError(BackupError):
    """A stored backup is corrupt, truncated, or does not match what its manifest says."""


class DecryptionError(BackupIntegrityError):
    """A backup could not be decrypted: wrong key, wrong encryption context, or tampered ciphertext."""


class DeltaFormatError(BackupIntegrityError):
    """A delta's content or manifest is not what the delta format says (a corrupt or foreign object)."""


class ReplayError(BackupIntegrityError):
    """A restored cluster did not take a delta's revision as the chain says (another revision than expected)."""


class ManifestInvalidError(BackupIntegrityError):
    """A manifest document is not valid; ``field`` names the first offending field."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ManifestMismatchError(BackupIntegrityError):
    """A backup object does not match its manifest (size, checksum, identity)."""


class EncryptionError(BackupError):
    """A backup could not be encrypted (for example the key refused to produce a data key)."""


class KeyUnavailableError(EncryptionError):
    """The key service could not be reached or throttled us; trying again later can succeed."""

    retryable = True


class BackupStoreError(BackupError):
    """The object store failed (network error, throttling, server error); may succeed later."""

    retryable = True


class StorePermissionError(BackupStoreError):
    """The object store refused the request (permissions, a missing bucket, a request it will never
    accept); retrying will not help."""

    retryable = False


class StoreFullError(BackupStoreError):
    """The destination file system has no space left; the partial object was removed."""

    retryable = False
